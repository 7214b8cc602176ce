"""Depth losses on valid pixels, averaged per image then over the batch."""
import torch
import torch.nn.functional as F

DEPTH_LOSSES = ("L1", "MSE", "logL1", "smoothL1")
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def resolve_name(name, choices, parameter):
    """The entry of `choices` that equals `name` ignoring case; a ValueError naming `parameter` otherwise."""
    for choice in choices:
        if str(name).lower() == choice.lower():
            return choice
    raise ValueError(f"{parameter} {name!r}: unknown loss; expected one of {', '.join(choices)}")


def pixel_error(prediction, target, kind):
    """Elementwise depth error of `kind` (L1 |d|, MSE d^2, logL1 log(1+|d|), smoothL1 Huber with beta 1)."""
    difference = prediction - target
    if kind == "L1":
        return difference.abs()
    if kind == "MSE":
        return difference.square()
    if kind == "logL1":
        return torch.log1p(difference.abs())
    if kind == "smoothL1":
        return F.smooth_l1_loss(prediction, target, reduction="none", beta=1.0)
    raise ValueError(f"lp {kind!r}: unknown loss; expected one of {', '.join(DEPTH_LOSSES)}")


def per_image_masked_mean(pixel_loss, mask, valid_count=None):
    """Mean over images of (sum of `pixel_loss` where `mask`) / (valid pixels of the image).

    pixel_loss, mask: [N,...] (mask bool, same shape); valid_count: optional [N] divisor (defaults to the
    mask's count). An image without valid pixels contributes 0; the mean is over all N images.
    """
    batch = pixel_loss.shape[0]
    summed = torch.where(mask, pixel_loss, torch.zeros_like(pixel_loss)).reshape(batch, -1).sum(dim=1)
    if valid_count is None:
        valid_count = mask.reshape(batch, -1).sum(dim=1)
    return (summed / valid_count.clamp(min=1)).mean()


def depth_loss(prediction, target, mask, kind="L1"):
    """Masked per-image depth loss (scalar). prediction, target: [N,1,H,W] in depth units; mask: bool."""
    return per_image_masked_mean(pixel_error(prediction, target, kind), mask)


def ssim_loss(prediction, target, mask):
    """Masked SSIM loss (scalar): clamp((1 - SSIM) / 2, 0, 1) with 3x3 mean pooling (stride 1, no padding)
    of the masked maps, summed per image, divided by the image's valid pixel count, mean over images.

    prediction, target: [N,1,H,W]; mask: bool [N,1,H,W].
    """
    weight = mask.to(prediction.dtype)
    x = prediction * weight
    y = target * weight
    mean_x = F.avg_pool2d(x, 3, stride=1)
    mean_y = F.avg_pool2d(y, 3, stride=1)
    variance_x = F.avg_pool2d(x * x, 3, stride=1) - mean_x.square()
    variance_y = F.avg_pool2d(y * y, 3, stride=1) - mean_y.square()
    covariance = F.avg_pool2d(x * y, 3, stride=1) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_x.square() + mean_y.square() + SSIM_C1) * (variance_x + variance_y + SSIM_C2)
    pixel_loss = ((1 - numerator / denominator) / 2).clamp(0, 1)
    valid_count = mask.reshape(mask.shape[0], -1).sum(dim=1)
    return per_image_masked_mean(pixel_loss, torch.ones_like(pixel_loss, dtype=torch.bool), valid_count)
