"""The training augmentation of data.transforms applied to a whole batch on the batch's device.

`augment_batch` takes unaugmented samples with the parameters drawn for them on the CPU
(MultiTaskDataset.defer_augmentation: flip, scale, top, left per sample) and gives what
data.transforms.apply_augmentation gives sample by sample: segmentation, depth and (when given)
surface normals equal, the image equal up to float rounding. It is batched throughout: no Python loop
over samples and no value read back to the host (beyond the first batch of a size on a device, see
below), so it can run on a GPU without stalling it.

Resampling, per output pixel, in crop coordinates (crop = crop_size(H, W, scale), out = H or W):
- nearest (segmentation, depth, normals): the source index that data.transforms.resize_nearest
  (cv2.INTER_NEAREST_EXACT) picks, about floor((x + 0.5) * crop / out). OpenCV's rounding of it is
  not that closed formula (4.x: 16-bit fixed point; 5.x: a running sum of crop / out in double, which
  lands one pixel lower at some exact integers, e.g. every third row of 192 -> 288), so the indices
  are taken from resize_nearest itself, applied once per crop scale to a row of pixel numbers.
- bilinear (image): cv2.INTER_LINEAR's rule, source coordinate (x + 0.5) * crop / out - 0.5, its floor
  and the next pixel weighted by the fraction, clamped to [0, crop - 1]; interpolated within each row
  first, then between rows, as cv2 does. The weights are read off cv2.resize itself (OpenCV 5.0 rounds
  the fraction more finely than a float32 coordinate would, which alone is off by up to 5e-6 and moves
  the image by up to 5e-5), so the image agrees with the CPU path's to a few float32 roundings.
The flip is folded into the source columns (column c of the flipped sample is column W - 1 - c); a
flipped normal also has its x component (channel 0) negated, as data.transforms.flip_normals does.

Those per-scale index and weight tables depend only on (H, W): they are computed once on the host and
kept on each device (`resampling_tables`); the first batch of a size on a device copies them there.
"""

import functools
from typing import NamedTuple

import cv2
import numpy as np
import torch

from data.transforms import CROP_SCALES, crop_size, resize_nearest


class ResamplingTables(NamedTuple):
    """Source positions inside the crop for each scale s of CROP_SCALES (row s of every table), for an
    output of height x width: the nearest source rows and columns, and the bilinear lower neighbour,
    upper neighbour and their weights along each axis."""

    scales: torch.Tensor                # float32 [S]: CROP_SCALES
    nearest_rows: torch.Tensor          # int64 [S, H]
    nearest_columns: torch.Tensor       # int64 [S, W]
    lower_rows: torch.Tensor            # int64 [S, H]
    upper_rows: torch.Tensor            # int64 [S, H]
    lower_row_weights: torch.Tensor     # float32 [S, H]
    upper_row_weights: torch.Tensor     # float32 [S, H]
    lower_columns: torch.Tensor         # int64 [S, W]
    upper_columns: torch.Tensor         # int64 [S, W]
    lower_column_weights: torch.Tensor  # float32 [S, W]
    upper_column_weights: torch.Tensor  # float32 [S, W]


def nearest_source_indices(crop: int, size: int) -> np.ndarray:
    """Source index int64 [size] in a crop of `crop` pixels for each of `size` output pixels, exactly as
    data.transforms.resize_nearest (the CPU path) picks it."""
    pixel_numbers = np.arange(crop, dtype=np.int64)[None]
    return resize_nearest(pixel_numbers, 1, size)[0]


def bilinear_source_positions(crop: int, size: int) -> tuple:
    """The two source pixels of each of `size` output pixels resampled bilinearly from `crop` pixels,
    and their weights, exactly as cv2.resize(INTER_LINEAR) (the CPU path's scale_crop) weighs them: read
    off cv2 itself by resizing the crop x crop identity. Returns (lower int64 [size], upper int64 [size]
    = min(lower + 1, crop - 1), lower's weight float32 [size], upper's weight float32 [size])."""
    weights = cv2.resize(np.eye(crop, dtype=np.float32), (size, crop), interpolation=cv2.INTER_LINEAR)  # [crop, size]
    outputs = np.arange(size)
    lower = (weights != 0).argmax(axis=0)
    upper = np.minimum(lower + 1, crop - 1)
    lower_weights = weights[lower, outputs]
    upper_weights = np.where(upper > lower, weights[upper, outputs], np.float32(0))
    return lower, upper, lower_weights, upper_weights


