"""Shared test settings: every test gets its own user cache folder (the datasets' default cache goes
there), so no test reads or writes ~/.cache; the small raw Cityscapes and NYUv2 datasets, the tiny CPU
run that the end-to-end tests of the entry scripts share, and one finished tiny run for the tests that
only read a finished run's files.

Under pytest-xdist (`-n`, PYTEST_XDIST_WORKER set) each worker keeps torch to one intra-op thread, and
so do the processes the tests start (OMP_NUM_THREADS): the workers share the cores."""
import os
import subprocess
import sys

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from data.synthetic import write_cityscapes_raw, write_nyu_mtan

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = ["--enc_layers", "18", "--batch_size", "2", "--workers", "0", "--notqdm", "--height", "32", "--width", "64"]
CITYSCAPES_SPLITS = {"train": 4, "val": 3}  # 3 val images: divisible neither by 2 processes nor by batches of 2 or 4
NYU_SPLITS = {"train": 4, "val": 3}
HAND_WRITTEN_ROW = '"000","hand-written, ""quoted"" note"'


@pytest.fixture(autouse=True)
def private_user_cache(tmp_path_factory, monkeypatch):
    """Point $XDG_CACHE_HOME (data.cache.user_cache_dir) at a fresh temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory):
    """A raw Cityscapes dataset (CITYSCAPES_SPLITS: 4 train, 3 val scenes) at 256x128, generated once per
    session."""
    return str(write_cityscapes_raw(tmp_path_factory.mktemp("cityscapes"), CITYSCAPES_SPLITS, 128, 256, seed=2))


@pytest.fixture(scope="session")
def nyu_root(tmp_path_factory):
    """An NYUv2 dataset in the MTAN layout (NYU_SPLITS: 4 train, 3 val scenes) at 128x96, generated once per
    session."""
    return str(write_nyu_mtan(tmp_path_factory.mktemp("nyu"), NYU_SPLITS, 96, 128, seed=1))


def tiny_run_arguments(root, save_path, *extra, plots=False):
    """The entry-script arguments of a tiny CPU-sized run (ResNet-18, 32x64, batch 2, no workers or
    bars; no figures unless `plots`) on `root`, writing under `save_path`, then `extra`."""
    return ["--input_path", str(root), "--save_path", str(save_path), *TINY_RUN, *([] if plots else ["--no_plots"]),
            *extra]


@pytest.fixture(scope="session")
def tiny_run():
    """tiny_run_arguments: (root, save_path, *extra, plots=False) -> the arguments of a tiny run."""
    return tiny_run_arguments


@pytest.fixture(scope="session")
def finished_run(cityscapes_root, tmp_path_factory):
    """The save path of one finished tiny Cityscapes run, made once per session by the entry script in
    its own process (umask 022): --uncertainty_weights, 2 epochs, figures and --tensorboard on, after
    a hand-edited row (HAND_WRITTEN_ROW, experiment "000") was written into results.csv. Experiment
    001 holds the run; save_path.parent / "stdout.txt" what it printed. Read it only: a test that writes copies
    it first (shutil.copytree)."""
    base = tmp_path_factory.mktemp("finished")
    save_path = base / "exps"
    save_path.mkdir()
    (save_path / "results.csv").write_text(f"experiment,note\n{HAND_WRITTEN_ROW}\n")
    arguments = tiny_run_arguments(cityscapes_root, save_path, "--uncertainty_weights", "--epochs", "2",
                                   "--tensorboard", plots=True)
    environment = {**os.environ, "PYTHONPATH": REPOSITORY, "XDG_CACHE_HOME": str(base / "xdg_cache")}
    previous = os.umask(0o022)
    try:
        result = subprocess.run([sys.executable, os.path.join(REPOSITORY, "main_cross_cs.py"), *arguments],
                                cwd=base, capture_output=True, text=True, timeout=600, env=environment)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    (base / "stdout.txt").write_text(result.stdout)
    return save_path
