"""van Hove correlation of the mobile ions, self and distinct parts (seed 001, Fig. 18).

Self part, the distribution of one ion's displacement after a lag t:

    G_s(r, t) = 1/N < sum_i delta(r - |r_i(t0 + t) - r_i(t0)|) > / (4 pi r^2)      [A^-3]

normalised so that int 4 pi r^2 G_s dr = 1; its second moment int r^2 4 pi r^2 G_s dr is the
MSD at that lag. We store both G_s and the radial probability P_s(r, t) = 4 pi r^2 G_s.

Distinct part, where the other ions are at t0 + t relative to where ion i was at t0:

    G_d(r, t) = 1/(N rho) < sum_i sum_{j != i} delta(r - |r_j(t0 + t) - r_i(t0)|) > / (4 pi r^2)

with rho = N / V, dimensionless: G_d(r, 0) is the ion-ion RDF (-> (N-1)/N at large r) and
G_d(r, t -> inf) -> (N-1)/N everywhere. Distances use all periodic images up to ``r_max``,
including the images of ion i itself (lattice copies: other particles of the periodic
system, counted by the RDF too), so G_d(r, 0) equals the RDF g_AA(r) at every r, also
beyond the smallest cell width; only the unwrapped displacement of i itself (the n = 0
image) belongs to the self part. Positions are drift-corrected (framework frame), and the
cell is that of frame t0 + t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.msd import MSDResult
from analysis.rdf import pair_distances


@dataclass
class VanHoveSelf:
    lag_times_ps: np.ndarray  # (nt,)
    r_A: np.ndarray  # (nr,) bin centres
    dr_A: float
    probability_per_A: np.ndarray  # (nt, nr) P_s = 4 pi r^2 G_s
    gs_per_A3: np.ndarray  # (nt, nr)
    second_moment_A2: np.ndarray  # (nt,) <|dr|^2> from the same samples (exact, unbinned)
    samples: np.ndarray  # (nt,) number of ion-origin samples per lag

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lag_times_ps": self.lag_times_ps, "r_A": self.r_A,
                "P_self_per_A": self.probability_per_A, "Gs_per_A3": self.gs_per_A3,
                "second_moment_A2": self.second_moment_A2, "samples": self.samples,
                "dr_A": np.array(self.dr_A)}


def self_part(result: MSDResult, *, frame_interval_ps: float,
              r_max_A: float | None = None) -> VanHoveSelf:
    """Normalise the |dr| histograms gathered by :func:`analysis.msd.all_origin_statistics`."""
    dr = result.vh_dr
    n_bins = max((h.size for h in result.vh_counts), default=1)
    if r_max_A is not None:
        n_bins = max(n_bins, int(np.ceil(r_max_A / dr)))
    counts = np.zeros((len(result.vh_counts), n_bins))
    for k, h in enumerate(result.vh_counts):
        counts[k, :h.size] = h
    samples = result.vh_samples.astype(float)
    edges = np.arange(n_bins + 1) * dr
    r = 0.5 * (edges[1:] + edges[:-1])
    prob = counts / (np.maximum(samples, 1)[:, None] * dr)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    gs = counts / (np.maximum(samples, 1)[:, None] * shell[None, :])
    return VanHoveSelf(lag_times_ps=result.vh_lags * frame_interval_ps, r_A=r, dr_A=dr,
                       probability_per_A=prob, gs_per_A3=gs,
                       second_moment_A2=result.vh_second_moment, samples=result.vh_samples)


@dataclass
class VanHoveDistinct:
    lag_times_ps: np.ndarray
    r_A: np.ndarray
    dr_A: float
    gd: np.ndarray  # (nt, nr) dimensionless
    origins_per_lag: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lag_times_ps": self.lag_times_ps, "r_A": self.r_A, "Gd": self.gd,
                "origins_per_lag": self.origins_per_lag, "dr_A": np.array(self.dr_A)}


def self_image_distances(displacements: np.ndarray, cell: np.ndarray, *,
                         r_max: float) -> np.ndarray:
    """|dr_i + n . cell| <= r_max for every lattice vector n != 0: the periodic images of each
    ion, seen from where that ion was a lag earlier (``displacements`` are unwrapped).

    In a periodic system these images are other particles: the RDF counts them (at lag 0
    they are the self-images at lattice distances), so G_d must too, or G_d(r, 0) and g(r)
    differ beyond the smallest cell width. Only n = 0 (the ion itself) is the self part.
    """
    from analysis.unwrap import perpendicular_widths

    cell = np.asarray(cell, dtype=float)
    reach = np.ceil(r_max / perpendicular_widths(cell)).astype(int) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"),
                    -1).reshape(-1, 3)
    frac = np.asarray(displacements, float) @ np.linalg.inv(cell)
    base = -np.rint(frac).astype(np.int64)  # the image nearest to the ion's old position
    shifts = base[:, None, :] + grid[None, :, :]  # (ions, images, 3)
    vectors = np.asarray(displacements, float)[:, None, :] + shifts @ cell
    d = np.linalg.norm(vectors, axis=2)
    keep = (d <= r_max) & np.any(shifts != 0, axis=2)
    return d[keep]


def distinct_part(frames_at, *, lags: np.ndarray, n_frames: int, cells: np.ndarray,
                  frame_interval_ps: float, r_max_A: float = 8.0, dr_A: float = 0.05,
                  max_pairs_per_lag: int = 5_000_000, max_origins: int = 50) -> VanHoveDistinct:
    """G_d(r, t) at the given frame lags.

    ``frames_at(indices)`` returns ion positions (len(indices), N, 3). Time origins are
    spread evenly over the trajectory, as many as fit ``max_pairs_per_lag`` ion pairs
    (at most ``max_origins``).
    """
    lags = np.asarray(lags, dtype=np.int64)
    probe = frames_at([0])[0]
    n = probe.shape[0]
    n_bins = int(np.ceil(r_max_A / dr_A))
    edges = np.arange(n_bins + 1) * dr_A
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    per_origin = max(n * (n - 1), 1)
    wanted = int(np.clip(max_pairs_per_lag // per_origin, 1, max_origins))
    gd = np.zeros((len(lags), n_bins))
    used = np.zeros(len(lags), dtype=np.int64)
    for q, lag in enumerate(lags):
        available = n_frames - lag
        origins = np.unique(np.linspace(0, available - 1, min(wanted, available)).astype(int))
        counts = np.zeros(n_bins)
        density_sum = 0.0
        for t0 in origins:
            a, b = frames_at([t0, t0 + lag])
            cell = cells[t0 + lag]
            volume = abs(float(np.linalg.det(cell)))
            same = lag == 0
            for i, j, d in pair_distances(a, b, cell, r_max=r_max_A, same=same):
                keep = i != j  # i == j: counted below from the unwrapped displacement
                counts += np.bincount(np.minimum((d[keep] / dr_A).astype(np.int64), n_bins - 1),
                                      minlength=n_bins)
            d = self_image_distances(b - a, cell, r_max=r_max_A)
            counts += np.bincount(np.minimum((d / dr_A).astype(np.int64), n_bins - 1),
                                  minlength=n_bins)
            density_sum += n / volume
        rho = density_sum / len(origins)
        gd[q] = counts / (len(origins) * n * rho * shell)
        used[q] = len(origins)
    return VanHoveDistinct(lag_times_ps=lags * frame_interval_ps,
                           r_A=0.5 * (edges[1:] + edges[:-1]), dr_A=dr_A, gd=gd,
                           origins_per_lag=used)
