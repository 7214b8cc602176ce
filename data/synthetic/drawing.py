"""Vectorised drawing helpers for the synthetic scene generators: a depth-buffered canvas, smooth
noise, pixel regions, and the camera-like finish (blur, sensor noise) of a rendered image."""

import cv2
import numpy as np


class Canvas:
    """Colour (float32 [H, W, 3], RGB in [0, 1]), label (int32 [H, W]) and depth (float32 [H, W],
    distance along the optical axis in metres, inf where nothing is drawn) painted together: a
    pixel takes a new surface only where that surface is nearer than what the pixel holds, so
    surfaces occlude far-to-near whatever the drawing order."""

    def __init__(self, height: int, width: int, background_label: int, background_colour: np.ndarray):
        """An empty canvas showing `background_colour` [H, W, 3] or [3] labelled `background_label`."""
        self.height = height
        self.width = width
        self.colour = np.empty((height, width, 3), dtype=np.float32)
        self.colour[...] = background_colour
        self.label = np.full((height, width), background_label, dtype=np.int32)
        self.depth = np.full((height, width), np.inf, dtype=np.float32)

    def paint(self, region: tuple, mask: np.ndarray, depth, label, colour) -> np.ndarray:
        """Paint the pixels of `region` (row slice, column slice) where `mask` (bool, region shape)
        holds and `depth` (metres, scalar or region shape) is nearer than the current surface.
        `label`: scalar or region shape; `colour`: RGB [3] or region shape x 3. Returns the painted
        pixels, bool [region shape]."""
        shape = self.depth[region].shape
        mask = np.broadcast_to(mask, shape)
        depth = np.broadcast_to(np.asarray(depth, dtype=np.float32), shape)
        drawn = mask & (depth < self.depth[region])
        self.depth[region][drawn] = depth[drawn]
        self.label[region][drawn] = np.broadcast_to(label, shape)[drawn]
        self.colour[region][drawn] = np.broadcast_to(np.asarray(colour, dtype=np.float32), shape + (3,))[drawn]
        return drawn


def whole_image(height: int, width: int) -> tuple:
    """The region (row slice, column slice) covering an image of height x width."""
    return slice(0, height), slice(0, width)


def pixel_region(top: float, bottom: float, left: float, right: float, height: int, width: int):
    """The region of whole pixels touching the rectangle [top, bottom] x [left, right] (pixel units,
    pixel centres at +0.5) clipped to the image, or None when it falls outside."""
    row_start, row_stop = max(int(np.floor(top)), 0), min(int(np.ceil(bottom)), height)
    column_start, column_stop = max(int(np.floor(left)), 0), min(int(np.ceil(right)), width)
    if row_start >= row_stop or column_start >= column_stop:
        return None
    return slice(row_start, row_stop), slice(column_start, column_stop)


def pixel_centres(region: tuple) -> tuple:
    """Row coordinates float32 [h, 1] and column coordinates float32 [1, w] of the pixel centres of
    `region`."""
    rows, columns = region
    return (np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + 0.5,
            np.arange(columns.start, columns.stop, dtype=np.float32)[None, :] + 0.5)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Band-limited noise float32 [height, width], roughly in [-1, 1]: random values on a grid of
    `cell`-pixel spacing, bicubically enlarged, plus `octaves - 1` finer layers of halving weight."""
    noise = np.zeros((height, width), dtype=np.float32)
    weight, total = 1.0, 0.0
    for _ in range(octaves):
        grid_height = max(int(np.ceil(height / cell)) + 1, 2)
        grid_width = max(int(np.ceil(width / cell)) + 1, 2)
        grid = rng.uniform(-1, 1, size=(grid_height, grid_width)).astype(np.float32)
        noise += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += weight
        weight, cell = weight / 2, max(cell / 2, 1.0)
    return noise / np.float32(total)


def finish_image(rng: np.random.Generator, colour: np.ndarray, noise_level: float) -> np.ndarray:
    """A rendered colour image [H, W, 3] as a camera would deliver it: slightly blurred, with
    vignetting and Gaussian sensor noise of standard deviation `noise_level`, clipped to [0, 1]."""
    height, width = colour.shape[:2]
    blurred = cv2.GaussianBlur(colour, (3, 3), 0.6)
    rows, columns = pixel_centres(whole_image(height, width))
    radius = ((rows / height - 0.5) ** 2 + (columns / width - 0.5) ** 2) * 2
    vignetted = blurred * (1 - 0.25 * radius)[:, :, None]
    noisy = vignetted + rng.normal(0, noise_level, size=colour.shape).astype(np.float32)
    return np.clip(noisy, 0, 1).astype(np.float32)


def jitter_colour(rng: np.random.Generator, colour: tuple, amount: float) -> np.ndarray:
    """`colour` (RGB in [0, 1]) with each channel moved by up to +-`amount`, clipped to [0, 1]."""
    return np.clip(np.asarray(colour, dtype=np.float32) + rng.uniform(-amount, amount, size=3), 0, 1).astype(np.float32)
