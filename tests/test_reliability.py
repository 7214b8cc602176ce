"""Reliability: resume, interruptions, non-finite training, the demo never touching user data, and
clear errors (exit 2) instead of tracebacks. Tiny generated data, CPU, ResNet-18."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas
import pytest
import torch

from data import CITYSCAPES
from data.synthetic import write_cityscapes_raw
from training import engine, recorder
from training.run import main
from utils.errors import UserInputError

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--enc_layers", "18", "--batch_size", "2", "--workers", "0", "--notqdm", "--no_plots", "--height", "64",
        "--width", "128"]


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return str(write_cityscapes_raw(tmp_path_factory.mktemp("cityscapes"), {"train": 4, "val": 2}, 128, 256, seed=2))


def arguments(root, save_path, *extra):
    return ["--input_path", root, "--save_path", str(save_path), *TINY, *extra]


def run_script(arguments_list, cwd, **keywords):
    """Run main_cross_cs.py in a subprocess from `cwd`; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(REPOSITORY, "main_cross_cs.py"), *arguments_list], cwd=cwd,
                          capture_output=True, text=True, timeout=600, **keywords)


def model_state(folder, name="last.pt"):
    return torch.load(os.path.join(folder, "checkpoints", name), map_location="cpu", weights_only=True)


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(cityscapes_root, tmp_path):
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert main(CITYSCAPES, arguments(cityscapes_root, straight, "--epochs", "3", "--uncertainty_weights")) == 0
    assert main(CITYSCAPES, arguments(cityscapes_root, pieces, "--epochs", "1", "--uncertainty_weights")) == 0
    assert main(CITYSCAPES, ["--save_path", str(pieces), "--resume", "1", "--epochs", "2", "--notqdm"]) == 0
    assert main(CITYSCAPES, ["--resume", str(pieces / "001"), "--epochs", "3", "--notqdm"]) == 0
    expected, resumed = model_state(straight / "001"), model_state(pieces / "001")
    assert resumed["epoch"] == expected["epoch"] == 3
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    torch.testing.assert_close(resumed["balancing"]["log_variance"], expected["balancing"]["log_variance"],
                               rtol=0, atol=0)
    expected_metrics = json.load(open(straight / "001" / "results.json"))["metrics"]
    resumed_metrics = json.load(open(pieces / "001" / "results.json"))["metrics"]
    assert resumed_metrics == expected_metrics
    history = pandas.read_csv(pieces / "001" / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(history["val_loss"]) == list(pandas.read_csv(straight / "001" / "metrics.csv")["val_loss"])
    assert sorted(os.listdir(pieces)) == ["001", "results.csv", "results.csv.lock"]


def test_resume_refuses_flags_that_change_the_run(cityscapes_root, tmp_path, capsys):
    assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--resume", "1", "--lr", "0.5", "--lp", "MSE"]) == 2
    error = capsys.readouterr().err
    assert "--lr: 0.0001 in the run, 0.5 now" in error and "--lp: 'L1' in the run, 'MSE' now" in error
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--resume", "7"]) == 2
    assert "--resume 7: no experiment folder" in capsys.readouterr().err


def test_sigterm_stops_cleanly_and_the_printed_command_resumes(cityscapes_root, tmp_path):
    save_path = tmp_path / "exps"
    process = subprocess.Popen([sys.executable, os.path.join(REPOSITORY, "main_cross_cs.py"),
                                *arguments(cityscapes_root, save_path, "--epochs", "6")], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = save_path / "001" / "metrics.csv"
    deadline = time.time() + 900
    while not metrics.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert metrics.exists() and process.poll() is None, "the run ended or stalled before its first epoch"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    folder = save_path / "001"
    last = model_state(folder)
    assert len(pandas.read_csv(metrics)) == last["epoch"] >= 1
    assert (folder / "status").read_text().startswith(f"interrupted at epoch {last['epoch'] + 1}")
    assert not [name for _, _, names in os.walk(folder) for name in names if name.startswith(".tmp-")]
    assert "Traceback" not in stderr and "resume with:" in stderr
    command = stderr.split("resume with:")[1].strip().splitlines()[0].split()
    assert command[:2] == ["python", "main_cross_cs.py"] and command[2] == "--resume"
    resumed = run_script([*command[2:], "--epochs", str(last["epoch"] + 1), "--notqdm"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert model_state(folder)["epoch"] == last["epoch"] + 1
    assert (folder / "status").read_text() == "finished\n"


def test_an_interruption_before_any_checkpoint_says_there_is_nothing_to_resume(cityscapes_root, tmp_path,
                                                                               monkeypatch, capsys):
    def interrupted_step(parts, batch, device):
        os.kill(os.getpid(), signal.SIGINT)
        return real_step(parts, batch, device)

    real_step = engine.train_step
    monkeypatch.setattr(engine, "train_step", interrupted_step)
    assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path, "--epochs", "2")) == 130
    error = capsys.readouterr().err
    assert "no checkpoint was written yet" in error
    assert (tmp_path / "001" / "status").read_text() == "interrupted at epoch 1\n"
    assert not (tmp_path / "results.csv").exists()


def test_non_finite_training_stops_with_exit_3_and_keeps_the_last_good_checkpoint(cityscapes_root, tmp_path,
                                                                                   monkeypatch, capsys):
    def poisoned_step(parts, batch, device):
        """The real step; from the third step on (epoch 2: two steps an epoch) the total and the depth
        loss are made non-finite."""
        total, terms = real_step(parts, batch, device)
        steps.append(len(steps) + 1)
        if len(steps) > 2:
            return total * float("nan"), terms._replace(depth=terms.depth * float("inf"))
        return total, terms

    steps = []
    real_step = engine.train_step
    monkeypatch.setattr(engine, "train_step", poisoned_step)
    assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path, "--epochs", "3")) == 3
    error = capsys.readouterr().err
    assert "non-finite loss, depth loss at epoch 2/3, step 1" in error
    folder = tmp_path / "001"
    for name in ("best.pt", "last.pt"):
        checkpoint = model_state(folder, name)
        assert checkpoint["epoch"] == 1
        assert recorder.state_is_finite(checkpoint["model"])
    assert len(pandas.read_csv(folder / "metrics.csv")) == 1
    assert (folder / "status").read_text().startswith("failed: non-finite")
    assert not (tmp_path / "results.csv").exists()


