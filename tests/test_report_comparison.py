"""tools.report --comparison on fabricated experiment folders (no training): runs of rows of the paper's
tables made from scripts.comparisons' own commands, three seeds each, with known metrics, and the
single-task baselines; the tables' rows, their order, means, sample stds and Δm are checked against NumPy
computations written here."""
import math
import re

import numpy as np
import pandas
import pytest

from data import CITYSCAPES
from data.published import PUBLISHED_RESULTS
from scripts import comparisons
from scripts.run_list import DATASET_PROFILES
from tests.test_report import PNG_SIGNATURE, config_json, write_run
from tools import report
from tools.report import comparison, gather
from training.options import parse_options

SEEDS = (0, 1, 2)
# The runs of scripts.comparisons written here (KD4MTL: its three per-seed runs), and the rows they make.
WRITTEN = ("cityscapes/mtan", "cityscapes/kd4mtl", "cityscapes/pcgrad", "cityscapes/adamtnet",
           "cityscapes/cross_task", "cityscapes/single_segmentation", "cityscapes/single_depth", "nyu/mtan_three_tasks",
           "nyu/pcgrad_three_tasks", "nyu/kd4mtl_two_tasks", "nyu/adamtnet_two_tasks", "nyu/cross_task",
           "nyu/single_segmentation", "nyu/single_depth", "nyu/single_normal")
EXPECTED_TABLES = {
    "cityscapes": ("cityscapes", ("MTAN", "KD4MTL", "PCGrad", "AdaMT-Net", "cross-task")),
    "nyu, 2 tasks (†)": ("nyu", ("KD4MTL†", "AdaMT-Net†", "cross-task†")),
    "nyu, 3 tasks (*)": ("nyu", ("MTAN*", "PCGrad*")),
}
SEGMENTATION = {"miou": 0.5, "pixel_acc": 0.9, "miou_paper": 0.48, "pixel_acc_paper": 0.89}
DEPTH = {"abs": 0.02, "abs_rel": 0.3, "abs_paper": 0.021, "abs_rel_paper": 0.31, "rmse": 0.04}
NORMAL = {"normal_mean": 30.0, "normal_median": 25.0, "normal_11_25": 0.2, "normal_22_5": 0.45, "normal_30": 0.55}
# Δm's metrics by protocol and task, and those where lower is better, as utils.delta_m defines them.
DELTA_M_KEYS = {
    "paper": {"segmentation": ("miou_paper", "pixel_acc_paper"), "depth": ("abs_paper", "abs_rel_paper")},
    "standard": {"segmentation": ("miou", "pixel_acc"), "depth": ("abs", "abs_rel"),
                 "normal": ("normal_mean", "normal_median", "normal_11_25", "normal_22_5", "normal_30")},
}
LOWER_IS_BETTER = {"abs", "abs_rel", "abs_paper", "abs_rel_paper", "normal_mean", "normal_median"}


def row_name(run_name):
    """The name of a written run without its seed ("nyu/kd4mtl_two_tasks/seed0" -> "nyu/kd4mtl_two_tasks")."""
    return run_name.rsplit("/seed", 1)[0]


def fabricated_metrics(name, tasks, seed):
    """Metrics of the tasks `tasks` of one run, distinct per row `name` and seed."""
    rng = np.random.default_rng([WRITTEN.index(name), seed])
    typical = {"segmentation": SEGMENTATION, "depth": DEPTH, "normal": NORMAL}
    return {key: value * rng.uniform(0.8, 1.2) for task in tasks for key, value in typical[task].items()}


