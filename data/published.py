"""The paper's comparison tables (the original's README.md, lines 106-129), by dataset: each row's label and
its published mIoU, Pix Acc, Abs and Abs Rel, in the table's order. On NYUv2 a label ends with † (trained
on two tasks, segmentation and depth) or * (three, with surface normals); the Cityscapes table has two
tasks only and no marks. The cross-task rows (the README's "Ours") are data.profiles' `paper_results`.
"""
from types import MappingProxyType

from data.profiles import CITYSCAPES, NYUV2
from utils.metric_definitions import METRICS

MTAN, KD4MTL, PCGRAD, ADAMTNET, CROSS_TASK = "MTAN", "KD4MTL", "PCGrad", "AdaMT-Net", "cross-task"
PUBLISHED_METRICS = ("miou", "pixel_acc", "abs", "abs_rel")
# The mark that ends a row's label, by dataset and number of trained tasks.
TASK_MARKS = MappingProxyType({
    "cityscapes": MappingProxyType({2: ""}),
    "nyu": MappingProxyType({2: "†", 3: "*"}),
})


def published(miou, pixel_acc, abs_error, abs_rel):
    """One row's published numbers in the units of data.profiles' `paper_results` (mIoU, Pix Acc as fractions)."""
    return MappingProxyType(dict(miou=miou, pixel_acc=pixel_acc, abs=abs_error, abs_rel=abs_rel))


def printed_number(key, value):
    """A published number of the metric `key` as the paper prints it: percentages (x 100) and numbers from 1
    with 2 decimals, others with 4."""
    if METRICS[key].percent:
        return f"{value * 100:.2f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.4f}"


def cross_task_results(profile):
    """The published numbers of the cross-task row of `profile`'s table: its `paper_results`."""
    return published(*(profile.paper_results[key] for key in PUBLISHED_METRICS))


# {dataset: {row label: published numbers}}, each table in the README's order (its "Ours" row last).
PUBLISHED_RESULTS = MappingProxyType({
    "cityscapes": MappingProxyType({
        MTAN: published(0.5304, 0.9111, 0.0144, 33.63),
        KD4MTL: published(0.5271, 0.9154, 0.0139, 27.33),
        PCGRAD: published(0.5359, 0.9145, 0.0171, 31.34),
        ADAMTNET: published(0.6253, 0.9416, 0.0125, 22.23),
        CROSS_TASK: cross_task_results(CITYSCAPES),
    }),
    "nyu": MappingProxyType({
        f"{MTAN}*": published(0.2107, 0.5570, 0.6035, 0.2472),
        f"{MTAN}†": published(0.2010, 0.5373, 0.6417, 0.2758),
        f"{KD4MTL}*": published(0.2075, 0.5790, 0.5816, 0.2445),
        f"{KD4MTL}†": published(0.2244, 0.5732, 0.6003, 0.2601),
        f"{PCGRAD}*": published(0.2017, 0.5665, 0.5904, 0.2467),
        f"{PCGRAD}†": published(0.2129, 0.5407, 0.6705, 0.3000),
        f"{ADAMTNET}*": published(0.2186, 0.6035, 0.5933, 0.2456),
        f"{ADAMTNET}†": published(0.2061, 0.5891, 0.6136, 0.2547),
        f"{CROSS_TASK}†": cross_task_results(NYUV2),
    }),
})


def row_label(dataset, method, task_count):
    """The label of the row of `method` (MTAN, ..., CROSS_TASK) trained on `task_count` tasks in the paper's
    table of `dataset` ("MTAN", "MTAN†"), or None when that table has no such row."""
    mark = TASK_MARKS[dataset].get(task_count)
    label = None if mark is None else method + mark
    return label if label in PUBLISHED_RESULTS[dataset] else None
