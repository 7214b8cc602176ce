"""tools.prepare_nyuv2 on a small file with the official structure (a MATLAB v7.3 HDF5 file written with
h5py: column-major arrays, labels drawn from the 894 ids; splits.mat written with scipy): the published
class tables, the conversion (transposition, crop, resizing, units), the normals' convention, the result
read through data.NYUv2Dataset and trained on by the NYU script, continuing an interrupted run, and the
message of each bad input."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io

from data import NYUv2Dataset
from data.dataset import TASKS_WITH_NORMALS
from data.nyu import NYU_13_CLASS_NAMES
from data.synthetic import indoor_scene_with_normals, scene_generator
from data.synthetic.indoor_scene import plan_camera
from data.transforms import resize_normals
from tools.prepare_nyuv2 import main, preparation
from tools.prepare_nyuv2.class_tables import classes_40_to_13, label_lookup, labels_to_40
from tools.prepare_nyuv2.frames import FrameSettings, convert_frame, crop_box
from tools.prepare_nyuv2.surface_normals import (NYU_KINECT, Intrinsics, frame_intrinsics, normal_window,
                                                 normals_from_depth)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_HEIGHT, FRAME_WIDTH = 48, 64
FRAME_COUNT = 6
TRAIN_NUMBERS, TEST_NUMBERS = (1, 3, 4, 6), (2, 5)  # 1-based, as in splits.mat
OUT_SIZE = ("--height", "24", "--width", "32")
BAND_LABEL_IDS = (4, 21, 172, 11)  # ceiling, wall, television, floor: 12 rows each, top to bottom
BAND_CLASSES = tuple(NYU_13_CLASS_NAMES.index(name) for name in ("ceiling", "wall", "tv", "floor"))
UNLABELLED_COLUMNS = 8
RAW_GAP = (slice(30, 40), slice(40, 56))  # where the frames' rawDepths have no measurement
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def official_frame(index: int) -> tuple:
    """Frame `index` (0-based) of the test file, as MATLAB holds it: (image uint8 [H, W, 3] with red
    growing down the rows and green across the columns, label ids uint16 [H, W] in four bands with
    unlabelled left columns and a block of random ids 1..894, depth float32 [H, W] in metres, raw depth
    float32 [H, W] with a gap)."""
    rows, columns = np.mgrid[:FRAME_HEIGHT, :FRAME_WIDTH]
    image = np.stack((rows * 5, columns * 3, np.full_like(rows, 30 * index)), axis=-1).astype(np.uint8)
    labels = np.array(BAND_LABEL_IDS, dtype=np.uint16)[rows // (FRAME_HEIGHT // len(BAND_LABEL_IDS))]
    labels[:, :UNLABELLED_COLUMNS] = 0
    labels[-8:, -8:] = np.random.default_rng(index).integers(1, 895, size=(8, 8))
    depth = (1 + 0.05 * rows + 0.01 * columns + 0.1 * index).astype(np.float32)
    raw_depth = depth.copy()
    raw_depth[RAW_GAP] = 0
    return image, labels, depth, raw_depth


def write_cell_of_strings(file, name: str, strings: list) -> None:
    """A MATLAB v7.3 cell array of N char arrays ([1, N] here: MATLAB's N x 1, axes reversed): references
    into the #refs# group, each string uint16 characters [length, 1]."""
    references = file.require_group("#refs#")
    cell = file.create_dataset(name, shape=(1, len(strings)), dtype=h5py.ref_dtype)
    for position, text in enumerate(strings):
        characters = references.create_dataset(f"{name}_{position}", data=np.array([[ord(c)] for c in text], np.uint16))
        characters.attrs["MATLAB_class"] = np.bytes_("char")
        characters.attrs["MATLAB_int_decode"] = np.int32(2)
        cell[0, position] = characters.ref
    cell.attrs["MATLAB_class"] = np.bytes_("cell")


def write_labeled_file(path, frames: list, leave_out: tuple = (), label_ids=None, names: bool = True) -> None:
    """A small nyu_depth_v2_labeled.mat: MATLAB v7.3 (a 512-byte user block with MATLAB's header, then
    HDF5) holding images [N, 3, W, H] uint8, depths and rawDepths [N, W, H] float32, labels [N, W, H]
    uint16 (MATLAB's H x W x ... x N, axes reversed) and, with `names`, the 894 names; `leave_out` names
    arrays not to write, `label_ids` replaces the labels [N, H, W]."""
    images = np.stack([frame[0] for frame in frames])
    labels = np.stack([frame[1] for frame in frames]) if label_ids is None else label_ids
    arrays = {"images": (images.transpose(0, 3, 2, 1), "uint8"),
              "labels": (labels.transpose(0, 2, 1).astype(np.uint16), "uint16"),
              "depths": (np.stack([frame[2] for frame in frames]).transpose(0, 2, 1), "single"),
              "rawDepths": (np.stack([frame[3] for frame in frames]).transpose(0, 2, 1), "single")}
    with h5py.File(path, "w", userblock_size=512) as file:
        for name, (array, matlab_class) in arrays.items():
            if name not in leave_out:
                file.create_dataset(name, data=array).attrs["MATLAB_class"] = np.bytes_(matlab_class)
        if names:
            write_cell_of_strings(file, "names", [name for name, _ in labels_to_40().values()])
    with open(path, "r+b") as stream:
        stream.write(MATLAB_HEADER.ljust(116) + bytes(8) + b"\x00\x02IM")


def write_splits_file(path, train=TRAIN_NUMBERS, test=TEST_NUMBERS, **variables) -> None:
    """splits.mat (MATLAB v5) with the 1-based column vectors trainNdxs and testNdxs (uint16, as the
    official file), or the given `variables` instead."""
    if not variables:
        variables = {"trainNdxs": np.array(train, dtype=np.uint16)[:, None],
                     "testNdxs": np.array(test, dtype=np.uint16)[:, None]}
    scipy.io.savemat(path, variables)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A folder holding nyu_depth_v2_labeled.mat (FRAME_COUNT frames of 48 x 64) and splits.mat."""
    folder = tmp_path_factory.mktemp("official")
    write_labeled_file(folder / "nyu_depth_v2_labeled.mat", [official_frame(index) for index in range(FRAME_COUNT)])
    write_splits_file(folder / "splits.mat")
    return folder


def one_thread_environment() -> dict:
    """The environment of a process a test starts: the repository importable, torch on one thread (the
    suite's workers share the cores)."""
    return {**os.environ, "PYTHONPATH": REPOSITORY, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tool_arguments(official, out, *extra) -> list:
    """The tool's arguments for the `official` files into `out` at 24 x 32 in this process, then `extra`."""
    return ["--labeled", str(official / "nyu_depth_v2_labeled.mat"), "--splits", str(official / "splits.mat"),
            "--out", str(out), *OUT_SIZE, "--workers", "0", *extra]


@pytest.fixture(scope="module")
def prepared(official, tmp_path_factory):
    """The folder written by `python -m tools.prepare_nyuv2 ... --normals --verify --workers 2` (its own
    process); (folder, the finished process)."""
    out = tmp_path_factory.mktemp("prepared") / "nyu"
    arguments = tool_arguments(official, out, "--normals", "--verify")
    arguments[arguments.index("--workers") + 1] = "2"
    result = subprocess.run([sys.executable, "-m", "tools.prepare_nyuv2", *arguments], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=300, env=one_thread_environment())
    assert result.returncode == 0, result.stderr
    return out, result


def run_tool(arguments, capsys) -> tuple:
    """(exit status, stdout, stderr) of the tool run in this process with `arguments`."""
    status = main(arguments)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def folder_files(root) -> dict:
    """relative path -> bytes of every file under `root`, the writer lock left out."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != ".writer.lock"}


# --- the class tables ---------------------------------------------------------------------------------------

def test_the_894_to_40_table_holds_the_published_entries():
    table = labels_to_40()
    assert sorted(table) == list(range(1, 895))
    assert {class_40 for _, class_40 in table.values()} == set(range(1, 41))
    for label_id, entry in {1: ("book", 40), 3: ("cabinet", 3), 4: ("ceiling", 22), 5: ("chair", 5), 11: ("floor", 2),
                            19: ("table", 7), 21: ("wall", 1), 28: ("door", 8), 59: ("window", 9),
                            64: ("picture", 11), 83: ("sofa", 6), 85: ("books", 23), 157: ("bed", 4),
                            172: ("television", 25)}.items():
        assert table[label_id] == entry, label_id


def test_the_40_to_13_table_holds_the_published_entries_with_the_loaders_names():
    table = classes_40_to_13()
    assert sorted(table) == list(range(1, 41))
    for class_40, entry in {1: ("wall", 12, "wall"), 2: ("floor", 5, "floor"), 3: ("cabinet", 6, "furniture"),
                            4: ("bed", 1, "bed"), 8: ("door", 12, "wall"), 13: ("blinds", 13, "window"),
                            14: ("desk", 10, "table"), 22: ("ceiling", 3, "ceiling"), 23: ("books", 2, "books"),
                            25: ("television", 11, "tv"), 40: ("otherprop", 7, "objects")}.items():
        assert table[class_40] == entry, class_40
    for _, class_13, name_13 in table.values():
        assert NYU_13_CLASS_NAMES[class_13 - 1] == name_13


def test_the_lookup_maps_label_ids_to_the_13_classes_and_0_to_minus_1():
    lookup = label_lookup()
    assert lookup.shape == (895,) and lookup.dtype == np.float32
    assert lookup[0] == -1 and set(np.unique(lookup[1:])) == set(range(13))
    for label_id, name in {21: "wall", 11: "floor", 4: "ceiling", 172: "tv", 1: "objects", 3: "furniture"}.items():
        assert NYU_13_CLASS_NAMES[int(lookup[label_id])] == name


# --- frames and normals -------------------------------------------------------------------------------------

def test_the_projection_crop_is_the_toolboxs_region_and_scales_with_the_frame():
    assert crop_box(480, 640, "projection") == (44, 471, 40, 601)  # rows 45..471, columns 41..601, 1-based
    assert crop_box(480, 640, "none") == (0, 480, 0, 640)
    top, bottom, left, right = crop_box(FRAME_HEIGHT, FRAME_WIDTH, "projection")
    image, labels, depth, _ = official_frame(0)
    arrays = convert_frame((image, labels, depth), label_lookup(),
                           FrameSettings(bottom - top, right - left, crop="projection"))
    np.testing.assert_array_equal(arrays["image"], image[top:bottom, left:right] / np.float32(255))
    np.testing.assert_array_equal(arrays["depth"][:, :, 0], depth[top:bottom, left:right])


def test_the_kinect_intrinsics_follow_the_frame_size_and_the_crop():
    assert frame_intrinsics(480, 640) == NYU_KINECT
    assert NYU_KINECT.centre_column == pytest.approx(324.5824494)  # camera_params.m's cx_rgb, 1-based
    assert NYU_KINECT.centre_row == pytest.approx(252.7361663)
    half = frame_intrinsics(240, 320, top=10, left=20)
    assert half.focal_column == pytest.approx(NYU_KINECT.focal_column / 2)
    assert half.centre_column == pytest.approx((NYU_KINECT.centre_column + 0.5) / 2 - 0.5 - 20)
    assert half.centre_row == pytest.approx((NYU_KINECT.centre_row + 0.5) / 2 - 0.5 - 10)
    assert [normal_window(width) for width in (640, 561, 384, 64)] == [7, 7, 5, 3]


def plane_depth(normal_down: tuple, offset: float, intrinsics: Intrinsics, height: int, width: int) -> np.ndarray:
    """Depth [H, W] of the plane n . X = offset (camera frame x right, y down, z forward), 0 where the ray
    misses it."""
    rows, columns = np.mgrid[:height, :width].astype(np.float64)
    rays = np.stack(((columns - intrinsics.centre_column) / intrinsics.focal_column,
                     (rows - intrinsics.centre_row) / intrinsics.focal_row, np.ones_like(rows)), axis=-1)
    along = rays @ np.array(normal_down)
    with np.errstate(divide="ignore"):
        depth = offset / along
    return np.where(along * offset > 0, depth, 0).astype(np.float32)


@pytest.mark.parametrize("normal_down, offset, expected", [
    ((0, 0, -1), -2.5, (0, 0, 1)),  # a wall seen head-on, 2.5 m ahead
    ((0, -1, 0), -1.4, (0, 1, 0)),  # the floor, 1.4 m below the camera
    ((1, 0, 0), 1.2, (-1, 0, 0)),  # a wall 1.2 m to the right, facing left
    ((0.3, -0.2, -0.9), -2.0, (0.3, 0.2, 0.9)),  # a tilted plane facing the camera
])
def test_normals_of_planes_face_the_camera_in_the_loaders_frame(normal_down, offset, expected):
    intrinsics = frame_intrinsics(120, 160)
    depth = plane_depth(normal_down, offset, intrinsics, 120, 160)
    normals = normals_from_depth(depth, intrinsics, 5)
    defined = (normals != 0).any(axis=-1)
    expected = np.array(expected) / np.linalg.norm(expected)
    assert defined[2:-2, 2:-2][depth[2:-2, 2:-2] > 0].all()
    np.testing.assert_allclose(normals[defined], np.broadcast_to(expected, normals[defined].shape), atol=1e-4)


def test_normals_match_the_synthetic_scenes_and_are_0_where_depth_is_missing():
    for index in range(2):
        camera = plan_camera(scene_generator(3, "normals", index), 96, 128)
        _, _, depth, normal = indoor_scene_with_normals(scene_generator(3, "normals", index), 96, 128)
        intrinsics = Intrinsics(camera.focal, camera.focal, camera.centre_column - 0.5, camera.centre_row - 0.5)
        estimated = normals_from_depth(depth[:, :, 0], intrinsics, 3)
        defined = (estimated != 0).any(axis=-1)
        assert not defined[depth[:, :, 0] == 0].any()
        assert defined.mean() > 0.5
        lengths = np.linalg.norm(estimated[defined], axis=-1)
        np.testing.assert_allclose(lengths, 1, atol=1e-5)
        both = defined & (normal != 0).any(axis=-1)
        angles = np.degrees(np.arccos(np.clip(np.sum(estimated * normal, axis=-1)[both], -1, 1)))
        assert np.median(angles) < 1 and np.mean(angles < 10) > 0.85


# --- the written folder ---------------------------------------------------------------------------------------

@pytest.mark.xdist_group("prepared_nyuv2")  # one worker runs the tool for the module fixture once
def test_the_written_folder_reads_through_the_loader_with_the_frames_values(prepared):
    out, result = prepared
    assert (out / ".complete").exists() and "verified" in result.stdout
    for split, numbers in (("train", TRAIN_NUMBERS), ("val", TEST_NUMBERS)):
        dataset = NYUv2Dataset(out, split, cache=False, tasks=TASKS_WITH_NORMALS)
        assert (len(dataset), dataset.height, dataset.width) == (len(numbers), 24, 32)
        for index, number in enumerate(numbers):
            image, labels, depth, _ = official_frame(number - 1)
            stored = {folder: np.load(out / split / folder / f"{index}.npy") for folder in ("image", "label", "depth")}
            assert all(array.dtype == np.float32 for array in stored.values())
            assert stored["depth"].shape == (24, 32, 1)
            expected_image = image.astype(np.float32).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3)) / 255
            np.testing.assert_allclose(stored["image"], expected_image, atol=1e-6)  # area average of 2 x 2
            np.testing.assert_array_equal(stored["depth"][:, :, 0], depth[1::2, 1::2])  # the pixel under each centre
            expected_label = np.repeat(np.array(BAND_CLASSES, dtype=np.float32), 6)[:, None].repeat(32, axis=1)
            expected_label[:, :UNLABELLED_COLUMNS // 2] = -1
            expected_label[-4:, -4:] = label_lookup()[labels[1::2, 1::2][-4:, -4:]]
            np.testing.assert_array_equal(stored["label"], expected_label)
            normals = normals_from_depth(depth, frame_intrinsics(FRAME_HEIGHT, FRAME_WIDTH), 3)
            stored_normal = np.load(out / split / "normal" / f"{index}.npy")
            np.testing.assert_array_equal(stored_normal, resize_normals(normals, 24, 32))
            _, segmentation, _, normal = dataset[index]
            assert segmentation.max() <= 12 and (segmentation == -1).any()
            valid = (normal != 0).any(dim=0)
            assert valid.float().mean() > 0.5
            np.testing.assert_allclose(normal.norm(dim=0)[valid].numpy(), 1, atol=1e-5)


@pytest.mark.xdist_group("prepared_nyuv2")  # one worker runs the tool for the module fixture once
def test_the_nyu_script_trains_one_epoch_on_the_written_folder(run_entry, prepared, tmp_path, tiny_run):
    out, _ = prepared
    result = run_entry(tiny_run(out, tmp_path / "exps", "--epochs", "1", "--no_cache"), tmp_path,
                       script="main_cross_nyu.py")
    assert result.returncode == 0, result.stderr
    assert "4 train / 2 val images" in result.stdout
    assert (tmp_path / "exps" / "001" / "results.json").exists()


def test_raw_depth_keeps_the_missing_pixels_at_0(official, tmp_path, capsys):
    status, _, error = run_tool(tool_arguments(official, tmp_path / "nyu", "--raw_depth"), capsys)
    assert status == 0, error
    depth = np.load(tmp_path / "nyu" / "train" / "depth" / "0.npy")[:, :, 0]
    expected = official_frame(0)[3][1::2, 1::2]
    np.testing.assert_array_equal(depth, expected)
    assert (depth == 0).sum() == 5 * 8


def test_an_interrupted_run_continues_where_it_stopped(official, tmp_path, capsys, monkeypatch):
    out = tmp_path / "nyu"
    writes = []

    def write_until_interrupted(paths, arrays):
        if len(writes) == 2:
            raise KeyboardInterrupt
        writes.append(paths)
        original_write(paths, arrays)

    original_write = preparation.write_sample
    monkeypatch.setattr(preparation, "write_sample", write_until_interrupted)
    status, _, error = run_tool(tool_arguments(official, out), capsys)
    assert status == 130
    assert f"interrupted: 2 of {FRAME_COUNT} samples are written in {out}; run the same command again" in error
    assert not (out / ".complete").exists()
    assert sorted(path.name for path in (out / "train" / "image").iterdir()) == ["0.npy", "1.npy"]
    (out / "train" / "image" / ".tmp-killed2.npy").write_bytes(b"half a file")  # what a killed writer leaves

    monkeypatch.setattr(preparation, "write_sample", original_write)
    status, output, error = run_tool(tool_arguments(official, out), capsys)
    assert status == 0, error
    assert f"wrote {FRAME_COUNT - 2} samples" in output and (out / ".complete").exists()
    status, _, error = run_tool(tool_arguments(official, tmp_path / "in_one_go"), capsys)
    assert status == 0, error
    assert folder_files(out) == folder_files(tmp_path / "in_one_go")


def test_a_complete_folder_is_left_alone_and_other_settings_are_refused(official, tmp_path, capsys):
    out = tmp_path / "nyu"
    assert run_tool(tool_arguments(official, out), capsys)[0] == 0
    before = folder_files(out)
    status, output, _ = run_tool(tool_arguments(official, out, "--verify"), capsys)
    assert status == 0 and "already complete" in output and "verified" in output
    assert folder_files(out) == before
    status, _, error = run_tool(tool_arguments(official, out, "--height", "12", "--crop", "projection"), capsys)
    assert status == 2
    assert f"--out {out} was prepared with other settings (height: 24 -> 12; crop: 'none' -> 'projection')" in error


# --- bad input ------------------------------------------------------------------------------------------------

def labeled_without(*names):
    """A writer of the labeled file without the arrays `names`."""
    return lambda path: write_labeled_file(path, [official_frame(index) for index in range(2)], leave_out=names,
                                           names=False)


def truncated_copy(path) -> None:
    """The first half of a labeled file of two frames, as an interrupted download leaves it."""
    labeled_without()(path)
    size = path.stat().st_size
    with open(path, "r+b") as stream:
        stream.truncate(size // 2)


def labeled_with_label_id(label_id):
    """A writer of the labeled file whose second frame holds `label_id` in one pixel."""
    def write(path):
        frames = [official_frame(index) for index in range(FRAME_COUNT)]
        labels = np.stack([frame[1] for frame in frames])
        labels[1, 5, 5] = label_id
        write_labeled_file(path, frames, label_ids=labels, names=False)
    return write


BAD_LABELED = {
    "missing": (None, ["--labeled {labeled} does not exist"]),
    "v5": (write_splits_file, ["--labeled {labeled} is a MATLAB v5 MAT-file; expected the MATLAB v7.3 (HDF5) file "
                               "nyu_depth_v2_labeled.mat"]),
    "text": (lambda path: path.write_text("not a MAT-file\n" * 40), ["--labeled {labeled} is not a MATLAB v7.3 (HDF5) "
                                                                     "file"]),
    "truncated": (truncated_copy, ["--labeled {labeled} cannot be opened as HDF5", "truncated file",
                                   "the download may be incomplete"]),
    "no labels": (labeled_without("labels"), ["--labeled {labeled} has no dataset 'labels'; found depths, images, "
                                              "rawDepths; expected nyu_depth_v2_labeled.mat with images, labels "
                                              "and depths"]),
    "no depths": (labeled_without("depths"), ["has no dataset 'depths'", "depths (or rawDepths with --raw_depth)"]),
    "label id past 894": (labeled_with_label_id(900), ["--labeled {labeled}: the labels of image 2 hold ids from 0 to "
                                                      "900; expected 0 (unlabelled) to 894"]),
}


@pytest.mark.parametrize("case", BAD_LABELED, ids=list(BAD_LABELED))
def test_a_bad_labeled_file_is_named_and_nothing_is_marked_complete(case, official, tmp_path, capsys):
    write, fragments = BAD_LABELED[case]
    labeled = tmp_path / "nyu_depth_v2_labeled.mat"
    if write is not None:
        write(labeled)
    arguments = tool_arguments(official, tmp_path / "nyu")
    arguments[arguments.index("--labeled") + 1] = str(labeled)
    status, _, error = run_tool(arguments, capsys)
    assert status == 2 and error.count("\n") == 1
    for fragment in fragments:
        assert fragment.format(labeled=labeled) in error, error
    assert not (tmp_path / "nyu" / ".complete").exists()


def test_images_of_another_shape_are_refused(tmp_path, official, capsys):
    labeled = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(labeled, "w") as file:
        file["images"] = np.zeros((2, 48, 64), dtype=np.uint8)
        file["labels"] = file["depths"] = np.zeros((2, 64, 48), dtype=np.uint16)
    arguments = tool_arguments(official, tmp_path / "nyu")
    arguments[arguments.index("--labeled") + 1] = str(labeled)
    status, _, error = run_tool(arguments, capsys)
    assert status == 2
    assert f"--labeled {labeled}: images is uint8 of shape (2, 48, 64); expected uint8 [N, 3, W, H]" in error


def test_raw_depth_needs_the_raw_array(tmp_path, official, capsys):
    labeled = tmp_path / "nyu_depth_v2_labeled.mat"
    labeled_without("rawDepths")(labeled)
    arguments = tool_arguments(official, tmp_path / "nyu", "--raw_depth")
    arguments[arguments.index("--labeled") + 1] = str(labeled)
    status, _, error = run_tool(arguments, capsys)
    assert status == 2 and f"--labeled {labeled} has no dataset 'rawDepths'" in error


BAD_SPLITS = {
    "past the images": (dict(train=(1, 3, 7)), "--splits {splits}: trainNdxs holds index 7, outside the 6 images of "
                                              "--labeled; expected 1-based indices 1..6"),
    "0-based": (dict(test=(0, 2)), "--splits {splits}: testNdxs holds index 0, outside the 6 images of --labeled; "
                                   "expected 1-based"),
    "repeated": (dict(train=(1, 3, 3)), "--splits {splits}: trainNdxs lists image 3 2 times; expected each image once"),
    "overlapping": (dict(train=(1, 2, 3), test=(3, 4)), "--splits {splits}: trainNdxs and testNdxs share 1 images "
                                                        "(e.g. 3); expected two disjoint lists"),
    "no testNdxs": (dict(trainNdxs=np.array([[1], [2]]), other=np.array([[3]])),
                    "--splits {splits} has no testNdxs; found other, trainNdxs; expected trainNdxs and testNdxs"),
}


@pytest.mark.parametrize("case", BAD_SPLITS, ids=list(BAD_SPLITS))
def test_a_bad_split_is_named_before_anything_is_written(case, official, tmp_path, capsys):
    variables, fragment = BAD_SPLITS[case]
    splits = tmp_path / "splits.mat"
    write_splits_file(splits, **variables)
    arguments = tool_arguments(official, tmp_path / "nyu")
    arguments[arguments.index("--splits") + 1] = str(splits)
    status, _, error = run_tool(arguments, capsys)
    assert status == 2 and fragment.format(splits=splits) in error, error
    assert not (tmp_path / "nyu").exists()


def test_a_v73_or_unreadable_splits_file_is_named(official, tmp_path, capsys):
    arguments = tool_arguments(official, tmp_path / "nyu")
    arguments[arguments.index("--splits") + 1] = str(official / "nyu_depth_v2_labeled.mat")
    status, _, error = run_tool(arguments, capsys)
    assert status == 2 and "is a MATLAB v7.3 file; expected splits.mat, a MATLAB v5 file" in error
    (tmp_path / "junk.mat").write_bytes(b"junk" * 100)
    arguments[arguments.index("--splits") + 1] = str(tmp_path / "junk.mat")
    status, _, error = run_tool(arguments, capsys)
    assert status == 2 and f"--splits {tmp_path / 'junk.mat'} is not a readable MATLAB file" in error


def test_an_output_folder_holding_other_files_is_refused(official, tmp_path, capsys):
    out = tmp_path / "nyu"
    (out / "train").mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    status, _, error = run_tool(tool_arguments(official, out), capsys)
    assert status == 2
    assert f"--out {out} holds other files (notes.txt, train/) and no .prepare_nyuv2.json" in error
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt", "train"]
    status, _, error = run_tool(tool_arguments(official, out / "notes.txt"), capsys)
    assert status == 2 and f"--out {out / 'notes.txt'} is a file" in error


@pytest.mark.parametrize("package", ["h5py", "scipy.io"])
def test_a_missing_package_names_the_requirements_file(package, official, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)
    status, _, error = run_tool(tool_arguments(official, tmp_path / "nyu"), capsys)
    assert status == 2
    assert f"{package.split('.')[0]} is not installed; python -m tools.prepare_nyuv2 needs it: pip install -r " \
           "requirements-extra.txt" in error


def test_a_bad_size_is_refused(official, tmp_path, capsys):
    status, _, error = run_tool(tool_arguments(official, tmp_path / "nyu", "--height", "0"), capsys)
    assert status == 2 and "--height 0 --width 32: expected a positive height and width" in error
