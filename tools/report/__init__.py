"""One table over many experiment folders: a row per configuration with the mean ± std over its runs
(seeds) of every metric in both protocols, Δm against the single-task baselines, and the paper's numbers
for reference; printed, and written as report.csv, report.md and report.png. With --comparison, the
paper's comparison tables instead: the configurations that are its rows, in its order, beside its
published numbers (comparison.csv, comparison.md, comparison.png; the rules in tools.report.comparison).

Usage, from the repository root:

    python -m tools.report EXPS_DIR [--group G ...] [--out DIR] [--comparison]

Modules: gather (finding and reading the runs, grouping them into configurations), statistics (means,
std, Δm and its baselines), render (the printed table, report.csv, report.md, report.png), comparison
(the comparison tables, from gather's configurations and statistics' rows, written with render's
pieces). The metrics, their titles, percentages and directions come from utils.metric_definitions.

Rules:
- A run is a numbered folder directly under EXPS_DIR that training.recorder.read_run reads as finished:
  a `status` file reading "finished" (a folder without a status file counts as finished when it has a
  results.json: runs from before status files), with a config.json and a results.json. Every other
  numbered folder is listed as "skipped: NNN (reason)".
- A configuration is a run's settings (RunConfig.flat(); read_run fills those an older config.json lacks
  with its entry script's defaults) minus those declared NOT_COMPARED in training.config (seeds, paths,
  output, device and speed switches). A row's name lists the settings whose values differ between the
  rows of the table, leaving out in each row those at their default ("default" when none is left); a line
  above the table names the settings that every row shares away from their defaults. The settings that
  name the kind of run (declared KIND_OF_RUN: the dataset, --demo, --single_task, --distill_from) come
  first and are named whenever they are set. --distill_from (the KD4MTL teachers' folders, which differ
  by seed) counts by whether it is set.
- std is the sample standard deviation (ddof = 1); with one run it is left empty. A metric that is NaN or
  null in one run leaves its row's column empty, and a note names the run and the metric.
- Δm (utils.delta_m) of a multi-task run is computed against the single-task segmentation and depth runs
  with the same settings declared BASELINE_MATCH (dataset, num_classes, height, width, enc_layers),
  looked up among all finished runs of EXPS_DIR whatever --group says. When both baselines have a run with
  the run's seed, those are used (paired by seed); otherwise the baselines' metrics averaged over all
  their seeds. A row's Δm is the mean ± std of its runs' Δm; the `pairing` column says how many were
  paired. Single-task rows have no Δm.
- When a row's dataset, class count and input size are the paper's (and it is not a --demo run), the
  paper's reported numbers (data.profiles, paper protocol) follow that dataset's rows.
"""
import argparse
import os
import sys

from tools.report.comparison import build_comparison, render_comparison_text, write_comparison
from tools.report.gather import load_runs
from tools.report.render import render_text, write_outputs
from tools.report.statistics import build_report


def parse_arguments(argv):
    """The command line: EXPS_DIR, --group G ..., --out DIR, --comparison."""
    parser = argparse.ArgumentParser(prog="python -m tools.report",
                                     description="Mean ± std over seeds per configuration, Δm against single-task "
                                                 "baselines, the paper's numbers; report.csv/.md/.png.")
    parser.add_argument("exps_dir", help="folder holding the numbered experiment folders")
    parser.add_argument("--group", nargs="+", help="only the runs of these groups (one per --seeds invocation); "
                        "Δm baselines are still looked up among all runs")
    parser.add_argument("--out", help="where the files go (default: EXPS_DIR)")
    parser.add_argument("--comparison", action="store_true", help="the paper's comparison tables instead: the "
                        "configurations that are its rows (MTAN, KD4MTL, PCGrad, AdaMT-Net, cross-task), in its order, "
                        "beside its published numbers; comparison.csv/.md/.png")
    return parser.parse_args(argv)


def main(argv=None):
    """Print the report (or, with --comparison, the comparison) of EXPS_DIR and write its files; exit status
    0, 1 when it has no row, 2 when EXPS_DIR is not a folder."""
    arguments = parse_arguments(argv)
    if not os.path.isdir(arguments.exps_dir):
        print(f"error: {arguments.exps_dir} is not a folder", file=sys.stderr)
        return 2
    if arguments.comparison:
        build, render, write = build_comparison, render_comparison_text, write_comparison
    else:
        build, render, write = build_report, render_text, write_outputs
    view = build(*load_runs(arguments.exps_dir), arguments.group)
    print(render(view))
    if not view.rows:
        return 1
    paths = write(view, arguments.out or arguments.exps_dir)
    print(f"\nwrote {', '.join(paths)}")
    return 0
