"""MatterSim (optional extra ``mattersim``): LAMMPS (fix external) vs ASE agreement, as for
every adapter. Skips with the reason when the extra or its weights are not installed."""

from __future__ import annotations

import pytest

mattersim = pytest.importorskip(
    "mattersim", reason="MatterSim is an optional extra: pip install -c constraints.txt "
    "-e '.[mattersim]' (pip resolves mattersim 1.2.3 with torch 2.13.0 kept)")


@pytest.fixture(scope="module")
def potential():
    from potentials.base import PotentialError
    from potentials.registry import get_potential

    pot = get_potential("mattersim-1m")
    try:
        pot.shared_calculator()
    except (PotentialError, OSError, RuntimeError) as exc:
        pytest.skip(f"MatterSim weights not available offline: {exc}")
    return pot


@pytest.mark.slow
def test_lammps_single_point_agrees_with_ase(potential, tmp_path):
    from ase.spacegroup import crystal

    from harness.statics.crosscheck import compare_with_ase

    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.75] * 3 + [90] * 3)
    atoms.rattle(stdev=0.05, seed=3)
    diff = compare_with_ase(potential, atoms, workdir=tmp_path)
    assert diff["energy_per_atom_eV"] < 1e-5, diff
    assert diff["force_max_eV_per_A"] < 1e-4, diff
    assert diff["stress_max_eV_per_A3"] < 1e-5, diff
