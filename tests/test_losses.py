"""XTaskLoss components against brute-force computations with explicit loops over small tensors."""
import itertools
import math

import numpy as np
import pytest
import torch

from losses import XTaskLoss
from losses.depth import ssim_loss
from models import XTaskOutput

IGNORE = 250


def brute_depth_loss(prediction, target, mask, kind):
    """Per image: sum of the error over valid pixels / valid count (0 when none); mean over the batch."""
    prediction, target, mask = prediction.double().numpy(), target.double().numpy(), mask.numpy()
    per_image = []
    for n in range(prediction.shape[0]):
        total, valid = 0.0, 0
        for index in itertools.product(*(range(s) for s in prediction.shape[1:])):
            if not mask[(n, *index)]:
                continue
            d = prediction[(n, *index)] - target[(n, *index)]
            if kind == "L1":
                error = abs(d)
            elif kind == "MSE":
                error = d * d
            elif kind == "logL1":
                error = math.log(1 + abs(d))
            else:
                error = 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
            total += error
            valid += 1
        per_image.append(total / valid if valid else 0.0)
    return sum(per_image) / len(per_image)


def brute_ssim_loss(prediction, target, mask):
    x = (prediction * mask).double().numpy()
    y = (target * mask).double().numpy()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    batch, _, height, width = x.shape
    per_image = []
    for n in range(batch):
        total = 0.0
        for i in range(height - 2):
            for j in range(width - 2):
                px = x[n, 0, i:i + 3, j:j + 3].ravel()
                py = y[n, 0, i:i + 3, j:j + 3].ravel()
                mx, my = px.mean(), py.mean()
                vx = (px * px).mean() - mx * mx
                vy = (py * py).mean() - my * my
                cxy = (px * py).mean() - mx * my
                ssim = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
                total += min(max((1 - ssim) / 2, 0.0), 1.0)
        valid = int(mask[n].sum())
        per_image.append(total / valid if valid else 0.0)
    return sum(per_image) / batch


def brute_transferred_segmentation(logits, target, valid, smoothing, kind):
    """Sum over valid pixels of CE(q, p) or KL(q || p), divided by N*H*W, with q built explicitly."""
    logits = logits.double().numpy()
    batch, classes, height, width = logits.shape
    total = 0.0
    for n, i, j in itertools.product(range(batch), range(height), range(width)):
        if not valid[n, i, j]:
            continue
        z = logits[n, :, i, j]
        log_p = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        q = np.full(classes, smoothing / (classes - 1))
        q[target[n, i, j]] = 1 - smoothing
        if kind == "cross":
            total += -(q * log_p).sum()
        else:
            total += sum(qc * (math.log(qc) - lp) for qc, lp in zip(q, log_p) if qc > 0)
    return total / (batch * height * width)


def brute_cross_entropy(logits, target):
    logits = logits.double().numpy()
    total, count = 0.0, 0
    for n, i, j in itertools.product(*(range(s) for s in target.shape)):
        label = int(target[n, i, j])
        if label == IGNORE:
            continue
        z = logits[n, :, i, j]
        total += -(z[label] - z.max() - np.log(np.exp(z - z.max()).sum()))
        count += 1
    return total / count


def sample(seed=0, classes=4, batch=3, height=8, width=10):
    generator = torch.Generator().manual_seed(seed)
    outputs = XTaskOutput(
        segmentation=torch.randn(batch, classes, height, width, generator=generator) * 2,
        transferred_segmentation=torch.randn(batch, classes, height, width, generator=generator) * 2,
        depth=torch.rand(batch, 1, height, width, generator=generator) * 3,
        transferred_depth=torch.rand(batch, 1, height, width, generator=generator) * 3,
    )
    segmentation_target = torch.randint(0, classes, (batch, height, width), generator=generator)
    segmentation_target[torch.rand(batch, height, width, generator=generator) < 0.3] = IGNORE
    depth_target = torch.rand(batch, 1, height, width, generator=generator) * 3
    depth_target[torch.rand(batch, 1, height, width, generator=generator) < 0.3] = 0
    depth_target[-1] = 0  # an image without any valid depth pixel
    return outputs, segmentation_target, depth_target


@pytest.mark.parametrize("lp", ["L1", "MSE", "logL1", "smoothL1"])
def test_direct_depth_loss_matches_brute_force(lp):
    outputs, segmentation_target, depth_target = sample(1)
    terms = XTaskLoss(4, 0.1, 0.1, lp=lp, ignore_index=IGNORE)(outputs, segmentation_target, depth_target)
    expected = brute_depth_loss(outputs.depth, depth_target, depth_target > 0, lp)
    assert terms.depth.item() == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(terms.depth.item())


def test_image_without_valid_depth_contributes_zero_but_counts_in_the_mean():
    outputs, segmentation_target, depth_target = sample(2, batch=2)
    depth_target[1] = 0
    terms = XTaskLoss(4, 0, 0, ignore_index=IGNORE)(outputs, segmentation_target, depth_target)
    mask = depth_target[0] > 0
    first_image = (outputs.depth[0] - depth_target[0]).abs()[mask].mean()
    assert terms.depth.item() == pytest.approx(first_image.item() / 2, rel=1e-6)


