"""Surface normals on NYUv2 (MTAN layout), read through the real loader from synthetic files: the
4-tuple sample format, unit vectors and exact zeros, the resize, the flip (x negated) and the
scale-crop (directions kept), the cache (same samples, its own key), the deferred device augmentation
(equal to the CPU path) and the errors naming the files."""

import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import CityscapesDataset, NYUv2Dataset
from data.cache import CACHE_VERSION, MANIFEST_NAME, cache_key, source_files
from data.dataset import DEFAULT_TASKS, TASKS_WITH_NORMALS
from data.device_augment import augment_batch
from data.synthetic import (indoor_scene, indoor_scene_with_normals, scene_generator, write_cityscapes_mtan,
                            write_nyu_mtan)
from data.synthetic.indoor_scene import FLOOR
from data.transforms import CROP_SCALES, Augmentation, apply_augmentation, crop_size, draw_augmentation, scale_crop
from utils.errors import UserInputError

HEIGHT, WIDTH = 48, 64
UNIT_TOLERANCE = 1e-6
IMAGE_TOLERANCE = 1e-5
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


@pytest.fixture(scope="module")
def normals_root(tmp_path_factory):
    """NYU-layout indoor scenes at 48 x 64 with their normal folder: 4 train, 2 val."""
    return write_nyu_mtan(tmp_path_factory.mktemp("nyu_normals"), {"train": 4, "val": 2}, HEIGHT, WIDTH, seed=5)


@pytest.fixture
def normals_copy(normals_root, tmp_path):
    """A fresh copy of the normals dataset, free to damage."""
    return shutil.copytree(normals_root, tmp_path / "nyu")


def three_task_dataset(root, **keywords):
    """The train split of `root` read with normals, without the cache unless `keywords` say otherwise."""
    return NYUv2Dataset(root, "train", **{"cache": False, "tasks": TASKS_WITH_NORMALS, **keywords})


def stored_normal(root, split, index):
    """The normal file of sample `index` of `split` as written: float32 [H, W, 3]."""
    return np.load(root / split / "normal" / f"{index}.npy")


def message_of(action):
    """The message of the UserInputError that `action()` raises."""
    with pytest.raises(UserInputError) as error:
        action()
    return str(error.value)


def assert_unit_or_zero(normal):
    """Every vector of normal [3, H, W] has unit length or is exactly 0 in all three components; both occur."""
    valid = (normal != 0).any(dim=0)
    assert valid.any() and not valid.all()
    torch.testing.assert_close(normal.norm(dim=0)[valid], torch.ones(int(valid.sum())), atol=UNIT_TOLERANCE, rtol=0)
    assert (normal[:, ~valid] == 0).all()


def test_the_writer_stores_unit_normals_invalid_where_depth_is_missing(normals_root):
    for index in range(4):
        normal = stored_normal(normals_root, "train", index)
        depth = np.load(normals_root / "train" / "depth" / f"{index}.npy")[:, :, 0]
        assert normal.shape == (HEIGHT, WIDTH, 3) and normal.dtype == np.float32
        valid = depth > 0
        np.testing.assert_allclose(np.linalg.norm(normal[valid], axis=-1), 1, atol=UNIT_TOLERANCE)
        assert (normal[~valid] == 0).all() and (~valid).any()


def test_synthetic_normals_leave_the_scene_unchanged_and_the_floor_flat():
    floors = 0
    for index in range(3):
        image, label, depth, normal = indoor_scene_with_normals(scene_generator(1, "test", index), HEIGHT, WIDTH)
        for with_normals, without in zip((image, label, depth), indoor_scene(scene_generator(1, "test", index),
                                                                              HEIGHT, WIDTH)):
            np.testing.assert_array_equal(with_normals, without)
        floor = (label == FLOOR) & (depth[:, :, 0] > 0)
        if floor.sum() > 10:
            floors += 1
            np.testing.assert_allclose(normal[floor], np.broadcast_to(normal[floor][0], normal[floor].shape), atol=1e-6)
            assert normal[floor][0, 1] > 0.5  # the floor faces up in the image
    assert floors >= 1


