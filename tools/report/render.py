"""The report as text: the printed table (in blocks that fit a terminal), report.csv, report.md (every
column) and report.png (a bar panel per column)."""
import math
import os

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tools.report.statistics import COLUMNS, DELTA_M_COLUMNS
from utils.delta_m import DEFINITION
from utils.files import atomic_write_bytes, write_csv
from utils.metric_definitions import METRICS, PROTOCOLS, TASKS, select
from utils.plots import save_figure

STD_NOTE = "± sample std (ddof=1) over the runs; no std for a single run"
FIGURE_COLUMNS = 4
PANEL_SIZE_INCHES = (3.6, 2.6)
LEGEND_LINE_INCHES = 0.2
RUN_HEADER = ("seeds", "experiments", "Δm pairing")  # the columns of report.md after the numbers
BAR_COLOUR_ORDER = (*range(0, 20, 2), *range(1, 20, 2))  # tab20's ten distinct hues first, then light shades


def printed_blocks():
    """The printed table's blocks (title, columns), so that it fits a terminal: per protocol its Δm metrics
    and Δm, then per protocol and task the task's other metrics (report.md has every column)."""
    blocks = [(f"{protocol} protocol", (*(metric.key for metric in select(protocol, in_delta_m=True)), column))
              for column, protocol in DELTA_M_COLUMNS.items()]
    for protocol in PROTOCOLS:
        for task in TASKS:
            others = tuple(metric.key for metric in select(protocol, task, in_delta_m=False))
            if others:
                blocks.append((f"{protocol} protocol, more {task} metrics", others))
    return tuple(blocks)


PRINTED_BLOCKS = printed_blocks()


def is_percent(column):
    """Whether `column` holds fractions shown x 100 as %."""
    return column in METRICS and METRICS[column].percent


def column_title(column):
    """The title of `column`: the metric's title, " %" when it is a percentage, then its protocol's ending
    ("mIoU % (paper)"); Δm's is "Δm %" with its protocol's ending."""
    if column in DELTA_M_COLUMNS:
        return f"Δm %{PROTOCOLS[DELTA_M_COLUMNS[column]].title_suffix}"
    metric = METRICS[column]
    return f"{metric.title}{' %' if metric.percent else ''}{PROTOCOLS[metric.protocol].title_suffix}"


def format_number(column, value):
    """One number of `column` as shown: % columns x 100 with 2 decimals, Δm signed, errors with 4 decimals."""
    if column in DELTA_M_COLUMNS:
        return f"{value:+.2f}"
    if is_percent(column):
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
    header = ["configuration", "n"] + [column_title(column) for column in columns]
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


def note_lines(notes):
    """One "note: NNN: KEY is NaN" line per metric that is NaN or null in a shown run: its row leaves that
    column empty."""
    return [f"note: {note} (its row's column is left empty)" for note in notes]


def shared_line(report):
    """The line naming the settings every row shares away from their defaults (rows name the others)."""
    return f"every row: {report.shared_settings or 'nothing away from the defaults'}"


def shown_columns(rows, columns):
    """The `columns` that some row has a value of (a two-task table shows no surface-normal columns)."""
    return [column for column in columns if any(math.isfinite(row.values[column][0]) for row in rows)]


def render_text(report):
    """The printed report: the Δm definition, the table in PRINTED_BLOCKS (without the columns no row has a
    value of), the pairing, the skipped folders and the notes."""
    lines = [DEFINITION, STD_NOTE]
    if report.rows:
        lines.append(shared_line(report))
        for title, columns in PRINTED_BLOCKS:
            shown = shown_columns(report.rows, columns)
            if shown:
                lines += ["", f"{title}:", aligned_text(*table_cells(report.rows, shown))]
        lines += pairing_lines(report.rows)
    else:
        lines += ["", "no finished run to report"]
    return with_closing(lines, skipped_lines(report.skipped) + note_lines(report.notes))


def pairing_lines(rows):
    """The printed lines on how the Δm baselines of `rows` were paired (none when no row has Δm)."""
    pairings = [f"  {row.name}: {row.pairing}" for row in rows if row.pairing]
    if not pairings:
        return []
    return ["", "Δm baselines (single-task runs of the same dataset, classes, size, encoder):"] + pairings


