"""The preprocessed dataset cache (data.cache): cached samples equal those read from the files, bit
for bit, in every layout; the cache is reused, rebuilt when its files or settings change or when it is
partial, refused for bad files or splits without targets, placed in the user cache folder (never in
the dataset), shared by concurrent builders, and safe to send to DataLoader workers."""

import hashlib
import json
import multiprocessing
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import data.cache as cache_module
from data import CITYSCAPES, CityscapesDataset, NYUv2Dataset
from data.cache import (MANIFEST_NAME, USER_CACHE_FOLDER_NAME, cache_key, exact_image_dtypes, key_hash,
                        segmentation_storage, user_cache_dir)
from data.synthetic import write_cityscapes_mtan, write_cityscapes_raw, write_nyu_mtan
from utils.errors import UserInputError

PREFIX = "arden_000000_000019"
CHILD_TIMEOUT_SECONDS = 120

# (layout, dataset keywords, expected image storage dtype)
EQUALITY_CASES = (
    ("raw", dict(num_classes=7, height=64, width=128), "uint8"),
    ("raw", dict(num_classes=19, ignore_index=-1), "uint8"),
    ("mtan", dict(num_classes=7, height=32, width=64), "uint8"),
    ("mtan", dict(num_classes=19, height=16, width=32, ignore_index=-1), "float32"),
    ("nyu", dict(), "float32"),
)


@pytest.fixture(scope="module")
def cache_pristine_roots(tmp_path_factory):
    """Small datasets of each layout, never cached in place: raw at 128 x 256 (3 train, 2 val), MTAN
    Cityscapes at 32 x 64 and NYU at 24 x 32 (3 train each)."""
    base = tmp_path_factory.mktemp("pristine")
    return {
        "raw": write_cityscapes_raw(base / "raw", {"train": 3, "val": 2}, 128, 256, seed=2),
        "mtan": write_cityscapes_mtan(base / "mtan", {"train": 3}, 32, 64, seed=2),
        "nyu": write_nyu_mtan(base / "nyu", {"train": 3}, 24, 32, seed=2),
    }


@pytest.fixture
def cache_copy(cache_pristine_roots, tmp_path):
    """A function returning a fresh copy of one pristine layout ("raw", "mtan" or "nyu")."""
    def copy(layout):
        return shutil.copytree(cache_pristine_roots[layout], tmp_path / layout)
    return copy


def dataset_class(layout):
    """The dataset class that reads `layout`."""
    return NYUv2Dataset if layout == "nyu" else CityscapesDataset


def assert_same_samples(one, other):
    """Every sample of two datasets holds equal tensors of equal dtypes."""
    assert len(one) == len(other)
    for index in range(len(one)):
        for first, second in zip(one[index], other[index]):
            assert first.dtype == second.dtype and torch.equal(first, second)


def finished_folders(cache_dir):
    """The key folders under `cache_dir` holding a manifest."""
    return sorted(path.parent for path in cache_dir.glob(f"*/{MANIFEST_NAME}"))


def building_folders(cache_dir):
    """The leftover .building- folders under `cache_dir`."""
    return sorted(cache_dir.glob(".*.building-*"))


def samples_digest(dataset):
    """SHA-256 of every tensor of every sample of `dataset`, in order."""
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        for tensor in dataset[index]:
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("layout, keywords, image_dtype", EQUALITY_CASES,
                         ids=[f"{layout}-{keywords.get('num_classes', 13)}-{dtype}" for layout, keywords, dtype
                              in EQUALITY_CASES])
