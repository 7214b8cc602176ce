"""One table over many experiment folders: a row per configuration with the mean ± std over its runs
(seeds) of every metric in both protocols, Δm against the single-task baselines, and the paper's numbers
for reference; printed, and written as report.csv, report.md and report.png.

Usage, from the repository root:

    python -m tools.report EXPS_DIR [--group G ...] [--out DIR]

Rules:
- A run is a numbered folder directly under EXPS_DIR with a readable config.json and results.json and a
  `status` file reading "finished" (a folder without a status file counts as finished when it has a
  results.json: runs from before status files). Every other numbered folder is listed as
  "skipped: NNN (reason)".
- A configuration is a run's options minus IGNORED_OPTIONS (seeds, paths, output and device flags), with
  `dataset` and `single_task` always present (taken from config.json, or guessed for older runs) and an
  option missing from an older config.json at its entry script's default. A row's name lists the options
  whose values differ between the rows of the table, leaving out in each row those at their default
  ("default" when none is left); a line above the table names the options that every row shares away from
  their defaults.
- std is the sample standard deviation (ddof = 1); with one run it is left empty.
- Δm (utils.delta_m) of a multi-task run is computed against the single-task segmentation and depth runs
  with the same dataset, num_classes, height, width and enc_layers (BASELINE_MATCH_OPTIONS), looked up
  among all finished runs of EXPS_DIR whatever --group says. When both baselines have a run with the
  run's seed, those are used (paired by seed); otherwise the baselines' metrics averaged over all their
  seeds. A row's Δm is the mean ± std of its runs' Δm; the `pairing` column says how many were paired.
  Single-task rows have no Δm.
- When a row's dataset, class count and input size are the paper's (and it is not a --demo run), the
  paper's reported numbers (data.profiles, paper protocol) follow that dataset's rows.
"""
import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from data.profiles import PROFILES
from training.options import parse_options
from utils.delta_m import DEFINITION, delta_m
from utils.files import atomic_write_bytes, write_csv
from utils.plots import save_figure

# Options that do not change what a run learns (seeds are what a row averages over).
IGNORED_OPTIONS = ("seed", "seeds", "group", "explicit", "save_path", "input_path", "workers", "notqdm", "debug",
                   "cpu", "deterministic", "resume", "time_inf", "no_plots", "show", "view_only", "run_only",
                   "infer_only", "exp_num", "tensorboard", "multiple_gpu", "pretrained_weights")
# What a single-task baseline shares with the multi-task runs it is compared with.
BASELINE_MATCH_OPTIONS = ("dataset", "num_classes", "height", "width", "enc_layers")
SINGLE_TASKS = ("segmentation", "depth")
# Named whenever set (not None or False), first: they choose the defaults the other options are compared with.
SETTING_OPTIONS = ("dataset", "demo", "single_task")

# Column -> title; the metrics of results.json in both protocols, then Δm in both protocols.
METRIC_TITLES = MappingProxyType({
    "miou": "mIoU %", "pixel_acc": "Pix Acc %", "abs": "Abs", "abs_rel": "Abs Rel", "rmse": "RMSE",
    "rmse_log": "RMSE log", "sq_rel": "Sq Rel", "delta1": "δ1 %", "delta2": "δ2 %", "delta3": "δ3 %",
    "miou_paper": "mIoU % (paper)", "pixel_acc_paper": "Pix Acc % (paper)", "abs_paper": "Abs (paper)",
    "abs_rel_paper": "Abs Rel (paper)",
})
DELTA_M_TITLES = MappingProxyType({"delta_m": "Δm %", "delta_m_paper": "Δm % (paper)"})
DELTA_M_PROTOCOLS = MappingProxyType({"delta_m": "standard", "delta_m_paper": "paper"})
PERCENT_COLUMNS = frozenset({"miou", "pixel_acc", "delta1", "delta2", "delta3", "miou_paper", "pixel_acc_paper"})
# The printed table comes in blocks (title, columns) so that it fits a terminal; report.md has every column.
PRINTED_BLOCKS = (
    ("standard protocol", ("miou", "pixel_acc", "abs", "abs_rel", "delta_m")),
    ("paper protocol", ("miou_paper", "pixel_acc_paper", "abs_paper", "abs_rel_paper", "delta_m_paper")),
    ("standard protocol, more depth metrics", ("rmse", "rmse_log", "sq_rel", "delta1", "delta2", "delta3")),
)
# The paper's numbers (data.profiles) are paper-protocol numbers: reported under these columns.
PAPER_COLUMNS = MappingProxyType({"miou": "miou_paper", "pixel_acc": "pixel_acc_paper", "abs": "abs_paper",
                                  "abs_rel": "abs_rel_paper"})
