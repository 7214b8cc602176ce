"""The training engine: the only place that knows the order of a step, the epoch loop and evaluation.

One batch's way in training (`train_step`): data -> model -> XTaskLoss (+ KD4MTL's distillation loss) ->
balancer (one backward) -> optimizer (+ the adaptors' optimizer) -> balancer's own step. In evaluation:
model -> MultiTaskMetrics.
"""
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from data.device_augment import augment_batch
from losses import XTaskLoss, make_balancer
from losses.xtask import COMPONENT_NAMES, DISTILLATION, NORMAL, WithNormalLoss, component_names
from models import make_model
from training.config import SpeedSettings, flag_message
from training.distillation import Distillation, build_distillation
from training.interrupts import NonFiniteTraining
from utils import distributed
from utils.consistency_energy import ENERGY, ENERGY_KEYS, ConsistencyEnergyMeter, describe
from utils.errors import UserInputError
from utils.metrics import MultiTaskMetrics

PROGRESS_SECONDS = 1.0
DEPTH_PLOT_PIXELS_PER_BATCH = 2000


@dataclass
class TrainingParts:
    """What a training step works on: the network, its loss, the balancer, the optimizer (model and
    balancer parameters), the per-epoch learning-rate scheduler, how the step runs on its device,
    whether the training depth is disparity (for batches augmented on the device), whether the batches
    carry surface normals (a third target after segmentation and depth) and KD4MTL's distillation parts
    (teachers, adaptors and their optimizer; None without --distill_from)."""

    model: torch.nn.Module
    criterion: torch.nn.Module  # XTaskLoss, or WithNormalLoss with surface normals
    balancer: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    speed: SpeedSettings = SpeedSettings()
    depth_is_disparity: bool = False
    normals: bool = False
    distillation: Optional[Distillation] = None

    def component_names(self, training=False):
        """The loss components of a step (losses.xtask.component_names), and in a training step of KD4MTL
        the distillation loss."""
        names = component_names((NORMAL,) if self.normals else ())
        return names + (DISTILLATION,) if training and self.distillation is not None else names


class LossMeter:
    """Batch-size-weighted means of the total loss and its components (`components`, names of
    XTaskLossTerms.components()), accumulated on the device (no host sync per batch), and which of them
    were ever non-finite and at which step first."""

    def __init__(self, device, components=COMPONENT_NAMES):
        self.names = ("loss",) + tuple(components)
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.non_finite = torch.zeros(len(self.names), dtype=torch.bool, device=device)
        self.first_non_finite_step = torch.full((), -1, dtype=torch.long, device=device)
        self.count = 0
        self.steps = 0

    def update(self, total, terms, batch_size):
        """Add one batch: total and terms are scalar tensors, batch_size the number of images."""
        components = terms.components()
        values = torch.stack([total.detach()] + [components[name].detach() for name in self.names[1:]])
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

    def reduce_across_processes(self):
        """Make this meter hold the sums, counts and non-finite flags of every process (torchrun; nothing
        with one process): the first non-finite step is the earliest of any process."""
        if not distributed.is_initialized():
            return
        distributed.all_reduce_sum(self.sums)
        counts = distributed.all_reduce_sum(torch.tensor([self.count, self.steps], device=self.sums.device))
        self.count, self.steps = counts.tolist()
        bad = distributed.all_reduce_sum(self.non_finite.long())
        self.non_finite = bad > 0
        never = torch.iinfo(torch.long).max
        first = torch.where(self.first_non_finite_step < 0, never, self.first_non_finite_step)
        first = distributed.all_reduce_min(first)
        self.first_non_finite_step = torch.where(first == never, -1, first)

    def means(self):
        """{"loss": mean total, component name: mean} as Python floats."""
        values = (self.sums / max(self.count, 1)).tolist()
        return dict(zip(self.names, values))


def move_batch(batch, device):
    """The batch's tensors on `device` (copied asynchronously from pinned memory on CUDA)."""
    return tuple(tensor.to(device, non_blocking=True) for tensor in batch)


def split_batch(batch, normals):
    """(image, targets, augmentation) of a loaded batch: targets is (segmentation, depth) or, with
    `normals`, (segmentation, depth, normal); augmentation the [N, 4] parameters of a batch whose
    augmentation was deferred to the device (MultiTaskDataset.defer_augmentation), else None."""
    target_count = 3 if normals else 2
    extra = batch[1 + target_count:]
    return batch[0], tuple(batch[1:1 + target_count]), extra[0] if extra else None


