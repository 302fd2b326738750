"""Radial distribution functions per species pair, and the RDF MAE of seed 003.

    g_AB(r) = V / (N_A N_B) < sum_{i in A} sum_{j in B, j != i} delta(r - r_ij) > / (4 pi r^2)

(seed 003, eq. 3; ordered pairs, so g_AA -> (N_A - 1)/N_A at large r). All periodic images
within ``r_max`` are counted, so ``r_max`` may exceed half the cell (small AIMD cells).
Frames are sampled evenly over the trajectory while it streams (the stride doubles when
more than ``max_frames`` have been kept), and the average is taken over a time window.

    MAE_RDF = int_0^{r_cut} | g_1(r) - g_2(r) | dr,   r_cut = 10 A   (seed 003, eq. 4)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.unwrap import perpendicular_widths


def pair_distances(a: np.ndarray, b: np.ndarray, cell: np.ndarray, *, r_max: float,
                   same: bool):
    """Yield (i, j, distance) arrays for all pairs a_i - b_j (all periodic images) with
    d <= r_max. ``same`` excludes i == j at zero shift (a and b are the same atoms).

    Both sets are wrapped into the cell; the images of b that can lie within r_max of the
    cell are put in a k-d tree (scipy), so the cost grows with the number of pairs found,
    not with len(a) x len(b) x images.
    """
    from scipy.spatial import cKDTree

    cell = np.asarray(cell, dtype=float)
    inverse = np.linalg.inv(cell)
    fa = a @ inverse
    fa -= np.floor(fa)
    fb = b @ inverse
    fb -= np.floor(fb)
    widths = perpendicular_widths(cell)
    reach = np.ceil(r_max / widths).astype(int)
    shifts = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"),
                      -1).reshape(-1, 3)
    images = (fb[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    # keep only images within r_max of the cell (in fractional units, per axis)
    margin = r_max / widths
    inside = np.all((images > -margin) & (images < 1 + margin), axis=1)
    image_index = np.flatnonzero(inside)
    tree_b = cKDTree(images[inside] @ cell)
    tree_a = cKDTree(fa @ cell)
    pairs = tree_a.sparse_distance_matrix(tree_b, r_max, output_type="ndarray")
    i = pairs["i"].astype(np.int64)
    flat = image_index[pairs["j"]]
    j = flat % len(b)
    d = pairs["v"]
    if same:
        zero = int(np.flatnonzero(np.all(shifts == 0, axis=1))[0])
        keep = ~((i == j) & (flat // len(b) == zero))
        i, j, d = i[keep], j[keep], d[keep]
    if i.size:
        yield i, j, d


def frame_pair_counts(positions: np.ndarray, cell: np.ndarray, *, codes: np.ndarray,
                      n_groups: int, r_max: float, dr: float) -> np.ndarray:
    """Histogram of ordered pair distances by (group_i, group_j): (n_groups, n_groups, bins)."""
    n_bins = int(np.ceil(r_max / dr))
    counts = np.zeros(n_groups * n_groups * n_bins, dtype=np.int64)
    for i, j, d in pair_distances(positions, positions, cell, r_max=r_max, same=True):
        key = (codes[i] * n_groups + codes[j]) * n_bins + np.minimum((d / dr).astype(np.int64),
                                                                     n_bins - 1)
        counts += np.bincount(key, minlength=counts.size)
    return counts.reshape(n_groups, n_groups, n_bins)


@dataclass
class RDFAccumulator:
    """Per-frame pair histograms of evenly spaced frames, kept while a trajectory streams."""

    symbols: np.ndarray
    r_max: float = 10.0
    dr: float = 0.05
    max_frames: int = 100
    stride: int = 1
    frames: list[tuple[int, float, float, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.elements = sorted(set(self.symbols.tolist()))
        self.codes = np.array([self.elements.index(s) for s in self.symbols])
        self.n_per_element = np.bincount(self.codes, minlength=len(self.elements))

    def wants(self, index: int) -> bool:
        return index % self.stride == 0

    def add(self, index: int, time_ps: float, positions: np.ndarray, cell: np.ndarray) -> None:
        counts = frame_pair_counts(positions, cell, codes=self.codes,
                                   n_groups=len(self.elements), r_max=self.r_max, dr=self.dr)
        volume = abs(float(np.linalg.det(cell)))
        self.frames.append((index, time_ps, volume, counts))
        while len(self.frames) > self.max_frames:
            self.stride *= 2
            self.frames = [f for f in self.frames if f[0] % self.stride == 0]

    def result(self, *, window_ps: tuple[float, float] | None = None) -> "RDFResult":
        chosen = [f for f in self.frames
                  if window_ps is None or window_ps[0] <= f[1] <= window_ps[1]]
        if not chosen:
            from analysis.errors import AnalysisInputError

            times = [f[1] for f in self.frames]
            span = f"{min(times):g}-{max(times):g} ps" if times else "none"
            raise AnalysisInputError(f"no RDF frames in the requested window {window_ps} ps "
                                     f"(the sampled frames span {span}); choose an rdf window "
                                     "inside the trajectory")
        n_bins = chosen[0][3].shape[-1]
        edges = np.arange(n_bins + 1) * self.dr
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        weighted = sum(v * c for _, _, v, c in chosen) / len(chosen)
        pairs: dict[str, np.ndarray] = {}
        ne = self.n_per_element
        for a in range(len(self.elements)):
            for b in range(a, len(self.elements)):
                g = weighted[a, b] / (ne[a] * ne[b] * shell)
                pairs[f"{self.elements[a]}-{self.elements[b]}"] = g
        n = len(self.symbols)
        total = weighted.sum(axis=(0, 1)) / (n * n * shell)
        return RDFResult(r=0.5 * (edges[1:] + edges[:-1]), pairs=pairs, total=total,
                         n_frames=len(chosen),
                         window_ps=(min(f[1] for f in chosen), max(f[1] for f in chosen)))


@dataclass
class RDFResult:
    r: np.ndarray
    pairs: dict[str, np.ndarray]
    total: np.ndarray
    n_frames: int
    window_ps: tuple[float, float]

    def table(self) -> tuple[list[str], np.ndarray]:
        names = ["r_A"] + [f"g_{p}" for p in self.pairs] + ["g_total"]
        data = np.column_stack([self.r, *self.pairs.values(), self.total])
        return names, data


def rdf_mae(r: np.ndarray, g1: np.ndarray, g2: np.ndarray, *, r_cut_A: float = 10.0,
            r2: np.ndarray | None = None) -> float:
    """int_0^r_cut |g1 - g2| dr. ``r`` are bin centres of equal width (as written by this
    package): the integral is the sum over bins below r_cut of |g1 - g2| x width. Other grids
    use the trapezoid rule. ``g2`` is interpolated onto ``r`` when its grid ``r2`` differs."""
    r = np.asarray(r, float)
    g1 = np.asarray(g1, float)
    g2 = np.interp(r, r2, g2) if r2 is not None else np.asarray(g2, float)
    diff = np.abs(g1 - g2)
    widths = np.diff(r)
    if r.size > 1 and np.allclose(widths, widths[0]) and abs(r[0] - widths[0] / 2) < 1e-6:
        dr = widths[0]
        keep = r + dr / 2 <= r_cut_A + 1e-6
        return float(diff[keep].sum() * dr)
    keep = r <= r_cut_A + 1e-9
    return float(np.trapezoid(diff[keep], r[keep]))


def read_rdf_csv(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with open(path) as handle:
        rows = [row for row in csv.reader(line for line in handle if not line.startswith("#"))]
    header, body = rows[0], np.array(rows[1:], dtype=float)
    return body[:, 0], {name[2:]: body[:, k] for k, name in enumerate(header) if k and
                        name.startswith("g_")}


def rdf_mae_between(first: RDFResult | str | Path, second: RDFResult | str | Path, *,
                    r_cut_A: float = 10.0) -> dict[str, float]:
    """Seed 003 RDF MAE between two trajectories, per common species pair and their mean."""
    def load(item):
        if isinstance(item, RDFResult):
            return item.r, {**item.pairs, "total": item.total}
        return read_rdf_csv(item)

    r1, g1 = load(first)
    r2, g2 = load(second)
    def reach(r):
        return r[-1] + (r[-1] - r[-2]) / 2 if r.size > 1 else r[-1]

    if reach(r1) < r_cut_A - 1e-6 or reach(r2) < r_cut_A - 1e-6:
        raise ValueError(f"both RDFs must reach r_cut = {r_cut_A} A "
                         f"(they reach {reach(r1):.2f} and {reach(r2):.2f} A)")
    common = [k for k in g1 if k in g2 and k != "total"]
    result = {k: rdf_mae(r1, g1[k], g2[k], r_cut_A=r_cut_A, r2=r2) for k in common}
    if common:
        result["mean_over_pairs"] = float(np.mean([result[k] for k in common]))
    if "total" in g1 and "total" in g2:
        result["total"] = rdf_mae(r1, g1["total"], g2["total"], r_cut_A=r_cut_A, r2=r2)
    return result


def first_peak_height(g: np.ndarray) -> float:
    return float(np.max(g)) if g.size else float("nan")
