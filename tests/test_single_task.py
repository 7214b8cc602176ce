"""Single-task baselines: XTaskTSNet, XTaskLoss and MultiTaskMetrics with one of the two tasks only."""
import math

import pytest
import torch

from losses import LossBalancer, XTaskLoss
from models import TaskTransferNet, XTaskOutput, XTaskTSNet
from utils.metrics import STATE_NAMES, MultiTaskMetrics

NUM_CLASSES = 5
IGNORE = 250
TASKS = ("segmentation", "depth")
MULTI_TASK_KEYS = ("miou", "pixel_acc", "abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "delta1", "delta2",
                   "delta3", "iou", "miou_paper", "pixel_acc_paper", "abs_paper", "abs_rel_paper")
TASK_KEYS = {
    "segmentation": ("miou", "pixel_acc", "iou", "miou_paper", "pixel_acc_paper"),
    "depth": ("abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "delta1", "delta2", "delta3", "abs_paper",
              "abs_rel_paper"),
}
DECODER_NAMES = {"segmentation": "segmentation_decoder", "depth": "depth_decoder"}
MODULE_NAMES = ("encoder", "segmentation_decoder", "depth_decoder", "segmentation_to_depth", "depth_to_segmentation")


def count(module):
    """Number of parameters of `module`."""
    return sum(parameter.numel() for parameter in module.parameters())


def other(task):
    """The task that is not `task`."""
    return TASKS[1 - TASKS.index(task)]


def targets(seed=0, batch=2, height=64, width=64):
    """(segmentation_target [N,H,W] with ignored pixels, depth_target [N,1,H,W] with invalid zeros)."""
    generator = torch.Generator().manual_seed(seed)
    segmentation_target = torch.randint(0, NUM_CLASSES, (batch, height, width), generator=generator)
    segmentation_target[torch.rand(batch, height, width, generator=generator) < 0.2] = IGNORE
    depth_target = torch.rand(batch, 1, height, width, generator=generator) * 5 + 0.1
    depth_target[torch.rand(batch, 1, height, width, generator=generator) < 0.2] = 0
    return segmentation_target, depth_target


@pytest.mark.parametrize("task", TASKS)
def test_single_task_network_has_the_encoder_and_that_task_decoder_only(task):
    full = XTaskTSNet(18, NUM_CLASSES)
    single = XTaskTSNet(18, NUM_CLASSES, single_task=task)
    expected = count(full.encoder) + count(getattr(full, DECODER_NAMES[task]))
    assert count(single) == expected
    assert getattr(single, DECODER_NAMES[other(task)]) is None
    assert single.segmentation_to_depth is None and single.depth_to_segmentation is None
    assert not any(isinstance(module, TaskTransferNet) for module in single.modules())
    assert set(single.state_dict()) < set(full.state_dict())
    assert single.tasks == (task,)


def test_single_task_none_builds_both_decoders_and_both_transfer_nets():
    model = XTaskTSNet(18, NUM_CLASSES, single_task=None)
    assert model.tasks == TASKS
    assert all(getattr(model, name) is not None for name in MODULE_NAMES)


@pytest.mark.parametrize("direct_only", [False, True])
@pytest.mark.parametrize("task", TASKS)
def test_single_task_forward_gives_none_for_the_other_task_and_the_transfers(task, direct_only):
    model = XTaskTSNet(18, NUM_CLASSES, single_task=task).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64), direct_only=direct_only)
    expected_shapes = {"segmentation": (1, NUM_CLASSES, 64, 64), "depth": (1, 1, 64, 64)}
    assert getattr(outputs, task).shape == expected_shapes[task]
    assert torch.isfinite(getattr(outputs, task)).all()
    assert getattr(outputs, other(task)) is None
    assert outputs.transferred_segmentation is None and outputs.transferred_depth is None


@pytest.mark.parametrize("task", TASKS)
def test_single_task_network_keeps_the_shared_layers_gradnorm_measures(task):
    model = XTaskTSNet(18, NUM_CLASSES, single_task=task)
    assert model.last_shared_weight is model.encoder.stage4[-1].conv2.weight
    assert model.last_block_conv2_weight.shape == (512, 512, 3, 3)


@pytest.mark.parametrize("value", ["x", "Depth", "both", 1])
def test_unknown_single_task_is_a_value_error_naming_the_parameter(value):
    with pytest.raises(ValueError, match=rf"^single_task {value!r}: .*segmentation, depth"):
        XTaskTSNet(18, NUM_CLASSES, single_task=value)
    with pytest.raises(ValueError, match=rf"^single_task {value!r}: .*segmentation, depth"):
        XTaskLoss(NUM_CLASSES, 0.1, 0.1, single_task=value)