def test_cached_samples_equal_the_samples_read_from_the_files(cache_pristine_roots, tmp_path, layout, keywords,
                                                              image_dtype):
    root = cache_pristine_roots[layout]
    cached = dataset_class(layout)(root, "train", cache=tmp_path, **keywords)
    from_files = dataset_class(layout)(root, "train", cache=False, **keywords)
    assert from_files.cache_folder is None and cached.cache_folder.parent == tmp_path
    assert_same_samples(cached, from_files)
    manifest = json.loads((cached.cache_folder / MANIFEST_NAME).read_text())
    assert manifest["dtypes"] == {"image": image_dtype, "segmentation": "uint8", "depth": "float32"}
    assert manifest["samples"] == 3 and manifest["valid_label_pixels"] > 0 and manifest["valid_depth_pixels"] > 0
    image = np.load(cached.cache_folder / "image.npy", mmap_mode="r")
    assert image.shape == (3, cached.height, cached.width, 3)


def test_augmented_samples_from_the_cache_equal_those_from_the_files(cache_pristine_roots, tmp_path):
    root = cache_pristine_roots["raw"]
    cached = CityscapesDataset(root, "train", augment=True, seed=5, cache=tmp_path)
    from_files = CityscapesDataset(root, "train", augment=True, seed=5, cache=False)
    for _ in range(2):
        assert_same_samples(cached, from_files)


def test_a_parallel_build_gives_the_same_cache(cache_pristine_roots, tmp_path, monkeypatch):
    root = cache_pristine_roots["raw"]
    serial = CityscapesDataset(root, "train", cache=tmp_path / "serial")
    monkeypatch.setattr(cache_module, "MIN_PARALLEL_SECONDS", 0)
    parallel = CityscapesDataset(root, "train", cache=tmp_path / "parallel")
    for field in ("image", "segmentation", "depth"):
        np.testing.assert_array_equal(np.load(serial.cache_folder / f"{field}.npy"),
                                      np.load(parallel.cache_folder / f"{field}.npy"))
    assert_same_samples(parallel, CityscapesDataset(root, "train", cache=False))


def test_a_second_dataset_reuses_the_cache(cache_copy, monkeypatch):
    root = cache_copy("nyu")
    first = NYUv2Dataset(root, "train")
    assert first.cache_folder.parent == user_cache_dir()
    manifest_path = first.cache_folder / MANIFEST_NAME
    built = manifest_path.stat().st_mtime_ns

    def no_reading(self, sample):
        raise AssertionError(f"read {sample} although the cache is complete")

    monkeypatch.setattr(NYUv2Dataset, "read_sample", no_reading)
    second = NYUv2Dataset(root, "train")
    assert second.cache_folder == first.cache_folder and manifest_path.stat().st_mtime_ns == built
    assert second.cache_manifest == first.cache_manifest
    assert_same_samples(second, first)


def test_touching_or_changing_a_source_file_gives_a_new_key(cache_copy):
    root = cache_copy("nyu")
    first = NYUv2Dataset(root, "train")
    depth_path = root / "train" / "depth" / "1.npy"
    status = depth_path.stat()
    os.utime(depth_path, ns=(status.st_atime_ns, status.st_mtime_ns + 10 ** 9))
    touched = NYUv2Dataset(root, "train")
    assert touched.cache_folder != first.cache_folder
    np.save(depth_path, np.load(depth_path) * 2)
    os.utime(depth_path, ns=(status.st_atime_ns, status.st_mtime_ns + 2 * 10 ** 9))
    changed = NYUv2Dataset(root, "train")
    assert changed.cache_folder not in (first.cache_folder, touched.cache_folder)
    assert len(finished_folders(user_cache_dir())) == 3
    assert_same_samples(changed, NYUv2Dataset(root, "train", cache=False))
    assert not torch.equal(changed[1][2], first[1][2])


