"""Charge (collective) diffusion: the MSCD fit, and the checks that decide whether to trust it.

The mean-square charge displacement of one species, MSCD(t) = <|sum_i dr_i(t)|^2> / N
(kinisi's convention), grows as 6 D_sigma t; D_sigma is the charge diffusion coefficient,
sigma = N q^2 e^2 D_sigma / (V k_B T) the species' conductivity and H = D_tracer / D_sigma
the Haven ratio. Ions moving together (vacancy-mediated, concerted hops) give H < 1;
ions whose moves cancel give H > 1.

The whole species contributes one displacement series, so a run of duration T holds only
T / t independent charge displacements at lag t (kinisi: n_obs = (N_frames - 1) / lag):
the collective fit is far noisier than the tracer fit and, on short runs, kinisi's sampler
can run away (a near-singular covariance leaves a direction of the likelihood flat; the
demo once wrote D_charge = 8.5e10 cm^2/s). So the fit is checked before anything is written:

* **refused** (D_charge, sigma_charge and H written as NaN, flag ``charge_fit_refused`` with
  the reasons): fewer than ``MIN_CHARGE_DISPLACEMENTS`` independent charge displacements at
  the fit-window start; kinisi's covariance model with an eigenvalue below
  ``-MAX_NEGATIVE_EIGENVALUE`` x the largest (ill-conditioned: the variances do not follow
  a diffusive line, and kinisi's reconditioning leaves near-flat directions); a
  least-squares MSCD slope that is not positive; sampler samples that are not finite or
  whose median is outside ``SAMPLER_OLS_RANGE`` x the least-squares slope of the same
  points (the sampler ran away); D_charge / D_tracer outside ``ABSURD_RATIO_RANGE`` (no
  physical correlation gives that).
* **flagged** (value kept): ``D_charge_uncertain`` when the 95 % interval is wider than the
  value; ``haven_out_of_range`` when D_charge / D_tracer lies outside the physical range
  ``PHYSICAL_RATIO_RANGE`` (measured Haven ratios of solid electrolytes lie within
  0.2-1.5; the range is a decade either side of 1); ``haven_from_uncertain_D`` when the
  tracer D itself is uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.diffusion import (BayesianFit, KinisiSettings, kinisi_fit, model_variance,
                                ols_slope)

#: independent charge displacements (N_frames - 1) / lag needed at the fit-window start
MIN_CHARGE_DISPLACEMENTS = 5.0
#: kinisi's covariance model with an eigenvalue below -this x the largest is refused
#: (well-posed fits of our known-answer trajectories: > -1e-5)
MAX_NEGATIVE_EIGENVALUE = 1.0e-3
#: the sampler's median over the least-squares slope of the same MSCD must lie in this range
SAMPLER_OLS_RANGE = (1.0 / 3.0, 3.0)
#: D_charge / D_tracer = 1 / H outside this range is refused (not a physical correlation)
ABSURD_RATIO_RANGE = (0.01, 100.0)
#: D_charge / D_tracer outside this range is flagged
PHYSICAL_RATIO_RANGE = (0.1, 10.0)
#: the 95 % interval may be at most this many times the value
MAX_RELATIVE_CI = 1.0


@dataclass
class ChargeResult:
    """D_charge (cm^2/s) with its interval, the Haven ratio, and the verdict."""

    status: str  # "ok", "flagged", "refused", "not_computed"
    D_cm2_per_s: float = float("nan")
    D_ci95_cm2_per_s: list = field(default_factory=lambda: [float("nan"), float("nan")])
    haven: float = float("nan")
    haven_ci95: list = field(default_factory=lambda: [float("nan"), float("nan")])
    samples_cm2_per_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit: BayesianFit | None = None
    ols_D_cm2_per_s: float = float("nan")
    negative_eigenvalue: float = float("nan")
    n_displacements_at_fit_start: float = float("nan")
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.status in ("ok", "flagged")

    def diagnostics(self) -> dict:
        return {"status": self.status,
                "n_independent_displacements_at_fit_start": self.n_displacements_at_fit_start,
                "ols_D_cm2_per_s": self.ols_D_cm2_per_s,
                "covariance_negative_eigenvalue_ratio": self.negative_eigenvalue,
                "thresholds": thresholds()}


def thresholds() -> dict:
    return {"min_charge_displacements": MIN_CHARGE_DISPLACEMENTS,
            "max_negative_eigenvalue": MAX_NEGATIVE_EIGENVALUE,
            "sampler_ols_range": list(SAMPLER_OLS_RANGE),
            "absurd_ratio_range": list(ABSURD_RATIO_RANGE),
            "physical_ratio_range": list(PHYSICAL_RATIO_RANGE),
            "max_relative_ci": MAX_RELATIVE_CI}


def kinisi_covariance(variances: np.ndarray, n_obs: np.ndarray) -> np.ndarray:
    """kinisi's covariance of the MSD at the fit lags: cov_ij = var_i n_i / n_j (i <= j)."""
    variances = np.asarray(variances, dtype=float)
    n_obs = np.asarray(n_obs, dtype=float)
    i, j = np.meshgrid(np.arange(len(n_obs)), np.arange(len(n_obs)), indexing="ij")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return variances[lo] * n_obs[lo] / n_obs[hi]


def negative_eigenvalue_ratio(cov: np.ndarray) -> float:
    """Most negative eigenvalue of a covariance matrix over its largest (0 if none)."""
    values = np.linalg.eigvalsh(0.5 * (cov + cov.T))
    if not values[-1] > 0:
        return float("-inf")
    return min(0.0, float(values[0] / values[-1]))


