"""scripts.ablations: the run list covers every claim, the dry run prints commands that the entry scripts'
option parser accepts, --only selects runs, and a real run stops at the first failure (subprocess faked)."""
import shlex
import subprocess
import sys

import pytest

from data import CITYSCAPES, NYUV2
from scripts import ablations, run_list
from training.options import parse_options

PROFILE_OF_SCRIPT = {"main_cross_cs.py": CITYSCAPES, "main_cross_nyu.py": NYUV2}


def printed_commands(output):
    """(run name, entry script, arguments) of each command line a dry run printed."""
    commands = []
    for line in output.splitlines():
        if line.startswith("python "):
            words = shlex.split(line, comments=True)
            commands.append((line.rsplit("# ", 1)[1].split(" (")[0], words[1], words[2:]))
    return commands


def test_dry_run_for_all_datasets_exits_0_and_every_printed_command_parses(capsys):
    assert ablations.main(["--dry_run", "--dataset", "all", "--", "--epochs", "1", "--cpu"]) == 0
    commands = printed_commands(capsys.readouterr().out)
    assert [name for name, _, _ in commands] == [run.name for run in ablations.ablation_runs("all")]
    for name, script, arguments in commands:
        assert arguments[-3:] == ["--epochs", "1", "--cpu"]
        assert arguments[arguments.index("--seeds") + 1:][:3] == ["0", "1", "2"]
        options = parse_options(PROFILE_OF_SCRIPT[script], arguments)
        assert options["epochs"] == 1 and options["cpu"], name


def test_only_selects_runs_by_substring_or_regex(capsys):
    ablations.main(["--dry_run", "--only", "single_depth"])
    assert [name for name, _, _ in printed_commands(capsys.readouterr().out)] == [
        "cityscapes/single_depth", "cityscapes/single_depth_19", "nyu/single_depth"]
    ablations.main(["--dry_run", "--dataset", "nyu", "--only", "(base|no_transfer)$", "--seeds", "4"])
    commands = printed_commands(capsys.readouterr().out)
    assert [name for name, _, _ in commands] == ["nyu/base", "nyu/no_transfer"]
    assert all(script == "main_cross_nyu.py" and "--seeds 4 --save_path" in shlex.join(arguments)
               for _, script, arguments in commands)
    assert ablations.main(["--dry_run", "--only", "no_such_run"]) == 2
    assert "--only 'no_such_run': no run name matches it" in capsys.readouterr().err
    assert ablations.main(["--dry_run", "--only", "single_(depth"]) == 2
    assert "--only 'single_(depth': it is not a valid regular expression (missing )" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["cityscapes", "nyu"])
def test_run_list_covers_each_claim(dataset):
    runs = ablations.ablation_runs(dataset)
    assert len({run.name for run in runs}) == len(runs)
    assert all(run.name.startswith(f"{dataset}/") for run in runs)
    multi_task = [(run.name.split("/")[1], parse_options(run_list.DATASET_PROFILES[dataset], list(run.flags)))
                  for run in runs if run.category != "single_task" and run.origin == ablations.ADDED]
    settings = {name: options for name, options in multi_task}
    assert settings["base"]["balancing"] == "uncertainty"
    assert settings["no_transfer"]["alpha"] == 0 and settings["no_transfer"]["gamma"] == 0
    assert {(options["balancing"], options["gradnorm_form"] if options["balancing"] == "gradnorm" else None)
            for _, options in multi_task} == {("none", None), ("uncertainty", None), ("gradnorm", "paper"),
                                              ("gradnorm", "original")}
    assert {options["lp"] for _, options in multi_task} == {"L1", "MSE", "logL1", "smoothL1"}
    assert {options["tdep_loss"] for _, options in multi_task} == {"L1", "ssim"}
    assert {(options["tseg_loss"], options["label_smoothing"]) for _, options in multi_task} == {
        ("cross", 0.0), ("kl", 0.0), ("kl", 0.1)}
    assert settings["batch_norm"]["batch_norm"] and settings["wider_ttnet"]["wider_ttnet"]
    class_counts = {options["num_classes"] for _, options in multi_task}
    assert class_counts == ({7, 19} if dataset == "cityscapes" else {13})
    single_task = {(run.flags[run.flags.index("--single_task") + 1],
                    int(run.flags[run.flags.index("--num_classes") + 1]) if "--num_classes" in run.flags
                    else settings["base"]["num_classes"])
                   for run in runs if run.category == "single_task"}
    assert single_task == {(task, count) for task in ("segmentation", "depth") for count in class_counts}


