"""The sample pipeline every dataset shares (Cityscapes, NYUv2, ...): read (at the output size), augment
(training), normalise, convert to tensors; class names and plot colours; and the random stream that
drives the augmentation."""

import os

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from data.common import check_ignore_index, check_output_size
from data.transforms import normalise_imagenet, random_augment, to_tensors

SEED_MODULUS = 2 ** 64  # numpy seed sequences take non-negative integers


class MultiTaskDataset(Dataset):
    """Base class: a subclass lists its samples, passes its class names and plot colours, and
    implements `read_sample` (arrays at height x width); this class turns a read sample into
    `(image [3, H, W] float32, segmentation [H, W] int64, depth [1, H, W] float32)`.

    Validity comes from the values: segmentation == ignore_index marks unlabelled pixels, depth == 0
    missing depth. Attributes: `layout`, `num_classes`, `ignore_index`, `class_names` (tuple of C
    names), `class_colours` (tuple of C RGB triples), `palette` (the colours as uint8 [C, 3]),
    `height`, `width`, `augment`, `seed`, `split`, `root`.

    Randomness: with `augment` on, each process draws from its own `numpy.random.Generator`, created
    lazily on first use from (seed, DataLoader worker id + 1 (0 in the main process),
    torch.initial_seed()). Inside a DataLoader worker, torch.initial_seed() is the loader's base seed
    plus the worker id, and the base seed is drawn afresh from the loader's (or the global, seeded
    by --seed) torch generator for every epoch; so the streams differ between workers and between
    epochs, and a run is reproducible from --seed. The generator is re-created whenever the process
    or its torch seed changes, so a copy of a dataset sent to a worker never replays the parent's
    stream. With `augment` off a sample is a pure function of its files.
    """

    layout = ""
    depth_is_disparity = False
    normalise_image = False

    def __init__(self, root, split: str, samples: list, classes: tuple, size: tuple, ignore_index: int,
                 augment: bool, seed: int):
        """samples: one entry per sample, handed to `read_sample`; classes: (names, colours), one name
        and one (r, g, b) colour per class in label order (their number is num_classes); size:
        (height, width) of the output."""
        class_names, class_colours = classes
        if len(class_names) != len(class_colours):
            raise ValueError(f"classes: {len(class_names)} names and {len(class_colours)} colours; expected one "
                             "colour per class name")
        height, width = size
        check_ignore_index(ignore_index, len(class_names))
        check_output_size(height, width)
        self.root = root
        self.split = split
        self.samples = samples
        self.height = height
        self.width = width
        self.num_classes = len(class_names)
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.class_colours = tuple(class_colours)
        self.augment = augment
        self.seed = seed
        self._generator = None
        self._generator_owner = None

    @property
    def palette(self) -> np.ndarray:
        """Plot colours uint8 [C, 3] (RGB), row c for class c (a new array on each access)."""
        return np.array(self.class_colours, dtype=np.uint8)

    def read_sample(self, sample) -> tuple:
        """Read one sample resized to height x width (see resize_sample): image float32 [H, W, 3] in
        [0, 1], segmentation int64 [H, W] (ignore_index where unlabelled), depth float32 [H, W] (0
        where missing)."""
        raise NotImplementedError

    def __len__(self) -> int:
        """Number of samples in the split."""
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple:
        """Sample `index` as (image [3, H, W] float32, segmentation [H, W] int64, depth [1, H, W] float32)."""
        image, segmentation, depth = self.read_sample(self.samples[index])
        if self.augment:
            image, segmentation, depth = random_augment(image, segmentation, depth, self.random_generator(),
                                                        self.depth_is_disparity)
        if self.normalise_image:
            image = normalise_imagenet(image)
        return to_tensors(image, segmentation, depth)

    def random_generator(self) -> np.random.Generator:
        """This process's augmentation generator (see the class docstring for how it is seeded)."""
        worker = get_worker_info()
        owner = (os.getpid(), torch.initial_seed())
        if self._generator is None or self._generator_owner != owner:
            worker_number = 0 if worker is None else worker.id + 1
            self._generator = np.random.default_rng([self.seed % SEED_MODULUS, worker_number, torch.initial_seed()])
            self._generator_owner = owner
        return self._generator
