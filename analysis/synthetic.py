"""Trajectories with a known answer, and writers for them (tests and benchmarks).

* :func:`brownian` - free Brownian ions with diffusion coefficient D plus Gaussian
  vibration noise of rms ``noise_A`` per axis around the diffusing centre, in a cubic box
  with a vibrating (non-diffusing) framework. MSD(t) = 6 D t + 6 noise^2.
* :func:`lattice_hopping` - ions on a simple cubic lattice (spacing a) that hop to each of
  the 6 neighbours with rate Gamma (per neighbour, per ps), independently. Per axis the
  number of + and - hops in time t are Poisson(Gamma t) each, so
  <dx^2> = 2 Gamma t a^2 = 2 D t and therefore D = Gamma a^2 (total hop rate 6 Gamma,
  MSD = 6 Gamma a^2 t). No site blocking, so the Haven ratio is 1.
* :func:`npt_brownian` - Brownian ions in a cell whose size oscillates in time, integrated
  like an MD code does it: each step scales the wrapped positions with the cell (barostat)
  and adds the Brownian step; positions are wrapped into the current cell with image
  counts. The diffusion coefficient of the added steps is the answer.
* :func:`correlated_pairs` - Brownian ions in pairs whose steps are correlated with
  coefficient rho (partner step = rho x step + sqrt(1 - rho^2) x independent step). Each
  ion has D; the pair's summed step has variance 2 (1 + rho) per ion's, so
  MSCD = <|sum dr|^2> / N = (1 + rho) MSD, D_charge = (1 + rho) D and the Haven ratio is
  H = 1 / (1 + rho): 0.5 for rho = 1 (pairs move together), 2 for rho = -0.5.

Positions are returned as arrays shaped (frames, atoms, 3) in A; times in ps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SyntheticTrajectory:
    unwrapped: np.ndarray  # (frames, atoms, 3)
    cells: np.ndarray  # (frames, 3, 3)
    symbols: list[str]
    frame_interval_ps: float
    D_A2_per_ps: float  # the known answer for the mobile species
    mobile: str = "Li"

    @property
    def D_cm2_per_s(self) -> float:
        return self.D_A2_per_ps * 1e-4

    @property
    def n_frames(self) -> int:
        return self.unwrapped.shape[0]

    def wrapped(self) -> tuple[np.ndarray, np.ndarray]:
        """Wrapped positions and LAMMPS image counts (frames, atoms, 3)."""
        inverse = np.linalg.inv(self.cells)
        frac = np.einsum("fni,fij->fnj", self.unwrapped, inverse)
        images = np.floor(frac)
        wrapped = self.unwrapped - np.einsum("fni,fij->fnj", images, self.cells)
        return wrapped, images.astype(np.int64)


def _framework(n_framework: int, box_A: float, rng, n_frames: int, vib_A: float) -> np.ndarray:
    per_side = int(np.ceil(n_framework ** (1 / 3)))
    grid = (np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1)
            .reshape(-1, 3)[:n_framework] + 0.5) * (box_A / per_side)
    return grid[None] + rng.normal(scale=vib_A, size=(n_frames, n_framework, 3))


def brownian(*, n_ions: int = 64, n_frames: int = 2000, frame_interval_ps: float = 0.1,
             D_A2_per_ps: float = 0.1, noise_A: float = 0.1, box_A: float = 20.0,
             n_framework: int = 0, framework_vibration_A: float = 0.1,
             framework_symbol: str = "S", seed: int = 0) -> SyntheticTrajectory:
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=np.sqrt(2 * D_A2_per_ps * frame_interval_ps),
                       size=(n_frames, n_ions, 3))
    steps[0] = 0.0
    centres = rng.uniform(0, box_A, size=(1, n_ions, 3)) + np.cumsum(steps, axis=0)
    ions = centres + rng.normal(scale=noise_A, size=centres.shape)
    parts = [ions]
    symbols = ["Li"] * n_ions
    if n_framework:
        parts.append(_framework(n_framework, box_A, rng, n_frames, framework_vibration_A))
        symbols += [framework_symbol] * n_framework
    cells = np.broadcast_to(np.eye(3) * box_A, (n_frames, 3, 3)).copy()
    return SyntheticTrajectory(unwrapped=np.concatenate(parts, axis=1), cells=cells,
                               symbols=symbols, frame_interval_ps=frame_interval_ps,
                               D_A2_per_ps=D_A2_per_ps)


def lattice_hopping(*, n_ions: int = 64, n_frames: int = 2000, frame_interval_ps: float = 0.1,
                    rate_per_neighbour_per_ps: float = 0.5, a_A: float = 2.0,
                    sites_per_side: int = 8, noise_A: float = 0.1, n_framework: int = 0,
                    seed: int = 0) -> SyntheticTrajectory:
    """D = Gamma a^2 with Gamma the hop rate to each one of the 6 neighbours."""
    rng = np.random.default_rng(seed)
    lam = rate_per_neighbour_per_ps * frame_interval_ps
    plus = rng.poisson(lam, size=(n_frames, n_ions, 3))
    minus = rng.poisson(lam, size=(n_frames, n_ions, 3))
    jumps = (plus - minus).astype(float) * a_A
    jumps[0] = 0.0
    start = rng.integers(0, sites_per_side, size=(1, n_ions, 3)) * a_A + 0.5 * a_A
    ions = start + np.cumsum(jumps, axis=0) + rng.normal(scale=noise_A,
                                                         size=(n_frames, n_ions, 3))
    box = sites_per_side * a_A
    parts = [ions]
    symbols = ["Li"] * n_ions
    if n_framework:
        parts.append(_framework(n_framework, box, rng, n_frames, 0.1))
        symbols += ["S"] * n_framework
    cells = np.broadcast_to(np.eye(3) * box, (n_frames, 3, 3)).copy()
    return SyntheticTrajectory(unwrapped=np.concatenate(parts, axis=1), cells=cells,
                               symbols=symbols, frame_interval_ps=frame_interval_ps,
                               D_A2_per_ps=rate_per_neighbour_per_ps * a_A ** 2)


def correlated_pairs(*, n_pairs: int = 32, n_frames: int = 4000, frame_interval_ps: float = 0.1,
                     D_A2_per_ps: float = 0.1, rho: float = 1.0, noise_A: float = 0.1,
                     box_A: float = 20.0, n_framework: int = 0,
                     seed: int = 0) -> SyntheticTrajectory:
    """2 ``n_pairs`` ions; the known Haven ratio is ``haven_ratio(rho)`` = 1 / (1 + rho)."""
    if not -1.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (-1, 1], not {rho}")
    rng = np.random.default_rng(seed)
    scale = np.sqrt(2 * D_A2_per_ps * frame_interval_ps)
    first = rng.normal(scale=scale, size=(n_frames, n_pairs, 3))
    own = rng.normal(scale=scale, size=(n_frames, n_pairs, 3))
    second = rho * first + np.sqrt(1.0 - rho ** 2) * own
    steps = np.concatenate([first, second], axis=1)
    steps[0] = 0.0
    n_ions = 2 * n_pairs
    centres = rng.uniform(0, box_A, size=(1, n_ions, 3)) + np.cumsum(steps, axis=0)
    parts = [centres + rng.normal(scale=noise_A, size=centres.shape)]
    symbols = ["Li"] * n_ions
    if n_framework:
        parts.append(_framework(n_framework, box_A, rng, n_frames, 0.1))
        symbols += ["S"] * n_framework
    cells = np.broadcast_to(np.eye(3) * box_A, (n_frames, 3, 3)).copy()
    return SyntheticTrajectory(unwrapped=np.concatenate(parts, axis=1), cells=cells,
                               symbols=symbols, frame_interval_ps=frame_interval_ps,
                               D_A2_per_ps=D_A2_per_ps)


def haven_ratio(rho: float) -> float:
    """Haven ratio D_tracer / D_charge of :func:`correlated_pairs`."""
    return 1.0 / (1.0 + rho)


def npt_brownian(*, n_ions: int = 48, n_frames: int = 2000, frame_interval_ps: float = 0.1,
                 D_A2_per_ps: float = 0.1, box_A: float = 12.0, strain_amplitude: float = 0.02,
                 period_ps: float = 20.0, n_framework: int = 16, seed: int = 0,
                 tilt: float = 0.0) -> tuple[SyntheticTrajectory, np.ndarray, np.ndarray]:
    """Returns (trajectory with TOR-unwrapped truth, wrapped positions, image counts)."""
    rng = np.random.default_rng(seed)
    n_atoms = n_ions + n_framework
    times = np.arange(n_frames) * frame_interval_ps
    scale = 1.0 + strain_amplitude * np.sin(2 * np.pi * times / period_ps)
    base = np.array([[box_A, 0, 0], [tilt * box_A, box_A, 0], [0, 0, box_A]])
    cells = scale[:, None, None] * base[None]
    wrapped = np.empty((n_frames, n_atoms, 3))
    images = np.zeros((n_frames, n_atoms, 3), dtype=np.int64)
    truth = np.empty((n_frames, n_atoms, 3))
    frac = rng.uniform(0, 1, size=(n_atoms, 3))
    frame_sites = frac[n_ions:].copy()
    pos = frac @ cells[0]
    unwrapped = pos.copy()
    img = np.zeros((n_atoms, 3), dtype=np.int64)
    sigma = np.sqrt(2 * D_A2_per_ps * frame_interval_ps)
    for f in range(n_frames):
        if f > 0:
            inv_prev = np.linalg.inv(cells[f - 1])
            scaled = (pos @ inv_prev) @ cells[f]  # barostat: affine with the cell
            step = scaled - pos
            step[:n_ions] += rng.normal(scale=sigma, size=(n_ions, 3))
            # framework: vibrate around fixed fractional sites
            new_fw = frame_sites @ cells[f] + rng.normal(scale=0.05, size=(n_framework, 3))
            step[n_ions:] = new_fw - pos[n_ions:]
            step[n_ions:] -= np.rint(step[n_ions:] @ np.linalg.inv(cells[f])) @ cells[f]
            pos = pos + step
            unwrapped = unwrapped + step
            shift = np.floor(pos @ np.linalg.inv(cells[f]))
            pos = pos - shift @ cells[f]
            img = img + shift.astype(np.int64)
        wrapped[f] = pos
        images[f] = img
        truth[f] = unwrapped
    traj = SyntheticTrajectory(unwrapped=truth, cells=cells,
                               symbols=["Li"] * n_ions + ["S"] * n_framework,
                               frame_interval_ps=frame_interval_ps, D_A2_per_ps=D_A2_per_ps)
    return traj, wrapped, images


# ---------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------

def write_lammps_dump(path: str | Path, *, positions: np.ndarray, cells: np.ndarray,
                      types: np.ndarray, steps: np.ndarray, images: np.ndarray | None = None,
                      columns: str = "x y z ix iy iz", shuffle_seed: int | None = None) -> Path:
    """Write a LAMMPS ``dump custom`` text file (ids 1..n).

    ``columns`` picks the coordinate layout: ``"x y z ix iy iz"`` (wrapped + images),
    ``"xu yu zu"`` (unwrapped; pass unwrapped positions) or ``"x y z"``. Triclinic cells
    (lower triangular, rows a b c) are written with LAMMPS' bounding-box convention.
    ``shuffle_seed`` writes atoms in a random order per frame (dumps without sort).
    """
    import pandas as pd

    path = Path(path)
    frames, n = positions.shape[:2]
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    names = columns.split()
    order = (np.stack([rng.permutation(n) for _ in range(frames)]) if rng is not None
             else np.broadcast_to(np.arange(n), (frames, n)))
    take = np.arange(frames)[:, None]
    table = {"id": (order + 1).ravel(), "type": np.asarray(types)[order].ravel()}
    for d, name in enumerate(names[:3]):
        table[name] = positions[take, order, d].ravel()
    if "ix" in names:
        for d, name in enumerate(("ix", "iy", "iz")):
            table[name] = np.asarray(images)[take, order, d].ravel()
    text = pd.DataFrame(table).to_csv(sep=" ", header=False, index=False,
                                      float_format="%.10g", lineterminator="\n")
    lines = text.split("\n")
    with open(path, "w") as handle:
        for f in range(frames):
            h = cells[f]
            lx, ly, lz = (float(v) for v in (h[0, 0], h[1, 1], h[2, 2]))
            xy, xz, yz = (float(v) for v in (h[1, 0], h[2, 0], h[2, 1]))
            handle.write(f"ITEM: TIMESTEP\n{int(steps[f])}\nITEM: NUMBER OF ATOMS\n{n}\n")
            if xy or xz or yz:
                handle.write("ITEM: BOX BOUNDS xy xz yz pp pp pp\n")
                handle.write(f"{min(0.0, xy, xz, xy + xz)!r} {lx + max(0.0, xy, xz, xy + xz)!r} "
                             f"{xy!r}\n")
                handle.write(f"{min(0.0, yz)!r} {ly + max(0.0, yz)!r} {xz!r}\n")
                handle.write(f"0.0 {lz!r} {yz!r}\n")
            else:
                handle.write(f"ITEM: BOX BOUNDS pp pp pp\n0.0 {lx!r}\n0.0 {ly!r}\n0.0 {lz!r}\n")
            handle.write("ITEM: ATOMS id type " + " ".join(names) + "\n")
            handle.write("\n".join(lines[f * n:(f + 1) * n]) + "\n")
    return path


def write_lammps_data(path: str | Path, *, symbols: list[str], positions: np.ndarray,
                      cell: np.ndarray, specorder: list[str] | None = None) -> Path:
    """A data file as ``harness md`` writes it (ASE, atom_style atomic, with masses)."""
    from ase import Atoms
    from ase.io import write

    atoms = Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True)
    specorder = specorder or list(dict.fromkeys(symbols))
    write(str(path), atoms, format="lammps-data", atom_style="atomic", masses=True,
          specorder=specorder, parallel=False)
    return Path(path)


def type_numbers(symbols: list[str], specorder: list[str] | None = None) -> np.ndarray:
    specorder = specorder or list(dict.fromkeys(symbols))
    return np.array([specorder.index(s) + 1 for s in symbols])
