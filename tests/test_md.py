"""`harness md` end to end with real LAMMPS and the classical potential (seconds)."""

import json

import numpy as np
import pytest
from ase.io import write
from ase.spacegroup import crystal

from harness.md.workflow import RunDirectoryError, run_md
from harness.md.spec import MDSpec


@pytest.fixture()
def li2s_poscar(tmp_path):
    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71] * 3 + [90] * 3)
    path = tmp_path / "POSCAR"
    write(path, atoms, format="vasp")
    return path


def spec_for(structure, out, **changes):
    base = dict(structure=str(structure), potential="lj-test", temperature_K=300.0,
                timestep_fs=1.0, steps=40, equilibration_steps=10, dump_every=10,
                thermo_every=5, restart_every=20, seed=11, out=str(out),
                supercell_matrix=[2, 2, 2])
    base.update(changes)
    return MDSpec(**base)


def read_dump_frames(path):
    text = path.read_text().split("ITEM: TIMESTEP\n")[1:]
    steps = [int(block.split("\n", 1)[0]) for block in text]
    return steps, text


def test_md_run_directory_contract(tmp_path, li2s_poscar):
    calls = []
    result = run_md(spec_for(li2s_poscar, tmp_path / "run"),
                    progress=lambda step, total: calls.append((step, total)))
    run = result.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["type_map"] == {"1": "Li", "2": "S"}
    assert manifest["structure"]["n_atoms"] == 96
    assert manifest["potential"]["route"] == "native"
    assert manifest["versions"]["lammps"] == "2025.7.22.4.0"
    assert manifest["lammps"]["version"] >= 20250722
    assert manifest["started"] <= manifest["finished"]
    for key in ("data", "input", "log", "thermo", "dump"):
        assert (run / manifest["outputs"][key]).is_file(), key
    # chunks end at 20, 40 and 50: the last two restart files are kept
    assert sorted(p.name for p in run.glob("restart.*")) == ["restart.40", "restart.50"]
    assert manifest["last_restart_step"] == 50
    # production only: frames at steps 10, 20, ..., 50 (equilibration 0..10 not dumped)
    steps, _ = read_dump_frames(run / "traj.lammpstrj")
    assert steps == [10, 20, 30, 40, 50]
    thermo = np.genfromtxt(run / "thermo.csv", delimiter=",", names=True)
    # the production's initial state (step 10) first, then every 5 steps, no duplicates
    assert list(thermo["step"]) == [10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert np.all(np.isfinite(thermo["pe_eV"])) and np.all(thermo["temperature_K"] > 0)
    assert "velocity        all create 300.0 11" in (run / "in.lammps").read_text()
    assert calls and calls[-1][0] == 50 and calls[-1][1] == 50
    assert manifest["timing"]["ms_per_step"] > 0


def test_run_directory_files_get_the_umask_mode(tmp_path, li2s_poscar):
    """No output is private (mkstemp's 0600): group members of a shared cluster read them."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        run = run_md(spec_for(li2s_poscar, tmp_path / "run")).run_dir
    finally:
        os.umask(old)
    files = [p for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert {"structure.data", "manifest.json", "thermo.csv", "in.lammps"} <= {p.name for p in files}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(mode == 0o644 for mode in modes.values()), modes


@pytest.mark.parametrize("ensemble", ["nvt_berendsen", "nvt_langevin", "npt_iso", "npt_aniso",
                                      "npt_berendsen", "nve"])
def test_every_ensemble_runs(tmp_path, li2s_poscar, ensemble):
    """Each ensemble's fixes carry the requested targets and act on the box as they should
    (the statistics they produce are checked in tests/test_physics_truth.py)."""
    result = run_md(spec_for(li2s_poscar, tmp_path / ensemble, ensemble=ensemble,
                             minimize=ensemble == "npt_iso", pressure_bar=250.0))
    thermo = np.genfromtxt(result.run_dir / "thermo.csv", delimiter=",", names=True)
    text = (result.run_dir / "in.lammps").read_text()
    fixes = [line.split() for line in text.splitlines() if line.startswith("fix ")
             and line.split()[1].startswith("harness_") and line.split()[3] in
             ("nvt", "npt", "langevin", "temp/berendsen", "press/berendsen")]
    if ensemble != "nve":
        # every thermostat targets 300 K from start to end (tdamp 0.1 ps)
        assert fixes and all("300.0" in f for f in fixes if f[3] != "press/berendsen")
    if ensemble.startswith("npt"):
        assert any(f.count("250.0") == 2 for f in fixes)  # start and end pressure
        assert np.ptp(thermo["volume_A3"]) > 0  # the box breathes
    else:
        assert np.ptp(thermo["volume_A3"]) == 0
    drift = result.manifest["energy_drift"]
    assert (drift["eV_per_atom_per_ps"] is not None) == (ensemble == "nve")
    if ensemble == "nve":  # 40 steps of 1 fs at 300 K: etotal constant to 1e-4 eV/atom
        assert np.ptp(thermo["etotal_eV"]) / 96 < 1e-4
        assert np.ptp(thermo["ke_eV"]) / 96 > 1e-3  # while energy moves between KE and PE


def test_external_route_reproduces_native_trajectory(tmp_path, li2s_poscar):
    """The fix-external bridge gives the same dynamics as LAMMPS' own pair style."""
    native = run_md(spec_for(li2s_poscar, tmp_path / "native", route="native"))
    external = run_md(spec_for(li2s_poscar, tmp_path / "external", route="external"))
    _, a = read_dump_frames(native.run_dir / "traj.lammpstrj")
    _, b = read_dump_frames(external.run_dir / "traj.lammpstrj")
    xa = np.array([list(map(float, line.split()[2:5])) for line in a[-1].splitlines()[8:]])
    xb = np.array([list(map(float, line.split()[2:5])) for line in b[-1].splitlines()[8:]])
    assert np.abs(xa - xb).max() < 1e-6
    ta = np.genfromtxt(native.run_dir / "thermo.csv", delimiter=",", names=True)
    tb = np.genfromtxt(external.run_dir / "thermo.csv", delimiter=",", names=True)
    np.testing.assert_allclose(ta["pe_eV"], tb["pe_eV"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(ta["press_bar"], tb["press_bar"], rtol=1e-7, atol=1e-3)


def test_existing_run_directory_is_not_touched(tmp_path, li2s_poscar):
    out = tmp_path / "run"
    run_md(spec_for(li2s_poscar, out))
    before = (out / "manifest.json").read_text()
    with pytest.raises(RunDirectoryError, match="--force"):
        run_md(spec_for(li2s_poscar, out, seed=99))
    assert (out / "manifest.json").read_text() == before
