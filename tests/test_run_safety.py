"""A run's folder, data and seeds stay consistent whatever happens around them (issue "Reliability, round
two"): one writer per experiment folder, a resume only on the run's own data, the debris of a killed
write removed, a damaged data cache rebuilt, signals while the run starts and after training, --seeds
runs that stop, a torchrun process that dies, and a study script under Ctrl-C or SIGTERM. Each case
runs the entry script in a process of its own (conftest.py's run_entry and entry_launcher; under
torchrun, test_distributed's rank_1_stops_in_epoch_2) on tiny generated data."""
import json
import os
import shutil
import signal
import time

import pandas
import pytest
import torch

from data import CITYSCAPES
from data.cache import cache_state
from data.synthetic import write_cityscapes_raw
from test_distributed import rank_1_stops_in_epoch_2
from test_failures import assert_clear_error, checkpoint, temporary_files
from training.options import parse_options
from training.run import RunContext
from utils.files import hold_writer_lock


def signal_and_wait(process, signal_number, whole_group=False, timeout=30):
    """Send `signal_number` to the EntryProcess `process` (to its whole process group when `whole_group`,
    as Ctrl-C in a terminal does); (its CompletedProcess, and the seconds until it exited). A process
    still running after `timeout` seconds fails the test, and its group is killed."""
    sent = time.monotonic()
    process.send_signal(signal_number, whole_group)
    completed = process.completed(timeout)
    return completed, time.monotonic() - sent


