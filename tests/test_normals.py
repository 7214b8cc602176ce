"""Surface normals: the loss of MTAN's original code and the angular-error metrics of utils.metrics, both
against NumPy computations written out by hand."""
import numpy as np
import pytest
import torch

from losses.normal import normal_loss
from utils.metrics import NORMAL_HISTOGRAM_BINS, MultiTaskMetrics


def unit_normals(generator, shape):
    """Random unit vectors [N, 3, H, W] (float32)."""
    vectors = torch.randn(shape, generator=generator)
    return vectors / vectors.norm(dim=1, keepdim=True)


def normal_batch(seed, shape=(2, 3, 12, 10), invalid_fraction=0.3):
    """(prediction, target): unit prediction, target near it (angles spread over 0..180 degrees) with some
    pixels all zero (invalid)."""
    generator = torch.Generator().manual_seed(seed)
    target = unit_normals(generator, shape)
    prediction = unit_normals(generator, shape)
    near = torch.rand(shape[0], 1, *shape[2:], generator=generator) < 0.7
    spread = torch.rand(shape[0], 1, *shape[2:], generator=generator)
    prediction = torch.where(near, target + spread * prediction, prediction)
    prediction = prediction / prediction.norm(dim=1, keepdim=True)
    invalid = torch.rand(shape[0], 1, *shape[2:], generator=generator) < invalid_fraction
    return prediction, torch.where(invalid, torch.zeros_like(target), target)


def numpy_angles(prediction, target):
    """Degrees between the normalised prediction and the target at the valid pixels, as in MTAN's
    normal_error but with validity 'not all zero'."""
    prediction, target = prediction.double().numpy(), target.double().numpy()
    prediction = prediction / np.linalg.norm(prediction, axis=1, keepdims=True)
    valid = np.any(target != 0, axis=1)
    cosine = np.clip(np.sum(prediction * target, axis=1)[valid], -1, 1)
    return np.degrees(np.arccos(cosine))


def test_normal_loss_is_one_minus_the_mean_cosine_over_valid_pixels():
    prediction, target = normal_batch(0)
    target_numpy, prediction_numpy = target.numpy(), prediction.numpy()
    valid = np.any(target_numpy != 0, axis=1)
    expected = 1 - np.sum(prediction_numpy * target_numpy, axis=1)[valid].mean()
    assert normal_loss(prediction, target).item() == pytest.approx(expected, rel=1e-5)
    assert normal_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_loss(-target, target).item() == pytest.approx(2.0, rel=1e-6)


def test_normal_loss_reaches_only_valid_pixels():
    prediction, target = normal_batch(1)
    prediction.requires_grad_(True)
    normal_loss(prediction, target).backward()
    invalid = (target == 0).all(dim=1)
    assert prediction.grad.abs().sum(dim=1)[invalid].max() == 0
    assert prediction.grad.abs().sum(dim=1)[~invalid].min() > 0


def test_normal_metrics_over_batches_match_numpy_over_every_valid_pixel():
    batches = [normal_batch(seed) for seed in range(3)]
    metrics = MultiTaskMetrics(num_classes=3, tasks=("normal",))
    for prediction, target in batches:
        metrics.update(None, None, None, None, normal_prediction=2.5 * prediction, normal_target=target)
    angles = np.concatenate([numpy_angles(prediction, target) for prediction, target in batches])
    computed = metrics.compute()
    assert set(computed) == {"normal_mean", "normal_median", "normal_11_25", "normal_22_5", "normal_30"}
    assert computed["normal_mean"] == pytest.approx(angles.mean(), rel=1e-9)
    assert computed["normal_median"] == pytest.approx(np.median(angles), abs=180 / NORMAL_HISTOGRAM_BINS)
    for key, threshold in (("normal_11_25", 11.25), ("normal_22_5", 22.5), ("normal_30", 30)):
        assert computed[key] == pytest.approx(np.mean(angles < threshold), rel=1e-12), key
    assert 0 < computed["normal_11_25"] < computed["normal_22_5"] < computed["normal_30"] < 1


@pytest.mark.parametrize("count", [1, 2, 7])
def test_the_median_follows_numpy_for_odd_and_even_pixel_counts(count):
    target = torch.zeros(1, 3, 1, count)
    target[:, 2] = 1.0
    angles = torch.linspace(3.0, 170.0, count).double()
    radians = torch.deg2rad(angles)
    prediction = torch.stack([torch.sin(radians), torch.zeros_like(radians), torch.cos(radians)]).view(1, 3, 1, count)
    metrics = MultiTaskMetrics(num_classes=3, tasks=("normal",))
    metrics.update(None, None, None, None, normal_prediction=prediction.float(), normal_target=target)
    assert metrics.compute()["normal_median"] == pytest.approx(np.median(angles.numpy()), abs=180 / NORMAL_HISTOGRAM_BINS)


def test_two_halves_merged_give_the_metrics_of_the_whole():
    batches = [normal_batch(seed) for seed in range(4)]
    whole, first, second = (MultiTaskMetrics(num_classes=3, tasks=("normal",)) for _ in range(3))
    for index, (prediction, target) in enumerate(batches):
        whole.update(None, None, None, None, normal_prediction=prediction, normal_target=target)
        (first if index < 2 else second).update(None, None, None, None, normal_prediction=prediction,
                                                normal_target=target)
    assert first.merge_(second.state_tensors()).compute() == whole.compute()


def test_normals_must_be_given_exactly_when_measured():
    prediction, target = normal_batch(2)
    two_tasks = MultiTaskMetrics(num_classes=3)
    with pytest.raises(ValueError, match="normal_prediction given"):
        two_tasks.update(torch.zeros(2, 3, 6, 5), torch.zeros(2, 6, 5, dtype=torch.long), torch.ones(2, 1, 6, 5),
                         torch.ones(2, 1, 6, 5), normal_prediction=prediction, normal_target=target)
    three_tasks = MultiTaskMetrics(num_classes=3, tasks=("segmentation", "depth", "normal"))
    with pytest.raises(ValueError, match="normal_prediction is None"):
        three_tasks.update(torch.zeros(2, 3, 6, 5), torch.zeros(2, 6, 5, dtype=torch.long), torch.ones(2, 1, 6, 5),
                           torch.ones(2, 1, 6, 5))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        three_tasks.update(torch.zeros(2, 3, 6, 5), torch.zeros(2, 6, 5, dtype=torch.long), torch.ones(2, 1, 6, 5),
                           torch.ones(2, 1, 6, 5), normal_prediction=prediction[:, :2], normal_target=target[:, :2])