@functools.lru_cache(maxsize=None)
def resampling_tables(height: int, width: int, device: torch.device) -> ResamplingTables:
    """The ResamplingTables of a height x width output on `device` (computed and copied once per size
    and device)."""
    crop_sizes = [crop_size(height, width, scale) for scale in CROP_SCALES]
    rows = [bilinear_source_positions(crop_height, height) for crop_height, _ in crop_sizes]
    columns = [bilinear_source_positions(crop_width, width) for _, crop_width in crop_sizes]
    tables = ResamplingTables(
        scales=np.array(CROP_SCALES, dtype=np.float32),
        nearest_rows=np.stack([nearest_source_indices(crop_height, height) for crop_height, _ in crop_sizes]),
        nearest_columns=np.stack([nearest_source_indices(crop_width, width) for _, crop_width in crop_sizes]),
        lower_rows=np.stack([lower for lower, _, _, _ in rows]),
        upper_rows=np.stack([upper for _, upper, _, _ in rows]),
        lower_row_weights=np.stack([weights for _, _, weights, _ in rows]),
        upper_row_weights=np.stack([weights for _, _, _, weights in rows]),
        lower_columns=np.stack([lower for lower, _, _, _ in columns]),
        upper_columns=np.stack([upper for _, upper, _, _ in columns]),
        lower_column_weights=np.stack([weights for _, _, weights, _ in columns]),
        upper_column_weights=np.stack([weights for _, _, _, weights in columns]),
    )
    return ResamplingTables(*(torch.from_numpy(table).to(device) for table in tables))


