"""Fault injection for the watchdog: forced blow-ups and melting are caught early, the
run stops, its files are kept and the failure kind is recorded in the manifest."""

import json

import numpy as np
import pytest
from ase.io import write
from ase.spacegroup import crystal

from harness.md.workflow import MDFailure, run_md
from harness.md.spec import MDSpec
from harness.md.watchdog import classify_lammps_error


@pytest.fixture()
def li2s(tmp_path):
    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71] * 3 + [90] * 3)
    path = tmp_path / "POSCAR"
    write(path, atoms, format="vasp")
    return path


def spec(li2s, out, **changes):
    values = dict(structure=str(li2s), potential="lj-test", temperature_K=300.0, timestep_fs=1.0,
                  steps=2000, dump_every=10, thermo_every=10, restart_every=500, seed=3,
                  supercell_matrix=[2, 2, 2], out=str(out))
    values.update(changes)
    return MDSpec(**values)


def test_huge_timestep_blow_up_is_caught(li2s, tmp_path):
    out = tmp_path / "blowup"
    # 10 fs with light Li in a stiff repulsive wall: energy explodes within a few steps
    with pytest.raises(MDFailure) as info:
        run_md(spec(li2s, out, timestep_fs=10.0, temperature_K=3000.0, steps=2000))
    failure = info.value.failure
    assert failure["kind"] in {"temperature_runaway", "nan", "atoms_too_close", "lost_atoms"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failure"] == failure
    # stopped inside the first restart chunk (500 steps), whichever layer caught it: the
    # watchdog (step recorded) or LAMMPS itself (lost atoms, step unknown to the harness)
    thermo = np.atleast_1d(np.genfromtxt(out / "thermo.csv", delimiter=",", names=True))
    assert thermo["step"][-1] < 500
    assert failure["step"] is not None and failure["step"] < 500 or \
        failure["kind"] == "lost_atoms" and "Lost atoms" in failure["detail"]
    assert manifest.get("last_restart_step") is None  # no chunk completed
    assert (out / "log.lammps").exists() and (out / "in.lammps").exists()


def test_runaway_caught_within_check_interval(li2s, tmp_path):
    """The unrelaxed cell heats up under a weak thermostat; with the bound at 1.5 x target
    the watchdog must stop the run within one check interval (here 10 steps)."""
    out = tmp_path / "hot"
    with pytest.raises(MDFailure) as info:
        run_md(spec(li2s, out, temperature_K=100.0, max_temperature_factor=1.5, tdamp_fs=1e5,
                    steps=1000))
    failure = info.value.failure
    assert failure["kind"] == "temperature_runaway"
    thermo = np.genfromtxt(out / "thermo.csv", delimiter=",", names=True)
    hot = thermo["step"][thermo["temperature_K"] > 150.0]
    assert hot.size > 0, "the thermo file shows the temperature that tripped the watchdog"
    assert hot[0] <= failure["step"] <= hot[0] + 10
    assert np.all(thermo["temperature_K"][thermo["step"] < hot[0]] <= 150.0)
    assert thermo["step"][-1] <= failure["step"]  # nothing ran on after the stop
    assert failure["step"] < 1000


def test_framework_melting_detected(li2s, tmp_path):
    out = tmp_path / "melt"
    # epsilon = 0.05 eV: at 4000 K the LJ crystal melts at once
    with pytest.raises(MDFailure) as info:
        run_md(spec(li2s, out, temperature_K=4000.0, max_temperature_factor=50.0,
                    framework_msd_limit_A2=2.0, steps=3000, timestep_fs=0.5))
    assert info.value.failure["kind"] == "framework_melting"
    frames = (out / "traj.lammpstrj").read_text().count("ITEM: TIMESTEP")
    assert frames >= 1  # what was written before the stop is kept


def test_healthy_run_passes_and_is_not_slowed_into_failure(li2s, tmp_path):
    result = run_md(spec(li2s, tmp_path / "ok", steps=200))
    assert result.manifest["status"] == "completed" and "failure" not in result.manifest


@pytest.mark.parametrize("message, kind", [
    ("ERROR: Lost atoms: original 96 current 95", "lost_atoms"),
    ("ERROR: Out of range atoms - cannot compute PPPM", "lost_atoms"),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", "out_of_memory"),
    ("ERROR: Unknown pair style", "lammps_error"),
])
def test_error_classification(message, kind):
    assert classify_lammps_error(message) == kind
