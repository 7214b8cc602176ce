"""Surface normals from a depth map: at each pixel, the plane fitted by least squares to the 3D points of
the valid pixels in a square window around it (the eigenvector of the smallest eigenvalue of their
covariance), turned towards the camera. They are given in the camera frame of data/nyu.py and
data.synthetic: x towards the image's right, y towards its top, z towards the camera (a wall seen
head-on has normal (0, 0, 1), a floor (0, 1, 0)); all three components are 0 where the normal is
undefined (depth missing at the pixel, fewer than half of its window valid, or collinear points).

A window that straddles a depth edge fits one plane to both surfaces, so normals along object outlines
lean between the two."""

from dataclasses import dataclass

import cv2
import numpy as np

NYU_FRAME_HEIGHT, NYU_FRAME_WIDTH = 480, 640
WINDOW_AT_NYU_WIDTH = 7  # pixels of a 640-pixel-wide frame; scaled with the frame's width, at least 3
MINIMUM_VALID_FRACTION = 0.5
FLATNESS_TOLERANCE = 1e-6  # the middle eigenvalue must exceed this fraction of the largest (points not on a line)


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera in pixels, on 0-based pixel indices: pixel (row r, column c) at depth z is the
    point ((c - centre_column) z / focal_column, (r - centre_row) z / focal_row, z), y pointing down."""

    focal_column: float
    focal_row: float
    centre_column: float
    centre_row: float

    def resized(self, row_scale: float, column_scale: float) -> "Intrinsics":
        """The camera of the frame resized by `row_scale` x `column_scale` (pixel edges scale, so a pixel
        index i moves to (i + 0.5) * scale - 0.5)."""
        return Intrinsics(self.focal_column * column_scale, self.focal_row * row_scale,
                          (self.centre_column + 0.5) * column_scale - 0.5, (self.centre_row + 0.5) * row_scale - 0.5)

    def cropped(self, top: int, left: int) -> "Intrinsics":
        """The camera of the frame cropped to start at row `top`, column `left`."""
        return Intrinsics(self.focal_column, self.focal_row, self.centre_column - left, self.centre_row - top)


# The RGB camera of the NYU Depth v2 toolbox (camera_params.m: fx_rgb, fy_rgb, cx_rgb, cy_rgb), whose
# principal point is in MATLAB's 1-based pixel coordinates, hence the - 1.
NYU_KINECT = Intrinsics(5.1885790117450188e+02, 5.1946961112127485e+02, 3.2558244941119034e+02 - 1,
                        2.5373616633400465e+02 - 1)


def frame_intrinsics(height: int, width: int, top: int = 0, left: int = 0) -> Intrinsics:
    """NYU_KINECT for a height x width frame of the labeled file (resized from 480 x 640 when the file's
    frames have another size), cropped to start at row `top`, column `left`."""
    return NYU_KINECT.resized(height / NYU_FRAME_HEIGHT, width / NYU_FRAME_WIDTH).cropped(top, left)


def normal_window(width: int) -> int:
    """The odd window side, in pixels, for a frame `width` pixels wide (WINDOW_AT_NYU_WIDTH at 640)."""
    side = max(3, round(WINDOW_AT_NYU_WIDTH * width / NYU_FRAME_WIDTH))
    return side if side % 2 else side + 1


def camera_points(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """float64 [H, W, 3]: the 3D point of every pixel (x right, y down, z forward, metres) of depth
    [H, W] in metres; 0 where the depth is 0."""
    height, width = depth.shape
    rows = (np.arange(height, dtype=np.float64)[:, None] - intrinsics.centre_row) / intrinsics.focal_row
    columns = (np.arange(width, dtype=np.float64)[None, :] - intrinsics.centre_column) / intrinsics.focal_column
    depth = depth.astype(np.float64)
    return np.stack((columns * depth, rows * depth, depth), axis=-1)


def window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """The sums of `values` [H, W, C] over the window x window square around each pixel (0 outside)."""
    return cv2.boxFilter(values, -1, (window, window), normalize=False, borderType=cv2.BORDER_CONSTANT)


def symmetric_eigenvalues(matrices: np.ndarray) -> np.ndarray:
    """float64 [N, 3]: the eigenvalues of the symmetric matrices [N, 3, 3], ascending, in closed form
    (the trigonometric solution of the characteristic cubic; np.linalg.eigh takes ten times as long)."""
    mean = np.trace(matrices, axis1=1, axis2=2) / 3
    shifted = matrices - mean[:, None, None] * np.eye(3)
    spread = np.sqrt(np.sum(shifted * shifted, axis=(1, 2)) / 6)
    scale = np.where(spread > 0, spread, 1)
    half_determinant = np.linalg.det(shifted / scale[:, None, None]) / 2
    angle = np.arccos(np.clip(half_determinant, -1, 1)) / 3
    largest = mean + 2 * spread * np.cos(angle)
    smallest = mean + 2 * spread * np.cos(angle + 2 * np.pi / 3)
    return np.stack((smallest, 3 * mean - largest - smallest, largest), axis=1)


def null_vectors(matrices: np.ndarray) -> np.ndarray:
    """float64 [N, 3]: a unit vector v with matrices v = 0 for the rank-2 matrices [N, 3, 3] (the longest
    cross product of two of their rows); 0 where every cross product is 0."""
    rows = matrices
    crosses = np.stack((np.cross(rows[:, 0], rows[:, 1]), np.cross(rows[:, 0], rows[:, 2]),
                        np.cross(rows[:, 1], rows[:, 2])), axis=1)
    lengths = np.linalg.norm(crosses, axis=2)
    longest = np.argmax(lengths, axis=1)
    chosen = crosses[np.arange(len(crosses)), longest]
    length = lengths[np.arange(len(crosses)), longest][:, None]
    return np.where(length > 0, chosen / np.where(length > 0, length, 1), 0)


def normals_from_depth(depth: np.ndarray, intrinsics: Intrinsics, window: int) -> np.ndarray:
    """float32 [H, W, 3] unit normals (x right, y up, z towards the camera) of depth [H, W] in metres (0
    where missing) seen by `intrinsics`, fitted over window x window pixels; 0 where undefined."""
    valid = np.isfinite(depth) & (depth > 0)
    points = camera_points(np.where(valid, depth, 0), intrinsics)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    moments = np.stack((valid.astype(np.float64), x, y, z, x * x, x * y, x * z, y * y, y * z, z * z), axis=-1)
    sums = window_sums(moments, window)
    count = sums[..., 0]
    defined = valid & (count >= MINIMUM_VALID_FRACTION * window * window)
    count, sums = count[defined][:, None], sums[defined]
    mean = sums[:, 1:4] / count
    second = sums[:, (4, 5, 6, 5, 7, 8, 6, 8, 9)].reshape(-1, 3, 3) / count[:, :, None]
    covariance = second - mean[:, :, None] * mean[:, None, :]
    eigenvalues = symmetric_eigenvalues(covariance)
    normal = null_vectors(covariance - eigenvalues[:, 0, None, None] * np.eye(3))
    flat = eigenvalues[:, 1] > FLATNESS_TOLERANCE * eigenvalues[:, 2]
    facing_away = np.sum(normal * points[defined], axis=-1) > 0
    normal = np.where(facing_away[:, None], -normal, normal) * np.array((1.0, -1.0, -1.0))
    result = np.zeros(depth.shape + (3,), dtype=np.float32)
    result[defined] = np.where(flat[:, None], normal, 0)
    return result
