"""Bad input ends in a UserInputError whose message names the path, what was found and what was
expected: checked when a dataset is opened (layout, split, file pairing, counts) or when a sample
is read (file contents)."""

import shutil

import cv2
import numpy as np
import pytest

from data import CityscapesDataset, NYUv2Dataset
from data.synthetic import write_cityscapes_mtan, write_cityscapes_raw, write_nyu_mtan
from utils.errors import UserInputError

PREFIX = "arden_000000_000019"


@pytest.fixture(scope="module")
def data_pristine_roots(tmp_path_factory):
    """Small valid datasets of each layout (2 train samples each); tests damage copies of them."""
    base = tmp_path_factory.mktemp("pristine")
    return {
        "raw": write_cityscapes_raw(base / "raw", {"train": 2}, 64, 128),
        "mtan": write_cityscapes_mtan(base / "mtan", {"train": 2}, 32, 64),
        "nyu": write_nyu_mtan(base / "nyu", {"train": 2}, 24, 32),
    }


@pytest.fixture
def data_copy(data_pristine_roots, tmp_path):
    """A function returning a fresh copy of one pristine layout ("raw", "mtan" or "nyu")."""
    def copy(layout):
        return shutil.copytree(data_pristine_roots[layout], tmp_path / layout)
    return copy


def raw_path(root, folder, suffix):
    """Path of the first raw sample's file in `folder`."""
    return root / folder / "train" / "arden" / f"{PREFIX}_{suffix}.png"


def message_of(call):
    """The UserInputError message raised by `call()`."""
    with pytest.raises(UserInputError) as raised:
        call()
    return str(raised.value)


def test_missing_root(tmp_path):
    message = message_of(lambda: CityscapesDataset(tmp_path / "nowhere", "train"))
    assert str(tmp_path / "nowhere") in message and "does not exist" in message


def test_unknown_layout_lists_the_three(tmp_path):
    (tmp_path / "images").mkdir()
    message = message_of(lambda: NYUv2Dataset(tmp_path, "train"))
    assert str(tmp_path) in message and "images/" in message
    for layout in ("cityscapes-raw", "cityscapes-mtan", "nyu-mtan"):
        assert layout in message


def test_split_folder_given_as_root_gets_a_hint(data_copy):
    root = data_copy("nyu")
    message = message_of(lambda: NYUv2Dataset(root / "train", "train"))
    assert "split folder" in message and "parent" in message


def test_incomplete_raw_release(data_copy):
    root = data_copy("raw")
    shutil.rmtree(root / "disparity")
    message = message_of(lambda: CityscapesDataset(root, "train"))
    assert "disparity/" in message and str(root) in message


def test_wrong_dataset_class_for_the_layout(data_copy):
    nyu_root, mtan_root = data_copy("nyu"), data_copy("mtan")
    assert "nyu-mtan" in message_of(lambda: CityscapesDataset(nyu_root, "train"))
    assert "cityscapes-mtan" in message_of(lambda: NYUv2Dataset(mtan_root, "train"))


@pytest.mark.parametrize("layout", ("raw", "mtan", "nyu"))
def test_missing_split_names_what_exists(data_copy, layout):
    root = data_copy(layout)
    dataset = NYUv2Dataset if layout == "nyu" else CityscapesDataset
    message = message_of(lambda: dataset(root, "val"))
    assert "'val'" in message and "train/" in message


def test_raw_image_without_label_names_both(data_copy):
    root = data_copy("raw")
    raw_path(root, "gtFine", "gtFine_labelIds").unlink()
    message = message_of(lambda: CityscapesDataset(root, "train"))
    assert str(raw_path(root, "leftImg8bit", "leftImg8bit")) in message
    assert str(raw_path(root, "gtFine", "gtFine_labelIds")) in message


def test_raw_image_without_disparity_names_both(data_copy):
    root = data_copy("raw")
    raw_path(root, "disparity", "disparity").unlink()
    message = message_of(lambda: CityscapesDataset(root, "train"))
    assert str(raw_path(root, "leftImg8bit", "leftImg8bit")) in message
    assert str(raw_path(root, "disparity", "disparity")) in message


@pytest.mark.parametrize("folder", ("label", "depth"))
def test_npy_image_without_label_or_depth_names_both(data_copy, folder):
    root = data_copy("nyu")
    (root / "train" / folder / "1.npy").unlink()
    message = message_of(lambda: NYUv2Dataset(root, "train"))
    assert str(root / "train" / "image" / "1.npy") in message and str(root / "train" / folder / "1.npy") in message


