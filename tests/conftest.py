"""Shared test settings: every test gets its own user cache folder (the datasets' default cache goes
there), so no test reads or writes ~/.cache; the small raw Cityscapes and NYUv2 datasets, the tiny CPU
run that the end-to-end tests of the entry scripts share, and one finished tiny run for the tests that
only read a finished run's files.

The suite runs in pytest-xdist worker processes, one per core (pytest.ini: `-n auto --dist loadgroup`):
tests are dealt out one by one, except that the tests marked with one `xdist_group` (those sharing an
expensive module fixture) go to one worker. The tests marked `slow` (end-to-end runs of an entry script)
are dealt out first, so that the workers end together rather than one of them finishing a long run
alone. Each worker keeps torch to one intra-op thread, and so do the processes the tests start
(OMP_NUM_THREADS): the workers share the cores. The session fixtures are made once for the whole run, by
the first worker that asks, in a folder every worker reads (`made_once`). The end-to-end tests start the
entry scripts through `run_entry` / `entry_launcher` (tests/entry_processes.py): each run a process of
its own, forked from a server of this worker that imported the scripts' modules once."""
import fcntl
import os
import shutil

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from data.synthetic import write_cityscapes_raw, write_nyu_mtan
from entry_processes import EntryLauncher

TINY_RUN = ["--enc_layers", "18", "--batch_size", "2", "--workers", "0", "--notqdm", "--height", "32", "--width", "64"]
CITYSCAPES_SPLITS = {"train": 4, "val": 3}  # 3 val images: divisible neither by 2 processes nor by batches of 2 or 4
NYU_SPLITS = {"train": 4, "val": 3}
HAND_WRITTEN_ROW = '"000","hand-written, ""quoted"" note"'


def pytest_collection_modifyitems(items):
    """Put the tests marked slow first, each group of tests otherwise in its collected order."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def made_once(tmp_path_factory, name, make):
    """The folder `name` of this test run, filled by `make(folder)` once: by the first process (xdist
    worker) that asks, under an exclusive lock that the others wait on; a failed `make` leaves it to the
    next one to try again. Shared by every worker, so the tests only read it (or copy it)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own popen-gwN
    folder, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(autouse=True)
def private_user_cache(tmp_path_factory, monkeypatch):
    """Point $XDG_CACHE_HOME (data.cache.user_cache_dir) at a fresh temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


@pytest.fixture(scope="session")
def entry_launcher(tmp_path_factory):
    """This test process's EntryLauncher (tests/entry_processes.py): entry-script runs forked from a
    server that has imported their modules once."""
    launcher = EntryLauncher(tmp_path_factory.mktemp("entry_output"))
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def run_entry(entry_launcher):
    """run_entry(arguments, cwd, script="main_cross_cs.py", fault=None): run the entry script `script`
    with `arguments` from `cwd` in a process of its own (entry_launcher), after the Python code `fault`
    if any; its subprocess.CompletedProcess (text stdout and stderr)."""
    def run(arguments, cwd, script="main_cross_cs.py", fault=None):
        return entry_launcher.run(script, arguments, cwd, fault)
    return run


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory):
    """A raw Cityscapes dataset (CITYSCAPES_SPLITS: 4 train, 3 val scenes) at 256x128."""
    return str(made_once(tmp_path_factory, "cityscapes",
                         lambda folder: write_cityscapes_raw(folder, CITYSCAPES_SPLITS, 128, 256, seed=2)))


@pytest.fixture(scope="session")
def nyu_root(tmp_path_factory):
    """An NYUv2 dataset in the MTAN layout (NYU_SPLITS: 4 train, 3 val scenes) at 128x96."""
    return str(made_once(tmp_path_factory, "nyu", lambda folder: write_nyu_mtan(folder, NYU_SPLITS, 96, 128, seed=1)))


def tiny_run_arguments(root, save_path, *extra, plots=False):
    """The entry-script arguments of a tiny CPU-sized run (ResNet-18, 32x64, batch 2, no workers or
    bars; no figures unless `plots`) on `root`, writing under `save_path`, then `extra`."""
    return ["--input_path", str(root), "--save_path", str(save_path), *TINY_RUN, *([] if plots else ["--no_plots"]),
            *extra]


@pytest.fixture(scope="session")
def tiny_run():
    """tiny_run_arguments: (root, save_path, *extra, plots=False) -> the arguments of a tiny run."""
    return tiny_run_arguments


def run_the_finished_run(folder, cityscapes_root, entry_launcher):
    """The shared finished run: the entry script in its own process, umask 022, into folder/exps after a
    hand-edited results.csv row; what it printed into folder/stdout.txt."""
    save_path = folder / "exps"
    save_path.mkdir()
    (save_path / "results.csv").write_text(f"experiment,note\n{HAND_WRITTEN_ROW}\n")
    arguments = tiny_run_arguments(cityscapes_root, save_path, "--uncertainty_weights", "--epochs", "2",
                                   "--tensorboard", plots=True)
    result = entry_launcher.run("main_cross_cs.py", arguments, folder, umask=0o022,
                                environment={"XDG_CACHE_HOME": str(folder / "xdg_cache")})
    assert result.returncode == 0, result.stderr
    (folder / "stdout.txt").write_text(result.stdout)


@pytest.fixture(scope="session")
def finished_run(cityscapes_root, tmp_path_factory, entry_launcher):
    """The save path of one finished tiny Cityscapes run (cityscapes_root): --uncertainty_weights, 2
    epochs, figures and --tensorboard on, run by the entry script in its own process with umask 022
    after a hand-edited row (HAND_WRITTEN_ROW, experiment "000") was written into results.csv.
    Experiment 001 holds the run; finished_run.parent / "stdout.txt" what it printed. Read it only: a
    test that writes copies it first (shutil.copytree)."""
    return made_once(tmp_path_factory, "finished",
                     lambda folder: run_the_finished_run(folder, cityscapes_root, entry_launcher)) / "exps"
