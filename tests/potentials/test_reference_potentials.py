"""Published reference potentials: snap-li3n (native LAMMPS) and the MTPs (motep, fix external).

Each is checked against an evaluator that does not share its LAMMPS route:

* snap-li3n: LAMMPS ``pair_style hybrid/overlay coul/long + snap`` with Ewald vs
  :class:`potentials.snap.SnapEwaldCalculator` (bispectrum from ``compute sna/atom``, the linear
  model summed in numpy from our parse of the coefficient file, Coulomb from pymatgen's
  EwaldSummation); plus the published known answer -3.89724 eV/atom for the 4x4x3 alpha-Li3N
  supercell (../shared/data/reference-potentials/README.md, ``make.py check``).
* MTPs: the LAMMPS ``fix external`` route vs motep's C engine called directly, and motep's C
  engine vs its pure-numpy engine and vs central finite differences.

and each runs a short NVT through ``harness md``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.md.spec import MDSpec
from harness.md.workflow import run_md
from harness.statics.crosscheck import ase_single_point, compare_with_ase, lammps_single_point
from potentials.base import PotentialError
from potentials.registry import get_potential

OBELIX = Path(__file__).resolve().parents[3] / "shared" / "data" / "obelix"
LI7P3S11_CIF = OBELIX / "mdp.cif"


def _mtp_available(name):
    try:
        get_potential(name)
    except PotentialError as exc:
        return str(exc)
    return None


def li3n(matrix=(2, 2, 2), rattle=0.05):
    from harness.structures import load_structure, make_supercell

    atoms = make_supercell(load_structure("Li3N"), matrix=list(matrix))
    if rattle:
        atoms.rattle(rattle, seed=1)
    return atoms


def li3ycl6_approximant():
    """A 30-atom Li3YCl6 test cell (Li9Y3Cl18), NOT the refined crystal structure.

    Built from the published structural facts of trigonal Li3YCl6 (Bohnsack et al., Z. Anorg.
    Allg. Chem. 623, 1067 (1997); Asano et al., Adv. Mater. 30, 1803075 (2018)): an hcp Cl
    sublattice with a = 11.2/3 A, c = 6.04 A, cations in 2/3 of the octahedral holes. Here a
    3x3x1 hcp cell (18 Cl, 18 holes) gets 3 Y spread over both layers and 9 Li in the holes
    farthest from Y. Good enough to exercise an MTP away from its minimum.
    """
    from ase import Atoms

    a, c = 11.2 / 3, 6.04
    cell = np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]])
    cl, holes = [], []
    for i in range(3):
        for j in range(3):
            cl += [(i, j, 0.0), (i + 1 / 3, j + 2 / 3, 0.5)]
            holes += [(i + 2 / 3, j + 1 / 3, 0.25), (i + 2 / 3, j + 1 / 3, 0.75)]
    super_cell = cell * [[3], [3], [1]]
    frac = lambda pts: np.array(pts) / [3, 3, 1]  # noqa: E731
    holes = frac(holes)
    y_index = [0, 7, 14]  # (0,0,1/4), (1,1,3/4), (2,1,1/4): no two Y share a neighbour hole
    others = [k for k in range(len(holes)) if k not in y_index]
    probe = Atoms("X" * len(holes), scaled_positions=holes, cell=super_cell, pbc=True)
    dist = probe.get_all_distances(mic=True)
    li_index = sorted(others, key=lambda k: -dist[k, y_index].min())[:9]
    symbols = ["Cl"] * len(cl) + ["Y"] * 3 + ["Li"] * 9
    positions = np.vstack([frac(cl), holes[y_index], holes[li_index]])
    return Atoms(symbols, scaled_positions=positions, cell=super_cell, pbc=True)


# --- snap-li3n ------------------------------------------------------------------------------
def test_snap_li3n_known_energy_of_the_published_check():
    """4x4x3 alpha-Li3N at the experimental cell: -3.89724 eV/atom (the shared README's check)."""
    from harness.structures import load_structure, make_supercell

    atoms = make_supercell(load_structure("Li3N"), min_length_A=10.0)
    assert len(atoms) == 192  # the supercell rule: perpendicular widths >= 10 A -> 4x4x3
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result, _ = lammps_single_point(get_potential("snap-li3n"), atoms, workdir=tmp)
    assert result.energy_eV / len(atoms) == pytest.approx(-3.89724, abs=2e-5)


def test_snap_li3n_lammps_matches_independent_evaluator(tmp_path):
    potential = get_potential("snap-li3n")
    lmp, frame = lammps_single_point(potential, li3n(), workdir=tmp_path)
    calc = potential.ase_calculator()
    ref = ase_single_point(calc, frame)
    n = len(frame)
    # the two parts are both substantial, so neither a dropped Coulomb term nor a wrong
    # coefficient block can hide
    assert calc.results["snap_eV"] / n == pytest.approx(-2.94, abs=0.05)
    assert calc.results["coulomb_eV"] / n == pytest.approx(-0.94, abs=0.05)
    assert abs(lmp.energy_eV - ref.energy_eV) / n < 5e-5
    assert np.abs(lmp.forces_eV_per_A - ref.forces_eV_per_A).max() < 2e-3
    assert np.abs(lmp.forces_eV_per_A).max() > 0.5  # rattled: forces are not trivial
    assert np.abs(lmp.stress_eV_per_A3 - ref.stress_eV_per_A3).max() < 5e-5
    assert np.abs(lmp.stress_eV_per_A3).max() > 1e-3


def test_snap_evaluator_forces_are_minus_energy_gradient():
    """Fixes the sign/layout convention of compute snad/atom used by SnapEwaldCalculator."""
    from potentials.snap import SNAP_MODELS, SnapEwaldCalculator

    atoms = li3n(matrix=(1, 1, 2), rattle=0.08)
    calc = SnapEwaldCalculator(SNAP_MODELS["li3n"])
    _, forces, _ = calc.energy_and_forces(atoms)
    h = 1e-4
    for atom, axis in [(0, 0), (1, 2), (3, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(calc.energy_and_forces(moved, forces=False)[0])
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h),
                                                   abs=2e-4)


def test_snap_li3n_refuses_a_charged_cell_and_other_routes():
    potential = get_potential("snap-li3n")
    with pytest.raises(PotentialError, match="net charge"):
        potential.check_elements(["Li", "Li", "N"])
    with pytest.raises(PotentialError, match="does not cover"):
        potential.check_elements(["Li", "S"])
    with pytest.raises(PotentialError, match="native"):
        get_potential("snap-li3n", route="external")


def test_snap_li3n_user_file_path(tmp_path):
    """snap-li3n:/path/X.snapcoeff with an upstream parameter file (diagonalstyle 3 dropped)."""
    src = Path(__file__).resolve().parents[2] / "potentials" / "data" / "snap-li3n"
    (tmp_path / "M.snapcoeff").write_text((src / "Li3N.snapcoeff").read_text())
    (tmp_path / "M.snapparam").write_text((src / "Li3N.snapparam").read_text())
    potential = get_potential(f"snap-li3n:{tmp_path / 'M.snapcoeff'}")
    setup = potential.lammps_setup(type_elements=["Li", "N"], workdir=tmp_path / "w", nranks=1)
    derived = tmp_path / "w" / "M.lammps.snapparam"
    assert str(derived) in setup.lines[-1]
    assert "diagonalstyle" not in derived.read_text()
    assert setup.type_charges == (0.239, -0.717) and setup.kspace == ("ewald", 1e-6)
    (tmp_path / "M.snapparam").unlink()
    with pytest.raises(PotentialError, match="no SNAP parameter file"):
        get_potential(f"snap-li3n:{tmp_path / 'M.snapcoeff'}")


def snap_spec(out, **changes):
    base = dict(structure="Li3N", potential="snap-li3n", temperature_K=800.0, timestep_fs=2.0,
                steps=40, equilibration_steps=0, dump_every=10, thermo_every=5,
                restart_every=20, seed=3, out=str(out), supercell_matrix=[2, 2, 2])
    base.update(changes)
    return MDSpec(**base)


def test_snap_li3n_short_nvt(tmp_path):
    result = run_md(snap_spec(tmp_path / "run"))
    run = result.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    text = (run / "in.lammps").read_text()
    assert "fix             harness_q all property/atom q ghost yes" in text
    assert "set             type 1 charge 0.239" in text
    assert "set             type 2 charge -0.717" in text
    assert "kspace_style    ewald 1e-06" in text
    assert manifest["potential"]["extra"]["charges_e"] == {"Li": 0.239, "N": -0.717}
    assert manifest["potential"]["model_sha256"].startswith("dca44e45")
    rows = np.loadtxt(run / "thermo.csv", delimiter=",", skiprows=1)
    assert rows[-1, 0] == 40
    pe_per_atom = rows[:, 3] / 32
    # a warm crystal near the -3.88 eV/atom minimum (without Coulomb it would be ~ -2.9)
    assert np.all((pe_per_atom > -3.95) & (pe_per_atom < -3.7))
    assert 200 < rows[-1, 2] < 1600


@pytest.mark.slow
def test_snap_li3n_sigkill_continuation_is_exact(tmp_path):
    """The charges and kspace are set again after read_restart: a killed run continues exactly."""
    from ase.io import write

    structure = tmp_path / "POSCAR"
    write(structure, li3n(rattle=0), format="vasp")
    args = [str(structure), "--potential", "snap-li3n", "--temperature-K", "800", "--timestep-fs", "2",
            "--steps", "40", "--dump-every", "10", "--thermo-every", "5", "--restart-every", "20",
            "--seed", "3", "--quiet"]

    def harness_md(out, kill_at=None):
        env = dict(os.environ)
        env.pop("HARNESS_FAULT_KILL_AT_STEP", None)
        if kill_at is not None:
            env["HARNESS_FAULT_KILL_AT_STEP"] = str(kill_at)
        return subprocess.run([sys.executable, "-m", "harness.cli", "md", *args, "--out", str(out)],
                              env=env, capture_output=True, text=True, timeout=300, check=False)

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert harness_md(whole).returncode == 0
    assert harness_md(cut, kill_at=25).returncode != 0
    rerun = harness_md(cut)
    assert rerun.returncode == 0, rerun.stderr
    resumed = (cut / "in.from_20.lammps").read_text()
    assert resumed.index("read_restart") < resumed.index("set             type 1 charge 0.239")
    assert "kspace_style    ewald 1e-06" in resumed
    # Ewald/coul-long sums are re-set up after read_restart: equal to round-off (1e-10
    # relative), not bit for bit as for the pair-only potentials in tests/test_restart.py
    a = np.loadtxt(cut / "thermo.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(whole / "thermo.csv", delimiter=",", skiprows=1)
    assert a.shape == b.shape and a[-1, 0] == 40
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)
    from ase.io import read

    frames_a = read(cut / "traj.lammpstrj", index=":", format="lammps-dump-text")
    frames_b = read(whole / "traj.lammpstrj", index=":", format="lammps-dump-text")
    assert len(frames_a) == len(frames_b) == 5
    for fa, fb in zip(frames_a, frames_b):
        np.testing.assert_allclose(fa.positions, fb.positions, atol=1e-7)


# --- MTPs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def li7p3s11():
    if not LI7P3S11_CIF.is_file():
        pytest.skip(f"OBELiX Li7P3S11 CIF not present ({LI7P3S11_CIF}); see ../shared/data/obelix")
    from harness.structures import load_structure

    return load_structure(str(LI7P3S11_CIF))


def _skip_without(name):
    reason = _mtp_available(name)
    if reason:
        pytest.skip(f"{name} unavailable: {reason}")


@pytest.mark.parametrize("name", ["mtp-li7p3s11", "mtp-li3ycl6"])
def test_mtp_lammps_external_matches_motep(tmp_path, name, li7p3s11):
    _skip_without(name)
    atoms = (li7p3s11 if name == "mtp-li7p3s11" else li3ycl6_approximant()).copy()
    atoms.rattle(0.03, seed=2)
    potential = get_potential(name)
    diff = compare_with_ase(potential, atoms, workdir=tmp_path)
    assert diff["energy_per_atom_eV"] < 1e-10, diff
    assert diff["force_max_eV_per_A"] < 1e-9, diff
    assert diff["stress_max_eV_per_A3"] < 1e-10, diff


@pytest.mark.slow
def test_mtp_c_engine_matches_numpy_engine():
    """motep's C engine (used in MD) against its pure-numpy implementation (30 atoms)."""
    _skip_without("mtp-li3ycl6")
    from motep.calculator import MTP

    atoms = li3ycl6_approximant()
    atoms.rattle(0.03, seed=4)
    potential = get_potential("mtp-li3ycl6")
    fast, slow = atoms.copy(), atoms.copy()
    fast.calc = MTP(potential.data, engine="cext")
    slow.calc = MTP(potential.data, engine="numpy")
    assert fast.get_potential_energy() == pytest.approx(slow.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(fast.get_forces(), slow.get_forces(), atol=1e-7)
    np.testing.assert_allclose(fast.get_stress(), slow.get_stress(), atol=1e-8)
    assert np.abs(fast.get_forces()).max() > 0.1


@pytest.mark.parametrize("name", ["mtp-li7p3s11", "mtp-li3ycl6"])
def test_mtp_forces_are_minus_energy_gradient(name, li7p3s11):
    _skip_without(name)
    from motep.calculator import MTP

    atoms = (li7p3s11 if name == "mtp-li7p3s11" else li3ycl6_approximant()).copy()
    atoms.rattle(0.03, seed=4)
    potential = get_potential(name)
    fast = atoms.copy()
    fast.calc = MTP(potential.data, engine="cext")
    h, forces = 1e-4, fast.get_forces()
    for atom in (0, len(atoms) - 1):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, 1] += sign * h
            moved.calc = MTP(potential.data, engine="cext")
            energies.append(moved.get_potential_energy())
        assert forces[atom, 1] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-4)