def training_batch(parts, batch, device):
    """(image, targets) of a training batch on `device` (see split_batch); a batch that carries its
    augmentation parameters is augmented there, in one batched pass (data.device_augment)."""
    image, targets, augmentation = split_batch(move_batch(batch, device), parts.normals)
    if augmentation is None:
        return image, targets
    normal = targets[2] if parts.normals else None
    augmented = augment_batch(image, targets[0], targets[1], augmentation, parts.depth_is_disparity, normal=normal)
    return augmented[0], tuple(augmented[1:])


def build_model(config, num_classes):
    """The model of `config.model` for `num_classes` classes (on the CPU; ImageNet weights loaded when
    asked), initialised from the run's seed; a missing or unreadable weights file is a UserInputError
    naming the flag."""
    torch.manual_seed(config.optimization.seed)
    try:
        return make_model(config.model.family, **config.model.arguments(num_classes, config.data),
                          **config.model.family_section().initialisation())
    except ValueError as error:
        raise UserInputError(flag_message(error)) from None


def build_optimizer(parameters, optimization, device):
    """The optimizer of `optimization` (training.config.OptimizationConfig) over `parameters`, fused on
    CUDA, and its per-epoch StepLR scheduler."""
    fused = device.type == "cuda"
    if optimization.optim == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=optimization.lr, momentum=optimization.momentum, fused=fused)
    else:
        optimizer = torch.optim.Adam(parameters, lr=optimization.lr, betas=(optimization.b1, optimization.b2),
                                     fused=fused)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=optimization.scheduler_step_size,
                                                gamma=optimization.scheduler_gamma)
    return optimizer, scheduler


def build_criterion(config, num_classes):
    """The loss of `config`: XTaskLoss (one task's direct loss with --single_task), with the surface-normal
    loss as a third group when the run's tasks include the normals (WithNormalLoss; alone for a
    single-task normals baseline)."""
    model = config.model
    base = None
    if model.single_task != NORMAL:
        base = XTaskLoss(**config.loss.arguments(num_classes, config.data.ignore_index, model.single_task))
    return WithNormalLoss(base) if NORMAL in model.tasks else base


def build_training(config, device, num_classes, speed=SpeedSettings(), depth_is_disparity=False):
    """TrainingParts for `config` (training.config.RunConfig) on `device`: model, criterion, balancer
    (attached to the model), optimizer and StepLR, set up for `speed` (channels-last weights,
    torch.compile), with KD4MTL's teachers and adaptors under --distill_from. depth_is_disparity: the
    training depth is disparity (for batches augmented on the device)."""
    model = build_model(config, num_classes).to(device)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if speed.compile:
        model.compile()
    criterion = build_criterion(config, num_classes)
    balancer = make_balancer(config.balancing.method, **config.balancing.arguments(
        config.optimization, len(config.model.tasks))).to(device)
    balancer.attach(model)
    optimizer, scheduler = build_optimizer(list(model.parameters()) + balancer.model_parameters(),
                                           config.optimization, device)
    return TrainingParts(model, criterion, balancer, optimizer, scheduler, speed, depth_is_disparity,
                         NORMAL in config.model.tasks, build_distillation(config, device))


def forward(model, image, speed, **keywords):
    """model(image, **keywords) as `speed` says (channels-last input, bf16 autocast); the predictions
    (and features, for KD4MTL) come back in float32, so that losses and metrics are computed in float32."""
    if speed.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=speed.amp):
        outputs = model(image, **keywords)
    return in_float32(outputs)


