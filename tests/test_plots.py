"""Tests for utils.plots: every figure is written as a readable PNG of a plausible size, atomically
(no temporary file left, an existing file survives a failed save), and colorize_segmentation maps
labels to palette colours exactly."""

import os

import numpy as np
import pytest
from matplotlib import image as matplotlib_image
from matplotlib.backends.backend_agg import FigureCanvasAgg

from losses.xtask import COMPONENT_NAMES
from utils.files import TEMPORARY_PREFIX
from utils.plots import (colorize_segmentation, plot_depth_error, plot_loss_curves,
                         plot_prediction_grid, show_figures)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [250, 250, 20]], dtype=np.uint8)
IGNORE_INDEX = 250
HEIGHT, WIDTH = 12, 24


def png_size(path):
    """(height, width) in pixels of a PNG file, after checking its signature and decoding it."""
    with open(path, "rb") as png_file:
        assert png_file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    pixels = matplotlib_image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    return pixels.shape[:2]


def palette_pixel_count(path):
    """Number of pixels of a PNG whose RGB colour is one of PALETTE's (within rounding)."""
    rgb = np.round(matplotlib_image.imread(path)[..., :3] * 255).astype(np.int64)
    return int(sum(np.all(rgb == colour, axis=-1).sum() for colour in PALETTE.astype(np.int64)))


def folder_names(folder):
    """Sorted file names in a folder."""
    return sorted(os.listdir(folder))


def make_history(epochs, with_components):
    """Per-epoch loss dicts; validation components only on even epochs."""
    history = []
    for epoch in range(1, epochs + 1):
        entry = {"epoch": epoch, "train_loss": 2.0 / epoch, "val_loss": 2.5 / epoch}
        if with_components:
            for number, component in enumerate(COMPONENT_NAMES, start=1):
                entry[f"train_{component}"] = number / epoch
                if epoch % 2 == 0:
                    entry[f"val_{component}"] = 1.5 * number / epoch
        history.append(entry)
    return history


def make_row(seed, with_transfer=True):
    """One synthetic validation sample for the prediction grid."""
    rng = np.random.default_rng(seed)
    segmentation_target = rng.integers(0, len(PALETTE), (HEIGHT, WIDTH))
    segmentation_target[:2] = IGNORE_INDEX
    depth_target = rng.uniform(1.0, 50.0, (HEIGHT, WIDTH))
    depth_target[:, :3] = 0.0
    segmentation = rng.integers(0, len(PALETTE), (HEIGHT, WIDTH))
    depth = depth_target + rng.normal(0.0, 2.0, (HEIGHT, WIDTH))
    return {
        "image": rng.random((HEIGHT, WIDTH, 3)),
        "segmentation_target": segmentation_target,
        "segmentation": segmentation,
        "transferred_segmentation": (segmentation + 1) % len(PALETTE) if with_transfer else None,
        "depth_target": depth_target,
        "depth": depth,
        "transferred_depth": depth * 1.1 if with_transfer else None,
    }


def test_colorize_segmentation_maps_labels_to_palette_and_others_to_black():
    labels = np.array([[0, 1, 2, 3], [IGNORE_INDEX, -1, 4, 2]])
    expected = np.zeros((2, 4, 3), dtype=np.uint8)
    for row in range(2):
        for column in range(4):
            label = labels[row, column]
            if 0 <= label < len(PALETTE):
                expected[row, column] = PALETTE[label]
    coloured = colorize_segmentation(labels, PALETTE, IGNORE_INDEX)
    assert coloured.dtype == np.uint8 and coloured.shape == (2, 4, 3)
    np.testing.assert_array_equal(coloured, expected)


def test_colorize_segmentation_blacks_out_an_ignore_index_inside_the_class_range():
    coloured = colorize_segmentation(np.array([[0, 1, 2]]), PALETTE, ignore_index=1)
    np.testing.assert_array_equal(coloured[0], [PALETTE[0], [0, 0, 0], PALETTE[2]])


def test_colorize_segmentation_rejects_a_non_uint8_palette():
    with pytest.raises(ValueError, match="palette"):
        colorize_segmentation(np.zeros((2, 2), dtype=np.int64), PALETTE.astype(np.float32) / 255, 250)


def test_loss_curves_write_png_with_one_panel_per_recorded_component(tmp_path):
    full_path, total_only_path = tmp_path / "full.png", tmp_path / "total_only.png"
    plot_loss_curves(make_history(6, with_components=True), full_path, COMPONENT_NAMES)
    plot_loss_curves(make_history(6, with_components=False), total_only_path, COMPONENT_NAMES)
    full_height, full_width = png_size(full_path)
    total_only_height, total_only_width = png_size(total_only_path)
    assert full_width == total_only_width
    assert full_height > total_only_height  # the component panels were added below the total panel
    assert folder_names(tmp_path) == ["full.png", "total_only.png"]


def test_loss_curves_handle_nonpositive_nan_single_epoch_and_empty_histories(tmp_path):
    histories = {
        "mixed.png": [{"epoch": 1, "train_loss": 0.5, "val_loss": -0.2},
                      {"epoch": 2, "train_loss": float("nan"), "train_depth": 0.1, "val_depth": None}],
        "single.png": make_history(1, with_components=True),
        "empty.png": [],
    }
    for name, history in histories.items():
        plot_loss_curves(history, tmp_path / name, COMPONENT_NAMES)
        height, width = png_size(tmp_path / name)
        assert width > 0 and height > 0
    assert folder_names(tmp_path) == sorted(histories)


