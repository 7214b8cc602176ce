"""Geometry of the augmentation against the original's formulas (dataloader.py of github.com/akarimoon/
xtask_mt, transcribed here): the scale-crop's size, and how far its bilinear image sampling lies from the
original's align_corners=True sampling (the figure docs/differences.md states)."""
import numpy as np
import pytest

from data.transforms import CROP_SCALES, crop_size


def original_crop_size(height, width, scale):
    """The original's `h, w = int(height / sc), int(width / sc)`."""
    return int(height / scale), int(width / scale)


@pytest.mark.parametrize("height,width", [(128, 256), (288, 384), (64, 128), (32, 64)])
def test_the_scale_crop_has_the_original_size(height, width):
    for scale in CROP_SCALES:
        assert crop_size(height, width, scale) == original_crop_size(height, width, scale)
    assert crop_size(128, 256, 1.2) == (106, 213)


def largest_sampling_offset(crop, out):
    """The largest distance, in crop pixels, between the bilinear sampling positions of half-pixel
    centres (cv2.INTER_LINEAR, clamped at the border) and of align_corners=True, over `out` outputs."""
    position = np.arange(out)
    corners = position * (crop - 1) / (out - 1)
    centres = np.clip((position + 0.5) * crop / out - 0.5, 0, crop - 1)
    return np.abs(corners - centres).max()


def test_the_documented_bilinear_offsets_hold_at_both_paper_sizes():
    offsets = {scale: max(largest_sampling_offset(crop, out) for height, width in ((128, 256), (288, 384))
                          for crop, out in zip(crop_size(height, width, scale), (height, width)))
               for scale in CROP_SCALES if scale != 1.0}
    assert offsets[1.2] == pytest.approx(0.085, abs=5e-4) and offsets[1.5] == pytest.approx(0.167, abs=5e-4)
