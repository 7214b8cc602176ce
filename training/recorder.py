"""The experiment folder of a run: config.json, metrics.csv, best/last checkpoints, results.json, the
best-so-far state, and the row in {save_path}/results.csv. Nothing is ever overwritten: each run
claims the next free numbered folder, and every file is written atomically. `Recorder` writes the
folder; `read_run` beside it is the one reader (resume, inference and tools.report use it)."""
import copy
import csv
import json
import math
import os
import platform
import random
import shutil
import subprocess

import numpy as np
import torch
import torchvision

from dataclasses import dataclass
from typing import Optional

from data.profiles import PROFILES
from training.config import CONFIG_FORMAT, RunConfig
from training.interrupts import NonFiniteTraining
from training.options import parse_options
from utils.errors import UserInputError
from utils.files import (append_csv_row, atomic_write_bytes, check_csv_table, hold_writer_lock,
                         remove_leftover_temporary_files, save_torch, write_csv, write_json)

CHECKPOINT_FORMAT = 2


def create_numbered_folder(parent):
    """Create and return `parent`/NNN with the next free number; os.mkdir makes the claim atomic, so two
    runs started together never share a folder. A parent that cannot be written is a UserInputError."""
    try:
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
    except (PermissionError, OSError) as error:
        raise UserInputError(f"cannot create an experiment folder in {parent}: {error.strerror}; choose a "
                             "writable --save_path") from None


def write_or_explain(write, path, content):
    """`write(path, content)`; a failing disk (full, read-only, no permission) becomes a UserInputError
    naming the path and the size that was to be written."""
    try:
        write(path, content)
    except OSError as error:
        raise UserInputError(f"cannot write {path}: {error.strerror} (about {content_bytes(content) / 2 ** 20:.1f} "
                             "MiB to write); free space or choose another --save_path, then resume") from None


def content_bytes(content):
    """Approximate size in bytes of what is about to be written (tensors counted, the rest ignored)."""
    if isinstance(content, dict):
        return sum(content_bytes(value) for value in content.values())
    if isinstance(content, (list, tuple)):
        return sum(content_bytes(value) for value in content)
    if isinstance(content, torch.Tensor):
        return content.numel() * content.element_size()
    return 0