def test_each_setting_and_the_cache_version_are_in_the_key(cache_pristine_roots, monkeypatch):
    root = cache_pristine_roots["mtan"]
    base = dict(height=32, width=64, num_classes=7, ignore_index=250)
    changes = (dict(height=16), dict(width=32), dict(num_classes=19), dict(ignore_index=-1))
    keys = [cache_key(CityscapesDataset(root, "train", cache=False, **{**base, **change})) for change in ({},) + changes]
    keys.append(cache_key(CityscapesDataset(cache_pristine_roots["raw"], "val", cache=False)))
    monkeypatch.setattr(cache_module, "CACHE_VERSION", cache_module.CACHE_VERSION + 1)
    keys.append(cache_key(CityscapesDataset(root, "train", cache=False, **base)))
    assert len({key_hash(key) for key in keys}) == len(keys) == 7
    assert keys[0]["files"][:3] == [[f"train/{folder}/0.npy", (root / "train" / folder / "0.npy").stat().st_size,
                                     (root / "train" / folder / "0.npy").stat().st_mtime_ns]
                                    for folder in ("image", "label_7", "depth")]


def test_a_cache_without_manifest_is_rebuilt_not_used(cache_copy):
    root = cache_copy("raw")
    first = CityscapesDataset(root, "val")
    (first.cache_folder / MANIFEST_NAME).unlink()
    image_path = first.cache_folder / "image.npy"
    np.save(image_path, np.zeros_like(np.load(image_path)))
    rebuilt = CityscapesDataset(root, "val")
    assert rebuilt.cache_folder == first.cache_folder and (rebuilt.cache_folder / MANIFEST_NAME).is_file()
    assert np.load(image_path).any()
    assert_same_samples(rebuilt, CityscapesDataset(root, "val", cache=False))


def test_a_cache_with_a_missing_array_is_rebuilt(cache_copy):
    root = cache_copy("nyu")
    first = NYUv2Dataset(root, "train")
    (first.cache_folder / "depth.npy").unlink()
    rebuilt = NYUv2Dataset(root, "train")
    assert (rebuilt.cache_folder / "depth.npy").is_file()
    assert_same_samples(rebuilt, NYUv2Dataset(root, "train", cache=False))


def test_a_leftover_building_folder_is_removed_and_the_cache_built(cache_copy, tmp_path):
    root = cache_copy("mtan")
    dataset = CityscapesDataset(root, "train", height=32, width=64, cache=False)
    name = key_hash(cache_key(dataset))
    leftover = tmp_path / "cache" / f".{name}.building-12345"
    leftover.mkdir(parents=True)
    (leftover / "image.npy").write_bytes(b"half an array")
    assert dataset.use_cache(tmp_path / "cache") == tmp_path / "cache" / name
    assert not leftover.exists() and building_folders(tmp_path / "cache") == []
    assert finished_folders(tmp_path / "cache") == [tmp_path / "cache" / name]
    assert_same_samples(dataset, CityscapesDataset(root, "train", height=32, width=64, cache=False))


@pytest.mark.parametrize("parallel", (False, True), ids=("serial", "parallel"))
def test_a_corrupt_source_file_fails_the_build_and_leaves_no_cache(cache_copy, tmp_path, monkeypatch, parallel):
    if parallel:
        monkeypatch.setattr(cache_module, "MIN_PARALLEL_SECONDS", 0)
    root = cache_copy("raw")
    path = root / "gtFine" / "train" / "arden" / f"{PREFIX}_gtFine_labelIds.png"
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(UserInputError) as raised:
        CityscapesDataset(root, "train", cache=tmp_path / "cache")
    assert str(path) in str(raised.value) and "truncated" in str(raised.value)
    assert finished_folders(tmp_path / "cache") == [] and building_folders(tmp_path / "cache") == []
    assert [entry.suffix for entry in (tmp_path / "cache").iterdir()] == [".lock"]


def test_a_broken_link_is_named_before_anything_is_cached(cache_copy, tmp_path):
    root = cache_copy("nyu")
    depth = root / "train" / "depth" / "0.npy"
    depth.unlink()
    depth.symlink_to(root / "gone.npy")
    with pytest.raises(UserInputError, match="is a broken link") as raised:
        NYUv2Dataset(root, "train", cache=tmp_path / "cache")
    assert str(depth) in str(raised.value) and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("folder, missing", (("depth", "no valid depth pixel"), ("label", "no labelled pixel")))