def test_missing_label_folder_for_the_class_count(data_copy):
    root = data_copy("mtan")
    shutil.rmtree(root / "train" / "label_19")
    message = message_of(lambda: CityscapesDataset(root, "train", num_classes=19))
    assert str(root / "train" / "label_19") in message and "label_7/" in message


@pytest.mark.parametrize("suffix", ("leftImg8bit", "gtFine_labelIds", "disparity"))
def test_truncated_png_is_named(data_copy, suffix):
    root = data_copy("raw")
    folder = {"leftImg8bit": "leftImg8bit", "gtFine_labelIds": "gtFine", "disparity": "disparity"}[suffix]
    path = raw_path(root, folder, suffix)
    path.write_bytes(path.read_bytes()[:200])
    dataset = CityscapesDataset(root, "train", cache=False)
    message = message_of(lambda: dataset[0])
    assert str(path) in message and "truncated" in message
    assert dataset[1][0].shape == (3, 128, 256)
    assert message_of(lambda: CityscapesDataset(root, "train")) == message


def test_unreadable_png_is_named(data_copy):
    root = data_copy("raw")
    path = raw_path(root, "leftImg8bit", "leftImg8bit")
    path.write_bytes(b"these are not the pixels you are looking for")
    message = message_of(lambda: CityscapesDataset(root, "train")[0])
    assert str(path) in message and "not a PNG" in message


def test_eight_bit_disparity_is_rejected(data_copy):
    root = data_copy("raw")
    path = raw_path(root, "disparity", "disparity")
    assert cv2.imwrite(str(path), np.zeros((64, 128), dtype=np.uint8))
    message = message_of(lambda: CityscapesDataset(root, "train")[0])
    assert str(path) in message and "16-bit" in message


@pytest.mark.parametrize("folder", ("image", "label", "depth"))
def test_truncated_npy_is_named(data_copy, folder):
    root = data_copy("nyu")
    path = root / "train" / folder / "0.npy"
    path.write_bytes(path.read_bytes()[:300])
    message = message_of(lambda: NYUv2Dataset(root, "train", height=24, width=32)[0])
    assert str(path) in message


def test_truncated_first_image_is_named_when_the_size_is_taken_from_it(data_copy):
    root = data_copy("nyu")
    path = root / "train" / "image" / "0.npy"
    path.write_bytes(path.read_bytes()[:100])
    assert str(path) in message_of(lambda: NYUv2Dataset(root, "train"))


def test_badly_named_npy_file(data_copy):
    root = data_copy("mtan")
    shutil.copy(root / "train" / "image" / "0.npy", root / "train" / "image" / "first.npy")
    message = message_of(lambda: CityscapesDataset(root, "train"))
    assert "first.npy" in message and "{index}.npy" in message


def test_raw_label_ids_outside_the_table(data_copy):
    root = data_copy("raw")
    path = raw_path(root, "gtFine", "gtFine_labelIds")
    label_ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    label_ids[3, 4], label_ids[5, 6] = 34, 200
    assert cv2.imwrite(str(path), label_ids)
    message = message_of(lambda: CityscapesDataset(root, "train")[0])
    assert str(path) in message and "34, 200" in message and "0..33" in message


@pytest.mark.parametrize("bad_value", (7, -2, 2.5))
def test_npy_label_values_outside_the_classes(data_copy, bad_value):
    root = data_copy("mtan")
    path = root / "train" / "label_7" / "1.npy"
    label = np.load(path)
    label[0, 0] = bad_value
    np.save(path, label)
    message = message_of(lambda: CityscapesDataset(root, "train", height=32, width=64)[1])
    assert str(path) in message and "0..6" in message


def test_raw_sample_with_disagreeing_sizes(data_copy):
    root = data_copy("raw")
    path = raw_path(root, "disparity", "disparity")
    assert cv2.imwrite(str(path), np.ones((60, 128), dtype=np.uint16))
    message = message_of(lambda: CityscapesDataset(root, "train")[0])
    assert str(path) in message and "60 x 128" in message and "64 x 128" in message


def test_npy_sample_with_disagreeing_sizes(data_copy):
    root = data_copy("nyu")
    path = root / "train" / "label" / "1.npy"
    np.save(path, np.zeros((24, 30), dtype=np.float32))
    message = message_of(lambda: NYUv2Dataset(root, "train")[1])
    assert str(path) in message and "24 x 30" in message and "24 x 32" in message