def in_float32(outputs):
    """`outputs` (a tensor, None, or tuples, named tuples and dicts of them) with every tensor in float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {key: in_float32(value) for key, value in outputs.items()}
    if isinstance(outputs, tuple):
        values = (in_float32(value) for value in outputs)
        return type(outputs)(*values) if hasattr(outputs, "_fields") else tuple(values)
    return outputs


def train_step(parts, batch, device):
    """One training step on `batch` (image, segmentation_target, depth_target[, normal_target][,
    augmentation]): forward, the loss terms, the balancer's backward, the optimizer's step and the
    balancer's own step; with KD4MTL the distillation loss joins the total (unweighted) and the adaptors
    take their optimizer's step. Returns the detached total (scalar tensor, no host sync) and the
    XTaskLossTerms (with `distillation` under KD4MTL)."""
    image, targets = training_batch(parts, batch, device)
    distillation = parts.distillation
    if distillation is None:
        terms = parts.criterion(forward(parts.model, image, parts.speed), *targets)
    else:
        outputs, features = forward(parts.model, image, parts.speed, with_features=True)
        terms = parts.criterion(outputs, *targets)._replace(distillation=distillation.loss(features, image))
        distillation.optimizer.zero_grad(set_to_none=True)
    parts.optimizer.zero_grad(set_to_none=True)
    total = parts.balancer.backward(terms.groups(), extra=terms.distillation)
    parts.optimizer.step()
    if distillation is not None:
        distillation.optimizer.step()
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
    NonFiniteTraining where the loop syncs anyway (the progress line, the end of the epoch). Under
    torchrun the losses and the non-finite check are those of every process, taken at the end of the
    epoch (all processes stop together), and BatchNorm's running statistics are then averaged."""
    parts.model.train()
    meter = LossMeter(device, parts.component_names(training=True))
    start = last_progress = time.perf_counter()
    bar = tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True)
    for batch in bar:
        total, terms = train_step(parts, batch, device)
        meter.update(total, terms, len(batch[0]))
        if stop is not None:
            stop.check()
        if progress and time.perf_counter() - last_progress > PROGRESS_SECONDS:
            last_progress = time.perf_counter()
            if not distributed.is_initialized():
                check_finite(meter, parts.model, description)
            bar.set_postfix(loss=f"{meter.means()['loss']:.4f}", img_s=f"{meter.count / (last_progress - start):.1f}")
    meter.reduce_across_processes()
    distributed.average_floating_buffers(parts.model)
    check_finite(meter, parts.model, description)
    results = meter.means()
    results["images_per_second"] = meter.count / (time.perf_counter() - start)
    return results


@torch.inference_mode()
def evaluate_loss(parts, loader, device, progress=True, description="val"):
    """Mean validation losses ({"loss", components}) in eval mode, without gradients; the total is the
    balancer's combination of the groups. With the transfer nets it adds the consistency energy of the
    same predictions (utils.consistency_energy: ENERGY_KEYS). Under torchrun each process evaluates its
    shard of `loader` with the model outside DDP (the processes may load different numbers of batches);
    the means are those of every process."""
    model = distributed.unwrap_model(parts.model)
    model.eval()
    meter, energy = LossMeter(device, parts.component_names()), ConsistencyEnergyMeter(device)
    for batch in tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True):
        image, targets, _ = split_batch(move_batch(batch, device), parts.normals)
        outputs = forward(model, image, parts.speed)
        terms = parts.criterion(outputs, *targets)
        meter.update(parts.balancer.combine(terms.groups()), terms, image.shape[0])
        energy.update(outputs, image.shape[0])
    meter.reduce_across_processes()
    energy.reduce_across_processes()
    check_finite(meter, model, description)
    return {**meter.means(), **energy.values()}


def batches_without_data(loader):
    """How many global batches of `loader` give this process no image (under torchrun the last batch
    may leave some processes without a share; see data.sampling); 0 in one process."""
    if not distributed.is_initialized():
        return 0
    return loader.batch_sampler.batch_count - len(loader)


@torch.inference_mode()
def evaluate_metrics(model, loader, device, num_classes, ignore_index, progress=True, with_transfer=False):
    """(metrics, depth_pairs, energy) over `loader`: both metric protocols of the direct predictions; a
    subsample of valid depth pixels as (ground truth [P], prediction [P]) CPU tensors for the depth-error
    plot; with `with_transfer` and a model with transfer nets, the consistency energy of the same forward
    passes (utils.consistency_energy: ENERGY_KEYS), else {}. Under torchrun the metrics and the energy are
    those of every process's shard together (the plotted subsample is this process's)."""
    model.eval()
    metrics = MultiTaskMetrics.over_processes(num_classes, ignore_index, model.tasks)
    energy = ConsistencyEnergyMeter(device)
    sampled_targets, sampled_predictions = [], []
    normals = loader.dataset.reads_normals
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False, dynamic_ncols=True):
        image, targets, _ = split_batch(move_batch(batch, device), normals)
        segmentation_target, depth_target = targets[:2]
        outputs = model(image, direct_only=not with_transfer)
        energy.update(outputs, image.shape[0])
        measured_normals = {"normal_prediction": outputs.normal, "normal_target": targets[2]} \
            if NORMAL in model.tasks else {}
        metrics.update(outputs.segmentation, segmentation_target, outputs.depth, depth_target, **measured_normals)
        if outputs.depth is not None:
            valid = depth_target > 0
            stride = max(1, math.ceil(int(valid.sum()) / DEPTH_PLOT_PIXELS_PER_BATCH))
            sampled_targets.append(depth_target[valid][::stride].float().cpu())
            sampled_predictions.append(outputs.depth[valid][::stride].float().cpu())
    depth_pairs = (torch.cat(sampled_targets), torch.cat(sampled_predictions)) if sampled_targets else None
    computed = metrics.compute_over_processes(batches_without_data(loader), device)
    energy.reduce_across_processes()  # after the global batches this process held no image of, as the others
    return computed, depth_pairs, energy.values()


