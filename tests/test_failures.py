"""Each failure a user can meet, end to end: the entry script runs in a subprocess, as a user would run
it, and must exit with the documented status (2 bad input, 3 non-finite training, 130/143 signals),
a message naming what to fix, no traceback, and every earlier file intact.

Faults that a test cannot produce for real (a full or read-only disk as root, a NaN at a chosen step,
a signal at a chosen moment) are injected by `run_entry(..., fault=CODE)` (conftest.py): CODE runs in
the new process first and patches the library; the entry script then runs unchanged through runpy."""
import errno
import json
import os
import shutil
import signal
import time

import numpy as np
import pandas
import pytest
import torch

from data.synthetic import write_cityscapes_raw, write_nyu_mtan
from training import recorder


def assert_clear_error(result, code, *fragments):
    """`result` exited with `code`, its stderr holds every fragment and no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def checkpoint(folder, name):
    return torch.load(os.path.join(folder, "checkpoints", name), map_location="cpu", weights_only=True)


def temporary_files(folder):
    return [name for _, _, names in os.walk(folder) for name in names if name.startswith(".tmp-")]


# 1. The demo never writes into a user's data.

@pytest.mark.slow
def test_demo_refuses_a_users_folder_and_debug_writes_nothing(run_entry, tmp_path):
    user_data = tmp_path / "my_cityscapes"
    (user_data / "leftImg8bit").mkdir(parents=True)
    (user_data / "leftImg8bit" / "keep.txt").write_text("mine")
    refused = run_entry(["--demo", "--input_path", str(user_data), "--epochs", "1"], cwd=tmp_path)
    assert_clear_error(refused, 2, f"--demo --input_path {user_data}", "no .complete marker")
    assert sorted(os.listdir(user_data)) == ["leftImg8bit"] and os.listdir(user_data / "leftImg8bit") == ["keep.txt"]
    a_smaller_demo = """
        import dataclasses, data
        data.CITYSCAPES = dataclasses.replace(data.CITYSCAPES, demo_data={**data.CITYSCAPES.demo_data,
                                                                          "splits": {"train": 8, "val": 2}})
    """  # the demo at its own size: test_training's reduced demo
    debug = run_entry(["--demo", "--debug", "--epochs", "1", "--notqdm", "--no_plots"], cwd=tmp_path,
                      fault=a_smaller_demo)
    assert "generating the demo dataset in a temporary folder (--debug)" in debug.stdout
    assert debug.returncode == 0, debug.stderr
    assert sorted(os.listdir(tmp_path)) == ["my_cityscapes"]


# 2. Non-finite training stops with exit 3 and never saves a non-finite checkpoint.

@pytest.mark.slow
def test_a_nan_in_epoch_2_exits_3_and_keeps_epoch_1_as_the_last_good_checkpoints(run_entry, cityscapes_root, tmp_path,
                                                                                 tiny_run):
    poison_from_step_3 = """
        from training import engine
        real_step, steps = engine.train_step, []
        def poisoned_step(parts, batch, device):
            total, terms = real_step(parts, batch, device)
            steps.append(1)
            if len(steps) > 2:
                return total * float("nan"), terms._replace(depth=terms.depth * float("inf"))
            return total, terms
        engine.train_step = poisoned_step
    """
    result = run_entry(tiny_run(cityscapes_root, tmp_path / "exps", "--epochs", "3"), tmp_path,
                       fault=poison_from_step_3)
    assert_clear_error(result, 3, "error: non-finite loss, depth loss at epoch 2/3, step 1",
                       "the last good checkpoints are kept")
    folder = tmp_path / "exps" / "001"
    for name in ("best.pt", "last.pt"):
        saved = checkpoint(folder, name)
        assert saved["epoch"] == 1 and recorder.state_is_finite(saved["model"])
    assert len(pandas.read_csv(folder / "metrics.csv")) == 1
    assert (folder / "status").read_text().startswith("failed: non-finite loss, depth loss at epoch 2/3")
    assert not (tmp_path / "exps" / "results.csv").exists()


def test_a_bad_optimisation_value_is_refused_before_anything_is_written(run_entry, tmp_path):
    # every flag's refusal: tests/test_reliability.py, in process; here the entry script's exit path
    result = run_entry(["--save_path", str(tmp_path / "exps"), "--lr", "nan"], tmp_path)
    assert_clear_error(result, 2, "--lr nan: expected a positive, finite learning rate")
    assert os.listdir(tmp_path) == []


# 3. Interruptions leave consistent files and say how to resume.

def test_an_interruption_before_any_checkpoint_says_there_is_nothing_to_resume(run_entry, cityscapes_root, tmp_path,
                                                                               tiny_run):
    interrupt_the_first_step = """
        import os, signal
        from training import engine
        real_step = engine.train_step
        def interrupted_step(parts, batch, device):
            os.kill(os.getpid(), signal.SIGINT)
            return real_step(parts, batch, device)
        engine.train_step = interrupted_step
    """
    result = run_entry(tiny_run(cityscapes_root, tmp_path, "--epochs", "2"), tmp_path, fault=interrupt_the_first_step)
    assert_clear_error(result, 130, "interrupted during epoch 1: no checkpoint was written yet, so there is "
                                    "nothing to resume")
    assert (tmp_path / "001" / "status").read_text() == "interrupted at epoch 1\n"
    assert not (tmp_path / "001" / "checkpoints" / "last.pt").exists() and not (tmp_path / "results.csv").exists()


@pytest.mark.slow
def test_a_second_signal_during_a_checkpoint_write_stops_at_once_without_debris(run_entry, cityscapes_root, tmp_path,
                                                                                tiny_run):
    """Two SIGINTs arrive while epoch 2's last.pt is being written: the first only asks to stop after
    the step, the second interrupts the write itself; the temporary file goes, last.pt stays epoch 1's
    and metrics.csv is never ahead of it."""
    signals_inside_the_second_write = """
        import os, signal
        from utils import files
        real_write, writes = files.atomic_write, []
        def write_then_signal(path, write_content):
            if str(path).endswith("last.pt"):
                writes.append(path)
                if len(writes) == 2:
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)
                    open(str(path) + ".reached-after-the-signals", "w").close()
            return real_write(path, write_content)
        files.atomic_write = write_then_signal
    """
    result = run_entry(tiny_run(cityscapes_root, tmp_path, "--epochs", "3"), tmp_path,
                       fault=signals_inside_the_second_write)
    assert_clear_error(result, 130, "interrupted during epoch 2", "holds epochs 1-1; resume with:")
    folder = tmp_path / "001"
    assert not (folder / "checkpoints" / "last.pt.reached-after-the-signals").exists()
    assert checkpoint(folder, "last.pt")["epoch"] == 1
    assert len(pandas.read_csv(folder / "metrics.csv")) == 1
    assert temporary_files(folder) == []
    assert (folder / "status").read_text() == "interrupted at epoch 2\n"


# 4. Clear errors instead of tracebacks.

def test_a_save_path_that_is_a_file_is_refused(run_entry, cityscapes_root, tmp_path, tiny_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    result = run_entry(tiny_run(cityscapes_root, a_file, "--epochs", "1"), tmp_path)
    assert_clear_error(result, 2, f"--save_path {a_file}: that is a file")
    assert a_file.read_text() == "x"


def test_a_full_disk_is_refused_before_training_with_the_space_needed(run_entry, cityscapes_root, tmp_path, tiny_run):
    one_kib_free = """
        import collections, shutil
        shutil.disk_usage = lambda path: collections.namedtuple("Usage", "total used free")(10 ** 9, 10 ** 9, 1024)
    """
    result = run_entry(tiny_run(cityscapes_root, tmp_path / "exps", "--epochs", "1"), tmp_path, fault=one_kib_free)
    assert_clear_error(result, 2, f"--save_path {tmp_path / 'exps' / '001'}: 0 MiB free", "best.pt", "last.pt")
    assert not (tmp_path / "exps" / "001" / "metrics.csv").exists()


def test_a_read_only_save_path_is_named(run_entry, cityscapes_root, tmp_path, tiny_run):
    read_only_save_path = f"""
        import errno, os
        real_mkdir = os.mkdir
        def mkdir(path, *rest, **keywords):
            if str(path).startswith({str(tmp_path / "exps")!r}):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, *rest, **keywords)
        os.mkdir = mkdir
    """
    result = run_entry(tiny_run(cityscapes_root, tmp_path / "exps", "--epochs", "1"), tmp_path,
                       fault=read_only_save_path)
    assert_clear_error(result, 2, f"cannot create an experiment folder in {tmp_path / 'exps'}: "
                                  f"{os.strerror(errno.EROFS)}", "writable --save_path")


def test_a_disk_that_fills_up_during_a_checkpoint_write_names_the_file_and_its_size(run_entry, cityscapes_root,
                                                                                    tmp_path, tiny_run):
    full_at_the_first_checkpoint = """
        import errno, os
        from utils import files
        real_write = files.atomic_write
        def write(path, write_content):
            if str(path).endswith(".pt"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            return real_write(path, write_content)
        files.atomic_write = write
    """
    result = run_entry(tiny_run(cityscapes_root, tmp_path, "--epochs", "2"), tmp_path,
                       fault=full_at_the_first_checkpoint)
    best = tmp_path / "001" / "checkpoints" / "best.pt"
    assert_clear_error(result, 2, f"cannot write {best}: {os.strerror(errno.ENOSPC)} (about ", "MiB to write")
    assert os.listdir(best.parent) == [] and not (tmp_path / "001" / "metrics.csv").exists()
    assert (tmp_path / "001" / "status").read_text().startswith("failed: cannot write")


def test_a_finished_run_keeps_hand_edited_rows_and_follows_the_umask(finished_run):
    """The shared finished run (tests/conftest.py): run with umask 022 after a hand-edited results.csv
    row was written."""
    lines = (finished_run / "results.csv").read_text().splitlines()
    assert lines[1] == '"000","hand-written, ""quoted"" note"' and len(lines) == 3
    assert (finished_run / "001" / "status").read_text() == "finished\n"
    for path in (finished_run / "001" / "config.json", finished_run / "001" / "checkpoints" / "best.pt",
                 finished_run / "results.csv"):
        assert path.stat().st_mode & 0o777 == 0o644, path


@pytest.mark.parametrize("damage,expected", [
    ("model_arguments", ["does not match the model it describes", "'num_classes': 19"]),
    ("zero_bytes", ["the file is empty (0 bytes)"]),
    ("no_config", []),
])
def test_infer_only_on_damaged_experiments(run_entry, finished_run, tmp_path, damage, expected):
    """--infer_only rebuilds everything from best.pt: a checkpoint that contradicts its own model
    arguments or is empty is a clear error; a missing config.json is not needed at all. On a copy of
    the shared finished run."""
    save_path = shutil.copytree(finished_run, tmp_path / "exps")
    best = save_path / "001" / "checkpoints" / "best.pt"
    if damage == "model_arguments":
        saved = torch.load(best, map_location="cpu", weights_only=True)
        saved["model_arguments"]["num_classes"] = 19
        torch.save(saved, best)
    elif damage == "zero_bytes":
        best.write_bytes(b"")
    else:
        (save_path / "001" / "config.json").unlink()
    result = run_entry(["--save_path", str(save_path), "--infer_only", "--exp_num", "1", "--notqdm", "--no_plots"],
                       tmp_path)
    if not expected:
        assert result.returncode == 0, result.stderr
        inferred = json.loads((save_path / "001" / "infer" / "001" / "results.json").read_text())["metrics"]
        assert inferred == json.loads((save_path / "001" / "results.json").read_text())["metrics"]
        return
    assert_clear_error(result, 2, str(best), *expected)


@pytest.mark.slow
def test_pretrained_weights_that_are_not_a_state_dict_are_refused(run_entry, cityscapes_root, tmp_path, tiny_run):
    not_a_state = tmp_path / "weights.pt"
    torch.save([1, 2, 3], not_a_state)
    wrong_state = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong_state)
    for path, expected in ((not_a_state, "holds a list, not a state dict"),
                           (wrong_state, "is not a resnet18 state dict")):
        result = run_entry(tiny_run(cityscapes_root, tmp_path / "exps", "--epochs", "1", "--use_pretrain",
                                     "--pretrained_weights", str(path)), tmp_path)
        assert_clear_error(result, 2, "--use_pretrain", expected)


def test_a_corrupt_results_csv_is_refused_before_training(run_entry, cityscapes_root, tmp_path, tiny_run):
    (tmp_path / "results.csv").write_bytes(b"\x00\x01\x02binary\n")
    result = run_entry(tiny_run(cityscapes_root, tmp_path, "--epochs", "1"), tmp_path)
    assert_clear_error(result, 2, str(tmp_path / "results.csv"))
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]
    assert (tmp_path / "results.csv").read_bytes() == b"\x00\x01\x02binary\n"


def test_a_last_training_batch_of_one_image_is_dropped(run_entry, tmp_path):
    root = write_cityscapes_raw(tmp_path / "data", {"train": 3, "val": 2}, 64, 128, seed=4)
    result = run_entry(["--input_path", str(root), "--save_path", str(tmp_path / "exps"), "--enc_layers", "18",
                        "--batch_size", "2", "--workers", "0", "--notqdm", "--no_plots", "--height", "32",
                        "--width", "32", "--epochs", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(pandas.read_csv(tmp_path / "exps" / "001" / "metrics.csv")) == 1


# 5 and 6. Bad files are found before the first epoch.

@pytest.mark.parametrize("no_cache", [False, True])
def test_a_truncated_validation_file_stops_the_run_before_its_first_epoch(run_entry, tmp_path, no_cache, tiny_run):
    root = write_cityscapes_raw(tmp_path / "data", {"train": 2, "val": 2}, 64, 128, seed=5)
    label = sorted((root / "gtFine" / "val").rglob("*_labelIds.png"))[-1]
    label.write_bytes(label.read_bytes()[:100])
    result = run_entry(tiny_run(root, tmp_path / "exps", "--epochs", "1", *(["--no_cache"] if no_cache else [])),
                       tmp_path)
    assert_clear_error(result, 2, str(label))
    assert not (tmp_path / "exps" / "001" / "metrics.csv").exists()


@pytest.mark.parametrize("no_cache", [False, True])
def test_a_training_split_without_a_labelled_pixel_is_refused(run_entry, tmp_path, no_cache, tiny_run):
    root = write_nyu_mtan(tmp_path / "nyu", {"train": 2, "val": 2}, 64, 128, seed=6)
    for path in (root / "train" / "label").glob("*.npy"):
        np.save(path, np.full_like(np.load(path), -1))
    result = run_entry(tiny_run(root, tmp_path / "exps", "--epochs", "1", *(["--no_cache"] if no_cache else [])),
                       tmp_path, script="main_cross_nyu.py")
    assert_clear_error(result, 2, "split 'train' has no labelled pixel", str(root / "train" / "label"))
    assert not (tmp_path / "exps" / "001" / "metrics.csv").exists()


def test_a_bool_nyu_image_is_refused(run_entry, tmp_path, tiny_run):
    root = write_nyu_mtan(tmp_path / "nyu", {"train": 2, "val": 2}, 64, 128, seed=7)
    path = root / "train" / "image" / "0.npy"
    np.save(path, np.load(path) > 0.5)
    result = run_entry(tiny_run(root, tmp_path / "exps", "--epochs", "1"), tmp_path, script="main_cross_nyu.py")
    assert_clear_error(result, 2, str(path), "bool image")


def test_a_dangling_symlink_is_named_as_a_broken_link(run_entry, tmp_path, tiny_run):
    root = write_cityscapes_raw(tmp_path / "data", {"train": 2, "val": 2}, 64, 128, seed=8)
    disparity = sorted((root / "disparity" / "train").rglob("*.png"))[0]
    disparity.unlink()
    disparity.symlink_to(tmp_path / "moved_away.png")
    result = run_entry(tiny_run(root, tmp_path / "exps", "--epochs", "1"), tmp_path)
    assert_clear_error(result, 2, f"{disparity} is a broken link", "moved_away.png")


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_printed_command_resumes(run_entry, entry_launcher, cityscapes_root, tmp_path,
                                                                tiny_run):
    save_path = tmp_path / "exps"
    process = entry_launcher.start("main_cross_cs.py", tiny_run(cityscapes_root, save_path, "--epochs", "6"), tmp_path)
    metrics = save_path / "001" / "metrics.csv"
    while not metrics.exists() and process.poll() is None:
        time.sleep(0.05)
    assert metrics.exists() and process.poll() is None, "the run ended before its first epoch"
    process.send_signal(signal.SIGTERM)
    stderr = process.completed(timeout=300).stderr
    assert process.returncode == 143, stderr
    folder = save_path / "001"
    last = checkpoint(folder, "last.pt")
    assert len(pandas.read_csv(metrics)) == last["epoch"] >= 1
    assert (folder / "status").read_text().startswith(f"interrupted at epoch {last['epoch'] + 1}")
    assert temporary_files(folder) == []
    assert "Traceback" not in stderr and "resume with:" in stderr
    command = stderr.split("resume with:")[1].strip().splitlines()[0].split()
    assert command[:2] == ["python", "main_cross_cs.py"] and command[2] == "--resume"
    resumed = run_entry([*command[2:], "--epochs", str(last["epoch"] + 1), "--notqdm"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint(folder, "last.pt")["epoch"] == last["epoch"] + 1
    assert (folder / "status").read_text() == "finished\n"
