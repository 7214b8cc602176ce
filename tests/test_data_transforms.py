"""Augmentation: flip and scale-crop keep image, labels and depth aligned and scale depth the right
way; the datasets' random streams are reproducible, differ between workers and epochs; evaluation
samples are deterministic."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import NYUv2Dataset
from data.transforms import CROP_SCALES, crop_size, horizontal_flip, random_augment, scale_crop

BLOCK = 8
HEIGHT, WIDTH = 48, 64


def block_pattern():
    """A sample of 8 x 8 blocks: block b has label b % 13, image colour (b / 48, (b * b % 47) / 47, 0.5)
    (not affine in b, so a blend of two blocks never shows a third block's colour) and depth
    1 + b / 8 (metres), except the blocks of label 5 whose depth is missing (0)."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    block = (rows // BLOCK) * (WIDTH // BLOCK) + columns // BLOCK
    image = np.stack((block / 48, block * block % 47 / 47, np.full(block.shape, 0.5)), axis=-1).astype(np.float32)
    segmentation = (block % 13).astype(np.int64)
    depth = (1 + block / 8).astype(np.float32)
    depth[segmentation == 5] = 0
    return image, segmentation, depth, block


def block_of_colour(image):
    """For each pixel, the block whose colour it shows exactly (bilinear interpolation leaves block
    interiors untouched), or -1 where the colour is a blend."""
    block = np.round(image[..., 0] * 48).astype(np.int64)
    exact = (np.abs(image[..., 0] - block / 48) < 1e-5) & (np.abs(image[..., 1] - block * block % 47 / 47) < 1e-5)
    return np.where(exact, block, -1)


def check_aligned(image, segmentation, depth, depth_factor):
    """Assert that wherever the image shows a block's colour, label and depth belong to that block."""
    block = block_of_colour(image)
    shown = block >= 0
    assert shown.mean() > 0.3
    np.testing.assert_array_equal(segmentation[shown], block[shown] % 13)
    expected_depth = np.where(block[shown] % 13 == 5, 0, (1 + block[shown] / 8) * depth_factor)
    np.testing.assert_allclose(depth[shown], expected_depth, rtol=1e-6)


def test_horizontal_flip_mirrors_all_maps_together():
    image, segmentation, depth, block = block_pattern()
    flipped_image, flipped_segmentation, flipped_depth = horizontal_flip(image, segmentation, depth)
    np.testing.assert_array_equal(flipped_segmentation[:, 0], segmentation[:, -1])
    np.testing.assert_array_equal(block_of_colour(flipped_image), block[:, ::-1])
    check_aligned(flipped_image, flipped_segmentation, flipped_depth, 1.0)


@pytest.mark.parametrize("scale", CROP_SCALES)
@pytest.mark.parametrize("depth_is_disparity", (False, True))
def test_scale_crop_keeps_alignment_and_scales_depth(scale, depth_is_disparity):
    image, segmentation, depth, _ = block_pattern()
    top, left = 5, 3
    if scale == 1.0:
        top, left = 0, 0
    cropped = scale_crop(image, segmentation, depth, scale, top, left, depth_is_disparity)
    assert [array.shape[:2] for array in cropped] == [(HEIGHT, WIDTH)] * 3
    check_aligned(*cropped, depth_factor=scale if depth_is_disparity else 1 / scale)


def test_scale_crop_shows_the_chosen_window():
    image, segmentation, depth, block = block_pattern()
    scale, top, left = 1.5, 10, 12
    crop_height, crop_width = crop_size(HEIGHT, WIDTH, scale)
    assert (crop_height, crop_width) == (32, 42)
    _, cropped_segmentation, _ = scale_crop(image, segmentation, depth, scale, top, left, False)
    window = block[top:top + crop_height, left:left + crop_width]
    assert cropped_segmentation[0, 0] == window[0, 0] % 13
    assert cropped_segmentation[-1, -1] == window[-1, -1] % 13
    assert set(np.unique(cropped_segmentation)) == set(np.unique(window % 13))


def test_scale_crop_keeps_missing_depth_missing():
    image, segmentation, depth, _ = block_pattern()
    _, cropped_segmentation, cropped_depth = scale_crop(image, segmentation, depth, 1.2, 0, 0, True)
    zero = cropped_depth == 0
    assert zero.any()
    np.testing.assert_array_equal(zero, cropped_segmentation == 5)


def test_random_augment_is_a_pure_function_of_the_generator_and_keeps_alignment():
    image, segmentation, depth, _ = block_pattern()
    outputs = []
    for seed in range(12):
        first = random_augment(image, segmentation, depth, np.random.default_rng(seed), False)
        second = random_augment(image, segmentation, depth, np.random.default_rng(seed), False)
        for one, other in zip(first, second):
            np.testing.assert_array_equal(one, other)
        zoom = float(np.max(depth) / np.max(first[2]))
        assert min(abs(zoom - scale) for scale in CROP_SCALES) < 0.35
        outputs.append(first[1])
    distinct = {array.tobytes() for array in outputs}
    assert len(distinct) > 6


def write_identical_nyu_samples(root, count):
    """An NYU MTAN split holding `count` copies of the block pattern."""
    image, segmentation, depth, _ = block_pattern()
    for folder, array in (("image", image), ("label", segmentation.astype(np.float32)), ("depth", depth[:, :, None])):
        (root / "train" / folder).mkdir(parents=True)
        for index in range(count):
            np.save(root / "train" / folder / f"{index}.npy", array)


def test_augmented_dataset_samples_stay_aligned(tmp_path):
    write_identical_nyu_samples(tmp_path, 6)
    dataset = NYUv2Dataset(tmp_path, "train", augment=True, seed=3)
    flips_or_crops = 0
    for index in range(len(dataset)):
        image, segmentation, depth = dataset[index]
        image, segmentation, depth = image.permute(1, 2, 0).numpy(), segmentation.numpy(), depth[0].numpy()
        block = block_of_colour(image)
        shown = block >= 0
        np.testing.assert_array_equal(segmentation[shown], block[shown] % 13)
        factor = depth[shown & (block == 0)].mean() if (shown & (block == 0)).any() else None
        if factor is not None:
            assert min(abs(factor - 1 / scale) for scale in CROP_SCALES) < 1e-6
        flips_or_crops += not np.array_equal(segmentation, block_pattern()[1])
    assert flips_or_crops > 0


def test_evaluation_samples_are_deterministic(tmp_path):
    write_identical_nyu_samples(tmp_path, 2)
    dataset = NYUv2Dataset(tmp_path, "train")
    first, second = dataset[0], dataset[0]
    for one, other in zip(first, second):
        assert torch.equal(one, other)
    assert torch.equal(first[1], torch.from_numpy(block_pattern()[1]))


def augmented_epochs(root, workers, epochs, seed=0):
    """Label maps of every sample, per epoch, from a loader with `workers` workers (in order)."""
    dataset = NYUv2Dataset(root, "train", augment=True, seed=seed)
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, shuffle=False,
                        multiprocessing_context="fork" if workers else None)
    runs = []
    for epoch in range(1, epochs + 1):
        dataset.set_epoch(epoch)
        runs.append([segmentation[0].numpy() for _, segmentation, _ in loader])
    return runs


def test_augmentation_depends_on_seed_epoch_and_sample_only(tmp_path):
    write_identical_nyu_samples(tmp_path, 8)
    in_process = augmented_epochs(tmp_path, workers=0, epochs=2)
    with_workers = augmented_epochs(tmp_path, workers=2, epochs=2)
    for one_epoch, other_epoch in zip(in_process, with_workers):
        for one, other in zip(one_epoch, other_epoch):
            np.testing.assert_array_equal(one, other)
    first_epoch, second_epoch = in_process
    assert any(not np.array_equal(one, other) for one, other in zip(first_epoch[:-1], first_epoch[1:]))
    assert any(not np.array_equal(one, other) for one, other in zip(first_epoch, second_epoch))
    other_seed = augmented_epochs(tmp_path, workers=0, epochs=1, seed=1)[0]
    assert any(not np.array_equal(one, other) for one, other in zip(first_epoch, other_seed))