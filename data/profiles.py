"""Dataset profiles: everything that tells one dataset's entry script from another's (its dataset
class, flag defaults, class counts, depth units, the paper's numbers and the demo's settings), and
the registry of the known profiles.

To add a dataset:
  1. write a module in data/ with a `MultiTaskDataset` subclass that lists its samples, implements
     `read_sample`, owns its class names and plot colours (passed to `MultiTaskDataset.__init__`),
     and takes the keyword interface `(root, split, height=, width=, num_classes=, ignore_index=,
     augment=, seed=)`;
  2. add one `DatasetProfile` for it to `PROFILES` below (a demo writer in data.synthetic when it
     has a demo).
"""

from dataclasses import dataclass
from typing import Callable

from data.cityscapes import CITYSCAPES_CLASS_COUNTS, DISPARITY_UNITS, CityscapesDataset
from data.nyu import DEPTH_UNITS, NYU_CLASS_COUNTS, NYUv2Dataset
from data.synthetic import write_cityscapes_raw, write_nyu_mtan
from utils.errors import UserInputError

DEMO_SEED = 0


@dataclass(frozen=True)
class DatasetProfile:
    """One dataset as the entry scripts see it.

    name: registry key ("cityscapes", "nyu"); entry_script: the script that trains on it; description: the entry script's argparse description;
    dataset_class: the MultiTaskDataset subclass; defaults: flag defaults of the entry script;
    class_counts: the supported --num_classes values; depth_label: depth axis label of the figures;
    depth_units: depth units in words; paper_results: the paper's setting (num_classes, height,
    width) and its reported miou, pixel_acc, abs, abs_rel; paper_command: the command that produced
    that row; demo_defaults: flag defaults under --demo; demo_data: keyword arguments of
    demo_writer (splits, height, width); demo_writer: the data.synthetic writer of the demo data.
    """

    name: str
    entry_script: str
    description: str
    dataset_class: type
    defaults: dict
    class_counts: tuple
    depth_label: str
    depth_units: str
    paper_results: dict
    paper_command: str
    demo_defaults: dict
    demo_data: dict
    demo_writer: Callable

    def build_dataset(self, root, split: str, **settings):
        """The `split` dataset under `root`, built by `dataset_class` from its keyword settings (height,
        width, num_classes, ignore_index, augment, seed, and cache: True, False or the cache folder)."""
        return self.dataset_class(root, split, **settings)

    def write_demo_data(self, root):
        """Write the demo dataset (`demo_data`, seed 0) under `root` with `demo_writer`; returns `root`
        as a Path. It always writes: skipping existing data is the caller's business."""
        return self.demo_writer(root, seed=DEMO_SEED, **self.demo_data)

    def is_paper_setting(self, num_classes: int, height: int, width: int) -> bool:
        """Whether a run at this class count and input size is comparable with `paper_results`."""
        paper = self.paper_results
        return (num_classes, height, width) == (paper["num_classes"], paper["height"], paper["width"])


CITYSCAPES = DatasetProfile(
    name="cityscapes",
    entry_script="main_cross_cs.py",
    description="Cross-task consistency learning on Cityscapes (segmentation + disparity).",
    dataset_class=CityscapesDataset,
    defaults=dict(input_path="data/cityscapes", height=128, width=256, num_classes=7, epochs=250,
                  batch_size=8, scheduler_step_size=80, scheduler_gamma=0.5, alpha=0.01, gamma=0.01,
                  ignore_index=250),
    class_counts=CITYSCAPES_CLASS_COUNTS,
    depth_label="disparity / 256",
    depth_units=DISPARITY_UNITS,
    paper_results=dict(num_classes=7, height=128, width=256, miou=0.6651, pixel_acc=0.9356, abs=0.0122,
                       abs_rel=19.40),
    paper_command="python main_cross_cs.py --uncertainty_weights",
    demo_defaults=dict(input_path="data/demo/cityscapes", height=32, width=64, enc_layers=18, epochs=14,
                       batch_size=8, scheduler_step_size=10, lr=1e-3, workers=0),
    demo_data=dict(splits={"train": 64, "val": 16}, height=128, width=256),
    demo_writer=write_cityscapes_raw,
)

NYUV2 = DatasetProfile(
    name="nyu",
    entry_script="main_cross_nyu.py",
    description="Cross-task consistency learning on NYUv2 (13-class segmentation + depth in metres).",
    dataset_class=NYUv2Dataset,
    defaults=dict(input_path="data/nyu", height=288, width=384, num_classes=13, epochs=100, batch_size=6,
                  scheduler_step_size=60, scheduler_gamma=0.5, alpha=1e-4, gamma=1e-4, ignore_index=-1),
    class_counts=NYU_CLASS_COUNTS,
    depth_label="depth (m)",
    depth_units=DEPTH_UNITS,
    paper_results=dict(num_classes=13, height=288, width=384, miou=0.3031, pixel_acc=0.6302, abs=0.5954,
                       abs_rel=0.2235),
    paper_command="python main_cross_nyu.py --uncertainty_weights",
    demo_defaults=dict(input_path="data/demo/nyu", height=64, width=64, enc_layers=18, epochs=10,
                       batch_size=8, scheduler_step_size=8, lr=1e-3, workers=0),
    demo_data=dict(splits={"train": 48, "val": 16}, height=96, width=128),
    demo_writer=write_nyu_mtan,
)

PROFILES = {"cityscapes": CITYSCAPES, "nyu": NYUV2}


def profile(name: str) -> DatasetProfile:
    """The registered profile called `name`; an unknown name is a UserInputError listing the known ones."""
    if name not in PROFILES:
        raise UserInputError(f"unknown dataset profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}")
    return PROFILES[name]
