"""One frame of the labeled file in the form of the MTAN release: cropped (or not), labels mapped to the
13 classes, resized, normals computed, in the dtypes and shapes data/nyu.py reads.

Resizing: the image with area averaging (cv2.INTER_AREA); labels, depth and normals with the centred
nearest neighbour of data.transforms (each output pixel takes the source pixel under its centre), so a
missing depth stays missing, a measured one keeps a measured value and no depth is averaged across an
object's outline into a distance where there is no surface. Normals are computed on the (cropped)
full-resolution depth, then resized like the depth."""

from dataclasses import dataclass

import cv2
import numpy as np

from data.transforms import resize_nearest, resize_normals
from tools.prepare_nyuv2.official_files import INPAINTED_DEPTHS
from tools.prepare_nyuv2.surface_normals import (NYU_FRAME_HEIGHT, NYU_FRAME_WIDTH, frame_intrinsics, normal_window,
                                                 normals_from_depth)

NO_CROP = "none"
PROJECTION_CROP = "projection"
CROPS = (NO_CROP, PROJECTION_CROP)
# The NYU Depth v2 toolbox's get_projection_mask.m: rows 45..471 and columns 41..601 (1-based, inclusive)
# of a 480 x 640 frame, the region where the projected Kinect depth is valid; here 0-based, end excluded.
PROJECTION_ROWS = (44, 471)
PROJECTION_COLUMNS = (40, 601)


@dataclass(frozen=True)
class FrameSettings:
    """How frames are converted: output height x width, crop (NO_CROP or PROJECTION_CROP), whether
    normals are computed, and the labeled file's depth array (official_files.INPAINTED_DEPTHS or
    RAW_DEPTHS)."""

    height: int
    width: int
    crop: str = NO_CROP
    normals: bool = False
    depth_dataset: str = INPAINTED_DEPTHS


def crop_box(frame_height: int, frame_width: int, crop: str) -> tuple:
    """(top, bottom, left, right), 0-based with the end excluded, of `crop` on a frame_height x
    frame_width frame: the whole frame, or the projection region (scaled from 480 x 640 for frames of
    another size)."""
    if crop == NO_CROP:
        return 0, frame_height, 0, frame_width
    row_scale, column_scale = frame_height / NYU_FRAME_HEIGHT, frame_width / NYU_FRAME_WIDTH
    return (round(PROJECTION_ROWS[0] * row_scale), round(PROJECTION_ROWS[1] * row_scale),
            round(PROJECTION_COLUMNS[0] * column_scale), round(PROJECTION_COLUMNS[1] * column_scale))


def convert_frame(frame: tuple, lookup: np.ndarray, settings: FrameSettings) -> dict:
    """The MTAN files of one frame (image uint8 [H, W, 3], label ids [H, W], depth [H, W] in metres, as
    official_files.LabeledFile.frame gives it) at settings.height x settings.width, the labels mapped
    through `lookup` (class_tables.label_lookup): {"image": float32 [h, w, 3] in [0, 1], "label":
    float32 [h, w] (0..12, -1 unlabelled), "depth": float32 [h, w, 1] (metres, 0 missing), and with
    settings.normals "normal": float32 [h, w, 3] (unit vectors, 0 where undefined)}."""
    image, label_ids, depth = frame
    frame_height, frame_width = depth.shape
    top, bottom, left, right = crop_box(frame_height, frame_width, settings.crop)
    image = image[top:bottom, left:right].astype(np.float32) / 255
    labels = lookup[label_ids[top:bottom, left:right].astype(np.int64)]
    depth = depth[top:bottom, left:right]
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    size = (settings.width, settings.height)
    arrays = {
        "image": np.clip(cv2.resize(image, size, interpolation=cv2.INTER_AREA), 0, 1),
        "label": resize_nearest(labels, settings.height, settings.width),
        "depth": resize_nearest(depth, settings.height, settings.width)[:, :, None],
    }
    if settings.normals:
        intrinsics = frame_intrinsics(frame_height, frame_width, top, left)
        normals = normals_from_depth(depth, intrinsics, normal_window(frame_width))
        arrays["normal"] = resize_normals(normals, settings.height, settings.width)
    return arrays