def test_prediction_grid_is_wide_and_grows_with_the_number_of_rows(tmp_path):
    one_row_path, three_row_path = tmp_path / "one.png", tmp_path / "three.png"
    plot_prediction_grid([make_row(0)], one_row_path, PALETTE, IGNORE_INDEX, "depth (m)")
    plot_prediction_grid([make_row(seed) for seed in range(3)], three_row_path, PALETTE, IGNORE_INDEX,
                         "disparity / 256")
    one_row_height, one_row_width = png_size(one_row_path)
    three_row_height, three_row_width = png_size(three_row_path)
    assert one_row_width > 3 * one_row_height  # seven image columns side by side
    assert three_row_width == one_row_width
    assert three_row_height > 2 * one_row_height
    assert folder_names(tmp_path) == ["one.png", "three.png"]


def test_prediction_grid_without_transfer_nets_keeps_the_layout(tmp_path):
    rows_without_transfer = [make_row(0, with_transfer=False), make_row(1, with_transfer=False)]
    plot_prediction_grid(rows_without_transfer, tmp_path / "without.png", PALETTE, IGNORE_INDEX, "depth (m)")
    plot_prediction_grid([make_row(0), make_row(1)], tmp_path / "with.png", PALETTE, IGNORE_INDEX, "depth (m)")
    assert png_size(tmp_path / "without.png") == png_size(tmp_path / "with.png")
    # the blank transferred-segmentation cells draw no class colour, so fewer pixels have one
    assert palette_pixel_count(tmp_path / "without.png") < palette_pixel_count(tmp_path / "with.png")


def test_prediction_grid_rejects_no_rows(tmp_path):
    with pytest.raises(ValueError, match="at least one row"):
        plot_prediction_grid([], tmp_path / "grid.png", PALETTE, IGNORE_INDEX, "depth (m)")
    assert folder_names(tmp_path) == []


def test_depth_error_writes_png_for_data_constant_and_empty_inputs(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.gamma(2.0, 10.0, 2000) + 0.5
    prediction = target + rng.normal(0.0, 1.0, target.size)
    plot_depth_error(target, prediction, tmp_path / "data.png", "depth (m)", bins=8)
    plot_depth_error(np.full(5, 3.0), np.full(5, 2.0), tmp_path / "constant.png", "depth (m)")
    plot_depth_error(np.array([]), np.array([]), tmp_path / "empty.png", "depth (m)")
    plot_depth_error(np.array([0.0, -1.0]), np.array([1.0, 1.0]), tmp_path / "no_valid.png", "depth (m)")
    data_height, data_width = png_size(tmp_path / "data.png")
    empty_height, empty_width = png_size(tmp_path / "empty.png")
    assert png_size(tmp_path / "constant.png") == (data_height, data_width)
    assert png_size(tmp_path / "no_valid.png") == (empty_height, empty_width)
    assert data_height > empty_height  # the two error panels, not the "no valid depth pixels" note
    assert folder_names(tmp_path) == ["constant.png", "data.png", "empty.png", "no_valid.png"]


def test_depth_error_rejects_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        plot_depth_error(np.ones(4), np.ones(3), tmp_path / "error.png", "depth (m)")
    with pytest.raises(ValueError, match="same length"):
        plot_depth_error(np.ones((2, 2)), np.ones((2, 2)), tmp_path / "error.png", "depth (m)")
    assert folder_names(tmp_path) == []


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "loss.png"
    path.write_bytes(b"previous figure")

    written_to = []

    def write_half_then_fail(canvas, stream, *args, **kwargs):
        written_to.extend(name for name in os.listdir(tmp_path) if name != "loss.png")
        stream.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(FigureCanvasAgg, "print_figure", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plot_loss_curves(make_history(2, with_components=False), path, COMPONENT_NAMES)
    assert path.read_bytes() == b"previous figure"
    assert folder_names(tmp_path) == ["loss.png"]
    # a write killed there would leave a file that a resume removes (utils.files.TEMPORARY_PREFIX)
    assert len(written_to) == 1 and written_to[0].startswith(TEMPORARY_PREFIX)


def test_show_figures_opens_one_window_per_png_at_its_pixel_size(tmp_path, monkeypatch):
    from matplotlib import pyplot

    paths = [tmp_path / "loss.png", tmp_path / "empty_depth.png"]
    plot_loss_curves(make_history(3, with_components=False), paths[0], COMPONENT_NAMES)
    plot_depth_error(np.array([]), np.array([]), paths[1], "depth (m)")
    shown = []
    monkeypatch.setattr(pyplot, "show", lambda: shown.append(
        [(pyplot.figure(number).get_label(), tuple(pyplot.figure(number).get_size_inches()))
         for number in pyplot.get_fignums()]))
    pyplot.close("all")
    try:
        show_figures(paths)
    finally:
        pyplot.close("all")
    assert len(shown) == 1  # one blocking show() call for all windows
    assert [label for label, _size in shown[0]] == [path.name for path in paths]
    for (_label, size_inches), path in zip(shown[0], paths):
        height, width = png_size(path)
        assert size_inches == pytest.approx((width / 100, height / 100))
