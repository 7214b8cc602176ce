"""The paper's comparison tables over the runs of an experiment root (`python -m tools.report EXPS_DIR
--comparison`, which scripts.comparisons runs at its end): printed, and written as comparison.csv,
comparison.md and comparison.png.

Rules (reading the runs, configurations, means, stds and Δm as in tools.report):
- A configuration is a row of the paper's tables (data.published) by its settings: the cross-task model
  (--model xtask) is the cross-task row and --model adamtnet the AdaMT-Net row; with --model mtan it is
  KD4MTL when --distill_from is set, otherwise PCGrad with --balancing pcgrad and MTAN with --balancing
  none (another balancing of MTAN is no row). Single-task runs are no row. On NYUv2 the label adds the
  mark of the number of trained tasks († two, * three).
- One table per dataset and number of tasks (Cityscapes; NYUv2 †, then *), its rows in the paper's
  order. Several configurations of one row (two balancings of the cross-task model, say) each get a
  row, named by the label and, in brackets, the settings that differ between them.
- Columns: the paper protocol's mIoU, Pix Acc, Abs and Abs Rel, each followed by the paper's published
  number (a paper-protocol number), and its Δm; then the standard protocol's metrics that Δm averages
  (the surface-normal ones in the three-task tables) and its Δm.
- Below the tables: the configurations that are no row, the skipped folders, the notes on NaN or null
  metrics, and a note per table on its rows that are not at the paper's setting (--demo, or another
  class count or input size), whose published numbers are for reference only.
- comparison.png: a row of panels per table, one per paper-protocol column, a bar per row (mean, std as
  error bar) with its published number as a black line.
"""
from dataclasses import dataclass
from types import MappingProxyType

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from data.published import (ADAMTNET, CROSS_TASK, KD4MTL, MTAN, PCGRAD, PUBLISHED_METRICS, PUBLISHED_RESULTS,
                            TASK_MARKS, printed_number, row_label)
from tools.report.gather import group_by_configuration, row_names, select_groups
from tools.report.render import (PANEL_SIZE_INCHES, RUN_HEADER, STD_NOTE, aligned_text, bar_colours, column_title,
                                 csv_rows, draw_bars, format_cell, markdown_lists, markdown_table, note_lines,
                                 pairing_lines, plotted_scale, run_cells, shown_columns, skipped_lines, with_closing,
                                 write_files)
from tools.report.statistics import configuration_row, is_paper_setting
from utils.delta_m import DEFINITION
from utils.metric_definitions import PAPER, STANDARD, metric_key, select
from utils.plots import save_figure

FILE_STEM = "comparison"
# The columns of a table under each protocol: the metrics that Δm averages, then Δm.
PAPER_COLUMNS = (*(metric.key for metric in select(PAPER, in_delta_m=True)), metric_key("delta_m", PAPER))
STANDARD_COLUMNS = (*(metric.key for metric in select(STANDARD, in_delta_m=True)), metric_key("delta_m", STANDARD))
# Paper-protocol column -> the quantity of the published number that follows it.
PUBLISHED_COLUMNS = MappingProxyType({metric_key(quantity, PAPER): quantity for quantity in PUBLISHED_METRICS})
PUBLISHED_TITLE = "published"
PUBLISHED_NOTE = "published: the paper's number (the original's README), computed as the paper protocol"
# The method of an MTAN run without --distill_from, by its balancing; of the other multi-task runs, by model.
MTAN_METHODS = MappingProxyType({"none": MTAN, "pcgrad": PCGRAD})
FAMILY_METHODS = MappingProxyType({"xtask": CROSS_TASK, "adamtnet": ADAMTNET})
TICK_LABEL_ROTATION = 30


@dataclass(frozen=True)
class ComparisonTable:
    """The rows of one table of the paper (dataset, number of tasks): ReportRows named by their labels, in
    the paper's order, the published numbers of each ({quantity: value}) and the names of the rows whose
    runs are not all at the paper's setting."""

    dataset: str
    task_count: int
    rows: tuple
    published: tuple
    away_from_paper_setting: tuple

    @property
    def title(self):
        """"cityscapes", "nyu, 2 tasks (†)"."""
        mark = TASK_MARKS[self.dataset][self.task_count]
        return f"{self.dataset}, {self.task_count} tasks ({mark})" if mark else self.dataset


