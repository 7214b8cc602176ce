"""Figures of a training run written to PNG files: loss curves, a grid of validation predictions and
depth error against ground-truth depth.

Figures are built with the object-oriented API (``Figure`` + ``FigureCanvasAgg``), so saving needs no
display and never touches pyplot's global state. Every PNG is written atomically
(``utils.files.atomic_write``: a temporary file in the same folder, then moved onto ``path``; a resume
removes the one a killed write leaves). ``show_figures`` (for ``--show``)
opens saved PNGs in pyplot windows and is the only function that imports pyplot.
"""

import math
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from utils.files import atomic_write

SEGMENTATION_COLUMNS = (
    ("segmentation_target", "segmentation\nground truth"),
    ("segmentation", "segmentation\ndirect"),
    ("transferred_segmentation", "segmentation\ntransferred"),
)
DEPTH_COLUMNS = (
    ("depth_target", "depth\nground truth"),
    ("depth", "depth\ndirect"),
    ("transferred_depth", "depth\ntransferred"),
)
DEPTH_COLORMAP = "viridis"
DEPTH_DISPLAY_PERCENTILES = (2.0, 98.0)  # of the valid ground truth of a row: its colour scale
GRID_CELL_WIDTH_INCHES = 2.0
GRID_TITLE_HEIGHT_INCHES = 0.45
SAVE_DPI = 100
COUNT_BAR_COLOUR = "0.85"
MISSING_CELL_NOTE = "not computed\n(no transfer nets)"


def save_figure(figure: Figure, path) -> None:
    """Write `figure` as a PNG to `path` atomically (utils.files.atomic_write: the temporary file that a
    killed write leaves is one a resume removes)."""
    canvas = FigureCanvasAgg(figure)
    try:
        atomic_write(path, lambda stream: canvas.print_figure(stream, format="png", dpi=SAVE_DPI))
    finally:
        figure.clear()


def read_png_rgb(path) -> np.ndarray:
    """A PNG written by `save_figure` as an RGB uint8 array [H, W, 3]."""
    from matplotlib.image import imread
    image = imread(os.fspath(path))
    return (np.clip(image[:, :, :3], 0.0, 1.0) * 255).round().astype(np.uint8)


def show_figures(paths) -> None:
    """Open saved PNG files in pyplot windows, one per file, and block until they are closed."""
    from matplotlib import pyplot

    for path in paths:
        pixels = pyplot.imread(path)
        height, width = pixels.shape[:2]
        figure = pyplot.figure(num=os.path.basename(path), figsize=(width / SAVE_DPI, height / SAVE_DPI),
                               dpi=SAVE_DPI)
        axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
        axes.imshow(pixels)
        axes.set_axis_off()
    pyplot.show()


def colorize_segmentation(labels: np.ndarray, palette: np.ndarray, ignore_index: int) -> np.ndarray:
    """Colour image uint8 [H, W, 3] of a label map int [H, W] through `palette` uint8 [C, 3];
    `ignore_index` and labels outside 0..C-1 are black."""
    labels = np.asarray(labels)
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ValueError(f"palette must be uint8 [C, 3], got {palette.dtype} {palette.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    coloured = (labels >= 0) & (labels < len(palette)) & (labels != ignore_index)
    image = np.zeros(labels.shape + (3,), dtype=np.uint8)
    image[coloured] = palette[labels[coloured]]
    return image


def loss_series(history, key: str):
    """(epochs, values) of `key` over the per-epoch dicts of `history`; epochs where it is missing,
    None or not finite are skipped."""
    epochs, values = [], []
    for entry in history:
        value = entry.get(key)
        if value is not None and math.isfinite(float(value)):
            epochs.append(entry["epoch"])
            values.append(float(value))
    return epochs, values


def plot_loss_curves(history, path, components) -> None:
    """Total loss and each recorded loss component (names in `components`; history keys train_{name}
    and val_{name}), train vs val, against epoch (one panel each) from a list of per-epoch dicts; saved
    as a PNG to `path`."""
    recorded_components = [component for component in components
                           if any(f"train_{component}" in entry or f"val_{component}" in entry
                                  for entry in history)]
    panels = [("total loss", "train_loss", "val_loss")] + [
        (f"{component.replace('_', ' ')} loss", f"train_{component}", f"val_{component}")
        for component in recorded_components]
    component_rows = math.ceil(len(recorded_components) / 2)
    figure = Figure(figsize=(10.0, 3.0 * (1 + component_rows)), layout="constrained")
    grid = figure.add_gridspec(1 + component_rows, 2)
    panel_axes = [figure.add_subplot(grid[0, :])]
    for component_number in range(len(recorded_components)):
        row, column = divmod(component_number, 2)
        panel_axes.append(figure.add_subplot(grid[1 + row, column]))

    all_epochs = [entry["epoch"] for entry in history]
    for axes, (title, train_key, val_key) in zip(panel_axes, panels):
        if all_epochs:
            axes.set_xlim(min(all_epochs) - 0.5, max(all_epochs) + 0.5)
        plotted_values = []
        for key, label, style in ((train_key, "train", "-"), (val_key, "val", "--")):
            epochs, values = loss_series(history, key)
            if values:
                axes.plot(epochs, values, style, marker="o", markersize=3, label=label)
                plotted_values.extend(values)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, which="both", alpha=0.3)
        if not plotted_values:
            axes.text(0.5, 0.5, "no values recorded", transform=axes.transAxes, ha="center", va="center")
            continue
        axes.legend()
        if min(plotted_values) > 0:
            axes.set_yscale("log")
    save_figure(figure, path)