def test_a_split_without_valid_targets_is_refused(cache_copy, folder, missing):
    root = cache_copy("nyu")
    for path in (root / "train" / folder).glob("*.npy"):
        array = np.load(path)
        np.save(path, np.zeros_like(array) if folder == "depth" else np.full_like(array, -1))
    with pytest.raises(UserInputError) as raised:
        NYUv2Dataset(root, "train")
    message = str(raised.value)
    assert "'train'" in message and str(root / "train" / folder) in message and missing in message
    assert finished_folders(user_cache_dir()) == [] and building_folders(user_cache_dir()) == []


def test_storage_dtypes_are_the_narrowest_that_give_the_values_back():
    assert segmentation_storage(7, 250) == ("uint8", 250)
    assert segmentation_storage(13, -1) == ("uint8", 255)
    assert segmentation_storage(19, 1000) == ("uint8", 255)
    assert segmentation_storage(300, -1) == ("int16", -1)
    assert segmentation_storage(300, 40000) == ("int32", 40000)
    levels = np.arange(256, dtype=np.float32).reshape(16, 16)
    eighths = np.repeat(np.arange(9, dtype=np.float32)[:, None, None] / 8, 3, axis=2)
    assert exact_image_dtypes(np.dstack([levels / np.float32(255)] * 3), ("uint8", "float16")) == ("uint8",)
    assert exact_image_dtypes(eighths, ("uint8", "float16")) == ("float16",)
    assert exact_image_dtypes(np.full((2, 2, 3), 0.1234567, dtype=np.float32), ("uint8", "float16")) == ()


