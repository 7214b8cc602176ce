"""One run of the tool: check the inputs, open (or continue) the output folder, convert and write every
sample that is not there yet (in worker processes, with a progress bar), mark the folder complete and,
with --verify, read it all back."""

import functools
import hashlib
import json
import sys
from pathlib import Path

from tqdm import tqdm

from data.cache import map_in_processes
from tools.prepare_nyuv2.class_tables import label_lookup
from tools.prepare_nyuv2.frames import FrameSettings, convert_frame
from tools.prepare_nyuv2.official_files import LabeledFile, read_splits, required_package
from tools.prepare_nyuv2.output_folder import (SPLITS, is_written, mark_complete, open_output, sample_paths, verify,
                                               write_sample)
from utils.errors import UserInputError

INTERRUPTED_EXIT_CODE = 130


def run_record(labeled: Path, splits: dict, settings: FrameSettings) -> dict:
    """What the output folder is prepared from, as recorded in it: the labeled file's size, the split's
    counts and a SHA-256 of its indices, and the frame settings."""
    return {"labeled_bytes": labeled.stat().st_size,
            "split_counts": {split: len(indices) for split, indices in splits.items()},
            "split_sha256": hashlib.sha256(json.dumps(splits).encode()).hexdigest(),
            "height": settings.height, "width": settings.width, "crop": settings.crop,
            "normals": settings.normals, "depth": settings.depth_dataset}


def prepare_sample(labeled: Path, lookup, settings: FrameSettings, sample: tuple) -> None:
    """Convert frame `frame_index` of the labeled file and write it as sample `index` of `split`, where
    sample is (split, index, frame_index, paths of its files)."""
    _, _, frame_index, paths = sample
    with LabeledFile(labeled, settings.depth_dataset) as labeled_file:
        arrays = convert_frame(labeled_file.frame(frame_index), lookup, settings)
    write_sample(paths, arrays)


def check_sizes(settings: FrameSettings, workers: int) -> None:
    """Raise UserInputError unless the output size is positive and the worker count is not negative."""
    if settings.height < 1 or settings.width < 1:
        raise UserInputError(f"--height {settings.height} --width {settings.width}: expected a positive height "
                             "and width in pixels")
    if workers < 0:
        raise UserInputError(f"--workers {workers}: expected 0 (this process) or more worker processes")


def write_missing_samples(labeled: Path, splits: dict, root: Path, settings: FrameSettings, workers: int) -> bool:
    """Convert and write every sample of `splits` (split -> frame indices) that `root` lacks, in `workers`
    processes, with a progress bar; then mark `root` complete. Returns False when Ctrl-C stopped it
    first (the samples written so far are whole; a second run writes the rest)."""
    samples = [(split, index, frame_index, sample_paths(root, split, index, settings.normals))
               for split in SPLITS for index, frame_index in enumerate(splits[split])]
    pending = [sample for sample in samples if not is_written(sample[3])]
    write = functools.partial(prepare_sample, labeled, label_lookup(), settings)
    with tqdm(total=len(samples), initial=len(samples) - len(pending), unit="sample", disable=None,
              desc=f"writing NYUv2 at {settings.height}x{settings.width}") as bar:
        try:
            for _ in map_in_processes(write, pending, min(workers, len(pending))):
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            written = sum(is_written(sample[3]) for sample in samples)
            print(f"interrupted: {written} of {len(samples)} samples are written in {root}; run the same command "
                  "again to continue", file=sys.stderr)
            return False
    counts = {split: len(splits[split]) for split in SPLITS}
    mark_complete(root, counts)
    print(f"wrote {len(pending)} samples: {root} holds {counts['train']} train and {counts['val']} val samples at "
          f"{settings.height}x{settings.width}{' with normals' if settings.normals else ''}")
    return True


def prepare(labeled: Path, splits_path: Path, root: Path, settings: FrameSettings, workers: int,
            check_after: bool) -> int:
    """Write the MTAN-layout folder `root` from the official files (continuing an earlier run), then read
    it back when `check_after`; returns the exit status (0, or INTERRUPTED_EXIT_CODE after Ctrl-C).
    UserInputError for bad input."""
    required_package("h5py")
    required_package("scipy.io")
    check_sizes(settings, workers)
    with LabeledFile(labeled, settings.depth_dataset) as labeled_file:
        frame_count = labeled_file.count
    splits = read_splits(splits_path, frame_count)
    counts = {split: len(splits[split]) for split in SPLITS}
    lock, complete = open_output(root, run_record(labeled, splits, settings))
    with lock:
        if complete:
            print(f"{root} is already complete ({counts['train']} train, {counts['val']} val samples); nothing to "
                  "write")
        elif not write_missing_samples(labeled, splits, root, settings, workers):
            return INTERRUPTED_EXIT_CODE
        if check_after:
            verify(root, counts, settings.height, settings.width, settings.normals)
            print(f"verified: every sample of {root} reads back through data.NYUv2Dataset")
    return 0
