"""Experiment folders, checkpoints and result files; every file is written atomically, nothing overwritten."""
import csv
import fcntl
import io
import json
import math
import os
import platform
import subprocess
import tempfile

import numpy as np
import torch
import torchvision

from utils.errors import UserInputError

CHECKPOINT_FORMAT = 1


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


def atomic_write_bytes(path, payload):
    """Write `payload` to a temporary file beside `path`, then rename it onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def to_jsonable(value):
    """`value` with tensors, numpy scalars and non-finite floats turned into plain JSON values."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, content):
    """Atomically write `content` as indented JSON (NaN and infinities become null)."""
    atomic_write_bytes(path, (json.dumps(to_jsonable(content), indent=2) + "\n").encode())


def write_csv(path, rows):
    """Atomically write `rows` (a list of dicts) as CSV, the columns being the union of the keys in order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def append_csv_row(path, row):
    """Add `row` to the CSV at `path`, rewriting it atomically; earlier rows are kept, new columns added.
    An exclusive lock on `path`.lock keeps runs that finish together from losing each other's rows."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = []
        if os.path.exists(path):
            with open(path, newline="") as stream:
                rows = list(csv.DictReader(stream))
        write_csv(path, rows + [row])


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


def save_checkpoint(path, model, balancer, optimizer, scheduler, epoch, best_val_loss, history):
    """Atomically save everything a run's state needs: model, balancing, optimizer, scheduler, epoch,
    best validation loss and the per-epoch history."""
    buffer = io.BytesIO()
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "balancing": balancer.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_val_loss": best_val_loss,
        "history": history,
    }, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, device):
    """The checkpoint dict at `path`, loaded safely (weights_only); a clear error when it is unreadable."""
    if not os.path.isfile(path):
        raise UserInputError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise UserInputError(f"checkpoint {path} cannot be read: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"checkpoint {path} is not a checkpoint of this repository "
                             f"(expected format {CHECKPOINT_FORMAT})")
    return checkpoint
