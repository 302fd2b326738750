"""Analysis of a trajectory that is still growing: read only what was appended, keep state.

Used by the adaptive MD length (``harness md --until-converged``): after every chunk of
production the D estimate of the trajectory so far is needed, and re-reading the whole
dump each time would make the analysis cost grow quadratically with the run.

* :class:`TailDumpSource` - a :class:`~analysis.readers.LammpsDumpSource` that starts at a
  byte offset and yields only the complete frames after it; ``end_offset`` is where the
  next read starts (a frame still being written is left for the next call).
* :class:`IncrementalDisplacements` - the state of one streaming pass of
  :func:`analysis.collect.collect`: the unwrapper (previous frame), the first frame, the
  drift-corrected mobile displacements (float64; rounded to float32 for the
  maths, as the full analysis stores them), the
  framework MSD per element, the cells. ``update()`` takes new frames only.
* :func:`estimate_D` - the same MSD statistics, fit window and kinisi regression as
  :class:`~analysis.analyzer.TransportAnalyzer`, on frames ``first_frame:`` of the state
  (the start may move as the equilibration detection changes its mind).
* :func:`detect_equilibration` - Chodera's rule (J. Chem. Theory Comput. 12, 1799 (2016)):
  the discard t0 that maximises the number of effectively uncorrelated samples
  (N - t0) / g(t0) of a time series (here the potential energy), g the statistical
  inefficiency. Written here (no pymbar) in the same way pymbar's ``timeseries`` does it:
  g = 1 + 2 sum_t (1 - t/N) C(t), summed until C(t) first drops to <= 0.

With the same frames, the incremental state gives the MSD bit for bit equal to the full
analysis (the test ``tests/analysis/test_incremental.py`` checks it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from analysis.diffusion import (KinisiSettings, choose_fit_window, fit_lags, kinisi_fit,
                                loglog_exponent, msd_upper_bound_D)
from analysis.errors import AnalysisInputError
from analysis.msd import all_origin_statistics
from analysis.readers import ALKALI, FrameBlock, LammpsDumpSource, _MARK
from analysis.unwrap import Unwrapper

#: kinisi settings used by the convergence checks: kinisi's burn-in (500), half its samples,
#: 50 lags (~0.7 s CPU each). A shorter burn-in (150) biased D by +13 % at 10 ps on Brownian
#: ions (walkers not yet settled); calibration in benchmarks/ci_coverage.py
CHECK_KINISI = KinisiSettings(n_samples=500, n_burn=500, max_fit_points=50)


class TailDumpSource(LammpsDumpSource):
    """The complete frames of a LAMMPS text dump that start at or after ``offset`` bytes."""

    def __init__(self, path: str | Path, *, offset: int = 0, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.offset = int(offset)
        self.end_offset = self.offset

    def _frames_raw(self) -> Iterator[tuple[bytes, bool]]:
        n = self._first["n_atoms"]
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            buffer = handle.read()
        starts = [m.start() for m in re.finditer(re.escape(_MARK), buffer)]
        if starts and buffer[:starts[0]].strip():
            raise AnalysisInputError(f"{self.path}: byte offset {self.offset} is not at the "
                                     "start of a frame")
        ends = starts[1:] + [len(buffer)]
        for a, b in zip(starts, ends):
            frame = buffer[a:b]
            # complete: header (9 lines) + n atom lines, each ended by a newline
            if not frame.endswith(b"\n") or frame.count(b"\n") < 9 + n:
                break  # still being written: read again next time
            self.end_offset = self.offset + b
            yield frame, False


@dataclass
class _Layout:
    mobile_index: np.ndarray
    framework_index: np.ndarray
    element_index: dict[str, np.ndarray]


class IncrementalDisplacements:
    """Unwrapped, drift-corrected displacements of the mobile ions, grown frame block by
    frame block (the maths of :func:`analysis.collect.collect`, kept between calls)."""

    def __init__(self, symbols, *, mobile: str) -> None:
        symbols = np.asarray(symbols, dtype=object)
        if mobile not in set(symbols.tolist()):
            raise AnalysisInputError(f"species {mobile!r} is not in the trajectory "
                                     f"({', '.join(sorted(set(symbols.tolist())))})")
        mobile_index = np.flatnonzero(symbols == mobile)
        framework_index = np.flatnonzero(symbols != mobile)
        elements = sorted(set(symbols[framework_index].tolist()) - set(ALKALI))
        self.layout = _Layout(mobile_index, framework_index,
                              {e: np.flatnonzero(symbols == e) for e in elements})
        self.mobile = mobile
        self.unwrapper = Unwrapper()
        self.u0: np.ndarray | None = None
        self.steps: list[np.ndarray] = []
        self.cells: list[np.ndarray] = []
        self.mobile_blocks: list[np.ndarray] = []  # (k, ions, 3) float64, from frame 0
        self.framework_msd: dict[str, list[np.ndarray]] = {e: [] for e in elements}
        self.offset = 0  # dump byte offset of the next unread frame
        self._prev_step: int | None = None

    @property
    def n_frames(self) -> int:
        return int(sum(len(s) for s in self.steps))

    def update(self, blocks) -> int:
        """Append new frames (an iterable of :class:`FrameBlock`); returns how many."""
        added = 0
        lay = self.layout
        for block in blocks:
            if not np.isfinite(block.positions).all():
                raise AnalysisInputError("non-finite coordinates in the trajectory")
            keep = np.ones(len(block), dtype=bool)
            for q, step in enumerate(block.steps):  # repeated TIMESTEPs (appended restarts)
                if self._prev_step is not None and int(step) <= self._prev_step:
                    keep[q] = False
                else:
                    self._prev_step = int(step)
            if not keep.all():
                block = FrameBlock(steps=block.steps[keep], cells=block.cells[keep],
                                   origins=block.origins[keep], positions=block.positions[keep],
                                   images=None if block.images is None else block.images[keep],
                                   unwrapped=block.unwrapped)
            if not len(block):
                continue
            u = self.unwrapper(block)
            if self.u0 is None:
                self.u0 = u[0].copy()
            disp = u - self.u0[None]
            drift = (disp[:, lay.framework_index].mean(axis=1) if lay.framework_index.size
                     else np.zeros((len(u), 3)))
            mob = disp[:, lay.mobile_index] - drift[:, None, :]
            self.mobile_blocks.append(mob)
            for e, idx in lay.element_index.items():
                d = disp[:, idx] - drift[:, None, :]
                self.framework_msd[e].append(np.einsum("fni,fni->f", d, d) / len(idx))
            self.steps.append(np.asarray(block.steps, dtype=np.int64))
            self.cells.append(np.asarray(block.cells))
            added += len(block)
        return added

    def read_dump(self, path: str | Path, **source_kwargs) -> int:
        """Read the frames appended to a LAMMPS dump since the last call."""
        source = TailDumpSource(path, offset=self.offset, **source_kwargs)
        added = self.update(source.blocks())
        self.offset = source.end_offset
        return added

    def all_steps(self) -> np.ndarray:
        return np.concatenate(self.steps) if self.steps else np.zeros(0, dtype=np.int64)

    def mobile_array(self, first_frame: int = 0) -> np.ndarray:
        """(ions, frames, 3) displacements from ``first_frame`` on, drift-corrected and
        referred to that frame, rounded to float32 like the full analysis' store (so that
        both give the same numbers when the start of the analysis moves)."""
        stacked = np.concatenate(self.mobile_blocks, axis=0)[first_frame:]
        if first_frame:
            stacked = stacked - stacked[0]
        return np.ascontiguousarray(stacked.astype(np.float32).transpose(1, 0, 2),
                                    dtype=np.float64)

    def framework_msd_max_A2(self) -> float:
        """Largest per-element framework MSD (drift-corrected, from the first frame) over
        the frames read so far; 0 when there is no framework."""
        worst = 0.0
        for series in self.framework_msd.values():
            if series:
                worst = max(worst, float(np.concatenate(series).max()))
        return worst


@dataclass
class DEstimate:
    D_cm2_per_s: float
    ci95_cm2_per_s: list[float]
    msd_end_of_fit_A2: float
    msd_max_A2: float
    loglog_slope: float
    fit_window_ps: list[float]
    n_frames: int
    duration_ps: float
    time_ps: np.ndarray
    msd_A2: np.ndarray
    #: (MSD(t_e) + 2 sigma) / (6 t_e) at the fit-window end t_e, sigma the standard error of
    #: the MSD there: an upper bound on D for any MSD = c + 6 D t with c >= 0 (vibration
    #: adds c > 0) that does not rely on the regression (kinisi's posterior is unusable on
    #: a flat MSD)
    D_upper_msd_cm2_per_s: float = float("nan")

    @property
    def rel_half_width(self) -> float:
        """Half the 95 % interval over the median (inf when D <= 0)."""
        lo, hi = self.ci95_cm2_per_s
        return float((hi - lo) / (2 * self.D_cm2_per_s)) if self.D_cm2_per_s > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"D_cm2_per_s": self.D_cm2_per_s, "ci95_cm2_per_s": self.ci95_cm2_per_s,
                "rel_half_width_ci95": self.rel_half_width,
                "msd_end_of_fit_A2": self.msd_end_of_fit_A2, "msd_max_A2": self.msd_max_A2,
                "loglog_slope": self.loglog_slope, "fit_window_ps": self.fit_window_ps,
                "n_frames": self.n_frames, "duration_ps": self.duration_ps,
                "D_upper_msd_cm2_per_s": self.D_upper_msd_cm2_per_s}


def estimate_D(displacements: np.ndarray, *, frame_interval_ps: float, seed: int = 0,
               settings: KinisiSettings | None = None,
               max_samples_per_lag: int | None = 2_000_000, fit: bool = True) -> DEstimate:
    """D and its 95 % interval from (ions, frames, 3) displacements, with the full
    analysis' defaults (fit window [10 %, 50 %], kinisi regression on the modelled
    variance); ``settings`` defaults to :data:`CHECK_KINISI`."""
    settings = settings or CHECK_KINISI
    n_ions, n = displacements.shape[:2]
    # ``fit=False``: MSD statistics and the upper bound only, no kinisi regression
    if n < 10:
        raise AnalysisInputError(f"only {n} frames: a diffusion fit needs at least 10")
    window = choose_fit_window(frame_interval_ps=frame_interval_ps, n_frames=n)
    lags = fit_lags(window, max_points=settings.max_fit_points)
    stats = all_origin_statistics(displacements, var_lags=lags,
                                  max_samples_per_lag=max_samples_per_lag)
    msd = stats.msd
    if fit:
        posterior = kinisi_fit(lag_times_ps=lags * frame_interval_ps, msd_A2=msd[lags],
                               s_var_A4=stats.s_var, n_obs=n_ions * (n - 1) / lags, seed=seed,
                               settings=settings)
        D, ci = posterior.median, posterior.ci95
    else:  # MSD statistics only (the plateau rule needs no regression)
        D, ci = float("nan"), [float("nan"), float("nan")]
    time_ps = np.arange(n) * frame_interval_ps
    idx = np.arange(window.start_index, window.end_index + 1)
    end = int(lags[-1])
    upper = msd_upper_bound_D(msd_A2=msd[end], s_var_A4=stats.s_var[-1],
                              n_obs=n_ions * (n - 1) / end, time_ps=time_ps[end])
    return DEstimate(D_cm2_per_s=D, ci95_cm2_per_s=ci,
                     msd_end_of_fit_A2=float(msd[window.end_index]),
                     msd_max_A2=float(msd.max()),
                     loglog_slope=loglog_exponent(time_ps[idx], msd[idx]),
                     fit_window_ps=window.as_list(), n_frames=n,
                     duration_ps=float(frame_interval_ps * (n - 1)), time_ps=time_ps,
                     msd_A2=msd, D_upper_msd_cm2_per_s=float(upper))


# ---------------------------------------------------------------------------------------
# equilibration detection
# ---------------------------------------------------------------------------------------

def statistical_inefficiency(series: np.ndarray) -> float:
    """g = 1 + 2 sum_{t>=1} (1 - t/N) C(t), C the normalised autocorrelation, summed until
    C first drops to <= 0 (pymbar ``statisticalInefficiency`` with fast=False); g >= 1."""
    x = np.asarray(series, dtype=float)
    n = x.size
    if n < 3:
        return 1.0
    x = x - x.mean()
    var = float(np.dot(x, x)) / n
    if var <= 0:
        return 1.0
    from scipy.fft import irfft, next_fast_len, rfft

    nfft = next_fast_len(2 * n, real=True)
    spectrum = rfft(x, nfft)
    acf = irfft(spectrum * np.conj(spectrum), nfft)[:n] / (var * np.arange(n, 0, -1))
    g = 1.0
    for t in range(1, n - 1):
        if acf[t] <= 0:
            break
        g += 2.0 * acf[t] * (1.0 - t / n)
    return max(1.0, g)


def detect_equilibration(series: np.ndarray, *, max_fraction: float = 0.5,
                         n_candidates: int = 50) -> tuple[int, float, float]:
    """(t0, g, N_eff): the discard that maximises (N - t0) / g(t0), with t0 searched over
    ``n_candidates`` points of the first ``max_fraction`` of the series."""
    x = np.asarray(series, dtype=float)
    n = x.size
    if n < 10:
        return 0, 1.0, float(n)
    candidates = np.unique(np.rint(np.linspace(0, int(max_fraction * n),
                                               n_candidates)).astype(int))
    best = (0, 1.0, -1.0)
    for t0 in candidates:
        g = statistical_inefficiency(x[t0:])
        n_eff = (n - t0) / g
        if n_eff > best[2]:
            best = (int(t0), g, n_eff)
    return best