def test_a_huge_learning_rate_exits_3_without_saving_a_checkpoint(cityscapes_root, tmp_path):
    result = run_script(arguments(cityscapes_root, tmp_path / "exps", "--epochs", "2", "--lr", "1e10"), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "non-finite" in result.stderr and "epoch 1/2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "exps" / "001" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "exps" / "results.csv").exists()


@pytest.mark.parametrize("extra,expected", [
    (["--lr", "inf"], "--lr inf"), (["--lr", "nan"], "--lr nan"), (["--b1", "1.5"], "--b1 1.5"),
    (["--b2", "-0.1"], "--b2 -0.1"), (["--seed", "-1"], "--seed -1"), (["--seed", str(2 ** 32)], "--seed"),
    (["--resume", "1", "--debug"], "--resume"),
])
def test_bad_values_are_refused_up_front(extra, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(CITYSCAPES, extra)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_demo_never_writes_into_a_users_dataset_and_debug_writes_nothing(tmp_path):
    user_data = tmp_path / "my_cityscapes"
    (user_data / "leftImg8bit").mkdir(parents=True)
    (user_data / "leftImg8bit" / "keep.txt").write_text("mine")
    refused = run_script(["--demo", "--input_path", str(user_data), "--epochs", "1"], cwd=tmp_path)
    assert refused.returncode == 2 and str(user_data) in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(os.listdir(user_data)) == ["leftImg8bit"] and os.listdir(user_data / "leftImg8bit") == ["keep.txt"]
    debug = run_script(["--demo", "--debug", "--epochs", "1", "--notqdm", "--no_plots"], cwd=tmp_path)
    assert debug.returncode == 0, debug.stderr
    assert sorted(os.listdir(tmp_path)) == ["my_cityscapes"]


def test_save_path_problems_are_clear_errors(cityscapes_root, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(CITYSCAPES, arguments(cityscapes_root, a_file, "--epochs", "1"))
    assert exit_info.value.code == 2 and "that is a file" in capsys.readouterr().err

    class FullDisk:
        free = 1024
    monkeypatch.setattr(recorder.shutil, "disk_usage", lambda path: FullDisk)
    assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path / "exps", "--epochs", "1")) == 2
    error = capsys.readouterr().err
    assert "0 MiB free" in error and "best.pt" in error and "last.pt" in error


def test_a_corrupt_summary_file_is_refused_before_training(cityscapes_root, tmp_path, capsys):
    (tmp_path / "results.csv").write_bytes(b"\x00\x01\x02binary\n")
    assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path, "--epochs", "1")) == 2
    assert "results.csv" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]