def group_is_gone(group, timeout=10):
    """Whether no process of the process group `group` is left (waiting up to `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_resume_on_other_data_is_refused_and_on_the_same_data_moved_elsewhere_continues(run_entry, finished_run,
                                                                                       cityscapes_root, tmp_path):
    # Issue "Reliability, round two", item 2: the epochs before and after a resume train on one dataset.
    folder = shutil.copytree(finished_run, tmp_path / "exps") / "001"  # 2 epochs on cityscapes_root
    shared_summary = (finished_run / "results.csv").read_bytes()
    identity = json.loads((folder / "config.json").read_text())["data_identity"]
    assert set(identity) == {"train", "val"} and identity["val"]["samples"] == 3
    before = {name: (folder / name).read_bytes() for name in ("metrics.csv", "status", "config.json")}
    last_before = (folder / "checkpoints" / "last.pt").read_bytes()

    other = write_cityscapes_raw(tmp_path / "other", {"train": 4, "val": 2}, 128, 256, seed=5)
    resumed = run_entry(["--resume", str(folder), "--epochs", "3", "--input_path", str(other), "--workers", "0",
                         "--notqdm"], tmp_path)
    assert_clear_error(resumed, 2, f"--input_path {other} holds other data than the run trained on",
                       "val images: 3 in the run, 2 now")
    same_counts = write_cityscapes_raw(tmp_path / "same_counts", {"train": 4, "val": 3}, 128, 256, seed=6)
    resumed = run_entry(["--resume", str(folder), "--epochs", "3", "--input_path", str(same_counts), "--workers",
                         "0", "--notqdm"], tmp_path)
    assert_clear_error(resumed, 2, "train: other file names or sizes")
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert (folder / "checkpoints" / "last.pt").read_bytes() == last_before

    moved = shutil.copytree(cityscapes_root, tmp_path / "moved")
    continued = run_entry(["--resume", str(folder), "--epochs", "3", "--input_path", str(moved), "--workers", "0",
                           "--notqdm", "--no_plots"], tmp_path)
    assert continued.returncode == 0, continued.stderr
    assert (folder / "status").read_text() == "finished\n"
    assert list(pandas.read_csv(folder / "metrics.csv")["epoch"]) == [1, 2, 3]
    # the moved folder's row goes beside it, not into the results.csv of the save path it was trained in
    assert list(pandas.read_csv(folder.parent / "results.csv")["experiment"]) == [0, 1, 1]
    assert (finished_run / "results.csv").read_bytes() == shared_summary


@pytest.mark.slow
def test_one_writer_per_experiment_folder_and_a_killed_writer_leaves_no_stuck_lock(run_entry, entry_launcher,
                                                                                  finished_run, tmp_path):
    # Issue "Reliability, round two", item 1: two --resume of one experiment at once trained into one folder.
    save_path = shutil.copytree(finished_run, tmp_path / "exps")
    folder = save_path / "001"  # 2 epochs
    before = {name: (folder / name).read_bytes() for name in ("metrics.csv", "status")}
    resume = ["--resume", str(folder), "--epochs", "3", "--workers", "0", "--notqdm", "--no_plots"]

    lock = hold_writer_lock(str(folder))  # this process now writes the folder, as a running resume would
    refused = run_entry(resume, tmp_path)
    lock.close()
    assert_clear_error(refused, 2, f"{folder} is being written by another run (process {os.getpid()}")
    assert {name: (folder / name).read_bytes() for name in before} == before

    holder_script = tmp_path / "hold_the_lock.py"
    holder_script.write_text("import sys, time\nfrom utils.files import hold_writer_lock\n"
                             "lock = hold_writer_lock(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(600)\n")
    holder = entry_launcher.start(holder_script, [folder], tmp_path)
    holder.wait_for_line("held")
    holder.send_signal(signal.SIGKILL)  # the writer dies without releasing anything itself
    assert holder.wait(timeout=60) == -signal.SIGKILL
    continued = run_entry(resume, tmp_path)
    assert continued.returncode == 0, continued.stderr
    assert list(pandas.read_csv(folder / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert (folder / "status").read_text() == "finished\n"
    assert len(pandas.read_csv(save_path / "results.csv")) == 3  # the hand-written row, epoch 2's and epoch 3's


@pytest.mark.slow
def test_a_resume_removes_the_temporary_file_of_a_checkpoint_write_killed_by_sigkill(run_entry, cityscapes_root,
                                                                                     tmp_path, tiny_run):
    # Issue "Reliability, round two", item 10: kill -9 inside a write left its temporary file for good.
    kill_at_the_second_last_pt = """
        import os, signal
        real_replace = os.replace
        last_pt_writes = []
        def killing_replace(source, destination, *arguments, **keywords):
            if str(destination).endswith("last.pt"):
                last_pt_writes.append(destination)
                if len(last_pt_writes) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(source, destination, *arguments, **keywords)
        os.replace = killing_replace
    """
    killed = run_entry(tiny_run(cityscapes_root, tmp_path, "--epochs", "2"), tmp_path, fault=kill_at_the_second_last_pt)
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "001"
    leftovers = temporary_files(folder)
    assert len(leftovers) == 1 and leftovers[0].endswith("last.pt")
    assert checkpoint(folder, "last.pt")["epoch"] == 1
    resumed = run_entry(["--resume", str(folder), "--workers", "0", "--notqdm", "--no_plots"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"removed {folder / 'checkpoints' / leftovers[0]}, left by a write that was killed" in resumed.stdout
    assert temporary_files(folder) == [] and checkpoint(folder, "last.pt")["epoch"] == 2


@pytest.mark.slow
def test_a_cache_with_flipped_bytes_is_rebuilt_before_training_and_says_so(run_entry, cityscapes_root, tmp_path,
                                                                           tiny_run):
    # Issue "Reliability, round two", item 3: bytes flipped inside a cached array were trained on.
    cache_dir = tmp_path / "cache"
    arguments = tiny_run(cityscapes_root, tmp_path / "exps", "--epochs", "1", "--debug", "--cache_dir", str(cache_dir))
    assert run_entry(arguments, tmp_path).returncode == 0
    depth_files = sorted(cache_dir.glob("*/depth.npy"))
    assert len(depth_files) == 2  # train and val
    with open(depth_files[0], "r+b") as stream:
        stream.seek(-4, os.SEEK_END)
        stream.write(b"\xff\xff\xff\x7f")  # a NaN where a disparity was
    rerun = run_entry(arguments, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "rebuilding the " in rerun.stdout and f"cache {depth_files[0].parent}: depth.npy failed its checksum" \
        in rerun.stdout
    assert "Traceback" not in rerun.stderr


@pytest.mark.slow
def test_seeds_that_stop_say_which_finished_failed_or_never_started_and_how_to_run_the_rest(run_entry, cityscapes_root,
                                                                                           tmp_path, tiny_run):
    # Issue "Reliability, round two", item 11.
    # A huge learning rate: exit 3 in the first epoch, no checkpoint, no summary row.
    failed = run_entry(tiny_run(cityscapes_root, tmp_path / "huge", "--epochs", "1", "--lr", "1e10", "--seeds", "4",
                                "5", "6"), tmp_path)
    assert_clear_error(failed, 3, "non-finite", "epoch 1/1", "no checkpoint had been written yet",
                       "seeds: none finished; 4 failed; 5, 6 not started", "run the seeds not started with:")
    assert not (tmp_path / "huge" / "001" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "huge" / "results.csv").exists()
    assert "last good checkpoints are kept" not in failed.stderr
    rest_command = failed.stderr.split("run the seeds not started with:\n  ", 1)[1].splitlines()[0].split()
    assert rest_command[:2] == ["python", "main_cross_cs.py"]
    assert parse_options(CITYSCAPES, rest_command[2:]).optimization.seeds == (5, 6)

    stop_in_the_second_seeds_second_epoch = """
        import os, signal
        from training import engine
        real_step, steps = engine.train_step, []
        def step_then_signal(parts, batch, device):
            steps.append(1)
            if len(steps) == 7:  # 2 steps per epoch, 2 epochs per seed: seed 1, epoch 2, step 1
                os.kill(os.getpid(), signal.SIGTERM)
            return real_step(parts, batch, device)
        engine.train_step = step_then_signal
    """
    save_path = tmp_path / "signal"
    stopped = run_entry(tiny_run(cityscapes_root, save_path, "--epochs", "2", "--seeds", "0", "1", "2"), tmp_path,
                        fault=stop_in_the_second_seeds_second_epoch)
    assert_clear_error(stopped, 143, f"resume with:\n  python main_cross_cs.py --resume {save_path / '002'}",
                       "seeds: 0 finished; 1 was interrupted; 2 not started",
                       "after resuming it as said above, run the seeds not started with:")
    rest_command = stopped.stderr.split("not started with:\n  ", 1)[1].splitlines()[0].split()
    assert parse_options(CITYSCAPES, rest_command[2:]).optimization.seeds == (2,)
    assert (save_path / "001" / "status").read_text() == "finished\n"
    assert (save_path / "002" / "status").read_text() == "interrupted at epoch 2\n"
    assert not (save_path / "003").exists()


@pytest.mark.slow
def test_a_signal_during_the_final_evaluation_exits_143_and_the_resume_evaluates_again(run_entry, cityscapes_root,
                                                                                       tmp_path, tiny_run):
    # Issue "Reliability, round two", item 9: a signal after training was ignored (exit 0, status finished).
    signal_while_evaluating = """
        import os, signal
        from training import run
        real_evaluate = run.evaluate_and_report
        def evaluate_after_a_signal(*arguments, **keywords):
            os.kill(os.getpid(), signal.SIGTERM)
            return real_evaluate(*arguments, **keywords)
        run.evaluate_and_report = evaluate_after_a_signal
    """
    save_path = tmp_path / "exps"
    stopped = run_entry(tiny_run(cityscapes_root, save_path, "--epochs", "1"), tmp_path, fault=signal_while_evaluating)
    folder = save_path / "001"
    assert_clear_error(stopped, 143, f"interrupted during the final evaluation: {folder} holds epochs 1-1; resume with:")
    assert (folder / "status").read_text() == "interrupted during the final evaluation\n"
    assert not (folder / "results.json").exists() and not (save_path / "results.csv").exists()
    resumed = run_entry(["--resume", str(folder), "--workers", "0", "--notqdm", "--no_plots"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (folder / "status").read_text() == "finished\n" and (folder / "results.json").exists()
    assert list(pandas.read_csv(folder / "metrics.csv")["epoch"]) == [1]
    assert len(pandas.read_csv(save_path / "results.csv")) == 1


def test_a_second_ctrl_c_with_loader_workers_prints_no_worker_traceback(run_entry, cityscapes_root, tmp_path, tiny_run):
    # Issue "Reliability, round two", item 5: the workers inherited the run's signal handler, and a second
    # Ctrl-C (which the terminal sends to every process of its group) raised in each of them.
    ctrl_c_twice_to_every_process = """
        import multiprocessing, os, signal, time
        from training import engine
        real_step, steps = engine.train_step, []
        def step_then_ctrl_c_twice(parts, batch, device):
            steps.append(1)
            if len(steps) == 2:
                workers = [child.pid for child in multiprocessing.active_children()]
                assert workers, "expected DataLoader worker processes"
                for _ in range(2):
                    for pid in workers + [os.getpid()]:
                        os.kill(pid, signal.SIGINT)
                    time.sleep(0.5)
            return real_step(parts, batch, device)
        engine.train_step = step_then_ctrl_c_twice
    """
    arguments = [argument for argument in tiny_run(cityscapes_root, tmp_path / "exps", "--epochs", "2")]
    arguments[arguments.index("--workers") + 1] = "2"
    stopped = run_entry(arguments, tmp_path, fault=ctrl_c_twice_to_every_process)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr and "RunInterrupted" not in stopped.stderr, stopped.stderr
    assert "exited unexpectedly" not in stopped.stderr, stopped.stderr


def test_ctrl_c_during_the_cache_build_stops_within_seconds_and_leaves_no_partial_cache(entry_launcher, cityscapes_root,
                                                                                         tmp_path, tiny_run):
    # Issue "Reliability, round two", item 9, second half: Ctrl-C while the cache was built waited for the
    # whole build and the first step. Here the build's two worker processes would read for two more minutes.
    slow_reads_in_the_build_workers = """
        import multiprocessing, os, time
        from data import cache
        real_map_in_processes, real_read_chunk = cache.map_in_processes, cache.read_chunk
        cache.map_in_processes = lambda function, chunks, workers: real_map_in_processes(function, chunks, 2)
        def slow_read_chunk(dataset, indices):
            if multiprocessing.parent_process() is not None:
                os.write(1, b"a build worker is reading\\n")  # one write: the two workers' lines do not mix
                time.sleep(120)
            return real_read_chunk(dataset, indices)
        slow_read_chunk.__module__, slow_read_chunk.__qualname__ = cache.__name__, "read_chunk"  # pickled by name
        cache.read_chunk = slow_read_chunk
    """
    save_path, cache_dir = tmp_path / "exps", tmp_path / "cache"
    arguments = tiny_run(cityscapes_root, save_path, "--epochs", "1", "--cache_dir", str(cache_dir), "--seeds", "3",
                         "4")
    process = entry_launcher.start("main_cross_cs.py", arguments, tmp_path, fault=slow_reads_in_the_build_workers,
                                   new_session=True)
    process.wait_for_line("a build worker is reading")
    stopped, seconds = signal_and_wait(process, signal.SIGINT, whole_group=True)
    assert_clear_error(stopped, 130, "interrupted before training started: no experiment folder was created, so "
                       "there is nothing to resume\nseeds: none finished; 3 was interrupted before training; 4 not "
                       "started\nrun seed 3 and the seeds not started with:\n  python main_cross_cs.py ")
    assert stopped.stderr.endswith("\nstopped by SIGINT\n") and seconds < 15, (seconds, stopped.stderr)
    rest_command = stopped.stderr.split("not started with:\n  ", 1)[1].splitlines()[0].split()
    assert parse_options(CITYSCAPES, rest_command[2:]).optimization.seeds == (3, 4)
    assert group_is_gone(process.pid), "the build's worker processes outlived the run"
    assert not save_path.exists()
    assert sorted(path.suffix for path in cache_dir.iterdir()) == [".lock"]  # no array, no partial build

    train_set = RunContext(CITYSCAPES, parse_options(CITYSCAPES, arguments), torch.device("cpu")).training_set()
    assert cache_state(train_set.cache_folder, train_set.cache_manifest["key"])[0] == train_set.cache_manifest


def test_sigterm_while_a_resume_builds_its_model_stops_at_once_and_leaves_the_run_unchanged(entry_launcher,
                                                                                            finished_run, tmp_path):
    # Issue "Reliability, round two", item 9, second half, with a run to resume: its folder is untouched.
    slow_model_building = """
        import time
        from training import engine
        real_build_training = engine.build_training
        def slow_build_training(*arguments, **keywords):
            print("building the model", flush=True)
            time.sleep(120)
            return real_build_training(*arguments, **keywords)
        engine.build_training = slow_build_training
    """
    folder = shutil.copytree(finished_run, tmp_path / "exps") / "001"
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    process = entry_launcher.start("main_cross_cs.py", ["--resume", folder, "--epochs", "3", "--workers", "0",
                                                        "--notqdm"], tmp_path, fault=slow_model_building,
                                   new_session=True)
    process.wait_for_line("building the model")
    stopped, seconds = signal_and_wait(process, signal.SIGTERM)
    assert_clear_error(stopped, 143, f"interrupted before training started: {folder} is unchanged; resume with:\n"
                       f"  python main_cross_cs.py --resume {folder}\nstopped by SIGTERM")
    assert seconds < 15, seconds
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_a_torchrun_process_killed_after_epoch_1_stops_rank_0_at_once_with_the_resume_command(cityscapes_root,
                                                                                              tmp_path):
    # Issue "Reliability, round two", item 6: rank 0 printed a gloo traceback, its status stayed "running",
    # and no resume command was printed although epoch 1's checkpoint existed.
    result, folder, rank_0_stderr = rank_1_stops_in_epoch_2(cityscapes_root, tmp_path,
                                                            "os.kill(os.getpid(), signal.SIGKILL)")
    assert result.returncode == 1 and "exitcode  : -9 " in result.stderr, result.stderr[-3000:]  # torchrun's report
    assert rank_0_stderr.startswith(f"interrupted during epoch 2: {folder} holds epochs 1-1; resume with:\n"
                                    f"  python main_cross_cs.py --resume {folder}\n"
                                    "stopped: another torchrun process exited or cannot be reached ("), rank_0_stderr
    assert len(rank_0_stderr.splitlines()) == 3, rank_0_stderr
    status = (folder / "status").read_text()
    assert status.startswith("interrupted at epoch 2: another torchrun process exited or cannot be reached ("), status
    # gloo reports the closed connection at once (its own timeout is 30 minutes, torchrun's SIGKILL 30 s away)
    assert os.path.getmtime(folder / "status") - float((tmp_path / "rank-1-stopped-at").read_text()) < 10
    assert checkpoint(folder, "last.pt")["epoch"] == 1 and temporary_files(folder) == []
    assert list(pandas.read_csv(folder / "metrics.csv")["epoch"]) == [1]


STAND_IN_ENTRY_SCRIPT = """
import signal, sys, time
def stop(number, frame):
    print(f"stand-in: stopping on {signal.Signals(number).name}", flush=True)
    time.sleep(0.5)  # the step and checkpoint a real run finishes first
    print("stand-in: resume with: python main_cross_cs.py --resume exps/001", file=sys.stderr, flush=True)
    sys.exit(128 + number)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("stand-in: training", flush=True)
