"""Tests for utils.metrics.MultiTaskMetrics against brute-force NumPy references written with
explicit Python loops (independent of the module under test)."""

import math

import numpy as np
import pytest
import torch

from utils.metrics import DEPTH_PREDICTION_FLOOR, STATE_NAMES, MultiTaskMetrics

NUM_CLASSES = 5
ABSENT_CLASS = 4  # never predicted and never in the ground truth of the random data
HEIGHT, WIDTH = 6, 7
BATCH_SIZES = (3, 1, 4, 2)


def make_batches(ignore_index, seed=0):
    """Random batches as (logits, target, depth_prediction, depth_target) tuples.

    Batch 0 image 1 has no valid segmentation pixel; batch 1 has no valid depth pixel; about a
    quarter of the other segmentation pixels are ignored and a third of the depth pixels are 0.
    About a tenth of the depth predictions are 0, -1 or -2 (below the clamp of the log and ratios).
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch_number, batch_size in enumerate(BATCH_SIZES):
        logits = torch.randn(batch_size, NUM_CLASSES, HEIGHT, WIDTH, generator=generator)
        logits[:, ABSENT_CLASS] = -1e9
        target = torch.randint(0, NUM_CLASSES - 1, (batch_size, HEIGHT, WIDTH), generator=generator)
        ignored = torch.rand(batch_size, HEIGHT, WIDTH, generator=generator) < 0.25
        target[ignored] = ignore_index
        if batch_number == 0:
            target[1] = ignore_index
        depth_target = torch.rand(batch_size, 1, HEIGHT, WIDTH, generator=generator) * 9 + 0.5
        depth_target[torch.rand(batch_size, 1, HEIGHT, WIDTH, generator=generator) < 0.33] = 0
        if batch_number == 1:
            depth_target.zero_()
        depth_prediction = torch.rand(batch_size, 1, HEIGHT, WIDTH, generator=generator) * 10
        not_positive = torch.rand(batch_size, 1, HEIGHT, WIDTH, generator=generator) < 0.1
        not_positive_values = torch.randint(-2, 1, (batch_size, 1, HEIGHT, WIDTH), generator=generator)
        depth_prediction[not_positive] = not_positive_values[not_positive].float()
        batches.append((logits, target, depth_prediction, depth_target))
    return batches


def feed(metrics, batches):
    for batch in batches:
        metrics.update(*batch)
    return metrics


def reference_image_confusion(prediction, target, ignore_index):
    """[C, C] counts (rows ground truth, columns prediction) of one [H, W] image, by loops."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for row in range(prediction.shape[0]):
        for column in range(prediction.shape[1]):
            label = int(target[row, column])
            if label != ignore_index:
                confusion[label, int(prediction[row, column])] += 1
    return confusion


def reference_iou(confusion):
    """Per-class IoU list from a confusion matrix, NaN where the union is empty, by loops."""
    ious = []
    for class_index in range(NUM_CLASSES):
        intersection = confusion[class_index, class_index]
        union = confusion[class_index, :].sum() + confusion[:, class_index].sum() - intersection
        ious.append(math.nan if union == 0 else intersection / union)
    return ious


def reference_mean(values):
    present = [value for value in values if not math.isnan(value)]
    return sum(present) / len(present) if present else math.nan


