"""tools.report on fabricated experiment folders (no training): two multi-task configurations and the two
single-task baselines over three seeds, plus a corrupt, an unfinished and an incomplete folder; and
folders of the older config.json format (flat "options")."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas
import pytest
import torch

from data import CITYSCAPES, NYUV2
from tools import report
from tools.report import gather, statistics
from training.options import parse_options
from training.recorder import run_config
from utils.delta_m import DEFINITION, delta_m

REPO_ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
STD_NOTE_START = "± sample std"
SEGMENTATION_KEYS = ("miou", "pixel_acc", "miou_paper", "pixel_acc_paper")
DEPTH_KEYS = ("abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "delta1", "delta2", "delta3", "abs_paper",
              "abs_rel_paper")
TYPICAL_METRICS = {"miou": 0.62, "pixel_acc": 0.91, "miou_paper": 0.60, "pixel_acc_paper": 0.90, "abs": 0.014,
                   "abs_rel": 0.31, "rmse": 0.028, "rmse_log": 0.42, "sq_rel": 0.021, "delta1": 0.62, "delta2": 0.83,
                   "delta3": 0.92, "abs_paper": 0.015, "abs_rel_paper": 0.33}
# (folder numbers, option overrides, group) of the fabricated runs, one folder per seed.
CONFIGURATIONS = {
    "uncertainty": ((1, 2, 3), {"balancing": "uncertainty"}, "group-uncertainty"),
    "gradnorm": ((4, 5, 6), {"balancing": "gradnorm", "gradnorm_form": "original"}, "group-gradnorm"),
    "segmentation": ((8, 10, 11), {"single_task": "segmentation"}, "group-segmentation"),
    "depth": ((12, 13, 14), {"single_task": "depth"}, "group-depth"),
}
EXPECTED_NAMES = {"uncertainty": "balancing=uncertainty", "gradnorm": "balancing=gradnorm gradnorm_form=original",
                  "segmentation": "single_task=segmentation", "depth": "single_task=depth"}


def config_json(config):
    """config.json's content as the recorder writes it for `config` (a RunConfig)."""
    return run_config(config, torch.device("cpu"))


def old_config_json(options):
    """config.json's content in the format before RunConfig: the flags flat under "options"."""
    return {"options": options, "device": "cpu", "versions": {}, "git_commit": None}


def default_config(**settings):
    """config.json's content of a default Cityscapes run with `settings` ({key: value}) changed."""
    return config_json(parse_options(CITYSCAPES, []).replace(**settings))


def fabricated_metrics(configuration, seed):
    """Plausible metrics of one run, distinct per configuration and seed; a single-task run has only its
    task's keys."""
    rng = np.random.default_rng([sorted(CONFIGURATIONS).index(configuration), seed])
    factor = {"uncertainty": 1.04, "gradnorm": 0.97}.get(configuration, 1.0)
    metrics = {key: value * factor * rng.uniform(0.97, 1.03) for key, value in TYPICAL_METRICS.items()}
    metrics["iou"] = [0.5, 0.6]
    if configuration == "segmentation":
        return {key: value for key, value in metrics.items() if key in SEGMENTATION_KEYS + ("iou",)}
    if configuration == "depth":
        return {key: value for key, value in metrics.items() if key in DEPTH_KEYS}
    return metrics


def write_run(root, number, config, metrics, status="finished"):
    """An experiment folder as training writes it: config.json (`config`, its content), results.json and
    (unless None) status."""
    folder = root / f"{number:03d}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "results.json").write_text(json.dumps({"metrics": metrics, "epoch": 2}))
    if status is not None:
        (folder / "status").write_text(status + "\n")
    return folder


@pytest.fixture
def experiments(tmp_path):
    """(exps folder, {configuration: [metrics per seed]}) of the fabricated runs and the unusable folders."""
    root = tmp_path / "exps"
    root.mkdir()
    metrics_by_configuration = {}
    for configuration, (numbers, overrides, group) in CONFIGURATIONS.items():
        metrics_by_configuration[configuration] = []
        for number, seed in zip(numbers, SEEDS):
            config = default_config(**overrides, seed=seed, group=group, save_path=str(root),
                                    explicit=sorted(overrides))
            metrics = fabricated_metrics(configuration, seed)
            write_run(root, number, config, metrics, status="finished" if number != 8 else None)
            metrics_by_configuration[configuration].append(metrics)
    (write_run(root, 7, default_config(), {}) / "config.json").write_text("{not json")
    write_run(root, 9, default_config(), fabricated_metrics("uncertainty", 0), status="failed: x")
    (write_run(root, 15, default_config(), {}, status=None) / "results.json").unlink()
    (root / "results.csv").write_text("experiment\n")
    return root, metrics_by_configuration