STD_NOTE = "± sample std (ddof=1) over the runs; no std for a single run"
FIGURE_COLUMNS = 4
PANEL_SIZE_INCHES = (3.6, 2.6)
LEGEND_LINE_INCHES = 0.2
BAR_COLOUR_ORDER = (*range(0, 20, 2), *range(1, 20, 2))  # tab20's ten distinct hues first, then light shades


class UnusableRun(Exception):
    """A numbered folder that is not a finished, readable run; the message is the reason."""


@dataclass(frozen=True)
class Run:
    """One finished run: its folder name, options (dataset, single_task, group and seed filled in), the
    metrics of results.json, its entry script's defaults, and its configuration (the options that define a
    row, with options missing from an older config.json at their defaults)."""

    name: str
    options: dict
    metrics: dict
    defaults: dict
    configuration: dict

    @property
    def configuration_key(self):
        """The configuration as a canonical string: runs with equal keys share a row."""
        return json.dumps(self.configuration, sort_keys=True, default=str)


@dataclass(frozen=True)
class Skipped:
    """A numbered folder left out of the report, and why."""

    name: str
    reason: str


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
    """What is printed and written: the rows, the options every row shares away from their defaults, and
    the skipped folders."""

    rows: list
    shared_options: str
    skipped: list


def read_json(path):
    """The JSON object in `path`; UnusableRun naming the file when it is missing, unreadable or not an object."""
    label = os.path.basename(path)
    if not os.path.isfile(path):
        raise UnusableRun(f"no {label}")
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnusableRun(f"{label} unreadable: {error}") from None
    if not isinstance(content, dict):
        raise UnusableRun(f"{label} is not a JSON object")
    return content


def check_status(folder):
    """UnusableRun unless the folder's run finished: a `status` file reading "finished", or none at all
    (runs from before status files; results.json is checked by the caller)."""
    path = os.path.join(folder, "status")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            status = stream.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UnusableRun(f"status unreadable: {error}") from None
    if status != "finished":
        raise UnusableRun(f"status: {status or 'empty'}")


def infer_dataset(options):
    """options["dataset"], or for older runs the profile guessed from input_path, then ignore_index and
    num_classes; "unknown" when nothing fits."""
    if options.get("dataset"):
        return options["dataset"]
    input_path = str(options.get("input_path") or "").lower()
    for name in PROFILES:
        if name in input_path:
            return name
    for name, profile in PROFILES.items():
        if (options.get("num_classes") in profile.class_counts
                and options.get("ignore_index") == profile.defaults["ignore_index"]):
            return name
    for name, profile in PROFILES.items():
        if options.get("num_classes") in profile.class_counts:
            return name
    return "unknown"


def infer_single_task(options, metrics):
    """options["single_task"], or for older runs the task whose metrics alone are present (None: both)."""
    if "single_task" in options:
        return options["single_task"]
    has_segmentation, has_depth = "miou" in metrics, "abs" in metrics
    if has_segmentation and not has_depth:
        return "segmentation"
    if has_depth and not has_segmentation:
        return "depth"
    return None