def charge_diffusion(*, lag_times_ps: np.ndarray, mscd_A2: np.ndarray, s_var_A4: np.ndarray,
                     n_frames: int, lags: np.ndarray, tracer: BayesianFit, seed: int,
                     settings: KinisiSettings) -> ChargeResult:
    """Fit the MSCD at ``lags`` (frames) and decide whether the result can be reported.

    ``mscd_A2`` and ``s_var_A4`` are the MSCD (per ion) and the variance of its squared
    displacement at the fit lags; ``tracer`` is the tracer fit (for the Haven ratio).
    """
    lags = np.asarray(lags, dtype=float)
    n_obs = (n_frames - 1) / lags
    result = ChargeResult(status="refused", n_displacements_at_fit_start=float(n_obs[0]))
    refuse: list[str] = []
    if n_obs[0] < MIN_CHARGE_DISPLACEMENTS:
        refuse.append(f"only {n_obs[0]:.1f} independent charge displacements at the fit-window "
                      f"start (< {MIN_CHARGE_DISPLACEMENTS:g}): run longer or start the fit "
                      "window earlier")
    variances = model_variance(lag_times_ps, mscd_A2, s_var_A4,
                               kind=settings.variance_model) / n_obs
    ols = ols_slope(lag_times_ps, mscd_A2)[0] / 6.0 * 1e-4
    result.ols_D_cm2_per_s = ols
    if not (np.all(np.isfinite(variances)) and np.all(variances > 0)
            and np.all(np.isfinite(mscd_A2))):
        refuse.append("MSCD statistics are not finite or have zero variance")
    else:
        result.negative_eigenvalue = negative_eigenvalue_ratio(kinisi_covariance(variances,
                                                                                 n_obs))
        if not result.negative_eigenvalue >= -MAX_NEGATIVE_EIGENVALUE:
            refuse.append(f"covariance model of the MSCD is ill-conditioned (eigenvalue "
                          f"{result.negative_eigenvalue:.1e} x the largest, limit "
                          f"-{MAX_NEGATIVE_EIGENVALUE:.0e}): the variances do not follow a "
                          "diffusive line")
    if not ols > 0:
        refuse.append(f"least-squares MSCD slope gives D_charge = {ols:.3g} cm^2/s (not "
                      "positive)")
    if refuse:
        result.flags["charge_fit_refused"] = "; ".join(refuse)
        return result
    fit = kinisi_fit(lag_times_ps=lag_times_ps, msd_A2=mscd_A2, s_var_A4=s_var_A4,
                     n_obs=n_obs, seed=seed, settings=settings)
    result.fit = fit
    samples = fit.samples_cm2_per_s
    D = fit.median
    lo_r, hi_r = SAMPLER_OLS_RANGE
    if samples.size == 0 or not np.all(np.isfinite(samples)):
        refuse.append("the sampler returned non-finite samples")
    elif not lo_r <= D / ols <= hi_r:
        refuse.append(f"sampler median {D:.3e} cm^2/s is {D / ols:.3g} x the least-squares "
                      f"slope's {ols:.3e} cm^2/s (outside [{lo_r:g}, {hi_r:g}]: the sampler "
                      "ran away on a flat likelihood)")
    ratio = D / tracer.median if tracer.median > 0 else float("nan")
    lo_abs, hi_abs = ABSURD_RATIO_RANGE
    if not refuse and not (lo_abs <= ratio <= hi_abs):
        refuse.append(f"D_charge / D_tracer = {ratio:.3g} is outside [{lo_abs:g}, {hi_abs:g}]: "
                      "no physical ion correlation gives that")
    if refuse:
        result.flags["charge_fit_refused"] = "; ".join(refuse)
        return result
    result.status = "ok"
    result.D_cm2_per_s = D
    result.samples_cm2_per_s = samples
    ci = fit.ci95
    result.D_ci95_cm2_per_s = ci
    # Haven ratio: medians; interval from independently paired (shuffled) samples
    rng = np.random.default_rng(seed)
    a = tracer.samples_cm2_per_s
    b = rng.permutation(samples)
    m = min(a.size, b.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = a[:m] / b[:m]
    h = h[np.isfinite(h)]
    result.haven = tracer.median / D
    if h.size:
        result.haven_ci95 = [float(v) for v in np.percentile(h, [2.5, 97.5])]
    if ci[1] - ci[0] > MAX_RELATIVE_CI * D:
        result.flags["D_charge_uncertain"] = (
            f"95% interval [{ci[0]:.2e}, {ci[1]:.2e}] of D_charge is wider than D_charge = "
            f"{D:.2e} cm^2/s ({result.n_displacements_at_fit_start:.0f} independent charge "
            "displacements at the fit-window start)")
    lo_p, hi_p = PHYSICAL_RATIO_RANGE
    if not (lo_p <= ratio <= hi_p):
        result.flags["haven_out_of_range"] = (
            f"D_charge / D_tracer = {ratio:.3g} (Haven ratio {result.haven:.3g}) is outside "
            f"the physical range [{lo_p:g}, {hi_p:g}]")
    tci = tracer.ci95
    if tracer.median <= 0 or tci[1] - tci[0] > MAX_RELATIVE_CI * tracer.median:
        result.flags["haven_from_uncertain_D"] = ("the tracer D in the Haven ratio is itself "
                                                  "uncertain (see D_uncertain)")
    if result.flags:
        result.status = "flagged"
    return result
