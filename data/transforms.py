"""Per-sample transforms on NumPy arrays (CPU): resizing, ImageNet normalisation, and the training
augmentation (horizontal flip, random scale-crop) that moves image, labels, depth and surface normals
together.

Arrays of one sample: image float32 [H, W, 3], segmentation int64 [H, W] (class ids and an ignore
index), depth float32 [H, W] (metres, or disparity/256 for Cityscapes; 0 marks a missing value) and,
for datasets that read them, normal float32 [H, W, 3] (unit vectors in camera coordinates, x towards
the image's right; all three components 0 mark an invalid pixel). The normal is optional everywhere:
a transform given one returns it as a 4th array, otherwise it returns the three arrays it always did.

The augmentation is drawn (`draw_augmentation`) apart from being applied (`apply_augmentation` here,
or data.device_augment.augment_batch on a whole batch on the device), so both paths use the same
parameters drawn from the same per-sample generator.
"""

from typing import NamedTuple

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLIP_PROBABILITY = 0.5
CROP_SCALES = (1.0, 1.2, 1.5)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """`array` [H, W] or [H, W, C] resized to [height, width] without blending values (labels, depth,
    normals), dtype kept.
    Each target pixel takes the source pixel under its centre (cv2.INTER_NEAREST_EXACT: source column
    floor((x + 0.5) * W / width), e.g. 8x + 4 for 2048 -> 256, as PIL's nearest), so targets stay
    aligned with the INTER_AREA / bilinear image; plain cv2.INTER_NEAREST would take floor(x * W /
    width), half a source step up-left."""
    if array.shape[:2] == (height, width):
        return array
    dtype = array.dtype
    working = np.ascontiguousarray(array, dtype=np.int32 if dtype == np.int64 else dtype)
    return cv2.resize(working, (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(dtype, copy=False)


def valid_normal_mask(normal: np.ndarray) -> np.ndarray:
    """bool [..., H, W]: where the normal [..., H, W, 3] is a vector (not all three components 0)."""
    return np.any(normal != 0, axis=-1)


def renormalised_normals(normal: np.ndarray) -> np.ndarray:
    """Normal float32 [H, W, 3] with every valid vector (not all three components 0) divided by its
    length; invalid pixels stay exactly 0 (a new array)."""
    normal = normal.astype(np.float32)
    length = np.sqrt(np.sum(np.square(normal), axis=-1, keepdims=True))
    valid = valid_normal_mask(normal)[..., None]
    return np.where(valid, normal / np.where(valid, length, np.float32(1)), np.float32(0)).astype(np.float32)


def resize_normals(normal: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normal float32 [H, W, 3] resized to [height, width] with the nearest neighbour of resize_nearest
    (as labels and depth; vectors never blended), then renormalised to unit length (renormalised_normals)."""
    return renormalised_normals(resize_nearest(normal, height, width))


def resize_sample(image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray, height: int,
                  width: int) -> tuple:
    """The sample resized to [height, width]: image with cv2.INTER_AREA, segmentation and depth with
    the centred nearest neighbour of `resize_nearest` (values are never blended)."""
    if image.shape[:2] != (height, width):
        image = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)
    return image, resize_nearest(segmentation, height, width), resize_nearest(depth, height, width)


def flip_normals(normal: np.ndarray) -> np.ndarray:
    """Normal [H, W, 3] mirrored left-right with its x component (channel 0) negated, as a mirror turns
    a surface facing right into one facing left; invalid pixels stay 0."""
    return normal[:, ::-1] * np.array((-1, 1, 1), dtype=normal.dtype)


def horizontal_flip(image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray) -> tuple:
    """The sample mirrored left-right (all three maps; a normal map flips with flip_normals)."""
    return image[:, ::-1], segmentation[:, ::-1], depth[:, ::-1]


def crop_size(height: int, width: int, scale: float) -> tuple:
    """The (height, width) of the crop that a zoom by `scale` enlarges to the full size:
    (int(height / scale), int(width / scale)), truncated as the original's scale-crop does (106 rows at
    scale 1.2 and 128 rows)."""
    return int(height / scale), int(width / scale)


def scale_crop(image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray, scale: float, top: int,
               left: int, depth_is_disparity: bool, *, normal: np.ndarray = None) -> tuple:
    """Zoom in by `scale`: crop crop_size(H, W, scale) at (top, left) and resize it back to H x W
    (image bilinear; segmentation, depth and normal [H, W, 3] nearest with pixel centres aligned to the
    bilinear image, see resize_nearest). Things come closer by the factor `scale`: disparity is
    multiplied by it, metric depth divided by it; missing values (0) stay 0. Normals are directions:
    copied unchanged (unit vectors stay unit, invalid stay 0), returned 4th when given."""
    height, width = segmentation.shape
    crop_height, crop_width = crop_size(height, width, scale)
    rows, columns = slice(top, top + crop_height), slice(left, left + crop_width)
    image = cv2.resize(np.ascontiguousarray(image[rows, columns]), (width, height), interpolation=cv2.INTER_LINEAR)
    segmentation = resize_nearest(segmentation[rows, columns], height, width)
    depth = resize_nearest(depth[rows, columns], height, width)
    depth = depth * np.float32(scale) if depth_is_disparity else depth / np.float32(scale)
    if normal is None:
        return image, segmentation, depth
    return image, segmentation, depth, resize_nearest(normal[rows, columns], height, width)


class Augmentation(NamedTuple):
    """The drawn augmentation of one sample: mirror left-right first when `flip`, then zoom in by
    `scale` (one of CROP_SCALES) on the crop crop_size(H, W, scale) whose top-left pixel is (top, left)
    in the (flipped) sample."""

    flip: bool
    scale: float
    top: int
    left: int

    def as_tensor(self) -> torch.Tensor:
        """The parameters as float32 [4]: (flip 0 or 1, scale, top, left); exact (pixel offsets < 2^24)."""
        return torch.tensor([float(self.flip), self.scale, self.top, self.left], dtype=torch.float32)


def draw_augmentation(generator: np.random.Generator, height: int, width: int) -> Augmentation:
    """The training augmentation of a height x width sample drawn from `generator`: a horizontal
    flip with probability 0.5, then a scale from CROP_SCALES and a uniformly drawn crop position.
    Consumes, in this order, one generator.random(), one generator.choice and two generator.integers."""
    flip = bool(generator.random() < FLIP_PROBABILITY)
    scale = float(generator.choice(CROP_SCALES))
    crop_height, crop_width = crop_size(height, width, scale)
    top = int(generator.integers(0, height - crop_height + 1))
    left = int(generator.integers(0, width - crop_width + 1))
    return Augmentation(flip, scale, top, left)


def apply_augmentation(image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray, augmentation: Augmentation,
                       depth_is_disparity: bool, *, normal: np.ndarray = None) -> tuple:
    """The sample (image [H, W, 3], segmentation [H, W], depth [H, W], and normal [H, W, 3] when given,
    then returned 4th) flipped when augmentation.flip, then scale-cropped (see scale_crop) at
    augmentation.scale, .top, .left."""
    if augmentation.flip:
        if normal is not None:
            normal = flip_normals(normal)
        image, segmentation, depth = horizontal_flip(image, segmentation, depth)
    return scale_crop(image, segmentation, depth, augmentation.scale, augmentation.top, augmentation.left,
                      depth_is_disparity, normal=normal)


def random_augment(image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray, generator: np.random.Generator,
                   depth_is_disparity: bool, *, normal: np.ndarray = None) -> tuple:
    """Training augmentation drawn from `generator` (draw_augmentation) and applied (apply_augmentation):
    a horizontal flip with probability 0.5, then a scale-crop with the scale drawn from CROP_SCALES at a
    uniformly drawn position; the normal [H, W, 3] moves with the maps and is returned 4th when given."""
    height, width = segmentation.shape
    augmentation = draw_augmentation(generator, height, width)
    return apply_augmentation(image, segmentation, depth, augmentation, depth_is_disparity, normal=normal)


def image_as_float(image: np.ndarray) -> np.ndarray:
    """Image [H, W, 3] as a new float32 array in [0, 1]: uint8 values (0..255) divided by 255, float
    values (float16, float32, float64) converted to float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    return np.array(image, dtype=np.float32)


def normalise_imagenet(image: np.ndarray) -> np.ndarray:
    """Image float32 [H, W, 3] in [0, 1] standardised with the ImageNet channel mean and std."""
    return (image - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)


def to_tensors(image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray, normal: np.ndarray = None) -> tuple:
    """The sample as tensors: image float32 [3, H, W], segmentation int64 [H, W], depth float32 [1, H, W],
    and normal float32 [3, H, W] 4th when given (normal [H, W, 3])."""
    tensors = (
        torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(segmentation, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(depth[None], dtype=np.float32)),
    )
    if normal is None:
        return tensors
    return tensors + (torch.from_numpy(np.ascontiguousarray(normal.transpose(2, 0, 1), dtype=np.float32)),)
