"""`harness phonons`: fc2 against the analytic Hessian of a pair potential, reference parity,
fc3 through LAMMPS vs the model's own calculator, Cv limits, and a too-small supercell."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.statics.phonons import PhononSpec, parity, run_phonons
from harness.statics.statics_run import StaticsInputError

A_FCC = 2.0 * 1.28 * math.sqrt(2.0)  # lj-test Li: nearest neighbours at the LJ minimum


@pytest.fixture(scope="module")
def fcc_conventional(tmp_path_factory):
    from ase.build import bulk
    from ase.io import write

    path = tmp_path_factory.mktemp("ph") / "li_fcc_conv.vasp"
    write(path, bulk("Li", "fcc", a=A_FCC, cubic=True), format="vasp")
    return path


def analytic_lj_fc2(atoms) -> np.ndarray:
    """Hessian of the lj-test pair energy: Phi_ij = -sum_R [phi'' nn + phi'/r (1 - nn)]."""
    from matscipy.neighbours import neighbour_list

    from potentials.classical import LJ_CUTOFF_A, lj_parameters

    eps, sig = lj_parameters("Li", "Li")
    i, j, d, D = neighbour_list("ijdD", atoms, LJ_CUTOFF_A)
    s6, s12 = sig ** 6, sig ** 12
    d1 = 4 * eps * (-12 * s12 / d ** 13 + 6 * s6 / d ** 7)
    d2 = 4 * eps * (156 * s12 / d ** 14 - 42 * s6 / d ** 8)
    n = D / d[:, None]
    nn = np.einsum("ka,kb->kab", n, n)
    block = -(d2[:, None, None] * nn + (d1 / d)[:, None, None] * (np.eye(3) - nn))
    fc = np.zeros((len(atoms), len(atoms), 3, 3))
    np.add.at(fc, (i, j), np.where((i == j)[:, None, None], 0.0, block))
    for a in range(len(atoms)):  # acoustic sum rule gives the self term
        fc[a, a] = -fc[a].sum(axis=0) + fc[a, a]
    return fc


@pytest.mark.slow
def test_fc2_equals_analytic_hessian_and_cv_limits(fcc_conventional, tmp_path):
    import phonopy

    from harness.statics.phonons import thermal

    # 2x2x2 (7.2 A < 2 x 6 A): atoms see several images; the analytic Hessian below sums
    # over every image too, so both are the same folded supercell Hessian (and cheap)
    spec = PhononSpec(structure=str(fcc_conventional), potential="lj-test", relax=False,
                      supercell_matrix=[2, 2, 2], allow_small_supercell=True, mesh=[8, 8, 8],
                      out=str(tmp_path / "ph"))
    result = run_phonons(spec)
    s = result.summary
    assert s["fc2_n_displacements"] == 1 and s["fc2_n_atoms_supercell"] == 32
    import h5py

    ph = phonopy.load(tmp_path / "ph" / "phonopy_params.yaml", log_level=0,
                      produce_fc=False)
    with h5py.File(tmp_path / "ph" / "fc2.hdf5") as handle:
        ph.force_constants = handle["fc2"][:]  # what the run wrote
    from ase import Atoms

    sc = Atoms(ph.supercell.symbols, cell=ph.supercell.cell,
               scaled_positions=ph.supercell.scaled_positions, pbc=True)
    exact = analytic_lj_fc2(sc)
    fc = ph.force_constants
    if fc.shape[0] != fc.shape[1]:
        from phonopy.harmonic.force_constants import compact_fc_to_full_fc

        fc = compact_fc_to_full_fc(ph.primitive, fc)
    p = parity(fc, exact)
    assert p["max_abs_error"] < 2e-3 * np.abs(exact).max()  # finite differences, h = 0.01 A
    assert p["r2"] > 0.99999
    # Cv: below the Dulong-Petit limit at 300 K, at it (0.1 %) at 5000 K, per mole of cell
    R = 8.314462618
    assert 0.8 * 3 * R * 4 < s["cv_300K_J_per_K_per_mol"] < 3 * R * 4
    assert s["cv_300K_J_per_K_per_mol_atoms"] == pytest.approx(s["cv_300K_J_per_K_per_mol"] / 4)
    hot = thermal(ph, mesh=[8, 8, 8], temperature_K=5000.0)
    assert hot["cv_per_mol_atoms"] == pytest.approx(3 * R, rel=1e-3)
    assert (tmp_path / "ph" / "phonons.png").stat().st_size > 2000
    assert s["band_structure"] == "plotted"
    manifest = json.loads((tmp_path / "ph" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["potential"]["route"] == "native"
    assert manifest["potential"]["lammps_calls"]["build"] == 1  # one LAMMPS instance


@pytest.mark.slow
def test_reference_parity_against_independent_phonopy_run(fcc_conventional, tmp_path):
    """A reference FORCE_SETS made by phonopy with the adapter's own ASE calculator (no
    LAMMPS): our LAMMPS pipeline on its displacements gives the same fc2 (MAE ~ 0, R^2 = 1);
    a stretched reference lattice gives a clearly non-zero MAE."""
    import phonopy
    from ase.io import read, write

    from potentials.classical import PairwiseLJCalculator

    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    unit = read(fcc_conventional)
    write(ref_dir / "POSCAR-unitcell", unit, format="vasp")
    ph = phonopy.load(unitcell_filename=str(ref_dir / "POSCAR-unitcell"),
                      supercell_matrix=[3, 3, 3], primitive_matrix="auto", produce_fc=False,
                      log_level=0)
    ph.generate_displacements(distance=0.02, is_plusminus=True)
    from ase import Atoms

    forces = []
    for cell in ph.supercells_with_displacements:
        atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                      pbc=True)
        atoms.calc = PairwiseLJCalculator()
        forces.append(atoms.get_forces())
    ph.forces = np.array(forces)
    ph.save(ref_dir / "phonopy_params.yaml")
    ph.produce_force_constants()
    from phonopy.file_IO import write_FORCE_SETS

    write_FORCE_SETS(ph.dataset, filename=str(ref_dir / "FORCE_SETS"))
    (ref_dir / "phonopy_params.yaml").unlink()
    spec = PhononSpec(reference=str(ref_dir), supercell_matrix=[3, 3, 3], potential="lj-test",
                      allow_small_supercell=True, mesh=[6, 6, 6], out=str(tmp_path / "ph"))
    s = run_phonons(spec).summary
    assert s["fc2_displacements_from"] == "reference"
    assert s["fc2_mae_eV_per_A2"] < 1e-7 and s["fc2_r2"] == pytest.approx(1.0, abs=1e-8)  # FORCE_SETS text
    assert s["frequency_mae_THz"] < 1e-3  # acoustic modes at Gamma: sqrt of round-off
    assert s["cv_error_J_per_K_per_mol"] == pytest.approx(0.0, abs=1e-8)
    assert any("fold" in n for n in s["notes"])  # 3x3x3 = 10.9 A < 2 x 6 A: flagged
    on_disk = json.loads((tmp_path / "ph" / "phonons.json").read_text())
    assert on_disk["fc2_mae_eV_per_A2"] == s["fc2_mae_eV_per_A2"]
    # the same displacements on a 2 % larger lattice: the comparison must notice
    stretched = unit.copy()
    stretched.set_cell(unit.cell * 1.02, scale_atoms=True)
    write(ref_dir / "POSCAR-unitcell", stretched, format="vasp")
    s2 = run_phonons(spec.model_copy(update={"out": str(tmp_path / "ph2")})).summary
    assert s2["fc2_mae_eV_per_A2"] > 1e-3 and s2["fc2_r2"] < 0.99


def test_fc3_lammps_equals_own_calculator(tmp_path):
    """fc3 of rocksalt NaCl (2-atom cell, 2x2x2 = 16 atoms, 62 displacements, lj-test)
    through LAMMPS vs through the adapter's own ASE calculator on the same phono3py
    displacements: identical to round-off. (In the 8-atom cubic cell alone, +R and -R
    images of a neighbour are one atom and the folded fc3 cancels to zero by inversion.)"""
    import h5py
    from ase.build import bulk
    from ase.io import write

    path = tmp_path / "nacl.vasp"
    write(path, bulk("NaCl", "rocksalt", a=5.64), format="vasp")
    fc3 = {}
    for backend in ("lammps", "ase"):
        spec = PhononSpec(structure=str(path), potential="lj-test", relax=False, fc3=True,
                          supercell_matrix=[2, 2, 2], allow_small_supercell=True,
                          mesh=[4, 4, 4], backend=backend, out=str(tmp_path / backend))
        s = run_phonons(spec).summary
        assert s["fc3_n_displacements"] > 10
        with h5py.File(tmp_path / backend / "fc3.hdf5") as handle:
            fc3[backend] = handle["fc3"][:]
    assert np.abs(fc3["lammps"]).max() > 0.5
    assert parity(fc3["lammps"], fc3["ase"])["max_abs_error"] < 1e-8


def test_too_small_supercell_refused(fcc_conventional, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    spec = PhononSpec(structure=str(fcc_conventional), potential="lj-test", relax=False,
                      supercell_matrix=[2, 2, 2], out=str(tmp_path / "ph"))
    with pytest.raises(StaticsInputError, match=r"less than 2 x the model cutoff 6 A"):
        run_phonons(spec)
    result = CliRunner().invoke(app, ["phonons", str(fcc_conventional), "--potential", "lj-test",
                                      "--no-relax", "--supercell", "2,2,2", "--out",
                                      str(tmp_path / "cli")])
    assert result.exit_code == 2 and "2 x the model cutoff" in " ".join(result.output.split())
