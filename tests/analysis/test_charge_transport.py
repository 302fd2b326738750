"""Charge (collective) diffusion, the Haven ratio and the ion charge, against known answers.

* ions moving in correlated pairs (Haven ratio 1 / (1 + rho): 0.5 and 2) recovered within
  their intervals, and the intervals exclude the inverted ratio;
* sigma_charge is Nernst-Einstein of D_charge with q^2 (q = 2 known answer through
  ``harness analyze``);
* a demo-length run (24 ions, 0.8 ps; the real SevenNet demo trajectory) never gives an
  unflagged charge number.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _analysis_helpers import FAST, write_dump_and_data

from analysis.analyzer import TransportAnalyzer, ion_charge
from analysis.charge import kinisi_covariance
from analysis.errors import AnalysisInputError
from analysis.synthetic import brownian, correlated_pairs, haven_ratio
from analysis.units import E_CHARGE_C, KB_J_PER_K

LIGHT = dict(FAST, compute_distinct=False, compute_rdf=False)
DATA = Path(__file__).resolve().parent.parent / "data"
CHARGE_FLAGS = {"charge_fit_refused", "D_charge_uncertain", "haven_out_of_range"}


def _pairs(rho, seed, **settings):
    traj = correlated_pairs(n_pairs=32, n_frames=2000, frame_interval_ps=0.1, D_A2_per_ps=0.2,
                            rho=rho, noise_A=0.2, box_A=20.0, seed=seed)
    wrapped, images = traj.wrapped()
    result = TransportAnalyzer.from_arrays(
        wrapped, symbols=traj.symbols, cells=traj.cells, images=images,
        frame_interval_fs=100.0, temperature_K=600.0, fit_start_ps=1.0, fit_end_ps=20.0,
        **{**LIGHT, **settings}).run().as_dict()
    return traj, result


def _nernst_einstein(D_cm2_per_s, *, n, volume_A3, T, q):
    """sigma = N q^2 e^2 D / (V k_B T) in mS/cm, written out independently of analysis.units."""
    return n * (q * E_CHARGE_C) ** 2 * D_cm2_per_s * 1e-4 / (volume_A3 * 1e-30 * KB_J_PER_K * T) \
        * 10.0


@pytest.mark.parametrize("rho, seed", [(1.0, 1), (-0.5, 0)])
def test_correlated_pairs_haven_ratio_recovered(rho, seed):
    """rho = 1: pairs move together, H = 0.5; rho = -0.5: moves partly cancel, H = 2."""
    truth_H = haven_ratio(rho)
    traj, r = _pairs(rho, seed)
    lo, hi = r["haven_ratio_ci95"]
    assert lo < truth_H < hi, (r["haven_ratio"], lo, hi)
    assert r["haven_ratio"] == pytest.approx(truth_H, rel=0.2)
    # the interval is tight enough to tell correlated from independent and from 1/H
    assert not lo < 1.0 < hi
    assert not lo < 1.0 / truth_H < hi
    D_charge_truth = traj.D_cm2_per_s / truth_H
    c_lo, c_hi = r["D_charge_ci95_cm2_per_s"]
    assert c_lo < D_charge_truth < c_hi
    assert r["haven_ratio"] == pytest.approx(r["D_cm2_per_s"] / r["D_charge_cm2_per_s"],
                                             rel=1e-12)
    # sigma_charge: Nernst-Einstein of D_charge, and of the known answer within its interval
    sigma = _nernst_einstein(r["D_charge_cm2_per_s"], n=64, volume_A3=20.0 ** 3, T=600.0, q=1)
    assert r["sigma_charge_mS_per_cm"] == pytest.approx(sigma, rel=1e-9)
    s_lo, s_hi = r["sigma_charge_ci95_mS_per_cm"]
    assert s_lo < _nernst_einstein(D_charge_truth, n=64, volume_A3=8000.0, T=600.0, q=1) < s_hi
    assert r["sigma_charge_mS_per_cm"] / r["sigma_NE_mS_per_cm"] == pytest.approx(
        1.0 / r["haven_ratio"], rel=1e-9)
    assert not CHARGE_FLAGS & set(r["flags"]), r["flag_details"]
    assert r["charge_fit"]["status"] == "ok"


@pytest.mark.slow  # three full analyses (~30 s)
def test_charge_two_scales_sigma_by_four_through_harness_analyze(tmp_path):
    from harness.analyze import run_analyze

    traj = brownian(n_ions=64, n_frames=800, frame_interval_ps=0.1, D_A2_per_ps=0.3,
                    noise_A=0.3, n_framework=27, box_A=15.0, seed=12)
    dump, data = write_dump_and_data(tmp_path, traj, dump_every=50)
    runs = {}
    for name, charge in (("q1", None), ("q2", ["2"]), ("per_species", ["Li=2", "S=-2"])):
        runs[name] = run_analyze(dump=dump, data=data, timestep_fs=2.0, temperature_K=700.0,
                                 out=tmp_path / name, plots=False, charge=charge)
        written = json.loads((tmp_path / name / "transport.json").read_text())
        assert written["charge"] == runs[name]["charge"]
    assert runs["q1"]["charge"] == 1 and "table" in runs["q1"]["charge_source"]
    assert runs["q2"]["charge"] == 2 and runs["q2"]["charge_source"] == "setting charge"
    assert runs["per_species"]["charge_source"] == "setting charges[Li]"
    for name in ("q2", "per_species"):
        r = runs[name]
        D = r["D_cm2_per_s"]
        assert D == runs["q1"]["D_cm2_per_s"]  # same seed, same trajectory
        expected = _nernst_einstein(D, n=64, volume_A3=15.0 ** 3, T=700.0, q=2)
        assert r["sigma_NE_mS_per_cm"] == pytest.approx(expected, rel=1e-9)
        assert r["sigma_NE_mS_per_cm"] == pytest.approx(4 * runs["q1"]["sigma_NE_mS_per_cm"],
                                                        rel=1e-12)
        if not _missing(r["sigma_charge_mS_per_cm"]):
            assert r["sigma_charge_mS_per_cm"] == pytest.approx(_nernst_einstein(
                r["D_charge_cm2_per_s"], n=64, volume_A3=15.0 ** 3, T=700.0, q=2), rel=1e-9)


def test_ion_charge_precedence_and_bad_values():
    assert ion_charge("Mg") == (2.0, "formal charge table (analysis.analyzer.ION_CHARGE)")
    assert ion_charge("Mg", charges={"Mg": 1}) == (1.0, "setting charges[Mg]")
    assert ion_charge("Mg", charge=3, charges={"Mg": 1}) == (3.0, "setting charge")
    assert ion_charge("Xe") == (1.0, "assumed")
    with pytest.raises(AnalysisInputError, match="non-zero"):
        ion_charge("Li", charge=0)
    from harness.analyze import parse_charges

    assert parse_charges(["Mg=2,Li=1"]) == {"charges": {"Mg": 2.0, "Li": 1.0}}
    assert parse_charges("2") == {"charge": 2.0}
    with pytest.raises(AnalysisInputError, match="not a number"):
        parse_charges(["Mg=two"])
    with pytest.raises(AnalysisInputError, match="not an element"):
        parse_charges(["Qq=2"])


def test_kinisi_covariance_and_refusal_of_a_runaway_input():
    """kinisi's covariance (cov_ij = var_i n_i / n_j), and a fit with too few independent
    charge displacements or a non-positive slope is refused, never written."""
    from analysis.charge import charge_diffusion, negative_eigenvalue_ratio
    from analysis.diffusion import BayesianFit, KinisiSettings

    n_obs = 100.0 / np.arange(1, 13)
    var = 0.05 * np.arange(1, 13) ** 2 / n_obs
    cov = kinisi_covariance(var, n_obs)
    assert cov[2, 5] == pytest.approx(var[2] * n_obs[2] / n_obs[5])
    assert np.allclose(cov, cov.T)
    # var_i n_i / n_j with var_i n_i / lag_i increasing is a positive definite form
    assert negative_eigenvalue_ratio(cov) == 0.0
    tracer = BayesianFit(samples_cm2_per_s=np.full(100, 1e-5), intercept_samples_A2=None)
    lags = np.arange(3, 12)  # (12 - 1) / 3 = 3.7 independent displacements at the start
    args = dict(lag_times_ps=lags * 0.1, s_var_A4=(lags * 0.1) ** 2, lags=lags,
                tracer=tracer, seed=0, settings=KinisiSettings(**{k: v for k, v in FAST.items()}))
    few = charge_diffusion(mscd_A2=lags * 0.6, n_frames=12, **args)
    assert few.status == "refused" and "independent charge displacements" in \
        few.flags["charge_fit_refused"]
    falling = charge_diffusion(mscd_A2=10.0 - lags * 0.6, n_frames=400, **args)
    assert falling.status == "refused" and "not positive" in falling.flags["charge_fit_refused"]
    assert math.isnan(falling.D_cm2_per_s) and math.isnan(falling.haven)


def _missing(value):
    """NaN is written to transport.json as null."""
    return value is None or math.isnan(value)


def _assert_no_unflagged_charge_number(r):
    flagged = CHARGE_FLAGS & set(r["flags"])
    if not flagged:
        raise AssertionError(f"charge numbers unflagged: D_charge {r['D_charge_cm2_per_s']}, "
                             f"H {r['haven_ratio']}")
    if "charge_fit_refused" in r["flags"]:
        for key in ("D_charge_cm2_per_s", "sigma_charge_mS_per_cm", "haven_ratio"):
            assert _missing(r[key]), key
        assert r["charge_fit"]["status"] == "refused"
        return
    # a kept value is within the absurd-ratio bounds: never 1e10 cm^2/s beside D ~ 1e-5
    assert 0.01 <= r["D_charge_cm2_per_s"] / r["D_cm2_per_s"] <= 100


def test_demo_length_synthetic_run_is_refused_or_flagged():
    """24 ions, 81 frames of 10 fs: the length of `harness demo` (0.8 ps)."""
    traj = brownian(n_ions=24, n_frames=81, frame_interval_ps=0.01, D_A2_per_ps=1.0,
                    noise_A=0.3, n_framework=28, box_A=10.0, seed=4)
    wrapped, images = traj.wrapped()
    r = TransportAnalyzer.from_arrays(wrapped, symbols=traj.symbols, cells=traj.cells,
                                      images=images, frame_interval_fs=10.0,
                                      temperature_K=1000.0, **LIGHT).run().as_dict()
    _assert_no_unflagged_charge_number(r)


def test_the_demo_trajectory_that_once_gave_8e10_is_refused_or_flagged():
    """The SevenNet-0 demo trajectory (Li6PS5Cl, 1000 K, 0.8 ps) that wrote D_charge =
    8.5e10 cm^2/s, sigma_charge = 4e18 mS/cm, H = 1.2e-15 without a flag."""
    z = np.load(DATA / "demo_sevennet_Li6PS5Cl_traj.npz")
    r = TransportAnalyzer.from_arrays(
        z["positions"].astype(float), symbols=[str(s) for s in z["symbols"]],
        cells=z["cells"].astype(float), images=z["images"],
        frame_interval_fs=float(z["frame_interval_fs"]), temperature_K=1000.0,
        **LIGHT).run().as_dict()
    _assert_no_unflagged_charge_number(r)
