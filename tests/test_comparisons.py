"""scripts.comparisons: the dry run prints every row of the paper's comparison table as a command that the
entry scripts' option parser accepts with the settings of the original's MTAN and PCGrad scripts, each
labelled with the paper's numbers; --seeds reaches every command, --only selects rows and refuses a
selection that matches none. Nothing trains: dry runs, and a faked subprocess for the final report."""
import shlex
import subprocess
import sys

import pytest

from data import CITYSCAPES, NYUV2
from scripts import comparisons, run_list
from training.options import parse_options

PROFILE_OF_SCRIPT = {"main_cross_cs.py": CITYSCAPES, "main_cross_nyu.py": NYUV2}
INPUT = {"cityscapes": (7, 128, 256), "nyu": (13, 288, 384)}
TWO_TASKS, THREE_TASKS = ("segmentation", "depth"), ("segmentation", "depth", "normal")


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


def test_the_dry_run_of_both_datasets_exits_0_and_each_command_parses_to_its_rows_settings(capsys):
    assert comparisons.main(["--dry_run"]) == 0
    commands = printed_commands(capsys.readouterr().out)
    assert list(commands) == [run.name for run in comparisons.comparison_runs("all")]
    for name, (script, arguments, label) in commands.items():
        dataset, row = name.split("/")
        config = parsed(script, arguments)
        assert PROFILE_OF_SCRIPT[script].name == dataset
        assert config.optimization.seeds == (0, 1, 2) and config.run.save_path == "./exps/comparisons", name
        if row == "cross_task":
            assert config.model.family == "xtask" and config["balancing"] == "uncertainty"
            assert not config.data.no_augment, name
            assert set(config.explicit) == {"balancing", "seeds", "save_path"}, name
        elif row.startswith("single_"):
            assert config.model.single_task == row.removeprefix("single_") and config["balancing"] == "none"
            assert config.model.family == ("mtan" if row == "single_normal" else "xtask"), name
            assert label == "single-task baseline of Δm"
        else:
            assert config.model.family == "mtan", name
            assert (config["num_classes"], config["height"], config["width"]) == INPUT[dataset], name
            assert (config["epochs"], config["batch_size"], config["optim"], config["lr"], config["b1"],
                    config["b2"]) == (200, 2, "adam", 1e-4, 0.9, 0.999), name
            assert config.data.no_augment, name  # the original's MTAN scripts did not augment by default
            tasks = THREE_TASKS if row.endswith("three_tasks") else TWO_TASKS
            assert config.model.arguments(config["num_classes"])["tasks"] == tasks, name
        if row.startswith("mtan"):
            assert config["balancing"] == "none", name
            assert (config["scheduler_step_size"], config["scheduler_gamma"]) == (100, 0.5), name
        if row.startswith("pcgrad"):
            assert (config["balancing"], config["gradnorm_form"], config["pcgrad_weighting"]) == (
                "pcgrad", "original", "uncertainty"), name
            assert config["scheduler_step_size"] == config["epochs"], name


def test_every_row_is_labelled_with_the_papers_numbers_and_the_rows_without_a_run_are_listed(capsys):
    comparisons.main(["--dry_run", "--dataset", "cityscapes"])
    output = capsys.readouterr().out
    labels = {name: label for name, (_, _, label) in printed_commands(output).items()}
    assert labels["cityscapes/mtan"] == "MTAN; paper: mIoU 53.04, Pix Acc 91.11, Abs 0.0144, Abs Rel 33.63"
    assert labels["cityscapes/pcgrad"] == "PCGrad; paper: mIoU 53.59, Pix Acc 91.45, Abs 0.0171, Abs Rel 31.34"
    assert labels["cityscapes/cross_task"] == ("cross-task; paper: mIoU 66.51, Pix Acc 93.56, Abs 0.0122, "
                                               "Abs Rel 19.40")
    assert [line for line in output.splitlines() if line.startswith("no run yet: ")] == [
        "no run yet: cityscapes KD4MTL (paper: mIoU 52.71, Pix Acc 91.54, Abs 0.0139, Abs Rel 27.33)",
        "no run yet: cityscapes AdaMT-Net (paper: mIoU 62.53, Pix Acc 94.16, Abs 0.0125, Abs Rel 22.23)"]


