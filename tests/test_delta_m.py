"""Δm (utils.delta_m) against hand-computed values in both protocols, its sign convention and its errors."""
import pytest

from utils.delta_m import DEFINITION, delta_m, task_metrics
from utils.metric_definitions import METRICS

# Both protocols' keys in one dict each, so that a protocol picking the wrong keys shows.
MULTI_TASK = {"miou": 0.55, "pixel_acc": 0.90, "abs": 0.012, "abs_rel": 0.30,
              "miou_paper": 0.60, "pixel_acc_paper": 0.88, "abs_paper": 0.020, "abs_rel_paper": 0.20}
SINGLE_TASK = {
    "segmentation": {"miou": 0.50, "pixel_acc": 0.92, "miou_paper": 0.48, "pixel_acc_paper": 0.80},
    "depth": {"abs": 0.015, "abs_rel": 0.25, "abs_paper": 0.025, "abs_rel_paper": 0.16},
}


def test_standard_protocol_matches_hand_computation():
    # segmentation: mIoU +10 %, pixel accuracy (0.90 - 0.92) / 0.92 = -2.17 % -> mean (10 - 2/0.92) / 2
    # depth (lower is better): Abs 0.012 vs 0.015 -> +20 %, Abs Rel 0.30 vs 0.25 -> -20 % -> mean 0
    expected = ((10.0 - 100 * 0.02 / 0.92) / 2 + (20.0 - 20.0) / 2) / 2
    assert delta_m(MULTI_TASK, SINGLE_TASK, "standard") == pytest.approx(expected)
    assert expected == pytest.approx(1.9565217)


def test_paper_protocol_uses_the_paper_keys():
    # segmentation: +25 %, +10 % -> 17.5; depth: Abs 0.020 vs 0.025 -> +20 %, Abs Rel 0.20 vs 0.16 -> -25 % -> -2.5
    assert delta_m(MULTI_TASK, SINGLE_TASK, "paper") == pytest.approx((17.5 - 2.5) / 2)


def test_better_multi_task_model_gives_positive_delta_m_and_worse_negative():
    better = {"miou": 0.6, "pixel_acc": 0.95, "abs": 0.010, "abs_rel": 0.20}
    worse = {"miou": 0.4, "pixel_acc": 0.85, "abs": 0.020, "abs_rel": 0.40}
    assert delta_m(better, SINGLE_TASK, "standard") > 0
    assert delta_m(worse, SINGLE_TASK, "standard") < 0
    same = {**SINGLE_TASK["segmentation"], **SINGLE_TASK["depth"]}
    assert delta_m(same, SINGLE_TASK, "standard") == 0


def test_directions_and_paper_metrics():
    lower_is_better = {key for key, metric in METRICS.items() if metric.lower_is_better}
    assert {"abs", "abs_rel", "rmse", "abs_paper", "abs_rel_paper"} <= lower_is_better
    assert not {"miou", "pixel_acc", "delta1", "miou_paper", "pixel_acc_paper"} & lower_is_better
    assert task_metrics("paper")["depth"] == ("abs_paper", "abs_rel_paper")
    assert dict(task_metrics("standard")) == {"segmentation": ("miou", "pixel_acc"), "depth": ("abs", "abs_rel"),
                                              "normal": ("normal_mean", "normal_median", "normal_11_25",
                                                         "normal_22_5", "normal_30")}
    assert "\n" not in DEFINITION and DEFINITION.startswith("Δm =")
    assert ("lower is better (Abs, Abs Rel, Mean err, Med err), 0 where higher is better (mIoU, Pix Acc, <11.25, "
            "<22.5, <30);") in DEFINITION


@pytest.mark.parametrize("multi_task, single_task, protocol, message", [
    ({"miou": 0.5}, SINGLE_TASK, "standard", "pixel_acc missing from the multi-task"),
    (MULTI_TASK, {"segmentation": SINGLE_TASK["segmentation"]}, "standard", "no single-task depth"),
    (MULTI_TASK, {**SINGLE_TASK, "depth": {"abs": 0.0, "abs_rel": 0.2}}, "standard", "abs: the single-task value is 0"),
    (MULTI_TASK, SINGLE_TASK, "mtan", "protocol 'mtan'"),
])
def test_missing_or_unusable_inputs_are_errors_naming_the_problem(multi_task, single_task, protocol, message):
    with pytest.raises(ValueError, match=message):
        delta_m(multi_task, single_task, protocol)
