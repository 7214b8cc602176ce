"""The rows of the paper's comparison table as runs of this repository, per dataset, each over several seeds;
then the report of them all.

Rows (each labelled with the paper's published numbers for it; docs/comparisons.md gives the origin of every
setting in the original's scripts, file and line):
- cross-task: the paper's command (data.profiles' `paper_command`: `--uncertainty_weights` with the entry
  script's defaults);
- MTAN: `--model mtan` with the settings of the original's model/mtan/model_segnet_mtan_{cs,nyu}.py at their
  defaults: equal weighting (its `--weight` default, `--balancing none` here), Adam at lr 1e-4 with torch's
  default betas, StepLR every 100 epochs by 0.5, batches of 2, 200 epochs;
- PCGrad: the same with `--pcgrad`, which there projected the uncertainty-weighted losses whatever
  `--weight` said (`--pcgrad_weighting uncertainty`), by its pcgrad.py (`--balancing_form original`), and
  had no scheduler: no flag drops the scheduler here, so its StepLR period is the run's epoch count and it
  never decays the learning rate during training;
- on NYUv2 MTAN and PCGrad with two tasks (the paper's †) and with three (*, `--tasks segmentation depth
  normal`);
- the single-task baselines that Δm measures the multi-task rows against (segmentation and depth at the
  entry script's defaults; surface normals, for the three-task rows, by the single-task MTAN).
The comparison tables' rows without a run here (KD4MTL and AdaMT-Net) are listed after the dry run.

Usage, from the repository root:

    python -m scripts.comparisons --dry_run                       # print every command and check that it parses
    python -m scripts.comparisons --dataset nyu --only 'pcgrad|single' -- --epochs 1 --cpu
    python -m scripts.comparisons --seeds 0 1 2 3 4 --save_path exps/comparisons

Arguments after `--` are appended to every command. The runs start one after the other from the
repository root (relative paths are taken from there); the first that fails stops the script with its
exit status. At the end `python -m tools.report SAVE_PATH` prints and writes the table.
"""
import shlex
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

from scripts.run_list import DATASET_PROFILES, ENTRY_SCRIPTS, parse_study_arguments, plan, planned_epochs, run_or_check
from utils.metric_definitions import METRICS

DEFAULT_SAVE_PATH = "./exps/comparisons"
CROSS_TASK = "cross-task"
PUBLISHED_METRICS = ("miou", "pixel_acc", "abs", "abs_rel")


def published(miou, pixel_acc, abs_error, abs_rel):
    """One row's published numbers in the units of data.profiles' `paper_results` (mIoU, Pix Acc as fractions)."""
    return MappingProxyType(dict(miou=miou, pixel_acc=pixel_acc, abs=abs_error, abs_rel=abs_rel))


# The paper's comparison tables (the original's README.md, lines 106-129) but their cross-task rows (those
# are data.profiles' `paper_results`), by dataset and row label; on NYUv2, † marks two tasks and * three.
PUBLISHED_RESULTS = MappingProxyType({
    "cityscapes": MappingProxyType({
        "MTAN": published(0.5304, 0.9111, 0.0144, 33.63),
        "KD4MTL": published(0.5271, 0.9154, 0.0139, 27.33),
        "PCGrad": published(0.5359, 0.9145, 0.0171, 31.34),
        "AdaMT-Net": published(0.6253, 0.9416, 0.0125, 22.23),
    }),
    "nyu": MappingProxyType({
        "MTAN*": published(0.2107, 0.5570, 0.6035, 0.2472),
        "MTAN†": published(0.2010, 0.5373, 0.6417, 0.2758),
        "KD4MTL*": published(0.2075, 0.5790, 0.5816, 0.2445),
        "KD4MTL†": published(0.2244, 0.5732, 0.6003, 0.2601),
        "PCGrad*": published(0.2017, 0.5665, 0.5904, 0.2467),
        "PCGrad†": published(0.2129, 0.5407, 0.6705, 0.3000),
        "AdaMT-Net*": published(0.2186, 0.6035, 0.5933, 0.2456),
        "AdaMT-Net†": published(0.2061, 0.5891, 0.6136, 0.2547),
    }),
})