def test_mtp_li7p3s11_published_energy(li7p3s11):
    """The shared README's check: -4.157 eV/atom for the OBELiX cell with PBE.PBE."""
    _skip_without("mtp-li7p3s11")
    atoms = li7p3s11.copy()
    atoms.calc = get_potential("mtp-li7p3s11").ase_calculator()
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-4.157, abs=1e-3)


def test_mtp_species_order_matters(li7p3s11):
    """A wrong type order (S <-> P) changes the energy: the mapping is really exercised."""
    _skip_without("mtp-li7p3s11")
    from motep.calculator import MTP
    from potentials.mtp import load_mtp_data

    potential = get_potential("mtp-li7p3s11")
    swapped = load_mtp_data(potential.model_file, ("Li", "S", "P"))
    a, b = li7p3s11.copy(), li7p3s11.copy()
    a.calc, b.calc = MTP(potential.data), MTP(swapped)
    assert abs(a.get_potential_energy() - b.get_potential_energy()) / len(a) > 0.1


def test_mtp_routes_and_missing_file_messages(tmp_path):
    _skip_without("mtp-li3ycl6")
    with pytest.raises(PotentialError, match="MLIP"):
        get_potential("mtp-li3ycl6", route="native")
    with pytest.raises(PotentialError, match="model file not found"):
        get_potential(f"mtp-li3ycl6:{tmp_path / 'absent.mtp'}")
    bad = tmp_path / "bad.mtp"
    bad.write_text("not an mtp\n")
    with pytest.raises(PotentialError, match="not a readable MLIP"):
        get_potential(f"mtp-li3ycl6:{bad}")
    with pytest.raises(PotentialError, match="does not cover"):
        get_potential("mtp-li3ycl6").check_elements(["Li", "S"])


