"""The native plugins on CUDA agree with the CPU (run by benchmarks/gpu_check.sh).

Skipped unless torch sees a CUDA device (the CPU wheel pinned for this project never
does; a GPU host installs a CUDA torch, and the plugins are then rebuilt against it).

* ``pair_style e3gnn`` (SevenNet serial) on CUDA vs the same pair style on the CPU;
* ``pair_style e3gnn/parallel`` on 2 ranks sharing the GPU vs serial ``e3gnn`` on the CPU;
* ``pair_style mace ... device cuda`` (the tiny float64 export) vs ``device cpu``.

Tolerances: SevenNet is float32 (1e-5 relative, as the rank tests); the float64 MACE
export differs only by GPU summation order (1e-9 relative).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device visible to torch (CPU wheel or no GPU)")]

HERE = Path(__file__).resolve().parent


def _helpers():
    """The LAMMPS-in-a-subprocess helpers of tests/potentials/test_sevennet_parallel.py."""
    spec = importlib.util.spec_from_file_location(
        "sevennet_parallel_helpers", HERE / "potentials" / "test_sevennet_parallel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def h():
    return _helpers()


@pytest.fixture(scope="module")
def sevennet(h):
    from potentials.plugins import build_plugins
    from potentials.sevennet import SevenNetPotential

    plugins = build_plugins(names=("e3gnn", "e3gnn_parallel"))
    pot = SevenNetPotential(name="sevennet-0", checkpoint="7net-0")
    model_dir, n = pot.deployed_parallel_model()
    return plugins, {"serial": pot.deployed_model(), "parallel": model_dir, "n_modules": n}


def _on_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_e3gnn_cuda_matches_cpu(h, sevennet, tmp_path, monkeypatch):
    plugins, models = sevennet
    atoms = h.li2s((2, 1, 1))
    gpu = h.run_lammps(tmp_path / "gpu", atoms, plugin=plugins["e3gnn"],
                       pair=h.serial_pair(models), ranks=1)["frames"][0]
    _on_cpu(monkeypatch)
    cpu = h.run_lammps(tmp_path / "cpu", atoms, plugin=plugins["e3gnn"],
                       pair=h.serial_pair(models), ranks=1)["frames"][0]
    diff = h.relative_differences(gpu, cpu)
    assert max(diff.values()) < 1e-5, diff


@pytest.mark.mpi
def test_e3gnn_parallel_two_ranks_on_cuda_match_serial_cpu(h, sevennet, tmp_path, monkeypatch):
    plugins, models = sevennet
    atoms = h.li2s((3, 1, 1))
    run = h.run_lammps(tmp_path / "gpu", atoms, plugin=plugins["e3gnn_parallel"],
                       pair=h.parallel_pair(models), ranks=2)
    assert "device cuda" in run["log"]
    _on_cpu(monkeypatch)
    cpu = h.run_lammps(tmp_path / "cpu", atoms, plugin=plugins["e3gnn"],
                       pair=h.serial_pair(models), ranks=1)["frames"][0]
    diff = h.relative_differences(run["frames"][0], cpu)
    assert max(diff.values()) < 1e-5, diff


def test_mace_plugin_cuda_matches_cpu(h, tmp_path):
    from potentials.mace import TINY_MODEL_FILE
    from potentials.plugins import build_plugins

    plugin = build_plugins(names=("mace",))["mace"]
    atoms = h.li2s((2, 1, 1))
    frames = {}
    for dev in ("cuda", "cpu"):
        frames[dev] = h.run_lammps(
            tmp_path / dev, atoms, plugin=plugin, ranks=1,
            pair=[f"pair_style mace device {dev}",
                  f"pair_coeff * * {TINY_MODEL_FILE} Li S"])["frames"][0]
    diff = h.relative_differences(frames["cuda"], frames["cpu"])
    assert max(diff.values()) < 1e-9, diff
    assert os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""
