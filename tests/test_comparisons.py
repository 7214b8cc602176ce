"""scripts.comparisons: the dry run prints every row of the paper's comparison tables as a command that the
entry scripts' option parser accepts with the settings of the original's MTAN, KD4MTL, PCGrad and
AdaMT-Net scripts, each labelled with the paper's numbers, in the tables' order with the KD4MTL teachers
before KD4MTL; --seeds reaches every command (one KD4MTL command per seed), --only selects rows and refuses
a selection that matches none; a KD4MTL run gets the folders of its seed's teachers, found among the
finished runs. Nothing trains: dry runs, and a faked entry script that writes finished runs."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from data import CITYSCAPES, NYUV2
from data.published import PUBLISHED_RESULTS
from scripts import comparisons, run_list
from tests.test_report import write_run
from training.options import parse_options
from utils.errors import UserInputError

PROFILE_OF_SCRIPT = {"main_cross_cs.py": CITYSCAPES, "main_cross_nyu.py": NYUV2}
INPUT = {"cityscapes": (7, 128, 256), "nyu": (13, 288, 384)}
TWO_TASKS, THREE_TASKS = ("segmentation", "depth"), ("segmentation", "depth", "normal")
ORIGINAL_ADAM = ("adam", 1e-4, 0.9, 0.999)
ADAMTNET_BATCH = {"cityscapes": 8, "nyu": 4}


def printed_commands(output):
    """{run name: (entry script, arguments, label)} of each command line a dry run printed; the label is
    what follows the name in the comment, without its parentheses."""
    commands = {}
    for line in output.splitlines():
        if line.startswith("python "):
            words = shlex.split(line, comments=True)
            name, _, label = line.rsplit("  # ", 1)[1].partition(" (")
            commands[name] = (words[1], words[2:], label[:-1])
    return commands


def parsed(script, arguments):
    """The RunConfig that the entry script `script` makes of `arguments`."""
    return parse_options(PROFILE_OF_SCRIPT[script], arguments)


def method_of(row):
    """The first word of a run name's part after the dataset: "kd4mtl_two_tasks/seed0" -> "kd4mtl"."""
    return row.split("/")[0].split("_")[0]


def check_original_settings(name, config, dataset, method):
    """Assert the settings of the original's script of `method` in `config` (a row or a teacher)."""
    assert (config["num_classes"], config["height"], config["width"]) == INPUT[dataset], name
    assert (config["epochs"], config["optim"], config["lr"], config["b1"], config["b2"]) == (200, *ORIGINAL_ADAM), name
    if method == "adamtnet":
        assert config.model.family == "adamtnet" and config["batch_size"] == ADAMTNET_BATCH[dataset], name
        assert (config["balancing"], config["gradnorm_form"]) == ("adalsp", "original"), name
        assert config.data.no_augment == (dataset == "cityscapes"), name
    else:
        assert config.model.family == "mtan" and config["batch_size"] == 2 and config.data.no_augment, name
    if method in ("mtan", "kd4mtl", "teacher"):
        assert (config["scheduler_step_size"], config["scheduler_gamma"]) == (100, 0.5), name
    else:
        assert config["scheduler_step_size"] == config["epochs"], name  # no scheduler: no decay within the run


