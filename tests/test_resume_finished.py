"""--resume of a run that finished all its epochs trains nothing and writes nothing; with more epochs it
trains on (in process, on a copy of the shared finished run)."""
import os
import shutil

import pandas

from data import CITYSCAPES
from training.run import main


def folder_state(folder):
    """{relative path: modification time} of every file under `folder`."""
    return {os.path.relpath(os.path.join(root, name), folder): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names}


def test_resuming_a_finished_run_writes_nothing_and_a_longer_schedule_trains_on(finished_run, tmp_path, capsys):
    save_path = shutil.copytree(finished_run, tmp_path / "exps")  # experiment 001: 2 epochs, finished
    before = folder_state(save_path)
    assert main(CITYSCAPES, ["--save_path", str(save_path), "--resume", "1", "--notqdm"]) == 0
    assert "finished all 2 epochs of its run: nothing to resume" in capsys.readouterr().out
    assert folder_state(save_path) == before
    assert main(CITYSCAPES, ["--save_path", str(save_path), "--resume", "1", "--notqdm", "--no_plots", "--epochs",
                             "3"]) == 0
    history = pandas.read_csv(save_path / "001" / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(pandas.read_csv(save_path / "results.csv")["experiment"]) == [0, 1, 1]  # 0: the hand-written row
