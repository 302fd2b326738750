"""Ordering disordered structures (harness/ordering.py, `harness order`, the ordering: block).

Independent checks: the symmetry-distinct classes are compared with a brute-force
enumeration grouped by pymatgen's StructureMatcher; the Ewald energies with pymatgen's
EwaldSummation of each ordered cell; split-site exclusion with the distances in the cells.
"""

import itertools
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.md.spec import OrderingSpec
from harness.ordering import OrderingError, OrderingWarning, order_structure

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "structures"
ANION_MIXED = DATA / "Li6PS5Cl-anion-mixed.cif"   # S/Cl 50:50 on 4a and on 4d, Li ordered
LINACL = DATA / "LiNaCl-mixed.cif"                 # Li/Na 50:50 on the rock-salt cation site
JOC = ROOT.parent / "shared" / "data" / "obelix" / "joc.cif"   # Li3PS4, S occupancies 0.97-0.99


def _pmg(atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def _brute_force_classes(path, matrix, *, labels):
    """Every 50:50 arrangement on the sites with the given CIF labels, one Wyckoff set at a
    time, grouped by StructureMatcher (independent of harness.ordering)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parent = CifParser(path).parse_structures(primitive=False)[0]
    parent.add_site_property("cif_label", [site.label for site in parent])
    parent.make_supercell(matrix)
    sets = [[i for i, s in enumerate(parent) if s.properties["cif_label"] == lab]
            for lab in labels]
    parent.remove_site_property("cif_label")
    options = [list(itertools.combinations(idx, len(idx) // 2)) for idx in sets]
    structures = []
    for combo in itertools.product(*options):
        s = parent.copy()
        for idx, chosen in zip(sets, combo):
            a, b = sorted(el.symbol for el in parent[idx[0]].species)
            for i in idx:
                s.replace(i, a if i in chosen else b)
        structures.append(s)
    matcher = StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)
    return len(structures), len(matcher.group_structures(structures)), matcher


@pytest.mark.parametrize("path, matrix, labels, formula", [
    (ANION_MIXED, [1, 1, 1], ["X4a_S", "X4d_Cl"], "Cl4Li24P4S20"),
    (LINACL, [2, 1, 1], ["M1"], "Cl8Li4Na4"),
])
def test_orderings_exact_stoichiometry_and_symmetry_distinct(path, matrix, labels, formula):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrderingWarning)  # 50:50 needs no rounding
        probe = order_structure(path, OrderingSpec(n=1, supercell_matrix=matrix))
    n_distinct = probe.info["n_distinct"]
    result = order_structure(path, OrderingSpec(n=n_distinct, supercell_matrix=matrix))
    assert result.info["method"] == "enumerate"
    n_all, n_classes, matcher = _brute_force_classes(path, matrix, labels=labels)
    assert result.info["n_configurations"] == n_all
    assert n_distinct == n_classes           # same classes as StructureMatcher's grouping
    structures = [_pmg(c.atoms) for c in result.candidates]
    for cand in result.candidates:
        assert cand.atoms.get_chemical_formula() == formula
    for a, b in itertools.combinations(structures, 2):
        assert not matcher.fit(a, b)
    energies = [c.ewald_eV for c in result.candidates]
    assert energies == sorted(energies)
    with pytest.raises(OrderingError, match=f"only {n_distinct} symmetry-distinct"):
        order_structure(path, OrderingSpec(n=n_distinct + 1, supercell_matrix=matrix))


def test_ewald_energies_equal_pymatgen_ewald_of_each_cell():
    from pymatgen.analysis.ewald import EwaldSummation

    # the Li arrangements of the argyrodite (Li+ on split 48h sites, S2-, Cl-, P5+); in
    # LiNaCl every ordering has the same Ewald energy (Li+ and Na+ carry the same charge)
    result = order_structure("Li6PS5Cl-disordered", OrderingSpec(n=6, n_samples=40, seed=1))
    oxi = {"Li": 1, "P": 5, "S": -2, "Cl": -1}
    assert result.info["oxidation_states"] == oxi  # guessed by pymatgen
    direct = []
    for cand in result.candidates:
        s = _pmg(cand.atoms)
        s.add_oxidation_state_by_element(oxi)
        direct.append(EwaldSummation(s).total_energy)
    assert np.allclose([c.ewald_eV for c in result.candidates], direct, atol=2e-3, rtol=0)
    assert list(np.argsort(direct, kind="stable")) == list(range(len(direct)))
    assert direct[-1] - direct[0] > 0.05  # the ranking is about something


def test_charged_cell_energy_includes_the_background():
    """A rounded cell that stays charged (charge_neutral off): the quadratic-form energy
    plus the background term still equals EwaldSummation of the charged cell."""
    from pymatgen.analysis.ewald import EwaldSummation

    with pytest.warns(OrderingWarning, match="carries charge"):
        result = order_structure(JOC, OrderingSpec(n=1, supercell_matrix=[2, 2, 2],
                                                   charge_neutral=False))
    cand = result.candidates[0]
    assert result.info["charge_e"] == pytest.approx(2.0)
    s = _pmg(cand.atoms)
    s.add_oxidation_state_by_element(result.info["oxidation_states"])
    assert cand.ewald_eV == pytest.approx(EwaldSummation(s).total_energy, abs=2e-3)


def test_rounding_rule_and_charge_neutral_correction():
    # joc (OBELiX Li3PS4) in 2x2x2: the S3 group holds 32 x 0.97 = 31.04 S. Largest
    # remainder gives 31 (charge +2); the neutral correction puts the 32nd back.
    with pytest.warns(OrderingWarning, match=r"S3 S: 31.04 -> 32"):
        with pytest.raises(OrderingError, match="one ordering only"):
            order_structure(JOC, OrderingSpec(n=1, supercell_matrix=[2, 2, 2]))
    with pytest.warns(OrderingWarning, match=r"S3 S: 31.04 -> 31"):
        result = order_structure(JOC, OrderingSpec(n=1, supercell_matrix=[2, 2, 2],
                                                   charge_neutral=False))
    counts = {g["label"]: g["counts"] for g in result.info["parent_occupancies"]}
    assert counts["S3"] == {"S": 31} and counts["S4"] == {"S": 16} and counts["S5"] == {"S": 16}
    assert result.candidates[0].atoms.get_chemical_formula() == "Li48P16S63"


def test_li6ps5cl_split_sites_never_both_occupied():
    spec = OrderingSpec(n=5, n_samples=60, seed=3)
    result = order_structure("Li6PS5Cl-disordered", spec)
    assert result.info["method"] == "sample"
    for cand in result.candidates:
        atoms = cand.atoms
        assert atoms.get_chemical_formula() == "Cl4Li24P4S20"
        li = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Li"]
        d = atoms.get_all_distances(mic=True)[np.ix_(li, li)]
        np.fill_diagonal(d, np.inf)
        assert d.min() > 2.0      # the 1.89 A split pairs are excluded
    # without the exclusion rule the split pairs do appear: the check above can fail
    loose = order_structure("Li6PS5Cl-disordered", OrderingSpec(n=5, n_samples=60, seed=3,
                                                                exclusion_distance_A=0.0))
    shortest = []
    for cand in loose.candidates:
        li = [i for i, s in enumerate(cand.atoms.get_chemical_symbols()) if s == "Li"]
        d = cand.atoms.get_all_distances(mic=True)[np.ix_(li, li)]
        np.fill_diagonal(d, np.inf)
        shortest.append(d.min())
    assert min(shortest) < 1.95


def test_bad_inputs_are_clear_errors():
    with pytest.raises(OrderingError, match="already ordered"):
        order_structure("Li3N", OrderingSpec(n=1))
    with pytest.raises(OrderingError, match="at most 24 fit"):  # 36 Li on 24 split pairs
        from pymatgen.io.cif import CifParser

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = CifParser(ROOT / "inputs" / "structures" / "Li6PS5Cl-disordered.cif") \
                .parse_structures(primitive=False)[0]
        for i, site in enumerate(s):
            if "Li" in [el.symbol for el in site.species]:
                s.replace(i, {"Li": 0.75})
        order_structure(s, OrderingSpec(n=1, oxidation_states={"Li": 1, "P": 5, "S": -2,
                                                               "Cl": -1}))
    with pytest.raises(ValueError, match="index 2 must be below ordering.n 2"):
        OrderingSpec(n=2, index=2)


def test_harness_order_cli_writes_cifs_and_manifest(tmp_path):
    out = tmp_path / "ord"
    cmd = [sys.executable, "-m", "harness.cli", "order", str(LINACL), "--supercell-matrix",
           "2,1,1", "--n", "3", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "enumerate" and manifest["n_distinct"] == 8
    assert [o["rank"] for o in manifest["orderings"]] == [0, 1, 2]
    assert manifest["oxidation_states"] == {"Li": 1.0, "Na": 1.0, "Cl": -1.0}
    from ase.io import read

    for row in manifest["orderings"]:
        a, b = read(out / row["cif"]), read(out / row["poscar"])
        assert a.get_chemical_formula() == b.get_chemical_formula() == "Cl8Li4Na4"
    bad = subprocess.run(cmd[:-4] + ["--n", "9", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "only 8 symmetry-distinct" in " ".join((bad.stdout + bad.stderr).split())


def test_md_config_with_ordering_block(tmp_path):
    spec = {"structure": str(ANION_MIXED), "potential": "lj-test", "temperature_K": 300,
            "steps": 10, "dump_every": 5, "thermo_every": 5, "restart_every": 10,
            "timestep_fs": 1.0, "out": str(tmp_path / "run"),
            "ordering": {"n": 2, "index": 1, "supercell_matrix": [1, 1, 1]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = subprocess.run([sys.executable, "-m", "harness.cli", "md", "--config", str(path),
                          "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    ordering = manifest["structure"]["ordering"]
    assert ordering["index"] == 1 and ordering["n"] == 2 and ordering["method"] == "enumerate"
    energies = ordering["all_energies_eV"]
    assert ordering["selected"]["ewald_eV"] == energies[1] and energies[0] <= energies[1]
    assert manifest["structure"]["formula"] == "Cl4Li24P4S20"
    assert manifest["spec"]["ordering"]["index"] == 1
    # an ordering block on an ordered structure: exit 2, one line
    spec.update(structure="Li2S", out=str(tmp_path / "run2"), ordering={"n": 1})
    path.write_text(yaml.safe_dump(spec))
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "md", "--config", str(path),
                          "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "already ordered" in " ".join((bad.stdout + bad.stderr).split())


@pytest.mark.slow
def test_campaign_pools_orderings_obelix_joc(tmp_path):
    """OBELiX joc (disordered Li3PS4) and the anion-mixed argyrodite through ordering:
    blocks in one campaign; the argyrodite's two orderings become replicas, pooled."""
    import pandas as pd

    assert JOC.is_file(), f"shared OBELiX data missing: {JOC}"
    campaign = {
        "name": "ordering-test", "potentials": ["lj-test"], "temperatures_K": [300],
        "md": {"steps": 40, "dump_every": 2, "thermo_every": 10, "restart_every": 40,
               "timestep_fs": 1.0},
        "analysis": {"compute_distinct": False, "kinisi_n_samples": 100,
                     "kinisi_n_walkers": 8, "kinisi_n_burn": 50},
        "structures": [
            {"name": "joc", "file": str(JOC), "reference_id": "joc",
             "md": {"ordering": {"n": 1, "supercell_matrix": [2, 2, 2],
                                 "charge_neutral": False}}},
            {"name": "LPSC-mixed", "file": str(ANION_MIXED),
             "md": {"ordering": {"n": 2}}},
        ]}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign))
    out = tmp_path / "campaign"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "bench", str(path), "--out",
                          str(out), "--quiet"], capture_output=True, text=True, timeout=900,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tasks = {t["task_id"]: t for t in json.loads((out / "tasks.json").read_text())}
    assert sorted(tasks) == ["LPSC-mixed__lj-test__T300__r0", "LPSC-mixed__lj-test__T300__r1",
                             "joc__lj-test__T300__r0"]
    results = pd.read_parquet(out / "results.parquet").set_index("task_id")
    assert (results["status"] == "completed").all(), results[["status", "error"]]
    assert results.loc["LPSC-mixed__lj-test__T300__r1", "ordering_index"] == 1
    assert results.loc["joc__lj-test__T300__r0", "formula"] == "Li48P16S63"
    for tid in tasks:
        manifest = json.loads((out / "tasks" / tid / "manifest.json").read_text())
        assert manifest["structure"]["ordering"]["index"] == tasks[tid]["md"]["ordering"]["index"]
    per_T = pd.read_csv(next(out.rglob("per_temperature.csv")))
    row = per_T[per_T["structure"] == "LPSC-mixed"].iloc[0]
    assert row["n_replicas"] == 2 and "2 orderings" in row["replica_method"]
    D = results.loc[["LPSC-mixed__lj-test__T300__r0", "LPSC-mixed__lj-test__T300__r1"],
                    "D_cm2_per_s"].to_numpy(float)
    half = row["D_ci95_hi"] - row["D_cm2_per_s"]
    from scipy import stats

    assert half == pytest.approx(stats.t.ppf(0.975, 1) * D.std(ddof=1) / math.sqrt(2),
                                 rel=1e-6)