def test_the_default_cache_goes_to_the_user_cache_dir_and_never_into_the_dataset(cache_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = cache_copy("nyu")
    before = sorted(str(path) for path in root.rglob("*"))
    dataset = NYUv2Dataset(root, "train")
    assert dataset.cache_folder.parent == tmp_path / "xdg" / USER_CACHE_FOLDER_NAME
    assert (dataset.cache_folder / MANIFEST_NAME).is_file()
    assert sorted(str(path) for path in root.rglob("*")) == before
    assert_same_samples(dataset, NYUv2Dataset(root, "train", cache=False))


def cached_dataset_report(root, cache_dir, barrier):
    """(pid, cache folder, pid of its builder, samples digest) of the cached NYU train split, opened
    once `barrier` lets this process and the other builder go together."""
    barrier.wait(CHILD_TIMEOUT_SECONDS)
    dataset = NYUv2Dataset(root, "train", cache=cache_dir)
    return os.getpid(), str(dataset.cache_folder), dataset.cache_manifest["built_by_pid"], samples_digest(dataset)


def report_from_child(root, cache_dir, barrier, results):
    """Spawned process: put cached_dataset_report on the `results` queue."""
    results.put(cached_dataset_report(root, cache_dir, barrier))


def test_two_processes_building_at_once_share_one_cache(cache_pristine_roots, tmp_path):
    root, cache_dir = cache_pristine_roots["nyu"], tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    child = context.Process(target=report_from_child, args=(root, cache_dir, barrier, results))
    child.start()
    reports = [cached_dataset_report(root, cache_dir, barrier), results.get(timeout=CHILD_TIMEOUT_SECONDS)]
    child.join(CHILD_TIMEOUT_SECONDS)
    assert child.exitcode == 0
    (parent_pid, parent_folder, parent_builder, parent_digest), (child_pid, child_folder, child_builder,
                                                                 child_digest) = reports
    assert child_pid != parent_pid
    assert parent_folder == child_folder and parent_builder == child_builder in (parent_pid, child_pid)
    assert parent_digest == child_digest == samples_digest(NYUv2Dataset(root, "train", cache=False))
    assert [str(folder) for folder in finished_folders(cache_dir)] == [parent_folder]
    assert building_folders(cache_dir) == []


def test_a_loader_with_two_workers_gives_the_batches_of_the_main_process(cache_pristine_roots, tmp_path):
    dataset = CityscapesDataset(cache_pristine_roots["raw"], "train", num_classes=19, cache=tmp_path)
    in_process = list(DataLoader(dataset, batch_size=2, num_workers=0))
    with_workers = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(in_process) == len(with_workers) == 2
    for one, other in zip(in_process, with_workers):
        for first, second in zip(one, other):
            assert torch.equal(first, second)


def test_a_pickled_dataset_carries_no_arrays(cache_pristine_roots, tmp_path):
    dataset = CityscapesDataset(cache_pristine_roots["raw"], "train", cache=tmp_path)
    first_sample = dataset[0]
    pickled = pickle.dumps(dataset)
    assert len(pickled) < np.load(dataset.cache_folder / "image.npy", mmap_mode="r")[0].nbytes
    copy = pickle.loads(pickled)
    for one, other in zip(copy[0], first_sample):
        assert torch.equal(one, other)


def test_the_profile_passes_the_cache_settings_through(cache_pristine_roots, tmp_path):
    root = cache_pristine_roots["raw"]
    settings = dict(height=32, width=64, num_classes=7, ignore_index=250, augment=False, seed=0)
    uncached = CITYSCAPES.build_dataset(root, "val", cache=False, **settings)
    cached = CITYSCAPES.build_dataset(root, "val", cache=tmp_path, **settings)
    assert uncached.cache_folder is None and cached.cache_folder.parent == tmp_path
    assert_same_samples(cached, uncached)


def flip_one_byte(path, offset_from_end=10):
    """Invert one byte of `path` near its end (inside the array data, past the .npy header)."""
    with open(path, "r+b") as stream:
        stream.seek(-offset_from_end, os.SEEK_END)
        value = stream.read(1)
        stream.seek(-offset_from_end, os.SEEK_END)
        stream.write(bytes([value[0] ^ 0xFF]))


@pytest.mark.parametrize("damage, reason", [
    (lambda folder: flip_one_byte(folder / "depth.npy"), "depth.npy failed its checksum"),
    (lambda folder: flip_one_byte(folder / "image.npy"), "image.npy failed its checksum"),
    (lambda folder: (folder / MANIFEST_NAME).write_text("[1, 2, 3]"), "its manifest does not describe"),
    (lambda folder: (folder / MANIFEST_NAME).write_text(json.dumps(
        {key: value for key, value in json.loads((folder / MANIFEST_NAME).read_text()).items() if key != "checksums"})),
     "its manifest lacks 'checksums'"),
    (lambda folder: (folder / MANIFEST_NAME).write_text(json.dumps(
        {**json.loads((folder / MANIFEST_NAME).read_text()), "dtypes": 7})), "do not have the recorded dtypes"),
])
def test_a_damaged_cache_is_rebuilt_with_a_line_saying_why(cache_pristine_roots, tmp_path, capsys, damage, reason):
    # Issue "Reliability, round two", item 3 (bytes flipped inside an array were used) and item 7's manifest
    # of the wrong shape (AttributeError/KeyError instead of a rebuild).
    root = cache_pristine_roots["raw"]
    first = CityscapesDataset(root, "train", cache=tmp_path)
    manifest = json.loads((first.cache_folder / MANIFEST_NAME).read_text())
    assert set(manifest["checksums"]) == {"image", "segmentation", "depth"}
    damage(first.cache_folder)
    capsys.readouterr()
    rebuilt = CityscapesDataset(root, "train", cache=tmp_path)
    printed = capsys.readouterr().out
    assert f"rebuilding the train cache {first.cache_folder}: " in printed and reason in printed
    assert rebuilt.cache_folder == first.cache_folder
    assert json.loads((rebuilt.cache_folder / MANIFEST_NAME).read_text())["checksums"] == manifest["checksums"]
    assert_same_samples(rebuilt, CityscapesDataset(root, "train", cache=False))
    again = CityscapesDataset(root, "train", cache=tmp_path)
    assert "rebuilding" not in capsys.readouterr().out and again.cache_manifest == rebuilt.cache_manifest
