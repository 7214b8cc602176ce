"""The output folder in the MTAN layout, {train,val}/{image,label,depth[,normal]}/{i}.npy: which folder
may be written, what an earlier run of the tool left there, the atomic writes and reading it all back.

A run writes SETTINGS_RECORD first (the flags and input files it prepares from), each sample's files
atomically (a temporary file renamed into place), and COMPLETE_MARKER last, once every sample is there.
A folder without the marker is unfinished: a second run with the same settings writes only the samples
that lack a file; one with other settings is refused."""

import io
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.dataset import DEFAULT_TASKS, TASKS_WITH_NORMALS
from data.nyu import NYUv2Dataset
from utils.errors import UserInputError
from utils.files import (WRITER_LOCK, atomic_write_bytes, hold_writer_lock, remove_leftover_temporary_files,
                         write_json)

SETTINGS_RECORD = ".prepare_nyuv2.json"
COMPLETE_MARKER = ".complete"
SPLITS = ("train", "val")
FOLDERS = ("image", "label", "depth")
NORMAL_FOLDER = "normal"


def sample_folders(normals: bool) -> tuple:
    """The folders of one split: image, label, depth and, with normals, normal."""
    return FOLDERS + ((NORMAL_FOLDER,) if normals else ())


def sample_paths(root: Path, split: str, index: int, normals: bool) -> dict:
    """folder name -> root/split/folder/{index}.npy for every file of sample `index` of `split`."""
    return {folder: root / split / folder / f"{index}.npy" for folder in sample_folders(normals)}


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy file content of `array`."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_sample(paths: dict, arrays: dict) -> None:
    """Write arrays[folder] to paths[folder] atomically for every folder of the sample."""
    for folder, path in paths.items():
        atomic_write_bytes(path, npy_bytes(arrays[folder]))


def is_written(paths: dict) -> bool:
    """Whether every file of a sample exists (each was written whole, by an atomic rename)."""
    return all(path.exists() for path in paths.values())


def read_record(root: Path):
    """The settings record of an earlier run in `root`, or None when there is none."""
    path = root / SETTINGS_RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"--out {root}: cannot read {path} ({error}); expected the settings an earlier run of "
                             "this tool wrote: delete the folder and prepare it again") from None


def differences(recorded: dict, settings: dict) -> list:
    """'name: recorded -> now' for every setting whose value differs between the two records."""
    return [f"{name}: {recorded.get(name)!r} -> {value!r}" for name, value in settings.items()
            if recorded.get(name) != value]


def open_output(root: Path, settings: dict) -> tuple:
    """Make `root` (--out) ready for the run with `settings` (a JSON-able dict): a new or empty folder
    gets the settings record; a folder of an earlier run with the same settings is continued (the
    temporary files of a killed run removed). The split folders are made. Returns (the open writer
    lock of utils.files.hold_writer_lock, to hold while writing; whether the earlier run was complete).
    UserInputError for a file, a folder holding other files, an earlier run with other settings, or a
    folder another process is writing."""
    if root.exists() and not root.is_dir():
        raise UserInputError(f"--out {root} is a file; expected a new or empty folder, or one this tool wrote")
    recorded = read_record(root)
    if recorded is None and root.exists():
        others = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in root.iterdir()
                        if entry.name != WRITER_LOCK)
        if others:
            raise UserInputError(f"--out {root} holds other files ({', '.join(others[:5])}"
                                 f"{', ...' if len(others) > 5 else ''}) and no {SETTINGS_RECORD} of an earlier run "
                                 "of this tool; expected a new or empty folder")
    changed = differences(recorded, settings) if recorded is not None else []
    if changed:
        raise UserInputError(f"--out {root} was prepared with other settings ({'; '.join(changed)}); expected the "
                             "same flags and input files to continue it, or a new folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = hold_writer_lock(str(root))
    if recorded is None:
        write_json(root / SETTINGS_RECORD, settings)
    folders = [f"{split}/{folder}" for split in SPLITS for folder in sample_folders(settings["normals"])]
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    remove_leftover_temporary_files(str(root), folders)
    return lock, (root / COMPLETE_MARKER).exists()


def mark_complete(root: Path, counts: dict) -> None:
    """Write COMPLETE_MARKER (atomically), naming how many samples each split holds."""
    summary = ", ".join(f"{count} {split}" for split, count in counts.items())
    atomic_write_bytes(root / COMPLETE_MARKER, f"prepared by python -m tools.prepare_nyuv2: {summary}\n".encode())


def verify(root: Path, counts: dict, height: int, width: int, normals: bool) -> None:
    """Read every sample of `root` back through data.NYUv2Dataset (the loader's checks of shapes, dtypes
    and values), with a progress bar; UserInputError when a split does not hold `counts[split]` samples
    of height x width or a file fails a check."""
    tasks = TASKS_WITH_NORMALS if normals else DEFAULT_TASKS
    for split, count in counts.items():
        dataset = NYUv2Dataset(root, split, cache=False, tasks=tasks)
        if len(dataset) != count or (dataset.height, dataset.width) != (height, width):
            raise UserInputError(f"--verify: {root / split} holds {len(dataset)} samples of {dataset.height} x "
                                 f"{dataset.width}; expected {count} of {height} x {width}")
        for sample in tqdm(dataset.samples, desc=f"verifying {split}", unit="sample", disable=None):
            dataset.read_sample(sample)

