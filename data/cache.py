"""The preprocessed cache of a dataset split: every sample read, checked, converted and resized once
(in parallel), stored as one .npy file per field, and memory-mapped (`np.load(mmap_mode="r")`) on
later runs, so that a training sample costs a copy instead of decoding its files.

Where: `cache_dir` when given; by default the user cache folder `$XDG_CACHE_HOME/xtask_mt/`
(`~/.cache/xtask_mt/`), never inside the dataset root: nothing is written into a user's dataset, and
nothing is ever written outside the cache folder. Inside it, per split and setting:

    {key hash}/image.npy          [N, H, W, 3] uint8 (round(255 x value)), float16 or float32: the
                                  narrowest that gives back every image bit for bit
    {key hash}/segmentation.npy   [N, H, W] uint8 when the classes leave 255 free (ignore_index
                                  stored as 255 when it is not 0..255 itself), else int16, int32, int64
    {key hash}/depth.npy          [N, H, W] float32
    {key hash}/normal.npy         [N, H, W, 3] float32, only when the dataset reads normals: float32 gives
                                  the unit vectors back bit for bit, so cached and file samples stay
                                  identical (float16 would move each component by up to 5e-4 and the
                                  length off 1 by up to about 1e-3)
    {key hash}/manifest.json      written last: the key, sample and valid pixel counts, dtypes, and the
                                  BLAKE2b checksum of each array file, verified whenever a run opens the
                                  cache (a cache that fails it is rebuilt, with a line saying why)
    {key hash}.lock               held (fcntl.flock) while that key is built
    .{key hash}.building-{pid}/   a build in progress, renamed to {key hash}/ when its arrays are complete

The key hash is the first KEY_HASH_LENGTH hex digits of the SHA-256 of the key as JSON: CACHE_VERSION,
layout, split, height, width, num_classes, ignore_index, every source file's name (relative to the
dataset root), size and mtime (ns), and the dataset's tasks when it reads normals (no "tasks" entry
otherwise, so segmentation + depth caches keep the key they had before normals were read, and a
dataset with normals never shares a folder with one without). Changed files or settings give another
folder; a folder without a manifest matching its key is partial and is rebuilt, never read.

A dataset here is a MultiTaskDataset (data.dataset): it has root, layout, split, height, width,
num_classes, ignore_index, tasks, reads_normals, samples (one tuple of file paths per sample) and
read_sample.
"""

import fcntl
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from data.layouts import check_not_broken_link
from data.transforms import image_as_float, valid_normal_mask
from utils.errors import UserInputError
from utils.files import write_json
from utils.processes import ignore_interrupts_and_end_on_sigterm

CACHE_VERSION = 1
USER_CACHE_FOLDER_NAME = "xtask_mt"
MANIFEST_NAME = "manifest.json"
BUILDING_INFIX = ".building-"
KEY_HASH_LENGTH = 16
FIELDS = ("image", "segmentation", "depth")
NORMAL_FIELD = "normal"
NARROW_IMAGE_DTYPES = ("uint8", "float16")  # tried in this order; float32 when neither gives the image back
WIDE_IMAGE_DTYPE = "float32"
SPARE_UINT8_LABEL = 255
WIDER_SEGMENTATION_DTYPES = ("int16", "int32")
MAX_WORKERS = 8
CHUNKS_PER_WORKER = 4
MIN_PARALLEL_SECONDS = 0.5  # below this estimated reading time, starting worker processes costs more than it saves
MAX_CHUNK_BYTES = 64 * 2 ** 20
READ_BYTES_PER_PIXEL = 3 * 4 + 8 + 4  # float32 RGB, int64 label, float32 depth, as read_sample returns them
NORMAL_BYTES_PER_PIXEL = 3 * 4  # float32 normal vector


class ChunkArrays(NamedTuple):
    """Consecutive samples read for the cache: `maps`, one array per cached field (FIELDS, then
    NORMAL_FIELD when the dataset reads normals): images [n, H, W, 3] (uint8 or float32), segmentation
    [n, H, W] in the storage dtype, depth float32 [n, H, W], normal float32 [n, H, W, 3]; how many of
    their label pixels are not ignore_index, how many depth pixels are > 0 and how many normals are
    vectors (0 without normals); and which NARROW_IMAGE_DTYPES give every float image back exactly (all
    of them for uint8 images)."""

    maps: tuple
    valid_label_pixels: int
    valid_depth_pixels: int
    valid_normal_pixels: int
    exact_image_dtypes: tuple


