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
SUMMARY_OPTIONS = ("balancing", "gradnorm_form", "enc_layers", "num_classes", "height", "width", "epochs",
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
    count = min(PREDICTION_GRID_SAMPLES, len(dataset))
    indices = sorted(set(np.linspace(0, len(dataset) - 1, count).astype(int).tolist()))
    rows = engine.predict_samples(model, dataset, indices, context.device, context.options.direct_only)
    for row in rows:
        row["image"] = display_image(row["image"], dataset)
        for key, value in row.items():
            if isinstance(value, torch.Tensor):
                row[key] = value.numpy()
    paths = []
    if history:
        paths.append(os.path.join(folder, "loss_curves.png"))
        plots.plot_loss_curves(history, paths[-1], COMPONENT_NAMES)
    paths.append(os.path.join(folder, "predictions.png"))
    plots.plot_prediction_grid(rows, paths[-1], dataset.palette, dataset.ignore_index, context.profile.depth_label)
    paths.append(os.path.join(folder, "depth_error.png"))
    plots.plot_depth_error(depth_pairs[0].numpy(), depth_pairs[1].numpy(), paths[-1], context.profile.depth_label)
    return paths


def table_line(label, miou, pixel_acc, abs_error, abs_rel):
    """One row of the results table (mIoU and pixel accuracy given as fractions, printed as %)."""
    return f"{label:<26}{miou * 100:>9.2f}%{pixel_acc * 100:>9.2f}%{abs_error:>10.4f}{abs_rel:>10.4f}"


def results_table(metrics, context, baseline=None):
    """The final table: standard and paper-protocol metrics, the paper's numbers for its setting, and
    the constant-predictor baseline when one was computed."""
    lines = [f"{'':<26}{'mIoU':>10}{'Pix Acc':>10}{'Abs':>10}{'Abs Rel':>10}",
             table_line("standard", metrics["miou"], metrics["pixel_acc"], metrics["abs"], metrics["abs_rel"]),
             table_line("paper protocol", metrics["miou_paper"], metrics["pixel_acc_paper"], metrics["abs_paper"],
                        metrics["abs_rel_paper"])]
    options, profile = context.options, context.profile
    if not options.demo and profile.is_paper_setting(options.num_classes, options.height, options.width):
        reference = profile.paper_results
        lines.append(table_line("paper (reported)", reference["miou"], reference["pixel_acc"], reference["abs"],
                                reference["abs_rel"]))
    if baseline is not None:
        lines.append(table_line("constant baseline (std.)", baseline["miou"], baseline["pixel_acc"],
                                baseline["abs"], baseline["abs_rel"]))
    lines.append(f"{'':<26}{'RMSE':>10}{'RMSE log':>10}{'Sq Rel':>10}{'d<1.25':>10}{'d<1.25^2':>10}{'d<1.25^3':>10}")
    lines.append(f"{'standard':<26}{metrics['rmse']:>10.4f}{metrics['rmse_log']:>10.4f}{metrics['sq_rel']:>10.4f}"
                 f"{metrics['delta1'] * 100:>9.2f}%{metrics['delta2'] * 100:>9.2f}%{metrics['delta3'] * 100:>9.2f}%")
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