def test_campaign_orderings_become_replicas(tmp_path):
    from harness.campaign.tasks import expand_tasks, parse_campaign

    spec = parse_campaign({
        "structures": [{"name": "lpsc", "file": str(ANION_MIXED),
                        "md": {"ordering": {"n": 2, "seed": 4}}}, "Li3N"],
        "potentials": ["lj-test"], "temperatures_K": [500], "replicas": 2})
    tasks = expand_tasks(spec, campaign_dir=tmp_path)
    lpsc = [t for t in tasks if t.structure == "lpsc"]
    assert [t.replica for t in lpsc] == [0, 1, 2, 3]
    assert [t.md["ordering"]["index"] for t in lpsc] == [0, 1, 0, 1]
    assert all(t.md["ordering"]["seed"] == 4 and t.md["ordering"]["n"] == 2 for t in lpsc)
    assert len({t.seed for t in lpsc}) == 4  # independent velocities per replica
    li3n = [t for t in tasks if t.structure == "Li3N"]
    assert len(li3n) == 2 and all(t.md["ordering"] is None for t in li3n)


def test_rank_by_a_potential_relaxes_and_reranks():
    """--rank-by: fixed-cell relaxation through the harness' LAMMPS calculator (lj-test,
    cheap); the order follows the relaxed energies, each below its unrelaxed energy from the
    potential's own ASE calculator."""
    from potentials.registry import get_potential

    result = order_structure("Li6PS5Cl-disordered", OrderingSpec(n=3, n_samples=20, seed=5,
                                                                 rank_by="lj-test"))
    relaxed = [c.relaxed_energy_eV for c in result.candidates]
    assert relaxed == sorted(relaxed) and [c.rank for c in result.candidates] == [0, 1, 2]
    calc = get_potential("lj-test").ase_calculator()
    for cand in result.candidates:
        atoms = cand.atoms.copy()
        atoms.calc = calc
        assert cand.relaxed_energy_eV < atoms.get_potential_energy() - 1e-3
        assert cand.relax_steps > 0
