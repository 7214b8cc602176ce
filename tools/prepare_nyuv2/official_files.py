"""Reading the official NYUv2 files: the labeled dataset `nyu_depth_v2_labeled.mat` (MATLAB v7.3, an HDF5
file, read one frame at a time with h5py) and the standard split `splits.mat` (MATLAB v5, read with
scipy). Every problem with them is a UserInputError naming the flag, the file, what was found and what
was expected.

MATLAB stores arrays column-major, so h5py sees every array with its axes reversed: the MATLAB
480 x 640 x 3 x N `images` is [N, 3, 640, 480] here, `depths` and `labels` (480 x 640 x N) are
[N, 640, 480]; one frame is transposed back to rows x columns."""

import importlib
from pathlib import Path

import numpy as np

from tools.prepare_nyuv2.class_tables import LABEL_COUNT
from utils.errors import UserInputError

EXTRA_REQUIREMENTS = "requirements-extra.txt"
MATLAB_V5_HEADER = b"MATLAB 5.0 MAT-file"
IMAGES = "images"
LABELS = "labels"
INPAINTED_DEPTHS = "depths"
RAW_DEPTHS = "rawDepths"
SPLIT_VARIABLES = {"train": "trainNdxs", "val": "testNdxs"}


def required_package(name: str):
    """The module `name` (h5py, scipy.io), or a UserInputError saying which file of requirements to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        package = name.split(".")[0]
        raise UserInputError(f"{package} is not installed; python -m tools.prepare_nyuv2 needs it: "
                             f"pip install -r {EXTRA_REQUIREMENTS}") from None


def check_file(path: Path, flag: str) -> None:
    """Raise UserInputError unless `path` (given as `flag`) is an existing file."""
    if not path.exists():
        raise UserInputError(f"{flag} {path} does not exist")
    if not path.is_file():
        raise UserInputError(f"{flag} {path} is a folder; expected a file")


def file_header(path: Path) -> bytes:
    """The first bytes of the file at `path` (enough to tell a MATLAB v5 file)."""
    with open(path, "rb") as stream:
        return stream.read(len(MATLAB_V5_HEADER))


class LabeledFile:
    """The open labeled dataset: `count` frames of `height` x `width`, read one at a time with `frame`.
    depth_dataset: INPAINTED_DEPTHS (the default, filled in by the dataset's authors) or RAW_DEPTHS (the
    Kinect's depth, 0 where missing). Use as a context manager; opening it checks its arrays."""

    def __init__(self, path: Path, depth_dataset: str = INPAINTED_DEPTHS):
        """Open `path` (--labeled) and check that it holds images, labels and `depth_dataset` of one size."""
        h5py = required_package("h5py")
        self.path = Path(path)
        check_file(self.path, "--labeled")
        if file_header(self.path) == MATLAB_V5_HEADER:
            raise UserInputError(f"--labeled {self.path} is a MATLAB v5 MAT-file; expected the MATLAB v7.3 (HDF5) "
                                 "file nyu_depth_v2_labeled.mat")
        if not h5py.is_hdf5(self.path):
            raise UserInputError(f"--labeled {self.path} is not a MATLAB v7.3 (HDF5) file; expected "
                                 "nyu_depth_v2_labeled.mat")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise UserInputError(f"--labeled {self.path} cannot be opened as HDF5 ({error}); the download may be "
                                 "incomplete: nyu_depth_v2_labeled.mat is about 2.8 GB") from None
        try:
            self.images, self.labels, self.depths = (self.dataset(name) for name in (IMAGES, LABELS, depth_dataset))
            self.count, self.width, self.height = self.checked_shape()
        except BaseException:
            self.file.close()
            raise

    def dataset(self, name: str):
        """The HDF5 dataset `name`; UserInputError listing what the file holds when it has none."""
        found = self.file.get(name)
        if found is None or not hasattr(found, "shape"):
            present = ", ".join(sorted(self.file.keys())) or "nothing"
            raise UserInputError(f"--labeled {self.path} has no dataset {name!r}; found {present}; expected "
                                 f"nyu_depth_v2_labeled.mat with {IMAGES}, {LABELS} and {INPAINTED_DEPTHS} (or "
                                 f"{RAW_DEPTHS} with --raw_depth)")
        return found

    def checked_shape(self) -> tuple:
        """(frames N, width W, height H) when images is [N, 3, W, H] uint8 and labels and depths are
        [N, W, H] (depths floating point); otherwise a UserInputError naming the array."""
        images, labels, depths = self.images, self.labels, self.depths
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise UserInputError(f"--labeled {self.path}: {IMAGES} is {images.dtype} of shape {images.shape}; expected "
                                 "uint8 [N, 3, W, H] (MATLAB's H x W x 3 x N, e.g. [1449, 3, 640, 480])")
        count, _, width, height = images.shape
        for array, kinds in ((labels, "ui"), (depths, "f")):
            if array.shape != (count, width, height) or array.dtype.kind not in kinds:
                expected = "an integer" if kinds == "ui" else "a floating-point"
                raise UserInputError(f"--labeled {self.path}: {array.name.lstrip('/')} is {array.dtype} of shape "
                                     f"{array.shape}; expected {expected} array of shape {(count, width, height)}, "
                                     f"matching {IMAGES}")
        return count, width, height

    def frame(self, index: int) -> tuple:
        """Frame `index` (0-based) as stored: (image uint8 [H, W, 3] RGB, label ids [H, W] (0..894),
        depth float32 [H, W] in metres); label ids past 894 are a UserInputError."""
        image = np.ascontiguousarray(self.images[index].transpose(2, 1, 0))
        labels = np.ascontiguousarray(self.labels[index].T)
        depth = np.ascontiguousarray(self.depths[index].T, dtype=np.float32)
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > LABEL_COUNT):
            raise UserInputError(f"--labeled {self.path}: the labels of image {index + 1} hold ids from {labels.min()} "
                                 f"to {labels.max()}; expected 0 (unlabelled) to {LABEL_COUNT} (the names of "
                                 "classMapping40)")
        return image, labels, depth

    def close(self) -> None:
        """Close the HDF5 file."""
        self.file.close()

    def __enter__(self):
        """The open file."""
        return self

    def __exit__(self, *_):
        """Close the file on leaving the `with` block."""
        self.close()