def test_infer_only_on_a_damaged_checkpoint_is_a_clear_error(cityscapes_root, tmp_path, capsys):
    assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path, "--epochs", "1")) == 0
    best = tmp_path / "001" / "checkpoints" / "best.pt"
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    checkpoint["model_arguments"]["num_classes"] = 19
    torch.save(checkpoint, best)
    capsys.readouterr()
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "1", "--notqdm"]) == 2
    error = capsys.readouterr().err
    assert "does not match the model it describes" in error and "'num_classes': 19" in error
    best.write_bytes(b"")
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "1"]) == 2
    assert "the file is empty (0 bytes)" in capsys.readouterr().err


def test_a_last_batch_of_one_image_is_dropped(tmp_path):
    root = write_cityscapes_raw(tmp_path / "data", {"train": 3, "val": 2}, 64, 128, seed=4)
    code = main(CITYSCAPES, ["--input_path", str(root), "--save_path", str(tmp_path / "exps"), "--enc_layers", "18",
                             "--batch_size", "2", "--workers", "0", "--notqdm", "--no_plots", "--height", "32",
                             "--width", "32", "--epochs", "1"])
    assert code == 0


def test_outputs_follow_the_umask(cityscapes_root, tmp_path):
    previous = os.umask(0o022)
    try:
        assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path, "--epochs", "1")) == 0
    finally:
        os.umask(previous)
    for path in (tmp_path / "001" / "config.json", tmp_path / "001" / "checkpoints" / "best.pt",
                 tmp_path / "results.csv"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_deterministic_runs_with_one_seed_give_identical_metrics(cityscapes_root, tmp_path):
    for name in ("first", "second"):
        assert main(CITYSCAPES, arguments(cityscapes_root, tmp_path / name, "--epochs", "1", "--deterministic",
                                          "--seed", "5")) == 0
    torch.use_deterministic_algorithms(False)
    first = json.load(open(tmp_path / "first" / "001" / "results.json"))["metrics"]
    second = json.load(open(tmp_path / "second" / "001" / "results.json"))["metrics"]
    assert first == second


def test_zero_byte_checkpoint_and_missing_folder_messages(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserInputError, match=r"empty \(0 bytes\)"):
        recorder.load_checkpoint(str(empty), "cpu")


def test_pretrained_weights_that_are_not_a_state_dict_are_clear_errors(cityscapes_root, tmp_path):
    not_a_state = tmp_path / "weights.pt"
    torch.save([1, 2, 3], not_a_state)
    wrong_state = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong_state)
    for path, expected in ((not_a_state, "holds a list, not a state dict"), (wrong_state, "is not a resnet18 state dict")):
        result = run_script(arguments(cityscapes_root, tmp_path / "exps", "--epochs", "1", "--use_pretrain",
                                      "--pretrained_weights", str(path)), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "--use_pretrain" in result.stderr and expected in result.stderr and "Traceback" not in result.stderr
