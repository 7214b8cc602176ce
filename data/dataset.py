"""The sample pipeline every dataset shares (Cityscapes, NYUv2, ...): read (at the output size, from the
files or from the split's preprocessed cache), augment (training; or defer the augmentation to the device),
normalise, convert to tensors; class names and plot colours; the tasks whose targets a sample carries;
and the random stream that drives the augmentation."""

import hashlib
import json
import os

import numpy as np
from torch.utils.data import DataLoader, Dataset

from data.cache import (cached_sample, find_or_build_cache, open_cache_arrays, refuse_split_without_targets,
                        source_files)
from data.common import check_ignore_index, check_output_size
from data.transforms import (draw_augmentation, image_as_float, normalise_imagenet, random_augment, to_tensors,
                             valid_normal_mask)
from utils.errors import UserInputError

SEED_MODULUS = 2 ** 64  # numpy seed sequences take non-negative integers
NORMAL_TASK = "normal"
DEFAULT_TASKS = ("segmentation", "depth")
TASKS_WITH_NORMALS = DEFAULT_TASKS + (NORMAL_TASK,)


class SampleTargetCounts(Dataset):
    """A split's samples as (valid label pixels, valid depth pixels, valid normal pixels) counts, each
    read from its files (normal pixels 0 when the dataset reads no normals)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        """Number of samples in the split."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        """(pixels with a class id, pixels with depth > 0, pixels with a normal vector) of sample `index`,
        read and checked."""
        sample = self.dataset.read_sample(self.dataset.samples[index])
        segmentation, depth = sample[1], sample[2]
        normal_pixels = int(valid_normal_mask(sample[3]).sum()) if self.dataset.reads_normals else 0
        return int((segmentation != self.dataset.ignore_index).sum()), int((depth > 0).sum()), normal_pixels


class MultiTaskDataset(Dataset):
    """Base class: a subclass lists its samples, passes its class names and plot colours, and
    implements `read_sample` (arrays at height x width); this class turns a read sample into
    `(image [3, H, W] float32, segmentation [H, W] int64, depth [1, H, W] float32)`, with
    `normal [3, H, W] float32` appended when `tasks` holds "normal" (unit vectors, x towards the image's
    right; exactly 0 where invalid).

    Tasks: `tasks` names the targets that every sample carries, in sample order after the image:
    DEFAULT_TASKS ("segmentation", "depth") or TASKS_WITH_NORMALS (+ "normal"), one of the subclass's
    `task_sets`; `reads_normals` says whether the normal is there.

    Cache: after `use_cache()` (the subclasses call it unless built with cache=False) samples come
    from the split's preprocessed cache (data.cache), built on first use by reading every sample once
    with `read_sample`; `load_sample` gives the same arrays either way, so augmentation and the
    returned tensors are identical. `cache_folder` is the cache's folder (None: files read directly).
    The memory maps are opened lazily in each process and left out of the pickled state, so a dataset
    sent to DataLoader workers carries no array data and no open file.

    Validity comes from the values: segmentation == ignore_index marks unlabelled pixels, depth == 0
    missing depth, a normal with all three components 0 an invalid normal. Attributes: `layout`,
    `num_classes`, `ignore_index`, `class_names` (tuple of C names), `class_colours` (tuple of C RGB
    triples), `palette` (the colours as uint8 [C, 3]), `height`, `width`, `augment`, `seed`, `split`,
    `root`, `tasks`.

    Randomness: with `augment` on, sample `index` of epoch `epoch` is augmented by its own
    `numpy.random.Generator` seeded with (seed, epoch, index). Nothing random is carried from one sample
    to the next, so the augmentation is the same whatever the number of DataLoader workers (or
    processes), differs between samples and between epochs, and a resumed run continues exactly: the
    training loop calls `set_epoch(epoch)` before each epoch (the loader starts its workers per
    epoch, so they get the epoch). With `augment` off a sample is a pure function of its files.

    Deferred augmentation: after `defer_augmentation()` a sample is returned unaugmented together with
    the augmentation drawn for it (`augmentation_deferred` is then True; it survives pickling to workers).
    """

    layout = ""
    depth_is_disparity = False
    normalise_image = False
    task_sets = (DEFAULT_TASKS,)

    def __init__(self, root, split: str, samples: list, classes: tuple, size: tuple, ignore_index: int,
                 augment: bool, seed: int, *, tasks: tuple = DEFAULT_TASKS):
        """samples: one tuple of file paths per sample (image, label, depth, and normal when `tasks` holds
        "normal"), handed to `read_sample` (the cache's key records those files' names, sizes and mtimes);
        classes: (names, colours), one name and one (r, g, b) colour per class in label order (their number
        is num_classes); size: (height, width) of the output; tasks: one of the class's `task_sets`."""
        tasks = self.checked_tasks(tasks)
        class_names, class_colours = classes
        if len(class_names) != len(class_colours):
            raise ValueError(f"classes: {len(class_names)} names and {len(class_colours)} colours; expected one "
                             "colour per class name")
        height, width = size
        check_ignore_index(ignore_index, len(class_names))
        check_output_size(height, width)
        self.root = root
        self.split = split
        self.tasks = tasks
        self.samples = samples
        self.height = height
        self.width = width
        self.num_classes = len(class_names)
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.class_colours = tuple(class_colours)
        self.augment = augment
        self.seed = seed
        self.epoch = 1
        self.augmentation_deferred = False
        self.cache_folder = None
        self.cache_manifest = None
        self._cached_arrays = None
        self._cached_arrays_pid = None

    @property
    def palette(self) -> np.ndarray:
        """Plot colours uint8 [C, 3] (RGB), row c for class c (a new array on each access)."""
        return np.array(self.class_colours, dtype=np.uint8)

    @classmethod
    def checked_tasks(cls, tasks) -> tuple:
        """`tasks` (names) as a tuple when it is one of the class's `task_sets`; otherwise a UserInputError
        naming them and the sets the class reads."""
        tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        if tasks not in cls.task_sets:
            available = "; ".join("(" + ", ".join(task_set) + ")" for task_set in cls.task_sets)
            raise UserInputError(f"tasks ({', '.join(tasks)}) are not available for {cls.__name__}; expected one "
                                 f"of {available}")
        return tasks

    @property
    def reads_normals(self) -> bool:
        """Whether samples carry the normal target (tasks holds "normal")."""
        return NORMAL_TASK in self.tasks

    def read_sample(self, sample) -> tuple:
        """Read and check one sample's files, resized to height x width (see resize_sample): image
        float32 [H, W, 3] in [0, 1] or uint8 [H, W, 3] (255 x those values; load_sample divides),
        segmentation int64 [H, W] (ignore_index where unlabelled), depth float32 [H, W] (0 where
        missing), and when `reads_normals` normal float32 [H, W, 3] (unit vectors, 0 where invalid).
        Bad files raise a UserInputError naming them."""
        raise NotImplementedError

    def use_cache(self, cache_dir=None, progress: bool = True):
        """Read samples from the split's preprocessed cache from now on, building it first when there is
        none for these settings and files (every sample read and checked once, in parallel, with a
        progress bar unless `progress` is False). cache_dir: None for data.cache.default_cache_dir.
        Returns the cache folder (a Path)."""
        self.cache_folder, self.cache_manifest = find_or_build_cache(self, cache_dir, progress)
        self._cached_arrays = None
        return self.cache_folder

    def check_every_sample(self, workers: int = 0) -> None:
        """Read every sample's files once (in `workers` processes), so that a bad file, or a split without
        any labelled, any valid depth or (when it reads normals) any valid normal pixel, raises its
        UserInputError now rather than during training (building the cache does the same; this is for
        datasets read without it)."""
        valid_label_pixels = valid_depth_pixels = valid_normal_pixels = 0
        for label_pixels, depth_pixels, normal_pixels in DataLoader(SampleTargetCounts(self), batch_size=None,
                                                                    num_workers=workers):
            valid_label_pixels += label_pixels
            valid_depth_pixels += depth_pixels
            valid_normal_pixels += normal_pixels
        refuse_split_without_targets(self, valid_label_pixels, valid_depth_pixels, valid_normal_pixels)

    def load_sample(self, index: int) -> tuple:
        """Sample `index` before augmentation, from the cache when on, else from its files: image
        float32 [H, W, 3] in [0, 1], segmentation int64 [H, W], depth float32 [H, W], and normal float32
        [H, W, 3] when `reads_normals` (new arrays)."""
        if self.cache_folder is None:
            sample = self.read_sample(self.samples[index])
            return (image_as_float(sample[0]),) + tuple(sample[1:])
        if self._cached_arrays is None or self._cached_arrays_pid != os.getpid():
            self._cached_arrays = open_cache_arrays(self.cache_folder, self.cache_manifest["key"])
            self._cached_arrays_pid = os.getpid()
        return cached_sample(self._cached_arrays, self.cache_manifest, index)

    def identity(self) -> dict:
        """What names this split's data wherever its folder lies: {"layout", "samples" (count), "files"
        (SHA-256 of every source file's path relative to the root and its size)}. Modification times are
        left out, so a moved or copied dataset keeps its identity."""
        entries = [[name, size] for name, size, _ in source_files(self.root, self.samples)]
        digest = hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()
        return {"layout": self.layout, "samples": len(self.samples), "files": digest}

    def __getstate__(self) -> dict:
        """The pickled state: everything but this process's memory maps of the cache."""
        state = self.__dict__.copy()
        state["_cached_arrays"] = None
        return state

    def __len__(self) -> int:
        """Number of samples in the split."""
        return len(self.samples)

    def defer_augmentation(self) -> None:
        """From now on return each sample unaugmented, with the augmentation drawn for it appended:
        (image [3, H, W] float32, segmentation [H, W] int64, depth [1, H, W] float32, [normal [3, H, W]
        float32 when `reads_normals`,] augmentation float32 [4] = (flip 0/1, scale, top, left)), the
        parameters that the CPU path would apply (same generator, same draws; see
        data.transforms.Augmentation). The DataLoader's default collate stacks them to [N, 4] for
        data.device_augment.augment_batch (the normals, [N, 3, H, W], go to its `normal` keyword). The
        ImageNet normalisation of
        `normalise_image` datasets then comes before the augmentation instead of after it: a per-channel
        affine map commutes with the flip, the crop, the nearest and the bilinear resampling (whose two
        weights per axis sum to 1), so the result equals the CPU path's up to float rounding (< 1e-5).
        Raises ValueError when the dataset does not augment (augment=False)."""
        if not self.augment:
            raise ValueError("defer_augmentation: this dataset does not augment (augment=False)")
        self.augmentation_deferred = True

    def __getitem__(self, index: int) -> tuple:
        """Sample `index` as (image [3, H, W] float32, segmentation [H, W] int64, depth [1, H, W] float32,
        [normal [3, H, W] float32 when `reads_normals`]), augmented when `augment` is on; after
        defer_augmentation() unaugmented, with its drawn augmentation float32 [4] appended (see
        defer_augmentation)."""
        sample = self.load_sample(index)
        if self.augmentation_deferred:
            height, width = sample[1].shape
            augmentation = draw_augmentation(self.random_generator(index), height, width)
            return self.normalised_tensors(*sample) + (augmentation.as_tensor(),)
        if self.augment:
            image, segmentation, depth = sample[:3]
            sample = random_augment(image, segmentation, depth, self.random_generator(index), self.depth_is_disparity,
                                    normal=sample[3] if self.reads_normals else None)
        return self.normalised_tensors(*sample)

    def normalised_tensors(self, image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray,
                           normal: np.ndarray = None) -> tuple:
        """The arrays as (image [3, H, W] float32, ImageNet-normalised when `normalise_image`,
        segmentation [H, W] int64, depth [1, H, W] float32, and normal [3, H, W] float32 when given)."""
        if self.normalise_image:
            image = normalise_imagenet(image)
        return to_tensors(image, segmentation, depth, normal)

    def set_epoch(self, epoch: int) -> None:
        """Make the augmentation of the following samples that of epoch `epoch` (1-based)."""
        self.epoch = epoch

    def random_generator(self, index: int) -> np.random.Generator:
        """The augmentation generator of sample `index` in the current epoch."""
        return np.random.default_rng([self.seed % SEED_MODULUS, self.epoch, index])
