"""The training engine: the only place that knows the order of a step, the epoch loop and evaluation.

One batch's way in training (`train_step`): data -> XTaskTSNet -> XTaskLoss -> balancer (one backward)
-> optimizer -> balancer's own step. In evaluation: XTaskTSNet -> MultiTaskMetrics.
"""
import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from losses import XTaskLoss, make_balancer
from losses.xtask import COMPONENT_NAMES
from training.interrupts import NonFiniteTraining
from training.options import balancer_arguments, build_model, loss_arguments
from utils.metrics import MultiTaskMetrics

PROGRESS_SECONDS = 1.0
DEPTH_PLOT_PIXELS_PER_BATCH = 2000


@dataclass
class TrainingParts:
    """What a training step works on: the network, its loss, the balancer, the optimizer (model and
    balancer parameters) and the per-epoch learning-rate scheduler."""

    model: torch.nn.Module
    criterion: XTaskLoss
    balancer: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


class LossMeter:
    """Batch-size-weighted means of the total loss and its four components, accumulated on the device
    (no host sync per batch), and which of them were ever non-finite and at which step first."""

    names = ("loss",) + COMPONENT_NAMES

    def __init__(self, device):
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.non_finite = torch.zeros(len(self.names), dtype=torch.bool, device=device)
        self.first_non_finite_step = torch.full((), -1, dtype=torch.long, device=device)
        self.count = 0
        self.steps = 0

    def update(self, total, terms, batch_size):
        """Add one batch: total and terms are scalar tensors, batch_size the number of images."""
        values = torch.stack([total.detach()] + [getattr(terms, name).detach() for name in COMPONENT_NAMES])
        self.sums += values.double() * batch_size
        self.count += batch_size
        self.steps += 1
        bad = ~torch.isfinite(values)
        first = (self.first_non_finite_step < 0) & bad.any()
        self.first_non_finite_step = torch.where(first, self.steps, self.first_non_finite_step)
        self.non_finite |= bad

    def non_finite_report(self):
        """None when every value so far was finite, else (first step, names of the non-finite values)."""
        step = int(self.first_non_finite_step)
        if step < 0:
            return None
        return step, [name for name, bad in zip(self.names, self.non_finite.tolist()) if bad]

    def means(self):
        """{"loss": mean total, component name: mean} as Python floats."""
        values = (self.sums / max(self.count, 1)).tolist()
        return dict(zip(self.names, values))


def move_batch(batch, device):
    """(image, segmentation_target, depth_target) on `device`."""
    return tuple(tensor.to(device, non_blocking=True) for tensor in batch)


def build_training(options, device, num_classes):
    """TrainingParts for `options` on `device`: model, criterion, balancer, optimizer and StepLR."""
    model = build_model(options, num_classes).to(device)
    criterion = XTaskLoss(**loss_arguments(options, num_classes))
    method, arguments = balancer_arguments(options)
    balancer = make_balancer(method, **arguments).to(device)
    parameters = list(model.parameters()) + balancer.model_parameters()
    if options.optim == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=options.lr, momentum=options.momentum)
    else:
        optimizer = torch.optim.Adam(parameters, lr=options.lr, betas=(options.b1, options.b2))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=options.scheduler_step_size,
                                                gamma=options.scheduler_gamma)
    return TrainingParts(model, criterion, balancer, optimizer, scheduler)


def train_step(parts, batch, device):
    """One training step on `batch` (image, segmentation_target, depth_target): forward, the four loss
    terms, the balancer's backward, the optimizer's step and the balancer's own step. Returns the
    detached total (scalar tensor, no host sync) and the XTaskLossTerms."""
    image, segmentation_target, depth_target = move_batch(batch, device)
    terms = parts.criterion(parts.model(image), segmentation_target, depth_target)
    parts.optimizer.zero_grad(set_to_none=True)
    total = parts.balancer.backward(terms.groups(), parts.balancer.shared_weight(parts.model))
    parts.optimizer.step()
    parts.balancer.step()
    return total, terms