def test_samples_carry_the_normal_fourth_as_stored(normals_root):
    dataset = three_task_dataset(normals_root)
    plain = NYUv2Dataset(normals_root, "train", cache=False)
    assert dataset.tasks == ("segmentation", "depth", "normal") and dataset.reads_normals
    assert plain.tasks == DEFAULT_TASKS and not plain.reads_normals
    for index in range(len(dataset)):
        sample = dataset[index]
        assert len(sample) == 4 and len(plain[index]) == 3
        image, segmentation, depth, normal = sample
        assert (image.shape, segmentation.shape, depth.shape, normal.shape) == (
            (3, HEIGHT, WIDTH), (HEIGHT, WIDTH), (1, HEIGHT, WIDTH), (3, HEIGHT, WIDTH))
        assert (image.dtype, segmentation.dtype, depth.dtype, normal.dtype) == (
            torch.float32, torch.int64, torch.float32, torch.float32)
        for with_normals, without in zip(sample, plain[index]):
            assert torch.equal(with_normals, without)
        stored = stored_normal(normals_root, "train", index)
        np.testing.assert_allclose(normal.permute(1, 2, 0).numpy(), stored, atol=UNIT_TOLERANCE, rtol=0)
        assert_unit_or_zero(normal)
        assert torch.equal((normal == 0).all(dim=0), torch.from_numpy((stored == 0).all(axis=-1)))


def test_cityscapes_samples_keep_their_two_targets(tmp_path):
    root = write_cityscapes_mtan(tmp_path, {"train": 1}, 32, 64, seed=1)
    dataset = CityscapesDataset(root, "train", height=32, width=64, cache=False)
    assert dataset.tasks == DEFAULT_TASKS and not dataset.reads_normals and len(dataset[0]) == 3


def test_a_resize_takes_the_nearest_vector_and_renormalises_it(normals_copy):
    for index in range(4):
        path = normals_copy / "train" / "normal" / f"{index}.npy"
        np.save(path, np.load(path) * np.float32(0.5))  # valid vectors of length 0.5, invalid still 0
    for index in range(4):
        _, _, _, normal = three_task_dataset(normals_copy, height=36, width=40)[index]
        stored = stored_normal(normals_copy, "train", index)
        nearest = cv2.resize(stored, (40, 36), interpolation=cv2.INTER_NEAREST_EXACT)
        length = np.linalg.norm(nearest, axis=-1, keepdims=True)
        expected = np.where(length > 0, nearest / np.where(length > 0, length, 1), 0)
        assert normal.shape == (3, 36, 40)
        np.testing.assert_allclose(normal.permute(1, 2, 0).numpy(), expected, atol=UNIT_TOLERANCE, rtol=0)
        assert_unit_or_zero(normal)


def test_the_flip_mirrors_the_normals_and_negates_x(normals_root):
    plain = three_task_dataset(normals_root)
    augmenting = three_task_dataset(normals_root, augment=True, seed=2)
    flipped_at_scale_one = 0
    for epoch in range(1, 30):
        augmenting.set_epoch(epoch)
        for index in range(len(augmenting)):
            if tuple(draw_augmentation(augmenting.random_generator(index), HEIGHT, WIDTH))[:2] != (True, 1.0):
                continue
            flipped_at_scale_one += 1
            normal = plain[index][3].permute(1, 2, 0).numpy()
            expected = normal[:, ::-1].copy()
            expected[:, :, 0] = -expected[:, :, 0]
            augmented = augmenting[index][3].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(augmented, expected)
            assert (augmented[:, :, 0] != normal[:, :, 0]).any()
            np.testing.assert_array_equal(augmented[:, :, 1:], normal[:, ::-1, 1:])
    assert flipped_at_scale_one >= 3


