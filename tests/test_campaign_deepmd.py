"""DeePMD as one more potential (potentials/deepmd.py) and as a campaign reference.

The tiny committed model (``potentials/data/deepmd-tiny-LiS.pth``, tools/deepmd_tiny/) is a
frozen PyTorch DeePMD model; the harness evaluates it without deepmd-kit
(``DeePMDTorchScriptCalculator``). Tolerances (float64 model):

* evaluator vs deepmd-kit 3.2.0's ``deepmd.calculator.DP`` (values stored by
  ``tools/deepmd_tiny/make_reference.py`` in ``tests/data/deepmd-tiny-reference.json``):
  energy 1e-9 eV, forces 1e-9 eV/A, stress 1e-10 eV/A^3;
* finite differences of our energy vs our forces and stress: 1e-6;
* LAMMPS ``fix external`` ``run 0`` vs ASE: 1e-10 eV/atom, eV/A, eV/A^3.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms

from potentials.base import PotentialError
from potentials.deepmd import TINY_MODEL_FILE, DeePMDPotential
from potentials.registry import get_potential

ROOT = Path(__file__).resolve().parent.parent
MODEL = TINY_MODEL_FILE
REFERENCE = ROOT / "tests" / "data" / "deepmd-tiny-reference.json"
REFERENCE_CELLS = json.loads(REFERENCE.read_text())["cells"]


def reference_atoms(name: str) -> Atoms:
    cell = REFERENCE_CELLS[name]
    return Atoms(numbers=cell["numbers"], positions=cell["positions"], cell=cell["cell"],
                 pbc=True)


def _deepmd_kit_usable() -> str | None:
    try:
        from deepmd.calculator import DP  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or a torch-ABI RuntimeError
        return f"deepmd-kit not usable here ({type(exc).__name__})"
    return None


@pytest.fixture(scope="module")
def calculator():
    return get_potential(f"deepmd:{MODEL}").ase_calculator()


@pytest.mark.parametrize("name", sorted(REFERENCE_CELLS))
def test_evaluator_matches_deepmd_kit(calculator, name):
    ref = REFERENCE_CELLS[name]
    atoms = reference_atoms(name)
    atoms.calc = calculator
    assert abs(atoms.get_potential_energy() - ref["energy"]) < 1e-9
    assert np.abs(atoms.get_forces() - np.array(ref["forces"])).max() < 1e-9
    assert np.abs(atoms.get_stress(voigt=True) - np.array(ref["stress"])).max() < 1e-10
    # not a comparison of zeros
    assert np.abs(ref["forces"]).max() > 0.1 and np.abs(ref["stress"]).max() > 1e-3


def test_forces_and_stress_are_derivatives_of_the_energy(calculator):
    atoms = reference_atoms("li2s_sheared_triclinic")
    atoms.calc = calculator
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    h = 1e-4
    for i, k in ((0, 0), (3, 1), (7, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        plus.calc = minus.calc = calculator
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert abs(fd - forces[i, k]) < 1e-6
    e = 1e-5
    volume = atoms.get_volume()
    for a, b in ((0, 0), (1, 2), (0, 1)):
        strain = np.zeros((3, 3))
        strain[a, b] = strain[b, a] = e / (2 if a != b else 1)
        energies = []
        for sign in (1, -1):
            x = atoms.copy()
            x.set_cell(atoms.cell.array @ (np.eye(3) + sign * strain), scale_atoms=True)
            x.calc = calculator
            energies.append(x.get_potential_energy())
        fd = (energies[0] - energies[1]) / (2 * e * volume)
        assert abs(fd - stress[a, b]) < 1e-6


def test_lammps_matches_ase(tmp_path):
    from harness.statics.crosscheck import compare_with_ase

    pot = get_potential(f"deepmd:{MODEL}", route="external")
    assert pot.elements == {"Li", "S"}
    atoms = reference_atoms("li2s_sheared_triclinic").repeat((2, 1, 1))
    atoms.rattle(0.05, seed=4)
    diff = compare_with_ase(pot, atoms, workdir=tmp_path / "xc")
    assert diff["energy_per_atom_eV"] < 1e-10 and diff["force_max_eV_per_A"] < 1e-10
    assert diff["stress_max_eV_per_A3"] < 1e-10
    with pytest.raises(PotentialError, match="does not cover"):
        pot.check_elements(["Li", "N"])


def test_auto_route_records_why_native_is_unavailable(tmp_path):
    from harness.md.workflow import run_md
    from harness.md.spec import MDSpec

    spec = MDSpec(structure="Li2S", potential="deepmd-tiny-test", temperature_K=600.0,
                  timestep_fs=1.0, steps=20, supercell_matrix=[2, 1, 1], dump_every=10,
                  thermo_every=5, restart_every=20, seed=3, out=str(tmp_path / "run"))
    manifest = run_md(spec).manifest
    assert manifest["status"] == "completed"
    pot = manifest["potential"]
    assert pot["family"] == "deepmd" and pot["route"] == "external"
    probed = pot["extra"]["route_selection"]["probed"]
    assert probed[0]["route"] == "native" and not probed[0]["available"]
    assert "pair_style deepmd" in probed[0]["detail"]
    assert pot["model_sha256"] and "no deepmd-kit" in pot["extra"]["evaluator"]
    import pandas as pd

    thermo = pd.read_csv(tmp_path / "run" / "thermo.csv")
    assert np.isfinite(thermo["pe_eV"]).all() and len(thermo) >= 4
    # forcing the native route is one clear error
    with pytest.raises(PotentialError, match="route 'native'.*not available.*pair_style deepmd"):
        get_potential("deepmd-tiny-test", route="native").resolve_route()


def test_bad_models_are_clear_errors(tmp_path):
    with pytest.raises(PotentialError, match="frozen model"):
        DeePMDPotential(name="deepmd")
    bad = tmp_path / "model.txt"
    bad.write_text("x")
    with pytest.raises(PotentialError, match="not a frozen DeePMD model"):
        DeePMDPotential(name="deepmd", model_file=bad)
    with pytest.raises(PotentialError, match="route must be one of"):
        DeePMDPotential(name="deepmd", model_file=MODEL, route="gpu")
    with pytest.raises(PotentialError, match="no 'mliap' route"):
        DeePMDPotential(name="deepmd", model_file=MODEL, route="mliap")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(PotentialError, match="not a frozen DeePMD PyTorch model.*dp --pt freeze"):
        get_potential(f"deepmd:{junk}").elements
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(MODEL.read_bytes()[: MODEL.stat().st_size // 2])
    with pytest.raises(PotentialError, match="not a frozen DeePMD PyTorch model"):
        get_potential(f"deepmd:{truncated}").elements


@pytest.mark.skipif(_deepmd_kit_usable() is None, reason="deepmd-kit is installed")
def test_non_pytorch_formats_without_deepmd_kit_are_one_clear_error(tmp_path):
    pb = tmp_path / "graph.pb"
    pb.write_bytes(b"\x00" * 64)
    pot = get_potential(f"deepmd:{pb}")
    with pytest.raises(PotentialError, match="deepmd-kit is not usable.*dp --pt freeze"):
        pot.check_elements(["Li", "S"])
    info = pot.model_info()
    assert info.family == "deepmd" and info.model_sha256 and info.model_file == str(pb)


@pytest.mark.timeout(600)
def test_deepmd_as_the_campaign_reference(tmp_path):
    """A campaign with lj-test and the DeePMD model (trained on lj-test labels) as the
    reference potential: the metrics table compares D(T) against DeePMD."""
    from harness.campaign.tasks import load_campaign
    from harness.campaign.farm import run_campaign
    from harness.campaign.report import write_report

    spec = {
        "name": "deepmd-ref", "seed": 11,
        "structures": [{"name": "Li2S", "file": "Li2S", "md": {"supercell_matrix": [2, 1, 1]}}],
        "potentials": ["lj-test", {"name": "deepmd-tiny-test", "label": "deepmd"}],
        "temperatures_K": [500, 700],
        "md": {"ensemble": "nvt_nose_hoover", "timestep_fs": 2.0, "steps": 200,
               "dump_every": 10, "thermo_every": 10, "restart_every": 100,
               "framework_msd_limit_A2": 100.0, "max_temperature_factor": 5.0},
        "analysis": {"kinisi_n_samples": 100, "kinisi_n_walkers": 16, "kinisi_n_burn": 50,
                     "compute_distinct": False},
        "references": {"reference_potential": "deepmd", "label": "DeePMD"},
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    outcome = run_campaign(load_campaign(path), campaign_dir=tmp_path / "c",
                           show_progress=False)
    assert outcome.total == 4 and outcome.failed == 0
    import pandas as pd

    results = pd.read_parquet(tmp_path / "c" / "results.parquet")
    deepmd_rows = results[results["potential_label"] == "deepmd"]
    assert set(deepmd_rows["route"]) == {"external"} and (deepmd_rows["D_cm2_per_s"] > 0).all()
    metrics = pd.read_csv(tmp_path / "c" / "metrics.csv").set_index("potential_label")
    assert metrics.loc["lj-test", "n_D_ref"] == 2
    assert np.isfinite(metrics.loc["lj-test", "MAE_log10_D_ref"])
    assert "is this potential" in metrics.loc["deepmd", "reference"]
    paths = write_report(tmp_path / "c")
    assert "DeePMD" in Path(paths["report_md"]).read_text()
