"""cmake/presets/*.cmake and tools/build_lammps.sh, as far as they can be tested without
a LAMMPS source tree, a GPU or an hour of compiling.

* every preset loads as a CMake initial-cache file (``cmake -C``) and sets what it
  promises, alone and combined the way the build script combines them; the stand-in
  "LAMMPS tree" is an empty CMake project (``project(... NONE)``), so no compiler runs;
* the script's ``--dry-run`` prints the exact commands, and ``--configure-only`` runs the
  printed configure command for real against that stand-in tree;
* wrong input fails early with a one-line error and exit status 2.

What a real build needs (CUDA toolkit, Cython, MPI) was not available here: see the README
section on building LAMMPS with KOKKOS/ML-IAP (``tools/build_lammps.sh``) for what was
verified where.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "cmake" / "presets"
SCRIPT = REPO / "tools" / "build_lammps.sh"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")

EXPECTED = {
    "basic.cmake": {"BUILD_SHARED_LIBS": "ON", "BUILD_MPI": "ON", "PKG_KSPACE": "ON",
                    "PKG_EXTRA-FIX": "ON", "PKG_MANYBODY": "ON"},
    "kokkos-cuda.cmake": {"PKG_KOKKOS": "ON", "Kokkos_ENABLE_CUDA": "ON",
                          "Kokkos_ENABLE_SERIAL": "ON", "FFT_KOKKOS": "CUFFT"},
    "ml-iap-python.cmake": {"PKG_ML-IAP": "ON", "PKG_ML-SNAP": "ON", "PKG_PYTHON": "ON",
                            "MLIAP_ENABLE_PYTHON": "ON", "BUILD_SHARED_LIBS": "ON"},
    "plugins.cmake": {"PKG_PLUGIN": "ON", "BUILD_SHARED_LIBS": "ON"},
}


@pytest.fixture
def fake_lammps(tmp_path) -> Path:
    """A directory shaped like a LAMMPS source tree, whose CMake project compiles nothing."""
    root = tmp_path / "lammps"
    (root / "cmake").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "cmake" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(fake_lammps NONE)\n")
    (root / "src" / "version.h").write_text('#define LAMMPS_VERSION "22 Jul 2025"\n')
    return root


def cmake_cache(build: Path) -> dict[str, str]:
    cache = {}
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_+-]+):[A-Z]+=(.*)$", line)
        if match:
            cache[match.group(1)] = match.group(2)
    return cache


def configure(source: Path, build: Path, *presets: str) -> dict[str, str]:
    cmd = ["cmake", "-S", str(source), "-B", str(build)]
    for preset in presets:
        cmd += ["-C", str(PRESETS / preset)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "CMake Error" not in result.stderr and "CMake Warning" not in result.stderr, result.stderr
    return cmake_cache(build)


def test_every_preset_is_documented_and_listed():
    assert sorted(p.name for p in PRESETS.glob("*.cmake")) == sorted(EXPECTED)
    for preset in EXPECTED:
        text = (PRESETS / preset).read_text()
        assert text.startswith("# Preset:"), preset
        # cache files only set cache entries (LAMMPS-style): FORCE, so order of -C decides
        for line in text.splitlines():
            if line.strip().startswith("set(") and "CACHE" in line:
                assert line.split("#")[0].rstrip().endswith("FORCE)"), line


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_loads_alone(preset, fake_lammps, tmp_path):
    cache = configure(fake_lammps / "cmake", tmp_path / "build", preset)
    for key, value in EXPECTED[preset].items():
        assert cache.get(key) == value, (key, cache.get(key))


def test_presets_combine(fake_lammps, tmp_path):
    cache = configure(fake_lammps / "cmake", tmp_path / "build", *sorted(EXPECTED))
    for expected in EXPECTED.values():
        for key, value in expected.items():
            assert cache.get(key) == value, key
    # outside a LAMMPS tree the kokkos preset leaves the compiler alone
    assert "nvcc_wrapper" not in cache.get("CMAKE_CXX_COMPILER", "")


def test_kokkos_preset_uses_nvcc_wrapper_of_the_lammps_tree(fake_lammps, tmp_path):
    wrapper = fake_lammps / "lib" / "kokkos" / "bin" / "nvcc_wrapper"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\n")
    cache = configure(fake_lammps / "cmake", tmp_path / "build", "kokkos-cuda.cmake")
    assert cache["CMAKE_CXX_COMPILER"] == str(wrapper)


# -- tools/build_lammps.sh ---------------------------------------------------------------
def script(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                            timeout=120, check=False,
                            # the venv running the tests (CI's .venv-ci, not necessarily .venv)
                            env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": sys.prefix})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_script_syntax_and_help():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    text = script("--help").stdout
    for option in ("--lammps-src", "--gpu-arch", "--dry-run", "--no-kokkos", "--python"):
        assert option in text


def test_dry_run_prints_the_full_build(fake_lammps, tmp_path):
    python = Path(sys.prefix) / "bin" / "python"
    out = script("--lammps-src", str(fake_lammps), "--gpu-arch", "HOPPER90", "--jobs", "2",
                 "--python", str(python), "--build-dir", str(tmp_path / "b"), "--dry-run",
                 "-D", "PKG_OPENMP=ON").stdout
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines[0] == " ".join([
        "cmake", "-S", f"{fake_lammps}/cmake", "-B", str(tmp_path / "b"),
        "-C", f"{PRESETS}/basic.cmake", "-C", f"{PRESETS}/kokkos-cuda.cmake",
        "-C", f"{PRESETS}/ml-iap-python.cmake", "-C", f"{PRESETS}/plugins.cmake",
        "-D", f"Python3_EXECUTABLE={python}", "-D", "Kokkos_ARCH_HOPPER90=ON",
        "-D", "PKG_OPENMP=ON"])
    assert lines[1] == f"cmake --build {tmp_path / 'b'} --parallel 2"
    assert lines[2] == f"cmake --build {tmp_path / 'b'} --target install-python"
    assert lines[3].startswith(f"{python} -c ") and lines[3].endswith("PLUGIN ML-IAP PYTHON KOKKOS")
    assert not (tmp_path / "b").exists()  # nothing ran


def test_dry_run_cpu_only(fake_lammps):
    out = script("--lammps-src", str(fake_lammps), "--no-kokkos", "--no-mliap",
                 "--dry-run").stdout
    configure_line = next(line for line in out.splitlines() if line.startswith("cmake -S"))
    assert "kokkos-cuda" not in configure_line and "ml-iap-python" not in configure_line
    assert "Kokkos_ARCH" not in configure_line and "plugins.cmake" in configure_line


def test_configure_only_runs_the_printed_command(fake_lammps, tmp_path):
    build = tmp_path / "build"
    result = script("--lammps-src", str(fake_lammps), "--gpu-arch", "AMPERE80",
                    "--build-dir", str(build), "--configure-only")
    assert "cmake --build" not in result.stdout
    cache = cmake_cache(build)
    assert cache["Kokkos_ARCH_AMPERE80"] == "ON" and cache["PKG_PYTHON"] == "ON"
    assert cache["Python3_EXECUTABLE"].endswith("python")


@pytest.mark.parametrize(("args", "message"), [
    ((), "--lammps-src DIR is required"),
    (("--lammps-src", "/nonexistent/lammps"), "no such directory"),
    (("--lammps-src", "/tmp", "--dry-run"), "not a LAMMPS source tree"),
    (("--bogus",), "unknown option '--bogus'"),
])
def test_bad_input_fails_early(args, message):
    result = script(*args, check=False)
    assert result.returncode == 2 and message in result.stderr


def test_gpu_arch_auto_without_gpu_says_what_to_do(fake_lammps):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU driver is present; auto-detection would succeed")
    result = script("--lammps-src", str(fake_lammps), "--dry-run", check=False)
    assert result.returncode == 2 and "pass --gpu-arch" in result.stderr