# model/mtan/model_segnet_mtan_{cs,nyu}.py: Adam at lr 1e-4 (torch's default betas), batches of 2, 200
# epochs, no augmentation (its --apply_augmentation is off by default, line 16); its StepLR (100 epochs,
# 0.5) when PCGrad is off.
ORIGINAL_EPOCHS = 200  # model_segnet_mtan_cs.py:86, _nyu.py:72
ORIGINAL_OPTIMIZATION = ("--epochs", str(ORIGINAL_EPOCHS), "--batch_size", "2", "--optim", "adam", "--lr", "1e-4",
                         "--b1", "0.9", "--b2", "0.999", "--no_augment")
ORIGINAL_SCHEDULER = ("--scheduler_step_size", "100", "--scheduler_gamma", "0.5")
ORIGINAL_INPUT = MappingProxyType({
    "cityscapes": ("--num_classes", "7", "--height", "128", "--width", "256"),
    "nyu": ("--num_classes", "13", "--height", "288", "--width", "384"),
})
MTAN = ("--model", "mtan")
EQUAL_WEIGHTING = ("--balancing", "none")
ORIGINAL_PCGRAD = ("--balancing", "pcgrad", "--balancing_form", "original", "--pcgrad_weighting", "uncertainty")
THREE_TASKS = ("--tasks", "segmentation", "depth", "normal")
# (short name, row label, flags, without scheduler) of the MTAN and PCGrad rows, by dataset. MTAN: the default
# `--weight equal` (the sum of the task losses) and the StepLR. PCGrad (`--pcgrad`): pcgrad.py's projection of
# the uncertainty-weighted losses (model/mtan/utils.py:183, 271), and `scheduler = None`: no flag drops the
# scheduler here, so `entry_arguments` gives these rows a StepLR period of the run's epochs (no decay in training).
METHOD_ROWS = MappingProxyType({
    "cityscapes": (
        ("mtan", "MTAN", (*EQUAL_WEIGHTING, *ORIGINAL_SCHEDULER), False),
        ("pcgrad", "PCGrad", ORIGINAL_PCGRAD, True),
    ),
    "nyu": (
        ("mtan_two_tasks", "MTAN†", (*EQUAL_WEIGHTING, *ORIGINAL_SCHEDULER), False),
        ("pcgrad_two_tasks", "PCGrad†", ORIGINAL_PCGRAD, True),
        ("mtan_three_tasks", "MTAN*", (*THREE_TASKS, *EQUAL_WEIGHTING, *ORIGINAL_SCHEDULER), False),
        ("pcgrad_three_tasks", "PCGrad*", (*THREE_TASKS, *ORIGINAL_PCGRAD), True),
    ),
})
# (short name, flags) of the single-task baselines of Δm, by dataset.
SINGLE_TASK_ROWS = MappingProxyType({
    "cityscapes": (
        ("single_segmentation", ("--single_task", "segmentation")),
        ("single_depth", ("--single_task", "depth")),
    ),
    "nyu": (
        ("single_segmentation", ("--single_task", "segmentation")),
        ("single_depth", ("--single_task", "depth")),
        ("single_normal", (*MTAN, "--single_task", "normal")),
    ),
})


def published_results(dataset, label):
    """The paper's numbers of the row `label` of `dataset`: data.profiles' for the cross-task row."""
    if label == CROSS_TASK:
        return DATASET_PROFILES[dataset].paper_results
    return PUBLISHED_RESULTS[dataset][label]


def number_text(key, value):
    """A published number as the paper prints it: percentages and numbers from 1 with 2 decimals, others with 4."""
    if METRICS[key].percent:
        return f"{value * 100:.2f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.4f}"