def random_outputs(seed=0, batch=2, height=8, width=10):
    """An XTaskOutput of random tensors (all four predictions) and matching targets."""
    generator = torch.Generator().manual_seed(seed)
    outputs = XTaskOutput(
        segmentation=torch.randn(batch, NUM_CLASSES, height, width, generator=generator),
        transferred_segmentation=torch.randn(batch, NUM_CLASSES, height, width, generator=generator),
        depth=torch.rand(batch, 1, height, width, generator=generator) * 3,
        transferred_depth=torch.rand(batch, 1, height, width, generator=generator) * 3,
    )
    return outputs, *targets(seed, batch, height, width)


@pytest.mark.parametrize("task,lp", [("segmentation", "L1"), ("depth", "MSE")])
def test_single_task_loss_is_the_direct_loss_and_zero_elsewhere(task, lp):
    outputs, segmentation_target, depth_target = random_outputs()
    arguments = dict(num_classes=NUM_CLASSES, alpha=0.3, gamma=0.2, lp=lp, ignore_index=IGNORE)
    cross_terms = XTaskLoss(**arguments)(outputs, segmentation_target, depth_target)
    terms = XTaskLoss(**arguments, single_task=task)(outputs, segmentation_target, depth_target)
    direct = getattr(cross_terms, task)
    assert direct.item() > 0
    assert getattr(terms, task).item() == direct.item()
    assert getattr(terms, f"{task}_group").item() == direct.item()
    for name in (other(task), f"{other(task)}_group", "transferred_segmentation", "transferred_depth"):
        assert getattr(terms, name).shape == () and getattr(terms, name).item() == 0, name
    assert terms.groups().shape == (2,)
    assert LossBalancer().combine(terms.groups()).item() == direct.item()


def gradient_sums(model):
    """{module name: sum of |grad| over its parameters} for the modules the model has."""
    return {name: sum(float(parameter.grad.abs().sum()) for parameter in getattr(model, name).parameters()
                      if parameter.grad is not None)
            for name in MODULE_NAMES if getattr(model, name) is not None}


@pytest.mark.parametrize("task", TASKS)
def test_single_task_loss_on_cross_task_outputs_reaches_only_the_encoder_and_that_task_decoder(task):
    torch.manual_seed(2)
    model = XTaskTSNet(18, NUM_CLASSES)
    segmentation_target, depth_target = targets(2, height=32, width=32)
    outputs = model(torch.randn(2, 3, 32, 32))
    assert all(prediction is not None for prediction in outputs)
    terms = XTaskLoss(NUM_CLASSES, 0.5, 0.5, ignore_index=IGNORE, single_task=task)(
        outputs, segmentation_target, depth_target)
    LossBalancer().backward(terms.groups())
    reached = {name for name, value in gradient_sums(model).items() if value > 0}
    assert reached == {"encoder", DECODER_NAMES[task]}


@pytest.mark.parametrize("task", TASKS)
def test_single_task_network_and_loss_train_every_parameter(task):
    torch.manual_seed(3)
    model = XTaskTSNet(18, NUM_CLASSES, single_task=task)
    segmentation_target, depth_target = targets(3, height=32, width=32)
    terms = XTaskLoss(NUM_CLASSES, 0.5, 0.5, ignore_index=IGNORE, single_task=task)(
        model(torch.randn(2, 3, 32, 32)), segmentation_target, depth_target)
    assert getattr(terms, task).item() > 0 and getattr(terms, other(task)).item() == 0
    LossBalancer().backward(terms.groups())
    assert all(parameter.grad is not None for parameter in model.parameters())
    sums = gradient_sums(model)
    assert set(sums) == {"encoder", DECODER_NAMES[task]} and all(value > 0 for value in sums.values())


