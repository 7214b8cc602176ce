"""XTaskLoss: the four loss components of the cross-task method and the two per-decoder groups."""
from typing import NamedTuple, Optional

import torch
from torch import nn

from losses.depth import DEPTH_LOSSES, depth_loss, resolve_name, ssim_loss
from losses.normal import normal_loss
from losses.segmentation import (TRANSFERRED_SEGMENTATION_LOSSES, segmentation_cross_entropy,
                                 transferred_segmentation_loss)

TRANSFERRED_DEPTH_LOSSES = ("L1", "ssim")
TASKS = ("segmentation", "depth")
# What the transferred predictions are compared with: the detached direct predictions (xtsc, the paper's
# method) or the ground truth (xtc, the original code's alternative in its consistency study).
CONSISTENCY_METHODS = ("xtsc", "xtc")


class XTaskLossTerms(NamedTuple):
    """Scalar loss tensors: the four components and the two groups that reach one decoder each.

    For a single-task loss every term of the other task and both transferred terms are zero tensors,
    and the single task's group is its direct loss, so the plain sum of `groups()` is that loss. `normal`
    and `normal_group` are set when the surface normals are trained, `distillation` (not a group) in a
    KD4MTL training step.
    """

    segmentation: torch.Tensor
    depth: torch.Tensor
    transferred_segmentation: torch.Tensor
    transferred_depth: torch.Tensor
    segmentation_group: torch.Tensor
    depth_group: torch.Tensor
    normal: Optional[torch.Tensor] = None
    normal_group: Optional[torch.Tensor] = None
    distillation: Optional[torch.Tensor] = None

    def groups(self):
        """The group losses stacked: [segmentation_group, depth_group] (shape [2]), then normal_group when
        the surface normals are trained (shape [3])."""
        groups = (self.segmentation_group, self.depth_group)
        return torch.stack(groups if self.normal_group is None else groups + (self.normal_group,))

    def components(self):
        """{component name: scalar tensor}: the four components of COMPONENT_NAMES, then "normal" when the
        surface normals are trained and "distillation" in a KD4MTL training step."""
        names = COMPONENT_NAMES + tuple(name for name in (NORMAL, DISTILLATION) if getattr(self, name) is not None)
        return {name: getattr(self, name) for name in names}


NORMAL = "normal"
# KD4MTL's distillation loss (losses.distillation): a term of the training total outside the groups, added
# unweighted by the balancer (LossBalancer.backward's `extra`).
DISTILLATION = "distillation"
COMPONENT_NAMES = ("segmentation", "depth", "transferred_segmentation", "transferred_depth")


def component_names(tasks):
    """The loss components a run with `tasks` records: COMPONENT_NAMES, and "normal" with surface normals."""
    return COMPONENT_NAMES + ((NORMAL,) if NORMAL in tasks else ())


def combined(direct, transferred, weight, transferred_output):
    """A decoder's group loss: (1 - weight) * direct + weight * transferred, or the direct loss alone when
    the model gave no transferred prediction (a model without transfer nets, such as MTAN)."""
    if transferred_output is None:
        return direct
    return (1 - weight) * direct + weight * transferred


