"""Reliability inside one process: exact resume, resume refusals, up-front refusals of bad values,
determinism. The failures a user meets are run end to end in tests/test_failures.py. Tiny generated
data, CPU, ResNet-18."""
import json
import os

import pandas
import pytest
import torch

from data import CITYSCAPES
from training import recorder
from training.run import main
from utils.errors import UserInputError





def model_state(folder, name="last.pt"):
    return torch.load(os.path.join(folder, "checkpoints", name), map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(cityscapes_root, tmp_path, tiny_run):
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert main(CITYSCAPES, tiny_run(cityscapes_root, straight, "--epochs", "3", "--uncertainty_weights")) == 0
    assert main(CITYSCAPES, tiny_run(cityscapes_root, pieces, "--epochs", "1", "--uncertainty_weights")) == 0
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


def files_and_times(folder):
    return sorted((str(path), path.stat().st_mtime_ns) for path in folder.rglob("*"))


def test_resume_refuses_flags_that_change_the_run(finished_run, capsys):
    """On the shared finished run (default --lr and --lp), which the refusals leave untouched."""
    before = files_and_times(finished_run)
    assert main(CITYSCAPES, ["--save_path", str(finished_run), "--resume", "1", "--lr", "0.5", "--lp", "MSE"]) == 2
    error = capsys.readouterr().err
    assert "--lr: 0.0001 in the run, 0.5 now" in error and "--lp: 'L1' in the run, 'MSE' now" in error
    assert main(CITYSCAPES, ["--save_path", str(finished_run), "--resume", "7"]) == 2
    assert "--resume 7: no experiment folder" in capsys.readouterr().err
    assert files_and_times(finished_run) == before


@pytest.mark.parametrize("extra,expected", [
    (["--lr", "inf"], "--lr inf"), (["--lr", "nan"], "--lr nan"), (["--b1", "1.5"], "--b1 1.5"),
    (["--b2", "-0.1"], "--b2 -0.1"), (["--seed", "-1"], "--seed -1"), (["--seed", str(2 ** 32)], "--seed"),
    (["--resume", "1", "--debug"], "--resume"),
])
def test_bad_values_are_refused_up_front(extra, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(CITYSCAPES, extra)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_deterministic_runs_with_one_seed_give_identical_metrics(cityscapes_root, tmp_path, tiny_run):
    for name in ("first", "second"):
        assert main(CITYSCAPES, tiny_run(cityscapes_root, tmp_path / name, "--epochs", "1", "--deterministic",
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