def reference_metrics(batches, ignore_index):
    """Both protocols computed with explicit loops over images and pixels."""
    total_confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    image_mious, image_accuracies = [], []
    abs_sum = rel_sum = squared_sum = squared_rel_sum = squared_log_sum = 0.0
    delta_counts = [0, 0, 0]
    depth_count = not_positive_prediction_count = 0
    batch_abs, batch_rel, batch_weights = [], [], []
    for logits, target, depth_prediction, depth_target in batches:
        prediction = logits.numpy().argmax(axis=1)
        for image in range(prediction.shape[0]):
            confusion = reference_image_confusion(prediction[image], target[image].numpy(), ignore_index)
            total_confusion += confusion
            if confusion.sum() > 0:
                image_mious.append(reference_mean(reference_iou(confusion)))
                image_accuracies.append(np.trace(confusion) / confusion.sum())
        batch_abs_sum = batch_rel_sum = 0.0
        batch_count = 0
        predicted_depth = depth_prediction.numpy().astype(np.float64)
        true_depth = depth_target.numpy().astype(np.float64)
        for index in np.ndindex(true_depth.shape):
            if true_depth[index] > 0:
                error = abs(predicted_depth[index] - true_depth[index])
                batch_abs_sum += error
                batch_rel_sum += error / true_depth[index]
                squared_sum += error**2
                squared_rel_sum += error**2 / true_depth[index]
                clamped = max(predicted_depth[index], DEPTH_PREDICTION_FLOOR)
                squared_log_sum += (np.log(clamped) - np.log(true_depth[index])) ** 2
                ratio = max(clamped / true_depth[index], true_depth[index] / clamped)
                for delta_index, threshold in enumerate((1.25, 1.25**2, 1.25**3)):
                    delta_counts[delta_index] += ratio < threshold
                not_positive_prediction_count += predicted_depth[index] <= 0
                batch_count += 1
        abs_sum += batch_abs_sum
        rel_sum += batch_rel_sum
        depth_count += batch_count
        if batch_count > 0:
            batch_abs.append(batch_abs_sum / batch_count)
            batch_rel.append(batch_rel_sum / batch_count)
            batch_weights.append(true_depth.shape[0])
    iou = reference_iou(total_confusion)
    return {
        "miou": reference_mean(iou),
        "pixel_acc": np.trace(total_confusion) / total_confusion.sum(),
        "abs": abs_sum / depth_count,
        "abs_rel": rel_sum / depth_count,
        "rmse": math.sqrt(squared_sum / depth_count),
        "rmse_log": math.sqrt(squared_log_sum / depth_count),
        "sq_rel": squared_rel_sum / depth_count,
        "delta1": delta_counts[0] / depth_count,
        "delta2": delta_counts[1] / depth_count,
        "delta3": delta_counts[2] / depth_count,
        "iou": iou,
        "miou_paper": sum(image_mious) / len(image_mious),
        "pixel_acc_paper": sum(image_accuracies) / len(image_accuracies),
        "abs_paper": np.dot(batch_abs, batch_weights) / sum(batch_weights),
        "abs_rel_paper": np.dot(batch_rel, batch_weights) / sum(batch_weights),
        "counted_images": len(image_mious),
        "counted_batches": len(batch_weights),
        "counted_not_positive_predictions": not_positive_prediction_count,
    }


DEPTH_KEYS = ("abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "delta1", "delta2", "delta3")
STANDARD_KEYS = ("miou", "pixel_acc") + DEPTH_KEYS
PAPER_KEYS = ("miou_paper", "pixel_acc_paper", "abs_paper", "abs_rel_paper")


@pytest.mark.parametrize("ignore_index", [250, -1])
def test_standard_protocol_matches_bruteforce(ignore_index):
    batches = make_batches(ignore_index)
    result = feed(MultiTaskMetrics(NUM_CLASSES, ignore_index), batches).compute()
    expected = reference_metrics(batches, ignore_index)
    for key in STANDARD_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-6), key
    assert result["iou"] == pytest.approx(expected["iou"], rel=1e-9, nan_ok=True)
    assert math.isnan(result["iou"][ABSENT_CLASS])
    assert not any(math.isnan(value) for value in result["iou"][:ABSENT_CLASS])


@pytest.mark.parametrize("ignore_index", [250, -1])
def test_paper_protocol_matches_bruteforce(ignore_index):
    batches = make_batches(ignore_index)
    result = feed(MultiTaskMetrics(NUM_CLASSES, ignore_index), batches).compute()
    expected = reference_metrics(batches, ignore_index)
    # The fully ignored image and the batch without valid depth were left out by the reference.
    assert expected["counted_images"] == sum(BATCH_SIZES) - 1
    assert expected["counted_batches"] == len(BATCH_SIZES) - 1
    for key in PAPER_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-6), key


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_depth_metrics_match_bruteforce_with_not_positive_predictions(seed):
    batches = make_batches(250, seed=seed)
    result = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches).compute()
    expected = reference_metrics(batches, 250)
    # The data reaches the clamp and puts pixels in every delta band.
    assert expected["counted_not_positive_predictions"] > 0
    assert 0 < expected["delta1"] < expected["delta2"] < expected["delta3"] < 1
    for key in DEPTH_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-9), key


