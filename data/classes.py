"""Class definitions: Cityscapes label ids mapped to 19 train ids or 7 categories (taken from
torchvision's Cityscapes class table), the 13 NYUv2 classes, and colour palettes for plots."""

import numpy as np
from torchvision.datasets import Cityscapes

from utils.errors import UserInputError

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

# The 13-class NYUv2 set of the MTAN release, in label order 0..12.
NYU_13_CLASS_NAMES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
    "wall", "window",
)
NYU_COLOURS = (
    (196, 120, 160), (240, 200, 40), (200, 200, 230), (230, 80, 40), (140, 100, 60), (60, 150, 110),
    (255, 0, 128), (90, 200, 230), (160, 60, 200), (230, 150, 80), (30, 30, 30), (130, 130, 130),
    (60, 90, 230),
)


def cityscapes_label_id(name: str) -> int:
    """The Cityscapes label id (0..33) of the class called `name` in torchvision's table."""
    for entry in CITYSCAPES_CLASSES:
        if entry.name == name:
            return entry.id
    raise KeyError(f"no Cityscapes class named {name!r}")


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


def class_names(num_classes: int) -> tuple:
    """Class names for a class count: 7 and 19 are the Cityscapes sets, 13 the NYUv2 set."""
    names_by_count = {
        len(names): names for names in (CITYSCAPES_7_CLASS_NAMES, CITYSCAPES_19_CLASS_NAMES, NYU_13_CLASS_NAMES)
    }
    if num_classes not in names_by_count:
        raise ValueError(f"no class set with {num_classes} classes; known counts are {sorted(names_by_count)}")
    return names_by_count[num_classes]


def palette(num_classes: int) -> np.ndarray:
    """Plot colours uint8 [C, 3] (RGB) for a class count: 19 and 7 use torchvision's Cityscapes colours
    (a representative class per category for 7), 13 a fixed NYUv2 palette."""
    colour_by_name = {entry.name: entry.color for entry in CITYSCAPES_CLASSES}
    if num_classes == len(CITYSCAPES_19_CLASS_NAMES):
        colours = [colour_by_name[name] for name in CITYSCAPES_19_CLASS_NAMES]
    elif num_classes == len(CITYSCAPES_7_CLASS_NAMES):
        colour_class = dict(CITYSCAPES_CATEGORY_COLOUR_CLASSES)
        colours = [colour_by_name[colour_class[category]] for category in CITYSCAPES_7_CLASS_NAMES]
    elif num_classes == len(NYU_13_CLASS_NAMES):
        colours = list(NYU_COLOURS)
    else:
        raise ValueError(f"no palette for {num_classes} classes; known counts are 7, 13 and 19")
    return np.array(colours, dtype=np.uint8)

