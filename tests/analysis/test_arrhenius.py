"""Arrhenius: exact recovery, the seed 003 two-temperature variant, error propagation
checked by Monte Carlo, Birge scaling, and run_arrhenius over transport.json files."""

import json

import numpy as np
import pytest

from analysis.arrhenius import arrhenius, two_point_activation_energy_eV
from analysis.errors import AnalysisInputError
from analysis.units import KB_EV_PER_K, nernst_einstein_mS_per_cm
from harness.analyze import run_arrhenius

EA, D0 = 0.25, 2e-3


def _D(T):
    return D0 * np.exp(-EA / (KB_EV_PER_K * T))


def test_exact_recovery_and_extrapolation():
    T = [600, 700, 800, 900, 1000, 1100, 1200]
    points = [(t, _D(t), (_D(t) * 0.9, _D(t) / 0.9)) for t in T]
    fit = arrhenius(points, T_eval_K=300, n_ions=24, volume_A3=1000.0)
    assert fit.Ea_eV == pytest.approx(EA, rel=1e-9)
    assert fit.D0_cm2_per_s == pytest.approx(D0, rel=1e-9)
    assert fit.D_eval_cm2_per_s == pytest.approx(_D(300), rel=1e-9)
    lo, hi = fit.D_eval_ci95_cm2_per_s
    assert lo < _D(300) < hi
    assert fit.sigma_eval_mS_per_cm == pytest.approx(
        nernst_einstein_mS_per_cm(_D(300), n_ions=24, volume_A3=1000.0, temperature_K=300))
    assert not fit.birge_scaled  # zero scatter


def test_two_temperature_variant_of_seed_003_and_its_error_by_monte_carlo():
    T1, T2 = 800.0, 1200.0
    D1, D2 = _D(T1), _D(T2)
    assert two_point_activation_energy_eV(T1_K=T1, D1=D1, T2_K=T2, D2=D2) == pytest.approx(EA)
    s1, s2 = 0.1, 0.05  # sd of ln D
    z = 1.959963984540054
    points = [(T1, D1, (D1 * np.exp(-z * s1), D1 * np.exp(z * s1))),
              (T2, D2, (D2 * np.exp(-z * s2), D2 * np.exp(z * s2)))]
    fit = arrhenius(points, T_eval_K=300)
    assert "two-point" in fit.method
    assert fit.Ea_eV == pytest.approx(EA, rel=1e-9)
    rng = np.random.default_rng(0)
    l1 = np.log(D1) + s1 * rng.standard_normal(200_000)
    l2 = np.log(D2) + s2 * rng.standard_normal(200_000)
    ea = KB_EV_PER_K * (l2 - l1) / (1 / T1 - 1 / T2)
    assert fit.Ea_std_eV == pytest.approx(ea.std(), rel=0.01)
    ln300 = l1 - ea / KB_EV_PER_K * (1 / 300 - 1 / T1)
    lo, hi = fit.D_eval_ci95_cm2_per_s
    assert np.log(lo) == pytest.approx(np.percentile(ln300, 2.5), abs=0.02)
    assert np.log(hi) == pytest.approx(np.percentile(ln300, 97.5), abs=0.02)


def test_scatter_beyond_the_errors_widens_the_interval():
    T = np.array([600, 700, 800, 900, 1000])
    noise = np.array([0.3, -0.3, 0.3, -0.3, 0.3])  # much larger than the 1 % errors
    points = [(t, _D(t) * np.exp(n), (_D(t) * np.exp(n) * 0.99, _D(t) * np.exp(n) / 0.99))
              for t, n in zip(T, noise)]
    fit = arrhenius(points)
    assert fit.birge_scaled and fit.reduced_chi2 > 1
    narrow = arrhenius([(t, d, None) for t, d, _ in points])  # no errors: residual scatter
    assert fit.Ea_std_eV == pytest.approx(narrow.Ea_std_eV, rel=1e-6)
    with pytest.raises(ValueError, match="two temperatures"):
        arrhenius([(800, 1e-5, None)])


def test_run_arrhenius_over_transport_files(tmp_path):
    paths = []
    for T in (800, 1000, 1200):
        folder = tmp_path / f"T{T}"
        folder.mkdir()
        D = _D(T)
        (folder / "transport.json").write_text(json.dumps({
            "species": "Li", "temperature_K": T, "D_cm2_per_s": D,
            "D_ci95_cm2_per_s": [0.8 * D, 1.25 * D], "n_ions": 48, "volume_A3": 2000.0 + T,
            "charge": 1, "flags": []}))
        paths.append(folder)
    out = tmp_path / "arr"
    result = run_arrhenius(paths, T_eval_K=300, out=out)
    assert result["Ea_eV"] == pytest.approx(EA, rel=1e-9)
    assert result["species"] == "Li"
    assert result["sigma_eval_mS_per_cm"] == pytest.approx(
        nernst_einstein_mS_per_cm(_D(300), n_ions=48, volume_A3=2800.0, temperature_K=300))
    assert json.loads((out / "arrhenius.json").read_text())["Ea_eV"] == pytest.approx(EA)
    with pytest.raises(AnalysisInputError, match="two or more"):
        run_arrhenius(paths[:1])
