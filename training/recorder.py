"""The experiment folder of a run: config.json, metrics.csv, best/last checkpoints, results.json, the
best-so-far state, and the row in {save_path}/results.csv. Nothing is ever overwritten: each run
claims the next free numbered folder, and every file is written atomically."""
import copy
import math
import os
import platform
import subprocess

import numpy as np
import torch
import torchvision

from utils.errors import UserInputError
from utils.files import append_csv_row, save_torch, write_csv, write_json

CHECKPOINT_FORMAT = 2


def create_numbered_folder(parent):
    """Create and return `parent`/NNN with the next free number; os.mkdir makes the claim atomic, so two
    runs started together never share a folder."""
    os.makedirs(parent, exist_ok=True)
    taken = [int(name) for name in os.listdir(parent) if name.isdigit()]
    number = max(taken, default=0) + 1
    while True:
        path = os.path.join(parent, f"{number:03d}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            number += 1


def experiment_folder(save_path, number):
    """The folder of existing experiment `number`; a clear error when it is not there."""
    path = os.path.join(save_path, f"{number:03d}")
    if not os.path.isdir(path):
        existing = sorted(name for name in os.listdir(save_path) if name.isdigit()) if os.path.isdir(save_path) else []
        raise UserInputError(f"--exp_num {number}: no experiment folder {path}; found {existing or 'none'} "
                             f"in --save_path {save_path}")
    return path


def git_commit():
    """The repository's current commit hash, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def run_config(options, device):
    """Everything a run was started with: every flag, the device, library versions, the git commit."""
    return {
        "options": vars(options),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__},
        "git_commit": git_commit(),
    }


def load_checkpoint(path, device):
    """The checkpoint dict at `path`, loaded safely (weights_only); a clear error when it is unreadable."""
    if not os.path.isfile(path):
        raise UserInputError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise UserInputError(f"checkpoint {path} cannot be read: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"checkpoint {path} is not a checkpoint of this version of the repository "
                             f"(expected format {CHECKPOINT_FORMAT})")
    return checkpoint


class Recorder:
    """Owns one run's experiment folder and its best-so-far state.

    `folder` is None under --debug: the best state is still kept (in memory) and nothing is written.
    A checkpoint holds the model's and the balancer's constructor arguments (`model_arguments`,
    `balancer`: {"method", "arguments"}) and the data settings, so evaluation and resuming rebuild
    everything from the checkpoint alone.
    """

    def __init__(self, folder, parts, model_arguments, balancer_arguments, data_settings):
        """parts: training.engine.TrainingParts; balancer_arguments: (method, keyword arguments);
        data_settings: what evaluating the checkpoint needs of the data (size, classes, path, batch)."""
        self.folder = folder
        self.parts = parts
        self.model_arguments = model_arguments
        self.balancer_arguments = balancer_arguments
        self.data_settings = data_settings
        self.best_loss = math.inf
        self.best_epoch = None
        self.best_state = None

    @classmethod
    def start(cls, options, device, parts, model_arguments, balancer_arguments, data_settings):
        """A recorder for a new run: claims {save_path}/NNN and writes config.json (nothing under --debug)."""
        folder = None
        if not options.debug:
            folder = create_numbered_folder(options.save_path)
            os.makedirs(os.path.join(folder, "checkpoints"))
            write_json(os.path.join(folder, "config.json"), run_config(options, device))
        return cls(folder, parts, model_arguments, balancer_arguments, data_settings)

    def path(self, *names):
        """A path inside the experiment folder."""
        return os.path.join(self.folder, *names)

    def checkpoint(self, epoch, history):
        """The checkpoint dict of the current state: model and balancer with their constructor arguments,
        data settings, optimizer, scheduler, epoch, best validation loss and history."""
        method, arguments = self.balancer_arguments
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.parts.model.state_dict(),
            "model_arguments": self.model_arguments,
            "balancing": self.parts.balancer.state_dict(),
            "balancer": {"method": method, "arguments": arguments},
            "data": self.data_settings,
            "optimizer": self.parts.optimizer.state_dict(),
            "scheduler": self.parts.scheduler.state_dict(),
            "epoch": epoch,
            "best_val_loss": self.best_loss,
            "history": history,
        }

    def record_epoch(self, record, history):
        """After an epoch: update the best-so-far state, then write metrics.csv, last.pt and (when the
        validation loss improved) best.pt."""
        improved = record["val_loss"] < self.best_loss or self.best_epoch is None
        if improved:
            self.best_loss, self.best_epoch = record["val_loss"], record["epoch"]
            self.best_state = {"model": copy.deepcopy(self.parts.model.state_dict()),
                               "balancing": copy.deepcopy(self.parts.balancer.state_dict())}
        if self.folder is None:
            return
        write_csv(self.path("metrics.csv"), history)
        checkpoint = self.checkpoint(record["epoch"], history)
        save_torch(self.path("checkpoints", "last.pt"), checkpoint)
        if improved:
            save_torch(self.path("checkpoints", "best.pt"), checkpoint)

    def restore_best(self):
        """Load the best epoch's model and balancer state into the training parts; returns that epoch."""
        self.parts.model.load_state_dict(self.best_state["model"])
        self.parts.balancer.load_state_dict(self.best_state["balancing"])
        return self.best_epoch

    def write_results(self, results):
        """results.json of the final evaluation (nothing under --debug)."""
        if self.folder is not None:
            write_json(self.path("results.json"), results)

    def append_summary(self, save_path, row):
        """Add this run's row to {save_path}/results.csv (nothing under --debug)."""
        if self.folder is not None:
            append_csv_row(os.path.join(save_path, "results.csv"), row)
