"""Incremental analysis of a growing dump == full analysis; equilibration detection; several
consecutive trajectory files read as one == the concatenated file."""

import gzip

import numpy as np
import pytest
from _analysis_helpers import FAST, write_dump_and_data

from analysis.analyzer import TransportAnalyzer
from analysis.diffusion import KinisiSettings
from analysis.incremental import (IncrementalDisplacements, detect_equilibration, estimate_D,
                                  statistical_inefficiency)
from analysis.synthetic import brownian

SETTINGS = KinisiSettings(**FAST, max_fit_points=30)


@pytest.fixture(scope="module")
def traj():
    return brownian(n_ions=12, n_frames=120, frame_interval_ps=0.1, D_A2_per_ps=0.4,
                    n_framework=20, framework_vibration_A=0.1, box_A=10.0, seed=3)


def _full(dump, data, *, start_ps=0.0):
    return TransportAnalyzer.from_lammps_dump(
        dump, data=data, timestep_fs=1.0, temperature_K=600.0, seed=0, kinisi=SETTINGS,
        analysis_start_ps=start_ps, compute_distinct=False, compute_rdf=False,
        compute_charge=False).run()


@pytest.mark.parametrize("start_frame", [0, 17])
def test_growing_dump_read_in_pieces_equals_full_analysis(tmp_path, traj, start_frame):
    dump, data = write_dump_and_data(tmp_path / "full", traj, dump_every=100)
    blob = dump.read_bytes()
    growing = tmp_path / "growing.lammpstrj"
    state = IncrementalDisplacements(traj.symbols, mobile="Li")
    frame_len = len(blob) // traj.n_frames
    # cut points inside frames, on frame boundaries and at the end
    # (the fourth ends exactly after a complete atom line in the middle of a frame)
    cuts = [frame_len * 7 + 13, frame_len * 40, frame_len * 41 - 5,
            blob.index(b"\n", frame_len * 60 + frame_len // 2) + 1, frame_len * 90 + 200,
            len(blob)]
    for cut in cuts:
        growing.write_bytes(blob[:cut])
        state.read_dump(growing, timestep_fs=1.0)
        complete = blob[:cut].count(b"ITEM: TIMESTEP") - (0 if cut == len(blob) else 1)
        assert state.n_frames == complete  # a frame still being written is not read
    assert state.n_frames == traj.n_frames
    assert np.array_equal(state.all_steps(), np.arange(traj.n_frames) * 100)

    full = _full(dump, data, start_ps=start_frame * 0.1)
    est = estimate_D(state.mobile_array(start_frame), frame_interval_ps=0.1, settings=SETTINGS)
    assert np.array_equal(est.msd_A2, full.msd)
    assert est.D_cm2_per_s == full.summary["D_cm2_per_s"]
    assert est.ci95_cm2_per_s == full.summary["D_ci95_cm2_per_s"]
    assert est.msd_end_of_fit_A2 == full.summary["msd_end_of_fit_A2"]
    # framework: vibration of 0.1 A rms per axis about fixed sites, MSD ~ 2 x 0.03 A^2
    assert 0.02 < state.framework_msd_max_A2() < 0.2


def test_truth_inside_interval_and_upper_bound(traj):
    disp = np.ascontiguousarray((traj.unwrapped[:, :12] - traj.unwrapped[0, :12])
                                .transpose(1, 0, 2))
    est = estimate_D(disp, frame_interval_ps=0.1, settings=SETTINGS)
    assert est.ci95_cm2_per_s[0] < traj.D_cm2_per_s < est.ci95_cm2_per_s[1]
    assert est.D_upper_msd_cm2_per_s > traj.D_cm2_per_s


def test_statistical_inefficiency_of_ar1():
    rng = np.random.default_rng(1)
    phi = 0.8
    x = np.zeros(200_000)
    noise = rng.normal(size=x.size)
    for t in range(1, x.size):
        x[t] = phi * x[t - 1] + noise[t]
    # g = (1 + phi) / (1 - phi) = 9 for an AR(1) process
    assert statistical_inefficiency(x) == pytest.approx(9.0, rel=0.1)
    assert statistical_inefficiency(rng.normal(size=10_000)) == pytest.approx(1.0, abs=0.1)


def test_detect_equilibration_finds_the_relaxation():
    rng = np.random.default_rng(2)
    t = np.arange(2000)
    relaxing = 5.0 * np.exp(-t / 60.0) + rng.normal(scale=0.2, size=t.size)
    t0, g, n_eff = detect_equilibration(relaxing)
    assert 150 <= t0 <= 600  # the transient (5 e^{-t/60} > noise until t ~ 200) is cut
    stationary = rng.normal(size=2000)
    t0_s, _, n_eff_s = detect_equilibration(stationary)
    assert t0_s <= 200 and n_eff_s > 1500


def test_several_trajectory_files_read_as_one(tmp_path):
    from ase import Atoms
    from ase.io import write

    from harness.analyze import run_analyze

    traj = brownian(n_ions=10, n_frames=90, frame_interval_ps=0.1, D_A2_per_ps=0.3,
                    n_framework=8, box_A=9.0, seed=4)
    wrapped, _ = traj.wrapped()
    frames = [Atoms(traj.symbols, positions=wrapped[f], cell=traj.cells[f], pbc=True)
              for f in range(traj.n_frames)]
    whole = tmp_path / "whole.extxyz"
    write(whole, frames)
    pieces = []
    for k, (a, b) in enumerate([(0, 30), (30, 61), (61, 90)]):
        path = tmp_path / f"piece{k}.extxyz"
        write(path, frames[a:b])
        if k == 1:  # one piece gzipped
            gz = path.with_suffix(".extxyz.gz")
            gz.write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
            path = gz
        pieces.append(path)
    common = dict(temperature_K=500.0, frame_interval_fs=100.0, seed=0, plots=False)
    one = run_analyze(trajectory=whole, out=tmp_path / "a1", **common)
    many = run_analyze(trajectory=pieces, out=tmp_path / "a2", **common)
    assert many["n_frames"] == one["n_frames"] == 90
    assert many["D_cm2_per_s"] == one["D_cm2_per_s"]
    assert many["D_ci95_cm2_per_s"] == one["D_ci95_cm2_per_s"]
    assert many["msd_max_A2"] == one["msd_max_A2"]
