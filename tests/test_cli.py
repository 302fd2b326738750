"""The CLI as a user meets it: real subprocesses, exit codes, one clear line per error."""

import subprocess
import sys

import pytest


def harness(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_help_is_fast_and_lists_commands():
    result = harness("--help", timeout=30)
    assert result.returncode == 0
    for command in ("md", "demo", "analyze", "build-plugins", "potentials", "export"):
        assert command in result.stdout


def test_potentials_lists_registry():
    result = harness("potentials", timeout=60)
    assert result.returncode == 0
    assert "sevennet-0" in result.stdout and "chgnet" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["md", "no/such/file.cif", "--potential", "lj-test"], "not found"),
    (["md", "Li3N", "--potential", "no-such-model"], "unknown potential 'no-such-model'"),
    (["md", "Li3N", "--potential", "lj-test", "--timestep-fs", "-2"], "timestep_fs"),
    (["md", "Li3N", "--potential", "lj-test", "--ensemble", "nvt_magic"], "ensemble"),
])
def test_bad_input_exits_2_without_traceback(tmp_path, args, message):
    result = harness(*args, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("structure: Li3N\npotential: lj-test\ntemprature_K: 900\n")
    result = harness("md", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key(s)" in result.stderr and "temprature_K" in result.stderr
    assert "Traceback" not in result.stderr
