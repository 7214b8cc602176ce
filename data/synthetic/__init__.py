"""Synthetic datasets written in the exact on-disk layouts the loaders read: the raw Cityscapes
release (street scenes as PNGs), the MTAN-preprocessed Cityscapes release and the MTAN-preprocessed
NYUv2 release (indoor scenes) as .npy files. Scene `index` of split `split` is drawn from a
generator seeded with (seed, split, index), so a dataset is the same on every machine and a scene
does not depend on how many others are written.

The scenes come from `street_scene` (Cityscapes form) and `indoor_scene` (NYUv2 form), both drawn
with `drawing`. This package uses the loaders' constants (file suffixes, class tables, disparity
encoding); the loaders never import it."""

import zlib
from pathlib import Path

import cv2
import numpy as np

from data.cityscapes import (CITYSCAPES_CLASS_COUNTS, DISPARITY_SUFFIX, IMAGE_SUFFIX, LABEL_SUFFIX,
                             cityscapes_label_lookup, disparity_from_raw)
from data.synthetic.indoor_scene import indoor_scene, indoor_scene_with_normals
from data.synthetic.street_scene import cityscapes_scene

CITY_NAMES = ("arden", "brookhaven", "corvale")
FRAME_NUMBER = 19
MTAN_IGNORED = -1

__all__ = ["cityscapes_scene", "indoor_scene", "indoor_scene_with_normals", "scene_generator", "write_cityscapes_mtan",
           "write_cityscapes_raw", "write_nyu_mtan"]


def scene_generator(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of scene `index` of `split` in a dataset written with `seed` (>= 0)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def write_png(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8 or uint16; colour in OpenCV's BGR order) as a PNG file, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded, data = cv2.imencode(".png", array)
    if not encoded:
        raise OSError(f"OpenCV could not encode an array of shape {array.shape} and dtype {array.dtype} for {path}")
    path.write_bytes(data.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save `array` as a .npy file, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def raw_prefix(index: int) -> tuple:
    """(city, file prefix `{city}_{sequence:06d}_{frame:06d}`) of raw Cityscapes sample `index`."""
    city = CITY_NAMES[index % len(CITY_NAMES)]
    return city, f"{city}_{index // len(CITY_NAMES):06d}_{FRAME_NUMBER:06d}"


def write_cityscapes_raw(root, splits: dict, height: int = 256, width: int = 512, seed: int = 0) -> Path:
    """Write street scenes in the raw Cityscapes layout under `root`: for each split name -> count
    in `splits`, leftImg8bit/{split}/{city}/{prefix}_leftImg8bit.png (8-bit RGB),
    gtFine/{split}/{city}/{prefix}_gtFine_labelIds.png (label ids 0..33) and
    disparity/{split}/{city}/{prefix}_disparity.png (16-bit raw disparity). Returns `root`."""
    root = Path(root)
    for split, count in splits.items():
        for index in range(count):
            rgb, label_ids, disparity = cityscapes_scene(scene_generator(seed, split, index), height, width)
            city, prefix = raw_prefix(index)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            write_png(root / "leftImg8bit" / split / city / (prefix + IMAGE_SUFFIX), bgr)
            write_png(root / "gtFine" / split / city / (prefix + LABEL_SUFFIX), label_ids)
            write_png(root / "disparity" / split / city / (prefix + DISPARITY_SUFFIX), disparity)
    return root


def write_cityscapes_mtan(root, splits: dict, height: int = 128, width: int = 256, seed: int = 0) -> Path:
    """Write street scenes in the MTAN Cityscapes layout under `root`: {split}/image/{i}.npy (float32
    H x W x 3 in [0, 1]), {split}/label_7/{i}.npy and {split}/label_19/{i}.npy (float32 H x W, -1
    ignored), {split}/depth/{i}.npy (float32 H x W x 1, disparity / 256, 0 invalid). The scenes are
    those of write_cityscapes_raw with the same seed and size. Returns `root`."""
    root = Path(root)
    lookups = {count: cityscapes_label_lookup(count, MTAN_IGNORED) for count in CITYSCAPES_CLASS_COUNTS}
    for split, count in splits.items():
        for index in range(count):
            rgb, label_ids, disparity = cityscapes_scene(scene_generator(seed, split, index), height, width)
            write_npy(root / split / "image" / f"{index}.npy", rgb.astype(np.float32) / 255)
            for class_count, lookup in lookups.items():
                write_npy(root / split / f"label_{class_count}" / f"{index}.npy", lookup[label_ids].astype(np.float32))
            write_npy(root / split / "depth" / f"{index}.npy", disparity_from_raw(disparity)[:, :, None])
    return root


def write_nyu_mtan(root, splits: dict, height: int = 288, width: int = 384, seed: int = 0) -> Path:
    """Write indoor scenes in the MTAN NYUv2 layout under `root`: {split}/image/{i}.npy (float32
    H x W x 3 in [0, 1]), {split}/label/{i}.npy (float32 H x W, 13 classes, -1 unlabelled),
    {split}/depth/{i}.npy (float32 H x W x 1, metres, 0 missing) and {split}/normal/{i}.npy (float32
    H x W x 3, unit vectors in camera coordinates, all three components 0 where depth is missing).
    Returns `root`."""
    root = Path(root)
    for split, count in splits.items():
        for index in range(count):
            image, label, depth, normal = indoor_scene_with_normals(scene_generator(seed, split, index), height, width)
            write_npy(root / split / "image" / f"{index}.npy", image.astype(np.float32))
            write_npy(root / split / "label" / f"{index}.npy", label.astype(np.float32))
            write_npy(root / split / "depth" / f"{index}.npy", depth.astype(np.float32))
            write_npy(root / split / "normal" / f"{index}.npy", normal.astype(np.float32))
    return root