def test_the_nyu_rows_carry_the_papers_marks_and_numbers():
    labels = {run.name: run.comment.partition(" (")[2][:-1] for run in comparisons.comparison_runs("nyu")}
    assert labels["nyu/mtan_two_tasks"] == "MTAN†; paper: mIoU 20.10, Pix Acc 53.73, Abs 0.6417, Abs Rel 0.2758"
    assert labels["nyu/pcgrad_two_tasks"] == "PCGrad†; paper: mIoU 21.29, Pix Acc 54.07, Abs 0.6705, Abs Rel 0.3000"
    assert labels["nyu/mtan_three_tasks"] == "MTAN*; paper: mIoU 21.07, Pix Acc 55.70, Abs 0.6035, Abs Rel 0.2472"
    assert labels["nyu/pcgrad_three_tasks"] == "PCGrad*; paper: mIoU 20.17, Pix Acc 56.65, Abs 0.5904, Abs Rel 0.2467"
    assert labels["nyu/cross_task"] == "cross-task; paper: mIoU 30.31, Pix Acc 63.02, Abs 0.5954, Abs Rel 0.2235"
    assert comparisons.rows_without_run("nyu") == [("nyu", "KD4MTL*"), ("nyu", "KD4MTL†"), ("nyu", "AdaMT-Net*"),
                                                    ("nyu", "AdaMT-Net†")]


def test_the_cross_task_rows_are_the_papers_commands():
    for run in comparisons.comparison_runs("all"):
        if run.label == comparisons.CROSS_TASK:
            profile = PROFILE_OF_SCRIPT[comparisons.ENTRY_SCRIPTS[run.dataset]]
            assert shlex.join(["python", profile.entry_script, *run.flags]) == profile.paper_command


def test_seeds_and_extra_arguments_reach_every_command_and_the_pcgrad_period_follows_the_epochs(capsys):
    assert comparisons.main(["--dry_run", "--dataset", "cityscapes", "--seeds", "4", "5", "--save_path",
                             "exps/table", "--", "--epochs", "3", "--cpu"]) == 0
    commands = printed_commands(capsys.readouterr().out)
    assert len(commands) == 5
    for name, (script, arguments, _) in commands.items():
        assert arguments[-8:] == ["--seeds", "4", "5", "--save_path", "exps/table", "--epochs", "3", "--cpu"]
        config = parsed(script, arguments)
        assert config.optimization.seeds == (4, 5) and config["epochs"] == 3 and config["cpu"], name
    assert parsed(*commands["cityscapes/pcgrad"][:2])["scheduler_step_size"] == 3
    assert parsed(*commands["cityscapes/mtan"][:2])["scheduler_step_size"] == 100


def test_only_selects_rows_by_substring_or_regex(capsys):
    assert comparisons.main(["--dry_run", "--only", "single_(segmentation|depth)$"]) == 0
    assert list(printed_commands(capsys.readouterr().out)) == [
        "cityscapes/single_segmentation", "cityscapes/single_depth", "nyu/single_segmentation", "nyu/single_depth"]
    assert comparisons.main(["--dry_run", "--dataset", "nyu", "--only", "two_tasks"]) == 0
    commands = printed_commands(capsys.readouterr().out)
    assert list(commands) == ["nyu/mtan_two_tasks", "nyu/pcgrad_two_tasks"]
    assert {script for script, _, _ in commands.values()} == {"main_cross_nyu.py"}


@pytest.mark.parametrize("pattern, message", [
    ("no_such_row", "--only 'no_such_row': no run name matches it"),
    ("mtan_(two", "--only 'mtan_(two': it is not a valid regular expression (missing )")])
def test_a_selection_of_no_row_is_an_error_that_says_why(pattern, message, capsys):
    assert comparisons.main(["--dry_run", "--only", pattern]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "python " not in captured.out


def test_the_runs_end_with_the_report_of_the_save_path(monkeypatch):
    calls = []

    def run(command, cwd):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(run_list.subprocess, "run", run)
    assert comparisons.main(["--dataset", "cityscapes", "--only", "single", "--save_path", "exps/table"]) == 0
    assert [command[1] for command in calls] == ["main_cross_cs.py", "main_cross_cs.py", "-m"]
    assert calls[-1] == [sys.executable, "-m", "tools.report", "exps/table"]