def rows_by_name(root, groups=None):
    """The report's rows of `root` keyed by name."""
    runs, _ = gather.load_runs(root)
    return {row.name: row for row in statistics.build_rows(gather.select_groups(runs, groups), runs)}


def expected_delta_m(metrics_by_configuration, configuration, protocol):
    """Δm per seed of a configuration against the same seed's baselines, computed here with utils.delta_m."""
    return [delta_m(multi_task, {"segmentation": segmentation, "depth": depth}, protocol)
            for multi_task, segmentation, depth in zip(metrics_by_configuration[configuration],
                                                       metrics_by_configuration["segmentation"],
                                                       metrics_by_configuration["depth"])]


def test_rows_names_counts_means_and_sample_stds(experiments):
    root, metrics_by_configuration = experiments
    rows = rows_by_name(root)
    assert list(rows) == [EXPECTED_NAMES[name] for name in CONFIGURATIONS] + [
        "paper, reported (cityscapes, 7 classes, 128x256)"]
    for configuration, name in EXPECTED_NAMES.items():
        row = rows[name]
        assert len(row.experiments) == 3 and row.seeds == SEEDS
        for key in SEGMENTATION_KEYS + DEPTH_KEYS:
            values = [metrics[key] for metrics in metrics_by_configuration[configuration] if key in metrics]
            mean, std = row.values[key]
            if len(values) == 3:
                assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
            else:
                assert math.isnan(mean) and math.isnan(std)
    assert rows[EXPECTED_NAMES["segmentation"]].kind == "single-task"
    assert math.isnan(rows[EXPECTED_NAMES["segmentation"]].values["delta_m"][0])


def test_delta_m_is_paired_by_seed_then_averaged(experiments):
    root, metrics_by_configuration = experiments
    rows = rows_by_name(root)
    for configuration in ("uncertainty", "gradnorm"):
        row = rows[EXPECTED_NAMES[configuration]]
        for column, protocol in (("delta_m", "standard"), ("delta_m_paper", "paper")):
            values = expected_delta_m(metrics_by_configuration, configuration, protocol)
            assert row.values[column] == pytest.approx((np.mean(values), np.std(values, ddof=1)))
        assert row.pairing == "3/3 paired by seed"


def test_delta_m_without_a_matching_seed_uses_the_seed_averaged_baselines(experiments):
    root, metrics_by_configuration = experiments
    lone_metrics = fabricated_metrics("uncertainty", 99)
    write_run(root, 16, default_config(lp="MSE", seed=99), lone_metrics)
    row = rows_by_name(root)["lp=MSE"]
    baselines = {task: {key: np.mean([metrics[key] for metrics in metrics_by_configuration[task]])
                        for key in metrics_by_configuration[task][0] if key != "iou"}
                 for task in ("segmentation", "depth")}
    assert row.values["delta_m"][0] == pytest.approx(delta_m(lone_metrics, baselines, "standard"))
    assert math.isnan(row.values["delta_m"][1]) and math.isnan(row.values["miou"][1])
    assert row.pairing == "0/1 paired by seed"


def test_no_baseline_of_the_same_size_leaves_delta_m_blank(experiments):
    root, _ = experiments
    write_run(root, 16, default_config(height=256, width=512), fabricated_metrics("uncertainty", 0))
    row = rows_by_name(root)["height=256 width=512"]
    assert math.isnan(row.values["delta_m"][0]) and row.pairing == ""


