"""What an evaluation reports: the printed table, the results.json content, the figures and the row of
{save_path}/results.csv."""
import datetime
import os
import tempfile

import numpy as np
import torch

from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from losses.xtask import COMPONENT_NAMES
from training import engine
from utils import plots
from utils.timing import inference_latency_ms

PREDICTION_GRID_SAMPLES = 4
SUMMARY_OPTIONS = ("single_task", "group", "balancing", "gradnorm_form", "enc_layers", "num_classes", "height", "width", "epochs",
                   "batch_size", "lr", "alpha", "gamma", "label_smoothing", "lp", "tdep_loss", "tseg_loss",
                   "batch_norm", "wider_ttnet", "seed", "demo")
PROTOCOLS = {"standard": "accumulated over the whole evaluation set",
             "paper": "per-image segmentation, per-batch depth averages"}


def display_image(image, dataset):
    """image [3,H,W] as the model saw it -> [H,W,3] float in [0, 1] for figures."""
    if dataset.normalise_image:
        image = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def write_figures(folder, history, model, dataset, depth_pairs, context):
    """Loss curves (when there is a history), prediction grid and depth-error figure as PNGs in
    `folder`; returns their paths."""
    rows = prediction_rows(context, model, dataset)
    paths = []
    if history:
        paths.append(os.path.join(folder, "loss_curves.png"))
        plots.plot_loss_curves(history, paths[-1], COMPONENT_NAMES)
    paths.append(os.path.join(folder, "predictions.png"))
    plots.plot_prediction_grid(rows, paths[-1], dataset.palette, dataset.ignore_index, context.profile.depth_label)
    if depth_pairs is not None:
        paths.append(os.path.join(folder, "depth_error.png"))
        plots.plot_depth_error(depth_pairs[0].numpy(), depth_pairs[1].numpy(), paths[-1], context.profile.depth_label)
    return paths


PERCENT_METRICS = ("miou", "pixel_acc", "delta1", "delta2", "delta3")
MAIN_COLUMNS = (("mIoU", "miou"), ("Pix Acc", "pixel_acc"), ("Abs", "abs"), ("Abs Rel", "abs_rel"))
DEPTH_COLUMNS = (("RMSE", "rmse"), ("RMSE log", "rmse_log"), ("Sq Rel", "sq_rel"), ("d<1.25", "delta1"),
                 ("d<1.25^2", "delta2"), ("d<1.25^3", "delta3"))


def prediction_grid_image(context, model, dataset):
    """The prediction grid of the current model as an RGB uint8 array [H, W, 3] (for TensorBoard)."""
    with tempfile.TemporaryDirectory(prefix="xtask-grid-") as folder:
        path = os.path.join(folder, "predictions.png")
        rows = prediction_rows(context, model, dataset)
        plots.plot_prediction_grid(rows, path, dataset.palette, dataset.ignore_index, context.profile.depth_label)
        return plots.read_png_rgb(path)


def prediction_rows(context, model, dataset):
    """The grid's rows: up to PREDICTION_GRID_SAMPLES samples spread over `dataset`, as numpy arrays."""
    count = min(PREDICTION_GRID_SAMPLES, len(dataset))
    indices = sorted(set(np.linspace(0, len(dataset) - 1, count).astype(int).tolist()))
    rows = engine.predict_samples(model, dataset, indices, context.device, context.options.direct_only)
    for row in rows:
        row["image"] = display_image(row["image"], dataset)
        for key, value in row.items():
            if isinstance(value, torch.Tensor):
                row[key] = value.numpy()
    return rows


def table_line(label, metrics, keys):
    """One row of the results table: the values of `keys` in `metrics` (fractions printed as %, a
    metric of a task that was not trained as '-')."""
    cells = []
    for key in keys:
        base = key.removesuffix("_paper")
        if key not in metrics:
            cells.append(f"{'-':>10}")
        elif base in PERCENT_METRICS:
            cells.append(f"{metrics[key] * 100:>9.2f}%")
        else:
            cells.append(f"{metrics[key]:>10.4f}")
    return f"{label:<26}" + "".join(cells)


def results_table(metrics, context, baseline=None):
    """The final table: standard and paper-protocol metrics, the paper's numbers for its setting, the
    constant-predictor baseline when one was computed, and the other standard depth metrics."""
    keys = [key for _, key in MAIN_COLUMNS]
    lines = ["".join([f"{'':<26}"] + [f"{title:>10}" for title, _ in MAIN_COLUMNS]),
             table_line("standard", metrics, keys),
             table_line("paper protocol", metrics, [f"{key}_paper" for key in keys])]
    options, profile = context.options, context.profile
    if not options.demo and profile.is_paper_setting(options.num_classes, options.height, options.width):
        lines.append(table_line("paper (reported)", profile.paper_results, keys))
    if baseline is not None:
        lines.append(table_line("constant baseline (std.)", baseline, keys))
    if "abs" in metrics:
        lines.append("".join([f"{'':<26}"] + [f"{title:>10}" for title, _ in DEPTH_COLUMNS]))
        lines.append(table_line("standard", metrics, [key for _, key in DEPTH_COLUMNS]))
    lines.append("standard: accumulated over the whole set; paper protocol: per-image segmentation and "
                 "per-batch depth averages, as the original paper computed them.")
    return "\n".join(lines)


def summary_row(folder, context, results):
    """One row of {save_path}/results.csv for a finished run."""
    row = {"experiment": os.path.basename(folder), "dataset": context.profile.name,
           "finished": datetime.datetime.now().isoformat(timespec="seconds"), "best_epoch": results["epoch"]}
    row.update({key: getattr(context.options, key) for key in SUMMARY_OPTIONS})
    row.update({key: value for key, value in results["metrics"].items() if key != "iou"})
    return row


def print_latency(model, context):
    """--time_inf: median batch-size-1 latency with and without the transfer nets."""
    options = context.options
    for direct_only, label in ((False, "with transfer nets"), (True, "direct only")):
        latency = inference_latency_ms(model, options.height, options.width, context.device, direct_only)
        print(f"inference latency ({label}, batch 1, {options.height}x{options.width}, {context.device}): "
              f"{latency:.2f} ms (median)")


def evaluate_and_report(context, model, balancer, loader, folder, history, baseline=None):
    """Evaluate `model` on `loader`, print the table, write figures into `folder` (None: none, unless
    --view_only; loss curves from `history`) and return the results dict for results.json (the caller
    adds the checkpoint's epoch)."""
    options, dataset = context.options, loader.dataset
    metrics, depth_pairs = engine.evaluate_metrics(model, loader, context.device, dataset.num_classes,
                                                   dataset.ignore_index, progress=not options.notqdm)
    print(results_table(metrics, context, baseline))
    results = {"baseline": baseline, "checkpoint": "checkpoints/best.pt", "direct_only": options.direct_only,
               "split": dataset.split, "metrics": metrics, "balancing_weights": balancer.weights(),
               "protocols": PROTOCOLS}
    if options.time_inf:
        print_latency(model, context)
    figure_paths = []
    if not options.no_plots and (folder is not None or options.view_only):
        figure_folder = tempfile.mkdtemp(prefix="xtask-figures-") if options.view_only or folder is None else folder
        figure_paths = write_figures(figure_folder, history, model, dataset, depth_pairs, context)
    if options.show or options.view_only:
        plots.show_figures(figure_paths)
    return results