def rebatch(batches, batch_sizes):
    """The images of `batches`, concatenated in order and split into batches of `batch_sizes`."""
    columns = [torch.cat(column) for column in zip(*batches)]
    return list(zip(*(column.split(list(batch_sizes)) for column in columns)))


@pytest.mark.parametrize("batch_sizes", [(sum(BATCH_SIZES),), (1,) * sum(BATCH_SIZES), (2, 5, 3)])
def test_standard_protocol_does_not_depend_on_batch_composition(batch_sizes):
    batches = make_batches(250, seed=4)
    regrouped = rebatch(batches, batch_sizes)
    assert [batch[0].shape[0] for batch in regrouped] == list(batch_sizes)
    original = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches).compute()
    result = feed(MultiTaskMetrics(NUM_CLASSES, 250), regrouped).compute()
    for key in STANDARD_KEYS:
        assert result[key] == pytest.approx(original[key], rel=1e-12), key


def test_delta_thresholds_are_strict_and_symmetric():
    # Pairs (prediction, target) with max(p / g, g / p) exactly representable in float32.
    pairs = [
        (1.0, 1.0),  # ratio 1: within all three
        (1.24, 1.0),  # just below 1.25: within all three
        (1.25, 1.0),  # exactly 1.25: not within delta1 (strict), within delta2 and delta3
        (1.0, 1.25),  # the same ratio with prediction below target
        (1.5625, 1.0),  # exactly 1.25^2: within delta3 only
        (1.0, 1.953125),  # exactly 1.25^3: within none
        (0.0, 2.0),  # clamped to DEPTH_PREDICTION_FLOOR: within none
        (-3.0, 2.0),  # clamped to DEPTH_PREDICTION_FLOOR: within none
        (1.0, 0.0),  # invalid target: not counted at all
    ]
    depth_prediction = torch.tensor([[[[prediction for prediction, _ in pairs]]]])
    depth_target = torch.tensor([[[[target for _, target in pairs]]]])
    labels = torch.zeros(1, 1, len(pairs), dtype=torch.int64)
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(labels), labels, depth_prediction, depth_target)
    result = metrics.compute()
    assert result["delta1"] == 2 / 8
    assert result["delta2"] == 4 / 8
    assert result["delta3"] == 5 / 8


def test_clamp_applies_to_rmse_log_only_and_sq_rel_divides_by_target():
    labels = torch.zeros(1, 1, 3, dtype=torch.int64)
    depth_target = torch.tensor([[[[1.0, 2.0, 0.0]]]])
    depth_prediction = torch.tensor([[[[4.0, -1.0, 7.0]]]])
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(labels), labels, depth_prediction, depth_target)
    result = metrics.compute()
    assert result["sq_rel"] == pytest.approx((3.0**2 / 1.0 + 3.0**2 / 2.0) / 2)
    assert result["rmse"] == pytest.approx(math.sqrt((3.0**2 + 3.0**2) / 2))
    log_errors = (math.log(4.0) - math.log(1.0), math.log(DEPTH_PREDICTION_FLOOR) - math.log(2.0))
    assert result["rmse_log"] == pytest.approx(math.sqrt((log_errors[0] ** 2 + log_errors[1] ** 2) / 2))


def test_depth_accumulators_are_float64_scalars_in_state_names():
    state = MultiTaskMetrics(NUM_CLASSES, 250).state_tensors()
    assert list(state) == list(STATE_NAMES)
    depth_names = [name for name in STATE_NAMES if name.startswith("depth_")]
    assert {"depth_squared_relative_error_sum", "depth_squared_log_error_sum", "depth_delta1_count",
            "depth_delta2_count", "depth_delta3_count"} <= set(depth_names)
    for name in depth_names:
        assert state[name].dtype == torch.float64 and state[name].shape == (), name


def test_results_are_python_floats_in_key_order():
    result = feed(MultiTaskMetrics(NUM_CLASSES, 250), make_batches(250)).compute()
    assert list(result) == list(STANDARD_KEYS) + ["iou"] + list(PAPER_KEYS)
    for key in STANDARD_KEYS + PAPER_KEYS:
        assert type(result[key]) is float, key
    assert isinstance(result["iou"], list) and len(result["iou"]) == NUM_CLASSES
    assert all(type(value) is float for value in result["iou"])


