"""Cityscapes: label mapping of every id against torchvision's table, disparity conversion, and both
layouts read from generated files."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import Cityscapes

from data import CityscapesDataset
from data.cityscapes import CITYSCAPES_19_CLASS_NAMES, CITYSCAPES_7_CLASS_NAMES, DISPARITY_CLIP, disparity_from_raw
from data.synthetic import write_cityscapes_mtan, write_cityscapes_raw
from data.transforms import IMAGENET_MEAN, IMAGENET_STD

IGNORE = 250
RAW_HEIGHT, RAW_WIDTH = 256, 512


@pytest.fixture(scope="module")
def data_raw_root(tmp_path_factory):
    """Raw-layout street scenes at 256 x 512: 3 train, 2 val."""
    return write_cityscapes_raw(tmp_path_factory.mktemp("raw"), {"train": 3, "val": 2}, RAW_HEIGHT, RAW_WIDTH, seed=5)


@pytest.fixture(scope="module")
def data_mtan_root(tmp_path_factory):
    """MTAN-layout street scenes at 128 x 256: 3 train, 2 val."""
    return write_cityscapes_mtan(tmp_path_factory.mktemp("mtan"), {"train": 3, "val": 2}, seed=5)


def write_raw_sample(root, label_ids, raw_disparity, split="train", prefix="town_000000_000019"):
    """One raw sample with the given label ids (uint8) and raw disparity (uint16), grey image."""
    city = prefix.split("_")[0]
    image = np.full(label_ids.shape + (3,), 128, dtype=np.uint8)
    files = (("leftImg8bit", "_leftImg8bit.png", image), ("gtFine", "_gtFine_labelIds.png", label_ids),
             ("disparity", "_disparity.png", raw_disparity))
    for folder, suffix, array in files:
        path = Path(root) / folder / split / city / (prefix + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), array)


def expected_label(entry, num_classes):
    """The class of a torchvision Cityscapes table entry in a class count, or IGNORE."""
    if num_classes == 19:
        return entry.train_id if 0 <= entry.train_id < 255 else IGNORE
    return entry.category_id - 1 if entry.category_id > 0 else IGNORE


@pytest.mark.parametrize("num_classes", (7, 19))
def test_every_label_id_maps_as_in_torchvisions_table(tmp_path, num_classes):
    label_ids = np.tile(np.arange(34, dtype=np.uint8), (2, 1))
    write_raw_sample(tmp_path, label_ids, np.full(label_ids.shape, 300, dtype=np.uint16))
    dataset = CityscapesDataset(tmp_path, "train", height=2, width=34, num_classes=num_classes, ignore_index=IGNORE)
    segmentation = dataset[0][1][0].tolist()
    table = {entry.id: entry for entry in Cityscapes.classes if entry.id >= 0}
    assert sorted(table) == list(range(34))
    assert segmentation == [expected_label(table[label_id], num_classes) for label_id in range(34)]


def test_label_mapping_spot_checks(tmp_path):
    label_ids = np.array([[7, 8, 9, 11, 1, 23, 24, 26, 29, 33]], dtype=np.uint8)
    write_raw_sample(tmp_path, label_ids, np.full(label_ids.shape, 300, dtype=np.uint16))
    nineteen = CityscapesDataset(tmp_path, "train", height=1, width=10, num_classes=19)[0][1][0].tolist()
    seven = CityscapesDataset(tmp_path, "train", height=1, width=10, num_classes=7, ignore_index=-1)[0][1][0].tolist()
    # road, sidewalk, parking, building, ego vehicle, sky, person, car, caravan, bicycle
    assert nineteen == [0, 1, IGNORE, 2, IGNORE, 10, 11, 13, IGNORE, 18]
    assert seven == [0, 0, 0, 1, -1, 4, 5, 6, 6, 6]


def test_class_names_and_palettes(data_mtan_root):
    assert CITYSCAPES_7_CLASS_NAMES == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
    assert CITYSCAPES_19_CLASS_NAMES[0] == "road" and CITYSCAPES_19_CLASS_NAMES[-1] == "bicycle"
    assert len(CITYSCAPES_19_CLASS_NAMES) == 19
    nineteen = CityscapesDataset(data_mtan_root, "train", num_classes=19)
    assert nineteen.class_names == CITYSCAPES_19_CLASS_NAMES
    colours = nineteen.palette
    assert colours.shape == (19, 3) and colours.dtype == np.uint8
    assert tuple(colours[0]) == (128, 64, 128) and tuple(colours[10]) == (70, 130, 180)
    seven = CityscapesDataset(data_mtan_root, "train", num_classes=7)
    assert seven.class_names == CITYSCAPES_7_CLASS_NAMES
    assert seven.palette.shape == (7, 3) and seven.palette.dtype == np.uint8
    assert len({tuple(colour) for colour in seven.palette}) == 7
    assert tuple(seven.palette[0]) == (128, 64, 128) and tuple(seven.palette[6]) == (0, 0, 142)


def test_disparity_conversion_of_raw_values():
    raw = np.array([0, 1, 257, 32257, 65535], dtype=np.uint16)
    np.testing.assert_array_equal(disparity_from_raw(raw), np.array([0, 0, 256 / 65536, 0.4921875, DISPARITY_CLIP],
                                                                     dtype=np.float32))


def test_disparity_conversion_through_the_loader(tmp_path):
    raw = np.array([[0, 1, 257, 32257, 65535]], dtype=np.uint16)
    write_raw_sample(tmp_path, np.full(raw.shape, 7, dtype=np.uint8), raw)
    depth = CityscapesDataset(tmp_path, "train", height=1, width=5)[0][2]
    assert depth.shape == (1, 1, 5)
    assert depth[0, 0].tolist() == pytest.approx([0, 0, 0.00390625, 0.4921875, 0.4922])


def test_raw_layout_reads_generated_files(data_raw_root):
    dataset = CityscapesDataset(data_raw_root, "train", num_classes=19)
    assert (dataset.layout, len(dataset), dataset.num_classes) == ("cityscapes-raw", 3, 19)
    assert dataset.ignore_index == IGNORE
    image, segmentation, depth = dataset[0]
    assert image.shape == (3, 128, 256) and image.dtype == torch.float32
    assert segmentation.shape == (128, 256) and segmentation.dtype == torch.int64
    assert depth.shape == (1, 128, 256) and depth.dtype == torch.float32
    labels = set(segmentation.unique().tolist())
    assert {0, 2, 10, IGNORE} <= labels and labels <= set(range(19)) | {IGNORE}
    assert 0 < depth.max() <= DISPARITY_CLIP and (depth == 0).any()
    assert abs(image.mean().item()) < 1.5 and image.min() < -0.5


def test_raw_samples_are_sorted_and_resized_as_specified(data_raw_root):
    dataset = CityscapesDataset(data_raw_root, "val", height=64, width=128)
    names = [paths[0].name for paths in dataset.samples]
    assert names == ["arden_000000_000019_leftImg8bit.png", "brookhaven_000000_000019_leftImg8bit.png"]
    image, segmentation, depth = dataset[1]
    raw_label = cv2.imread(str(dataset.samples[1][1]), cv2.IMREAD_UNCHANGED)
    expected = dataset.label_lookup[cv2.resize(raw_label, (128, 64), interpolation=cv2.INTER_NEAREST_EXACT)]
    np.testing.assert_array_equal(segmentation.numpy(), expected)
    rgb = cv2.cvtColor(cv2.imread(str(dataset.samples[1][0])), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (128, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    expected_image = (resized - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected_image, atol=1e-5)
    raw_disparity = cv2.imread(str(dataset.samples[1][2]), cv2.IMREAD_UNCHANGED)
    expected_depth = disparity_from_raw(cv2.resize(raw_disparity, (128, 64), interpolation=cv2.INTER_NEAREST_EXACT))
    np.testing.assert_array_equal(depth[0].numpy(), expected_depth)


def test_full_size_targets_come_from_the_pixel_under_each_target_centre(tmp_path):
    """2048x1024 -> 256x128: target pixel (x, y) must come from source (8x + 4, 8y + 4), the pixel PIL's
    nearest neighbour picks and the centre of the 8x8 block that INTER_AREA averages for the image."""
    rows, columns = np.mgrid[0:1024, 0:2048]
    label_ids = (columns % 34).astype(np.uint8)
    column_coded = (columns + 2).astype(np.uint16)
    row_coded = (rows + 2).astype(np.uint16)
    write_raw_sample(tmp_path, label_ids, column_coded, prefix="town_000000_000019")
    write_raw_sample(tmp_path, label_ids, row_coded, prefix="town_000001_000019")
    dataset = CityscapesDataset(tmp_path, "train", height=128, width=256, num_classes=19, ignore_index=IGNORE)
    source_columns = 8 * np.arange(256) + 4
    source_rows = 8 * np.arange(128) + 4
    _, segmentation, column_depth = dataset[0]
    _, _, row_depth = dataset[1]
    np.testing.assert_array_equal(segmentation.numpy(), dataset.label_lookup[np.tile(source_columns % 34, (128, 1))])
    np.testing.assert_array_equal(column_depth[0].numpy(), disparity_from_raw(np.tile(source_columns + 2, (128, 1))))
    np.testing.assert_array_equal(row_depth[0].numpy(), disparity_from_raw(np.tile(source_rows[:, None] + 2, (1, 256))))
    pil_nearest = np.asarray(Image.fromarray((rows * 2048 + columns).astype(np.int32)).resize((256, 128), Image.NEAREST))
    np.testing.assert_array_equal(pil_nearest, source_rows[:, None] * 2048 + source_columns[None, :])


@pytest.mark.parametrize("num_classes", (7, 19))
def test_mtan_layout_reads_generated_files(data_mtan_root, num_classes):
    dataset = CityscapesDataset(data_mtan_root, "val", num_classes=num_classes, ignore_index=-7)
    assert (dataset.layout, len(dataset), dataset.num_classes) == ("cityscapes-mtan", 2, num_classes)
    image, segmentation, depth = dataset[1]
    label = np.load(data_mtan_root / "val" / f"label_{num_classes}" / "1.npy")
    np.testing.assert_array_equal(segmentation.numpy(), np.where(label == -1, -7, label))
    stored_image = np.load(data_mtan_root / "val" / "image" / "1.npy")
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), (stored_image - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-5)
    np.testing.assert_array_equal(depth.numpy(), np.load(data_mtan_root / "val" / "depth" / "1.npy").transpose(2, 0, 1))


def test_mtan_and_raw_layouts_of_the_same_scenes_give_the_same_samples(tmp_path):
    raw = CityscapesDataset(write_cityscapes_raw(tmp_path / "raw", {"val": 1}, 128, 256, seed=9), "val")
    mtan = CityscapesDataset(write_cityscapes_mtan(tmp_path / "mtan", {"val": 1}, 128, 256, seed=9), "val")
    for from_raw, from_mtan in zip(raw[0], mtan[0]):
        torch.testing.assert_close(from_raw, from_mtan)


def test_mtan_layout_is_resized_like_the_raw_layout(data_mtan_root):
    image, segmentation, depth = CityscapesDataset(data_mtan_root, "train", height=64, width=96)[2]
    assert image.shape == (3, 64, 96) and segmentation.shape == (64, 96) and depth.shape == (1, 64, 96)
    label = np.load(data_mtan_root / "train" / "label_7" / "2.npy")
    expected = cv2.resize(label, (96, 64), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(segmentation.numpy(), np.where(expected == -1, IGNORE, expected))


def test_mtan_samples_follow_numeric_file_order(tmp_path):
    for index in range(12):
        for folder, array in (("image", np.full((4, 8, 3), index / 20)), ("label_7", np.full((4, 8), index % 7)),
                              ("depth", np.full((4, 8, 1), index / 100))):
            (tmp_path / "train" / folder).mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "train" / folder / f"{index}.npy", array)
    dataset = CityscapesDataset(tmp_path, "train", height=4, width=8)
    assert [dataset[index][2][0, 0, 0].item() for index in range(12)] == pytest.approx([i / 100 for i in range(12)])
