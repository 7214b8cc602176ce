"""The surface-normal loss of MTAN's original code (model/mtan/utils.py, `model_fit(..., 'normal')`)."""


def valid_normal_pixels(target):
    """bool [N, 1, H, W]: pixels whose target normal [N, 3, H, W] is not all zero (all zero marks a missing normal)."""
    return (target != 0).any(dim=1, keepdim=True)


def normal_loss(prediction, target):
    """1 - the mean, over valid pixels, of the dot product of prediction and target (both [N, 3, H, W];
    the prediction unit length, as MTAN's normal head gives it): 0 when they agree everywhere, a scalar.
    0 (with a gradient path) when no pixel is valid."""
    valid = valid_normal_pixels(target)
    dot = (prediction * target).sum(dim=1, keepdim=True)
    return 1 - (dot * valid).sum() / valid.sum().clamp_min(1)
