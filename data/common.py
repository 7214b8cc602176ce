"""Reading dataset files (PNG and .npy) and checking what they hold; every problem becomes a
UserInputError that names the file, what was found and what was expected."""

from pathlib import Path

import cv2
import numpy as np

from data.layouts import check_not_broken_link
from data.transforms import resize_normals, resize_sample
from utils.errors import UserInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END_CHUNK_TYPE = b"IEND"
NPY_MAGIC = b"\x93NUMPY"
NUMERIC_DTYPE_KINDS = "biuf"
IMAGE_RANGE_TOLERANCE = 1e-3


def read_png(path: Path) -> np.ndarray:
    """Decode a PNG file as stored (bit depth and channels unchanged; colour channels in OpenCV's
    BGR order). A missing, truncated or undecodable file is a UserInputError."""
    check_not_broken_link(Path(path))
    try:
        encoded = Path(path).read_bytes()
    except OSError as error:
        raise UserInputError(f"cannot read {path}: {error.strerror}") from None
    if not encoded.startswith(PNG_SIGNATURE):
        raise UserInputError(f"{path} is not a PNG file (it does not start with the PNG signature)")
    if encoded[-8:-4] != PNG_END_CHUNK_TYPE:
        raise UserInputError(f"{path} is truncated: the PNG file does not end with its IEND chunk")
    decoded = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise UserInputError(f"{path} is a damaged PNG file: OpenCV cannot decode it")
    return decoded


def read_npy(path: Path, header_only: bool = False) -> np.ndarray:
    """Load a numeric array from a .npy file (memory-mapped without reading the data when
    `header_only`, to learn its shape). A missing, truncated or non-numeric file is a UserInputError."""
    check_not_broken_link(Path(path))
    try:
        with open(path, "rb") as file:
            magic = file.read(len(NPY_MAGIC))
    except OSError as error:
        raise UserInputError(f"cannot read {path}: {error.strerror}") from None
    if magic != NPY_MAGIC:
        raise UserInputError(f"{path} is not a NumPy .npy file (it does not start with the .npy magic string)")
    try:
        array = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        reason = "it holds Python objects, not numbers" if "allow_pickle" in str(error) else str(error)
        raise UserInputError(f"cannot read {path} as a NumPy .npy array: {reason}") from None
    if array.dtype.kind not in NUMERIC_DTYPE_KINDS:
        raise UserInputError(f"{path} holds an array of dtype {array.dtype}; expected a numeric array")
    return array


def as_map(array: np.ndarray, path: Path, description: str, channels: int) -> np.ndarray:
    """`array` as H x W (channels 1; a trailing axis of size 1 is dropped) or H x W x channels;
    any other shape is a UserInputError naming `path`."""
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        expected = "H x W" + (" (or H x W x 1)" if channels == 1 else f" x {channels}")
        raise UserInputError(f"{path} holds a {description} of shape {tuple(array.shape)}; expected {expected}")
    return array


def check_same_size(named_maps: tuple) -> None:
    """Raise UserInputError unless all (path, array) pairs of one sample share height and width."""
    sizes = {tuple(array.shape[:2]) for _, array in named_maps}
    if len(sizes) > 1:
        found = "; ".join(f"{path}: {array.shape[0]} x {array.shape[1]}" for path, array in named_maps)
        raise UserInputError(f"the files of one sample disagree in size ({found}); expected one height x width")


def check_image_values(image: np.ndarray, path: Path) -> None:
    """Raise UserInputError unless the image is a number array (not bool) of finite values in [0, 1]."""
    if image.dtype == np.bool_:
        raise UserInputError(f"{path} holds a bool image; expected float values in [0, 1] (the MTAN release "
                             "stores float32)")
    if not np.isfinite(image).all():
        raise UserInputError(f"{path} holds NaN or infinite image values; expected values in [0, 1]")
    low, high = float(image.min()), float(image.max())
    if low < -IMAGE_RANGE_TOLERANCE or high > 1 + IMAGE_RANGE_TOLERANCE:
        raise UserInputError(f"{path} holds image values in [{low:g}, {high:g}]; expected values in [0, 1]")