def user_cache_dir() -> Path:
    """The per-user cache folder: $XDG_CACHE_HOME/xtask_mt, or ~/.cache/xtask_mt when that variable is
    unset or not an absolute path."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / USER_CACHE_FOLDER_NAME


def default_cache_dir() -> Path:
    """The cache folder used when none is given: the user cache folder, never the dataset root (nothing
    is written into a user's dataset)."""
    return user_cache_dir()


def source_files(root, samples: list) -> list:
    """[name relative to root, size in bytes, mtime in ns] of every file of every sample, in order."""
    entries = []
    for sample in samples:
        for path in sample:
            check_not_broken_link(Path(path))
            try:
                status = os.stat(path)
            except OSError as error:
                raise UserInputError(f"cannot read {path}: {error.strerror}") from None
            entries.append([Path(os.path.relpath(path, root)).as_posix(), status.st_size, status.st_mtime_ns])
    return entries


def cache_key(dataset) -> dict:
    """Everything that changes the cached content of `dataset`'s split (JSON-ready); "tasks" only when
    the dataset reads normals (the segmentation + depth key is the one it was before normals)."""
    key = {"cache_version": CACHE_VERSION, "layout": dataset.layout, "split": dataset.split,
           "height": dataset.height, "width": dataset.width, "num_classes": dataset.num_classes,
           "ignore_index": dataset.ignore_index, "files": source_files(dataset.root, dataset.samples)}
    if dataset.reads_normals:
        key["tasks"] = list(dataset.tasks)
    return key


def cache_fields(key: dict) -> tuple:
    """The fields (array files) of the cache of `key`: FIELDS, then NORMAL_FIELD when its tasks hold it."""
    return FIELDS + ((NORMAL_FIELD,) if NORMAL_FIELD in key.get("tasks", ()) else ())


def key_hash(key: dict) -> str:
    """The cache folder name of `key`: the first KEY_HASH_LENGTH hex digits of its JSON's SHA-256."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:KEY_HASH_LENGTH]


def segmentation_storage(num_classes: int, ignore_index: int) -> tuple:
    """(dtype name, stored ignore value) of segmentation maps holding classes 0..num_classes-1 and
    ignore_index: uint8 when 255 is not a class (ignore_index kept when it is 0..255, else stored as
    255), otherwise the narrowest of int16, int32 holding both, else int64."""
    if num_classes <= SPARE_UINT8_LABEL:
        return "uint8", ignore_index if 0 <= ignore_index <= SPARE_UINT8_LABEL else SPARE_UINT8_LABEL
    for dtype in WIDER_SEGMENTATION_DTYPES:
        limits = np.iinfo(dtype)
        if num_classes - 1 <= limits.max and limits.min <= ignore_index <= limits.max:
            return dtype, ignore_index
    return "int64", ignore_index


def encode_segmentation(segmentation: np.ndarray, ignore_index: int, storage: tuple) -> np.ndarray:
    """Segmentation int64 [..., H, W] in `storage` = (dtype name, stored ignore value)."""
    dtype, stored_ignore = storage
    stored = segmentation.astype(dtype)
    stored[segmentation == ignore_index] = stored_ignore
    return stored


def decode_segmentation(stored: np.ndarray, ignore_index: int, stored_ignore: int) -> np.ndarray:
    """Segmentation int64 [..., H, W] (a new array) from its stored form, ignore_index restored."""
    segmentation = np.array(stored, dtype=np.int64)
    segmentation[stored == stored_ignore] = ignore_index
    return segmentation


def encode_image(image: np.ndarray, dtype: str) -> np.ndarray:
    """Float image [..., 3] in [0, 1] as `dtype`: uint8 holds round(255 x value), floats the value."""
    if dtype == "uint8":
        return np.round(np.clip(image, 0, 1) * np.float32(255)).astype(np.uint8)
    return image.astype(dtype)


def exact_image_dtypes(image: np.ndarray, candidates: tuple) -> tuple:
    """The dtypes of `candidates` whose encoding gives the float32 image [H, W, 3] back bit for bit
    through image_as_float (what loading does)."""
    return tuple(dtype for dtype in candidates
                 if image_as_float(encode_image(image, dtype)).tobytes() == image.tobytes())


def read_chunk(dataset, indices: range) -> ChunkArrays:
    """Read and check samples `indices` of `dataset` with its read_sample (raising its UserInputError
    for a bad file) and prepare them for storage; runs in the build's worker processes."""
    storage = segmentation_storage(dataset.num_classes, dataset.ignore_index)
    images, segmentations, depths, normals = [], [], [], []
    exact = NARROW_IMAGE_DTYPES
    valid_label_pixels = valid_depth_pixels = valid_normal_pixels = 0
    for index in indices:
        sample = dataset.read_sample(dataset.samples[index])
        image, segmentation, depth = sample[:3]
        if image.dtype != np.uint8:
            image = image.astype(np.float32)
            exact = exact_image_dtypes(image, exact)
        valid_label_pixels += int(np.count_nonzero(segmentation != dataset.ignore_index))
        valid_depth_pixels += int(np.count_nonzero(depth > 0))
        images.append(image)
        segmentations.append(encode_segmentation(segmentation, dataset.ignore_index, storage))
        depths.append(depth.astype(np.float32))
        if dataset.reads_normals:
            valid_normal_pixels += int(np.count_nonzero(valid_normal_mask(sample[3])))
            normals.append(sample[3].astype(np.float32))
    maps = (np.stack(images), np.stack(segmentations), np.stack(depths))
    if dataset.reads_normals:
        maps += (np.stack(normals),)
    return ChunkArrays(maps, valid_label_pixels, valid_depth_pixels, valid_normal_pixels, exact)


def chunk_ranges(indices: range, workers: int, sample_bytes: int) -> list:
    """Split `indices` into consecutive ranges: about CHUNKS_PER_WORKER per worker, none holding more
    than MAX_CHUNK_BYTES of read samples (but at least one sample)."""
    size = max(1, min(math.ceil(len(indices) / (workers * CHUNKS_PER_WORKER)), MAX_CHUNK_BYTES // sample_bytes))
    return [range(start, min(start + size, indices.stop)) for start in range(indices.start, indices.stop, size)]


def map_in_processes(function, chunks: list, workers: int):
    """Yield function(chunk) for every chunk, in order, computed by a multiprocessing Pool of `workers`
    processes; in this process when one worker is enough or this process is a daemon (a DataLoader
    worker), which may not start processes."""
    if workers < 2 or multiprocessing.current_process().daemon:
        yield from map(function, chunks)
        return
    with multiprocessing.Pool(workers, initializer=ignore_interrupts_and_end_on_sigterm) as pool:
        yield from pool.imap(function, chunks)


def split_folder_of(dataset, field_position: int) -> str:
    """The folder holding every file of one field (0 image, 1 label, 2 depth, 3 normal) of the split."""
    return os.path.commonpath([str(Path(sample[field_position]).parent) for sample in dataset.samples])


def refuse_split_without_targets(dataset, valid_label_pixels: int, valid_depth_pixels: int,
                                 valid_normal_pixels: int = 0) -> None:
    """Raise UserInputError naming the split's folder when none of its label pixels is a class, none
    of its depth pixels is valid or, when the dataset reads normals, none of its normals is a vector:
    such a split cannot train or evaluate that task."""
    count = len(dataset.samples)
    if valid_label_pixels == 0:
        raise UserInputError(
            f"split {dataset.split!r} has no labelled pixel: every label of its {count} samples in "
            f"{split_folder_of(dataset, 1)} is unlabelled (ignored); expected some pixels with a class id")
    if valid_depth_pixels == 0:
        raise UserInputError(
            f"split {dataset.split!r} has no valid depth pixel: every depth value of its {count} samples in "
            f"{split_folder_of(dataset, 2)} is 0 (missing); expected some depth > 0")
    if dataset.reads_normals and valid_normal_pixels == 0:
        raise UserInputError(
            f"split {dataset.split!r} has no valid normal pixel: every normal of its {count} samples in "
            f"{split_folder_of(dataset, 3)} has all three components 0 (invalid); expected some unit vectors")


def narrow_image_file(path: Path, dtype: str, rows_per_step: int) -> None:
    """Rewrite the float32 image array at `path` [N, H, W, 3] in `dtype` (through encode_image),
    `rows_per_step` images at a time."""
    wide = np.load(path, mmap_mode="r")
    narrow_path = path.with_name(f"narrow-{path.name}")
    narrow = np.lib.format.open_memmap(narrow_path, mode="w+", dtype=dtype, shape=wide.shape)
    for start in range(0, len(wide), rows_per_step):
        narrow[start:start + rows_per_step] = encode_image(np.asarray(wide[start:start + rows_per_step]), dtype)
    narrow.flush()
    del narrow, wide
    os.replace(narrow_path, path)


def read_all_chunks(dataset) -> tuple:
    """(chunks, iterator of their ChunkArrays in order) covering every sample of `dataset`: the first
    sample is read here, which times it; the others by min(os.cpu_count(), MAX_WORKERS) worker
    processes, or here too when reading them all would take under MIN_PARALLEL_SECONDS."""
    count = len(dataset.samples)
    start = time.perf_counter()
    first = read_chunk(dataset, range(0, 1))
    estimated_seconds = (time.perf_counter() - start) * (count - 1)
    workers = min(os.cpu_count() or 1, MAX_WORKERS) if estimated_seconds >= MIN_PARALLEL_SECONDS else 1
    bytes_per_pixel = READ_BYTES_PER_PIXEL + (NORMAL_BYTES_PER_PIXEL if dataset.reads_normals else 0)
    rest = chunk_ranges(range(1, count), workers, dataset.height * dataset.width * bytes_per_pixel)
    read = functools.partial(read_chunk, dataset)
    return [range(0, 1)] + rest, itertools.chain([first], map_in_processes(read, rest, min(workers, len(rest))))


def write_arrays(dataset, folder: Path, progress: bool) -> dict:
    """Read every sample of `dataset` (in parallel when worth it) and write image.npy, segmentation.npy,
    depth.npy and, when it reads normals, normal.npy into `folder`; returns what the manifest records
    besides the key (counts, dtypes, stored ignore value)."""
    count = len(dataset.samples)
    fields = FIELDS + ((NORMAL_FIELD,) if dataset.reads_normals else ())
    arrays = {}
    valid_label_pixels = valid_depth_pixels = valid_normal_pixels = 0
    exact = NARROW_IMAGE_DTYPES
    with tqdm(total=count, desc=f"caching {dataset.split} ({dataset.layout}, {dataset.height}x{dataset.width})",
              unit="sample", disable=None if progress else True) as bar:
        chunks, chunk_arrays = read_all_chunks(dataset)
        for chunk, arrays_of_chunk in zip(chunks, chunk_arrays):
            if not arrays:
                arrays = {field: np.lib.format.open_memmap(folder / f"{field}.npy", mode="w+", dtype=array.dtype,
                                                           shape=(count,) + array.shape[1:])
                          for field, array in zip(fields, arrays_of_chunk.maps)}
            for field, array in zip(fields, arrays_of_chunk.maps):
                arrays[field][chunk.start:chunk.stop] = array
            valid_label_pixels += arrays_of_chunk.valid_label_pixels
            valid_depth_pixels += arrays_of_chunk.valid_depth_pixels
            valid_normal_pixels += arrays_of_chunk.valid_normal_pixels
            exact = tuple(dtype for dtype in exact if dtype in arrays_of_chunk.exact_image_dtypes)
            bar.update(len(chunk))
    dtypes = {field: str(array.dtype) for field, array in arrays.items()}
    for array in arrays.values():
        array.flush()
    del arrays
    refuse_split_without_targets(dataset, valid_label_pixels, valid_depth_pixels, valid_normal_pixels)
    if dtypes["image"] == WIDE_IMAGE_DTYPE and exact:
        narrow_image_file(folder / "image.npy", exact[0], max(len(chunk) for chunk in chunks))
        dtypes["image"] = exact[0]
    counts = {"samples": count, "valid_label_pixels": valid_label_pixels, "valid_depth_pixels": valid_depth_pixels}
    if dataset.reads_normals:
        counts["valid_normal_pixels"] = valid_normal_pixels
    return {**counts, "dtypes": dtypes,
            "stored_ignore_index": segmentation_storage(dataset.num_classes, dataset.ignore_index)[1]}


def open_cache_arrays(folder: Path, key: dict) -> dict:
    """The cached arrays of the split of `key` in `folder`, memory-mapped read-only: {"image": [N, H, W,
    3], "segmentation": [N, H, W], "depth": [N, H, W]} and "normal": [N, H, W, 3] when the key's tasks
    hold it (no file stays open)."""
    return {field: np.load(Path(folder) / f"{field}.npy", mmap_mode="r") for field in cache_fields(key)}


def array_checksums(folder: Path, fields) -> dict:
    """{field: BLAKE2b hex digest of folder/{field}.npy's bytes} (about 1 GB/s: a second for a Cityscapes split)."""
    checksums = {}
    for field in fields:
        with open(folder / f"{field}.npy", "rb") as stream:
            checksums[field] = hashlib.file_digest(stream, "blake2b").hexdigest()
    return checksums


def cache_state(folder: Path, key: dict) -> tuple:
    """(manifest, problem) of the cache in `folder` for `key`: (the manifest, None) when it is finished
    and its arrays have the recorded dtypes, sample count and checksums; (None, None) when there is no
    cache there; (None, what is wrong) when there is one that must not be used (partial, of another
    key, damaged, or from before checksums were recorded)."""
    path = folder / MANIFEST_NAME
    if not path.exists():
        return None, ("an unfinished build" if folder.exists() else None)
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None, "its manifest does not describe this dataset's key"
        arrays = open_cache_arrays(folder, key)
        dtypes = {field: str(array.dtype) for field, array in arrays.items()}
        if dtypes != manifest["dtypes"] or any(len(array) != manifest["samples"] for array in arrays.values()):
            return None, "its arrays do not have the recorded dtypes or sample count"
        recorded = manifest["checksums"]
        if not isinstance(recorded, dict):
            return None, "its manifest's checksums are not an object"
    except KeyError as error:
        return None, f"its manifest lacks {error} (a cache from an older version)"
    except (OSError, ValueError, TypeError) as error:
        return None, f"it cannot be read ({error})"
    damaged = [field for field, checksum in array_checksums(folder, arrays).items() if recorded.get(field) != checksum]
    if damaged:
        return None, f"{', '.join(field + '.npy' for field in damaged)} failed its checksum"
    return manifest, None


def remove_partial_builds(folder: Path) -> None:
    """Delete what an interrupted build of `folder`'s key left: the folder itself (it has no valid
    manifest) and its .{key hash}.building-* folders. Only called while holding the key's lock."""
    for leftover in [folder, *folder.parent.glob(f".{folder.name}{BUILDING_INFIX}*")]:
        if leftover.exists():
            shutil.rmtree(leftover)


def build_cache(dataset, key: dict, folder: Path, progress: bool) -> dict:
    """Build the cache of `dataset` into `folder` (inside a .building- folder renamed into place, the
    manifest written last) and return its manifest; a failed build leaves nothing behind."""
    remove_partial_builds(folder)
    building = folder.parent / f".{folder.name}{BUILDING_INFIX}{os.getpid()}"
    building.mkdir()
    try:
        summary = write_arrays(dataset, building, progress)
        os.replace(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    manifest = {"key": key, **summary, "checksums": array_checksums(folder, summary["dtypes"]),
                "built_by_pid": os.getpid()}
    write_json(folder / MANIFEST_NAME, manifest)
    return manifest


@contextmanager
def key_lock(cache_dir: Path, name: str):
    """Hold an exclusive fcntl.flock on cache_dir/{name}.lock (folder and file created if needed) for the
    with-block; a cache folder that cannot be written is a UserInputError."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(cache_dir / f"{name}.lock", "a")
    except OSError as error:
        raise UserInputError(f"cannot write the dataset cache folder {cache_dir}: {error.strerror}; expected a "
                             "writable folder: choose another with --cache_dir, or read the dataset files "
                             "directly with --no_cache") from None
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def find_or_build_cache(dataset, cache_dir=None, progress: bool = True) -> tuple:
    """(folder, manifest) of the finished cache of `dataset`'s split under `cache_dir` (None: see
    default_cache_dir), building it first when missing, stale or partial. Concurrent callers build it
    once: the builder holds the key's lock, the others wait for it and then find the finished cache."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(dataset)
    folder = cache_dir / key_hash(key)
    manifest, _ = cache_state(folder, key)
    if manifest is not None:
        return folder, manifest
    with key_lock(cache_dir, folder.name):
        manifest, problem = cache_state(folder, key)
        if manifest is None:
            if problem is not None:
                print(f"rebuilding the {dataset.split} cache {folder}: {problem}", flush=True)
            manifest = build_cache(dataset, key, folder, progress)
    return folder, manifest


def cached_sample(arrays: dict, manifest: dict, index: int) -> tuple:
    """Sample `index` from the memory-mapped `arrays` exactly as read_sample gave it, image converted:
    image float32 [H, W, 3] in [0, 1], segmentation int64 [H, W], depth float32 [H, W], and normal
    float32 [H, W, 3] when cached (new arrays)."""
    sample = (image_as_float(arrays["image"][index]),
              decode_segmentation(arrays["segmentation"][index], manifest["key"]["ignore_index"],
                                  manifest["stored_ignore_index"]),
              np.array(arrays["depth"][index], dtype=np.float32))
    if NORMAL_FIELD not in arrays:
        return sample
    return sample + (np.array(arrays[NORMAL_FIELD][index], dtype=np.float32),)