def read_splits(path: Path, frame_count: int) -> dict:
    """{"train": frame indices, "val": frame indices} (0-based, in the file's order) from the MATLAB v5
    file `path` (--splits) holding trainNdxs and testNdxs (1-based); the indices must lie in
    1..frame_count, each once, no frame in both."""
    scipy_io = required_package("scipy.io")
    check_file(path, "--splits")
    try:
        variables = scipy_io.loadmat(path)
    except NotImplementedError:
        raise UserInputError(f"--splits {path} is a MATLAB v7.3 file; expected splits.mat, a MATLAB v5 file with "
                             "trainNdxs and testNdxs") from None
    except (scipy_io.matlab.MatReadError, ValueError, TypeError, OSError) as error:
        raise UserInputError(f"--splits {path} is not a readable MATLAB file ({error}); expected splits.mat with "
                             "trainNdxs and testNdxs") from None
    splits = {split: split_indices(variables, name, path, frame_count) for split, name in SPLIT_VARIABLES.items()}
    shared = sorted(set(splits["train"]) & set(splits["val"]))
    if shared:
        raise UserInputError(f"--splits {path}: trainNdxs and testNdxs share {len(shared)} images (e.g. "
                             f"{shared[0] + 1}); expected two disjoint lists")
    return splits


def split_indices(variables: dict, name: str, path: Path, frame_count: int) -> list:
    """The 0-based frame indices of the 1-based index vector `name` of the loaded splits file `path`."""
    if name not in variables:
        present = ", ".join(sorted(key for key in variables if not key.startswith("__"))) or "nothing"
        raise UserInputError(f"--splits {path} has no {name}; found {present}; expected trainNdxs and testNdxs")
    values = np.asarray(variables[name])
    if values.dtype.kind not in "uif" or values.size == 0 or values.squeeze().ndim > 1:
        raise UserInputError(f"--splits {path}: {name} is {values.dtype} of shape {values.shape}; expected a "
                             "non-empty vector of 1-based image indices")
    indices = values.ravel()
    if values.dtype.kind == "f" and not (np.isfinite(indices).all() and (indices == np.round(indices)).all()):
        raise UserInputError(f"--splits {path}: {name} holds non-integer values; expected 1-based image indices")
    indices = indices.astype(np.int64)
    outside = indices[(indices < 1) | (indices > frame_count)]
    if outside.size:
        raise UserInputError(f"--splits {path}: {name} holds index {outside[0]}, outside the {frame_count} images "
                             f"of --labeled; expected 1-based indices 1..{frame_count}")
    unique, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise UserInputError(f"--splits {path}: {name} lists image {unique[counts > 1][0]} "
                             f"{counts[counts > 1][0]} times; expected each image once")
    return [int(index) - 1 for index in indices]
