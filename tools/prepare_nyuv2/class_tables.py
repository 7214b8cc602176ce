"""The published NYUv2 class mappings, stored beside this module as CSV tables (their source is named in
README.md there): the 894 object names of the labeled dataset to the 40 classes of Gupta et al., and
the 40 classes to the 13 classes of the MTAN release (data.nyu.NYU_13_CLASS_NAMES, in that order)."""

import csv
from pathlib import Path

import numpy as np

TABLE_FOLDER = Path(__file__).resolve().parent
LABELS_TO_40_TABLE = TABLE_FOLDER / "labels_894_to_40.csv"
CLASSES_40_TO_13_TABLE = TABLE_FOLDER / "classes_40_to_13.csv"
LABEL_COUNT = 894
UNLABELLED_CLASS = -1


def read_table(path: Path) -> list:
    """The rows of the CSV table at `path` as dicts keyed by its header."""
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def labels_to_40() -> dict:
    """label id (1..894, an index into the labeled file's `names`) -> (object name, 40-class id 1..40)."""
    return {int(row["label_894"]): (row["name_894"], int(row["class_40"])) for row in read_table(LABELS_TO_40_TABLE)}


def classes_40_to_13() -> dict:
    """40-class id (1..40) -> (40-class name, 13-class id 1..13, 13-class name)."""
    return {int(row["class_40"]): (row["name_40"], int(row["class_13"]), row["name_13"])
            for row in read_table(CLASSES_40_TO_13_TABLE)}


def label_lookup() -> np.ndarray:
    """float32 [895]: entry k is the 0-based 13-class id (data.nyu.NYU_13_CLASS_NAMES) of label id k
    (894 -> 40 -> 13), entry 0 (unlabelled) is -1; the stored label maps hold these values."""
    to_40, to_13 = labels_to_40(), classes_40_to_13()
    lookup = np.full(LABEL_COUNT + 1, UNLABELLED_CLASS, dtype=np.float32)
    for label_id, (_, class_40) in to_40.items():
        lookup[label_id] = to_13[class_40][1] - 1
    return lookup

