"""Shared test settings: every test gets its own user cache folder (the datasets' default cache goes
there), so no test reads or writes ~/.cache."""
import pytest


@pytest.fixture(autouse=True)
def private_user_cache(tmp_path_factory, monkeypatch):
    """Point $XDG_CACHE_HOME (data.cache.user_cache_dir) at a fresh temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