def depth_display_range(row) -> tuple:
    """(vmin, vmax) colour scale of a prediction grid row, in depth units: percentiles of its valid
    ground truth, else of its finite direct prediction, else (0, 1)."""
    target = np.asarray(row["depth_target"], dtype=np.float64)
    reference = target[np.isfinite(target) & (target > 0)]
    if reference.size == 0:
        prediction = np.asarray(row["depth"], dtype=np.float64)
        reference = prediction[np.isfinite(prediction)]
    if reference.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(reference, DEPTH_DISPLAY_PERCENTILES)
    if high <= low:
        return float(low) - 0.5, float(high) + 0.5
    return float(low), float(high)


def blank_cell(axes, note: str, height_to_width: float) -> None:
    """Leave a grid cell empty except for a centred `note`, with a thin frame of the images' shape."""
    axes.set_box_aspect(height_to_width)
    axes.text(0.5, 0.5, note, transform=axes.transAxes, ha="center", va="center", fontsize=8, color="0.4")
    for spine in axes.spines.values():
        spine.set_color("0.8")


def plot_prediction_grid(rows, path, palette: np.ndarray, ignore_index: int, depth_label: str) -> None:
    """Grid of validation samples, one per row: image, segmentation (ground truth, direct, transferred)
    and depth (ground truth, direct, transferred, one colour scale per row); saved as a PNG to `path`.

    Each row is a dict of numpy arrays: `image` float [H, W, 3] in [0, 1]; `segmentation_target`,
    `segmentation`, `transferred_segmentation` int [H, W] (class ids, ignore_index where unlabelled);
    `depth_target`, `depth`, `transferred_depth` float [H, W] in `depth_label` units (target 0 =
    invalid, drawn black). The transferred arrays may be None (run without transfer nets).
    """
    if not rows:
        raise ValueError("plot_prediction_grid needs at least one row")
    image_height, image_width = np.asarray(rows[0]["image"]).shape[:2]
    cell_height = GRID_CELL_WIDTH_INCHES * image_height / image_width
    column_count = 1 + len(SEGMENTATION_COLUMNS) + len(DEPTH_COLUMNS)
    figure = Figure(figsize=(GRID_CELL_WIDTH_INCHES * column_count + 1.0,
                             (cell_height + GRID_TITLE_HEIGHT_INCHES) * len(rows) + 0.3),
                    layout="constrained")
    axes_grid = figure.subplots(len(rows), column_count, squeeze=False)
    depth_colormap = colormaps[DEPTH_COLORMAP].with_extremes(bad="black")

    for row_number, (row, axes_row) in enumerate(zip(rows, axes_grid)):
        image_axes, segmentation_axes, depth_axes = axes_row[0], axes_row[1:4], axes_row[4:]
        image_axes.imshow(np.clip(np.asarray(row["image"], dtype=np.float64), 0.0, 1.0))
        image_axes.set_ylabel(f"sample {row_number}")
        for axes, (key, _title) in zip(segmentation_axes, SEGMENTATION_COLUMNS):
            if row[key] is None:
                blank_cell(axes, MISSING_CELL_NOTE, image_height / image_width)
            else:
                axes.imshow(colorize_segmentation(row[key], palette, ignore_index), interpolation="nearest")
        depth_low, depth_high = depth_display_range(row)
        for axes, (key, _title) in zip(depth_axes, DEPTH_COLUMNS):
            if row[key] is None:
                blank_cell(axes, MISSING_CELL_NOTE, image_height / image_width)
                continue
            depth = np.asarray(row[key], dtype=np.float64)
            if key == "depth_target":
                depth = np.ma.masked_where(~(depth > 0), depth)
            depth_image = axes.imshow(depth, cmap=depth_colormap, vmin=depth_low, vmax=depth_high,
                                      interpolation="nearest")
        colorbar = figure.colorbar(depth_image, ax=list(depth_axes), extend="both", fraction=0.04, pad=0.01)
        colorbar.set_label(depth_label, fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
        for axes in axes_row:
            axes.set_xticks([])
            axes.set_yticks([])

    column_titles = ("image",) + tuple(title for _key, title in SEGMENTATION_COLUMNS + DEPTH_COLUMNS)
    for axes, title in zip(axes_grid[0], column_titles):
        axes.set_title(title, fontsize=9)
    save_figure(figure, path)


def plot_depth_error(depth_target: np.ndarray, depth_prediction: np.ndarray, path, depth_label: str,
                     bins: int = 20) -> None:
    """Mean absolute and mean relative depth error against binned ground-truth depth, with pixel counts
    per bin, from 1-D float arrays [N] of valid pixels in `depth_label` units; saved as a PNG to `path`.

    Bins split the ground-truth range evenly. Pixels whose target is not > 0 or whose values are not
    finite are left out; with none left the figure says "no valid depth pixels".
    """
    target = np.asarray(depth_target, dtype=np.float64)
    prediction = np.asarray(depth_prediction, dtype=np.float64)
    if target.ndim != 1 or target.shape != prediction.shape:
        raise ValueError(f"depth_target and depth_prediction must be 1-D arrays of the same length, got "
                         f"shapes {target.shape} and {prediction.shape}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    valid = np.isfinite(target) & np.isfinite(prediction) & (target > 0)
    target, prediction = target[valid], prediction[valid]

    if target.size == 0:
        figure = Figure(figsize=(7.0, 3.0), layout="constrained")
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no valid depth pixels", transform=axes.transAxes, ha="center", va="center",
                  fontsize=14)
        axes.set_axis_off()
        save_figure(figure, path)
        return

    edges = np.histogram_bin_edges(target, bins=bins)
    bin_of_pixel = np.clip(np.searchsorted(edges, target, side="right") - 1, 0, bins - 1)
    pixel_counts = np.bincount(bin_of_pixel, minlength=bins)
    absolute_error = np.abs(prediction - target)
    bin_centres = (edges[:-1] + edges[1:]) / 2
    bin_widths = np.diff(edges)

    figure = Figure(figsize=(8.0, 6.0), layout="constrained")
    top_axes, bottom_axes = figure.subplots(2, 1, sharex=True)
    for axes, pixel_errors, ylabel in (
            (top_axes, absolute_error, f"mean absolute error\n{depth_label}"),
            (bottom_axes, absolute_error / target, "mean relative error\n(|pred - gt| / gt)")):
        error_sums = np.bincount(bin_of_pixel, weights=pixel_errors, minlength=bins)
        mean_errors = np.divide(error_sums, pixel_counts, out=np.full(bins, np.nan), where=pixel_counts > 0)
        count_axes = axes.twinx()
        count_axes.bar(bin_centres, pixel_counts, width=0.9 * bin_widths, color=COUNT_BAR_COLOUR)
        count_axes.set_yscale("log")
        count_axes.set_ylabel("pixels (log scale)", color="0.5")
        count_axes.tick_params(axis="y", colors="0.5")
        axes.set_zorder(count_axes.get_zorder() + 1)
        axes.patch.set_visible(False)
        axes.plot(bin_centres, mean_errors, marker="o", markersize=4, color="C0")
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    top_axes.set_title(f"depth error against ground truth ({target.size} pixels, {bins} bins)")
    bottom_axes.set_xlabel(f"ground truth, {depth_label}")
    save_figure(figure, path)


def plot_curves_with_bands(panels, path) -> None:
    """Panels side by side, one per (title, y label, {line label: (epochs [E], means [E], stds [E])}): a line
    of the means per label against epoch, with a band of mean ± std where the std is a finite number (None:
    no band, e.g. a single run); saved as a PNG to `path`."""
    figure = Figure(figsize=(6.0 * len(panels), 4.5), layout="constrained")
    for axes, (title, ylabel, lines) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for label, (epochs, means, stds) in lines.items():
            epochs, means, stds = (np.asarray(values, dtype=np.float64) for values in (epochs, means, stds))
            line, = axes.plot(epochs, means, marker="o", markersize=3, label=label)
            banded = np.isfinite(stds)
            if banded.any():
                axes.fill_between(epochs[banded], (means - stds)[banded], (means + stds)[banded],
                                  color=line.get_color(), alpha=0.2, linewidth=0)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        if lines:
            axes.legend()
    save_figure(figure, path)