def check_finite(meter, model, where):
    """Raise NonFiniteTraining when `meter` saw a non-finite loss or `model` holds a non-finite weight;
    `where` names the epoch (and the pass) for the message. One host sync."""
    report = meter.non_finite_report()
    if report is not None:
        step, names = report
        raise NonFiniteTraining(f"non-finite {', '.join(names)} loss at {where}, step {step}")
    finite = torch.stack([torch.isfinite(parameter).all() for parameter in model.parameters()]).all()
    if not bool(finite):
        bad = [name for name, parameter in model.named_parameters() if not bool(torch.isfinite(parameter).all())]
        raise NonFiniteTraining(f"non-finite model weights after {where} ({len(bad)} tensors, e.g. {bad[0]}) "
                                "although every loss was finite")


def train_one_epoch(parts, loader, device, stop, progress=True, description="train"):
    """One pass over `loader`; returns mean losses ({"loss", components}) and "images_per_second".
    `stop` (StopSignals or None) is checked after each step; non-finite losses or weights raise
    NonFiniteTraining where the loop syncs anyway (the progress line, the end of the epoch)."""
    parts.model.train()
    meter = LossMeter(device)
    start = last_progress = time.perf_counter()
    bar = tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True)
    for batch in bar:
        total, terms = train_step(parts, batch, device)
        meter.update(total, terms, len(batch[0]))
        if stop is not None:
            stop.check()
        if progress and time.perf_counter() - last_progress > PROGRESS_SECONDS:
            last_progress = time.perf_counter()
            check_finite(meter, parts.model, description)
            bar.set_postfix(loss=f"{meter.means()['loss']:.4f}", img_s=f"{meter.count / (last_progress - start):.1f}")
    check_finite(meter, parts.model, description)
    results = meter.means()
    results["images_per_second"] = meter.count / (time.perf_counter() - start)
    return results


@torch.no_grad()
def evaluate_loss(parts, loader, device, progress=True, description="val"):
    """Mean validation losses ({"loss", components}) in eval mode, without gradients; the total is the
    balancer's combination of the groups."""
    parts.model.eval()
    meter = LossMeter(device)
    for batch in tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True):
        image, segmentation_target, depth_target = move_batch(batch, device)
        terms = parts.criterion(parts.model(image), segmentation_target, depth_target)
        meter.update(parts.balancer.combine(terms.groups()), terms, image.shape[0])
    check_finite(meter, parts.model, description)
    return meter.means()


@torch.no_grad()
def evaluate_metrics(model, loader, device, num_classes, ignore_index, progress=True):
    """Both metric protocols of the direct predictions over `loader`, and a subsample of valid depth
    pixels as (ground truth [P], prediction [P]) CPU tensors for the depth-error plot."""
    model.eval()
    metrics = MultiTaskMetrics(num_classes, ignore_index, tasks=model.tasks)
    sampled_targets, sampled_predictions = [], []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False, dynamic_ncols=True):
        image, segmentation_target, depth_target = move_batch(batch, device)
        outputs = model(image, direct_only=True)
        metrics.update(outputs.segmentation, segmentation_target, outputs.depth, depth_target)
        if outputs.depth is not None:
            valid = depth_target > 0
            stride = max(1, math.ceil(int(valid.sum()) / DEPTH_PLOT_PIXELS_PER_BATCH))
            sampled_targets.append(depth_target[valid][::stride].float().cpu())
            sampled_predictions.append(outputs.depth[valid][::stride].float().cpu())
    depth_pairs = (torch.cat(sampled_targets), torch.cat(sampled_predictions)) if sampled_targets else None
    return metrics.compute(), depth_pairs