class XTaskLoss(nn.Module):
    """The cross-task loss.

    segmentation_group = (1 - alpha) * segmentation + alpha * transferred_depth
    depth_group        = (1 - gamma) * depth        + gamma * transferred_segmentation
    With consistency "xtsc" the transferred depth is compared with the detached direct depth on pixels
    with ground-truth depth > 0 (`tdep_loss`); the transferred segmentation with the argmax of the
    detached direct segmentation on pixels whose ground-truth label != ignore_index (`tseg_loss`,
    `label_smoothing`). With "xtc" both are compared with the ground truth by the direct losses: the
    transferred depth by `lp` on the same pixels, the transferred segmentation by cross-entropy over the
    pixels whose label != ignore_index (`tdep_loss`, `tseg_loss` and `label_smoothing` must keep their
    defaults: they do not apply).
    With `single_task` ("segmentation" or "depth") the loss is that task's direct loss only: its group
    is the direct loss (alpha and gamma are not used), the other group and terms are zero.
    """

    def __init__(self, num_classes, alpha, gamma, label_smoothing=0.0, lp="L1", tseg_loss="cross",
                 tdep_loss="L1", ignore_index=250, single_task=None, consistency="xtsc"):
        super().__init__()
        for parameter, weight in (("alpha", alpha), ("gamma", gamma)):
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"{parameter} {weight!r}: expected a weight in [0, 1]")
        if single_task is not None and single_task not in TASKS:
            raise ValueError(f"single_task {single_task!r}: expected one of {', '.join(TASKS)} (or None for both)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing {label_smoothing!r}: expected a value in [0, 1)")
        if consistency not in CONSISTENCY_METHODS:
            raise ValueError(f"consistency {consistency!r}: expected one of {', '.join(CONSISTENCY_METHODS)}")
        self.num_classes = num_classes
        self.alpha = alpha
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.lp = resolve_name(lp, DEPTH_LOSSES, "lp")
        self.tseg_loss = resolve_name(tseg_loss, TRANSFERRED_SEGMENTATION_LOSSES, "tseg_loss")
        self.tdep_loss = resolve_name(tdep_loss, TRANSFERRED_DEPTH_LOSSES, "tdep_loss")
        self.tasks = TASKS if single_task is None else (single_task,)
        self.consistency = consistency
        unused = [f"{name} {value!r}" for name, value, default in (
            ("tdep_loss", self.tdep_loss, "L1"), ("tseg_loss", self.tseg_loss, "cross"),
            ("label_smoothing", label_smoothing, 0.0)) if value != default]
        if consistency == "xtc" and unused:
            raise ValueError(f"consistency 'xtc' compares the transferred predictions with the ground truth by "
                             f"the direct losses: {', '.join(unused)} does not apply (keep the default)")

    def forward(self, outputs, segmentation_target, depth_target):
        """XTaskLossTerms for `outputs` (an XTaskOutput, or any output with the same fields),
        segmentation_target [N,H,W] int64 and depth_target [N,1,H,W] (> 0 where valid). A missing
        transferred output gives a zero term and leaves its group the direct loss alone; a single-task
        loss reads only that task's direct output and target."""
        if len(self.tasks) == 1:
            return self._single_task_terms(outputs, segmentation_target, depth_target)
        segmentation_valid = segmentation_target != self.ignore_index
        depth_valid = depth_target > 0
        segmentation = segmentation_cross_entropy(outputs.segmentation, segmentation_target, self.ignore_index)
        depth = depth_loss(outputs.depth, depth_target, depth_valid, self.lp)
        zero = outputs.depth.new_zeros(())
        transferred_depth = zero
        if outputs.transferred_depth is not None:
            if self.consistency == "xtc":
                transferred_depth = depth_loss(outputs.transferred_depth, depth_target, depth_valid, self.lp)
            elif self.tdep_loss == "ssim":
                transferred_depth = ssim_loss(outputs.transferred_depth, outputs.depth.detach(), depth_valid)
            else:
                transferred_depth = depth_loss(outputs.transferred_depth, outputs.depth.detach(), depth_valid, "L1")
        transferred_segmentation = zero
        if outputs.transferred_segmentation is not None:
            if self.consistency == "xtc":
                transferred_segmentation = segmentation_cross_entropy(
                    outputs.transferred_segmentation, segmentation_target, self.ignore_index)
            else:
                transferred_segmentation = transferred_segmentation_loss(
                    outputs.transferred_segmentation, outputs.segmentation.detach().argmax(dim=1),
                    segmentation_valid, self.label_smoothing, self.tseg_loss)
        return XTaskLossTerms(
            segmentation=segmentation,
            depth=depth,
            transferred_segmentation=transferred_segmentation,
            transferred_depth=transferred_depth,
            segmentation_group=combined(segmentation, transferred_depth, self.alpha, outputs.transferred_depth),
            depth_group=combined(depth, transferred_segmentation, self.gamma, outputs.transferred_segmentation),
        )

    def _single_task_terms(self, outputs, segmentation_target, depth_target):
        """XTaskLossTerms of a single-task loss: the task's direct loss as its term and its group, zero
        tensors for everything else."""
        if self.tasks == ("segmentation",):
            segmentation = segmentation_cross_entropy(outputs.segmentation, segmentation_target, self.ignore_index)
            zero = depth = segmentation.new_zeros(())
        else:
            depth = depth_loss(outputs.depth, depth_target, depth_target > 0, self.lp)
            zero = segmentation = depth.new_zeros(())
        return XTaskLossTerms(
            segmentation=segmentation,
            depth=depth,
            transferred_segmentation=zero,
            transferred_depth=zero,
            segmentation_group=segmentation,
            depth_group=depth,
        )


class WithNormalLoss(nn.Module):
    """A multi-task loss with surface normals as a third group: the terms of `base` (an XTaskLoss, or None
    for a single-task normals baseline, whose other terms are then zero) with `normal` = `normal_group` =
    losses.normal.normal_loss of the prediction `outputs.normal`."""

    def __init__(self, base=None):
        super().__init__()
        self.base = base

    def forward(self, outputs, segmentation_target, depth_target, normal_target):
        """XTaskLossTerms with the normal terms, for the targets of XTaskLoss and normal_target [N, 3, H, W]."""
        normal = normal_loss(outputs.normal, normal_target)
        if self.base is None:
            zero = normal.new_zeros(())
            return XTaskLossTerms(zero, zero, zero, zero, zero, zero, normal=normal, normal_group=normal)
        return self.base(outputs, segmentation_target, depth_target)._replace(normal=normal, normal_group=normal)
