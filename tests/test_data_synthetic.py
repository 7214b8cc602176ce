"""The synthetic scene generator: determinism, exact on-disk layouts, and geometry that makes labels
and depth agree (ground and floor are planes, objects stand on the ground at its disparity)."""

import cv2
import numpy as np
import pytest
from torchvision.datasets import Cityscapes

from data.cityscapes import cityscapes_label_id
from data.synthetic import (cityscapes_scene, indoor_scene, scene_generator, write_cityscapes_mtan,
                            write_cityscapes_raw, write_nyu_mtan)
from data.synthetic.indoor_scene import FLOOR, MAX_DEPTH, WALL

STREET_HEIGHT, STREET_WIDTH = 128, 256
ROOM_HEIGHT, ROOM_WIDTH = 96, 128
GROUND_IDS = tuple(cityscapes_label_id(name) for name in ("road", "sidewalk", "terrain"))


@pytest.fixture(scope="module")
def data_street_scenes():
    """Four street scenes at 128 x 256."""
    return [cityscapes_scene(scene_generator(0, "test", index), STREET_HEIGHT, STREET_WIDTH) for index in range(4)]


@pytest.fixture(scope="module")
def data_indoor_scenes():
    """Four indoor scenes at 96 x 128."""
    return [indoor_scene(scene_generator(0, "test", index), ROOM_HEIGHT, ROOM_WIDTH) for index in range(4)]


def test_scenes_are_deterministic_given_the_seed():
    for scene in (cityscapes_scene, indoor_scene):
        first = scene(np.random.default_rng(3), 48, 64)
        again = scene(np.random.default_rng(3), 48, 64)
        other = scene(np.random.default_rng(4), 48, 64)
        for one, repeated in zip(first, again):
            np.testing.assert_array_equal(one, repeated)
        assert not np.array_equal(first[0], other[0])


def test_street_scene_arrays(data_street_scenes):
    names = {entry.id: entry.name for entry in Cityscapes.classes}
    seen = set()
    for rgb, label_ids, disparity in data_street_scenes:
        assert rgb.shape == (STREET_HEIGHT, STREET_WIDTH, 3) and rgb.dtype == np.uint8
        assert label_ids.shape == (STREET_HEIGHT, STREET_WIDTH) and label_ids.dtype == np.uint8
        assert disparity.shape == (STREET_HEIGHT, STREET_WIDTH) and disparity.dtype == np.uint16
        assert label_ids.max() <= 33
        seen |= {names[label_id] for label_id in np.unique(label_ids)}
        for invalid_class in ("sky", "ego vehicle"):
            assert (disparity[label_ids == cityscapes_label_id(invalid_class)] == 0).all()
        valid = disparity > 1
        assert 0.6 < valid.mean() < 0.95
        assert (disparity[valid] - 1).max() / 65536 < 0.5
    assert {"road", "sidewalk", "building", "sky", "car", "pole", "vegetation", "ego vehicle"} <= seen


def test_street_ground_is_a_plane_whose_disparity_grows_towards_the_camera(data_street_scenes):
    for _, label_ids, disparity in data_street_scenes:
        ground = np.isin(label_ids, GROUND_IDS) & (disparity > 1)
        rows = [row for row in range(STREET_HEIGHT) if ground[row].sum() > 5]
        per_row = [np.unique(disparity[row][ground[row]]) for row in rows]
        assert all(values.size == 1 for values in per_row)
        row_values = np.array([values[0] for values in per_row], dtype=np.float64)
        assert (np.diff(row_values) > 0).all()
        slope = np.polyfit(rows, row_values - 1, 1)
        np.testing.assert_allclose(np.polyval(slope, rows), row_values - 1, rtol=0.02, atol=300)


def test_street_objects_stand_on_the_ground_at_its_disparity(data_street_scenes):
    checked = 0
    for _, label_ids, disparity in data_street_scenes:
        for name in ("car", "person"):
            mask = (label_ids == cityscapes_label_id(name)).astype(np.uint8)
            count, components = cv2.connectedComponents(mask)
            for component in range(1, count):
                rows, columns = np.nonzero(components == component)
                values = np.unique(disparity[rows, columns])
                values = values[values > 1]
                bottom = rows.max()
                if values.size != 1 or bottom + 1 >= STREET_HEIGHT:
                    continue
                base_columns = columns[rows == bottom]
                below = disparity[bottom + 1, base_columns]
                on_ground = np.isin(label_ids[bottom + 1, base_columns], GROUND_IDS) & (below > 1)
                if on_ground.sum() < 2:
                    continue
                object_disparity, ground_disparity = float(values[0]) - 1, float(np.median(below[on_ground])) - 1
                assert object_disparity <= ground_disparity <= object_disparity * 1.1
                checked += 1
    assert checked >= 5


