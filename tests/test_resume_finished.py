"""--resume of a run that finished all its epochs trains nothing and writes nothing; with more epochs it
trains on (in process, on the tiny shared dataset)."""
import os

import pandas

from data import CITYSCAPES
from training.run import main


def folder_state(folder):
    """{relative path: modification time} of every file under `folder`."""
    return {os.path.relpath(os.path.join(root, name), folder): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names}


def test_resuming_a_finished_run_writes_nothing_and_a_longer_schedule_trains_on(cityscapes_root, tmp_path, tiny_run,
                                                                               capsys):
    assert main(CITYSCAPES, tiny_run(cityscapes_root, tmp_path, "--epochs", "1", "--height", "32",
                                     "--width", "64")) == 0
    before = folder_state(tmp_path)
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--resume", "1", "--notqdm"]) == 0
    assert "finished all 1 epochs of its run: nothing to resume" in capsys.readouterr().out
    assert folder_state(tmp_path) == before
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--resume", "1", "--notqdm", "--epochs", "2"]) == 0
    history = pandas.read_csv(tmp_path / "001" / "metrics.csv")
    assert list(history["epoch"]) == [1, 2]
    assert list(pandas.read_csv(tmp_path / "results.csv")["experiment"]) == [1, 1]
