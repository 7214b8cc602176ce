"""Every metric an evaluation reports, defined once: its key, printed title, task, protocol, whether it is
printed as a percentage, its direction and whether Δm averages it; and the protocols with their
descriptions. The results table (training.report), Δm (utils.delta_m) and the report over many runs
(tools.report) read these facts from here only.

A metric is declared once per quantity (`measured`) with the protocols it is computed under; its key under
a protocol is the quantity's name followed by the protocol's key suffix ("miou", "miou_paper"), which are
the keys of utils.metrics.MultiTaskMetrics.compute() (the per-class `iou` list is not a metric here). A
new task's metrics are added to DECLARED below, with their task's name, and nowhere else.
"""
from dataclasses import dataclass
from types import MappingProxyType

SEGMENTATION = "segmentation"
DEPTH = "depth"
NORMAL = "normal"
STANDARD = "standard"
PAPER = "paper"


@dataclass(frozen=True)
class Protocol:
    """How a protocol's metrics are computed (`description`), the label of its row in the results table,
    and what its metric keys and report titles end with."""

    description: str
    label: str
    key_suffix: str
    title_suffix: str


PROTOCOLS = MappingProxyType({
    STANDARD: Protocol("accumulated over the whole set", "standard", "", ""),
    PAPER: Protocol("per-image segmentation and per-batch depth averages, as the original paper computed them",
                    "paper protocol", "_paper", " (paper)"),
})
ALL_PROTOCOLS = tuple(PROTOCOLS)


def metric_key(quantity, protocol):
    """The key of `quantity` (its standard-protocol key) computed under `protocol`: "miou", "paper" -> "miou_paper"."""
    return quantity + PROTOCOLS[protocol].key_suffix


@dataclass(frozen=True)
class Metric:
    """One number of MultiTaskMetrics.compute(): `quantity` is what it measures (its key under the standard
    protocol, also the key of the paper's reported numbers), `title` its column title in the results table
    (at most 9 characters), `percent` whether it is a fraction printed x 100 as %, `lower_is_better` its
    direction, `in_delta_m` whether Δm averages it (the paper's metrics)."""

    quantity: str
    title: str
    task: str
    protocol: str
    percent: bool
    lower_is_better: bool
    in_delta_m: bool

    @property
    def key(self):
        """The key of this metric in the metrics of results.json."""
        return metric_key(self.quantity, self.protocol)


def measured(quantity, title, task, *, protocols=(STANDARD,), percent=False, lower_is_better=False,
             in_delta_m=False):
    """The metrics of one quantity, one per protocol in `protocols` (see Metric)."""
    return tuple(Metric(quantity, title, task, protocol, percent, lower_is_better, in_delta_m)
                 for protocol in protocols)


DECLARED = (
    *measured("miou", "mIoU", SEGMENTATION, protocols=ALL_PROTOCOLS, percent=True, in_delta_m=True),
    *measured("pixel_acc", "Pix Acc", SEGMENTATION, protocols=ALL_PROTOCOLS, percent=True, in_delta_m=True),
    *measured("abs", "Abs", DEPTH, protocols=ALL_PROTOCOLS, lower_is_better=True, in_delta_m=True),
    *measured("abs_rel", "Abs Rel", DEPTH, protocols=ALL_PROTOCOLS, lower_is_better=True, in_delta_m=True),
    *measured("rmse", "RMSE", DEPTH, lower_is_better=True),
    *measured("rmse_log", "RMSE log", DEPTH, lower_is_better=True),
    *measured("sq_rel", "Sq Rel", DEPTH, lower_is_better=True),
    *measured("delta1", "d<1.25", DEPTH, percent=True),
    *measured("delta2", "d<1.25^2", DEPTH, percent=True),
    *measured("delta3", "d<1.25^3", DEPTH, percent=True),
    *measured("normal_mean", "Mean err", NORMAL, lower_is_better=True, in_delta_m=True),
    *measured("normal_median", "Med err", NORMAL, lower_is_better=True, in_delta_m=True),
    *measured("normal_11_25", "<11.25", NORMAL, percent=True, in_delta_m=True),
    *measured("normal_22_5", "<22.5", NORMAL, percent=True, in_delta_m=True),
    *measured("normal_30", "<30", NORMAL, percent=True, in_delta_m=True),
)

# key -> Metric, the standard protocol's metrics first, each protocol's in the order of DECLARED.
METRICS = MappingProxyType({metric.key: metric for protocol in PROTOCOLS for metric in DECLARED
                            if metric.protocol == protocol})
TASKS = tuple(dict.fromkeys(metric.task for metric in DECLARED))


def select(protocol=None, task=None, in_delta_m=None):
    """The metrics (in METRICS order) of `protocol`, of `task` and with `in_delta_m` as given; None: any."""
    return tuple(metric for metric in METRICS.values()
                 if protocol in (None, metric.protocol) and task in (None, metric.task)
                 and in_delta_m in (None, metric.in_delta_m))


def delta_m_keys(protocol):
    """{task: keys of the metrics Δm averages} under `protocol`, tasks without such metrics left out."""
    by_task = {task: tuple(metric.key for metric in select(protocol, task, in_delta_m=True)) for task in TASKS}
    return MappingProxyType({task: keys for task, keys in by_task.items() if keys})


def measured_tasks(metrics):
    """The tasks (in TASKS order) that `metrics` (a results.json metrics dict) has any metric of."""
    return tuple(task for task in TASKS if any(metric.key in metrics for metric in select(task=task)))
