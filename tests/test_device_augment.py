"""Batched device augmentation (data.device_augment) against the per-sample CPU augmentation
(data.transforms): same parameters from the same generator, equal segmentation and depth, image within
1e-5; the datasets' deferred mode, in process and through DataLoader workers."""

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import CityscapesDataset, NYUv2Dataset
from data.device_augment import augment_batch, bilinear_source_positions, nearest_source_indices
from data.synthetic import write_cityscapes_mtan, write_nyu_mtan
from data.transforms import (CROP_SCALES, Augmentation, apply_augmentation, crop_size, draw_augmentation,
                             random_augment, to_tensors)

PROJECT_SIZES = ((32, 64), (128, 256), (288, 384))
IMAGE_TOLERANCE = 1e-5


# Where the batched path is checked: the CPU always, and CUDA on a machine that has it (bench/gpu_check.sh).
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def random_sample(rng, height, width):
    """Image float32 [H, W, 3] in [-2, 2] (ImageNet-normalised range), segmentation int64 [H, W] in -1..12,
    depth float32 [H, W] in (0, 10] with about a fifth missing (0)."""
    image = rng.uniform(-2, 2, (height, width, 3)).astype(np.float32)
    segmentation = rng.integers(-1, 13, (height, width))
    depth = rng.uniform(0.1, 10, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.2] = 0
    return image, segmentation, depth


def stacked(samples):
    """Tensors of (image, segmentation, depth) samples stacked to [N, 3, H, W], [N, H, W], [N, 1, H, W]."""
    return tuple(torch.stack(field) for field in zip(*(to_tensors(*sample) for sample in samples)))


def assert_batches_match(device_batch, cpu_batch):
    """Segmentation and depth equal, image within IMAGE_TOLERANCE."""
    device_image, device_segmentation, device_depth = device_batch
    cpu_image, cpu_segmentation, cpu_depth = cpu_batch
    assert device_segmentation.dtype == torch.int64 and device_depth.shape == cpu_depth.shape
    assert torch.equal(device_segmentation, cpu_segmentation)
    assert torch.equal(device_depth, cpu_depth)
    torch.testing.assert_close(device_image, cpu_image, atol=IMAGE_TOLERANCE, rtol=0)


def corner_augmentations(height, width):
    """Every (flip, scale) with its crop at the top-left and at the bottom-right corner."""
    augmentations = []
    for flip in (False, True):
        for scale in CROP_SCALES:
            crop_height, crop_width = crop_size(height, width, scale)
            augmentations += [Augmentation(flip, scale, 0, 0),
                              Augmentation(flip, scale, height - crop_height, width - crop_width)]
    return augmentations


@pytest.mark.parametrize("height, width", PROJECT_SIZES)
@pytest.mark.parametrize("depth_is_disparity", (False, True))
@pytest.mark.parametrize("device", DEVICES)
def test_batch_equals_random_augment_sample_by_sample(height, width, depth_is_disparity, device):
    rng = np.random.default_rng(height + depth_is_disparity)
    seeds = [(seed, epoch, index) for seed in (0, 5) for epoch in (1, 2) for index in range(4)]
    samples = [random_sample(rng, height, width) for _ in seeds]
    cpu_batch = stacked([random_augment(*sample, np.random.default_rng(seed), depth_is_disparity)
                         for sample, seed in zip(samples, seeds)])
    augmentations = [draw_augmentation(np.random.default_rng(seed), height, width) for seed in seeds]
    assert {(flip, scale) for flip, scale, _, _ in augmentations} == {(flip, scale) for flip in (False, True)
                                                                      for scale in CROP_SCALES}
    parameters = torch.stack([augmentation.as_tensor() for augmentation in augmentations])
    inputs = [tensor.to(device) for tensor in (*stacked(samples), parameters)]
    augmented = augment_batch(*inputs, depth_is_disparity)
    assert all(tensor.device.type == device for tensor in augmented)
    assert_batches_match([tensor.cpu() for tensor in augmented], cpu_batch)