def test_the_dry_run_of_both_datasets_exits_0_and_each_command_parses_to_its_rows_settings(capsys):
    assert comparisons.main(["--dry_run"]) == 0
    output = capsys.readouterr().out
    commands = printed_commands(output)
    assert list(commands) == [run.name for run in comparisons.comparison_runs("all", (0, 1, 2))]
    for name, (script, arguments, label) in commands.items():
        dataset, row = name.split("/", 1)
        config = parsed(script, arguments)
        method = method_of(row)
        assert PROFILE_OF_SCRIPT[script].name == dataset
        tasks = THREE_TASKS if "three_tasks" in row else TWO_TASKS
        if method == "kd4mtl":
            seed = int(row.rsplit("/seed", 1)[1])
            assert config.optimization.seed == seed and config.optimization.seeds is None, name
            assert config.model.mtan.distill_from == tuple(f"<folder of {dataset}/teacher_{task}, seed {seed}>"
                                                           for task in tasks), name
            assert config["adaptor_lr"] == 0.1 and config["balancing"] == "none", name
        else:
            assert config.optimization.seeds == (0, 1, 2), name
        assert config.run.save_path == ("./exps/comparisons/teachers" if method == "teacher" else
                                        "./exps/comparisons"), name
        if row == "cross_task":
            assert config.model.family == "xtask" and config["balancing"] == "uncertainty"
            assert not config.data.no_augment, name
            assert set(config.explicit) == {"balancing", "seeds", "save_path"}, name
        elif row.startswith("single_"):
            assert config.model.single_task == row.removeprefix("single_") and config["balancing"] == "none"
            assert config.model.family == ("mtan" if row == "single_normal" else "xtask"), name
            assert label == "single-task baseline of Δm"
        elif method == "teacher":
            assert config.model.single_task == row.removeprefix("teacher_"), name
            assert label == "single-task MTAN teacher of KD4MTL"
            check_original_settings(name, config, dataset, method)
        else:
            check_original_settings(name, config, dataset, method)
            assert config.model.arguments(config["num_classes"])["tasks"] == tasks, name
        if method == "mtan":
            assert config["balancing"] == "none", name
        if method == "pcgrad":
            assert (config["balancing"], config["gradnorm_form"], config["pcgrad_weighting"]) == (
                "pcgrad", "original", "uncertainty"), name
    assert output.splitlines()[-1] == ("<folder of TEACHER, seed S>: when a KD4MTL command starts, the latest finished "
                                       "run of that teacher and seed in ./exps/comparisons/teachers")


def test_the_rows_follow_the_papers_tables_with_the_teachers_before_kd4mtl():
    for dataset in ("cityscapes", "nyu"):
        runs = comparisons.comparison_runs(dataset, (0, 1))
        labels = list(dict.fromkeys(run.label for run in runs if run.label is not None))
        assert labels == list(PUBLISHED_RESULTS[dataset])
        names = [run.name for run in runs]
        assert max(names.index(name) for name in names if "teacher" in name) < min(
            names.index(name) for name in names if "kd4mtl" in name)
        assert names[-len(comparisons.TRAINED_TASKS[dataset]):] == [
            f"{dataset}/single_{task}" for task in comparisons.TRAINED_TASKS[dataset]]


def test_every_row_is_labelled_with_the_papers_numbers(capsys):
    comparisons.main(["--dry_run", "--dataset", "cityscapes"])
    labels = {name: label for name, (_, _, label) in printed_commands(capsys.readouterr().out).items()}
    assert labels["cityscapes/mtan"] == "MTAN; paper: mIoU 53.04, Pix Acc 91.11, Abs 0.0144, Abs Rel 33.63"
    assert labels["cityscapes/kd4mtl/seed2"] == "KD4MTL; paper: mIoU 52.71, Pix Acc 91.54, Abs 0.0139, Abs Rel 27.33"
    assert labels["cityscapes/pcgrad"] == "PCGrad; paper: mIoU 53.59, Pix Acc 91.45, Abs 0.0171, Abs Rel 31.34"
    assert labels["cityscapes/adamtnet"] == "AdaMT-Net; paper: mIoU 62.53, Pix Acc 94.16, Abs 0.0125, Abs Rel 22.23"
    assert labels["cityscapes/cross_task"] == ("cross-task; paper: mIoU 66.51, Pix Acc 93.56, Abs 0.0122, "
                                               "Abs Rel 19.40")