def test_the_scale_crop_keeps_the_vectors_as_a_hand_computation_on_a_small_map():
    rng = np.random.default_rng(3)
    normal = rng.normal(size=(4, 8, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[1, 2] = normal[2, 5] = 0
    depth = np.full((4, 8), 2.4, dtype=np.float32)
    image, segmentation = np.zeros((4, 8, 3), dtype=np.float32), np.zeros((4, 8), dtype=np.int64)
    assert crop_size(4, 8, 1.2) == (3, 6)
    # Crop 3 x 6 at (1, 1), resized to 4 x 8: source (x + 0.5) * 3 / 4 and (x + 0.5) * 6 / 8, floored.
    rows, columns = 1 + np.array([0, 1, 1, 2]), 1 + np.array([0, 1, 1, 2, 3, 4, 4, 5])
    expected = normal[rows][:, columns]
    *_, cropped_depth, cropped = scale_crop(image, segmentation, depth, 1.2, 1, 1, False, normal=normal)
    np.testing.assert_array_equal(cropped, expected)
    np.testing.assert_allclose(cropped_depth, 2.4 / 1.2, rtol=1e-6)
    length = np.linalg.norm(cropped, axis=-1)
    np.testing.assert_allclose(length[length > 0], 1, atol=UNIT_TOLERANCE)
    zeros = np.zeros((4, 8), dtype=bool)
    zeros[0, 1:3] = zeros[1:3, 5:7] = True  # where the sources (1, 2) and (2, 5) land
    np.testing.assert_array_equal(length == 0, zeros)
    *_, flipped_cropped = apply_augmentation(image, segmentation, depth, Augmentation(True, 1.2, 1, 1), False,
                                             normal=normal)
    mirrored = normal[:, ::-1] * np.array([-1, 1, 1], dtype=np.float32)
    np.testing.assert_array_equal(flipped_cropped, mirrored[rows][:, columns])


def test_augmented_samples_keep_unit_normals_and_invalid_zeros(normals_root):
    dataset = three_task_dataset(normals_root, augment=True, seed=4)
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            assert_unit_or_zero(dataset[index][3])


def test_cache_on_and_off_give_identical_samples(normals_root, tmp_path):
    for augment in (False, True):
        cached = three_task_dataset(normals_root, cache=tmp_path / "cache", height=36, width=40, augment=augment)
        read = three_task_dataset(normals_root, height=36, width=40, augment=augment)
        assert cached.cache_folder is not None and read.cache_folder is None
        for index in range(len(read)):
            cached_sample, read_sample = cached[index], read[index]
            assert len(cached_sample) == len(read_sample) == 4
            for from_cache, from_files in zip(cached_sample, read_sample):
                assert from_cache.dtype == from_files.dtype and torch.equal(from_cache, from_files)
    manifest = cached.cache_manifest
    assert manifest["dtypes"] == {"image": "float32", "segmentation": "uint8", "depth": "float32",
                                  "normal": "float32"}
    assert 0 < manifest["valid_normal_pixels"] < 4 * 36 * 40


def test_the_cache_key_holds_the_tasks_only_with_normals(normals_root, tmp_path):
    two = NYUv2Dataset(normals_root, "train", cache=tmp_path)
    three = three_task_dataset(normals_root, cache=tmp_path)
    assert cache_key(two) == {"cache_version": CACHE_VERSION, "layout": "nyu-mtan", "split": "train",
                              "height": HEIGHT, "width": WIDTH, "num_classes": 13, "ignore_index": -1,
                              "files": source_files(normals_root, two.samples)}
    assert not any("/normal/" in name for name, _, _ in cache_key(two)["files"])
    key = cache_key(three)
    assert key["tasks"] == ["segmentation", "depth", "normal"]
    assert sum("/normal/" in name for name, _, _ in key["files"]) == 4
    assert two.cache_folder != three.cache_folder
    assert sorted(path.name for path in two.cache_folder.glob("*.npy")) == ["depth.npy", "image.npy",
                                                                           "segmentation.npy"]
    assert (three.cache_folder / "normal.npy").is_file() and (three.cache_folder / MANIFEST_NAME).is_file()
    again = NYUv2Dataset(normals_root, "train", cache=tmp_path)
    assert again.cache_folder == two.cache_folder and len(again[0]) == 3 and len(three[0]) == 4


def deferred_and_cpu_batches(root, epoch):
    """(deferred samples stacked: image, segmentation, depth, normal, augmentation; the CPU path's
    augmented samples stacked) of the train split at 32 x 64, seed 7, epoch `epoch`."""
    cpu_dataset = three_task_dataset(root, height=32, width=64, augment=True, seed=7)
    deferred_dataset = three_task_dataset(root, height=32, width=64, augment=True, seed=7)
    deferred_dataset.defer_augmentation()
    for dataset in (cpu_dataset, deferred_dataset):
        dataset.set_epoch(epoch)
    deferred = next(iter(DataLoader(deferred_dataset, batch_size=len(deferred_dataset))))
    cpu = tuple(torch.stack(field) for field in zip(*(cpu_dataset[index] for index in range(len(cpu_dataset)))))
    return deferred, cpu


def test_the_deferred_sample_appends_the_augmentation_after_the_normal(normals_root):
    dataset = three_task_dataset(normals_root, augment=True, seed=7)
    plain = three_task_dataset(normals_root)
    dataset.defer_augmentation()
    for index in range(len(dataset)):
        *maps, augmentation = dataset[index]
        assert len(maps) == 4 and augmentation.shape == (4,) and augmentation.dtype == torch.float32
        assert torch.equal(augmentation, draw_augmentation(dataset.random_generator(index), HEIGHT, WIDTH).as_tensor())
        for unaugmented, expected in zip(maps, plain[index]):
            assert torch.equal(unaugmented, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_device_augmentation_equals_the_cpu_path(normals_root, device):
    flips = set()
    for epoch in (1, 2, 3, 4):
        (image, segmentation, depth, normal, augmentation), cpu = deferred_and_cpu_batches(normals_root, epoch)
        assert augmentation.shape == (4, 4)
        flips |= set(augmentation[:, 0].tolist())
        inputs = [tensor.to(device) for tensor in (image, segmentation, depth, augmentation)]
        augmented = augment_batch(*inputs, False, normal=normal.to(device))
        assert len(augmented) == 4 and all(tensor.device.type == device for tensor in augmented)
        augmented = [tensor.cpu() for tensor in augmented]
        for from_device, from_cpu in zip(augmented[1:], cpu[1:]):
            assert from_device.dtype == from_cpu.dtype and torch.equal(from_device, from_cpu)
        torch.testing.assert_close(augmented[0], cpu[0], atol=IMAGE_TOLERANCE, rtol=0)
        without_normals = augment_batch(*inputs, False)
        assert len(without_normals) == 3
        for one, other in zip(without_normals, augmented):
            assert torch.equal(one.cpu(), other)
    assert flips == {0.0, 1.0}


@pytest.mark.parametrize("device", DEVICES)
def test_device_normals_equal_the_cpu_path_for_every_scale_and_corner(device):
    rng = np.random.default_rng(9)
    augmentations = [Augmentation(flip, scale, top, left) for flip in (False, True) for scale in CROP_SCALES
                     for top, left in ((0, 0), (HEIGHT - crop_size(HEIGHT, WIDTH, scale)[0],
                                                WIDTH - crop_size(HEIGHT, WIDTH, scale)[1]))]
    normals = rng.normal(size=(len(augmentations), HEIGHT, WIDTH, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[rng.random(normals.shape[:3]) < 0.2] = 0
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32)
    segmentation, depth = np.zeros((HEIGHT, WIDTH), dtype=np.int64), np.ones((HEIGHT, WIDTH), dtype=np.float32)
    expected = torch.stack([torch.from_numpy(np.ascontiguousarray(
        apply_augmentation(image, segmentation, depth, augmentation, False, normal=normal)[3].transpose(2, 0, 1)))
        for augmentation, normal in zip(augmentations, normals)])
    count = len(augmentations)
    parameters = torch.stack([augmentation.as_tensor() for augmentation in augmentations])
    batch = (torch.zeros(count, 3, HEIGHT, WIDTH), torch.zeros(count, HEIGHT, WIDTH, dtype=torch.int64),
             torch.ones(count, 1, HEIGHT, WIDTH), parameters)
    *_, augmented = augment_batch(*(tensor.to(device) for tensor in batch), False,
                                  normal=torch.from_numpy(normals).permute(0, 3, 1, 2).to(device))
    assert torch.equal(augmented.cpu(), expected)
    assert ((augmented == 0).all(dim=1) | ((augmented.norm(dim=1) - 1).abs() < UNIT_TOLERANCE)).all()


def test_a_normal_batch_of_the_wrong_shape_is_refused_by_name():
    batch = (torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.int64), torch.zeros(2, 1, 8, 8),
             torch.zeros(2, 4))
    with pytest.raises(ValueError, match="normal has shape"):
        augment_batch(*batch, False, normal=torch.zeros(2, 1, 8, 8))


def test_a_missing_normal_folder_is_named_with_what_the_split_holds(normals_copy):
    shutil.rmtree(normals_copy / "train" / "normal")
    message = message_of(lambda: three_task_dataset(normals_copy))
    assert str(normals_copy / "train" / "normal") in message
    assert "depth/, image/, label/" in message and "expected" in message
    assert len(NYUv2Dataset(normals_copy, "train", cache=False)[0]) == 3


def test_a_missing_normal_file_names_the_image_and_the_expected_file(normals_copy):
    (normals_copy / "train" / "normal" / "2.npy").unlink()
    message = message_of(lambda: three_task_dataset(normals_copy))
    assert str(normals_copy / "train" / "image" / "2.npy") in message
    assert str(normals_copy / "train" / "normal" / "2.npy") in message


@pytest.mark.parametrize("stored, found, expected", [
    (np.zeros((HEIGHT, WIDTH), dtype=np.float32), f"({HEIGHT}, {WIDTH})", "H x W x 3"),
    (np.zeros((HEIGHT, WIDTH - 2, 3), dtype=np.float32), f"{HEIGHT} x {WIDTH - 2}", f"{HEIGHT} x {WIDTH}"),
    (np.full((HEIGHT, WIDTH, 3), np.nan, dtype=np.float32), "NaN or infinite", "unit vectors"),
    (np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8), "dtype uint8", "float unit vectors"),
])
def test_an_odd_normal_file_is_named_with_what_it_holds(normals_copy, stored, found, expected):
    path = normals_copy / "train" / "normal" / "1.npy"
    np.save(path, stored)
    message = message_of(lambda: three_task_dataset(normals_copy)[1])
    assert str(path) in message and found in message and expected in message


def test_a_split_without_a_valid_normal_is_refused_with_and_without_the_cache(normals_copy, tmp_path):
    for path in (normals_copy / "train" / "normal").glob("*.npy"):
        np.save(path, np.zeros_like(np.load(path)))
    for build in (lambda: three_task_dataset(normals_copy, cache=tmp_path),
                  lambda: three_task_dataset(normals_copy).check_every_sample()):
        message = message_of(build)
        assert "no valid normal pixel" in message and str(normals_copy / "train" / "normal") in message


@pytest.mark.parametrize("tasks", [("segmentation", "normal"), ("depth", "segmentation", "normal"), "normal"])
def test_unknown_task_sets_are_refused_by_name(normals_root, tasks):
    message = message_of(lambda: NYUv2Dataset(normals_root, "train", cache=False, tasks=tasks))
    assert "normal" in message and "(segmentation, depth, normal)" in message and "NYUv2Dataset" in message
