"""Cityscapes, read from the raw release (leftImg8bit / gtFine / disparity PNGs) or from the
MTAN-preprocessed release ({split}/{image,label_7,label_19,depth}/{index}.npy).

Depth is Cityscapes disparity in the units of the original paper: disparity in pixels of the
2048-wide images divided by 256, i.e. (p - 1) / 256**2 for a raw 16-bit value p > 0, clipped at
DISPARITY_CLIP; 0 marks an invalid value.

The class tables are Cityscapes': label ids mapped to 19 train ids or 7 categories, with names and
plot colours, all taken from torchvision's Cityscapes class table.
"""

from pathlib import Path

import cv2
import numpy as np
from torchvision.datasets import Cityscapes

from data.common import check_label_values, check_same_size, read_npy_sample, read_png
from data.dataset import DEFAULT_TASKS, MultiTaskDataset
from data.layouts import (CITYSCAPES_MTAN, CITYSCAPES_RAW, NYU_MTAN, check_not_broken_link, detect_layout,
                          list_npy_samples, require_folder)
from data.transforms import resize_sample
from utils.errors import UserInputError

DISPARITY_CLIP = 0.4922
RAW_DISPARITY_SCALE = 256.0 ** 2
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
DISPARITY_SUFFIX = "_disparity.png"
DISPARITY_UNITS = "disparity / 256"

CITYSCAPES_CLASSES = tuple(entry for entry in Cityscapes.classes if entry.id >= 0)
CITYSCAPES_MAX_LABEL_ID = max(entry.id for entry in CITYSCAPES_CLASSES)
CITYSCAPES_19_CLASS_NAMES = tuple(
    entry.name for entry in sorted(CITYSCAPES_CLASSES, key=lambda entry: entry.train_id)
    if 0 <= entry.train_id < 255
)
CITYSCAPES_7_CLASS_NAMES = tuple(
    dict(sorted((entry.category_id, entry.category) for entry in CITYSCAPES_CLASSES if entry.category_id > 0)).values()
)
CITYSCAPES_CLASS_COUNTS = (len(CITYSCAPES_7_CLASS_NAMES), len(CITYSCAPES_19_CLASS_NAMES))

# The class whose torchvision colour stands for each of the 7 categories in plots.
CITYSCAPES_CATEGORY_COLOUR_CLASSES = (
    ("flat", "road"),
    ("construction", "building"),
    ("object", "traffic light"),
    ("nature", "vegetation"),
    ("sky", "sky"),
    ("human", "person"),
    ("vehicle", "car"),
)


def cityscapes_class(name: str):
    """The entry of torchvision's Cityscapes table for the class called `name`."""
    for entry in CITYSCAPES_CLASSES:
        if entry.name == name:
            return entry
    raise KeyError(f"no Cityscapes class named {name!r}")


def cityscapes_label_id(name: str) -> int:
    """The Cityscapes label id (0..33) of the class called `name` in torchvision's table."""
    return cityscapes_class(name).id


CITYSCAPES_19_COLOURS = tuple(cityscapes_class(name).color for name in CITYSCAPES_19_CLASS_NAMES)
CITYSCAPES_7_COLOURS = tuple(
    cityscapes_class(dict(CITYSCAPES_CATEGORY_COLOUR_CLASSES)[category]).color for category in CITYSCAPES_7_CLASS_NAMES
)


def check_cityscapes_class_count(num_classes: int) -> None:
    """Raise UserInputError unless `num_classes` is one of the Cityscapes class counts (7 or 19)."""
    if num_classes not in CITYSCAPES_CLASS_COUNTS:
        raise UserInputError(
            f"--num_classes {num_classes} is not available for Cityscapes; expected one of "
            f"{', '.join(str(count) for count in CITYSCAPES_CLASS_COUNTS)}"
        )


