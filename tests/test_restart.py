"""Exact continuation: SIGKILL a run at arbitrary steps, re-run the same command, compare.

The kill is a real SIGKILL of the `harness md` process (fault injected through
HARNESS_FAULT_KILL_AT_STEP, checked in the progress callback every few steps). The
continued run must end at exactly the requested step count and its dump and thermo files
must be byte-identical to an uninterrupted run with the same seed (lj-test is deterministic
on CPU, and both runs go through the same chunked run sequence).
"""

import json
import os
import random
import subprocess
import sys

import pytest
from ase.io import write
from ase.spacegroup import crystal

ARGS = ["--potential", "lj-test", "--temperature-K", "300", "--timestep-fs", "2",
        "--steps", "200", "--equilibration-steps", "40", "--dump-every", "10",
        "--thermo-every", "10", "--restart-every", "50", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71] * 3 + [90] * 3).repeat((2, 2, 2))
    path = tmp_path_factory.mktemp("structure") / "POSCAR"
    write(path, atoms, format="vasp")
    return path


def harness_md(structure, out, *, kill_at=None):
    env = dict(os.environ)
    env.pop("HARNESS_FAULT_KILL_AT_STEP", None)
    if kill_at is not None:
        env["HARNESS_FAULT_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "harness.cli", "md", str(structure), *ARGS,
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def reference(structure, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = harness_md(structure, out)
    assert result.returncode == 0, result.stderr
    return out


#: five fixed kill steps (start, inside equilibration, just after restarts, late) and three
#: drawn at random with fixed seeds (printed in the test ids)
KILL_STEPS = [3, 45, 101, 150, 233] + [random.Random(seed).randint(2, 235)
                                      for seed in (11, 22, 33)]


def analyse(run_dir):
    from harness.analyze import run_analyze

    return run_analyze(run_dir=run_dir, out=run_dir / "analysis", plots=False,
                       temperature_K=300.0, seed=1)


@pytest.mark.parametrize("kill_at", KILL_STEPS)
def test_sigkill_then_rerun_is_exact(structure, reference, tmp_path, kill_at):
    out = tmp_path / "run"
    killed = harness_md(structure, out, kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    resumed = harness_md(structure, out)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["last_restart_step"] == 240
    expected_from = max([s for s in (40, 50, 100, 150, 200, 240) if s < kill_at], default=0)
    assert manifest["segments"][-1]["from_step"] == expected_from
    for name in ("traj.lammpstrj", "thermo.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    steps = [int(line) for line in (out / "thermo.csv").read_text().splitlines()[1:]
             for line in [line.split(",")[0]]]
    assert steps == list(range(40, 241, 10))  # the production start (step 40) included
    # the analysis of the stitched run is the analysis of the uninterrupted one
    stitched, uninterrupted = analyse(out), analyse(reference)
    for key in ("D_cm2_per_s", "D_ci95_cm2_per_s", "msd_max_A2", "n_frames", "flags"):
        assert stitched[key] == uninterrupted[key], key


def test_rerun_of_completed_run_does_nothing(structure, reference):
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    again = harness_md(structure, reference)
    assert again.returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == before


@pytest.mark.parametrize("potential", ["mace-tiny-test", "sevennet-0"])
def test_plugin_pair_style_resumes_from_its_restart_file(tmp_path, potential):
    """A restart file names the pair style; for our LAMMPS plugins (pair_style mace, e3gnn)
    the plugin must be loaded before `read_restart`, else LAMMPS stops with "Unrecognized
    pair style" (caught when a killed SevenNet-0 campaign task was resumed). Kill at step 25,
    re-run, and the stitched run equals the uninterrupted one (1 thread: deterministic)."""
    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71] * 3 + [90] * 3)
    structure = tmp_path / "POSCAR"
    write(structure, atoms, format="vasp")
    args = ["--potential", potential, "--route", "native", "--temperature-K", "600",
            "--timestep-fs", "1", "--steps", "40", "--equilibration-steps", "0",
            "--dump-every", "5", "--thermo-every", "5", "--restart-every", "20", "--seed", "3",
            "--quiet"]

    def run(out, kill_at=None):
        env = {k: v for k, v in os.environ.items() if k != "HARNESS_FAULT_KILL_AT_STEP"}
        env["OMP_NUM_THREADS"] = "1"
        if kill_at is not None:
            env["HARNESS_FAULT_KILL_AT_STEP"] = str(kill_at)
        return subprocess.run([sys.executable, "-m", "harness.cli", "md", str(structure), *args,
                               "--out", str(out)], env=env, capture_output=True, text=True,
                              timeout=600, check=False)

    reference = run(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "run"
    killed = run(out, kill_at=25)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["segments"][-1]["from_step"] == 20
    text = (out / "in.from_20.lammps").read_text()
    assert text.index("plugin load") < text.index("read_restart")
    assert text.count("plugin load") == 1
    for name in ("thermo.csv", "traj.lammpstrj"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