def metric_batches(seed=0):
    """Three random batches (logits [N,C,H,W], labels [N,H,W], depth prediction and target [N,1,H,W])."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch_size in (3, 1, 2):
        logits = torch.randn(batch_size, NUM_CLASSES, 6, 7, generator=generator)
        labels = torch.randint(0, NUM_CLASSES, (batch_size, 6, 7), generator=generator)
        labels[torch.rand(batch_size, 6, 7, generator=generator) < 0.25] = IGNORE
        depth_target = torch.rand(batch_size, 1, 6, 7, generator=generator) * 9 + 0.5
        depth_target[torch.rand(batch_size, 1, 6, 7, generator=generator) < 0.3] = 0
        depth_prediction = torch.rand(batch_size, 1, 6, 7, generator=generator) * 10
        batches.append((logits, labels, depth_prediction, depth_target))
    return batches


def single_task_inputs(task, batch, keep_other_target):
    """The update arguments for a `task`-only metric: the other prediction None, its target kept or None."""
    logits, labels, depth_prediction, depth_target = batch
    if task == "segmentation":
        return logits, labels, None, depth_target if keep_other_target else None
    return None, labels if keep_other_target else None, depth_prediction, depth_target


def assert_same_values(actual, expected):
    """Same keys in the same order and bit-identical values (NaN IoUs in the same places)."""
    assert list(actual) == list(expected)
    for key, value in expected.items():
        if key == "iou":
            assert actual[key] == pytest.approx(value, rel=0, abs=0, nan_ok=True)
        else:
            assert actual[key] == value, key


@pytest.mark.parametrize("keep_other_target", [True, False])
@pytest.mark.parametrize("task", TASKS)
def test_single_task_metrics_give_that_task_keys_with_the_multi_task_values(task, keep_other_target):
    batches = metric_batches()
    both = MultiTaskMetrics(NUM_CLASSES, IGNORE)
    single = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=(task,))
    for batch in batches:
        both.update(*batch)
        single.update(*single_task_inputs(task, batch, keep_other_target))
    multi_task_result = both.compute()
    assert list(multi_task_result) == list(MULTI_TASK_KEYS)
    result = single.compute()
    assert list(result) == list(TASK_KEYS[task])
    assert all(not math.isnan(result[key]) for key in TASK_KEYS[task] if key != "iou")
    assert_same_values(result, {key: multi_task_result[key] for key in TASK_KEYS[task]})


@pytest.mark.parametrize("task", TASKS)
def test_single_task_metric_state_keeps_every_accumulator_and_merges(task):
    batches = metric_batches(1)
    whole = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=(task,))
    first = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=(task,))
    second = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=(task,))
    for number, batch in enumerate(batches):
        inputs = single_task_inputs(task, batch, keep_other_target=True)
        whole.update(*inputs)
        (first if number < 2 else second).update(*inputs)
    state = whole.state_tensors()
    assert list(state) == list(STATE_NAMES)
    other_names = (("confusion_matrix", "paper_image") if task == "depth" else ("depth_", "paper_batch")) + ("normal_",)
    assert all(not tensor.any() for name, tensor in state.items() if name.startswith(other_names))
    assert all(tensor.any() for name, tensor in state.items() if not name.startswith(other_names))
    loaded = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=(task,))
    loaded.load_state_tensors(first.state_tensors())
    loaded.merge_(second.state_tensors())
    assert_same_values(loaded.compute(), whole.compute())


@pytest.mark.parametrize("tasks", [("depth", "segmentation"), ["segmentation", "depth"]])
def test_metric_tasks_in_any_order_keep_the_multi_task_key_order(tasks):
    metrics = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=tasks)
    metrics.update(*metric_batches()[0])
    assert metrics.tasks == TASKS
    assert list(metrics.compute()) == list(MULTI_TASK_KEYS)


@pytest.mark.parametrize("tasks", [(), ("depth", "depth"), ("segmentation", "normals"), "depth"])
def test_unknown_metric_tasks_are_a_value_error_naming_the_argument(tasks):
    with pytest.raises(ValueError, match=r"^tasks .*segmentation, depth"):
        MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=tasks)


@pytest.mark.parametrize("tasks,replaced,message", [
    (("segmentation",), {"depth_prediction": torch.zeros(3, 1, 6, 7)}, "^depth_prediction given"),
    (("depth",), {"segmentation_logits": torch.zeros(3, NUM_CLASSES, 6, 7)}, "^segmentation_logits given"),
    (("segmentation",), {"segmentation_logits": None}, "^segmentation_logits is None"),
    (("depth",), {"depth_prediction": None}, "^depth_prediction is None"),
    (("depth",), {"depth_target": None}, "^depth_target is None"),
    (TASKS, {"segmentation_logits": None}, "^segmentation_logits is None"),
    (TASKS, {"segmentation_target": None}, "^segmentation_target is None"),
])
def test_predictions_that_do_not_fit_the_tasks_are_value_errors_naming_the_argument(tasks, replaced, message):
    logits, labels, depth_prediction, depth_target = metric_batches()[0]
    inputs = {"segmentation_logits": logits if "segmentation" in tasks else None, "segmentation_target": labels,
              "depth_prediction": depth_prediction if "depth" in tasks else None, "depth_target": depth_target}
    metrics = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=tasks)
    with pytest.raises(ValueError, match=message):
        metrics.update(**{**inputs, **replaced})
    assert all(not tensor.any() for tensor in metrics.state_tensors().values())


def test_depth_only_metrics_check_the_depth_shapes():
    _, _, depth_prediction, depth_target = metric_batches()[0]
    metrics = MultiTaskMetrics(NUM_CLASSES, IGNORE, tasks=("depth",))
    with pytest.raises(ValueError, match=r"depth_prediction shape \(3, 1, 6, 6\) does not match"):
        metrics.update(None, None, depth_prediction[..., :-1], depth_target)
    with pytest.raises(ValueError, match=r"^depth_target must be \[N, 1, H, W\], got \(3, 2, 6, 7\)"):
        metrics.update(None, None, depth_prediction.expand(3, 2, 6, 7), depth_target.expand(3, 2, 6, 7))