def cityscapes_label_lookup(num_classes: int, ignore_index: int) -> np.ndarray:
    """Lookup table int64 [34]: Cityscapes label id -> train id (num_classes 19) or category_id - 1
    (num_classes 7); ids without a class in that set map to `ignore_index`."""
    check_cityscapes_class_count(num_classes)
    lookup = np.full(CITYSCAPES_MAX_LABEL_ID + 1, ignore_index, dtype=np.int64)
    for entry in CITYSCAPES_CLASSES:
        if num_classes == len(CITYSCAPES_19_CLASS_NAMES) and 0 <= entry.train_id < 255:
            lookup[entry.id] = entry.train_id
        elif num_classes == len(CITYSCAPES_7_CLASS_NAMES) and entry.category_id > 0:
            lookup[entry.id] = entry.category_id - 1
    return lookup


def cityscapes_class_table(num_classes: int) -> tuple:
    """(class names, RGB colours) of the Cityscapes class set with `num_classes` classes: the 19
    train-id classes with their torchvision colours, or the 7 categories, each coloured as a
    representative class (CITYSCAPES_CATEGORY_COLOUR_CLASSES)."""
    check_cityscapes_class_count(num_classes)
    if num_classes == len(CITYSCAPES_19_CLASS_NAMES):
        return CITYSCAPES_19_CLASS_NAMES, CITYSCAPES_19_COLOURS
    return CITYSCAPES_7_CLASS_NAMES, CITYSCAPES_7_COLOURS


def disparity_from_raw(raw: np.ndarray) -> np.ndarray:
    """Disparity float32 [H, W] in pixels / 256 from raw 16-bit PNG values p (uint16 [H, W]):
    (p - 1) / 256**2 clipped at DISPARITY_CLIP; p = 0 (invalid) stays 0, so does p = 1."""
    disparity = (raw.astype(np.float32) - 1) / np.float32(RAW_DISPARITY_SCALE)
    return np.clip(disparity, 0, DISPARITY_CLIP).astype(np.float32)


def list_raw_samples(root: Path, split: str) -> list:
    """(image, label, disparity) paths of a raw split, sorted by city then file name; each
    {prefix}_leftImg8bit.png is paired with {prefix}_gtFine_labelIds.png and {prefix}_disparity.png
    in the same city folder of gtFine/ and disparity/."""
    image_split = require_folder(root / "leftImg8bit" / split, f"split {split!r}")
    label_split = require_folder(root / "gtFine" / split, f"split {split!r}")
    disparity_split = require_folder(root / "disparity" / split, f"split {split!r}")
    samples = []
    for image_path in sorted(image_split.glob(f"*/*{IMAGE_SUFFIX}")):
        city, prefix = image_path.parent.name, image_path.name[: -len(IMAGE_SUFFIX)]
        label_path = label_split / city / (prefix + LABEL_SUFFIX)
        disparity_path = disparity_split / city / (prefix + DISPARITY_SUFFIX)
        for path in (label_path, disparity_path):
            check_not_broken_link(path)
        missing = [str(path) for path in (label_path, disparity_path) if not path.is_file()]
        if missing:
            raise UserInputError(f"image {image_path} has no matching {' or '.join(missing)}; expected both "
                                 f"{label_path} and {disparity_path}")
        samples.append((image_path, label_path, disparity_path))
    if not samples:
        raise UserInputError(f"empty split: {image_split} holds no {{city}}/*{IMAGE_SUFFIX} files; expected at "
                             "least one image")
    return samples