def test_the_nyu_rows_carry_the_papers_marks_and_numbers():
    labels = {run.name: run.comment.partition(" (")[2][:-1] for run in comparisons.comparison_runs("nyu", (0,))}
    assert labels["nyu/mtan_two_tasks"] == "MTAN†; paper: mIoU 20.10, Pix Acc 53.73, Abs 0.6417, Abs Rel 0.2758"
    assert labels["nyu/pcgrad_two_tasks"] == "PCGrad†; paper: mIoU 21.29, Pix Acc 54.07, Abs 0.6705, Abs Rel 0.3000"
    assert labels["nyu/mtan_three_tasks"] == "MTAN*; paper: mIoU 21.07, Pix Acc 55.70, Abs 0.6035, Abs Rel 0.2472"
    assert labels["nyu/pcgrad_three_tasks"] == "PCGrad*; paper: mIoU 20.17, Pix Acc 56.65, Abs 0.5904, Abs Rel 0.2467"
    assert labels["nyu/kd4mtl_three_tasks/seed0"] == ("KD4MTL*; paper: mIoU 20.75, Pix Acc 57.90, Abs 0.5816, "
                                                      "Abs Rel 0.2445")
    assert labels["nyu/kd4mtl_two_tasks/seed0"] == ("KD4MTL†; paper: mIoU 22.44, Pix Acc 57.32, Abs 0.6003, "
                                                    "Abs Rel 0.2601")
    assert labels["nyu/adamtnet_three_tasks"] == ("AdaMT-Net*; paper: mIoU 21.86, Pix Acc 60.35, Abs 0.5933, "
                                                  "Abs Rel 0.2456")
    assert labels["nyu/adamtnet_two_tasks"] == ("AdaMT-Net†; paper: mIoU 20.61, Pix Acc 58.91, Abs 0.6136, "
                                                "Abs Rel 0.2547")
    assert labels["nyu/cross_task"] == "cross-task†; paper: mIoU 30.31, Pix Acc 63.02, Abs 0.5954, Abs Rel 0.2235"


def test_the_cross_task_rows_are_the_papers_commands():
    for run in comparisons.comparison_runs("all", (0,)):
        if run.name.endswith("/cross_task"):
            profile = PROFILE_OF_SCRIPT[comparisons.ENTRY_SCRIPTS[run.dataset]]
            assert shlex.join(["python", profile.entry_script, *run.flags]) == profile.paper_command


def test_seeds_and_extra_arguments_reach_every_command_and_the_period_without_scheduler_follows_the_epochs(capsys):
    assert comparisons.main(["--dry_run", "--dataset", "cityscapes", "--seeds", "4", "5", "--save_path",
                             "exps/table", "--", "--epochs", "3", "--cpu"]) == 0
    commands = printed_commands(capsys.readouterr().out)
    assert len(commands) == 10
    for name, (script, arguments, _) in commands.items():
        save_path = "exps/table/teachers" if "teacher" in name else "exps/table"
        seeds = ["--seed", name[-1]] if "kd4mtl" in name else ["--seeds", "4", "5"]
        assert arguments[-5 - len(seeds):] == [*seeds, "--save_path", save_path, "--epochs", "3", "--cpu"], name
        config = parsed(script, arguments)
        assert config["epochs"] == 3 and config["cpu"], name
    assert [name for name in commands if "kd4mtl" in name] == ["cityscapes/kd4mtl/seed4", "cityscapes/kd4mtl/seed5"]
    assert parsed(*commands["cityscapes/pcgrad"][:2])["scheduler_step_size"] == 3
    assert parsed(*commands["cityscapes/adamtnet"][:2])["scheduler_step_size"] == 3
    assert parsed(*commands["cityscapes/mtan"][:2])["scheduler_step_size"] == 100


def test_only_selects_rows_by_substring_or_regex(capsys):
    assert comparisons.main(["--dry_run", "--only", "single_(segmentation|depth)$"]) == 0
    assert list(printed_commands(capsys.readouterr().out)) == [
        "cityscapes/single_segmentation", "cityscapes/single_depth", "nyu/single_segmentation", "nyu/single_depth"]
    assert comparisons.main(["--dry_run", "--dataset", "nyu", "--only", "two_tasks", "--seeds", "0"]) == 0
    output = capsys.readouterr().out
    commands = printed_commands(output)
    assert list(commands) == ["nyu/mtan_two_tasks", "nyu/kd4mtl_two_tasks/seed0", "nyu/pcgrad_two_tasks",
                              "nyu/adamtnet_two_tasks"]
    assert {script for script, _, _ in commands.values()} == {"main_cross_nyu.py"}
    assert comparisons.main(["--dry_run", "--only", "pcgrad"]) == 0
    assert "<folder of TEACHER" not in capsys.readouterr().out


@pytest.mark.parametrize("pattern, message", [
    ("no_such_row", "--only 'no_such_row': no run name matches it"),
    ("mtan_(two", "--only 'mtan_(two': it is not a valid regular expression (missing )")])