@dataclass(frozen=True)
class Comparison:
    """What is printed and written: the tables, the configurations that are no row of them (a line each),
    the skipped folders and the notes."""

    tables: tuple
    others: tuple
    skipped: list
    notes: tuple

    @property
    def rows(self):
        """Every row of every table."""
        return [row for table in self.tables for row in table.rows]


def paper_method(config):
    """The method (data.published: MTAN, ..., CROSS_TASK) of the paper's row that a run of `config` (RunConfig)
    is, or None: single-task runs and MTAN with a balancing of no row."""
    model = config.model
    if model.single_task is not None:
        return None
    if model.family == "mtan":
        return KD4MTL if model.mtan.distill_from else MTAN_METHODS.get(config.balancing.method)
    return FAMILY_METHODS.get(model.family)


def labelled_names(label, configurations):
    """The row names of `configurations`, all of the row `label`: the label alone for one, else each followed
    by the settings that differ between them."""
    if len(configurations) == 1:
        return [label]
    return [f"{label} ({name})" for name in row_names([runs[0] for runs in configurations])]


def build_table(dataset, task_count, by_label, candidates):
    """The table of `dataset` and `task_count` from `by_label` ({label: configurations} of its rows), in the
    paper's order; Δm baselines looked up in `candidates`."""
    rows, published, away = [], [], []
    for label, results in PUBLISHED_RESULTS[dataset].items():
        configurations = by_label.get(label, [])
        for name, runs in zip(labelled_names(label, configurations), configurations):
            rows.append(configuration_row(name, runs, candidates))
            published.append(results)
            if not all(is_paper_setting(run) for run in runs):
                away.append(name)
    return ComparisonTable(dataset, task_count, tuple(rows), tuple(published), tuple(away))


def other_lines(configurations):
    """A line per configuration that is no row: its name among them and its number of runs."""
    names = row_names([runs[0] for runs in configurations])
    return tuple(f"{name} ({len(runs)} run{'s' if len(runs) > 1 else ''})" for name, runs in zip(names, configurations))


def setting_lines(tables):
    """A line per table with rows that are not at the paper's setting, naming them."""
    return [f"note: {table.title}: {', '.join(table.away_from_paper_setting)} not at the paper's setting (--demo, "
            "or another class count or input size): the published numbers are for reference only"
            for table in tables if table.away_from_paper_setting]


def build_comparison(runs, skipped, groups):
    """The comparison of the finished `runs` in `groups` (all when empty); Δm baselines taken from all `runs`."""
    shown_runs = select_groups(runs, groups)
    by_table, others = {}, []
    for configuration in group_by_configuration(shown_runs):
        config = configuration[0].config
        method, dataset, task_count = paper_method(config), config.data.dataset, len(config.model.tasks)
        label = None if method is None else row_label(dataset, method, task_count)
        if label is None:
            others.append(configuration)
        else:
            by_table.setdefault((dataset, task_count), {}).setdefault(label, []).append(configuration)
    tables = tuple(build_table(dataset, task_count, by_table[dataset, task_count], runs)
                   for dataset in PUBLISHED_RESULTS for task_count in TASK_MARKS[dataset]
                   if (dataset, task_count) in by_table)
    return Comparison(tables, other_lines(others), skipped, tuple(note for run in shown_runs for note in run.notes))


def header_cells(columns):
    """The header of a table with `columns`: row, n, each column's title, "published" after those that have one."""
    header = ["row", "n"]
    for column in columns:
        header += [column_title(column)] + ([PUBLISHED_TITLE] if column in PUBLISHED_COLUMNS else [])
    return header


def row_cells(row, published, columns):
    """The cells of `row` under `columns` (header_cells): name, n, "mean ± std" and the published numbers."""
    cells = [row.name, str(len(row.experiments))]
    for column in columns:
        cells.append(format_cell(column, *row.values[column]))
        if column in PUBLISHED_COLUMNS:
            quantity = PUBLISHED_COLUMNS[column]
            cells.append(printed_number(quantity, published[quantity]))
    return cells


def table_blocks(table):
    """(title, columns) of the printed blocks of `table`: the paper protocol's, then the standard protocol's
    (without the columns no row has a value of)."""
    return ((f"{table.title}, paper protocol, beside the published numbers", PAPER_COLUMNS),
            (f"{table.title}, standard protocol", tuple(shown_columns(table.rows, STANDARD_COLUMNS))))


