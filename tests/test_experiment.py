"""Experiment folders and result files: numbering, atomic writes, appending rows from parallel runs."""
import json
import math
import multiprocessing
import os

import pandas
import pytest

from training import recorder
from utils import files
from utils.errors import UserInputError


def claim_folder(parent):
    return os.path.basename(recorder.create_numbered_folder(parent))


def test_parallel_runs_never_share_a_folder(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        names = pool.map(claim_folder, [str(tmp_path)] * 12)
    assert sorted(names) == [f"{number:03d}" for number in range(1, 13)]


def test_numbering_continues_after_the_highest_existing_folder(tmp_path):
    (tmp_path / "007").mkdir()
    (tmp_path / "notes").mkdir()
    assert os.path.basename(recorder.create_numbered_folder(str(tmp_path))) == "008"


def append_row(arguments):
    path, index = arguments
    files.append_csv_row(path, {"run": index, "score": index / 10})


def test_rows_appended_by_parallel_runs_are_all_kept(tmp_path):
    path = str(tmp_path / "results.csv")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(append_row, [(path, index) for index in range(16)])
    table = pandas.read_csv(path)
    assert sorted(table["run"]) == list(range(16))


def test_new_columns_extend_earlier_rows(tmp_path):
    path = str(tmp_path / "results.csv")
    files.append_csv_row(path, {"run": 1, "miou": 0.5})
    files.append_csv_row(path, {"run": 2, "miou": 0.6, "sigma_depth": 1.2})
    table = pandas.read_csv(path)
    assert list(table.columns) == ["run", "miou", "sigma_depth"]
    assert math.isnan(table["sigma_depth"][0]) and table["sigma_depth"][1] == 1.2


def test_json_writes_are_atomic_and_non_finite_values_become_null(tmp_path):
    path = tmp_path / "results.json"
    files.write_json(str(path), {"miou": float("nan"), "iou": [0.5, float("inf")]})
    assert json.loads(path.read_text()) == {"miou": None, "iou": [0.5, None]}
    assert [name for name in os.listdir(tmp_path) if name != "results.json"] == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    files.write_json(str(path), {"miou": 0.5})
    with pytest.raises(TypeError):
        files.write_json(str(path), {"miou": object()})
    assert json.loads(path.read_text()) == {"miou": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]


def test_missing_experiment_and_unreadable_checkpoint_are_clear_errors(tmp_path):
    (tmp_path / "001").mkdir()
    with pytest.raises(UserInputError, match=r"--exp_num 4.*\['001'\]"):
        recorder.experiment_folder(str(tmp_path), 4)
    broken = tmp_path / "001" / "best.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="cannot be read"):
        recorder.load_checkpoint(str(broken), "cpu")


def test_appending_keeps_earlier_rows_byte_for_byte(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(b"run,miou,note\r\n1,0.5,\"hand, edited\"\r\n2,0.6,x\n")
    rows_before = path.read_bytes().split(b"\n", 1)[1]
    files.append_csv_row(str(path), {"run": 3, "miou": 0.7, "sigma_depth": 1.1})
    content = path.read_bytes()
    header, rest = content.split(b"\n", 1)
    assert header.rstrip(b"\r") == b"run,miou,note,sigma_depth"
    assert rest.startswith(rows_before)
    table = pandas.read_csv(path)
    assert list(table["run"]) == [1, 2, 3] and table["note"][0] == "hand, edited" and table["sigma_depth"][2] == 1.1