def test_a_selection_of_no_row_is_an_error_that_says_why(pattern, message, capsys):
    assert comparisons.main(["--dry_run", "--only", pattern]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "python " not in captured.out


def finished_run(save_path, script, arguments, seed, status="finished"):
    """Write a run of `arguments` with `seed` into the next numbered folder of `save_path`, as the entry
    script `script` would (config.json, results.json, status); returns its folder."""
    config = parsed(script, arguments).replace(seed=seed)
    save_path = Path(save_path)
    save_path.mkdir(parents=True, exist_ok=True)
    number = max((int(folder.name) for folder in save_path.iterdir() if folder.name.isdigit()), default=0) + 1
    return write_run(save_path, number, {"config": config.to_json()}, {"abs": 0.1}, status)


def fake_entry_script(calls):
    """A run_list.run_in_foreground that records each command in `calls` and, for an entry script, writes its finished
    runs (one per seed) as the entry script would, without training."""
    def run(command, cwd):
        calls.append(command)
        if command[1] in PROFILE_OF_SCRIPT:
            config = parsed(command[1], command[2:])
            for seed in config.optimization.seeds or (config.optimization.seed,):
                finished_run(cwd / config.run.save_path, command[1], command[2:], seed)
        return subprocess.CompletedProcess(command, 0)
    return run


def test_kd4mtl_runs_get_the_folders_of_their_seeds_teachers_and_the_runs_end_with_the_comparison(monkeypatch,
                                                                                                   tmp_path):
    calls = []
    monkeypatch.setattr(run_list, "run_in_foreground", fake_entry_script(calls))
    save_path = tmp_path / "table"
    assert comparisons.main(["--dataset", "nyu", "--only", "teacher|kd4mtl_three", "--seeds", "1", "2",
                             "--save_path", str(save_path)]) == 0
    assert [command[1] for command in calls] == ["main_cross_nyu.py"] * 5 + ["-m"]
    assert calls[-1] == [sys.executable, "-m", "tools.report", str(save_path), "--comparison"]
    for command in calls[3:5]:
        config = parsed(command[1], command[2:])
        teachers = [json.loads((Path(folder) / "config.json").read_text())["config"]
                    for folder in config.model.mtan.distill_from]
        assert [(teacher["model"]["single_task"], teacher["optimization"]["seed"]) for teacher in teachers] == [
            (task, config.optimization.seed) for task in THREE_TASKS]
        assert all(os.path.dirname(folder) == str(save_path / "teachers") for folder in config.model.mtan.distill_from)


def test_a_teacher_is_the_latest_finished_run_of_its_command_and_seed(tmp_path):
    teacher = next(run for run in comparisons.comparison_runs("cityscapes", (0,)) if run.name.endswith("teacher_depth"))
    save_path = str(tmp_path / "table")
    teachers = os.path.join(save_path, "teachers")

    def teacher_run(seed, *extra, status="finished"):
        arguments = [*comparisons.entry_arguments(teacher, (seed,), save_path, ()), *extra]
        return finished_run(teachers, "main_cross_cs.py", arguments, seed, status)

    teacher_run(0)
    teacher_run(0, "--epochs", "3")
    teacher_run(1)
    latest = teacher_run(0, "--cpu", "--workers", "0")  # how a run ran does not matter
    teacher_run(0, status="failed: x")
    (teacher_run(0) / "config.json").write_text("{not json")  # unreadable: left out
    assert comparisons.teacher_folder(teacher, 0, save_path, ()) == str(latest)
    assert comparisons.teacher_folder(teacher, 0, save_path, ("--epochs", "3")) == os.path.join(teachers, "002")
    assert [os.path.basename(record.folder) for record in run_list.finished_runs(teachers)] == ["001", "002", "003",
                                                                                                 "004"]
    with pytest.raises(UserInputError, match=r"--distill_from: no finished run of cityscapes/teacher_depth with seed 2 "
                       r"in .*teachers; expected one of its command's settings \(run it first: --only "
                       r"cityscapes/teacher_depth\)"):
        comparisons.teacher_folder(teacher, 2, save_path, ())


def test_a_kd4mtl_run_without_its_teachers_stops_the_script_with_2(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(run_list, "run_in_foreground", fake_entry_script(calls))
    assert comparisons.main(["--dataset", "cityscapes", "--only", "kd4mtl", "--seeds", "0",
                             "--save_path", str(tmp_path)]) == 2
    assert calls == []
    assert "error: cityscapes/kd4mtl/seed0: --distill_from: no finished run of cityscapes/teacher_segmentation" in \
        capsys.readouterr().err