@pytest.mark.parametrize("height, width", PROJECT_SIZES)
def test_every_scale_and_flip_in_one_batch_including_the_corner_crops(height, width):
    rng = np.random.default_rng(width)
    augmentations = corner_augmentations(height, width)
    samples = [random_sample(rng, height, width) for _ in augmentations]
    cpu_batch = stacked([apply_augmentation(*sample, augmentation, True)
                         for sample, augmentation in zip(samples, augmentations)])
    parameters = torch.stack([augmentation.as_tensor() for augmentation in augmentations])
    batch = augment_batch(*stacked(samples), parameters, True)
    assert_batches_match(batch, cpu_batch)
    alone = augment_batch(*stacked(samples[-1:]), parameters[-1:], True)
    for from_batch, by_itself in zip(batch, alone):
        assert torch.equal(from_batch[-1:], by_itself)


def test_depth_is_scaled_by_the_zoom_and_missing_depth_stays_missing():
    depth = np.full((32, 64), 2.0, dtype=np.float32)
    depth[:, :8] = 0
    sample = (np.zeros((32, 64, 3), dtype=np.float32), np.zeros((32, 64), dtype=np.int64), depth)
    parameters = Augmentation(False, 1.5, 0, 0).as_tensor()[None]
    _, _, disparity = augment_batch(*stacked([sample]), parameters, True)
    _, _, metric = augment_batch(*stacked([sample]), parameters, False)
    assert set(disparity.unique().tolist()) == {0.0, 3.0}
    torch.testing.assert_close(metric.unique(), torch.tensor([0.0, 2.0 / 1.5]))
    assert torch.equal(disparity == 0, metric == 0) and (disparity[0, 0, :, :11] == 0).all()


def test_flip_mirrors_the_sample_at_scale_one():
    rng = np.random.default_rng(2)
    sample = random_sample(rng, 32, 64)
    image, segmentation, depth = stacked([sample])
    flipped = augment_batch(image, segmentation, depth, Augmentation(True, 1.0, 0, 0).as_tensor()[None], False)
    unchanged = augment_batch(image, segmentation, depth, Augmentation(False, 1.0, 0, 0).as_tensor()[None], False)
    for original, mirrored, same in zip((image, segmentation, depth), flipped, unchanged):
        assert torch.equal(mirrored, original.flip(-1))
        assert torch.equal(same, original)


@pytest.mark.parametrize("crop, size", [(107, 128), (85, 128), (213, 256), (171, 256), (240, 288), (192, 288),
                                        (320, 384), (256, 384), (27, 32), (53, 64), (2048, 256), (1024, 128)])
def test_resampling_positions_are_cv2s(crop, size):
    nearest = cv2.resize(np.arange(crop, dtype=np.int32)[None].repeat(2, axis=0), (size, 2),
                         interpolation=cv2.INTER_NEAREST_EXACT)[0]
    np.testing.assert_array_equal(nearest_source_indices(crop, size), nearest)
    lower, upper, lower_weights, upper_weights = bilinear_source_positions(crop, size)
    assert ((upper == lower + 1) | (upper_weights == 0)).all()
    image = np.random.default_rng(crop).uniform(-2, 2, (crop, crop)).astype(np.float32)
    along_rows = image[:, lower] * lower_weights + image[:, upper] * upper_weights
    resampled = along_rows[lower] * lower_weights[:, None] + along_rows[upper] * upper_weights[:, None]
    bilinear = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resampled, bilinear, atol=1e-6, rtol=0)


def test_mismatched_shapes_and_devices_are_refused_by_name():
    image, segmentation, depth = stacked([random_sample(np.random.default_rng(0), 32, 64)] * 2)
    with pytest.raises(ValueError, match="augmentation has shape"):
        augment_batch(image, segmentation, depth, torch.zeros(3, 4), False)
    with pytest.raises(ValueError, match="depth has shape"):
        augment_batch(image, segmentation, depth[:, 0], torch.zeros(2, 4), False)
    with pytest.raises(ValueError, match="augmentation is on meta"):
        augment_batch(image, segmentation, depth, torch.zeros(2, 4, device="meta"), False)