time.sleep(60)
"""

STUDY_OF_ONE_RUN = """
import sys
from types import SimpleNamespace
from scripts import run_list
run_list.ENTRY_SCRIPTS = {"cityscapes": sys.argv[1]}
sys.exit(run_list.execute([(SimpleNamespace(name="cityscapes/stand_in", dataset="cityscapes", comment=""), [])],
                          "exps"))
"""


@pytest.mark.parametrize("signal_number,whole_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_study_script_lets_its_run_stop_on_ctrl_c_or_sigterm_and_says_how_to_go_on(entry_launcher, tmp_path,
                                                                                     signal_number, whole_group):
    # Ctrl-C (to the terminal's whole process group) made a study script (scripts.ablations, comparisons,
    # consistency) raise KeyboardInterrupt, print a traceback and SIGKILL its run in the middle of its stop;
    # a SIGTERM to the script alone killed it and left its run training. Here the run is a stand-in.
    (tmp_path / "stand_in.py").write_text(STAND_IN_ENTRY_SCRIPT)
    (tmp_path / "study.py").write_text(STUDY_OF_ONE_RUN)
    study = entry_launcher.start(tmp_path / "study.py", [tmp_path / "stand_in.py"], tmp_path, new_session=True)
    study.wait_for_line("stand-in: training")
    stopped, _ = signal_and_wait(study, signal_number, whole_group)
    name = signal.Signals(signal_number).name
    code = 128 + signal_number
    assert_clear_error(stopped, code, "stand-in: resume with:", f"stopped: cityscapes/stand_in was interrupted (exit "
                       f"status {code}); resume it with the command it printed above, then run the rest with --only")
    assert stopped.stdout.count("stand-in: stopping on") == 1 and f"stand-in: stopping on {name}" in stopped.stdout
    assert group_is_gone(study.pid)
