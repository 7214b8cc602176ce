"""What an evaluation reports: the printed table, the results.json content, the figures and the row of
{save_path}/results.csv."""
import datetime
import os
import tempfile

import numpy as np
import torch

from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from training import engine
from training.config import SUMMARISED, keys_with
from utils import plots
from utils.consistency_energy import describe
from utils.metric_definitions import DEPTH, METRICS, SEGMENTATION, STANDARD, TASKS, metric_key, select
from utils.metric_definitions import PROTOCOLS as METRIC_PROTOCOLS
from utils.timing import inference_latency_ms

PREDICTION_GRID_SAMPLES = 4
PROTOCOLS = {name: protocol.description for name, protocol in METRIC_PROTOCOLS.items()}


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
        plots.plot_loss_curves(history, paths[-1], engine.recorded_components(history[0]))
    paths.append(os.path.join(folder, "predictions.png"))
    plots.plot_prediction_grid(rows, paths[-1], dataset.palette, dataset.ignore_index, context.profile.depth_label)
    if depth_pairs is not None:
        paths.append(os.path.join(folder, "depth_error.png"))
        plots.plot_depth_error(depth_pairs[0].numpy(), depth_pairs[1].numpy(), paths[-1], context.profile.depth_label)
    return paths


# The table's first block: the paper's four metrics (the standard protocol's Δm metrics of segmentation and
# depth), a row per protocol; then per task a block of that task's other standard-protocol metrics.
MAIN_COLUMNS = tuple(metric for metric in select(STANDARD, in_delta_m=True) if metric.task in (SEGMENTATION, DEPTH))
MORE_COLUMNS = tuple(columns for columns in (tuple(metric for metric in select(STANDARD, task)
                                                   if metric not in MAIN_COLUMNS) for task in TASKS) if columns)


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
    rows = engine.predict_samples(model, dataset, indices, context.device, context.config.run.direct_only)
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
        if key not in metrics:
            cells.append(f"{'-':>10}")
        elif METRICS[key].percent:
            cells.append(f"{metrics[key] * 100:>9.2f}%")
        else:
            cells.append(f"{metrics[key]:>10.4f}")
    return f"{label:<26}" + "".join(cells)


def header_line(columns):
    """The titles of `columns` (metric definitions) above their values."""
    return "".join([f"{'':<26}"] + [f"{metric.title:>10}" for metric in columns])


def results_table(metrics, context, baseline=None):
    """The final table: the main metrics in each protocol, the paper's numbers for its setting, the
    constant-predictor baseline when one was computed, then each measured task's other standard metrics."""
    keys = [metric.key for metric in MAIN_COLUMNS]
    lines = [header_line(MAIN_COLUMNS)]
    for name, protocol in METRIC_PROTOCOLS.items():
        protocol_keys = [metric_key(metric.quantity, name) for metric in MAIN_COLUMNS]
        lines.append(table_line(protocol.label, metrics, protocol_keys))
    data, profile = context.config.data, context.profile
    if not context.config.run.demo and profile.is_paper_setting(data.num_classes, data.height, data.width):
        lines.append(table_line("paper (reported)", profile.paper_results, keys))
    if baseline is not None:
        lines.append(table_line("constant baseline (std.)", baseline, keys))
    for columns in MORE_COLUMNS:
        if any(metric.key in metrics for metric in columns):
            lines += [header_line(columns),
                      table_line(METRIC_PROTOCOLS[STANDARD].label, metrics, [metric.key for metric in columns])]
    lines.append("; ".join(f"{protocol.label}: {protocol.description}" for protocol in METRIC_PROTOCOLS.values()) + ".")
    return "\n".join(lines)


def csv_cell(value):
    """A setting as a results.csv cell: a tuple (the tasks) as its items separated by spaces, as on the command line."""
    return " ".join(str(item) for item in value) if isinstance(value, tuple) else value


def summary_row(folder, context, results):
    """One row of {save_path}/results.csv for a finished run."""
    row = {"experiment": os.path.basename(folder), "dataset": context.profile.name,
           "finished": datetime.datetime.now().isoformat(timespec="seconds"), "best_epoch": results["epoch"]}
    row.update({key: csv_cell(context.config[key]) for key in keys_with(SUMMARISED)})
    row.update({key: value for key, value in results["metrics"].items() if key != "iou"})
    return row


def print_latency(model, context):
    """--time_inf: median batch-size-1 latency with and without the transfer nets."""
    data = context.config.data
    for direct_only, label in ((False, "with transfer nets"), (True, "direct only")):
        latency = inference_latency_ms(model, data.height, data.width, context.device, direct_only)
        print(f"inference latency ({label}, batch 1, {data.height}x{data.width}, {context.device}): "
              f"{latency:.2f} ms (median)")


def evaluate_and_report(context, model, balancer, loader, folder, history, baseline=None):
    """Evaluate `model` on `loader`, print the table, write figures into `folder` (None: none, unless
    --view_only; loss curves from `history`) and return the results dict for results.json (the caller
    adds the checkpoint's epoch); it holds the consistency energy (ENERGY_KEYS) unless the model has no
    transfer nets or --direct_only is given."""
    run, dataset = context.config.run, loader.dataset
    metrics, depth_pairs, energy = engine.evaluate_metrics(model, loader, context.device, dataset.num_classes,
                                                           dataset.ignore_index, progress=not run.notqdm,
                                                           with_transfer=not run.direct_only)
    print(results_table(metrics, context, baseline))
    if energy:
        print(describe(energy))
    results = {"baseline": baseline, "checkpoint": "checkpoints/best.pt", "direct_only": run.direct_only,
               "split": dataset.split, "metrics": metrics, "balancing_weights": balancer.weights(),
               "protocols": PROTOCOLS, **energy}
    if run.time_inf:
        print_latency(model, context)
    figure_paths = []
    if not run.no_plots and (folder is not None or run.view_only):
        figure_folder = tempfile.mkdtemp(prefix="xtask-figures-") if run.view_only or folder is None else folder
        figure_paths = write_figures(figure_folder, history, model, dataset, depth_pairs, context)
    if run.show or run.view_only:
        plots.show_figures(figure_paths)
    return results