def one_hot_logits(labels):
    """[N, C, H, W] logits whose argmax is `labels` [N, H, W]."""
    return torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()


def test_image_without_valid_pixels_is_left_out_of_paper_average():
    target = torch.tensor([[[0, 0], [1, 1]], [[250, 250], [250, 250]]])
    prediction = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [0, 0]]])
    depth = torch.ones(2, 1, 2, 2)
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(prediction), target, depth, depth)
    result = metrics.compute()
    # Image 0 alone: class 0 IoU 1/2, class 1 IoU 2/3, pixel accuracy 3/4.
    assert result["miou_paper"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["pixel_acc_paper"] == pytest.approx(3 / 4)


def test_batch_without_valid_depth_is_left_out_of_paper_average():
    labels = torch.zeros(2, 3, 3, dtype=torch.int64)
    depth_target = torch.full((2, 1, 3, 3), 2.0)
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(labels), labels, depth_target + 1.0, depth_target)
    metrics.update(one_hot_logits(labels), labels, depth_target + 5.0, torch.zeros_like(depth_target))
    result = metrics.compute()
    assert result["abs_paper"] == pytest.approx(1.0)
    assert result["abs_rel_paper"] == pytest.approx(0.5)
    assert result["abs"] == pytest.approx(1.0)


def test_paper_depth_weights_batches_by_batch_size():
    labels = torch.zeros(3, 2, 2, dtype=torch.int64)
    depth_target = torch.ones(3, 1, 2, 2)
    depth_target[0, 0, 0, 0] = 0  # a different pixel count per image does not change the weights
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(labels), labels, depth_target + 1.0, depth_target)
    metrics.update(one_hot_logits(labels[:1]), labels[:1], depth_target[:1] + 4.0, depth_target[:1])
    result = metrics.compute()
    assert result["abs_paper"] == pytest.approx((3 * 1.0 + 1 * 4.0) / 4)
    assert result["abs"] == pytest.approx((11 * 1.0 + 3 * 4.0) / 14)


def test_absent_class_has_nan_iou_and_is_left_out_of_mean():
    target = torch.tensor([[[0, 0, 1, 1]]])
    prediction = torch.tensor([[[0, 1, 1, 1]]])
    depth = torch.ones(1, 1, 1, 4)
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(prediction), target, depth, depth)
    result = metrics.compute()
    assert result["iou"][0] == pytest.approx(1 / 2)
    assert result["iou"][1] == pytest.approx(2 / 3)
    assert all(math.isnan(value) for value in result["iou"][2:])
    assert result["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["miou_paper"] == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize("ignore_index", [250, -1])
def test_perfect_predictions(ignore_index):
    metrics = MultiTaskMetrics(NUM_CLASSES, ignore_index)
    for batch in make_batches(ignore_index):
        _, target, _, depth_target = batch
        labels = torch.where(target == ignore_index, 0, target)
        metrics.update(one_hot_logits(labels), target, depth_target.clone(), depth_target)
    result = metrics.compute()
    for key in ("miou", "pixel_acc", "miou_paper", "pixel_acc_paper", "delta1", "delta2", "delta3"):
        assert result[key] == 1.0, key
    for key in ("abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "abs_paper", "abs_rel_paper"):
        assert result[key] == 0.0, key


def test_rmse_is_in_target_units():
    labels = torch.zeros(1, 1, 2, dtype=torch.int64)
    depth_target = torch.tensor([[[[2.0, 4.0]]]])
    depth_prediction = torch.tensor([[[[5.0, 0.0]]]])
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    metrics.update(one_hot_logits(labels), labels, depth_prediction, depth_target)
    assert metrics.compute()["rmse"] == pytest.approx(math.sqrt((9 + 16) / 2))


def assert_states_equal(actual, expected):
    assert set(actual) == set(expected)
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        if expected[name].dtype == torch.int64:
            assert torch.equal(actual[name], expected[name]), name
        else:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-12, atol=0, msg=name)


def assert_results_equal(actual, expected):
    for key in STANDARD_KEYS + PAPER_KEYS:
        assert actual[key] == pytest.approx(expected[key], rel=1e-12), key
    assert actual["iou"] == pytest.approx(expected["iou"], rel=1e-12, nan_ok=True)


def test_summed_states_of_halves_equal_state_of_whole():
    batches = make_batches(250, seed=3)
    whole = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches)
    first_half = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches[:2])
    second_half = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches[2:])

    # What an all_reduce(SUM) of each state tensor does, done by hand.
    summed = {
        name: first_half.state_tensors()[name] + second_half.state_tensors()[name]
        for name in first_half.state_tensors()
    }
    assert_states_equal(summed, whole.state_tensors())
    loaded = MultiTaskMetrics(NUM_CLASSES, 250)
    loaded.load_state_tensors(summed)
    assert_states_equal(loaded.state_tensors(), whole.state_tensors())
    assert_results_equal(loaded.compute(), whole.compute())

    first_half.merge_(second_half.state_tensors())
    assert_states_equal(first_half.state_tensors(), whole.state_tensors())
    assert_results_equal(first_half.compute(), whole.compute())


