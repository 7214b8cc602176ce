"""The original code's consistency study (its const_energy.py): the cross-task network trained with each
consistency method, xtsc (the transferred predictions against the detached direct ones: the paper's) and
xtc (against the ground truth), with that script's settings; then the validation loss and the consistency
energy of both per epoch, in one figure.

Usage, from the repository root:

    python -m scripts.consistency --dry_run                      # print every command and check that it parses
    python -m scripts.consistency --seeds 0 1 2 --save_path exps/consistency
    python -m scripts.consistency --only xtc -- --uncertainty_weights --cpu

Each method is one command of the entry script over --seeds, writing under --save_path; arguments after `--`
are appended to every command (the original offered --uncertainty_weights). The runs start one after the
other from the repository root; the first that fails stops the script with its exit status. Then, for each
method and seed, the latest finished run under SAVE_PATH of that method and seed is read back, and the
figure `loss_and_energy.png` (validation loss and consistency energy per epoch, a line per method, mean ±
sample std over the seeds as a band when there are several) and its numbers `loss_and_energy.csv` are
written into SAVE_PATH.
"""
import os
import sys
from dataclasses import dataclass

import numpy as np

from losses.xtask import CONSISTENCY_METHODS
from scripts.run_list import REPO_ROOT, dry_run, execute, parse_study_arguments, plan, planned_epochs
from training.recorder import read_run
from utils import plots
from utils.consistency_energy import ENERGY, ENERGY_KEYS
from utils.errors import UserInputError
from utils.files import write_csv

DATASETS = ("cityscapes",)  # the original's study ran on Cityscapes only
DEFAULT_SAVE_PATH = "./exps/consistency"
FIGURE_NAME = "loss_and_energy.png"
TABLE_NAME = "loss_and_energy.csv"
# const_energy.py: ResNet-34 without ImageNet weights, 7 classes at 128x256, batches of 8, SGD with lr 1e-4
# and no momentum, 250 epochs, XTaskLoss's default weights; its scheduler was commented out (see
# `entry_arguments`: the StepLR period is the run's epoch count, so it never fires).
ORIGINAL_EPOCHS = 250
ORIGINAL_SETTINGS = ("--epochs", str(ORIGINAL_EPOCHS), "--batch_size", "8", "--num_classes", "7", "--height", "128",
                     "--width", "256", "--enc_layers", "34", "--optim", "sgd", "--lr", "1e-4", "--momentum", "0",
                     "--alpha", "0.01", "--gamma", "0.01")
# The metrics.csv fields in the CSV (mean and std over the seeds per method and epoch), and the two plotted.
QUANTITIES = ("val_loss",) + tuple(f"val_{key}" for key in ENERGY_KEYS)
PLOTTED = (("validation loss", "val_loss"), ("consistency energy", f"val_{ENERGY}"))


@dataclass(frozen=True)
class ConsistencyRun:
    """One run of the study: its name ("cityscapes/xtsc"), dataset and consistency method."""

    name: str
    dataset: str
    method: str

    @property
    def comment(self):
        """What follows its command line after "#": the name."""
        return self.name


def consistency_runs(dataset):
    """The study's runs on `dataset`, one per consistency method, in CONSISTENCY_METHODS order."""
    return [ConsistencyRun(f"{dataset}/{method}", dataset, method) for method in CONSISTENCY_METHODS]


def entry_arguments(run, seeds, save_path, extra):
    """The entry script's arguments for `run`: a StepLR period of the run's epochs (no decay, as the
    original's missing scheduler), the original's settings, the method, --seeds, --save_path, then `extra`."""
    arguments = [*ORIGINAL_SETTINGS, "--consistency", run.method, "--seeds", *map(str, seeds), "--save_path",
                 save_path, *extra]
    return ["--scheduler_step_size", str(planned_epochs(run.dataset, arguments, ORIGINAL_EPOCHS)), *arguments]








def latest_runs(save_path, seeds):
    """{method: {seed: RunRecord}}: for each consistency method and seed in `seeds`, the finished multi-task
    run of the experiment folders under `save_path` with the highest number."""
    found = {method: {} for method in CONSISTENCY_METHODS}
    numbers = sorted(int(name) for name in os.listdir(save_path) if name.isdigit()) if os.path.isdir(save_path) else []
    for number in numbers:
        record = read_run(os.path.join(save_path, f"{number:03d}"))
        config = record.config
        if record.finished and config is not None and config["seed"] in seeds and config["single_task"] is None:
            found[config["consistency"]][config["seed"]] = record
    return {method: runs for method, runs in found.items() if runs}


def seed_statistics(histories):
    """Rows {"epoch", "runs", "{quantity}_mean", "{quantity}_std"} over the epochs every history (a tuple of
    metrics.csv rows) holds: the mean over the histories and their sample std (ddof 1; None for one)."""
    by_epoch = [{int(row["epoch"]): row for row in history} for history in histories]
    rows = []
    for epoch in sorted(set.intersection(*(set(rows_of_run) for rows_of_run in by_epoch))):
        row = {"epoch": epoch, "runs": len(histories)}
        for quantity in QUANTITIES:
            values = np.array([float(rows_of_run[epoch][quantity]) for rows_of_run in by_epoch])
            row[f"{quantity}_mean"] = float(values.mean())
            row[f"{quantity}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        rows.append(row)
    return rows


def write_study_figure(save_path, runs):
    """Write FIGURE_NAME and TABLE_NAME into `save_path` from {method: {seed: RunRecord}}; returns their paths."""
    statistics = {method: seed_statistics([record.history for _, record in sorted(by_seed.items())])
                  for method, by_seed in runs.items()}
    table = [{"method": method, **row} for method, rows in statistics.items() for row in rows]
    table_path, figure_path = os.path.join(save_path, TABLE_NAME), os.path.join(save_path, FIGURE_NAME)
    write_csv(table_path, table)
    panels = []
    for title, key in PLOTTED:
        lines = {f"{method} ({len(runs[method])} seed{'s' if len(runs[method]) > 1 else ''})":
                 tuple([row[column] for row in rows] for column in ("epoch", f"{key}_mean", f"{key}_std"))
                 for method, rows in statistics.items()}
        panels.append((title, title, lines))
    plots.plot_curves_with_bands(panels, figure_path)
    return figure_path, table_path


def main(argv=None):
    """Plan the runs, then print and check them (--dry_run) or run them and write the figure; the exit status."""
    options, extra = parse_study_arguments(
        argv, "consistency", "Train xtsc and xtc with the original's consistency-study settings and plot "
        "validation loss and consistency energy.", DATASETS, DEFAULT_SAVE_PATH)
    planned = plan(consistency_runs(options.dataset), options.only,
                   lambda run: entry_arguments(run, options.seeds, options.save_path, extra))
    if planned is None:
        return 2
    if options.dry_run:
        return dry_run(planned)
    status = execute(planned, options.save_path)
    if status != 0:
        return status
    save_path = os.path.join(REPO_ROOT, options.save_path)
    try:
        found = latest_runs(save_path, options.seeds)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not found:
        print(f"error: no finished run of seeds {options.seeds} under {save_path}", file=sys.stderr)
        return 2
    for path in write_study_figure(save_path, found):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
