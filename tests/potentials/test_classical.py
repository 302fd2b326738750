"""LAMMPS-vs-ASE agreement for the classical adapter, on both LAMMPS routes.

The native route is LAMMPS' own ``lj/cut``; the external route evaluates our ASE
calculator through ``fix external``. Both must reproduce the ASE calculator to
double-precision round-off (tolerance 1e-12 in eV/atom, eV/A and eV/A^3).
"""

import numpy as np
import pytest

from harness.statics.crosscheck import compare_with_ase
from potentials.registry import get_potential


def rattled_li2s():
    from ase.spacegroup import crystal

    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71, 5.71, 5.71, 90, 90, 90])
    atoms = atoms.repeat((2, 1, 1))
    atoms.rattle(stdev=0.05, seed=3)
    # shear the cell a little so triclinic handling is exercised
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 1] -= 0.3
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


@pytest.mark.parametrize("route", ["native", "external"])
def test_lj_lammps_matches_ase(tmp_path, route):
    potential = get_potential("lj-test", route=route)
    diff = compare_with_ase(potential, rattled_li2s(), workdir=tmp_path)
    assert diff["energy_per_atom_eV"] < 1e-12, diff
    assert diff["force_max_eV_per_A"] < 1e-12, diff
    assert diff["stress_max_eV_per_A3"] < 1e-12, diff


def test_lj_forces_are_not_trivial(tmp_path):
    """Guard against a comparison of zeros with zeros."""
    from harness.statics.crosscheck import lammps_single_point

    result, _ = lammps_single_point(get_potential("lj-test"), rattled_li2s(), workdir=tmp_path)
    assert np.abs(result.forces_eV_per_A).max() > 1e-2
    assert np.abs(result.stress_eV_per_A3).max() > 1e-4
