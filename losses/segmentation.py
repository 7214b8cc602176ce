"""Segmentation losses: direct cross-entropy and the transferred-segmentation losses."""
import math

import torch
import torch.nn.functional as F

TRANSFERRED_SEGMENTATION_LOSSES = ("cross", "kl")


def segmentation_cross_entropy(logits, target, ignore_index):
    """Cross-entropy (scalar), mean over pixels whose target != ignore_index; 0 when none is valid.

    logits: [N,C,H,W]; target: [N,H,W] int64 class indices.
    """
    valid = target != ignore_index
    per_pixel = F.cross_entropy(logits, torch.where(valid, target, torch.zeros_like(target)), reduction="none")
    return torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum() / valid.sum().clamp(min=1)


def smoothed_target_entropy(num_classes, smoothing):
    """Entropy (nats) of the label-smoothed distribution: 1 - s on the target class, s / (C - 1) elsewhere."""
    entropy = 0.0
    if smoothing < 1:
        entropy -= (1 - smoothing) * math.log(1 - smoothing)
    if smoothing > 0:
        entropy -= smoothing * math.log(smoothing / (num_classes - 1))
    return entropy


def transferred_segmentation_loss(logits, target, valid, smoothing=0.0, kind="cross"):
    """Loss (scalar) of transferred logits against label-smoothed `target` classes, summed over `valid`
    pixels and divided by the number of ALL pixels N*H*W (the paper's scale).

    `cross`: cross-entropy H(q, softmax(logits)); `kl`: KL(q || softmax(logits)) = cross - H(q).
    logits: [N,C,H,W]; target: [N,H,W] int64 in [0, C); valid: bool [N,H,W].
    """
    num_classes = logits.shape[1]
    log_probability = torch.log_softmax(logits, dim=1)
    target_log_probability = log_probability.gather(1, target.unsqueeze(1)).squeeze(1)
    other_log_probability = log_probability.sum(dim=1) - target_log_probability
    per_pixel = -((1 - smoothing) * target_log_probability + smoothing / (num_classes - 1) * other_log_probability)
    if kind == "kl":
        per_pixel = per_pixel - smoothed_target_entropy(num_classes, smoothing)
    return torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum() / target.numel()
