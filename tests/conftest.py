"""Shared test settings: every test gets its own user cache folder (the datasets' default cache goes
there), so no test reads or writes ~/.cache; and the small raw Cityscapes dataset and the tiny CPU run
that the end-to-end tests of the entry script share."""
import pytest

from data.synthetic import write_cityscapes_raw

TINY_RUN = ["--enc_layers", "18", "--batch_size", "2", "--workers", "0", "--notqdm", "--no_plots", "--height", "64",
            "--width", "128"]


@pytest.fixture(autouse=True)
def private_user_cache(tmp_path_factory, monkeypatch):
    """Point $XDG_CACHE_HOME (data.cache.user_cache_dir) at a fresh temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory):
    """A raw Cityscapes dataset of 4 train and 2 val scenes at 256x128 (generated once per session)."""
    return str(write_cityscapes_raw(tmp_path_factory.mktemp("cityscapes"), {"train": 4, "val": 2}, 128, 256, seed=2))


@pytest.fixture(scope="session")
def tiny_run():
    """A function (root, save_path, *extra) -> the entry-script arguments of a tiny CPU-sized run (ResNet-18,
    64x128, batch 2, no workers, bars or figures) on `root`, writing under `save_path`."""
    def arguments(root, save_path, *extra):
        return ["--input_path", str(root), "--save_path", str(save_path), *TINY_RUN, *extra]
    return arguments
