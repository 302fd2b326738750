"""MACE: our TorchScript evaluator vs mace-torch, LAMMPS vs ASE, and a short NVT run.

All with the committed tiny Li-P-S-Cl model (``potentials/data/mace-tiny-LiPSCl*``, made
by ``tools/mace/make_tiny_model.sh``); mace-torch is never imported here.

Tolerances (float64 model, so only round-off separates the paths):

* evaluator vs mace-torch ``MACECalculator`` (stored in ``tests/data/mace-tiny-reference.json``):
  energy 1e-8 eV, forces 1e-8 eV/A, stress 1e-10 eV/A^3 (observed ~1e-14, 1e-15, 1e-17);
* finite differences of our energy vs our forces and stress: 1e-6 (central differences,
  step 1e-4 A / 1e-5 strain);
* LAMMPS ``fix external`` ``run 0`` vs the ASE calculator: 1e-12 eV/atom, 1e-11 eV/A,
  1e-12 eV/A^3 (observed 0, 2e-15, 3e-17: LAMMPS gets the same numbers back; the residue is
  atoms remapped into the box and LAMMPS' virial -> pressure -> stress arithmetic).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from potentials.base import PotentialError, sha256_file
from potentials.mace import TINY_MODEL_FILE, MacePotential, sidecar_path
from potentials.registry import get_potential

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "mace-tiny-reference.json"
REFERENCE_CELLS = json.loads(REFERENCE.read_text())["cells"]


def reference_atoms(name: str) -> Atoms:
    cell = REFERENCE_CELLS[name]
    return Atoms(numbers=cell["numbers"], positions=cell["positions"], cell=cell["cell"],
                 pbc=True)


@pytest.fixture(scope="module")
def potential():
    # the fix-external route, forced: `auto` picks the native plugin (test_mace_plugin.py)
    return get_potential(f"mace:{TINY_MODEL_FILE}", route="external")


@pytest.fixture(scope="module")
def calculator(potential):
    return potential.ase_calculator()


# --- evaluator --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REFERENCE_CELLS))
def test_evaluator_matches_mace_torch(calculator, name):
    ref = REFERENCE_CELLS[name]
    atoms = reference_atoms(name)
    atoms.calc = calculator
    assert abs(atoms.get_potential_energy() - ref["energy"]) < 1e-8
    assert np.abs(atoms.get_forces() - np.array(ref["forces"])).max() < 1e-8
    assert np.abs(atoms.get_stress(voigt=True) - np.array(ref["stress"])).max() < 1e-10
    # not a comparison of zeros: the rattled cells have real forces and stress
    assert np.abs(ref["forces"]).max() > 0.1 and np.abs(ref["stress"]).max() > 1e-3


def test_forces_and_stress_are_energy_derivatives(calculator):
    """Known answer independent of mace-torch: F = -dE/dr, stress = dE/d(strain) / V."""
    atoms = reference_atoms("li7s3cl_triclinic")
    atoms.calc = calculator
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)

    def energy(a):
        a = a.copy()
        a.calc = calculator
        return a.get_potential_energy()

    h = 1e-4
    for atom, axis in ((0, 0), (5, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        fd = -(energy(plus) - energy(minus)) / (2 * h)
        assert abs(fd - forces[atom, axis]) < 1e-6
    eps = 1e-5
    for i, j in ((0, 0), (1, 2)):
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = eps / (2 if i != j else 1)
        sides = []
        for sign in (1, -1):
            a = atoms.copy()
            a.set_cell(atoms.cell.array @ (np.eye(3) + sign * strain), scale_atoms=True)
            sides.append(energy(a))
        fd = (sides[0] - sides[1]) / (2 * eps) / atoms.get_volume()
        assert abs(fd - stress[i, j]) < 1e-6


def test_unknown_element_is_rejected(calculator, potential):
    atoms = reference_atoms("licl_strained")
    atoms.numbers[0] = 8
    atoms.calc = calculator
    with pytest.raises(PotentialError, match="O"):
        atoms.get_potential_energy()
    with pytest.raises(PotentialError, match="does not cover element"):
        potential.check_elements(["Li", "O"])


# --- adapter ----------------------------------------------------------------------------
def test_adapter_metadata_and_provenance(potential):
    assert potential.elements == frozenset({"Li", "P", "S", "Cl"})
    assert potential.r_max_A == pytest.approx(4.5)
    info = potential.model_info()
    assert info.family == "mace" and info.route == "external"
    assert info.model_sha256 == sha256_file(TINY_MODEL_FILE)
    assert info.extra["dtype"] == "float64"
    provenance = json.loads(sidecar_path(TINY_MODEL_FILE).read_text())
    assert provenance["files"][TINY_MODEL_FILE.name]["sha256"] == info.model_sha256
    assert provenance["r_max_A"] == potential.r_max_A
    assert info.package_version == provenance["export"]["mace_torch_version"]


def test_lammps_setup_is_fix_external(potential, tmp_path):
    setup = potential.lammps_setup(type_elements=["Li", "P", "S", "Cl"], workdir=tmp_path,
                                   nranks=1)
    assert setup.route == "external" and setup.external_fix_id
    assert any(line.startswith("fix ") and " external pf/callback " in line
               for line in setup.lines)
    with pytest.raises(PotentialError, match="does not cover"):
        potential.lammps_setup(type_elements=["Li", "O"], workdir=tmp_path, nranks=1)


def test_clear_errors_for_unusable_models(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(PotentialError, match="harness export mace --foundation medium-mpa-0"):
        get_potential("mace-mpa-0-medium")
    pickle = tmp_path / "my.model"
    pickle.write_bytes(b"not read")
    with pytest.raises(PotentialError, match="harness export mace --model"):
        get_potential(f"mace:{pickle}")
    junk = tmp_path / "junk-lammps.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(PotentialError, match="not a TorchScript file"):
        get_potential(f"mace:{junk}").elements
    with pytest.raises(PotentialError, match="route must be one of"):
        MacePotential(name="mace", route="fast", model_file=TINY_MODEL_FILE)


def test_foundation_name_resolves_to_cached_export(tmp_path, monkeypatch):
    from potentials.mace import foundation_export_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = foundation_export_path("medium-mpa-0")
    assert target.parent == tmp_path / "iontransport-harness" / "mace"
    target.parent.mkdir(parents=True)
    target.symlink_to(TINY_MODEL_FILE)
    assert get_potential("mace-mpa-0-medium").model_file == TINY_MODEL_FILE.resolve()


# --- LAMMPS -----------------------------------------------------------------------------
def test_lammps_matches_ase(potential, tmp_path):
    from harness.statics.crosscheck import compare_with_ase

    diff = compare_with_ase(potential, reference_atoms("li7s3cl_triclinic"), workdir=tmp_path)
    assert diff["energy_per_atom_eV"] < 1e-12, diff
    assert diff["force_max_eV_per_A"] < 1e-11, diff
    assert diff["stress_max_eV_per_A3"] < 1e-12, diff


def test_short_nvt_run(tmp_path):
    from ase.io import write

    from harness.md.workflow import run_md
    from harness.md.spec import MDSpec

    structure = tmp_path / "Li7S3Cl.extxyz"
    write(structure, reference_atoms("li7s3cl_triclinic"), format="extxyz")
    spec = MDSpec(structure=str(structure), potential=f"mace:{TINY_MODEL_FILE}",
                  route="external", temperature_K=600.0, timestep_fs=1.0, steps=20,
                  ensemble="nvt_nose_hoover", dump_every=10, thermo_every=5, restart_every=20,
                  seed=5, out=str(tmp_path / "run"))
    result = run_md(spec)
    manifest = result.manifest
    assert manifest["status"] == "completed"
    assert manifest["potential"]["family"] == "mace"
    assert manifest["potential"]["model_sha256"] == sha256_file(TINY_MODEL_FILE)
    thermo = np.genfromtxt(result.run_dir / "thermo.csv", delimiter=",", names=True)
    assert thermo["step"][-1] == 20
    assert np.all(np.isfinite(thermo["pe_eV"])) and np.ptp(thermo["pe_eV"]) > 0
    assert np.all(thermo["temperature_K"] > 0)


# --- export -----------------------------------------------------------------------------
TINY_PICKLE = TINY_MODEL_FILE.with_name("mace-tiny-LiPSCl.model")


def test_export_checks_arguments_before_running_anything(tmp_path):
    from harness.export import export_mace

    with pytest.raises(PotentialError, match="exactly one"):
        export_mace(out=tmp_path / "x-lammps.pt")
    with pytest.raises(PotentialError, match="unknown MACE foundation model"):
        export_mace(foundation="huge", out=tmp_path / "x-lammps.pt")
    with pytest.raises(PotentialError, match="must end in .pt"):
        export_mace(model=TINY_PICKLE, out=tmp_path / "x.model")


def test_export_without_mace_env_says_how_to_create_it(tmp_path):
    from harness.export import export_mace

    with pytest.raises(PotentialError, match=r"(?s)python3 -m venv .*mace-torch==0\.3\.16"):
        export_mace(model=TINY_PICKLE, out=tmp_path / "x-lammps.pt",
                    python=tmp_path / "no-env" / "bin" / "python")


@pytest.mark.slow
def test_export_reproduces_committed_model(tmp_path, calculator):
    """Runs the real export subprocess in the mace-torch environment (tens of seconds)."""
    from harness.export import export_mace, mace_python
    from potentials.mace import MaceTorchScriptCalculator

    try:
        mace_python()
    except PotentialError:
        pytest.skip("no mace-torch export environment (tools/mace/setup_export_env.sh)")
    out = export_mace(model=TINY_PICKLE, out=tmp_path / "tiny-lammps.pt")
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["source_sha256"] == sha256_file(TINY_PICKLE)
    assert meta["atomic_numbers"] == [3, 15, 16, 17] and meta["dtype"] == "float64"
    atoms = reference_atoms("li6p2s8_2x1x1")
    atoms.calc = MaceTorchScriptCalculator(model=out)
    fresh = atoms.get_forces()
    atoms.calc = calculator
    assert np.abs(fresh - atoms.get_forces()).max() < 1e-12
