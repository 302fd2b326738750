"""`harness neb`: hop enumeration, a known-answer barrier, and cases built to fail.

The potential is ``lj-test`` (native ``lj/cut`` in LAMMPS) on fcc "Li" whose nearest-neighbour
distance sits at the LJ minimum (2.56 A). The known answer for the nearest-neighbour vacancy
hop is computed without NEB and without LAMMPS: by symmetry the saddle is the configuration
with the mover in the plane through the hop midpoint, perpendicular to the hop, everything
else relaxed; we relax it with the adapter's own ASE calculator (FixedPlane constraint).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.statics.neb import NEBSpec, run_neb
from harness.statics.statics_run import StaticsInputError

A_FCC = 2.0 * 1.28 * math.sqrt(2.0)  # ASE covalent radius of Li 1.28 A -> r_min = 2.56 A


@pytest.fixture(scope="module")
def fcc_file(tmp_path_factory):
    from ase.build import bulk
    from ase.io import write

    path = tmp_path_factory.mktemp("neb") / "li_fcc.vasp"
    write(path, bulk("Li", "fcc", a=A_FCC), format="vasp")
    return path


def _spec(tmp_path, **kw):
    base = dict(species="Li", potential="lj-test", n_images=3, fmax_eV_per_A=0.002,
                endpoint_fmax_eV_per_A=0.001, out=str(tmp_path / "neb"))
    base.update(kw)
    return NEBSpec(**base)


def _endpoints(fcc_file):
    """Start/end atoms of the nearest-neighbour hop (enumerated like the CLI does)."""
    from harness.statics.neb import enumerate_hops
    from harness.structures import load_structure

    hops = enumerate_hops(load_structure(fcc_file), species="Li", cutoff_A=3.0,
                          supercell_min_length_A=10.0)
    assert len(hops) == 1
    return hops[0]


def test_hop_enumeration_fcc(fcc_file):
    from harness.statics.neb import enumerate_hops
    from harness.structures import load_structure, perpendicular_widths

    hops = enumerate_hops(load_structure(fcc_file), species="Li", cutoff_A=5.0,
                          supercell_min_length_A=10.0)
    # fcc neighbour shells below 5 A: a/sqrt2, a, a*sqrt(3/2); one distinct hop each
    lengths = [h.length_A for h in hops]
    np.testing.assert_allclose(lengths, [A_FCC / math.sqrt(2), A_FCC, A_FCC * math.sqrt(1.5)],
                               atol=1e-6)
    for h in hops:
        assert perpendicular_widths(h.start.cell).min() >= 10.0
        assert len(h.start) == len(h.end)
        moved = np.linalg.norm(h.end.positions - h.start.positions, axis=1)
        assert np.count_nonzero(moved > 1e-9) == 1 and moved[h.mover] == pytest.approx(h.length_A)


@pytest.mark.slow
def test_known_barrier_vs_constrained_saddle(fcc_file, tmp_path):
    from ase.constraints import FixedPlane
    from ase.io import read
    from ase.optimize import FIRE

    from potentials.classical import PairwiseLJCalculator

    result = run_neb(_spec(tmp_path, structure=str(fcc_file), max_hops=1))
    table = pd.read_csv(tmp_path / "neb" / "barriers.csv")
    assert list(table.columns[:4]) == ["hop", "length_A", "barrier_eV", "failure_type"]
    row = table.iloc[0]
    assert row["failure_type"] == "none" and row["length_A"] == pytest.approx(2.56, abs=1e-6)
    # independent: constrained saddle at the midpoint, own ASE calculator, no NEB, no LAMMPS
    hop_dir = tmp_path / "neb" / "hops" / row["hop"]
    start = read(hop_dir / "start_relaxed.extxyz")
    end = read(hop_dir / "end_relaxed.extxyz")
    m = int(row["mover_index"])
    start.calc = PairwiseLJCalculator()
    e_i = start.get_potential_energy()
    saddle = start.copy()
    saddle.positions = 0.5 * (start.positions + end.positions)
    saddle.set_constraint(FixedPlane(m, end.positions[m] - start.positions[m]))
    saddle.calc = PairwiseLJCalculator()
    FIRE(saddle, logfile=None).run(fmax=2e-4, steps=3000)
    expected = saddle.get_potential_energy() - e_i
    assert expected == pytest.approx(0.2125, abs=0.002)  # 4.25 epsilon: a real barrier
    assert row["barrier_eV"] == pytest.approx(expected, abs=1e-3)
    assert row["E_initial_eV"] == pytest.approx(e_i, abs=1e-8)  # LAMMPS == ASE endpoint
    summary = json.loads((tmp_path / "neb" / "neb.json").read_text())
    assert summary["n_failed_type_I"] == 0 and summary["n_failed_type_II"] == 0
    manifest = json.loads((tmp_path / "neb" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["potential"]["route"] == "native"
    assert (tmp_path / "neb" / "mep.png").stat().st_size > 1000
    assert result.rows[0]["ts_image"] == 2  # symmetric hop: the middle of 3 images climbs


def test_type_I_exploding_forces_and_not_converged(fcc_file, tmp_path):
    from ase.io import write

    hop = _endpoints(fcc_file)
    start, end = hop.start.copy(), hop.end.copy()
    # an atom 0.35 A from another: LJ forces of ~1e6 eV/A, far above the 50 eV/A limit
    other = 5 if hop.mover != 5 else 6
    for atoms in (start, end):
        atoms.positions[other] = atoms.positions[other + 1] + [0.35, 0.0, 0.0]
    write(tmp_path / "s.extxyz", start)
    write(tmp_path / "e.extxyz", end)
    res = run_neb(_spec(tmp_path, start=str(tmp_path / "s.extxyz"),
                        end=str(tmp_path / "e.extxyz"), min_distance_A=0.0))
    row = res.rows[0]
    assert row["failure_type"] == "I" and row["failure_reason"] == "force_explosion"
    assert math.isnan(row["barrier_eV"])
    # the relaxation cannot converge in 2 steps: also Type I
    write(tmp_path / "s2.extxyz", hop.start)
    write(tmp_path / "e2.extxyz", hop.end)
    res2 = run_neb(_spec(tmp_path, start=str(tmp_path / "s2.extxyz"),
                         end=str(tmp_path / "e2.extxyz"), endpoint_max_steps=2,
                         out=str(tmp_path / "neb2")))
    assert res2.rows[0]["failure_type"] == "I"
    assert res2.rows[0]["failure_reason"] == "not_converged"
    assert res2.summary["n_failed_type_I"] == 1 and res2.summary["mae_eV"] is None
    table = pd.read_csv(tmp_path / "neb2" / "barriers.csv")
    assert table["failure_type"].tolist() == ["I"]


def test_type_II_unrelaxed_endpoint(fcc_file, tmp_path):
    from ase.io import write

    hop = _endpoints(fcc_file)
    start, end = hop.start.copy(), hop.end.copy()
    # squeeze the mover's surroundings at the start only and do not relax the endpoints:
    # E_i lies far above the relaxed band, so the "transition state" sits below it
    from ase.geometry import get_distances

    vec, d = get_distances(start.positions[hop.mover][None], start.positions,
                           cell=start.cell, pbc=True)  # minimum-image vectors mover -> i
    for i in np.argsort(d[0])[1:4]:
        start.positions[i] -= 0.12 * vec[0, i]
    write(tmp_path / "s.extxyz", start)
    write(tmp_path / "e.extxyz", end)
    res = run_neb(_spec(tmp_path, start=str(tmp_path / "s.extxyz"),
                        end=str(tmp_path / "e.extxyz"), relax_endpoints=False,
                        reference_barrier_eV=0.2, fmax_eV_per_A=0.02))
    row = res.rows[0]
    assert row["failure_type"] == "II", row["message"]
    assert row["failure_reason"] == "ts_below_endpoint"
    assert row["barrier_eV_if_failed"] < 0  # E_TS below the mean of the endpoints
    assert res.summary["n_failed_type_II"] == 1
    assert res.summary["n_with_reference"] == 0 and res.summary["mae_eV"] is None  # excluded


def test_endpoints_relaxing_into_each_other(fcc_file, tmp_path):
    from ase.io import write

    hop = _endpoints(fcc_file)
    end = hop.start.copy()
    # the "end" is the start with the mover nudged 0.3 A toward the vacancy: it relaxes back
    end.positions[hop.mover] += 0.3 * (hop.end.positions[hop.mover]
                                       - hop.start.positions[hop.mover]) / hop.length_A
    write(tmp_path / "s.extxyz", hop.start)
    write(tmp_path / "e.extxyz", end)
    res = run_neb(_spec(tmp_path, start=str(tmp_path / "s.extxyz"),
                        end=str(tmp_path / "e.extxyz")))
    row = res.rows[0]
    assert row["failure_reason"] == "endpoints_merged" and row["failure_type"] == "II"
    assert "relaxed into each other" in row["message"]


def test_bad_input_is_one_clear_line(fcc_file, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    with pytest.raises(StaticsInputError, match="no Na"):
        run_neb(_spec(tmp_path, structure=str(fcc_file), species="Na"))
    runner = CliRunner()
    result = runner.invoke(app, ["neb", str(fcc_file), "--species", "Na", "--potential",
                                 "lj-test", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no Na" in result.output
    result = runner.invoke(app, ["neb", "--start", str(fcc_file), "--potential", "lj-test",
                                 "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "both start and end" in result.output
