"""The numbers of the report: per configuration the mean and sample std of every metric over its runs, Δm
against the single-task baselines, and the paper's reported numbers as rows."""
import math
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from data.profiles import PROFILES
from training.config import BASELINE_MATCH, keys_with
from tools.report.gather import group_by_configuration, row_names, select_groups, shared_settings
from utils.delta_m import delta_m
from utils.metric_definitions import METRICS, PAPER, PROTOCOLS, measured_tasks, metric_key, select

# Column -> protocol of the Δm columns: "delta_m" (standard protocol), "delta_m_paper".
DELTA_M_COLUMNS = MappingProxyType({metric_key("delta_m", protocol): protocol for protocol in PROTOCOLS})
# Every column of a row: the metrics in both protocols, then Δm in both protocols.
COLUMNS = (*METRICS, *DELTA_M_COLUMNS)
# What a single-task baseline shares with the multi-task runs it is compared with.
BASELINE_MATCH_KEYS = keys_with(BASELINE_MATCH)


@dataclass(frozen=True)
class ReportRow:
    """One row of the table: kind is "multi-task", "single-task" or "paper"; values maps a column to
    (mean, std), NaN where there is nothing; pairing says how Δm's baselines were matched."""

    name: str
    kind: str
    dataset: str
    experiments: tuple = ()
    seeds: tuple = ()
    values: dict = field(default_factory=dict)
    pairing: str = ""


@dataclass(frozen=True)
class Report:
    """What is printed and written: the rows, the settings every row shares away from their defaults, the
    skipped folders and the notes on metrics that are NaN or null in a shown run."""

    rows: list
    shared_settings: str
    skipped: list
    notes: tuple = ()


def mean_and_std(values):
    """(mean, sample std with ddof=1) of `values`; std is NaN for a single value, both NaN for none."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else math.nan)


def nothing(columns):
    """{column: (NaN, NaN)} for `columns`: no value."""
    return {column: (math.nan, math.nan) for column in columns}


def averaged_metrics(runs):
    """Each metric averaged over `runs` (over the runs that have it)."""
    keys = dict.fromkeys(key for run in runs for key in run.metrics)
    return {key: float(np.mean([run.metrics[key] for run in runs if key in run.metrics])) for key in keys}


def matching_baselines(run, candidates, task):
    """The single-task `task` runs among `candidates` with the same BASELINE_MATCH_KEYS settings as `run`."""
    return [candidate for candidate in candidates if candidate.config.model.single_task == task
            and all(candidate.configuration[key] == run.configuration[key] for key in BASELINE_MATCH_KEYS)]


def baseline_metrics(run, candidates):
    """({task: metrics} of the single-task baselines of `run` for each task it was evaluated on, whether
    they are paired by seed), or (None, False) when a task has no baseline. Paired: the baselines' runs with `run`'s seed (averaged
    if several); otherwise each baseline averaged over all its seeds."""
    baselines = {task: matching_baselines(run, candidates, task) for task in measured_tasks(run.metrics)}
    if not all(baselines.values()):
        return None, False
    seed = run.config.optimization.seed
    same_seed = {task: [baseline for baseline in found if baseline.config.optimization.seed == seed]
                 for task, found in baselines.items()}
    paired = all(same_seed.values())
    chosen = same_seed if paired else baselines
    return {task: averaged_metrics(found) for task, found in chosen.items()}, paired


def run_delta_m(run, baselines, protocol):
    """Δm of one multi-task run against `baselines` ({task: metrics}) under `protocol`; NaN when a
    metric is missing or a baseline value is 0."""
    try:
        return delta_m(run.metrics, baselines, protocol)
    except ValueError:
        return math.nan


def delta_m_values(runs, candidates):
    """({Δm column: (mean, std)}, pairing text) of a multi-task row's runs; NaN and "" without baselines."""
    per_run = {column: [] for column in DELTA_M_COLUMNS}
    paired_count = 0
    for run in runs:
        baselines, paired = baseline_metrics(run, candidates)
        if baselines is None:
            return nothing(DELTA_M_COLUMNS), ""
        paired_count += paired
        for column, protocol in DELTA_M_COLUMNS.items():
            per_run[column].append(run_delta_m(run, baselines, protocol))
    values = {column: mean_and_std(found) for column, found in per_run.items()}
    return values, f"{paired_count}/{len(runs)} paired by seed"


def configuration_row(name, runs, candidates):
    """The row of one configuration's runs; Δm against baselines found in `candidates` (multi-task only)."""
    values = {}
    for column in METRICS:
        found = [run.metrics[column] for run in runs if column in run.metrics]
        values[column] = mean_and_std(found) if len(found) == len(runs) else (math.nan, math.nan)
    single_task = runs[0].config.model.single_task
    if single_task is None:
        delta_values, pairing = delta_m_values(runs, candidates)
    else:
        delta_values, pairing = nothing(DELTA_M_COLUMNS), ""
    values.update(delta_values)
    return ReportRow(name=name, kind="multi-task" if single_task is None else "single-task",
                     dataset=runs[0].config.data.dataset, experiments=tuple(run.name for run in runs),
                     seeds=tuple(run.config.optimization.seed for run in runs), values=values, pairing=pairing)


def paper_row(dataset):
    """The paper's reported numbers for `dataset` as a row: they are paper-protocol numbers, so they go
    under the paper protocol's columns (no std)."""
    reference = PROFILES[dataset].paper_results
    values = nothing(COLUMNS)
    for metric in select(PAPER):
        if metric.quantity in reference:
            values[metric.key] = (reference[metric.quantity], math.nan)
    setting = f"{reference['num_classes']} classes, {reference['height']}x{reference['width']}"
    return ReportRow(name=f"paper, reported ({dataset}, {setting})", kind="paper", dataset=dataset, values=values)


def is_paper_setting(run):
    """Whether `run` is at its dataset's paper setting (class count and input size) and not a --demo run."""
    data = run.config.data
    return not run.config.run.demo and PROFILES[data.dataset].is_paper_setting(data.num_classes, data.height,
                                                                               data.width)


def build_rows(shown_runs, candidates):
    """The table: a row per configuration of `shown_runs` (by dataset, multi-task first, then by folder),
    each dataset's rows followed by the paper's numbers when one of them is at the paper's setting.
    Δm baselines are looked up in `candidates`."""
    configurations = group_by_configuration(shown_runs)
    names = row_names([runs[0] for runs in configurations])
    rows = [configuration_row(name, runs, candidates) for name, runs in zip(names, configurations)]
    ordered = []
    for dataset in dict.fromkeys(row.dataset for row in rows):
        ordered += [row for row in rows if row.dataset == dataset and row.kind == "multi-task"]
        ordered += [row for row in rows if row.dataset == dataset and row.kind == "single-task"]
        if any(is_paper_setting(run) for run in shown_runs if run.config.data.dataset == dataset):
            ordered.append(paper_row(dataset))
    return ordered


def build_report(runs, skipped, groups):
    """The report of the finished `runs` in `groups` (all when empty), Δm baselines taken from all `runs`."""
    shown_runs = select_groups(runs, groups)
    shared = shared_settings([configuration[0] for configuration in group_by_configuration(shown_runs)])
    notes = tuple(note for run in shown_runs for note in run.notes)
    return Report(build_rows(shown_runs, runs), shared, skipped, notes)