@torch.inference_mode()
def constant_baseline_metrics(train_set, loader, device):
    """Both metric protocols on `loader` for a constant predictor: the training set's most frequent
    class and its mean valid depth (the bar a model that learns nothing would reach)."""
    class_counts = torch.zeros(train_set.num_classes, dtype=torch.float64)
    depth_sum, depth_count = 0.0, 0
    for sample in train_set:
        segmentation_target, depth_target = sample[1], sample[2]
        valid = segmentation_target != train_set.ignore_index
        class_counts += torch.bincount(segmentation_target[valid], minlength=train_set.num_classes).double()
        depth_sum += float(depth_target[depth_target > 0].sum())
        depth_count += int((depth_target > 0).sum())
    logits = torch.nn.functional.one_hot(class_counts.argmax(), train_set.num_classes).double().view(1, -1, 1, 1)
    metrics = MultiTaskMetrics.over_processes(train_set.num_classes, train_set.ignore_index, ("segmentation", "depth"))
    for batch in loader:
        segmentation_target, depth_target = move_batch(batch, device)[1:3]
        batch_logits = logits.to(device).expand(len(segmentation_target), -1, *segmentation_target.shape[-2:])
        metrics.update(batch_logits, segmentation_target, torch.full_like(depth_target, depth_sum / max(depth_count, 1)),
                       depth_target)
    return metrics.compute_over_processes(batches_without_data(loader), device)


@torch.inference_mode()
def predict_samples(model, dataset, indices, device, direct_only):
    """Predictions for dataset[indices] as a list of dicts of CPU tensors (image, targets, outputs)."""
    model.eval()
    samples = [dataset[index] for index in indices]
    image = torch.stack([sample[0] for sample in samples]).to(device)
    outputs = model(image, direct_only=direct_only)
    rows = []
    for position, (sample_image, segmentation_target, depth_target) in enumerate(sample[:3] for sample in samples):
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


def recorded_components(record):
    """The loss components in a history row (its "train_{name}" columns but the total's)."""
    return tuple(key[len("train_"):] for key in record if key.startswith("train_") and key != "train_loss")


def epoch_record(epoch, train, val, balancing_weights, learning_rate, seconds):
    """One row of the per-epoch history: every printed figure, flat (a training-only component, KD4MTL's
    distillation, has no val_ column)."""
    record = {"epoch": epoch, "train_loss": train["loss"], "val_loss": val["loss"]}
    components = [name for name in train if name not in ("loss", "images_per_second")]
    record.update({f"train_{name}": train[name] for name in components})
    record.update({f"val_{name}": val[name] for name in components if name in val})
    record.update({f"val_{key}": val[key] for key in ENERGY_KEYS if key in val})
    record.update(balancing_weights)
    record.update({"lr": learning_rate, "images_per_second": train["images_per_second"], "epoch_seconds": seconds})
    return record


def format_epoch_line(record, epochs):
    """The one line printed per epoch."""
    components = " ".join(f"{name}={record['train_' + name]:.4f}" + (f"/{record['val_' + name]:.4f}"
                                                                    if "val_" + name in record else "")
                          for name in recorded_components(record))
    weights = " ".join(f"{key}={value:.4f}" for key, value in record.items()
                       if key.startswith(("sigma_", "w_")))
    energy = ("val " + describe({key: record["val_" + key] for key in ENERGY_KEYS}) + " | "
              if "val_" + ENERGY in record else "")
    return (f"epoch {record['epoch']:>3}/{epochs}  train {record['train_loss']:.4f}  val {record['val_loss']:.4f}  "
            f"| train/val {components} | {energy}{weights + ' | ' if weights else ''}lr {record['lr']:.2e}  "
            f"{record['images_per_second']:.1f} img/s  {record['epoch_seconds']:.1f} s")


def fit(parts, loaders, device, recorder, stop, progress=True):
    """The epoch loop from the recorder's next epoch to `recorder.epochs`: the balancer's start of
    epoch, train, validation loss, scheduler step, the epoch line printed, then
    `recorder.record_epoch(record)` (checkpoints; under torchrun written by rank 0, and an error there
    stops every process). loaders: (train, val). Returns the history."""
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
        distributed.run_on_every_process(recorder.record_epoch, record)
    return recorder.history