def test_dataset_and_demo_are_named_and_settings_at_their_defaults_are_not(tmp_path):
    # Runs of the older format: flat options, no single_task (guessed from the metrics) and, in the first,
    # no dataset (guessed from the input path).
    runs = [(parse_options(CITYSCAPES, []), "dataset=cityscapes"),
            (parse_options(CITYSCAPES, ["--demo"]), "dataset=cityscapes demo=True"),
            (parse_options(NYUV2, ["--epochs", "3"]), "dataset=nyu epochs=3")]
    for number, (config, _) in enumerate(runs, start=1):
        options = config.flat()
        options.pop("single_task")
        if number == 1:
            options.pop("dataset")
        write_run(tmp_path, number, old_config_json(options), fabricated_metrics("uncertainty", 0))
    rows = rows_by_name(tmp_path)
    assert [name for name, row in rows.items() if row.kind != "paper"] == [name for _, name in runs]
    assert list(rows)[2] == "paper, reported (cityscapes, 7 classes, 128x256)"
    loaded, _ = gather.load_runs(tmp_path)
    assert [run.config.model.single_task for run in loaded] == [None, None, None]
    assert gather.shared_settings(loaded) == ""
    assert gather.shared_settings(loaded[:1]) == "dataset=cityscapes"


def test_runs_differing_only_in_how_they_ran_share_a_row(experiments):
    root, _ = experiments
    write_run(root, 16, default_config(balancing="uncertainty", seed=3, amp=False, channels_last=True,
                                       cache_dir="/elsewhere", no_cache=True, compile=True, workers=0),
              fabricated_metrics("uncertainty", 3))
    row = rows_by_name(root)[EXPECTED_NAMES["uncertainty"]]
    assert row.experiments == ("001", "002", "003", "016") and row.seeds == (*SEEDS, 3)


def test_a_nan_or_null_metric_is_named_in_a_note(experiments, capsys):
    root, _ = experiments
    for number, value in ((16, None), (17, math.nan)):
        write_run(root, number, default_config(lp="MSE", seed=number), {**fabricated_metrics("uncertainty", 0),
                                                                       "abs": value})
    assert math.isnan(rows_by_name(root)["lp=MSE"].values["abs"][0])
    assert report.main([str(root), "--out", str(root / "report")]) == 0
    printed = capsys.readouterr().out
    assert "note: 016: abs is null" in printed and "note: 017: abs is NaN" in printed
    assert "- note: 017: abs is NaN" in (root / "report" / "report.md").read_text()


def test_unusable_folders_are_skipped_with_their_reason(experiments):
    root, _ = experiments
    runs, skipped = gather.load_runs(root)
    assert sorted(run.name for run in runs) == ["001", "002", "003", "004", "005", "006", "008", "010", "011",
                                                "012", "013", "014"]
    reasons = {item.name: item.reason for item in skipped}
    assert list(reasons) == ["007", "009", "015"]
    assert reasons["007"].startswith("config.json cannot be read")
    assert reasons["009"] == "status: failed: x"
    assert reasons["015"] == "no results.json"


def test_group_filter_keeps_the_baselines_for_delta_m(experiments):
    root, metrics_by_configuration = experiments
    rows = rows_by_name(root, ["group-gradnorm"])
    assert list(rows) == ["default", "paper, reported (cityscapes, 7 classes, 128x256)"]
    values = expected_delta_m(metrics_by_configuration, "gradnorm", "standard")
    assert rows["default"].values["delta_m"][0] == pytest.approx(np.mean(values))
    assert rows["default"].experiments == ("004", "005", "006")


def test_main_prints_the_table_and_writes_csv_markdown_and_png(experiments, tmp_path, capsys):
    root, metrics_by_configuration = experiments
    out = tmp_path / "report"
    assert report.main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert DEFINITION in printed
    assert "skipped: 007 (config.json cannot be read" in printed and "skipped: 009 (status: failed: x)" in printed
    uncertainty_miou = [metrics["miou"] * 100 for metrics in metrics_by_configuration["uncertainty"]]
    assert f"{np.mean(uncertainty_miou):.2f} ± {np.std(uncertainty_miou, ddof=1):.2f}" in printed
    table = pandas.read_csv(out / "report.csv")
    assert list(table["name"])[:4] == list(EXPECTED_NAMES.values())
    assert list(table["n"])[:4] == [3, 3, 3, 3]
    assert table["miou_paper_mean"].iloc[-1] == pytest.approx(0.6651)
    assert table["delta_m_mean"].iloc[1] == pytest.approx(
        np.mean(expected_delta_m(metrics_by_configuration, "gradnorm", "standard")))
    markdown = (out / "report.md").read_text()
    assert "| balancing=gradnorm gradnorm_form=original | 3 |" in markdown and "- skipped: 015" in markdown
    assert (out / "report.png").read_bytes()[:8] == PNG_SIGNATURE