def check_label_values(label: np.ndarray, path: Path, low: int, high: int, meaning: str) -> None:
    """Raise UserInputError unless every label value is an integer in [low, high]; `meaning` says
    what the allowed values are, for the message."""
    if label.dtype.kind == "f" and not (np.isfinite(label).all() and (label == np.round(label)).all()):
        raise UserInputError(f"{path} holds non-integer label values; expected {meaning}")
    unexpected = np.unique(label[(label < low) | (label > high)])
    if unexpected.size:
        shown = ", ".join(f"{value:g}" for value in unexpected[:10].astype(np.float64))
        raise UserInputError(f"{path} holds label values outside the known ids ({shown}); expected {meaning}")


def check_depth_values(depth: np.ndarray, path: Path, units: str) -> None:
    """Raise UserInputError unless the depth map is finite and non-negative (0 marks a missing value)."""
    if not np.isfinite(depth).all():
        raise UserInputError(f"{path} holds NaN or infinite depth values; expected finite {units}, 0 where missing")
    if float(depth.min()) < 0:
        raise UserInputError(f"{path} holds negative depth values (down to {float(depth.min()):g}); expected "
                             f"{units} >= 0, 0 where missing")


def check_normal_values(normal: np.ndarray, path: Path) -> None:
    """Raise UserInputError unless the normal map [H, W, 3] holds finite floats (unit vectors, all three
    components 0 where invalid; their length is not checked: reading renormalises them)."""
    expected = "finite float unit vectors, all three components 0 where invalid"
    if normal.dtype.kind != "f":
        raise UserInputError(f"{path} holds a normal map of dtype {normal.dtype}; expected {expected} (the MTAN "
                             "release stores float32)")
    if not np.isfinite(normal).all():
        raise UserInputError(f"{path} holds NaN or infinite normal values; expected {expected}")


def read_npy_sample(paths: tuple, num_classes: int, ignore_index: int, depth_units: str, height: int,
                    width: int) -> tuple:
    """Read one MTAN sample from its (image, label, depth) or (image, label, depth, normal) .npy paths,
    check it and resize it to height x width (image INTER_AREA; label, depth and normal centred nearest
    neighbour, INTER_NEAREST_EXACT).

    Returns image float32 [H, W, 3] in [0, 1], segmentation int64 [H, W] with classes 0..C-1 and
    `ignore_index` where the file holds -1, depth float32 [H, W] in `depth_units` (0 missing), and with
    a normal path normal float32 [H, W, 3] 4th: unit vectors (renormalised after the resize, see
    data.transforms.resize_normals), exactly 0 where the file holds all three components 0 (invalid).
    """
    image_path, label_path, depth_path = paths[:3]
    image = as_map(read_npy(image_path), image_path, "image", 3)
    label = as_map(read_npy(label_path), label_path, "label map", 1)
    depth = as_map(read_npy(depth_path), depth_path, "depth map", 1)
    named_maps = ((image_path, image), (label_path, label), (depth_path, depth))
    if len(paths) == 4:
        normal_path = paths[3]
        normal = as_map(read_npy(normal_path), normal_path, "normal map", 3)
        named_maps += ((normal_path, normal),)
    check_same_size(named_maps)
    check_image_values(image, image_path)
    check_label_values(label, label_path, -1, num_classes - 1,
                       f"class ids 0..{num_classes - 1} and -1 for unlabelled pixels")
    check_depth_values(depth, depth_path, depth_units)
    if len(paths) == 4:
        check_normal_values(normal, normal_path)
    segmentation = label.astype(np.int64)
    segmentation[segmentation == -1] = ignore_index
    sample = resize_sample(image.astype(np.float32), segmentation, depth.astype(np.float32), height, width)
    if len(paths) == 3:
        return sample
    return sample + (resize_normals(normal.astype(np.float32), height, width),)


def check_ignore_index(ignore_index: int, num_classes: int) -> None:
    """Raise UserInputError when the ignore index is one of the class ids 0..num_classes-1."""
    if 0 <= ignore_index < num_classes:
        raise UserInputError(f"--ignore_index {ignore_index} is a class id of the {num_classes} classes; "
                             f"expected a value outside 0..{num_classes - 1} (e.g. 250 or -1)")


def check_output_size(height: int, width: int) -> None:
    """Raise UserInputError unless the requested sample size is positive."""
    if height < 1 or width < 1:
        raise UserInputError(f"--height {height} --width {width}: expected a positive height and width in pixels")