def read_raw_sample(paths: tuple, label_lookup: np.ndarray, height: int, width: int) -> tuple:
    """Read one raw sample and resize it to height x width (the 8-bit image INTER_AREA, label ids and
    raw disparity centred nearest neighbour (INTER_NEAREST_EXACT), before converting them): image uint8
    [H, W, 3] (RGB, 0..255; data.transforms.image_as_float makes it float32 in [0, 1]), segmentation
    int64 [H, W] (label ids mapped through `label_lookup`), disparity float32 [H, W] (pixels / 256)."""
    image_path, label_path, disparity_path = paths
    image = read_png(image_path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserInputError(f"{image_path} is a {image.dtype} image of shape {image.shape}; expected 8-bit RGB")
    label_ids = read_png(label_path)
    if label_ids.dtype != np.uint8 or label_ids.ndim != 2:
        raise UserInputError(f"{label_path} is a {label_ids.dtype} image of shape {label_ids.shape}; expected "
                             "8-bit single-channel label ids")
    raw_disparity = read_png(disparity_path)
    if raw_disparity.dtype != np.uint16 or raw_disparity.ndim != 2:
        raise UserInputError(f"{disparity_path} is a {raw_disparity.dtype} image of shape {raw_disparity.shape}; "
                             "expected a 16-bit single-channel disparity PNG")
    check_same_size(((image_path, image), (label_path, label_ids), (disparity_path, raw_disparity)))
    check_label_values(label_ids, label_path, 0, CITYSCAPES_MAX_LABEL_ID,
                       f"Cityscapes label ids 0..{CITYSCAPES_MAX_LABEL_ID}")
    image, label_ids, raw_disparity = resize_sample(image, label_ids, raw_disparity, height, width)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label_lookup[label_ids], disparity_from_raw(raw_disparity)


class CityscapesDataset(MultiTaskDataset):
    """Cityscapes semantic segmentation (7 categories or 19 classes) + disparity from either release.

    Samples are (image [3, H, W] float32 ImageNet-normalised, segmentation [H, W] int64 with
    `ignore_index` for ignored pixels, depth [1, H, W] float32 disparity / 256 with 0 invalid), at
    height x width (image INTER_AREA, labels and disparity INTER_NEAREST_EXACT).

    cache: True reads the samples from the split's preprocessed cache (data.cache) in the user cache
    folder, building it in the constructor when there is none for these settings and files; a folder
    path puts the cache there; False reads the files on every access.
    """

    depth_is_disparity = True
    normalise_image = True

    def __init__(self, root, split: str, height: int = 128, width: int = 256, num_classes: int = 7,
                 ignore_index: int = 250, augment: bool = False, seed: int = 0, *, cache=True,
                 tasks: tuple = DEFAULT_TASKS):
        """root: dataset folder in either Cityscapes layout; split: e.g. "train" or "val"; tasks: the
        targets of a sample, DEFAULT_TASKS only (Cityscapes has no surface normals)."""
        tasks = self.checked_tasks(tasks)
        check_cityscapes_class_count(num_classes)
        root = Path(root)
        layout = detect_layout(root)
        if layout == NYU_MTAN:
            raise UserInputError(f"{root} holds the NYUv2 layout ({NYU_MTAN}); expected a Cityscapes layout "
                                 f"({CITYSCAPES_RAW} or {CITYSCAPES_MTAN})")
        if layout == CITYSCAPES_RAW:
            samples = list_raw_samples(root, split)
        else:
            split_folder = require_folder(root / split, f"split {split!r}")
            samples = list_npy_samples(split_folder, ("image", f"label_{num_classes}", "depth"))
        self.layout = layout
        self.label_lookup = cityscapes_label_lookup(num_classes, ignore_index)
        super().__init__(root, split, samples, cityscapes_class_table(num_classes), (height, width), ignore_index,
                         augment, seed, tasks=tasks)
        if cache is not False:
            self.use_cache(None if cache is True else cache)

    def read_sample(self, sample: tuple) -> tuple:
        """Read one sample of either layout at height x width (see MultiTaskDataset.read_sample)."""
        if self.layout == CITYSCAPES_RAW:
            return read_raw_sample(sample, self.label_lookup, self.height, self.width)
        return read_npy_sample(sample, self.num_classes, self.ignore_index, DISPARITY_UNITS, self.height, self.width)