def run_config(run, seed, root):
    """The RunConfig that the command of `run` (a ComparisonRun) gives its run with `seed` under `root` (a
    KD4MTL run's teacher folders made up)."""
    arguments = comparisons.entry_arguments(run, SEEDS, str(root), ())
    arguments = [f"teachers/{seed}/{index}" if argument.startswith("<folder of") else argument
                 for index, argument in enumerate(arguments)]
    return parse_options(DATASET_PROFILES[run.dataset], arguments).replace(seed=seed)


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """(exps folder, {row name: [metrics per seed]}) of the written runs."""
    root = tmp_path_factory.mktemp("comparison") / "exps"
    root.mkdir()
    metrics_by_row, number = {}, 0
    for run in comparisons.comparison_runs("all", SEEDS):
        name = row_name(run.name)
        if name not in WRITTEN:
            continue
        for seed in SEEDS if run.seed is None else (run.seed,):
            config = run_config(run, seed, root)
            metrics = fabricated_metrics(name, config.model.trained_tasks(), seed)
            number += 1
            write_run(root, number, config_json(config), metrics)
            metrics_by_row.setdefault(name, []).append(metrics)
    return root, metrics_by_row


def built(root):
    """The comparison of the runs under `root`."""
    return comparison.build_comparison(*gather.load_runs(root), None)


def numpy_delta_m(multi_task, baselines, protocol):
    """Δm of `multi_task` (metrics) against `baselines` ({task: metrics}) under `protocol`, over the tasks it
    has, computed here with NumPy."""
    per_task = []
    for task, keys in DELTA_M_KEYS[protocol].items():
        if keys[0] in multi_task:
            values = np.array([multi_task[key] for key in keys])
            single = np.array([baselines[task][key] for key in keys])
            signs = np.array([-1.0 if key in LOWER_IS_BETTER else 1.0 for key in keys])
            per_task.append(np.mean(signs * (values - single) / single * 100))
    return np.mean(per_task)


def test_the_tables_hold_the_rows_in_the_papers_order_beside_its_numbers(experiments):
    root, _ = experiments
    result = built(root)
    assert {table.title: (table.dataset, tuple(row.name for row in table.rows)) for table in result.tables} == \
        EXPECTED_TABLES
    assert [table.title for table in result.tables] == list(EXPECTED_TABLES)
    for table in result.tables:
        assert table.published == tuple(PUBLISHED_RESULTS[table.dataset][row.name] for row in table.rows)
        assert table.away_from_paper_setting == ()
    assert result.others == ("dataset=cityscapes single_task=segmentation (3 runs)",
                             "dataset=cityscapes single_task=depth (3 runs)",
                             "dataset=nyu single_task=segmentation (3 runs)", "dataset=nyu single_task=depth (3 runs)",
                             "dataset=nyu single_task=normal model=mtan tasks=segmentation+depth+normal (3 runs)")


def test_means_sample_stds_and_delta_m_against_numpy(experiments):
    root, metrics_by_row = experiments
    rows = {row.name: row for row in built(root).rows}
    labels = {"cityscapes/mtan": "MTAN", "cityscapes/kd4mtl": "KD4MTL", "cityscapes/adamtnet": "AdaMT-Net",
              "nyu/mtan_three_tasks": "MTAN*", "nyu/kd4mtl_two_tasks": "KD4MTL†", "nyu/cross_task": "cross-task†"}
    for name, label in labels.items():
        dataset = name.split("/")[0]
        row, metrics = rows[label], metrics_by_row[name]
        assert len(row.experiments) == 3 and row.seeds == SEEDS
        for key in metrics[0]:
            values = np.array([run[key] for run in metrics])
            assert row.values[key] == pytest.approx((values.mean(), values.std(ddof=1))), (label, key)
        for column, protocol in (("delta_m", "standard"), ("delta_m_paper", "paper")):
            baselines = [{task: metrics_by_row[f"{dataset}/single_{task}"][index] for task in DELTA_M_KEYS["standard"]
                          if f"{dataset}/single_{task}" in metrics_by_row} for index in range(len(SEEDS))]
            values = np.array([numpy_delta_m(run, baseline, protocol) for run, baseline in zip(metrics, baselines)])
            assert row.values[column] == pytest.approx((values.mean(), values.std(ddof=1))), (label, column)
        assert row.pairing == "3/3 paired by seed"
    assert math.isnan(rows["cross-task†"].values["normal_mean"][0])


