"""PNG plots of the analysis. matplotlib is imported inside the functions (Agg canvas, no
global backend state), so importing :mod:`analysis` stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.output import write_figure


def _figure(*, width: float = 6.0, height: float = 4.2, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # constrained layout: colour bars, labels and titles never run into a neighbouring axis
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_msd(path: Path, *, time_ps, msd_axes, window_ps, slope_samples_A2_per_ps=None,
             intercept_samples_A2=None, ols=None, species: str = "Li",
             D_text: str = "") -> Path:
    fig = _figure()
    ax = fig.add_subplot(111)
    t = np.asarray(time_ps)
    total = np.asarray(msd_axes).sum(axis=1)
    step = max(1, len(t) // 4000)
    ax.plot(t[::step], total[::step], color="k", lw=1.5, label=f"MSD {species}")
    for k, name in enumerate("xyz"):
        ax.plot(t[::step], msd_axes[::step, k] * 3, lw=0.7, alpha=0.7, label=f"3 x MSD_{name}")
    ax.axvspan(window_ps[0], window_ps[1], color="tab:blue", alpha=0.1, label="fit window")
    fit_t = np.linspace(window_ps[0], window_ps[1], 50)
    if slope_samples_A2_per_ps is not None and len(slope_samples_A2_per_ps):
        inter = (intercept_samples_A2 if intercept_samples_A2 is not None
                 else np.zeros_like(slope_samples_A2_per_ps))
        lines = np.outer(slope_samples_A2_per_ps, fit_t) + inter[:, None]
        lo, mid, hi = np.percentile(lines, [2.5, 50, 97.5], axis=0)
        ax.fill_between(fit_t, lo, hi, color="tab:red", alpha=0.3, label="kinisi 95% CI")
        ax.plot(fit_t, mid, color="tab:red", lw=1.2, label="kinisi median")
    if ols is not None:
        ax.plot(fit_t, ols[0] * fit_t + ols[1], "--", color="tab:green", lw=1, label="OLS")
    ax.axhline(20.0, color="grey", ls=":", lw=0.8, label="20 A^2 (seed 004)")
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel(r"MSD ($\AA^2$)")
    ax.set_title(D_text, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return write_figure(path, fig)


def plot_vanhove(path: Path, *, self_part, distinct_part, species: str = "Li") -> Path:
    fig = _figure(ncols=2, height=4.5, width=5.2)
    ax1 = fig.add_subplot(121)
    ax2 = fig.add_subplot(122)
    sp = self_part
    from matplotlib.colors import PowerNorm

    r_cut = sp.r_A <= max(2.0, _upper_r(sp))
    # t = 0 is a delta at r = 0 (every ion at its origin): it is left out, or it sets the
    # colour scale and hides the spreading; a square-root scale shows the tails
    rows = sp.lag_times_ps > 0
    values = sp.probability_per_A[rows][:, r_cut]
    mesh = ax1.pcolormesh(sp.r_A[r_cut], sp.lag_times_ps[rows], values, shading="auto",
                          cmap="viridis", norm=PowerNorm(gamma=0.5, vmin=0.0,
                                                         vmax=max(float(values.max()), 1e-12)))
    fig.colorbar(mesh, ax=ax1, label=r"$4\pi r^2 G_s(r,t)$ (1/$\AA$)")
    ax1.set_xlabel(r"r ($\AA$)")
    ax1.set_ylabel("t (ps)")
    ax1.set_title(f"self part, {species} (t > 0; square-root colour scale)", fontsize=9)
    if distinct_part is not None:
        dp = distinct_part
        mesh = ax2.pcolormesh(dp.r_A, dp.lag_times_ps, dp.gd, shading="auto", cmap="magma")
        fig.colorbar(mesh, ax=ax2, label=r"$G_d(r,t)$ (dimensionless)")
        ax2.set_xlabel(r"r ($\AA$)")
        ax2.set_ylabel("t (ps)")
        ax2.set_title(f"distinct part, {species}-{species}", fontsize=9)
    return write_figure(path, fig)


def _upper_r(sp) -> float:
    cdf = np.cumsum(sp.probability_per_A[-1]) * sp.dr_A
    idx = np.searchsorted(cdf, 0.999)
    return float(sp.r_A[min(idx, len(sp.r_A) - 1)]) * 1.1


def plot_rdf(path: Path, *, rdf) -> Path:
    fig = _figure(width=6.5)
    ax = fig.add_subplot(111)
    for k, (name, g) in enumerate(rdf.pairs.items()):
        ax.plot(rdf.r, g + 0 * k, lw=1, label=name)
    ax.set_xlabel(r"r ($\AA$)")
    ax.set_ylabel("g(r) (dimensionless)")
    ax.set_title(f"partial RDFs, {rdf.n_frames} frames, "
                 f"{rdf.window_ps[0]:.1f}-{rdf.window_ps[1]:.1f} ps", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return write_figure(path, fig)