def test_missing_folder_and_empty_folder_exit_codes(tmp_path, capsys):
    assert report.main([str(tmp_path / "absent")]) == 2
    assert report.main([str(tmp_path)]) == 1
    assert "no finished run to report" in capsys.readouterr().out


def test_command_line_run(experiments, tmp_path):
    root, _ = experiments
    out = tmp_path / "cli"
    completed = subprocess.run([sys.executable, "-m", "tools.report", str(root), "--out", str(out)],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "balancing=gradnorm gradnorm_form=original" in completed.stdout
    assert "paper protocol:" in completed.stdout and "skipped: 015 (no results.json)" in completed.stdout
    assert sorted(path.name for path in out.iterdir()) == ["report.csv", "report.md", "report.png"]


def test_ctrl_c_while_the_report_is_written_exits_130_without_a_traceback(entry_launcher, experiments, tmp_path):
    root, _ = experiments
    out = tmp_path / "interrupted"
    ctrl_c_before_the_files = """
        import os, signal
        import tools.report as report
        real_write_outputs = report.write_outputs
        def interrupted_write(*arguments, **keywords):
            os.kill(os.getpid(), signal.SIGINT)
            return real_write_outputs(*arguments, **keywords)
        report.write_outputs = interrupted_write
    """
    stopped = entry_launcher.run(None, [root, "--out", out], tmp_path, fault=ctrl_c_before_the_files,
                                 module="tools.report")
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert stopped.stderr == ("stopped by SIGINT: each report file is written whole or not at all; run the command "
                              "again\n")
    assert not out.exists() or sorted(os.listdir(out)) == []


def test_three_task_runs_get_delta_m_over_three_tasks_and_two_task_tables_show_no_normal_columns(tmp_path, capsys):
    root = tmp_path / "exps"
    root.mkdir()
    nyu = parse_options(NYUV2, ["--model", "mtan"])
    normal_metrics = {"normal_mean": 30.0, "normal_median": 25.0, "normal_11_25": 0.2, "normal_22_5": 0.4,
                      "normal_30": 0.5}
    three_tasks = {**{key: value for key, value in TYPICAL_METRICS.items()}, **normal_metrics, "normal_mean": 27.0,
                   "normal_11_25": 0.25}
    write_run(root, 1, config_json(nyu.replace(tasks=("segmentation", "depth", "normal"))), three_tasks)
    write_run(root, 2, config_json(nyu.replace(single_task="segmentation")),
              {key: 0.5 * TYPICAL_METRICS[key] for key in SEGMENTATION_KEYS})
    write_run(root, 3, config_json(nyu.replace(single_task="depth")),
              {key: 2.0 * TYPICAL_METRICS[key] for key in DEPTH_KEYS})
    write_run(root, 4, config_json(nyu.replace(single_task="normal", tasks=("segmentation", "depth", "normal"))),
              normal_metrics)
    rows = {row.name: row for row in statistics.build_rows(*[gather.load_runs(root)[0]] * 2)}
    three_task_row = rows["tasks=segmentation+depth+normal"]
    # segmentation: both metrics doubled (+100 %); depth: both halved (lower is better: +50 %);
    # normals: mean 27 vs 30 (+10 %), median equal (0), 0.25 vs 0.2 (+25 %), the others equal: +7 %.
    expected = ((100 + 100) / 2 + (50 + 50) / 2 + (10 + 0 + 25 + 0 + 0) / 5) / 3
    assert three_task_row.values["delta_m"][0] == pytest.approx(expected)
    assert report.main([str(root), "--out", str(tmp_path / "report")]) == 0
    assert "Mean err" in capsys.readouterr().out.split(STD_NOTE_START, 1)[1]

    two_task_root = tmp_path / "two"
    two_task_root.mkdir()
    write_run(two_task_root, 1, default_config(), dict(TYPICAL_METRICS))
    assert report.main([str(two_task_root), "--out", str(tmp_path / "report2")]) == 0
    table = capsys.readouterr().out.split(STD_NOTE_START, 1)[1]  # after the Δm definition, which names every metric
    assert "mIoU" in table and "Mean err" not in table and "<11.25" not in table