# The lines of the original repository's ablation.sh (github.com/akarimoon/xtask_mt), without the script
# name and the output flags --run_only --notqdm that each line carries.
ORIGINAL_ABLATION_LINES = (
    "--label_smoothing 0.1 --uncertainty_weights --alpha 0.0",
    "--label_smoothing 0.1 --uncertainty_weights --gamma 0.0",
    "--label_smoothing 0.1 --uncertainty_weights --alpha 0.0 --gamma 0.0",
    "--label_smoothing 0.1 --uncertainty_weights --use_pretrain",
    "--label_smoothing 0.1 --uncertainty_weights --enc_layers 50",
    "--label_smoothing 0.1 --uncertainty_weights --enc_layers 101",
    "--label_smoothing 0.1 --uncertainty_weights",
    "--uncertainty_weights",
    "",
    "--label_smoothing 0.1 --uncertainty_weights --temp 5",
    "--label_smoothing 0.1 --uncertainty_weights --temp 5 --alpha 0.05 --gamma 0.05",
)


def test_the_dry_run_lists_every_line_of_the_original_ablation_script_but_the_temperature_ones(capsys):
    assert ablations.main(["--dry_run", "--dataset", "cityscapes"]) == 0
    output = capsys.readouterr().out
    labelled_original = {line.rsplit("# ", 1)[1].split(" (")[0] for line in output.splitlines()
                         if line.startswith("python ") and line.endswith("(original)")}
    original = {name: arguments[:arguments.index("--seeds")] for name, _, arguments in printed_commands(output)
                if name in labelled_original}
    runnable = [line for line in ORIGINAL_ABLATION_LINES if "--temp" not in line]
    assert sorted(shlex.split(line) for line in runnable) == sorted(original.values())
    assert len(original) == len(runnable) == 9
    assert all(run.origin == ablations.ORIGINAL for run in ablations.ablation_runs("cityscapes")
               if run.name.startswith("cityscapes/original_"))
    assert {run.origin for run in ablations.ablation_runs("nyu")} == {ablations.ADDED}
    not_run = [line for line in output.splitlines() if line.startswith("not run: ")]
    assert len(not_run) == 2 and all("--temp 5" in line and "--temp flag" in line for line in not_run)


def completed(statuses, calls):
    """A stand-in for run_list.run_in_foreground that records each call and returns the next exit status."""
    def run(command, cwd):
        calls.append((command, cwd))
        return subprocess.CompletedProcess(command, statuses.pop(0))
    return run


def test_a_failing_run_stops_the_script_with_its_status(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(run_list, "run_in_foreground", completed([0, 3, 0], calls))
    assert ablations.main(["--dataset", "cityscapes", "--only", "(base|no_transfer|balancing_none)$"]) == 3
    assert [command[:2] for command, _ in calls] == [[sys.executable, "main_cross_cs.py"]] * 2
    assert all(cwd == run_list.REPO_ROOT for _, cwd in calls)
    assert "cityscapes/no_transfer failed with exit status 3; stopping" in capsys.readouterr().err


def test_all_runs_then_the_report_on_the_save_path(monkeypatch):
    calls = []
    monkeypatch.setattr(run_list, "run_in_foreground", completed([0, 0, 0], calls))
    assert ablations.main(["--only", "nyu/single", "--save_path", "exps/ablations"]) == 0
    assert [command[1] for command, _ in calls] == ["main_cross_nyu.py", "main_cross_nyu.py", "-m"]
    assert calls[0][0][-2:] == ["--save_path", "exps/ablations"]
    assert calls[-1][0] == [sys.executable, "-m", "tools.report", "exps/ablations"]
