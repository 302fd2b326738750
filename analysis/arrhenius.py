"""Arrhenius fits of D(T): activation energy, prefactor, extrapolation with uncertainty.

Method (stated in every result): ln D = ln D0 - Ea / (k_B T), fitted as a straight line in
(1/T, ln D) by weighted least squares. The weight of each point is 1/sigma^2 with
sigma = (ln D_hi - ln D_lo) / (2 x 1.96) from its 95 % interval (a symmetric interval in
ln D; kinisi's D posteriors are close to log-normal). Parameter covariance (X^T W X)^-1;
with more than two temperatures it is multiplied by the reduced chi^2 when that exceeds 1
(Birge ratio: scatter beyond the stated errors widens the result, never narrows it). The
extrapolated ln D(T) has variance Var(a) + Var(b)/T^2 + 2 Cov(a, b)/T, and its 95 %
interval is exp(ln D +- 1.96 sd). If any point lacks an interval, all points get equal
weights and, with more than two points, the residual scatter as their error.

Two temperatures (seed 003's variant) give the line through both points exactly:
Ea = k_B ln(D2/D1) / (1/T1 - 1/T2), with the errors of the two D propagated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from analysis.units import KB_EV_PER_K, nernst_einstein_mS_per_cm

Z95 = 1.959963984540054


@dataclass
class ArrheniusResult:
    method: str
    temperatures_K: list[float]
    D_cm2_per_s: list[float]
    Ea_eV: float
    Ea_ci95_eV: list[float] | None
    Ea_std_eV: float | None
    D0_cm2_per_s: float
    D0_ci95_cm2_per_s: list[float] | None
    T_eval_K: float
    D_eval_cm2_per_s: float
    D_eval_ci95_cm2_per_s: list[float] | None
    sigma_eval_mS_per_cm: float | None
    sigma_eval_ci95_mS_per_cm: list[float] | None
    reduced_chi2: float | None
    birge_scaled: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _ln_sigma(D: float, ci: Sequence[float] | None) -> float | None:
    if ci is None or ci[0] is None or ci[1] is None:
        return None
    lo, hi = float(ci[0]), float(ci[1])
    lo = lo if lo > 0 else D * 1e-3  # an interval reaching zero: cap ln D's error
    if not hi > lo:
        return None
    return (np.log(hi) - np.log(lo)) / (2 * Z95)


def arrhenius(points: Iterable, *, T_eval_K: float = 300.0, n_ions: float | None = None,
              volume_A3: float | None = None, charge: float = 1.0) -> ArrheniusResult:
    """Fit D(T) = D0 exp(-Ea / k_B T) to ``points``.

    ``points``: (T_K, D_cm2_per_s, (lo, hi) or None) tuples, or dicts with keys
    ``temperature_K``, ``D_cm2_per_s`` and optionally ``D_ci95_cm2_per_s`` (transport.json).
    With ``n_ions`` and ``volume_A3`` the Nernst-Einstein conductivity at ``T_eval_K`` is
    returned too (same interval, sigma is proportional to D/T).
    """
    rows = []
    for p in points:
        if isinstance(p, dict):
            rows.append((float(p["temperature_K"]), float(p["D_cm2_per_s"]),
                         p.get("D_ci95_cm2_per_s")))
        else:
            T, D, *rest = p
            rows.append((float(T), float(D), rest[0] if rest else None))
    rows.sort(key=lambda r: (r[0], r[1]))  # the intervals (lists or None) do not compare
    if len(rows) < 2:
        raise ValueError("an Arrhenius fit needs at least two temperatures")
    T = np.array([r[0] for r in rows])
    D = np.array([r[1] for r in rows])
    if np.any(D <= 0) or np.any(T <= 0):
        raise ValueError("Arrhenius fits need positive D and T (a frozen run has D <= 0)")
    if len(np.unique(T)) < 2:
        raise ValueError("an Arrhenius fit needs two different temperatures")
    sig = [_ln_sigma(d, r[2]) for d, r in zip(D, rows)]
    x, y = 1.0 / T, np.log(D)
    X = np.column_stack([np.ones_like(x), x])
    has_errors = all(s is not None and s > 0 for s in sig)
    w = 1.0 / np.array(sig) ** 2 if has_errors else np.ones_like(x)
    A = X.T @ (w[:, None] * X)
    cov = np.linalg.inv(A)
    beta = cov @ X.T @ (w * y)
    resid = y - X @ beta
    dof = len(x) - 2
    chi2_red = float(np.sum(w * resid ** 2) / dof) if dof > 0 else None
    birge = False
    if has_errors:
        if chi2_red is not None and chi2_red > 1:
            cov = cov * chi2_red
            birge = True
    elif dof > 0:
        cov = cov * chi2_red  # residual scatter as the error of unweighted points
    else:
        cov = None  # two points, no errors: the line is exact but its error is unknown
    a, b = beta
    method = ("two-point (seed 003): line through ln D at both temperatures"
              if len(x) == 2 else "weighted least squares in (1/T, ln D)")
    method += "; errors from the 95% intervals of D" if has_errors else "; no D intervals given"
    Ea = float(-b * KB_EV_PER_K)
    ln_eval = a + b / T_eval_K
    D_eval = float(np.exp(ln_eval))
    if cov is not None:
        sd_b = float(np.sqrt(cov[1, 1]))
        sd_a = float(np.sqrt(cov[0, 0]))
        var_eval = cov[0, 0] + cov[1, 1] / T_eval_K ** 2 + 2 * cov[0, 1] / T_eval_K
        sd_eval = float(np.sqrt(max(var_eval, 0.0)))
        Ea_std = sd_b * KB_EV_PER_K
        Ea_ci = [Ea - Z95 * Ea_std, Ea + Z95 * Ea_std]
        D0_ci = [float(np.exp(a - Z95 * sd_a)), float(np.exp(a + Z95 * sd_a))]
        D_eval_ci = [float(np.exp(ln_eval - Z95 * sd_eval)), float(np.exp(ln_eval + Z95 * sd_eval))]
    else:
        Ea_std = None
        Ea_ci = D0_ci = D_eval_ci = None
    sigma = sigma_ci = None
    if n_ions is not None and volume_A3 is not None:
        def ne(value: float) -> float:
            return nernst_einstein_mS_per_cm(value, n_ions=n_ions, volume_A3=volume_A3,
                                             temperature_K=T_eval_K, charge=charge)
        sigma = ne(D_eval)
        sigma_ci = [ne(D_eval_ci[0]), ne(D_eval_ci[1])] if D_eval_ci else None
    return ArrheniusResult(method=method, temperatures_K=T.tolist(), D_cm2_per_s=D.tolist(),
                           Ea_eV=Ea, Ea_ci95_eV=Ea_ci, Ea_std_eV=Ea_std,
                           D0_cm2_per_s=float(np.exp(a)), D0_ci95_cm2_per_s=D0_ci,
                           T_eval_K=float(T_eval_K), D_eval_cm2_per_s=D_eval,
                           D_eval_ci95_cm2_per_s=D_eval_ci, sigma_eval_mS_per_cm=sigma,
                           sigma_eval_ci95_mS_per_cm=sigma_ci, reduced_chi2=chi2_red,
                           birge_scaled=birge)


def two_point_activation_energy_eV(*, T1_K: float, D1: float, T2_K: float, D2: float) -> float:
    """Seed 003: Ea from D at two temperatures, k_B ln(D2/D1) / (1/T1 - 1/T2)."""
    return float(KB_EV_PER_K * np.log(D2 / D1) / (1.0 / T1_K - 1.0 / T2_K))
