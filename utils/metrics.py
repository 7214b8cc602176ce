"""Evaluation metrics for semantic segmentation + depth, under two protocols reported side by side.

Standard protocol (keys without a suffix; what modern multi-task papers report): everything is
accumulated over the whole evaluation set. Segmentation uses one confusion matrix over all valid
pixels; mIoU is the mean IoU over the classes whose union (prediction or ground truth) is non-empty,
pixel accuracy is correct / valid pixels. The depth metrics are averaged over all valid depth
pixels (target > 0) of the set, with p the prediction, g the target and p+ = max(p,
DEPTH_PREDICTION_FLOOR) the prediction clamped where a log or a ratio needs it:

- abs = mean |p - g|, abs_rel = mean |p - g| / g, rmse = sqrt(mean (p - g)^2),
  sq_rel = mean (p - g)^2 / g (all on the unclamped p);
- rmse_log = sqrt(mean (log p+ - log g)^2);
- delta1, delta2, delta3 = fraction (in [0, 1]) of the pixels with max(p+ / g, g / p+) below
  1.25, 1.25^2, 1.25^3.

rmse_log and the deltas are the same whether the maps hold depth or disparity (for predictions
above the floor, inverting both p and g flips the sign of log p - log g and swaps the two ratios
of the symmetric delta).

Paper protocol (keys ending in ``_paper``; how the original paper's table was computed): mIoU and
pixel accuracy are computed per image and averaged over images; depth Abs and Abs Rel are computed
per batch over its valid pixels and averaged over batches weighted by batch size. Images (batches)
without any valid segmentation (depth) pixel are left out of these averages.

Surface normals (task "normal", standard protocol only): over all valid pixels of the set (a target
vector that is not all zero), the angle in degrees between the prediction (normalised to unit length)
and the target: normal_mean, normal_median, and normal_11_25, normal_22_5, normal_30, the fractions in
[0, 1] of pixels with an angle below 11.25, 22.5 and 30 degrees. The median comes from a histogram of
the angles with NORMAL_HISTOGRAM_BINS bins over [0, 180] degrees (a sum, like every other accumulator):
it is within half a bin (0.0005 degrees) of the median of the angles themselves.

A metric object measures all its tasks or some of them (``tasks``); another task's prediction is then
None and its keys are absent from ``compute()``.

Every accumulator is a sum, so the global result of a distributed evaluation is obtained by an
``all_reduce`` (SUM) of each tensor in ``state_tensors()`` followed by ``compute()``. The paper
protocol's per-batch depth terms are those of the whole (global) batch when every process holds a shard
of each batch and the metric is given ``batch_sum`` (see ``MultiTaskMetrics``).
"""

import math
from typing import Optional

import torch

from utils import distributed

# Smallest prediction used where a log or a ratio needs a positive value (rmse_log and the deltas),
# in the units of the depth target; abs, abs_rel, rmse and sq_rel use the unclamped prediction.
DEPTH_PREDICTION_FLOOR = 1e-6

# Thresholds on max(prediction / target, target / prediction) of delta1, delta2 and delta3.
DELTA_THRESHOLDS = (1.25, 1.25**2, 1.25**3)

# Angles (degrees) below which normal_11_25, normal_22_5 and normal_30 count a pixel, by key.
NORMAL_THRESHOLDS = {"normal_11_25": 11.25, "normal_22_5": 22.5, "normal_30": 30.0}
NORMAL_HISTOGRAM_BINS = 180_000  # 0.001-degree bins over [0, 180]

STATE_NAMES = (
    "confusion_matrix",
    "depth_abs_error_sum",
    "depth_relative_error_sum",
    "depth_squared_error_sum",
    "depth_squared_relative_error_sum",
    "depth_squared_log_error_sum",
    "depth_delta1_count",
    "depth_delta2_count",
    "depth_delta3_count",
    "depth_valid_pixel_count",
    "paper_image_miou_sum",
    "paper_image_pixel_acc_sum",
    "paper_image_count",
    "paper_batch_abs_weighted_sum",
    "paper_batch_abs_rel_weighted_sum",
    "paper_batch_weight_total",
    "normal_angle_sum",
    "normal_valid_pixel_count",
    *(f"{key}_count" for key in NORMAL_THRESHOLDS),
    "normal_angle_histogram",
)