def test_indoor_scene_arrays(data_indoor_scenes):
    seen = set()
    wall_colours = []
    for image, label, depth in data_indoor_scenes:
        assert image.shape == (ROOM_HEIGHT, ROOM_WIDTH, 3) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        assert label.shape == (ROOM_HEIGHT, ROOM_WIDTH) and -1 <= label.min() and label.max() <= 12
        assert depth.shape == (ROOM_HEIGHT, ROOM_WIDTH, 1) and depth.dtype == np.float32
        assert 0 <= depth.min() and depth.max() <= MAX_DEPTH
        assert 0.005 < (depth == 0).mean() < 0.3 and 0.001 < (label == -1).mean() < 0.3
        seen |= set(np.unique(label).tolist())
        wall = label == WALL
        assert image[wall].std(axis=0).max() > 0.01
        wall_colours.append(image[wall].mean(axis=0))
    assert {FLOOR, WALL} <= seen and len(seen) >= 7
    assert np.std(wall_colours, axis=0).max() > 0.02


def test_indoor_floor_and_walls_are_planes(data_indoor_scenes):
    for _, label, depth in data_indoor_scenes:
        rows, columns = np.mgrid[0:ROOM_HEIGHT, 0:ROOM_WIDTH]
        floor = (label == FLOOR) & (depth[:, :, 0] > 0)
        assert floor.sum() > 50
        design = np.stack((columns[floor], rows[floor], np.ones(floor.sum())), axis=1)
        inverse_depth = 1 / depth[:, :, 0][floor].astype(np.float64)
        coefficients = np.linalg.lstsq(design, inverse_depth, rcond=None)[0]
        np.testing.assert_allclose(design @ coefficients, inverse_depth, rtol=1e-3)


def test_raw_writer_layout_and_png_formats(tmp_path):
    root = write_cityscapes_raw(tmp_path, {"train": 4, "val": 1}, 64, 128, seed=2)
    images = sorted(path.relative_to(root).as_posix() for path in (root / "leftImg8bit").rglob("*.png"))
    assert images == ["leftImg8bit/train/arden/arden_000000_000019_leftImg8bit.png",
                      "leftImg8bit/train/arden/arden_000001_000019_leftImg8bit.png",
                      "leftImg8bit/train/brookhaven/brookhaven_000000_000019_leftImg8bit.png",
                      "leftImg8bit/train/corvale/corvale_000000_000019_leftImg8bit.png",
                      "leftImg8bit/val/arden/arden_000000_000019_leftImg8bit.png"]
    prefix = "train/corvale/corvale_000000_000019"
    bgr = cv2.imread(str(root / "leftImg8bit" / f"{prefix}_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
    label_ids = cv2.imread(str(root / "gtFine" / f"{prefix}_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
    disparity = cv2.imread(str(root / "disparity" / f"{prefix}_disparity.png"), cv2.IMREAD_UNCHANGED)
    assert bgr.shape == (64, 128, 3) and bgr.dtype == np.uint8
    assert label_ids.shape == (64, 128) and label_ids.dtype == np.uint8
    assert disparity.shape == (64, 128) and disparity.dtype == np.uint16
    rgb, expected_ids, expected_disparity = cityscapes_scene(scene_generator(2, "train", 2), 64, 128)
    np.testing.assert_array_equal(bgr[:, :, ::-1], rgb)
    np.testing.assert_array_equal(label_ids, expected_ids)
    np.testing.assert_array_equal(disparity, expected_disparity)
    sky = label_ids == cityscapes_label_id("sky")
    assert bgr[sky][:, 0].mean() > bgr[sky][:, 2].mean()


def test_a_scene_does_not_depend_on_how_many_are_written(tmp_path):
    small = write_nyu_mtan(tmp_path / "small", {"val": 1}, 24, 32, seed=6)
    large = write_nyu_mtan(tmp_path / "large", {"val": 3}, 24, 32, seed=6)
    for folder in ("image", "label", "depth"):
        assert (small / "val" / folder / "0.npy").read_bytes() == (large / "val" / folder / "0.npy").read_bytes()
    assert sorted(path.name for path in (large / "val" / "depth").iterdir()) == ["0.npy", "1.npy", "2.npy"]


def test_mtan_writer_label_sets_agree(tmp_path):
    root = write_cityscapes_mtan(tmp_path, {"train": 2}, 32, 64, seed=1)
    category_of_train_id = {entry.train_id: entry.category_id - 1 for entry in Cityscapes.classes
                            if 0 <= entry.train_id < 255}
    for index in range(2):
        seven = np.load(root / "train" / "label_7" / f"{index}.npy")
        nineteen = np.load(root / "train" / "label_19" / f"{index}.npy")
        assert seven.shape == nineteen.shape == (32, 64)
        known = nineteen >= 0
        expected = [category_of_train_id[value] for value in nineteen[known].astype(int)]
        np.testing.assert_array_equal(seven[known], expected)
        assert (seven == -1).any() and np.load(root / "train" / "depth" / f"{index}.npy").shape == (32, 64, 1)
