"""NYUv2 (MTAN layout) read from generated files: sizes, units, ignore index, the normal folder."""

import cv2
import numpy as np
import pytest
import torch

from data import NYUv2Dataset, detect_layout
from data.nyu import NYU_13_CLASS_NAMES
from data.synthetic import write_nyu_mtan

HEIGHT, WIDTH = 72, 96


@pytest.fixture(scope="module")
def data_nyu_root(tmp_path_factory):
    """NYU-layout indoor scenes at 72 x 96: 3 train, 2 val, plus a `normal` folder with junk in it."""
    root = write_nyu_mtan(tmp_path_factory.mktemp("nyu"), {"train": 3, "val": 2}, HEIGHT, WIDTH, seed=4)
    (root / "train" / "normal").mkdir(exist_ok=True)
    (root / "train" / "normal" / "0.npy").write_bytes(b"not an array")
    return root


def test_reads_generated_files_as_stored(data_nyu_root):
    dataset = NYUv2Dataset(data_nyu_root, "train")
    assert detect_layout(data_nyu_root) == "nyu-mtan"
    assert (dataset.layout, len(dataset), dataset.num_classes, dataset.ignore_index) == ("nyu-mtan", 3, 13, -1)
    assert (dataset.height, dataset.width) == (HEIGHT, WIDTH)
    assert dataset.class_names == NYU_13_CLASS_NAMES
    assert dataset.palette.shape == (13, 3) and dataset.palette.dtype == np.uint8
    assert len({tuple(colour) for colour in dataset.palette}) == 13
    for index in range(len(dataset)):
        image, segmentation, depth = dataset[index]
        assert image.dtype == torch.float32 and segmentation.dtype == torch.int64 and depth.dtype == torch.float32
        stored_image = np.load(data_nyu_root / "train" / "image" / f"{index}.npy")
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), stored_image)
        stored_label = np.load(data_nyu_root / "train" / "label" / f"{index}.npy")
        np.testing.assert_array_equal(segmentation.numpy(), stored_label)
        stored_depth = np.load(data_nyu_root / "train" / "depth" / f"{index}.npy")
        np.testing.assert_array_equal(depth.numpy(), stored_depth.transpose(2, 0, 1))
        assert 0 <= image.min() and image.max() <= 1
        assert (segmentation == -1).any() and segmentation.max() <= 12
        assert (depth == 0).any() and 1.0 < depth.max() <= 10


def test_ignore_index_replaces_unlabelled_pixels(data_nyu_root):
    _, segmentation, _ = NYUv2Dataset(data_nyu_root, "val", ignore_index=255)[0]
    stored = np.load(data_nyu_root / "val" / "label" / "0.npy")
    np.testing.assert_array_equal(segmentation.numpy() == 255, stored == -1)
    assert (segmentation.numpy() == 255).any()


def test_height_and_width_resize_like_cityscapes(data_nyu_root):
    image, segmentation, depth = NYUv2Dataset(data_nyu_root, "val", height=36, width=64)[1]
    assert image.shape == (3, 36, 64) and segmentation.shape == (36, 64) and depth.shape == (1, 36, 64)
    stored_depth = np.load(data_nyu_root / "val" / "depth" / "1.npy")[:, :, 0]
    np.testing.assert_array_equal(depth[0].numpy(), cv2.resize(stored_depth, (64, 36), interpolation=cv2.INTER_NEAREST_EXACT))
    stored_image = np.load(data_nyu_root / "val" / "image" / "1.npy")
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(),
                               cv2.resize(stored_image, (64, 36), interpolation=cv2.INTER_AREA), atol=1e-6)

