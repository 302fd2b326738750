"""Native ``pair_style mace`` plugin (cmake/plugins/mace) against the ASE evaluator.

The same TorchScript export is evaluated by LAMMPS through our C++ pair style and by
:class:`potentials.mace.MaceTorchScriptCalculator` (which mace-torch's own calculator
reproduces to 1e-14, see test_mace.py). The cell is the committed rattled triclinic
Li7S3Cl cell, repeated 2x2x1 (44 atoms, 11.4 A x 11.4 A x 5.7 A: a triclinic box thinner
than 2 x r_max in z, so ghosts include several images of the same atom).

Tolerances. float64 export: only summation order separates the paths; required energy
1e-10 eV/atom, forces 1e-9 eV/A, stress 1e-10 eV/A^3 (observed ~1e-15, ~1e-14, ~1e-17).
float32 export (same weights, made with ``harness.export.export_mace(dtype="float32")``):
the plugin forms edge vectors from float32 positions like the evaluator but sums in a
different order; required 1e-6 eV/atom, 1e-5 eV/A, 1e-7 eV/A^3 (observed ~1e-8, ~1e-6,
~1e-8).

Both graph modes are checked on one rank (``no_domain_decomposition``: local atoms
with periodic shifts, the serial default; ``domain_decomposition``: local + ghost nodes,
ghost forces reverse-communicated) and ``mpirun -n 2`` against serial.

The plugin is built once into the plugin cache ($IONTRANSPORT_CACHE or
~/.cache/iontransport-harness): a build takes minutes and the cache is the feature
under test. Everything else is written under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("lammps")

from potentials.base import PotentialError  # noqa: E402
from potentials.mace import TINY_MODEL_FILE, MacePotential, MaceTorchScriptCalculator  # noqa: E402
from potentials.plugins import PluginBuildError, build_plugins  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
FLOAT32_MODEL = DATA / "mace-tiny-LiPSCl-float32-lammps.pt"
REFERENCE_CELLS = json.loads((DATA / "mace-tiny-reference.json").read_text())["cells"]
MPIRUN = Path(sys.executable).parent / "mpirun"

TOL64 = {"energy_per_atom_eV": 1e-10, "force_max_eV_per_A": 1e-9, "stress_max_eV_per_A3": 1e-10}
TOL32 = {"energy_per_atom_eV": 1e-6, "force_max_eV_per_A": 1e-5, "stress_max_eV_per_A3": 1e-7}


def test_cell() -> Atoms:
    ref = REFERENCE_CELLS["li7s3cl_triclinic"]
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"],
                  pbc=True).repeat((2, 2, 1))
    atoms.rattle(stdev=0.03, seed=11)
    return atoms


test_cell.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def mace_plugin() -> Path:
    try:
        return build_plugins(names=("mace",))["mace"]
    except PluginBuildError as exc:
        if exc.step == "check tools":
            pytest.skip(f"cannot build LAMMPS plugins here: {exc}")
        raise


# -- a LAMMPS single point, written as a script so the same code runs under mpirun ----------
POINT_SCRIPT = r'''
import json, sys
import numpy as np
from mpi4py import MPI
from lammps import lammps

plugin, data, model, style_args, out, log = sys.argv[1:7]
elements = sys.argv[7:]
comm = MPI.COMM_WORLD
lmp = lammps(cmdargs=["-log", log, "-screen", "none", "-nocite"], comm=comm)
for line in ["units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
             "boundary p p p", f"read_data {data}", f"plugin load {plugin}",
             f"pair_style mace {style_args}".strip(),
             f"pair_coeff * * {model} {' '.join(elements)}",
             "compute pv all pressure NULL virial",
             "compute pea all pe/atom", "compute sa all stress/atom NULL",
             "thermo_style custom step pe c_pv[*]", "run 0"]:
    lmp.command(line)
pe = lmp.get_thermo("pe")
pv = [lmp.extract_compute("pv", 0, 1)[k] for k in range(6)]
nlocal = lmp.extract_global("nlocal")
tags = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal].tolist()
f = np.asarray(lmp.numpy.extract_atom("f"))[:nlocal].tolist()
eatom = np.asarray(lmp.numpy.extract_compute("pea", 1, 1))[:nlocal].tolist()
satom = np.asarray(lmp.numpy.extract_compute("sa", 1, 2))[:nlocal].tolist()
result = {"pe": pe, "pv": pv, "nktv2p": lmp.extract_global("nktv2p"),
          "nprocs": comm.Get_size()}
parts = comm.gather((tags, f, eatom, satom), root=0)
lmp.close()
if comm.Get_rank() == 0:
    result["tags"] = sum((p[0] for p in parts), [])
    result["forces"] = sum((p[1] for p in parts), [])
    result["eatom"] = sum((p[2] for p in parts), [])
    result["satom"] = sum((p[3] for p in parts), [])
    with open(out, "w") as handle:
        json.dump(result, handle)
'''


def lammps_point(plugin: Path, atoms: Atoms, workdir: Path, *, model: Path = TINY_MODEL_FILE,
                 style_args: str = "", ranks: int = 1) -> tuple[dict, Atoms]:
    """``run 0`` in a fresh process (``mpirun -n ranks`` when ranks > 1)."""
    from harness.statics.crosscheck import lammps_frame_atoms

    workdir.mkdir(parents=True, exist_ok=True)
    frame, type_elements, data = lammps_frame_atoms(atoms, workdir=workdir)
    script = workdir / "point.py"
    script.write_text(POINT_SCRIPT)
    out = workdir / "point.json"
    cmd = [sys.executable, str(script), str(plugin), str(data), str(model), style_args,
           str(out), str(workdir / "log.lammps"), *type_elements]
    if ranks > 1:
        cmd = [str(MPIRUN), "-n", str(ranks), *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, (result.stderr[-3000:], (workdir / "log.lammps").read_text()
                                    if (workdir / "log.lammps").exists() else "")
    raw = json.loads(out.read_text())
    n = len(frame)
    order = np.argsort(raw["tags"])
    assert np.array_equal(np.asarray(raw["tags"])[order], np.arange(1, n + 1))
    pxx, pyy, pzz, pxy, pxz, pyz = raw["pv"]
    point = {
        "energy": raw["pe"],
        "forces": np.asarray(raw["forces"])[order],
        "stress": -np.array([pxx, pyy, pzz, pyz, pxz, pxy]) / raw["nktv2p"],
        "eatom": np.asarray(raw["eatom"])[order],
        # stress/atom is -(per-atom virial) in bar*A^3: xx yy zz xy xz yz
        "vatom": -np.asarray(raw["satom"])[order] / raw["nktv2p"],
        "virial": np.array(raw["pv"]) * frame.get_volume() / raw["nktv2p"],
        "nprocs": raw["nprocs"],
        "log": (workdir / "log.lammps").read_text(),
    }
    return point, frame


def ase_point(frame: Atoms, model: Path) -> dict:
    atoms = frame.copy()
    atoms.calc = MaceTorchScriptCalculator(model=model)
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
            "stress": atoms.get_stress(voigt=True),
            "energies": atoms.get_potential_energies()}


def differences(a: dict, b: dict, n_atoms: int) -> dict:
    return {"energy_per_atom_eV": abs(a["energy"] - b["energy"]) / n_atoms,
            "force_max_eV_per_A": float(np.abs(a["forces"] - b["forces"]).max()),
            "stress_max_eV_per_A3": float(np.abs(a["stress"] - b["stress"]).max())}


def assert_within(diff: dict, tol: dict) -> None:
    for key, limit in tol.items():
        assert diff[key] < limit, (key, diff)


@pytest.fixture(scope="module")
def reference64(tmp_path_factory):
    from harness.statics.crosscheck import lammps_frame_atoms

    frame, _, _ = lammps_frame_atoms(test_cell(), workdir=tmp_path_factory.mktemp("ref"))
    return frame, ase_point(frame, TINY_MODEL_FILE)


# -- agreement with ASE -------------------------------------------------------------------
@pytest.mark.parametrize("style_args", ["", "no_domain_decomposition", "domain_decomposition"])
def test_float64_matches_ase(mace_plugin, reference64, tmp_path, style_args):
    frame_ref, ref = reference64
    point, frame = lammps_point(mace_plugin, test_cell(), tmp_path, style_args=style_args)
    np.testing.assert_allclose(frame.positions, frame_ref.positions, atol=1e-12)
    diff = differences(point, ref, len(frame))
    print(style_args or "default", diff)
    assert_within(diff, TOL64)
    # not a comparison of zeros: rattled triclinic cell with real forces and stress
    assert np.abs(ref["forces"]).max() > 0.1 and np.abs(ref["stress"]).max() > 1e-3
    expected_mode = "domain_decomposition" if style_args == "domain_decomposition" \
        else "no_domain_decomposition"
    assert f"pair_style mace: {expected_mode} mode" in point["log"]
    # per-atom energies are the model's node energies; per-atom virials sum to the virial
    np.testing.assert_allclose(point["eatom"], ref["energies"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(point["vatom"].sum(axis=0), point["virial"], rtol=0, atol=1e-9)
    assert np.abs(point["vatom"]).max() > 1e-3


def test_float32_export_matches_ase(mace_plugin, tmp_path):
    point, frame = lammps_point(mace_plugin, test_cell(), tmp_path, model=FLOAT32_MODEL)
    ref = ase_point(frame, FLOAT32_MODEL)
    diff = differences(point, ref, len(frame))
    print("float32", diff)
    assert_within(diff, TOL32)
    assert "float32" in point["log"]


@pytest.mark.mpi
@pytest.mark.skipif(not MPIRUN.exists(), reason="mpich wheel's mpirun not in venv")
def test_two_ranks_match_serial(mace_plugin, reference64, tmp_path):
    """Domain decomposition over 2 ranks: ghost nodes, ghost forces reverse-communicated,
    each rank's virial from its own edges."""
    _, ref = reference64
    serial, frame = lammps_point(mace_plugin, test_cell(), tmp_path / "serial")
    parallel, _ = lammps_point(mace_plugin, test_cell(), tmp_path / "mpi", ranks=2)
    assert parallel["nprocs"] == 2
    assert "pair_style mace: domain_decomposition mode" in parallel["log"]
    diff = differences(parallel, serial, len(frame))
    print("2 ranks vs serial", diff)
    assert_within(diff, TOL64)
    assert_within(differences(parallel, ref, len(frame)), TOL64)
    np.testing.assert_allclose(parallel["eatom"], serial["eatom"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(parallel["vatom"].sum(axis=0), serial["virial"], rtol=0,
                               atol=1e-9)


# -- errors and robustness ---------------------------------------------------------------
def _lammps(plugin: Path, data: Path, log: str = "none"):
    from mpi4py import MPI  # noqa: F401  (initialises MPI before liblammps loads)
    from lammps import lammps

    lmp = lammps(cmdargs=["-log", log, "-screen", "none", "-nocite"])
    for line in ["units metal", "atom_style atomic", "atom_modify map array",
                 "boundary p p p", f"read_data {data}", f"plugin load {plugin}"]:
        lmp.command(line)
    return lmp


def test_runs_without_log_file_and_names_bad_input(mace_plugin, tmp_path):
    from harness.statics.crosscheck import lammps_frame_atoms

    _, type_elements, data = lammps_frame_atoms(test_cell(), workdir=tmp_path)
    lmp = _lammps(mace_plugin, data)  # -log none -screen none: logging must not crash
    try:
        lmp.command("pair_style mace")
        lmp.command(f"pair_coeff * * {TINY_MODEL_FILE} {' '.join(type_elements)}")
        lmp.command("run 0")
        pe = lmp.get_thermo("pe")
        assert np.isfinite(pe)
        with pytest.raises(Exception, match="does not cover O"):
            lmp.command(f"pair_coeff * * {TINY_MODEL_FILE} {' '.join(type_elements[:-1])} O")
        # a failed pair_coeff changes nothing: the next run uses the last valid model and map
        lmp.command("run 0")
        assert lmp.get_thermo("pe") == pe
        with pytest.raises(Exception, match="one per atom type"):
            lmp.command(f"pair_coeff * * {TINY_MODEL_FILE} Li")
        with pytest.raises(Exception, match="unknown argument 'fast'"):
            lmp.command("pair_style mace fast")
        junk = tmp_path / "junk.pt"
        junk.write_bytes(b"not torchscript")
        lmp.command("pair_style mace")
        with pytest.raises(Exception, match="cannot load TorchScript file"):
            lmp.command(f"pair_coeff * * {junk} {' '.join(type_elements)}")
    finally:
        lmp.close()


# -- through the adapter and the harness -----------------------------------------------------
def test_adapter_native_route_matches_ase(mace_plugin, tmp_path):
    from harness.statics.crosscheck import compare_with_ase

    potential = MacePotential(name="mace-tiny", route="native", model_file=TINY_MODEL_FILE)
    setup = potential.lammps_setup(type_elements=["Li", "S", "Cl"], workdir=tmp_path, nranks=1)
    assert setup.route == "native" and setup.max_ranks is None
    assert setup.lines[0] == f"plugin load {mace_plugin}"
    assert setup.lines[1] == "pair_style mace"
    diff = compare_with_ase(potential, test_cell(), workdir=tmp_path)
    assert_within(diff, TOL64)
    info = potential.model_info()
    assert info.route == "native" and info.extra["plugin_file"] == str(mace_plugin)
    assert info.extra["route_selection"]["route"] == "native"


def test_forced_unavailable_route_is_an_error_with_the_reason():
    potential = MacePotential(name="mace-tiny", route="mliap", model_file=TINY_MODEL_FILE)
    with pytest.raises(PotentialError, match="route 'mliap' .* not available: .*(PYTHON|ML-IAP)"):
        potential.lammps_setup(type_elements=["Li"], workdir=Path("."), nranks=1)


@pytest.mark.slow
def test_md_auto_route_is_native_and_recorded(mace_plugin, tmp_path):
    """harness md with route auto picks the plugin and says so in the manifest; 40 steps of
    NVE at the default 2 fs conserve the energy (drift recorded in the manifest)."""
    from ase.io import write

    from harness.md.workflow import run_md
    from harness.md.spec import MDSpec

    structure = tmp_path / "cell.extxyz"
    write(structure, test_cell(), format="extxyz")
    spec = MDSpec(structure=str(structure), potential=f"mace:{TINY_MODEL_FILE}",
                  temperature_K=600.0, steps=40, ensemble="nve", dump_every=10,
                  thermo_every=2, restart_every=40, seed=5, out=str(tmp_path / "run"))
    manifest = run_md(spec).manifest
    assert manifest["status"] == "completed"
    assert manifest["potential"]["route"] == "native"
    assert manifest["potential"]["extra"]["route_selection"]["requested"] == "auto"
    assert any(line.startswith("pair_style mace") for line in manifest["potential"]["lammps_lines"])
    thermo = np.genfromtxt(tmp_path / "run" / "thermo.csv", delimiter=",", names=True)
    assert thermo["step"][0] == 0 and thermo["step"][-1] == 40
    n = len(test_cell())
    # energy moves between kinetic and potential while the total stays put
    assert np.ptp(thermo["ke_eV"]) / n > 5e-3
    assert np.ptp(thermo["etotal_eV"]) / n < 2e-4, np.ptp(thermo["etotal_eV"]) / n
    drift = manifest["energy_drift"]["eV_per_atom_per_ps"]
    assert abs(drift) < 2e-3, drift  # eV/atom/ps over 0.08 ps


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.skipif(not MPIRUN.exists(), reason="mpich wheel's mpirun not in venv")
def test_md_two_ranks_match_serial(mace_plugin, tmp_path):
    """`mpirun -n 2 harness md --route native`: 30 NVT steps with neighbour-list rebuilds
    and atoms changing owner follow the serial trajectory (round-off growth only)."""
    from ase.io import write

    structure = tmp_path / "cell.extxyz"
    write(structure, test_cell(), format="extxyz")
    args = ["md", str(structure), "--potential", f"mace:{TINY_MODEL_FILE}", "--route", "native",
            "--temperature-K", "900", "--timestep-fs", "2", "--steps", "30", "--dump-every", "10",
            "--thermo-every", "5", "--seed", "3", "--quiet"]
    thermo = {}
    for ranks in (1, 2):
        out = tmp_path / f"run{ranks}"
        cmd = [sys.executable, "-m", "harness.cli", *args, "--out", str(out)]
        if ranks > 1:
            cmd = [str(MPIRUN), "-n", str(ranks), *cmd]
        # split even this 44-atom cell (harness/md/layout.py folds small cells otherwise)
        env = {**os.environ, "IONTRANSPORT_MIN_ATOMS_PER_RANK": "0"}
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                                env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["lammps"]["ranks"] == ranks and manifest["potential"]["route"] == "native"
        # several ranks: the plugin's parallel mode (test_mace_parallel.py), recorded
        assert manifest["potential"]["extra"]["pair_mace_mode"]["mode"] == (
            "parallel" if ranks > 1 else "no_domain_decomposition")
        thermo[ranks] = np.genfromtxt(out / "thermo.csv", delimiter=",", names=True)
    np.testing.assert_allclose(thermo[2]["pe_eV"], thermo[1]["pe_eV"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(thermo[2]["temperature_K"], thermo[1]["temperature_K"], rtol=1e-8)
    np.testing.assert_allclose(thermo[2]["press_bar"], thermo[1]["press_bar"], rtol=1e-7,
                               atol=1e-3)
    assert np.ptp(thermo[1]["pe_eV"]) > 1e-3  # the atoms really moved
