"""Render a preview grid of synthetic scenes (image | labels | depth per row): street scenes in
Cityscapes form, then indoor scenes in NYUv2 form.

Usage, from the repository root: python -m tools.preview_synthetic --output /tmp/synthetic_preview.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from data.cityscapes import (CITYSCAPES_19_CLASS_NAMES, CITYSCAPES_19_COLOURS, cityscapes_label_lookup,  # noqa: E402
                             disparity_from_raw)
from data.nyu import NYU_13_COLOURS  # noqa: E402
from data.synthetic import cityscapes_scene, indoor_scene, scene_generator  # noqa: E402
from data.synthetic.indoor_scene import UNLABELLED  # noqa: E402
from utils.plots import colorize_segmentation  # noqa: E402

STREET_SIZE = (256, 512)
INDOOR_SIZE = (288, 384)


def street_row(seed: int, index: int) -> tuple:
    """(image, coloured 19-class labels, disparity / 256 with NaN where invalid) of one street scene."""
    rgb, label_ids, raw_disparity = cityscapes_scene(scene_generator(seed, "preview", index), *STREET_SIZE)
    train_ids = cityscapes_label_lookup(len(CITYSCAPES_19_CLASS_NAMES), UNLABELLED)[label_ids]
    disparity = disparity_from_raw(raw_disparity)
    labels = colorize_segmentation(train_ids, np.array(CITYSCAPES_19_COLOURS, dtype=np.uint8), UNLABELLED)
    return rgb, labels, np.where(disparity > 0, disparity, np.nan)


def indoor_row(seed: int, index: int) -> tuple:
    """(image, coloured 13-class labels, depth in metres with NaN where missing) of one indoor scene."""
    image, label, depth = indoor_scene(scene_generator(seed, "preview", index), *INDOOR_SIZE)
    labels = colorize_segmentation(label, np.array(NYU_13_COLOURS, dtype=np.uint8), UNLABELLED)
    return image, labels, np.where(depth[:, :, 0] > 0, depth[:, :, 0], np.nan)


def main() -> None:
    """Parse the arguments and write the preview grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/tmp/synthetic_preview.png", help="PNG file to write")
    parser.add_argument("--count", type=int, default=4, help="scenes of each kind")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    arguments = parser.parse_args()
    indices = range(arguments.count)
    rows = [("street", street_row(arguments.seed, index), "disparity / 256", (0, 0.5)) for index in indices]
    rows += [("indoor", indoor_row(arguments.seed, index), "depth (m)", (0, 10)) for index in indices]
    figure, axes = plt.subplots(len(rows), 3, figsize=(13, 2.7 * len(rows)), squeeze=False)
    for axis_row, (kind, (image, labels, depth), depth_title, depth_range) in zip(axes, rows):
        axis_row[0].imshow(image)
        axis_row[0].set_title(f"{kind} image", fontsize=8)
        axis_row[1].imshow(labels)
        axis_row[1].set_title("labels (black: ignored)", fontsize=8)
        shown = axis_row[2].imshow(depth, cmap="magma" if kind == "street" else "viridis", vmin=depth_range[0],
                                   vmax=depth_range[1])
        axis_row[2].set_title(f"{depth_title} (white: missing)", fontsize=8)
        figure.colorbar(shown, ax=axis_row[2], fraction=0.03)
        for axis in axis_row:
            axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(arguments.output, dpi=80)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