def gather_rows(maps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """maps [N, C, H, W] at rows int64 [N, R] of each sample: [N, C, R, W]."""
    batch_size, channels, _, width = maps.shape
    return maps.gather(2, rows[:, None, :, None].expand(batch_size, channels, rows.shape[1], width))


def gather_columns(maps: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """maps [N, C, H, W] at columns int64 [N, K] of each sample: [N, C, H, K]."""
    batch_size, channels, height, _ = maps.shape
    return maps.gather(3, columns[:, None, None, :].expand(batch_size, channels, height, columns.shape[1]))


def check_batch(image: torch.Tensor, segmentation: torch.Tensor, depth: torch.Tensor, augmentation: torch.Tensor,
                normal: torch.Tensor = None) -> None:
    """Raise ValueError naming the argument unless image is [N, C, H, W], segmentation [N, H, W], depth
    [N, 1, H, W], augmentation [N, 4] and normal (when given) [N, 3, H, W], all on image's device (shapes
    and devices only, no values)."""
    if image.dim() != 4:
        raise ValueError(f"augment_batch: image has shape {tuple(image.shape)}; expected [N, C, H, W]")
    batch_size, _, height, width = image.shape
    expected = {"segmentation": (segmentation, (batch_size, height, width)),
                "depth": (depth, (batch_size, 1, height, width)),
                "augmentation": (augmentation, (batch_size, 4))}
    if normal is not None:
        expected["normal"] = (normal, (batch_size, 3, height, width))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"augment_batch: {name} has shape {tuple(tensor.shape)}; expected {shape} for image "
                             f"{tuple(image.shape)}")
        if tensor.device != image.device:
            raise ValueError(f"augment_batch: {name} is on {tensor.device}; expected the image's device {image.device}")


def augment_batch(image: torch.Tensor, segmentation: torch.Tensor, depth: torch.Tensor, augmentation: torch.Tensor,
                  depth_is_disparity: bool, *, normal: torch.Tensor = None) -> tuple:
    """The batch augmented as data.transforms.apply_augmentation augments each sample, on the tensors'
    device: image float [N, 3, H, W] (bilinear), segmentation int64 [N, H, W] and depth float
    [N, 1, H, W] (nearest; disparity multiplied by the scale when `depth_is_disparity`, metric depth
    divided by it, 0 (missing) stays 0), and normal float [N, 3, H, W] when given (nearest, never
    scaled; x component negated where flipped; all-zero invalid vectors stay 0). augmentation: [N, 4]
    rows (flip 0/1, scale, top, left) as MultiTaskDataset.defer_augmentation returns them (collated);
    each scale must be one of CROP_SCALES (the nearest one is used) and each crop must lie inside the
    sample, as draw_augmentation draws them (values are not checked: that would read them back to the
    host). All on one device. Returns new tensors (image, segmentation, depth), and normal 4th when
    given, of the input shapes and dtypes."""
    check_batch(image, segmentation, depth, augmentation, normal)
    height, width = image.shape[2:]
    tables = resampling_tables(height, width, image.device)
    flips = augmentation[:, 0] > 0.5
    scales = augmentation[:, 1].float()
    tops = augmentation[:, 2].long()
    lefts = augmentation[:, 3].long()
    scale_index = (scales[:, None] - tables.scales[None]).abs().argmin(dim=1)  # [N]

    def source_rows(rows_in_crop: torch.Tensor) -> torch.Tensor:
        """Sample rows int64 [N, H] of crop rows per scale int64 [S, H]."""
        return tops[:, None] + rows_in_crop[scale_index]

    def source_columns(columns_in_crop: torch.Tensor) -> torch.Tensor:
        """Sample columns int64 [N, W] of crop columns per scale int64 [S, W], the flip folded in."""
        columns = lefts[:, None] + columns_in_crop[scale_index]
        return torch.where(flips[:, None], width - 1 - columns, columns)

    rows, columns = source_rows(tables.nearest_rows), source_columns(tables.nearest_columns)
    augmented_segmentation = gather_columns(gather_rows(segmentation[:, None], rows), columns)[:, 0]
    augmented_depth = gather_columns(gather_rows(depth, rows), columns)
    depth_factor = scales.to(depth.dtype)[:, None, None, None]
    augmented_depth = augmented_depth * depth_factor if depth_is_disparity else augmented_depth / depth_factor

    lower_row_pixels = gather_rows(image, source_rows(tables.lower_rows))
    upper_row_pixels = gather_rows(image, source_rows(tables.upper_rows))
    lower_columns, upper_columns = source_columns(tables.lower_columns), source_columns(tables.upper_columns)
    lower_column_weights = tables.lower_column_weights[scale_index].to(image.dtype)[:, None, None, :]
    upper_column_weights = tables.upper_column_weights[scale_index].to(image.dtype)[:, None, None, :]
    lower_row_weights = tables.lower_row_weights[scale_index].to(image.dtype)[:, None, :, None]
    upper_row_weights = tables.upper_row_weights[scale_index].to(image.dtype)[:, None, :, None]
    along_lower_rows = (gather_columns(lower_row_pixels, lower_columns) * lower_column_weights
                        + gather_columns(lower_row_pixels, upper_columns) * upper_column_weights)
    along_upper_rows = (gather_columns(upper_row_pixels, lower_columns) * lower_column_weights
                        + gather_columns(upper_row_pixels, upper_columns) * upper_column_weights)
    augmented_image = along_lower_rows * lower_row_weights + along_upper_rows * upper_row_weights
    if normal is None:
        return augmented_image, augmented_segmentation, augmented_depth
    x_signs = 1 - 2 * flips.to(normal.dtype)  # [N]: -1 where flipped, else 1
    channel_signs = torch.stack((x_signs, torch.ones_like(x_signs), torch.ones_like(x_signs)), dim=1)  # [N, 3]
    augmented_normal = gather_columns(gather_rows(normal, rows), columns) * channel_signs[:, :, None, None]
    return augmented_image, augmented_segmentation, augmented_depth, augmented_normal