def test_direct_segmentation_is_cross_entropy_over_valid_pixels():
    outputs, segmentation_target, depth_target = sample(3)
    terms = XTaskLoss(4, 0.1, 0.1, ignore_index=IGNORE)(outputs, segmentation_target, depth_target)
    assert terms.segmentation.item() == pytest.approx(
        brute_cross_entropy(outputs.segmentation, segmentation_target), rel=1e-5)


def test_transferred_depth_l1_uses_detached_direct_depth_on_ground_truth_valid_pixels():
    outputs, segmentation_target, depth_target = sample(4)
    terms = XTaskLoss(4, 0.1, 0.1, ignore_index=IGNORE)(outputs, segmentation_target, depth_target)
    expected = brute_depth_loss(outputs.transferred_depth, outputs.depth, depth_target > 0, "L1")
    assert terms.transferred_depth.item() == pytest.approx(expected, rel=1e-5)


def test_transferred_depth_ssim_matches_brute_force():
    outputs, segmentation_target, depth_target = sample(5, height=7, width=9)
    terms = XTaskLoss(4, 0.1, 0.1, tdep_loss="ssim", ignore_index=IGNORE)(
        outputs, segmentation_target, depth_target)
    expected = brute_ssim_loss(outputs.transferred_depth, outputs.depth, depth_target > 0)
    assert terms.transferred_depth.item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def test_ssim_of_identical_maps_is_zero():
    depth = torch.rand(2, 1, 8, 8) + 0.5
    assert ssim_loss(depth, depth.clone(), depth > 0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["cross", "kl"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_transferred_segmentation_matches_brute_force(kind, smoothing):
    outputs, segmentation_target, depth_target = sample(6)
    criterion = XTaskLoss(4, 0.1, 0.1, label_smoothing=smoothing, tseg_loss=kind, ignore_index=IGNORE)
    terms = criterion(outputs, segmentation_target, depth_target)
    expected = brute_transferred_segmentation(
        outputs.transferred_segmentation, outputs.segmentation.argmax(dim=1).numpy(),
        (segmentation_target != IGNORE).numpy(), smoothing, kind)
    assert terms.transferred_segmentation.item() == pytest.approx(expected, rel=1e-5)


def test_kl_is_zero_when_the_transferred_distribution_equals_the_target():
    classes, smoothing = 5, 0.2
    target = torch.randint(0, classes, (2, 4, 4))
    q = torch.full((2, classes, 4, 4), smoothing / (classes - 1))
    q.scatter_(1, target.unsqueeze(1), 1 - smoothing)
    outputs = XTaskOutput(torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float() * 10,
                          q.log(), torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
    terms = XTaskLoss(classes, 0.5, 0.5, label_smoothing=smoothing, tseg_loss="kl")(
        outputs, target, torch.ones(2, 1, 4, 4))
    assert terms.transferred_segmentation.item() == pytest.approx(0.0, abs=1e-6)


def test_groups_weigh_the_transferred_losses_with_alpha_and_gamma():
    outputs, segmentation_target, depth_target = sample(7)
    terms = XTaskLoss(4, alpha=0.3, gamma=0.2, ignore_index=IGNORE)(outputs, segmentation_target, depth_target)
    assert terms.segmentation_group.item() == pytest.approx(
        0.7 * terms.segmentation.item() + 0.3 * terms.transferred_depth.item(), rel=1e-6)
    assert terms.depth_group.item() == pytest.approx(
        0.8 * terms.depth.item() + 0.2 * terms.transferred_segmentation.item(), rel=1e-6)
    torch.testing.assert_close(terms.groups(), torch.stack([terms.segmentation_group, terms.depth_group]))


def test_direct_only_outputs_give_zero_transferred_terms():
    outputs, segmentation_target, depth_target = sample(8)
    direct = outputs._replace(transferred_segmentation=None, transferred_depth=None)
    terms = XTaskLoss(4, 0.3, 0.2, ignore_index=IGNORE)(direct, segmentation_target, depth_target)
    assert terms.transferred_depth.item() == 0 and terms.transferred_segmentation.item() == 0
    assert terms.segmentation_group.item() == pytest.approx(0.7 * terms.segmentation.item())


@pytest.mark.parametrize("arguments,flag", [
    ({"lp": "L3"}, "^lp 'L3'"), ({"tseg_loss": "dice"}, "^tseg_loss 'dice'"),
    ({"tdep_loss": "berhu"}, "^tdep_loss 'berhu'"), ({"alpha": 1.5}, "^alpha 1.5"),
    ({"label_smoothing": 1.0}, "^label_smoothing 1.0"),
])
def test_bad_loss_arguments_are_value_errors_naming_the_parameter(arguments, flag):
    parameters = {"num_classes": 7, "alpha": 0.01, "gamma": 0.01, **arguments}
    with pytest.raises(ValueError, match=flag):
        XTaskLoss(**parameters)


def test_loss_names_are_case_insensitive_as_in_the_original_readme():
    assert XTaskLoss(7, 0.01, 0.01, tdep_loss="SSIM", lp="mse").tdep_loss == "ssim"