def numbers_text(results):
    """The published numbers of a row: "mIoU 53.04, Pix Acc 91.11, Abs 0.0144, Abs Rel 33.63"."""
    return ", ".join(f"{METRICS[key].title} {number_text(key, results[key])}" for key in PUBLISHED_METRICS)


@dataclass(frozen=True)
class ComparisonRun:
    """One run of the list: name ("cityscapes/mtan"), dataset, the flags it gives the entry script (before
    --seeds, --save_path and the extra arguments), the label of its row in the paper's comparison table
    (None for a single-task baseline) and whether it runs without a learning-rate decay (the original's
    PCGrad rows had no scheduler)."""

    name: str
    dataset: str
    flags: tuple
    label: Optional[str] = None
    without_scheduler: bool = False

    @property
    def comment(self):
        """What follows its command line after "#": the name and the paper's row with its numbers."""
        if self.label is None:
            return f"{self.name} (single-task baseline of Δm)"
        return f"{self.name} ({self.label}; paper: {numbers_text(published_results(self.dataset, self.label))})"


def comparison_runs(dataset):
    """The runs of `dataset` ("cityscapes", "nyu" or "all"): cross-task, MTAN and PCGrad, single-task baselines."""
    datasets = tuple(ENTRY_SCRIPTS) if dataset == "all" else (dataset,)
    runs = []
    for name in datasets:
        paper_flags = tuple(shlex.split(DATASET_PROFILES[name].paper_command)[2:])
        runs.append(ComparisonRun(f"{name}/cross_task", name, paper_flags, CROSS_TASK))
        runs += [ComparisonRun(f"{name}/{short_name}", name, (*MTAN, *ORIGINAL_INPUT[name], *ORIGINAL_OPTIMIZATION,
                                                             *flags), label, without_scheduler)
                 for short_name, label, flags, without_scheduler in METHOD_ROWS[name]]
        runs += [ComparisonRun(f"{name}/{short_name}", name, flags) for short_name, flags in SINGLE_TASK_ROWS[name]]
    return runs


def rows_without_run(dataset):
    """(dataset, label) of the comparison table's rows of `dataset` ("all": both) that no run reproduces."""
    reproduced = {(run.dataset, run.label) for run in comparison_runs(dataset)}
    datasets = tuple(ENTRY_SCRIPTS) if dataset == "all" else (dataset,)
    return [(name, label) for name in datasets for label in PUBLISHED_RESULTS[name]
            if (name, label) not in reproduced]


def entry_arguments(run, seeds, save_path, extra):
    """The entry script's arguments for `run`: [StepLR period = its epochs,] flags, --seeds, --save_path, `extra`."""
    arguments = [*run.flags, "--seeds", *map(str, seeds), "--save_path", save_path, *extra]
    if run.without_scheduler:
        return ["--scheduler_step_size", str(planned_epochs(run.dataset, arguments, ORIGINAL_EPOCHS)), *arguments]
    return arguments


def main(argv=None):
    """Plan the runs, then print and check them (--dry_run) or run them and the report; the exit status."""
    options, extra = parse_study_arguments(
        argv, "comparisons", "Run the rows of the paper's comparison table (cross-task, MTAN, PCGrad) and their "
        "single-task baselines, over seeds.", ("all", *ENTRY_SCRIPTS), DEFAULT_SAVE_PATH)
    planned = plan(comparison_runs(options.dataset), options.only,
                   lambda run: entry_arguments(run, options.seeds, options.save_path, extra))
    if planned is None:
        return 2
    notes = [f"no run yet: {dataset} {label} (paper: {numbers_text(published_results(dataset, label))})"
             for dataset, label in rows_without_run(options.dataset)]
    return run_or_check(planned, options, notes)


if __name__ == "__main__":
    sys.exit(main())