@pytest.mark.parametrize("name", ["mtp-li7p3s11", "mtp-li3ycl6"])
def test_mtp_short_nvt(tmp_path, name, li7p3s11):
    _skip_without(name)
    from ase.io import write

    atoms = li7p3s11 if name == "mtp-li7p3s11" else li3ycl6_approximant()
    path = tmp_path / "POSCAR"
    write(path, atoms, format="vasp")
    spec = MDSpec(structure=str(path), potential=name, temperature_K=500.0, timestep_fs=1.0,
                  steps=20, equilibration_steps=0, dump_every=10, thermo_every=5,
                  restart_every=20, seed=5, out=str(tmp_path / "run"), minimize=True,
                  minimize_max_iterations=20)
    result = run_md(spec)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["potential"]["route"] == "external"
    assert manifest["potential"]["package"] == "motep"
    assert manifest["potential"]["extra"]["species_order"][0] == "Li"
    rows = np.loadtxt(result.run_dir / "thermo.csv", delimiter=",", skiprows=1)
    assert rows[-1, 0] >= 20 and np.all(np.isfinite(rows))
    assert np.all(rows[:, 3] / len(atoms) < -3.0)  # bound crystal, not an exploded cell


@pytest.mark.mpi
@pytest.mark.slow
def test_snap_li3n_two_ranks_match_serial(tmp_path):
    """Domain decomposition with charges on ghost atoms (property/atom q ghost yes) + Ewald."""
    mpirun = Path(sys.executable).parent / "mpirun"
    if not mpirun.exists():
        pytest.skip("mpich wheel's mpirun not in the venv")
    from ase.io import write

    structure = tmp_path / "POSCAR"
    write(structure, li3n(matrix=(3, 3, 2), rattle=0), format="vasp")
    args = ["-m", "harness.cli", "md", str(structure), "--potential", "snap-li3n",
            "--temperature-K", "800", "--timestep-fs", "2", "--steps", "20", "--thermo-every",
            "5", "--dump-every", "10", "--seed", "3", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_FAULT_KILL_AT_STEP"}
    env["IONTRANSPORT_MIN_ATOMS_PER_RANK"] = "0"  # split even this small cell (harness/md/layout.py)
    serial = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "serial")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert serial.returncode == 0, serial.stderr
    parallel = subprocess.run([str(mpirun), "-n", "2", sys.executable, *args, "--out",
                               str(tmp_path / "mpi")], env=env, capture_output=True, text=True,
                              timeout=300)
    assert parallel.returncode == 0, parallel.stderr
    manifest = json.loads((tmp_path / "mpi" / "manifest.json").read_text())
    assert manifest["lammps"]["ranks"] == 2
    a = np.loadtxt(tmp_path / "serial" / "thermo.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(tmp_path / "mpi" / "thermo.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("changes, message", [
    (dict(type_charges=(0.239,)), "one charge per type"),
    (dict(type_charges=(0.239, float("nan"))), "charge of type 2"),
    (dict(kspace_style="ewald", kspace_accuracy=1e-6), "needs per-type charges"),
    (dict(type_charges=(0.239, -0.717), kspace_style="msm", kspace_accuracy=1e-6), "unknown kspace_style"),
    (dict(type_charges=(0.239, -0.717), kspace_style="ewald", kspace_accuracy=0.5), "below 1e-2"),
    (dict(type_charges=(0.239, -0.717), kspace_style="ewald", kspace_accuracy=None), "kspace_accuracy"),
    (dict(kspace_style=None, kspace_accuracy=1e-6), "without kspace_style"),
])
def test_template_refuses_bad_charge_and_kspace_values(changes, message):
    from dataclasses import replace

    from harness.md.templating import TemplateValueError, render

    base = _context_with_charges()
    with pytest.raises(TemplateValueError, match=message):
        render("md.lammps.j2", replace(base, **{"type_charges": (), **changes}))


def _context_with_charges():
    from harness.md.templating import MDTemplateContext, plan_chunks

    return MDTemplateContext(
        ensemble="nvt_nose_hoover", data_file="/run/structure.data", type_elements=("Li", "N"),
        potential_name="snap-li3n", potential_route="native",
        potential_lines=("pair_style hybrid/overlay coul/long 10.0 snap",),
        neighbor_skin_A=1.0, timestep_ps=0.002, thermo_every=10, minimize=False,
        minimize_ftol_eV_per_A=0.05, minimize_max_iterations=500, temperature_K=800.0, seed=1,
        tdamp_ps=0.1, pressure_bar=1.0, pdamp_ps=1.0, barostat_modulus_bar=3.0e5,
        triclinic=True, chunks=plan_chunks(equilibration_steps=0, production_steps=100,
                                           restart_every=50),
        thermo_file="/run/thermo.csv", dump_file="/run/traj.lammpstrj", dump_every=10,
        dump_coordinates="wrapped_images", restart_tmp="/run/restart.tmp", resume_file=None,
        resume_step=None, progress_every=10, progress_fix_id="harness_progress", watchdog=True,
        type_charges=(0.239, -0.717), kspace_style="ewald", kspace_accuracy=1e-6)


def test_template_renders_charges_before_the_pair_lines_and_kspace_after():
    from harness.md.templating import render

    text = render("md.lammps.j2", _context_with_charges())
    assert (text.index("read_data") < text.index("property/atom q ghost yes")
            < text.index("set             type 2 charge -0.717")
            < text.index("pair_style hybrid/overlay") < text.index("kspace_style    ewald 1e-06")
            < text.index("#@harness attach-potential"))