# The keys of compute() that each task's predictions are measured by.
TASK_METRIC_KEYS = {
    "segmentation": ("miou", "pixel_acc", "iou", "miou_paper", "pixel_acc_paper"),
    "depth": ("abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "delta1", "delta2", "delta3", "abs_paper",
              "abs_rel_paper"),
    "normal": ("normal_mean", "normal_median", *NORMAL_THRESHOLDS),
}


class MultiTaskMetrics:
    """Accumulates segmentation and depth metrics (or those of one of the two tasks, see ``tasks``)
    over an evaluation set, under both protocols.

    State is kept in tensors on the device of the inputs: ``confusion_matrix`` (int64 [C, C], rows
    are ground-truth classes, columns predicted classes), ``paper_image_count`` (int64 scalar) and
    float64 scalars for the depth sums (errors, squared errors, squared relative and squared log
    errors, and the pixel counts within each delta threshold), the valid depth pixel count and the
    paper protocol's running sums. All of them are plain sums over the data seen; those of a task
    that is not measured stay zero.

    Distributed use: after the local ``update`` calls, run
    ``torch.distributed.all_reduce(tensor, op=SUM)`` on every tensor of ``state_tensors()`` (they
    are the live accumulators, so the reduction updates this object in place); ``compute()`` then
    gives the global result on every rank. Without a process group, ``merge_`` adds another
    object's state and ``load_state_tensors`` replaces this object's state.

    When each batch is split over the processes (process r holds a shard of every global batch), the
    paper protocol's per-batch depth averages must be those of the global batch: give ``batch_sum``, a
    function that sums a float64 tensor over the processes in place (``all_reduce`` SUM). ``update``
    then sums the batch's absolute and relative errors and valid pixel count over the processes before
    dividing, and each process adds that global batch average weighted by its own shard's image count
    (the shards' weights add up to the batch size). Every process must call ``update`` once per global
    batch, or ``join_batch_without_data`` for a batch of which it holds no image.
    """

    def __init__(self, num_classes: int, ignore_index: int = 250, tasks=("segmentation", "depth"),
                 batch_sum=None):
        """num_classes: number of segmentation classes C; ignore_index: target label of unlabelled
        pixels (excluded from every segmentation metric); tasks: the tasks measured, some of
        "segmentation", "depth" and "normal"; batch_sum: None (each update is a whole batch) or the
        in-place sum over processes described above."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if isinstance(tasks, str) or not tasks or len(set(tasks)) != len(tasks) or set(tasks) - set(TASK_METRIC_KEYS):
            raise ValueError(
                f"tasks {tasks!r}: expected some of {', '.join(TASK_METRIC_KEYS)}, without repeats")
        self.num_classes = num_classes
        self.tasks = tuple(task for task in TASK_METRIC_KEYS if task in tasks)
        self.ignore_index = ignore_index
        self.batch_sum = batch_sum
        self._state = {name: torch.zeros((), dtype=torch.float64) for name in STATE_NAMES}
        self._state["confusion_matrix"] = torch.zeros((num_classes, num_classes), dtype=torch.int64)
        self._state["paper_image_count"] = torch.zeros((), dtype=torch.int64)
        self._state["normal_angle_histogram"] = torch.zeros(NORMAL_HISTOGRAM_BINS, dtype=torch.int64)

    @classmethod
    def over_processes(cls, num_classes: int, ignore_index: int, tasks) -> "MultiTaskMetrics":
        """The metrics of an evaluation loop in which, under torchrun, each process loads a shard of every
        batch: the paper protocol's batch terms are then summed over the processes batch by batch (one
        process: plain metrics)."""
        batch_sum = distributed.all_reduce_sum if distributed.is_initialized() else None
        return cls(num_classes, ignore_index, tasks=tasks, batch_sum=batch_sum)

    def compute_over_processes(self, batches_without_data: int, device) -> dict:
        """``compute()`` after an evaluation loop; under torchrun, first `batches_without_data` global
        batches this process held no image of, then every accumulator summed over the processes (on
        `device`, where the collectives run)."""
        if distributed.is_initialized():
            for _ in range(batches_without_data):
                self.join_batch_without_data(device)
            self.load_state_tensors({name: distributed.all_reduce_sum(tensor.to(device))
                                     for name, tensor in self.state_tensors().items()})
        return self.compute()

    def reset(self) -> None:
        """Zero all accumulated state in place (the state tensors stay on their current device)."""
        for tensor in self._state.values():
            tensor.zero_()

    def state_tensors(self) -> dict:
        """The live accumulator tensors by name (not copies): confusion_matrix int64 [C, C],
        paper_image_count int64 [], the rest float64 []. Summing them over processes (e.g. with
        ``torch.distributed.all_reduce``) gives the state of the whole evaluation set."""
        return self._state

    def load_state_tensors(self, state: dict) -> None:
        """Replace the accumulated state with copies of `state` (same names, shapes as
        ``state_tensors()``), cast to the dtypes and device of the current state."""
        self._check_state_dict(state)
        self._state = {
            name: state[name].detach().to(dtype=current.dtype, device=current.device).clone()
            for name, current in self._state.items()
        }

    def merge_(self, other_state: dict) -> "MultiTaskMetrics":
        """Add another accumulator's ``state_tensors()`` to this one in place; returns self."""
        self._check_state_dict(other_state)
        for name, current in self._state.items():
            current += other_state[name].detach().to(dtype=current.dtype, device=current.device)
        return self

    def _check_state_dict(self, state: dict) -> None:
        """Raise ValueError unless `state` has exactly the accumulator names and shapes."""
        if set(state) != set(STATE_NAMES):
            raise ValueError(
                f"state names {sorted(state)} do not match the expected {sorted(STATE_NAMES)}"
            )
        for name, current in self._state.items():
            if tuple(state[name].shape) != tuple(current.shape):
                raise ValueError(
                    f"state '{name}' has shape {tuple(state[name].shape)}, "
                    f"expected {tuple(current.shape)}"
                )

    def _check_inputs(self, segmentation_logits, segmentation_target, depth_prediction, depth_target,
                      normals=(None, None)):
        """Raise ValueError on a prediction given for a task that is not measured, on a prediction or
        target missing for a measured one, and on shapes or dtypes that do not fit together (no
        device sync). normals: (normal_prediction, normal_target)."""
        inputs = (
            ("segmentation", "segmentation_logits", segmentation_logits, "segmentation_target", segmentation_target),
            ("depth", "depth_prediction", depth_prediction, "depth_target", depth_target),
            ("normal", "normal_prediction", normals[0], "normal_target", normals[1]),
        )
        for task, prediction_name, prediction, target_name, target in inputs:
            measured = task in self.tasks
            if not measured and prediction is not None:
                raise ValueError(f"{prediction_name} given, but {task} is not among the measured tasks {self.tasks}")
            if measured and (prediction is None or target is None):
                missing = prediction_name if prediction is None else target_name
                raise ValueError(f"{missing} is None, but {task} is among the measured tasks {self.tasks}")
        if segmentation_logits is not None:
            self._check_segmentation_inputs(segmentation_logits, segmentation_target)
        if depth_prediction is not None:
            self._check_depth_inputs(depth_prediction, depth_target, segmentation_logits)
        if normals[0] is not None and (tuple(normals[0].shape) != tuple(normals[1].shape) or normals[1].dim() != 4
                                       or normals[1].shape[1] != 3):
            raise ValueError(f"normal_prediction and normal_target must both be [N, 3, H, W], got "
                             f"{tuple(normals[0].shape)} and {tuple(normals[1].shape)}")

    def _check_segmentation_inputs(self, segmentation_logits, segmentation_target):
        """Raise ValueError unless logits [N, C, H, W] and integer target [N, H, W] fit together."""
        if segmentation_logits.dim() != 4 or segmentation_logits.shape[1] != self.num_classes:
            raise ValueError(
                f"segmentation_logits must be [N, {self.num_classes}, H, W], "
                f"got {tuple(segmentation_logits.shape)}"
            )
        batch_size, _, height, width = segmentation_logits.shape
        if tuple(segmentation_target.shape) != (batch_size, height, width):
            raise ValueError(
                f"segmentation_target shape {tuple(segmentation_target.shape)} does not match "
                f"segmentation_logits shape {tuple(segmentation_logits.shape)} (expected "
                f"{(batch_size, height, width)})"
            )
        if segmentation_target.is_floating_point() or segmentation_target.is_complex():
            raise ValueError(
                f"segmentation_target must hold integer labels, got dtype {segmentation_target.dtype}"
            )

    @staticmethod
    def _check_depth_inputs(depth_prediction, depth_target, segmentation_logits):
        """Raise ValueError unless prediction and target are both [N, 1, H, W], N the batch size of
        segmentation_logits when that is given."""
        if tuple(depth_prediction.shape) != tuple(depth_target.shape):
            raise ValueError(
                f"depth_prediction shape {tuple(depth_prediction.shape)} does not match "
                f"depth_target shape {tuple(depth_target.shape)}"
            )
        if depth_target.dim() != 4 or depth_target.shape[1] != 1:
            raise ValueError(f"depth_target must be [N, 1, H, W], got {tuple(depth_target.shape)}")
        if segmentation_logits is not None and depth_target.shape[0] != segmentation_logits.shape[0]:
            raise ValueError(
                f"depth_target must be [{segmentation_logits.shape[0]}, 1, H, W] to match segmentation_logits "
                f"shape {tuple(segmentation_logits.shape)}, got {tuple(depth_target.shape)}"
            )

    @torch.no_grad()
    def update(
        self,
        segmentation_logits: Optional[torch.Tensor],
        segmentation_target: Optional[torch.Tensor],
        depth_prediction: Optional[torch.Tensor],
        depth_target: Optional[torch.Tensor],
        normal_prediction: Optional[torch.Tensor] = None,
        normal_target: Optional[torch.Tensor] = None,
    ) -> None:
        """Accumulate one batch.

        segmentation_logits: float [N, C, H, W], class scores (the argmax is the prediction);
        segmentation_target: integer [N, H, W], class labels in [0, C) or ignore_index;
        depth_prediction, depth_target: float [N, 1, H, W] in the same units (e.g. metres, or
        disparity); a pixel is valid where depth_target > 0; normal_prediction, normal_target: float
        [N, 3, H, W] surface normals (the prediction is normalised here; a target pixel is valid where
        its vector is not all zero). The prediction of a task that is not
        measured must be None (its target, tensor or None, is ignored). Raises ValueError on
        mismatched shapes, on a prediction that does not fit ``tasks`` and on a label outside [0, C)
        that is not ignore_index.
        """
        self._check_inputs(segmentation_logits, segmentation_target, depth_prediction, depth_target,
                           (normal_prediction, normal_target))
        device = next(prediction for prediction in (segmentation_logits, depth_prediction, normal_prediction)
                      if prediction is not None).device
        if self._state["confusion_matrix"].device != device:
            self._state = {name: tensor.to(device) for name, tensor in self._state.items()}
        if segmentation_logits is not None:
            self._update_segmentation(segmentation_logits, segmentation_target.to(device))
        if depth_prediction is not None:
            self._update_depth(depth_prediction.to(device), depth_target.to(device))
        if normal_prediction is not None:
            self._update_normal(normal_prediction, normal_target.to(device))

    def _update_segmentation(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add the batch to the confusion matrix and to the per-image (paper) sums."""
        num_classes = self.num_classes
        batch_size = logits.shape[0]
        target = target.long()
        valid = target != self.ignore_index
        if bool((valid & ((target < 0) | (target >= num_classes))).any()):
            raise ValueError(
                f"segmentation_target has labels outside [0, {num_classes}) that are not "
                f"ignore_index={self.ignore_index}"
            )
        prediction = logits.argmax(dim=1)
        image_index = torch.arange(batch_size, device=logits.device).view(batch_size, 1, 1)
        cell_count = batch_size * num_classes * num_classes
        cell_index = image_index * num_classes * num_classes + target * num_classes + prediction
        # Ignored pixels go to one extra bin past the last cell, which is dropped.
        cell_index = torch.where(valid, cell_index, cell_count)
        per_image_confusion = torch.bincount(cell_index.flatten(), minlength=cell_count + 1)[
            :cell_count
        ].view(batch_size, num_classes, num_classes)
        self._state["confusion_matrix"] += per_image_confusion.sum(dim=0)

        per_image_confusion = per_image_confusion.double()
        intersection = per_image_confusion.diagonal(dim1=1, dim2=2)  # [N, C]
        union = per_image_confusion.sum(dim=2) + per_image_confusion.sum(dim=1) - intersection
        class_present = union > 0
        iou = intersection / union.clamp_min(1)
        present_class_count = class_present.sum(dim=1)
        image_miou = (iou * class_present).sum(dim=1) / present_class_count.clamp_min(1)
        valid_pixel_count = per_image_confusion.sum(dim=(1, 2))
        image_pixel_acc = intersection.sum(dim=1) / valid_pixel_count.clamp_min(1)
        image_counted = valid_pixel_count > 0
        self._state["paper_image_miou_sum"] += (image_miou * image_counted).sum()
        self._state["paper_image_pixel_acc_sum"] += (image_pixel_acc * image_counted).sum()
        self._state["paper_image_count"] += image_counted.sum()

    def _update_depth(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add the batch's depth errors (float64, target units) to the dataset and batch sums."""
        prediction = prediction.double()
        target = target.double()
        valid = target > 0
        safe_target = torch.where(valid, target, 1.0)
        absolute_error = torch.where(valid, (prediction - target).abs(), 0.0)
        relative_error = absolute_error / safe_target
        squared_error = absolute_error.square()
        clamped_prediction = prediction.clamp_min(DEPTH_PREDICTION_FLOOR)
        log_error = torch.where(valid, clamped_prediction.log() - safe_target.log(), 0.0)
        ratio = torch.maximum(clamped_prediction / safe_target, safe_target / clamped_prediction)
        batch_sums = torch.stack([absolute_error.sum(), relative_error.sum(), valid.sum().double()])
        self._state["depth_abs_error_sum"] += batch_sums[0]
        self._state["depth_relative_error_sum"] += batch_sums[1]
        self._state["depth_squared_error_sum"] += squared_error.sum()
        self._state["depth_squared_relative_error_sum"] += (squared_error / safe_target).sum()
        self._state["depth_squared_log_error_sum"] += log_error.square().sum()
        for delta_number, threshold in enumerate(DELTA_THRESHOLDS, start=1):
            within_threshold = valid & (ratio < threshold)
            self._state[f"depth_delta{delta_number}_count"] += within_threshold.sum(dtype=torch.float64)
        self._state["depth_valid_pixel_count"] += batch_sums[2]
        self._add_paper_batch(batch_sums, target.shape[0])

    def _update_normal(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add the batch's angles (degrees, float64) between the normalised prediction and the target."""
        valid = target.abs().sum(dim=1) > 0
        prediction = torch.nn.functional.normalize(prediction.double(), dim=1)
        cosine = (prediction * target.double()).sum(dim=1).clamp(-1.0, 1.0)
        angle = torch.rad2deg(torch.acos(cosine[valid]))
        self._state["normal_angle_sum"] += angle.sum()
        self._state["normal_valid_pixel_count"] += angle.numel()
        for key, threshold in NORMAL_THRESHOLDS.items():
            self._state[f"{key}_count"] += (angle < threshold).sum(dtype=torch.float64)
        bins = (angle * (NORMAL_HISTOGRAM_BINS / 180.0)).long().clamp(0, NORMAL_HISTOGRAM_BINS - 1)
        self._state["normal_angle_histogram"] += torch.bincount(bins, minlength=NORMAL_HISTOGRAM_BINS)

    def _normal_median(self) -> float:
        """The median angle (degrees) from the histogram: the centre of the middle bin, or the mean of the
        centres of the two middle bins for an even pixel count (as numpy.median); NaN without pixels."""
        histogram = self._state["normal_angle_histogram"]
        count = int(histogram.sum())
        if count == 0:
            return math.nan
        cumulative = histogram.cumsum(0)
        positions = torch.tensor([(count - 1) // 2, count // 2], device=histogram.device)
        middle_bins = torch.searchsorted(cumulative, positions, right=True)
        return float(((middle_bins.double() + 0.5) * (180.0 / NORMAL_HISTOGRAM_BINS)).mean())

    def _add_paper_batch(self, batch_sums: torch.Tensor, image_count: int) -> None:
        """Add one batch's paper-protocol depth terms: batch_sums holds its (absolute error sum, relative
        error sum, valid pixel count), summed over the processes first when ``batch_sum`` is set;
        image_count is the number of this process's images of the batch (its weight)."""
        if self.batch_sum is not None:
            batch_sums = batch_sums.clone()
            self.batch_sum(batch_sums)
        abs_error_sum, relative_error_sum, pixel_count = batch_sums
        batch_weight = float(image_count) * (pixel_count > 0).double()
        self._state["paper_batch_abs_weighted_sum"] += (
            batch_weight * abs_error_sum / pixel_count.clamp_min(1)
        )
        self._state["paper_batch_abs_rel_weighted_sum"] += (
            batch_weight * relative_error_sum / pixel_count.clamp_min(1)
        )
        self._state["paper_batch_weight_total"] += batch_weight

    @torch.no_grad()
    def join_batch_without_data(self, device) -> None:
        """Take part in a global batch of which this process holds no image (its shard of the last batch
        is empty): with ``batch_sum`` and depth measured, contribute zeros on `device` (the device the
        other processes' inputs are on) to that batch's sum over the processes; otherwise nothing."""
        if self.batch_sum is not None and "depth" in self.tasks:
            self._state = {name: tensor.to(device) for name, tensor in self._state.items()}
            self._add_paper_batch(torch.zeros(3, dtype=torch.float64, device=device), 0)

    def compute(self) -> dict:
        """The metrics of everything accumulated, as Python floats (NaN where nothing valid was seen).

        Standard protocol, in this order: miou, pixel_acc (fractions in [0, 1]); abs, abs_rel, rmse,
        rmse_log, sq_rel, delta1, delta2, delta3 over all valid depth pixels (p prediction, g
        target, p+ = max(p, DEPTH_PREDICTION_FLOOR)): mean |p - g|, mean |p - g| / g,
        sqrt(mean (p - g)^2), sqrt(mean (log p+ - log g)^2), mean (p - g)^2 / g, and the fractions
        in [0, 1] of pixels with max(p+ / g, g / p+) < 1.25, 1.25^2, 1.25^3 (rmse_log and the
        deltas are the same for depth and disparity maps, the ratio being symmetric); then iou
        (list of C per-class IoUs, NaN for a class with empty union).
        Paper protocol: miou_paper, pixel_acc_paper, abs_paper, abs_rel_paper. Surface normals:
        normal_mean, normal_median (degrees), normal_11_25, normal_22_5, normal_30 (fractions).
        Only the keys of the measured tasks are returned (TASK_METRIC_KEYS), in this order.
        """
        state = self._state
        confusion = state["confusion_matrix"].double()
        intersection = confusion.diagonal()
        union = confusion.sum(dim=1) + confusion.sum(dim=0) - intersection
        iou = torch.where(union > 0, intersection / union.clamp_min(1), math.nan)
        depth_count = state["depth_valid_pixel_count"]
        image_count = state["paper_image_count"].double()
        batch_weight_total = state["paper_batch_weight_total"]
        # 0 / 0 on float64 tensors is NaN, which is the value reported when nothing valid was seen.
        results = {
            "miou": iou.nanmean().item(),
            "pixel_acc": (intersection.sum() / confusion.sum()).item(),
            "abs": (state["depth_abs_error_sum"] / depth_count).item(),
            "abs_rel": (state["depth_relative_error_sum"] / depth_count).item(),
            "rmse": (state["depth_squared_error_sum"] / depth_count).sqrt().item(),
            "rmse_log": (state["depth_squared_log_error_sum"] / depth_count).sqrt().item(),
            "sq_rel": (state["depth_squared_relative_error_sum"] / depth_count).item(),
            "delta1": (state["depth_delta1_count"] / depth_count).item(),
            "delta2": (state["depth_delta2_count"] / depth_count).item(),
            "delta3": (state["depth_delta3_count"] / depth_count).item(),
            "iou": iou.tolist(),
            "miou_paper": (state["paper_image_miou_sum"] / image_count).item(),
            "pixel_acc_paper": (state["paper_image_pixel_acc_sum"] / image_count).item(),
            "abs_paper": (state["paper_batch_abs_weighted_sum"] / batch_weight_total).item(),
            "abs_rel_paper": (state["paper_batch_abs_rel_weighted_sum"] / batch_weight_total).item(),
            "normal_mean": (state["normal_angle_sum"] / state["normal_valid_pixel_count"]).item(),
            "normal_median": self._normal_median(),
            **{key: (state[f"{key}_count"] / state["normal_valid_pixel_count"]).item() for key in NORMAL_THRESHOLDS},
        }
        measured_keys = {key for task in self.tasks for key in TASK_METRIC_KEYS[task]}
        return {key: value for key, value in results.items() if key in measured_keys}