@torch.no_grad()
def constant_baseline_metrics(train_set, loader, device):
    """Both metric protocols on `loader` for a constant predictor: the training set's most frequent
    class and its mean valid depth (the bar a model that learns nothing would reach)."""
    class_counts = torch.zeros(train_set.num_classes, dtype=torch.float64)
    depth_sum, depth_count = 0.0, 0
    for _, segmentation_target, depth_target in train_set:
        valid = segmentation_target != train_set.ignore_index
        class_counts += torch.bincount(segmentation_target[valid], minlength=train_set.num_classes).double()
        depth_sum += float(depth_target[depth_target > 0].sum())
        depth_count += int((depth_target > 0).sum())
    logits = torch.nn.functional.one_hot(class_counts.argmax(), train_set.num_classes).double().view(1, -1, 1, 1)
    metrics = MultiTaskMetrics(train_set.num_classes, train_set.ignore_index)
    for batch in loader:
        _, segmentation_target, depth_target = move_batch(batch, device)
        batch_logits = logits.to(device).expand(len(segmentation_target), -1, *segmentation_target.shape[-2:])
        metrics.update(batch_logits, segmentation_target, torch.full_like(depth_target, depth_sum / max(depth_count, 1)),
                       depth_target)
    return metrics.compute()


@torch.no_grad()
def predict_samples(model, dataset, indices, device, direct_only):
    """Predictions for dataset[indices] as a list of dicts of CPU tensors (image, targets, outputs)."""
    model.eval()
    samples = [dataset[index] for index in indices]
    image = torch.stack([sample[0] for sample in samples]).to(device)
    outputs = model(image, direct_only=direct_only)
    rows = []
    for position, (sample_image, segmentation_target, depth_target) in enumerate(samples):
        rows.append({
            "image": sample_image,
            "segmentation_target": segmentation_target,
            "depth_target": depth_target[0],
            "segmentation": None if outputs.segmentation is None else outputs.segmentation[position].argmax(dim=0).cpu(),
            "depth": None if outputs.depth is None else outputs.depth[position, 0].cpu(),
            "transferred_segmentation": None if outputs.transferred_segmentation is None else
            outputs.transferred_segmentation[position].argmax(dim=0).cpu(),
            "transferred_depth": None if outputs.transferred_depth is None else
            outputs.transferred_depth[position, 0].cpu(),
        })
    return rows


def epoch_record(epoch, train, val, balancing_weights, learning_rate, seconds):
    """One row of the per-epoch history: every printed figure, flat."""
    record = {"epoch": epoch, "train_loss": train["loss"], "val_loss": val["loss"]}
    record.update({f"train_{name}": train[name] for name in COMPONENT_NAMES})
    record.update({f"val_{name}": val[name] for name in COMPONENT_NAMES})
    record.update(balancing_weights)
    record.update({"lr": learning_rate, "images_per_second": train["images_per_second"], "epoch_seconds": seconds})
    return record


def format_epoch_line(record, epochs):
    """The one line printed per epoch."""
    components = " ".join(f"{name}={record['train_' + name]:.4f}/{record['val_' + name]:.4f}"
                          for name in COMPONENT_NAMES)
    weights = " ".join(f"{key}={value:.4f}" for key, value in record.items()
                       if key.startswith(("sigma_", "w_")))
    return (f"epoch {record['epoch']:>3}/{epochs}  train {record['train_loss']:.4f}  val {record['val_loss']:.4f}  "
            f"| train/val {components} | {weights + ' | ' if weights else ''}lr {record['lr']:.2e}  "
            f"{record['images_per_second']:.1f} img/s  {record['epoch_seconds']:.1f} s")


def fit(parts, loaders, device, recorder, stop, progress=True):
    """The epoch loop from the recorder's next epoch to `recorder.epochs`: the balancer's start of
    epoch, train, validation loss, scheduler step, the epoch line printed, then
    `recorder.record_epoch(record)` (checkpoints). loaders: (train, val). Returns the history."""
    train_loader, val_loader = loaders
    for epoch in range(recorder.next_epoch, recorder.epochs + 1):
        start = time.perf_counter()
        train_loader.dataset.set_epoch(epoch)
        parts.balancer.start_epoch(epoch)
        description = f"epoch {epoch}/{recorder.epochs}"
        train = train_one_epoch(parts, train_loader, device, stop, progress, description)
        val = evaluate_loss(parts, val_loader, device, progress, description=f"validation of {description}")
        learning_rate = parts.optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
        record = epoch_record(epoch, train, val, parts.balancer.weights(), learning_rate, time.perf_counter() - start)
        print(format_epoch_line(record, recorder.epochs), flush=True)
        recorder.record_epoch(record)
    return recorder.history
