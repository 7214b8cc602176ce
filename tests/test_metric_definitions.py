"""utils.metric_definitions against what the evaluation computes, and the results table of training.report
built from it (its printed text as it was before the table existed)."""
from types import SimpleNamespace

import pytest

from data import CITYSCAPES
from training.options import parse_options
from training.report import results_table
from utils.metric_definitions import METRICS, PROTOCOLS, TASKS, delta_m_keys, metric_key, select
from utils.metrics import MultiTaskMetrics

METRIC_VALUES = {"miou": 0.62, "pixel_acc": 0.91, "abs": 0.014, "abs_rel": 0.31, "rmse": 0.028, "rmse_log": 0.42,
                 "sq_rel": 0.021, "delta1": 0.62, "delta2": 0.83, "delta3": 0.92, "iou": [0.5, 0.74],
                 "miou_paper": 0.60, "pixel_acc_paper": 0.90, "abs_paper": 0.015, "abs_rel_paper": float("nan")}
FOOTER = ("standard: accumulated over the whole set; paper protocol: per-image segmentation and per-batch depth "
          "averages, as the original paper computed them.")


@pytest.mark.parametrize("task", TASKS)
def test_the_metrics_are_the_numbers_compute_returns(task):
    computed = MultiTaskMetrics(num_classes=3, tasks=(task,)).compute()
    numbers = [key for key in computed if key != "iou"]
    assert sorted(numbers) == sorted(metric.key for metric in select(task=task))


def test_keys_titles_and_protocols():
    assert set(PROTOCOLS) == {"standard", "paper"} and all(protocol.description for protocol in PROTOCOLS.values())
    for key, metric in METRICS.items():
        assert key == metric_key(metric.quantity, metric.protocol) and metric.task in TASKS
        assert len(metric.title) < 10  # a column of the results table is 10 characters wide
    assert list(METRICS)[:2] == ["miou", "pixel_acc"] and list(METRICS)[-1] == "abs_rel_paper"
    percent = {key for key, metric in METRICS.items() if metric.percent}
    assert percent == {"miou", "pixel_acc", "delta1", "delta2", "delta3", "miou_paper", "pixel_acc_paper",
                       "normal_11_25", "normal_22_5", "normal_30"}
    lower_is_better = {key for key, metric in METRICS.items() if metric.lower_is_better}
    assert lower_is_better == {"abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "abs_paper", "abs_rel_paper",
                               "normal_mean", "normal_median"}


def test_delta_m_averages_the_papers_four_metrics_per_protocol_and_the_five_normal_metrics():
    assert dict(delta_m_keys("standard")) == {
        "segmentation": ("miou", "pixel_acc"), "depth": ("abs", "abs_rel"),
        "normal": ("normal_mean", "normal_median", "normal_11_25", "normal_22_5", "normal_30")}
    assert dict(delta_m_keys("paper")) == {"segmentation": ("miou_paper", "pixel_acc_paper"),
                                           "depth": ("abs_paper", "abs_rel_paper")}


def test_results_table_text_is_unchanged():
    context = SimpleNamespace(config=parse_options(CITYSCAPES, []), profile=CITYSCAPES)
    expected = "\n".join([
        "                                mIoU   Pix Acc       Abs   Abs Rel",
        "standard                      62.00%    91.00%    0.0140    0.3100",
        "paper protocol                60.00%    90.00%    0.0150       nan",
        "paper (reported)              66.51%    93.56%    0.0122   19.4000",
        "                                RMSE  RMSE log    Sq Rel    d<1.25  d<1.25^2  d<1.25^3",
        "standard                      0.0280    0.4200    0.0210    62.00%    83.00%    92.00%",
        FOOTER])
    assert results_table(METRIC_VALUES, context) == expected
    segmentation_only = {key: value for key, value in METRIC_VALUES.items()
                         if key in ("miou", "pixel_acc", "iou", "miou_paper", "pixel_acc_paper")}
    baseline = {"miou": 0.682, "pixel_acc": 1.001, "abs": 0.0154, "abs_rel": 0.341}
    expected = "\n".join([
        "                                mIoU   Pix Acc       Abs   Abs Rel",
        "standard                      62.00%    91.00%         -         -",
        "paper protocol                60.00%    90.00%         -         -",
        "paper (reported)              66.51%    93.56%    0.0122   19.4000",
        "constant baseline (std.)      68.20%   100.10%    0.0154    0.3410",
        FOOTER])
    assert results_table(segmentation_only, context, baseline) == expected
    with_normals = {**METRIC_VALUES, "normal_mean": 24.5, "normal_median": 19.25, "normal_11_25": 0.25,
                    "normal_22_5": 0.55, "normal_30": 0.67}
    assert results_table(with_normals, context).split("\n")[-3:] == [
        "                            Mean err   Med err    <11.25     <22.5       <30",
        "standard                     24.5000   19.2500    25.00%    55.00%    67.00%",
        FOOTER]