def test_random_augment_draws_what_draw_augmentation_draws():
    image, segmentation, depth = random_sample(np.random.default_rng(1), 128, 256)
    recorded = [(False, 1.5, 24, 26), (False, 1.5, 11, 84), (False, 1.0, 0, 0), (False, 1.5, 29, 53),
                (True, 1.0, 0, 0)]
    for index, parameters in enumerate(recorded):
        drawing, augmenting = np.random.default_rng([0, 1, index]), np.random.default_rng([0, 1, index])
        augmentation = draw_augmentation(drawing, 128, 256)
        assert tuple(augmentation) == parameters
        augmented = random_augment(image, segmentation, depth, augmenting, True)
        for one, other in zip(augmented, apply_augmentation(image, segmentation, depth, augmentation, True)):
            np.testing.assert_array_equal(one, other)
        assert drawing.random() == augmenting.random()


@pytest.fixture(scope="module", params=("cityscapes", "nyu"))
def training_split(request, tmp_path_factory):
    """(dataset class, root) of a 6-sample train split in the real on-disk layout, stored at 48 x 64."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "cityscapes":
        return CityscapesDataset, write_cityscapes_mtan(root, {"train": 6}, 48, 64, seed=3)
    return NYUv2Dataset, write_nyu_mtan(root, {"train": 6}, 48, 64, seed=3)


def training_dataset(training_split, augment=True):
    """The split read at 32 x 64 (resized from the stored 48 x 64), seed 11, epoch 2."""
    dataset_class, root = training_split
    dataset = dataset_class(root, "train", height=32, width=64, augment=augment, seed=11, cache=False)
    dataset.set_epoch(2)
    return dataset


def test_deferred_samples_carry_the_cpu_paths_parameters(training_split):
    """Cityscapes normalises its images (normalise_image): deferred, before the augmentation."""
    cpu_dataset, deferred_dataset = training_dataset(training_split), training_dataset(training_split)
    deferred_dataset.defer_augmentation()
    plain_dataset = training_dataset(training_split, augment=False)
    deferred = [deferred_dataset[index] for index in range(len(deferred_dataset))]
    for index, (image, segmentation, depth, parameters) in enumerate(deferred):
        drawn = draw_augmentation(cpu_dataset.random_generator(index), 32, 64)
        assert parameters.dtype == torch.float32 and torch.equal(parameters, drawn.as_tensor())
        for unaugmented, plain in zip((image, segmentation, depth), plain_dataset[index]):
            assert torch.equal(unaugmented, plain)
    assert len({tuple(parameters.tolist()) for *_, parameters in deferred}) > 3
    cpu_batch = tuple(torch.stack(field) for field in zip(*(cpu_dataset[index] for index in range(len(cpu_dataset)))))
    device_batch = augment_batch(*(torch.stack(field) for field in zip(*deferred)), cpu_dataset.depth_is_disparity)
    assert_batches_match(device_batch, cpu_batch)


def test_deferred_augmentation_survives_dataloader_workers(training_split):
    dataset = training_dataset(training_split)
    dataset.defer_augmentation()
    in_process = list(DataLoader(dataset, batch_size=3, num_workers=0))
    with_workers = list(DataLoader(dataset, batch_size=3, num_workers=2, multiprocessing_context="fork"))
    assert [len(batch) for batch in with_workers] == [4, 4]
    for one, other in zip(in_process, with_workers):
        assert one[3].shape == (3, 4) and one[3].dtype == torch.float32
        for one_field, other_field in zip(one, other):
            assert torch.equal(one_field, other_field)
    drawn = torch.stack([draw_augmentation(dataset.random_generator(index), 32, 64).as_tensor()
                         for index in range(len(dataset))])
    assert torch.equal(torch.cat([batch[3] for batch in with_workers]), drawn)
    dataset.set_epoch(3)
    next_epoch = torch.cat([batch[3] for batch in DataLoader(dataset, batch_size=3, num_workers=2,
                                                               multiprocessing_context="fork")])
    assert not torch.equal(next_epoch, drawn)


def test_only_an_augmenting_dataset_can_defer(training_split):
    dataset = training_dataset(training_split, augment=False)
    with pytest.raises(ValueError, match="augment=False"):
        dataset.defer_augmentation()
    assert len(dataset[0]) == 3