def experiment_folder(save_path, number, flag="--exp_num"):
    """The folder of existing experiment `number` (given with `flag`); a clear error when it is not there."""
    path = os.path.join(save_path, f"{number:03d}")
    if not os.path.isdir(path):
        existing = sorted(name for name in os.listdir(save_path) if name.isdigit()) if os.path.isdir(save_path) else []
        raise UserInputError(f"{flag} {number}: no experiment folder {path}; found {existing or 'none'} "
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


def run_config(config, device, data_identity=None):
    """config.json's content: the configuration (RunConfig.to_json), the identity of the data it trains
    and validates on ({split: MultiTaskDataset.identity()}), the device, library versions, the git commit."""
    return {
        "format": CONFIG_FORMAT,
        "config": config.to_json(),
        "data_identity": data_identity,
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
    if os.path.getsize(path) == 0:
        raise UserInputError(f"checkpoint {path} cannot be read: the file is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise UserInputError(f"checkpoint {path} cannot be read: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"checkpoint {path} is not a checkpoint of this version of the repository "
                             f"(expected format {CHECKPOINT_FORMAT})")
    return checkpoint


def state_is_finite(state):
    """Whether every floating-point tensor of a (nested) state dict is finite."""
    if isinstance(state, dict):
        return all(state_is_finite(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return all(state_is_finite(value) for value in state)
    if isinstance(state, torch.Tensor) and state.is_floating_point():
        return bool(torch.isfinite(state).all())
    return True


def capture_random_states(loader_generator):
    """Every random state a resumed run needs to continue identically: Python, NumPy, torch (CPU and
    CUDA) and the training loader's shuffling generator."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian]
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loader": loader_generator.get_state()}


def restore_random_states(states, loader_generator):
    """Put back the random states saved by `capture_random_states`."""
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    loader_generator.set_state(states["loader"])


def checkpoint_bytes(parts):
    """Rough sizes in bytes of (best.pt, last.pt): the model and balancer, and with the optimizer's state."""
    model_bytes = sum(tensor.numel() * tensor.element_size() for tensor in parts.model.state_dict().values())
    optimizer_bytes = sum(value.numel() * value.element_size() for state in parts.optimizer.state_dict()["state"].values()
                          for value in state.values() if isinstance(value, torch.Tensor))
    moments = 2 if isinstance(parts.optimizer, torch.optim.Adam) else 1
    return model_bytes, model_bytes + max(optimizer_bytes, moments * model_bytes)


def check_free_space(folder, parts):
    """UserInputError when the disk of `folder` cannot hold the checkpoints (best.pt, last.pt and the
    temporary copy written before a rename)."""
    best_bytes, last_bytes = checkpoint_bytes(parts)
    needed = best_bytes + 2 * last_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserInputError(f"--save_path {folder}: {free / 2 ** 20:.0f} MiB free; the checkpoints need about "
                             f"{needed / 2 ** 20:.0f} MiB (best.pt {best_bytes / 2 ** 20:.0f} MiB, last.pt "
                             f"{last_bytes / 2 ** 20:.0f} MiB and a temporary copy while it is written)")


def check_summary_file(path, resumed=False):
    """UserInputError when the summary CSV at `path` exists but cannot take another row (checked before
    training, so a long run does not fail at its very end); `resumed`: for a resume, whose row goes
    beside its folder."""
    try:
        check_csv_table(path)
    except ValueError as error:
        remedy = "the resumed run adds its row there" if resumed else "or use another --save_path"
        raise UserInputError(f"{error}; move or repair it (the summary of finished runs), {remedy}") from None


class Recorder:
    """Owns one run's experiment folder, its history and its best-so-far state.

    `folder` is None under --debug: the best state is still kept (in memory) and nothing is written.
    Files are written in an order that keeps them consistent whenever the run stops: last.pt before
    metrics.csv (metrics.csv never lists an epoch that last.pt does not hold), then best.pt; the
    `status` file says running / finished / failed: reason / interrupted at epoch k. best.pt holds
    what evaluation needs (model, balancer, their constructor arguments, data settings, epoch,
    history); last.pt adds the optimizer, the scheduler and the random states, for resuming (and KD4MTL's
    adaptors with their optimizer).
    """

    def __init__(self, folder, parts, construction, epochs, loader_generator):
        """parts: training.engine.TrainingParts; construction: {"model_family", "model_arguments", "balancer":
        {"method", "arguments"}, "data"}, what rebuilding the run needs, and "data_identity" ({split:
        MultiTaskDataset.identity()}, written into config.json); epochs: the last epoch to train;
        loader_generator: the training loader's torch.Generator (its state is checkpointed)."""
        self.folder = folder
        self.parts = parts
        self.construction = construction
        self.epochs = epochs
        self.loader_generator = loader_generator
        self.history = []
        self.best_loss = math.inf
        self.best_epoch = None
        self.best_state = None
        self.saved_epoch = 0
        self.board = None
        self.writer_lock = None

    @classmethod
    def start(cls, config, device, parts, construction, loader_generator):
        """A recorder for a new run of `config` (training.config.RunConfig): claims {save_path}/NNN and its
        writer lock (utils.files.hold_writer_lock, held until the process ends), checks the free space,
        writes config.json and the status "running" (nothing under --debug)."""
        recorder = cls(None, parts, construction, config.optimization.epochs, loader_generator)
        if not config.run.debug:
            check_summary_file(os.path.join(config.run.save_path, "results.csv"))
            recorder.folder = create_numbered_folder(config.run.save_path)
            recorder.writer_lock = hold_writer_lock(recorder.folder)
            os.makedirs(recorder.path("checkpoints"))
            recorder.write_status("running")
            check_free_space(recorder.folder, parts)
            write_json(recorder.path("config.json"), run_config(config, device, construction.get("data_identity")))
        return recorder

    @classmethod
    def resume(cls, folder, epochs, parts, construction, loader_generator, writes=True):
        """A recorder continuing the run in `folder` from its last.pt: model, balancer, optimizer,
        scheduler, KD4MTL's adaptors, history, best-so-far state and random states restored, after
        checking the results.csv beside `folder` (which gets the row), taking the folder's writer lock
        (UserInputError while another run holds it) and removing the temporary files a killed write left
        there. Without `writes` (a process other than torchrun's rank 0) it only reads: its folder is
        None afterwards."""
        recorder = cls(folder, parts, construction, epochs, loader_generator)
        if writes:
            check_summary_file(os.path.join(os.path.dirname(os.path.abspath(folder)), "results.csv"), resumed=True)
            recorder.writer_lock = hold_writer_lock(folder)
            for path in remove_leftover_temporary_files(folder, ("checkpoints",)):
                print(f"removed {path}, left by a write that was killed")
        last = load_checkpoint(recorder.path("checkpoints", "last.pt"), "cpu")
        best = load_checkpoint(recorder.path("checkpoints", "best.pt"), "cpu")
        parts.model.load_state_dict(last["model"])
        parts.balancer.load_state_dict(last["balancing"])
        parts.optimizer.load_state_dict(last["optimizer"])
        parts.scheduler.load_state_dict(last["scheduler"])
        if parts.distillation is not None:
            parts.distillation.load_state_dict(last["distillation"])
        restore_random_states(last["random_states"], loader_generator)
        recorder.history = list(last["history"])
        recorder.saved_epoch = last["epoch"]
        recorder.best_loss, recorder.best_epoch = best["best_val_loss"], best["epoch"]
        recorder.best_state = {"model": best["model"], "balancing": best["balancing"]}
        if not writes:
            recorder.folder = None
        recorder.write_status("running")
        return recorder

    @property
    def next_epoch(self):
        """The first epoch still to train."""
        return len(self.history) + 1

    def path(self, *names):
        """A path inside the experiment folder."""
        return os.path.join(self.folder, *names)

    def write_status(self, status):
        """Write the run's status file (running / finished / failed: reason / interrupted at epoch k)."""
        if self.folder is not None:
            atomic_write_bytes(self.path("status"), (status + "\n").encode())

    def evaluation_checkpoint(self, epoch):
        """What best.pt holds: the model (its family and constructor arguments) and the balancer with its
        constructor arguments, the data settings, the epoch, the best validation loss and the history."""
        return {"format": CHECKPOINT_FORMAT, "model": self.parts.model.state_dict(),
                "model_family": self.construction["model_family"],
                "model_arguments": self.construction["model_arguments"],
                "balancing": self.parts.balancer.state_dict(), "balancer": self.construction["balancer"],
                "data": self.construction["data"], "epoch": epoch, "best_val_loss": self.best_loss,
                "history": self.history}

    def record_epoch(self, record):
        """After an epoch: add it to the history, update the best-so-far state, then write best.pt (when
        the validation loss improved), last.pt and metrics.csv, in that order: an interruption between
        two writes leaves metrics.csv never ahead of last.pt, and best.pt always consistent with its own
        best_val_loss. A non-finite state is never saved."""
        model_state, balancer_state = self.parts.model.state_dict(), self.parts.balancer.state_dict()
        distillation = self.parts.distillation
        if not (state_is_finite(model_state) and state_is_finite(balancer_state)
                and (distillation is None or state_is_finite(distillation.state_dict()))):
            raise NonFiniteTraining(f"non-finite weights at the end of epoch {record['epoch']}; not saved")
        self.history.append(record)
        improved = record["val_loss"] < self.best_loss or self.best_epoch is None
        if improved:
            self.best_loss, self.best_epoch = record["val_loss"], record["epoch"]
            self.best_state = {"model": copy.deepcopy(model_state), "balancing": copy.deepcopy(balancer_state)}
        if self.folder is None:
            return
        if improved:
            write_or_explain(save_torch, self.path("checkpoints", "best.pt"), self.evaluation_checkpoint(record["epoch"]))
        last = self.evaluation_checkpoint(record["epoch"])
        last.update(optimizer=self.parts.optimizer.state_dict(), scheduler=self.parts.scheduler.state_dict(),
                    random_states=capture_random_states(self.loader_generator))
        if self.parts.distillation is not None:
            last["distillation"] = self.parts.distillation.state_dict()
        write_or_explain(save_torch, self.path("checkpoints", "last.pt"), last)
        self.saved_epoch = record["epoch"]
        write_or_explain(write_csv, self.path("metrics.csv"), self.history)
        if self.board is not None:
            self.board.log_epoch(record)

    def restore_best(self):
        """Load the best epoch's model and balancer state into the training parts; returns that epoch."""
        self.parts.model.load_state_dict(self.best_state["model"])
        self.parts.balancer.load_state_dict(self.best_state["balancing"])
        return self.best_epoch

    def finish(self, results, save_path, summary_row):
        """End a finished run: results.json of the final evaluation, its metrics to TensorBoard, this run's
        `summary_row` added to {save_path}/results.csv, then the status "finished" (nothing is written
        under --debug)."""
        if self.board is not None:
            self.board.log_results(results["metrics"], results["epoch"])
        if self.folder is None:
            return
        write_json(self.path("results.json"), results)
        append_csv_row(os.path.join(save_path, "results.csv"), summary_row)
        self.write_status("finished")


@dataclass(frozen=True)
class RunRecord:
    """What an experiment folder holds, read back: the run's configuration (None without config.json),
    its status (None without a status file: runs from before status files), the per-epoch history of
    metrics.csv, results.json (None when missing), the checkpoint files present and the identity of the
    data it trained on ({split: identity}; None for runs from before it was recorded)."""

    folder: str
    config: Optional[RunConfig]
    status: Optional[str]
    history: tuple
    results: Optional[dict]
    checkpoints: tuple
    data_identity: Optional[dict] = None

    @property
    def finished(self):
        """Whether the run ended normally (a run without a status file counts when it has results)."""
        return self.status == "finished" or (self.status is None and self.results is not None)


def read_run(folder):
    """The RunRecord of the experiment `folder`; UserInputError naming the file when a file that is there
    cannot be read (a missing file is None or empty in the record)."""
    results = read_json_object(os.path.join(folder, "results.json"))
    content = read_json_object(os.path.join(folder, "config.json"))
    config = None if content is None else config_of(content, os.path.join(folder, "config.json"), results)
    status_path = os.path.join(folder, "status")
    status = None
    if os.path.exists(status_path):
        try:
            with open(status_path, encoding="utf-8") as stream:
                status = stream.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"{status_path} cannot be read: {error}") from None
    checkpoints = tuple(name for name in ("best.pt", "last.pt") if os.path.isfile(os.path.join(folder, "checkpoints", name)))
    data_identity = None if content is None else content.get("data_identity")
    return RunRecord(folder, config, status, read_history(os.path.join(folder, "metrics.csv")), results, checkpoints,
                     data_identity if isinstance(data_identity, dict) else None)


def read_json_object(path):
    """The JSON object in `path`, or None when there is no such file; UserInputError naming the file when
    it cannot be read or holds something else than an object."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"{path} cannot be read: {error}") from None
    if not isinstance(content, dict):
        raise UserInputError(f"{path} is not a JSON object")
    return content


def read_history(path):
    """The rows of metrics.csv as dicts, numbers as floats (empty when there is no such file)."""
    if not os.path.isfile(path):
        return ()
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            return tuple({key: number_or_text(value) for key, value in row.items()} for row in csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserInputError(f"{path} cannot be read: {error}") from None


def number_or_text(value):
    """A CSV cell as a float when it is a number, otherwise as it is."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def config_of(content, path, results):
    """The RunConfig in config.json's `content` (format 2: "config"; format 1: the flags flat under
    "options"), settings it lacks at its entry script's defaults; `path` names the file in errors, and
    `results` (or None) tells an old run's single task."""
    if isinstance(content.get("config"), dict):
        stored = content["config"]
        dataset, demo = stored.get("data", {}).get("dataset"), stored.get("run", {}).get("demo")
    elif isinstance(content.get("options"), dict):
        stored = dict(content["options"])
        dataset, demo = stored.get("dataset") or guess_dataset(stored), stored.get("demo")
        if "single_task" not in stored:
            stored["single_task"] = guess_single_task((results or {}).get("metrics") or {})
        stored["dataset"] = dataset
    else:
        raise UserInputError(f"{path} holds no configuration (expected \"config\" or \"options\")")
    if dataset not in PROFILES:
        raise UserInputError(f"{path}: dataset {dataset!r} is none of {', '.join(PROFILES)}")
    try:
        return RunConfig.from_json(stored, parse_options(PROFILES[dataset], ["--demo"] if demo else []))
    except (ValueError, TypeError) as error:
        raise UserInputError(f"{path}: {error}") from None


def guess_dataset(options):
    """The profile of a run written before config.json named its dataset: guessed from input_path, then
    from ignore_index and num_classes; None when nothing fits."""
    input_path = str(options.get("input_path") or "").lower()
    for name in PROFILES:
        if name in input_path:
            return name
    for name, profile in PROFILES.items():
        if (options.get("num_classes") in profile.class_counts
                and options.get("ignore_index") == profile.defaults["ignore_index"]):
            return name
    for name, profile in PROFILES.items():
        if options.get("num_classes") in profile.class_counts:
            return name
    return None


def guess_single_task(metrics):
    """The single task of a run written before config.json named it: the task whose metrics alone are
    present (None: both)."""
    has_segmentation, has_depth = "miou" in metrics, "abs" in metrics
    if has_segmentation and not has_depth:
        return "segmentation"
    if has_depth and not has_segmentation:
        return "depth"
    return None