def scalar_metrics(results):
    """The report's metrics in results["metrics"] as floats (null becomes NaN); UnusableRun when there are
    none or one is not a number."""
    metrics = results.get("metrics")
    if not isinstance(metrics, dict):
        raise UnusableRun("results.json has no metrics")
    scalars = {}
    for key in METRIC_TITLES:
        if key not in metrics:
            continue
        value = metrics[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UnusableRun(f"results.json: metric {key} is not a number ({value!r})")
        scalars[key] = math.nan if value is None else float(value)
    if "miou" not in scalars and "abs" not in scalars:
        raise UnusableRun("results.json has neither segmentation nor depth metrics")
    return scalars


def entry_defaults(dataset, demo):
    """The options of the entry script of `dataset` when no flag is given (its --demo defaults when `demo`);
    empty for an unknown dataset."""
    if dataset not in PROFILES:
        return {}
    return vars(parse_options(PROFILES[dataset], ["--demo"] if demo else []))


def load_run(folder, defaults_of):
    """The finished run in `folder`, its defaults from `defaults_of(dataset, demo)`; UnusableRun otherwise."""
    check_status(folder)
    config = read_json(os.path.join(folder, "config.json"))
    if not isinstance(config.get("options"), dict):
        raise UnusableRun("config.json has no options")
    metrics = scalar_metrics(read_json(os.path.join(folder, "results.json")))
    options = dict(config["options"])
    options["dataset"] = infer_dataset(options)
    options["single_task"] = infer_single_task(options, metrics)
    options.setdefault("group", None)
    options.setdefault("seed", None)
    defaults = defaults_of(options["dataset"], bool(options.get("demo")))
    configuration = {key: value for key, value in {**defaults, **options}.items() if key not in IGNORED_OPTIONS}
    return Run(os.path.basename(folder), options, metrics, defaults, configuration)


def load_runs(exps_dir):
    """(finished runs, skipped folders) over the numbered folders directly under `exps_dir`, in order."""
    runs, skipped, defaults = [], [], {}

    def defaults_of(dataset, demo):
        """entry_defaults, computed once per (dataset, demo)."""
        if (dataset, demo) not in defaults:
            defaults[dataset, demo] = entry_defaults(dataset, demo)
        return defaults[dataset, demo]

    for name in sorted((entry for entry in os.listdir(exps_dir) if entry.isdigit()), key=int):
        folder = os.path.join(exps_dir, name)
        if not os.path.isdir(folder):
            continue
        try:
            runs.append(load_run(folder, defaults_of))
        except UnusableRun as reason:
            skipped.append(Skipped(name, str(reason)))
    return runs, skipped


def select_groups(runs, groups):
    """The runs whose group is one of `groups` (all runs when `groups` is empty or None)."""
    if not groups:
        return list(runs)
    return [run for run in runs if run.options["group"] in groups]


def group_by_configuration(runs):
    """Lists of runs sharing a configuration, in the order of their first folder."""
    by_key = {}
    for run in runs:
        by_key.setdefault(run.configuration_key, []).append(run)
    return list(by_key.values())


def format_option(value):
    """An option value as it appears in a row name."""
    return format(value, "g") if isinstance(value, float) else str(value)


def ordered_keys(runs):
    """Every configuration key of `runs`: SETTING_OPTIONS, then the others in flag order."""
    keys = list(dict.fromkeys(key for run in runs for key in run.configuration))
    return [key for key in SETTING_OPTIONS if key in keys] + [key for key in keys if key not in SETTING_OPTIONS]


def value_count(runs, key):
    """How many different values `key` takes in the configurations of `runs`."""
    return len({json.dumps(run.configuration.get(key), default=str) for run in runs})


def is_notable(run, key):
    """Whether `run`'s value of `key` goes into a name: a SETTING_OPTIONS value that is set, any other
    value that is not at the run's entry script default."""
    value = run.configuration.get(key)
    if key in SETTING_OPTIONS:
        return value is not None and value is not False
    return value != run.defaults.get(key)


def row_names(runs):
    """A name per run (one run per row) made of the options whose values differ between the rows, each
    left out where it is not notable (at its default); "default" when nothing is left. Missing options
    are at their defaults and the defaults depend on SETTING_OPTIONS only, so two rows never share a name."""
    differing = [key for key in ordered_keys(runs) if value_count(runs, key) > 1]
    names = []
    for run in runs:
        parts = [f"{key}={format_option(run.configuration.get(key))}" for key in differing if is_notable(run, key)]
        names.append(" ".join(parts) or "default")
    return names


def shared_options(runs):
    """"key=value ..." of the options with one value in every row, notable in each."""
    shared = [key for key in ordered_keys(runs)
              if value_count(runs, key) == 1 and all(is_notable(run, key) for run in runs)]
    return " ".join(f"{key}={format_option(runs[0].configuration.get(key))}" for key in shared)


def mean_and_std(values):
    """(mean, sample std with ddof=1) of `values`; std is NaN for a single value, both NaN for none."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else math.nan)


def averaged_metrics(runs):
    """Each metric averaged over `runs` (over the runs that have it)."""
    keys = dict.fromkeys(key for run in runs for key in run.metrics)
    return {key: float(np.mean([run.metrics[key] for run in runs if key in run.metrics])) for key in keys}


def matching_baselines(run, candidates, task):
    """The single-task `task` runs among `candidates` with the same BASELINE_MATCH_OPTIONS as `run`."""
    return [candidate for candidate in candidates if candidate.options["single_task"] == task
            and all(candidate.options.get(key) == run.options.get(key) for key in BASELINE_MATCH_OPTIONS)]


def baseline_metrics(run, candidates):
    """({task: metrics} of the single-task baselines of `run`, whether they are paired by seed), or
    (None, False) when a task has no baseline. Paired: the baselines' runs with `run`'s seed (averaged
    if several); otherwise each baseline averaged over all its seeds."""
    baselines = {task: matching_baselines(run, candidates, task) for task in SINGLE_TASKS}
    if not all(baselines.values()):
        return None, False
    same_seed = {task: [baseline for baseline in found if baseline.options["seed"] == run.options["seed"]]
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
    per_run = {column: [] for column in DELTA_M_PROTOCOLS}
    paired_count = 0
    for run in runs:
        baselines, paired = baseline_metrics(run, candidates)
        if baselines is None:
            return {column: (math.nan, math.nan) for column in DELTA_M_PROTOCOLS}, ""
        paired_count += paired
        for column, protocol in DELTA_M_PROTOCOLS.items():
            per_run[column].append(run_delta_m(run, baselines, protocol))
    values = {column: mean_and_std(found) for column, found in per_run.items()}
    return values, f"{paired_count}/{len(runs)} paired by seed"


def configuration_row(name, runs, candidates):
    """The row of one configuration's runs; Δm against baselines found in `candidates` (multi-task only)."""
    values = {}
    for column in METRIC_TITLES:
        found = [run.metrics[column] for run in runs if column in run.metrics]
        values[column] = mean_and_std(found) if len(found) == len(runs) else (math.nan, math.nan)
    single_task = runs[0].options["single_task"]
    if single_task is None:
        delta_values, pairing = delta_m_values(runs, candidates)
    else:
        delta_values, pairing = {column: (math.nan, math.nan) for column in DELTA_M_PROTOCOLS}, ""
    values.update(delta_values)
    return ReportRow(name=name, kind="multi-task" if single_task is None else "single-task",
                     dataset=runs[0].options["dataset"], experiments=tuple(run.name for run in runs),
                     seeds=tuple(run.options["seed"] for run in runs), values=values, pairing=pairing)


def paper_row(dataset):
    """The paper's reported numbers for `dataset` as a row (paper-protocol columns, no std)."""
    reference = PROFILES[dataset].paper_results
    values = {column: (math.nan, math.nan) for column in (*METRIC_TITLES, *DELTA_M_TITLES)}
    for metric, column in PAPER_COLUMNS.items():
        values[column] = (reference[metric], math.nan)
    setting = f"{reference['num_classes']} classes, {reference['height']}x{reference['width']}"
    return ReportRow(name=f"paper, reported ({dataset}, {setting})", kind="paper", dataset=dataset, values=values)


def is_paper_setting(run):
    """Whether `run` is at its dataset's paper setting (class count and input size) and not a --demo run."""
    profile = PROFILES.get(run.options["dataset"])
    return (profile is not None and not run.options.get("demo")
            and profile.is_paper_setting(run.options.get("num_classes"), run.options.get("height"),
                                         run.options.get("width")))


def build_rows(shown_runs, candidates):
    """The table: a row per configuration of `shown_runs` (by dataset, multi-task first, then by folder),
    each dataset's rows followed by the paper's numbers when one of them is at the paper's setting.
    Δm baselines are looked up in `candidates`."""
    configurations = group_by_configuration(shown_runs)
    names = row_names([runs[0] for runs in configurations])
    rows = [configuration_row(name, runs, candidates) for name, runs in zip(names, configurations)]
    datasets = list(dict.fromkeys(row.dataset for row in rows))
    ordered = []
    for dataset in datasets:
        ordered += [row for row in rows if row.dataset == dataset and row.kind == "multi-task"]
        ordered += [row for row in rows if row.dataset == dataset and row.kind == "single-task"]
        if any(is_paper_setting(run) for runs in configurations for run in runs if run.options["dataset"] == dataset):
            ordered.append(paper_row(dataset))
    return ordered


def build_report(runs, skipped, groups):
    """The report of the finished `runs` in `groups` (all when empty), Δm baselines taken from all `runs`."""
    shown_runs = select_groups(runs, groups)
    shared = shared_options([configuration[0] for configuration in group_by_configuration(shown_runs)])
    return Report(build_rows(shown_runs, runs), shared, skipped)


def format_number(column, value):
    """One number of `column` as shown: % columns x 100 with 2 decimals, Δm signed, errors with 4 decimals."""
    if column in DELTA_M_TITLES:
        return f"{value:+.2f}"
    if column in PERCENT_COLUMNS:
        return f"{value * 100:.2f}"
    return f"{value:.4f}"


def format_cell(column, mean, std):
    """"mean ± std" of a column, "mean" without a std, "" without a mean."""
    if not math.isfinite(mean):
        return ""
    if not math.isfinite(std):
        return format_number(column, mean)
    return f"{format_number(column, mean)} ± {format_number(column, std).lstrip('+')}"


def table_cells(rows, columns):
    """Header and body cells: name, n, then `columns`."""
    titles = {**METRIC_TITLES, **DELTA_M_TITLES}
    header = ["configuration", "n"] + [titles[column] for column in columns]
    body = [[row.name, str(len(row.experiments)) if row.experiments else ""]
            + [format_cell(column, *row.values[column]) for column in columns] for row in rows]
    return header, body


def aligned_text(header, body):
    """Cells as plain-text lines, the first column left-aligned and the others right-aligned."""
    widths = [max(len(line[index]) for line in [header] + body) for index in range(len(header))]
    lines = []
    for line in [header] + body:
        cells = [cell.ljust(widths[0]) if index == 0 else cell.rjust(widths[index]) for index, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def skipped_lines(skipped):
    """One "skipped: NNN (reason)" line per skipped folder."""
    return [f"skipped: {item.name} ({item.reason})" for item in skipped]


def shared_line(report):
    """The line naming the options every row shares away from their defaults (rows name the others)."""
    return f"every row: {report.shared_options or 'nothing away from the defaults'}"


def render_text(report):
    """The printed report: the Δm definition, the table in PRINTED_BLOCKS, the pairing, the skipped folders."""
    lines = [DEFINITION, STD_NOTE]
    if report.rows:
        lines.append(shared_line(report))
        for title, columns in PRINTED_BLOCKS:
            lines += ["", f"{title}:", aligned_text(*table_cells(report.rows, columns))]
        pairings = [f"  {row.name}: {row.pairing}" for row in report.rows if row.pairing]
        if pairings:
            lines += ["", "Δm baselines (single-task runs of the same dataset, classes, size, encoder):"] + pairings
    else:
        lines += ["", "no finished run to report"]
    skipped_text = skipped_lines(report.skipped)
    return "\n".join(lines + ([""] + skipped_text if skipped_text else []))


def render_markdown(report):
    """report.md: the definition, one table with every column, seeds, folders and pairing, the skipped list."""
    columns = (*METRIC_TITLES, *DELTA_M_TITLES)
    header, body = table_cells(report.rows, columns)
    header += ["seeds", "experiments", "Δm pairing"]
    for line, row in zip(body, report.rows):
        line += [", ".join(map(str, row.seeds)), ", ".join(row.experiments), row.pairing]
    lines = ["# Experiment report", "", DEFINITION, "", STD_NOTE, "", shared_line(report), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    skipped_text = skipped_lines(report.skipped)
    if skipped_text:
        lines += ["", "## Skipped folders", ""] + [f"- {line}" for line in skipped_text]
    return "\n".join(lines) + "\n"


def csv_value(value):
    """A number for report.csv: itself, or "" when it is NaN."""
    return value if math.isfinite(value) else ""


def csv_rows(rows):
    """report.csv's rows: raw values (fractions, not %), empty where there is nothing."""
    table = []
    for row in rows:
        line = {"name": row.name, "kind": row.kind, "dataset": row.dataset, "n": len(row.experiments) or "",
                "seeds": " ".join(map(str, row.seeds)), "experiments": " ".join(row.experiments)}
        for column, (mean, std) in row.values.items():
            line[f"{column}_mean"], line[f"{column}_std"] = csv_value(mean), csv_value(std)
        line["delta_m_pairing"] = row.pairing
        table.append(line)
    return table


def plot_report(rows, path):
    """report.png: a panel per column, a bar per row (mean, std as error bar), a legend of the rows."""
    columns = (*METRIC_TITLES, *DELTA_M_TITLES)
    titles = {**METRIC_TITLES, **DELTA_M_TITLES}
    panel_rows = math.ceil(len(columns) / FIGURE_COLUMNS)
    legend_height = LEGEND_LINE_INCHES * (len(rows) + 1)
    figure = Figure(figsize=(PANEL_SIZE_INCHES[0] * FIGURE_COLUMNS, PANEL_SIZE_INCHES[1] * panel_rows + legend_height))
    colours = colormaps["tab20"]([BAR_COLOUR_ORDER[index % len(BAR_COLOUR_ORDER)] for index in range(len(rows))])
    axes_grid = figure.subplots(panel_rows, FIGURE_COLUMNS, squeeze=False)
    scale = {column: 100.0 if column in PERCENT_COLUMNS else 1.0 for column in columns}
    for axes, column in zip(axes_grid.flat, columns):
        for position, row in enumerate(rows):
            mean, std = row.values[column]
            if math.isfinite(mean):
                axes.bar(position, mean * scale[column], color=colours[position],
                         yerr=std * scale[column] if math.isfinite(std) else None, capsize=3)
        axes.set_title(titles[column], fontsize=9)
        axes.set_xticks([])
        axes.tick_params(labelsize=7)
    handles = [Patch(color=colours[position], label=f"{row.name} (n={len(row.experiments)})" if row.experiments
                     else row.name) for position, row in enumerate(rows)]
    figure.legend(handles=handles, loc="lower center", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    save_figure(figure, path)


def write_outputs(report, folder):
    """Write report.csv, report.md and report.png into `folder` (created); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, name) for name in ("report.csv", "report.md", "report.png")]
    write_csv(paths[0], csv_rows(report.rows))
    atomic_write_bytes(paths[1], render_markdown(report).encode("utf-8"))
    plot_report(report.rows, paths[2])
    return paths


def parse_arguments(argv):
    """The command line: EXPS_DIR, --group G ..., --out DIR."""
    parser = argparse.ArgumentParser(prog="python -m tools.report",
                                     description="Mean ± std over seeds per configuration, Δm against single-task "
                                                 "baselines, the paper's numbers; report.csv/.md/.png.")
    parser.add_argument("exps_dir", help="folder holding the numbered experiment folders")
    parser.add_argument("--group", nargs="+", help="only the runs of these groups (one per --seeds invocation); "
                        "Δm baselines are still looked up among all runs")
    parser.add_argument("--out", help="where report.csv, report.md and report.png go (default: EXPS_DIR)")
    return parser.parse_args(argv)


def main(argv=None):
    """Print the report of EXPS_DIR and write its files; exit status 0, 1 when there is no finished run
    to report, 2 when EXPS_DIR is not a folder."""
    arguments = parse_arguments(argv)
    if not os.path.isdir(arguments.exps_dir):
        print(f"error: {arguments.exps_dir} is not a folder", file=sys.stderr)
        return 2
    report = build_report(*load_runs(arguments.exps_dir), arguments.group)
    print(render_text(report))
    if not report.rows:
        return 1
    paths = write_outputs(report, arguments.out or arguments.exps_dir)
    print(f"\nwrote {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
