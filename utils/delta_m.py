"""Δm: how much a multi-task model gains or loses against single-task baselines, one number over tasks.

    Δm = (1/T) Σ_t (1/M_t) Σ_m (-1)^l_m (M_m - M_single,m) / M_single,m x 100 %

T tasks, M_t metrics of task t, M_m the multi-task model's value of metric m and M_single,m the value
of the single-task model of that metric's task; l_m = 1 where lower is better (Abs, Abs Rel, ...) and
0 where higher is better (mIoU, pixel accuracy, δ). A positive Δm means the multi-task model is better
on average (Maninis et al. 2019, Vandenhende et al. 2021).

The metrics averaged are the ones the paper reports, in either protocol of utils.metrics (those marked
`in_delta_m` in utils.metric_definitions): mIoU and pixel accuracy for segmentation, Abs and Abs Rel for
depth, and for surface normals (standard protocol) the mean and median angle errors and the three
within-angle fractions. The tasks T are those the multi-task model was evaluated on.
"""
from utils.metric_definitions import METRICS, PROTOCOLS, STANDARD, delta_m_keys, measured_tasks, select


def delta_m_titles(lower_is_better):
    """", "-joined titles of the standard protocol's Δm metrics in direction `lower_is_better`."""
    return ", ".join(metric.title for metric in select(STANDARD, in_delta_m=True)
                     if metric.lower_is_better == lower_is_better)


DEFINITION = ("Δm = (1/T) Σ_tasks (1/M_t) Σ_metrics (-1)^l (M - M_single) / M_single x 100 %, "
              f"l = 1 where lower is better ({delta_m_titles(True)}), "
              f"0 where higher is better ({delta_m_titles(False)}); "
              "positive: better than the single-task models")


def signed_relative_difference(metric, value, single_value):
    """(-1)^l (value - single_value) / single_value x 100 for one metric: positive when `value` is better."""
    if single_value == 0:
        raise ValueError(f"{metric}: the single-task value is 0, the relative difference is undefined")
    sign = -1.0 if METRICS[metric].lower_is_better else 1.0
    return sign * (value - single_value) / single_value * 100.0


def task_metrics(protocol):
    """The metrics per task that Δm averages under `protocol` ("standard" or "paper")."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return delta_m_keys(protocol)


def delta_m(multi_task_metrics, single_task_metrics_by_task, protocol="standard"):
    """Δm in percent of a multi-task model's metrics against {"segmentation": metrics, "depth": metrics, ...}
    of the single-task models (metrics dicts as in results.json), over the tasks the multi-task metrics
    have any Δm metric of; ValueError naming a missing metric."""
    per_task = []
    measured = measured_tasks(multi_task_metrics)
    for task, metrics in task_metrics(protocol).items():
        if task not in measured:
            continue
        if task not in single_task_metrics_by_task:
            raise ValueError(f"no single-task {task} metrics")
        single = single_task_metrics_by_task[task]
        differences = []
        for metric in metrics:
            if multi_task_metrics.get(metric) is None:
                raise ValueError(f"{metric} missing from the multi-task metrics")
            if single.get(metric) is None:
                raise ValueError(f"{metric} missing from the single-task {task} metrics")
            differences.append(signed_relative_difference(metric, multi_task_metrics[metric], single[metric]))
        per_task.append(sum(differences) / len(differences))
    if not per_task:
        raise ValueError(f"the multi-task metrics have none of the Δm metrics of the {protocol} protocol")
    return sum(per_task) / len(per_task)
