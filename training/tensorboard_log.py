"""--tensorboard: every figure of the epoch line as a scalar and, each epoch, the prediction grid as an
image, written into the experiment folder (an optional dependency: requirements-extra.txt)."""
import os

import numpy as np
import torch

from utils.errors import UserInputError

MISSING_PACKAGE = ("--tensorboard needs the tensorboard package, which is not installed: "
                   "pip install -r requirements-extra.txt (or drop --tensorboard)")


def summary_writer_class():
    """torch's SummaryWriter; a UserInputError saying how to install tensorboard when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserInputError(MISSING_PACKAGE) from None
    return SummaryWriter


class TensorBoardLog:
    """Scalars and images of one run in {folder}/tensorboard. `render_grid()` returns the current
    prediction grid as an RGB uint8 array [H, W, 3]."""

    def __init__(self, folder, render_grid):
        self.writer = summary_writer_class()(os.path.join(folder, "tensorboard"))
        self.render_grid = render_grid

    def log_epoch(self, record):
        """The epoch's figures (losses, components, balancing weights, lr, speed) and prediction grid."""
        epoch = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        self.writer.add_image("predictions", torch.from_numpy(np.ascontiguousarray(self.render_grid())), epoch,
                              dataformats="HWC")
        self.writer.flush()

    def log_results(self, metrics, epoch):
        """The final evaluation's metrics (fractions and errors) at the best epoch."""
        for key, value in metrics.items():
            if isinstance(value, float):
                self.writer.add_scalar(f"results/{key}", value, epoch)
        self.writer.close()
