"""The data modules split by concept keep their public names where other code imports them."""

from __future__ import annotations

import importlib

import pytest

from reslab.data import archive, cache, decode, download, imagefolder, listing, locate, probe


@pytest.mark.parametrize("module", ["download", "decode", "imagefolder", "archive", "locate", "probe", "listing",
                                    "cache"])
def test_every_public_name_resolves(module):
    mod = importlib.import_module(f"reslab.data.{module}")
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


def test_reexports_are_the_same_objects():
    for name in archive.__all__:
        assert getattr(download, name) is getattr(archive, name)
    for name in locate.__all__:
        assert getattr(download, name) is getattr(locate, name)
    for name in ("BadImage", "probe_mode", "open_regular", "not_regular", "stat_problem", "image_size_of"):
        assert getattr(decode, name) is getattr(probe, name)
    assert imagefolder.IMAGE_EXTENSIONS is listing.IMAGE_EXTENSIONS
    assert download.cache_dir is cache.cache_dir


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path))
    assert download.cache_dir() == tmp_path