@pytest.mark.parametrize("flags, method", [
    ((), "cross-task"),
    (("--balancing", "dwa"), "cross-task"),
    (("--model", "mtan"), "MTAN"),
    (("--model", "mtan", "--balancing", "pcgrad"), "PCGrad"),
    (("--model", "mtan", "--distill_from", "a", "b"), "KD4MTL"),
    (("--model", "mtan", "--balancing", "dwa"), None),
    (("--model", "adamtnet", "--balancing", "uncertainty"), "AdaMT-Net"),
    (("--model", "mtan", "--single_task", "depth"), None),
    (("--single_task", "segmentation"), None)])
def test_each_configuration_is_classified_by_its_model_balancing_and_teachers(flags, method):
    assert comparison.paper_method(parse_options(CITYSCAPES, list(flags))) == method


def test_configurations_of_one_row_are_named_apart_and_rows_away_from_the_paper_setting_are_noted(experiments,
                                                                                                  tmp_path):
    root, metrics_by_row = experiments
    extra = tmp_path / "exps"
    extra.mkdir()
    for folder in sorted(root.iterdir()):
        (extra / folder.name).symlink_to(folder)
    demo = parse_options(CITYSCAPES, ["--demo"])
    write_run(extra, 100, config_json(demo), metrics_by_row["cityscapes/cross_task"][0])
    write_run(extra, 101, config_json(parse_options(CITYSCAPES, ["--model", "mtan", "--balancing", "dwa"])),
              metrics_by_row["cityscapes/mtan"][0])
    result = built(extra)
    cityscapes = result.tables[0]
    assert [row.name for row in cityscapes.rows][-2:] == ["cross-task (balancing=uncertainty)",
                                                          "cross-task (demo=True)"]
    assert cityscapes.away_from_paper_setting == ("cross-task (demo=True)",)
    assert comparison.setting_lines(result.tables)[0].startswith(
        "note: cityscapes: cross-task (demo=True) not at the paper's setting")
    assert result.others[-1] == "dataset=cityscapes model=mtan balancing=dwa (1 run)"


def test_main_prints_and_writes_the_comparison(experiments, tmp_path, capsys):
    root, metrics_by_row = experiments
    out = tmp_path / "out"
    assert report.main([str(root), "--comparison", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    titles = [line for line in printed.splitlines() if line.endswith(":") and "protocol" in line]
    assert titles == [f"{title}, {block}:" for title in EXPECTED_TABLES
                      for block in ("paper protocol, beside the published numbers", "standard protocol")]
    miou = np.array([metrics["miou_paper"] for metrics in metrics_by_row["cityscapes/pcgrad"]]) * 100
    pcgrad_line = next(line for line in printed.splitlines() if line.startswith("PCGrad "))
    cells = re.split(r"\s{2,}", pcgrad_line)
    assert cells[:4] == ["PCGrad", "3", f"{miou.mean():.2f} ± {miou.std(ddof=1):.2f}", "53.59"]
    assert "not a row of the paper's tables: dataset=cityscapes single_task=segmentation (3 runs)" in printed
    table = pandas.read_csv(out / "comparison.csv")
    assert list(table["name"]) == [name for _, names in EXPECTED_TABLES.values() for name in names]
    assert list(table["table"]) == [title for title, (_, names) in EXPECTED_TABLES.items() for _ in names]
    assert table["published_miou"].tolist() == [PUBLISHED_RESULTS[dataset][name]["miou"]
                                                for dataset, names in EXPECTED_TABLES.values() for name in names]
    assert table["miou_paper_std"].iloc[2] == pytest.approx(miou.std(ddof=1) / 100)
    markdown = (out / "comparison.md").read_text()
    assert "## nyu, 3 tasks (*)" in markdown and "| Mean err |" in markdown
    assert (out / "comparison.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_root_without_a_row_exits_1(tmp_path, capsys):
    write_run(tmp_path, 1, config_json(parse_options(CITYSCAPES, ["--single_task", "depth"])), dict(DEPTH))
    assert report.main([str(tmp_path), "--comparison"]) == 1
    printed = capsys.readouterr().out
    assert "no finished run of a row of the paper's comparison tables" in printed
    assert "not a row of the paper's tables: default (1 run)" in printed