def test_state_tensors_are_live_so_in_place_reduction_updates_the_metric():
    batches = make_batches(250)
    doubled_reference = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches + batches).compute()
    metrics = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches)
    for tensor in metrics.state_tensors().values():
        tensor.mul_(2)  # an all_reduce(SUM) over two identical ranks
    assert_results_equal(metrics.compute(), doubled_reference)


def test_load_state_tensors_rejects_wrong_names_and_shapes():
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    state = {name: tensor.clone() for name, tensor in metrics.state_tensors().items()}
    with pytest.raises(ValueError, match="confusion_matrix"):
        metrics.load_state_tensors({**state, "confusion_matrix": torch.zeros(3, 3, dtype=torch.int64)})
    state.pop("paper_image_count")
    with pytest.raises(ValueError, match="paper_image_count"):
        metrics.merge_(state)


def test_nothing_valid_gives_nan_not_crash():
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    empty = metrics.compute()
    labels = torch.full((2, 3, 3), 250, dtype=torch.int64)
    metrics.update(one_hot_logits(torch.zeros_like(labels)), labels, torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    all_ignored = metrics.compute()
    for result in (empty, all_ignored):
        for key in STANDARD_KEYS + PAPER_KEYS:
            assert math.isnan(result[key]), key
        assert len(result["iou"]) == NUM_CLASSES and all(math.isnan(v) for v in result["iou"])


def test_reset_clears_state():
    batches = make_batches(250)
    fresh = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches[2:]).compute()
    metrics = feed(MultiTaskMetrics(NUM_CLASSES, 250), batches[:2])
    metrics.reset()
    assert all(not tensor.any() for tensor in metrics.state_tensors().values())
    assert_results_equal(feed(metrics, batches[2:]).compute(), fresh)


def test_shape_mismatch_raises_value_error_naming_both_shapes():
    logits, target, depth_prediction, depth_target = make_batches(250)[0]
    metrics = MultiTaskMetrics(NUM_CLASSES, 250)
    with pytest.raises(ValueError) as error:
        metrics.update(logits, target[:, :-1], depth_prediction, depth_target)
    assert str(tuple(target[:, :-1].shape)) in str(error.value)
    assert str(tuple(logits.shape)) in str(error.value)
    with pytest.raises(ValueError) as error:
        metrics.update(logits, target, depth_prediction[..., :-1], depth_target)
    assert str(tuple(depth_prediction[..., :-1].shape)) in str(error.value)
    assert str(tuple(depth_target.shape)) in str(error.value)
    with pytest.raises(ValueError, match=r"\[N, 5, H, W\]"):
        metrics.update(logits[:, :-1], target, depth_prediction, depth_target)
    with pytest.raises(ValueError, match=r"^depth_target must be \[3, 1, H, W\] to match segmentation_logits"):
        metrics.update(logits, target, depth_prediction[:2], depth_target[:2])


def test_label_out_of_range_raises_value_error():
    logits, target, depth_prediction, depth_target = make_batches(250)[0]
    target = target.clone()
    target[0, 0, 0] = NUM_CLASSES
    with pytest.raises(ValueError, match="outside"):
        MultiTaskMetrics(NUM_CLASSES, 250).update(logits, target, depth_prediction, depth_target)