def test_npy_array_of_the_wrong_shape(data_copy):
    root = data_copy("nyu")
    path = root / "train" / "depth" / "0.npy"
    np.save(path, np.ones((24, 32, 2), dtype=np.float32))
    message = message_of(lambda: NYUv2Dataset(root, "train")[0])
    assert str(path) in message and "(24, 32, 2)" in message and "H x W" in message


@pytest.mark.parametrize("bad_value", (np.nan, np.inf, -np.inf))
def test_non_finite_depth(data_copy, bad_value):
    root = data_copy("nyu")
    path = root / "train" / "depth" / "1.npy"
    depth = np.load(path)
    depth[2, 3, 0] = bad_value
    np.save(path, depth)
    message = message_of(lambda: NYUv2Dataset(root, "train")[1])
    assert str(path) in message and "NaN or infinite" in message


def test_negative_depth(data_copy):
    root = data_copy("mtan")
    path = root / "train" / "depth" / "0.npy"
    depth = np.load(path)
    depth[1, 1, 0] = -0.25
    np.save(path, depth)
    message = message_of(lambda: CityscapesDataset(root, "train", height=32, width=64)[0])
    assert str(path) in message and "-0.25" in message


def test_image_outside_unit_range(data_copy):
    root = data_copy("nyu")
    path = root / "train" / "image" / "0.npy"
    np.save(path, np.load(path) * 255)
    message = message_of(lambda: NYUv2Dataset(root, "train")[0])
    assert str(path) in message and "[0, 1]" in message


def test_pickled_npy_is_named(data_copy):
    root = data_copy("nyu")
    path = root / "train" / "label" / "0.npy"
    np.save(path, np.array([{"label": 1}], dtype=object), allow_pickle=True)
    message = message_of(lambda: NYUv2Dataset(root, "train")[0])
    assert str(path) in message and "Python objects" in message


def test_garbage_npy_is_named(data_copy):
    root = data_copy("mtan")
    path = root / "train" / "depth" / "1.npy"
    path.write_bytes(b"depth, probably")
    message = message_of(lambda: CityscapesDataset(root, "train", height=32, width=64)[1])
    assert str(path) in message and "not a NumPy .npy file" in message


def test_empty_raw_split(data_copy):
    root = data_copy("raw")
    for path in (root / "leftImg8bit" / "train" / "arden").iterdir():
        path.unlink()
    (root / "leftImg8bit" / "train" / "brookhaven" / f"brookhaven_000000_000019_leftImg8bit.png").unlink()
    message = message_of(lambda: CityscapesDataset(root, "train"))
    assert "empty split" in message and str(root / "leftImg8bit" / "train") in message


def test_empty_npy_split(data_copy):
    root = data_copy("mtan")
    for path in (root / "train" / "image").iterdir():
        path.unlink()
    message = message_of(lambda: CityscapesDataset(root, "train"))
    assert "empty split" in message and str(root / "train" / "image") in message


def test_unsupported_class_count_and_clashing_ignore_index(data_copy):
    root = data_copy("mtan")
    assert "--num_classes 13" in message_of(lambda: CityscapesDataset(root, "train", num_classes=13))
    assert "--ignore_index 3" in message_of(lambda: CityscapesDataset(root, "train", ignore_index=3))
    assert "--ignore_index 0" in message_of(lambda: NYUv2Dataset(data_copy("nyu"), "train", ignore_index=0))


def test_non_positive_output_size(data_copy):
    message = message_of(lambda: CityscapesDataset(data_copy("mtan"), "train", height=0, width=64))
    assert "--height 0" in message and "positive" in message


def test_broken_links_are_named_as_broken_links(data_copy):
    root = data_copy("raw")
    label = raw_path(root, "gtFine", "gtFine_labelIds")
    label.unlink()
    label.symlink_to(root / "nowhere.png")
    message = message_of(lambda: CityscapesDataset(root, "train", cache=False))
    assert f"{label} is a broken link" in message and "nowhere.png" in message
    nyu = data_copy("nyu")
    depth = nyu / "train" / "depth" / "0.npy"
    depth.unlink()
    depth.symlink_to(nyu / "gone.npy")
    message = message_of(lambda: NYUv2Dataset(nyu, "train", cache=False)[0])
    assert f"{depth} is a broken link" in message


def test_bool_image_is_refused(data_copy):
    root = data_copy("nyu")
    path = root / "train" / "image" / "0.npy"
    np.save(path, np.load(path) > 0.5)
    message = message_of(lambda: NYUv2Dataset(root, "train", cache=False)[0])
    assert str(path) in message and "bool image" in message
