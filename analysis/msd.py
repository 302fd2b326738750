"""Mean-squared displacement over all time origins, by FFT, one ion block at a time.

For one coordinate series x_t (t = 0..N-1) the all-origins MSD at lag k is

    MSD(k) = [ sum_{t<N-k} x_t^2 + sum_{t>=k} x_t^2 - 2 sum_{t<N-k} x_t x_{t+k} ] / (N - k)

(Calandrini et al., nMOLDYN; the algorithm of MDAnalysis/tidynamics). The correlation
sum is the inverse FFT of |FFT(x)|^2 with zero padding to >= 2N. Because that is linear,
the power spectra of all ions are summed in frequency space and only one inverse FFT per
axis is done for the whole species; each ion costs three forward real FFTs.

Alongside, at a chosen set of lags, the squared displacements s = |r(t+k) - r(t)|^2 of
every ion and origin (origins strided to at most ``max_samples_per_lag`` samples) give the
variance of s (used by kinisi's covariance model) and the self van Hove histogram of |dr|.
Everything is float64; input may be a :class:`~analysis.store.DisplacementStore` or an
array shaped (ions, frames, 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass
class MSDResult:
    """All-origins MSD of one species and per-lag statistics.

    ``msd_axes`` has shape (n_frames, 3) (x, y, z, in A^2) for lags 0..n_frames-1;
    ``n_obs`` is kinisi's number of independent observations per lag,
    n_ions * (n_frames - 1) / lag. ``var_lags``/``s_var`` hold the variance (ddof=1) of the
    squared displacement at selected lags and ``s_mean`` its mean from the same samples.
    ``vh_counts[i]`` is the histogram of |dr| at ``vh_lags[i]`` in bins of ``vh_dr``.
    """

    msd_axes: np.ndarray
    n_ions: int
    var_lags: np.ndarray
    s_mean: np.ndarray
    s_var: np.ndarray
    s_samples: np.ndarray
    vh_lags: np.ndarray
    vh_counts: list[np.ndarray]
    vh_samples: np.ndarray
    vh_second_moment: np.ndarray
    vh_dr: float

    @property
    def n_frames(self) -> int:
        return self.msd_axes.shape[0]

    @property
    def msd(self) -> np.ndarray:
        return self.msd_axes.sum(axis=1)

    @property
    def n_obs(self) -> np.ndarray:
        lags = np.arange(self.n_frames, dtype=float)
        with np.errstate(divide="ignore"):
            obs = self.n_ions * (self.n_frames - 1) / lags
        obs[0] = np.inf
        return obs


def fft_length(n_frames: int) -> int:
    from scipy.fft import next_fast_len

    return next_fast_len(2 * n_frames, real=True)


class _FFTAccumulator:
    """Sums over ions of |X(f)|^2 and x_t^2 per axis; finalises to the summed MSD."""

    def __init__(self, n_frames: int) -> None:
        self.n = n_frames
        self.nfft = fft_length(n_frames)
        self.power = np.zeros((self.nfft // 2 + 1, 3))
        self.squares = np.zeros((n_frames, 3))
        self.count = 0

    def add(self, x: np.ndarray, *, padded: np.ndarray | None = None) -> None:
        """x: (m, n_frames, 3) float64.

        ``padded``, if given, is an (m, nfft, 3) array whose first n_frames frames are
        ``x`` (a view of it) and the rest zeros: it is transformed as it is, which saves
        the zero-padded copy the FFT would otherwise make (same numbers either way).
        """
        from scipy.fft import rfft

        workers = os.cpu_count() or 1
        if padded is not None:
            spectrum = rfft(padded, axis=1, workers=workers)
        else:
            spectrum = rfft(x, n=self.nfft, axis=1, workers=workers)
        pairs = spectrum.view(np.float64).reshape(x.shape[0], -1, 3, 2)
        # |X|^2 summed over ions one ion after the other: the same numbers (and order of
        # additions) as np.einsum("ifjc,ifjc->fj", pairs, pairs), at about half the time
        power = np.zeros_like(self.power)
        for i in range(x.shape[0]):
            re, im = pairs[i, ..., 0], pairs[i, ..., 1]
            power += re * re + im * im
        self.power += power
        self.squares += np.einsum("itj,itj->tj", x, x)
        self.count += x.shape[0]

    def msd_sum(self) -> np.ndarray:
        """Sum over ions of the per-axis MSD, shape (n_frames, 3)."""
        from scipy.fft import irfft

        n = self.n
        corr = irfft(self.power, n=self.nfft, axis=0)[:n]
        prefix = np.concatenate([np.zeros((1, 3)), np.cumsum(self.squares, axis=0)])
        lags = np.arange(n)
        s1 = prefix[n - lags] + (prefix[n] - prefix[lags])
        return (s1 - 2.0 * corr) / (n - lags)[:, None]


def msd_of_series(series: np.ndarray) -> np.ndarray:
    """Per-axis all-origins MSD of one (n_frames, 3) series (e.g. a centre of mass)."""
    acc = _FFTAccumulator(series.shape[0])
    acc.add(np.asarray(series, dtype=float)[None])
    return acc.msd_sum()


def origin_stride(lag: int, *, n_frames: int, n_ions: int, max_samples_per_lag: int | None) -> int:
    """Stride between time origins so that ions x origins <= max_samples_per_lag."""
    if not max_samples_per_lag:
        return 1
    available = n_ions * (n_frames - lag)
    return max(1, int(np.ceil(available / float(max_samples_per_lag))))


def choose_chunk(n_frames: int, *, budget_bytes: int = 256 << 20) -> int:
    """Ions per block so that the float64 block and its spectrum fit in ``budget_bytes``."""
    per_ion = 3 * 8 * n_frames + 3 * 16 * (fft_length(n_frames) // 2 + 1) + 3 * 8 * n_frames
    return int(max(1, min(512, budget_bytes // per_ion)))


def all_origin_statistics(displacements, *, var_lags=(), vh_lags=(), vh_dr: float = 0.05,
                          max_samples_per_lag: int | None = 2_000_000,
                          chunk_ions: int | None = None,
                          memory_budget_bytes: int = 256 << 20) -> MSDResult:
    """MSD (all lags, all origins) plus lag statistics and self van Hove histograms.

    ``displacements`` is a :class:`~analysis.store.DisplacementStore` or an array
    (ions, frames, 3). Memory: one block of ``chunk_ions`` ions over all frames, float64,
    plus its spectrum (about 72 bytes per ion and frame), capped by ``memory_budget_bytes``.
    """
    if isinstance(displacements, np.ndarray):
        n_ions, n_frames = displacements.shape[:2]

        def read(a: int, b: int, out: np.ndarray) -> None:
            out[...] = displacements[a:b]
    else:
        n_ions, n_frames = displacements.n_atoms, displacements.n_frames

        def read(a: int, b: int, out: np.ndarray) -> None:
            displacements.atoms(a, b, out=out)
    if n_frames < 2:
        raise ValueError("the MSD needs at least two frames")
    chunk = chunk_ions or choose_chunk(n_frames, budget_bytes=memory_budget_bytes)
    var_lags = np.asarray(sorted(set(int(k) for k in var_lags if 0 < int(k) < n_frames)),
                          dtype=np.int64)
    vh_lags = np.asarray(sorted(set(int(k) for k in vh_lags if 0 <= int(k) < n_frames)),
                         dtype=np.int64)
    union = sorted(set(var_lags.tolist()) | set(vh_lags.tolist()))
    strides = {k: origin_stride(k, n_frames=n_frames, n_ions=n_ions,
                                max_samples_per_lag=max_samples_per_lag) for k in union}
    s_sum = {k: 0.0 for k in union}
    s2_sum = {k: 0.0 for k in union}
    s_count = {k: 0 for k in union}
    histograms = {k: np.zeros(0, dtype=np.int64) for k in vh_lags.tolist()}
    vh_set = set(vh_lags.tolist())

    acc = _FFTAccumulator(n_frames)
    # one zero-padded block reused for every ion block: the displacements are read into
    # its first n_frames frames and it goes to the FFT as it is (no per-block allocations)
    padded = np.zeros((min(chunk, n_ions), acc.nfft, 3))
    # ions per pass of the lag loop: a few MB, so the strided reads stay in cache
    sub = max(1, (8 << 20) // (24 * n_frames))
    for start in range(0, n_ions, chunk):
        m = min(n_ions, start + chunk) - start
        x = padded[:m, :n_frames]
        read(start, start + m, x)
        x -= x.mean(axis=1, keepdims=True)  # constant shifts leave the MSD unchanged
        acc.add(x, padded=padded[:m])
        for k in union:
            step = strides[k]
            s = _squared_displacements(x, k, step, n_frames=n_frames, sub=sub)
            s_sum[k] += float(s.sum())
            s2_sum[k] += float(np.square(s).sum())
            s_count[k] += s.size
            if k in vh_set:
                bins = np.floor(np.sqrt(s.ravel()) / vh_dr).astype(np.int64)
                counts = np.bincount(bins)
                h = histograms[k]
                if counts.size > h.size:
                    h = np.concatenate([h, np.zeros(counts.size - h.size, dtype=np.int64)])
                h[:counts.size] += counts
                histograms[k] = h
    msd_axes = acc.msd_sum() / n_ions
    msd_axes[0] = 0.0

    def finish(keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = np.array([s_sum[k] / s_count[k] for k in keys]) if len(keys) else np.zeros(0)
        var = np.array([(s2_sum[k] - s_sum[k] ** 2 / s_count[k]) / max(s_count[k] - 1, 1)
                        for k in keys]) if len(keys) else np.zeros(0)
        count = np.array([s_count[k] for k in keys], dtype=np.int64)
        return mean, np.maximum(var, 0.0), count

    s_mean, s_var, s_samples = finish(var_lags.tolist())
    vh_mean, _, vh_samples = finish(vh_lags.tolist())
    return MSDResult(msd_axes=msd_axes, n_ions=n_ions, var_lags=var_lags, s_mean=s_mean,
                     s_var=s_var, s_samples=s_samples, vh_lags=vh_lags,
                     vh_counts=[histograms[k] for k in vh_lags.tolist()],
                     vh_samples=vh_samples, vh_second_moment=vh_mean, vh_dr=float(vh_dr))


def _squared_displacements(x: np.ndarray, lag: int, step: int, *, n_frames: int,
                           sub: int) -> np.ndarray:
    """|x[i, t + lag] - x[i, t]|^2 for origins t = 0, step, ... < n_frames - lag; (m, count).

    Axis by axis (long strided loops instead of numpy's slow loops over a length-3 axis)
    and ``sub`` ions at a time (cache). The sum is formed as (dx^2 + dz^2) + dy^2, the
    order numpy's einsum("ijk,ijk->ij") uses, so the values are the same to the last bit
    as ``np.einsum("ijk,ijk->ij", d, d)`` of the displacement vectors d.
    """
    count = len(range(0, n_frames - lag, step))
    s = np.empty((x.shape[0], count))
    d = np.empty((min(sub, x.shape[0]), count))
    for a in range(0, x.shape[0], sub):
        block = x[a:a + sub]
        end = block[:, lag::step][:, :count]
        origin = block[:, 0:n_frames - lag:step]
        out = s[a:a + sub]
        dd = d[:out.shape[0]]
        np.subtract(end[..., 0], origin[..., 0], out=dd)
        np.multiply(dd, dd, out=out)
        for axis in (2, 1):
            np.subtract(end[..., axis], origin[..., axis], out=dd)
            dd *= dd
            out += dd
    return s


def collective_statistics(series: np.ndarray, *, lags) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MSD of one series at all lags plus mean/variance (ddof=1) of s at ``lags``.

    Used for the mean-square charge displacement: ``series`` is the sum of the ion
    displacements. All origins are used (one series is cheap).
    """
    series = np.asarray(series, dtype=float)
    series = series - series.mean(axis=0)
    msd = msd_of_series(series).sum(axis=1)
    msd[0] = 0.0
    n = series.shape[0]
    means, variances = [], []
    for k in lags:
        d = series[k:] - series[:n - k]
        s = np.einsum("ij,ij->i", d, d)
        means.append(s.mean())
        variances.append(s.var(ddof=1) if s.size > 1 else 0.0)
    return msd, np.asarray(means), np.asarray(variances)