def closing_lines(comparison):
    """The lines after the tables: the configurations that are no row, the skipped folders, the notes."""
    others = [f"not a row of the paper's tables: {line}" for line in comparison.others]
    return others + skipped_lines(comparison.skipped) + note_lines(comparison.notes) + setting_lines(comparison.tables)


def render_comparison_text(comparison):
    """The printed comparison: the Δm definition, each table in its two blocks, the Δm pairing, then the
    closing lines."""
    lines = [DEFINITION, STD_NOTE, PUBLISHED_NOTE]
    for table in comparison.tables:
        for title, columns in table_blocks(table):
            body = [row_cells(row, published, columns) for row, published in zip(table.rows, table.published)]
            lines += ["", f"{title}:", aligned_text(header_cells(columns), body)]
    lines += pairing_lines(comparison.rows)
    if not comparison.tables:
        lines += ["", "no finished run of a row of the paper's comparison tables"]
    return with_closing(lines, closing_lines(comparison))


def render_comparison_markdown(comparison):
    """comparison.md: the definition, a table per table of the paper with both protocols' columns, seeds,
    folders and pairing, then the configurations that are no row, the skipped folders and the notes."""
    lines = ["# Comparison with the paper's tables", "", DEFINITION, "", STD_NOTE, "", PUBLISHED_NOTE]
    for table in comparison.tables:
        columns = [column for _, block in table_blocks(table) for column in block]
        body = [row_cells(row, published, columns) + run_cells(row)
                for row, published in zip(table.rows, table.published)]
        lines += ["", f"## {table.title}", ""] + markdown_table(header_cells(columns) + list(RUN_HEADER), body)
    lines += markdown_lists((("Not rows of the paper's tables", comparison.others),
                             ("Skipped folders", skipped_lines(comparison.skipped)),
                             ("Notes", note_lines(comparison.notes) + setting_lines(comparison.tables))))
    return "\n".join(lines) + "\n"


def comparison_csv_rows(comparison):
    """comparison.csv's rows: report.csv's columns (render.csv_rows) after the table's title and its number
    of tasks, then the published numbers (published_miou, ...)."""
    table_rows = []
    for table in comparison.tables:
        for line, published in zip(csv_rows(table.rows), table.published):
            numbers = {f"{PUBLISHED_TITLE}_{quantity}": published[quantity] for quantity in PUBLISHED_METRICS}
            table_rows.append({"table": table.title, "tasks": table.task_count, **line, **numbers})
    return table_rows


def plot_comparison(comparison, path):
    """comparison.png: a row of panels per table, one per paper-protocol column, a bar per row (mean, std as
    error bar, named below) and its published number as a black line."""
    figure = Figure(figsize=(PANEL_SIZE_INCHES[0] * len(PAPER_COLUMNS),
                             PANEL_SIZE_INCHES[1] * 1.5 * len(comparison.tables)))
    axes_grid = figure.subplots(len(comparison.tables), len(PAPER_COLUMNS), squeeze=False)
    for axes_row, table in zip(axes_grid, comparison.tables):
        colours = bar_colours(len(table.rows))
        for axes, column in zip(axes_row, PAPER_COLUMNS):
            draw_bars(axes, table.rows, column, colours)
            axes.set_title(f"{table.title}: {column_title(column)}", fontsize=9)
            if column in PUBLISHED_COLUMNS:
                scale = plotted_scale(column)
                axes.scatter(range(len(table.rows)), [published[PUBLISHED_COLUMNS[column]] * scale
                                                      for published in table.published],
                             marker="_", s=400, color="black", zorder=3)
            axes.set_xticks(range(len(table.rows)), [row.name for row in table.rows], rotation=TICK_LABEL_ROTATION,
                            ha="right", fontsize=7)
    figure.legend(handles=[Line2D([], [], color="black", marker="_", linestyle="", markersize=14,
                                  label=PUBLISHED_NOTE)], loc="lower center", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(figure, path)


def write_comparison(comparison, folder):
    """Write comparison.csv, comparison.md and comparison.png into `folder` (created); returns their paths."""
    return write_files(folder, FILE_STEM, comparison_csv_rows(comparison), render_comparison_markdown(comparison),
                       lambda path: plot_comparison(comparison, path))