def with_closing(lines, closing):
    """The printed text of `lines`, then, when there are any, a blank line and the `closing` lines."""
    return "\n".join(lines + ([""] + closing if closing else []))


def run_cells(row):
    """The cells of RUN_HEADER for `row`: its seeds, its experiment folders and its Δm pairing."""
    return [", ".join(map(str, row.seeds)), ", ".join(row.experiments), row.pairing]


def render_markdown(report):
    """report.md: the definition, one table with every column, seeds, folders and pairing, the skipped
    folders and the notes."""
    header, body = table_cells(report.rows, COLUMNS)
    header += RUN_HEADER
    for line, row in zip(body, report.rows):
        line += run_cells(row)
    lines = ["# Experiment report", "", DEFINITION, "", STD_NOTE, "", shared_line(report), ""]
    lines += markdown_table(header, body)
    lines += markdown_lists((("Skipped folders", skipped_lines(report.skipped)), ("Notes", note_lines(report.notes))))
    return "\n".join(lines) + "\n"


def markdown_table(header, body):
    """A Markdown table's lines: the `header` cells, the separator, a line per `body` list of cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(line) + " |"
                                                                             for line in body]


def markdown_lists(sections):
    """Markdown lines: for each (title, lines) of `sections` that has lines, a "## title" and a bullet per line."""
    lines = []
    for title, items in sections:
        if items:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in items]
    return lines


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


def bar_colours(count):
    """`count` bar colours: tab20's ten distinct hues first, then their light shades."""
    return colormaps["tab20"]([BAR_COLOUR_ORDER[index % len(BAR_COLOUR_ORDER)] for index in range(count)])


def plotted_scale(column):
    """The factor of `column`'s values in a figure: 100 for a percentage, else 1."""
    return 100.0 if is_percent(column) else 1.0


def draw_bars(axes, rows, column, colours):
    """On `axes`, titled by `column`, a bar per row at its position: its mean of `column` (x plotted_scale),
    its std as error bar; nothing where it has no mean."""
    scale = plotted_scale(column)
    for position, row in enumerate(rows):
        mean, std = row.values[column]
        if math.isfinite(mean):
            axes.bar(position, mean * scale, color=colours[position],
                     yerr=std * scale if math.isfinite(std) else None, capsize=3)
    axes.set_title(column_title(column), fontsize=9)
    axes.set_xticks([])
    axes.tick_params(labelsize=7)


def plot_report(rows, path):
    """report.png: a panel per column, a bar per row (mean, std as error bar), a legend of the rows."""
    panel_rows = math.ceil(len(COLUMNS) / FIGURE_COLUMNS)
    legend_height = LEGEND_LINE_INCHES * (len(rows) + 1)
    figure = Figure(figsize=(PANEL_SIZE_INCHES[0] * FIGURE_COLUMNS, PANEL_SIZE_INCHES[1] * panel_rows + legend_height))
    colours = bar_colours(len(rows))
    axes_grid = figure.subplots(panel_rows, FIGURE_COLUMNS, squeeze=False)
    for axes, column in zip(axes_grid.flat, COLUMNS):
        draw_bars(axes, rows, column, colours)
    handles = [Patch(color=colours[position], label=f"{row.name} (n={len(row.experiments)})" if row.experiments
                     else row.name) for position, row in enumerate(rows)]
    figure.legend(handles=handles, loc="lower center", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    save_figure(figure, path)


def write_files(folder, stem, table, markdown, plot):
    """Write {stem}.csv (`table`, a list of dicts), {stem}.md (`markdown`) and {stem}.png (`plot(path)`) into
    `folder` (created); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{stem}.{extension}") for extension in ("csv", "md", "png")]
    write_csv(paths[0], table)
    atomic_write_bytes(paths[1], markdown.encode("utf-8"))
    plot(paths[2])
    return paths


def write_outputs(report, folder):
    """Write report.csv, report.md and report.png into `folder` (created); returns their paths."""
    return write_files(folder, "report", csv_rows(report.rows), render_markdown(report),
                       lambda path: plot_report(report.rows, path))
