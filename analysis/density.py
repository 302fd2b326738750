"""Probability density of the mobile ions on a grid, written as Gaussian cube and CHGCAR.

Ion positions are histogrammed in fractional coordinates (so NPT cells map onto one grid)
on a grid of about ``spacing_A`` (0.3 A) per voxel along each lattice vector, over all analysed
frames. The density is in ions per A^3 of the mean cell: summed over the grid times the voxel
volume it gives the number of mobile ions. Isosurfaces of it (VESTA, OVITO) show the
sites and the migration paths.

* cube: values are ions/A^3 (the cube header and grid are in bohr, as the format wants).
* CHGCAR (VASP convention): values are density x cell volume, so that their grid average is
  the number of ions; VESTA reads the file name ``CHGCAR_density``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


class DensityGrid:
    def __init__(self, cell: np.ndarray, *, spacing_A: float = 0.3, max_points: int = 160) -> None:
        lengths = np.linalg.norm(np.asarray(cell, float), axis=1)
        self.shape = tuple(int(np.clip(round(length / spacing_A), 4, max_points))
                           for length in lengths)
        self.counts = np.zeros(int(np.prod(self.shape)), dtype=np.int64)
        self.n_frames = 0
        self.volume_sum = 0.0
        self.cell_sum = np.zeros((3, 3))

    def add(self, positions: np.ndarray, cells: np.ndarray) -> None:
        """positions (k, n, 3) Cartesian (any image), cells (k, 3, 3)."""
        frac = np.matmul(positions, np.linalg.inv(cells))
        frac -= np.floor(frac)
        shape = np.array(self.shape)
        index = np.minimum((frac * shape).astype(np.int64), shape - 1)
        flat = np.ravel_multi_index((index[..., 0].ravel(), index[..., 1].ravel(),
                                     index[..., 2].ravel()), self.shape)
        self.counts += np.bincount(flat, minlength=self.counts.size)
        self.n_frames += positions.shape[0]
        self.volume_sum += float(np.abs(np.linalg.det(cells)).sum())
        self.cell_sum += cells.sum(axis=0)

    @property
    def mean_cell(self) -> np.ndarray:
        return self.cell_sum / max(self.n_frames, 1)

    def density_per_A3(self) -> np.ndarray:
        """Array shaped ``self.shape`` (a, b, c index order), ions per A^3."""
        voxel = (self.volume_sum / max(self.n_frames, 1)) / self.counts.size
        return (self.counts / (max(self.n_frames, 1) * voxel)).reshape(self.shape)


def cube_text(atoms, density: np.ndarray) -> str:
    """Gaussian cube: lengths in bohr, values as given (ions/A^3), z index fastest."""
    from ase.units import Bohr

    cell = np.asarray(atoms.cell.array, dtype=float)
    shape = density.shape
    lines = ["mobile-ion probability density (ions/A^3), transport analysis",
             "OUTER LOOP: X, MIDDLE LOOP: Y, INNER LOOP: Z",
             f"{len(atoms):5d} {0.0:12.6f} {0.0:12.6f} {0.0:12.6f}"]
    for k in range(3):
        v = cell[k] / shape[k] / Bohr
        lines.append(f"{shape[k]:5d} {v[0]:12.6f} {v[1]:12.6f} {v[2]:12.6f}")
    for number, pos in zip(atoms.get_atomic_numbers(), atoms.get_positions() / Bohr):
        lines.append(f"{number:5d} {0.0:12.6f} {pos[0]:12.6f} {pos[1]:12.6f} {pos[2]:12.6f}")
    return "\n".join(lines) + "\n" + _columns(np.asarray(density, float).ravel(order="C"), 6,
                                             "%13.5e")


def _columns(values: np.ndarray, per_line: int, fmt: str) -> str:
    body = io.StringIO()
    full = len(values) - len(values) % per_line
    np.savetxt(body, values[:full].reshape(-1, per_line), fmt=fmt)
    if len(values) % per_line:
        np.savetxt(body, values[full:].reshape(1, -1), fmt=fmt)
    return body.getvalue()


def chgcar_text(atoms, density: np.ndarray) -> str:
    """CHGCAR: POSCAR block, blank line, grid shape, rho*V in Fortran order, 5 per line."""
    from ase.io import write

    buffer = io.StringIO()
    order = np.argsort([a.symbol for a in atoms], kind="stable")
    write(buffer, atoms[order], format="vasp", direct=True, parallel=False)
    values = (density * abs(atoms.get_volume())).ravel(order="F")
    lines = [buffer.getvalue().rstrip("\n"), "", " ".join(str(n) for n in density.shape)]
    return "\n".join(lines) + "\n" + _columns(values, 5, "%.11E")


def write_density(directory: Path, atoms, density: np.ndarray, writer) -> list[Path]:
    """Write ``density.cube`` and ``CHGCAR_density`` with ``writer(path, text)``."""
    cube = Path(directory) / "density.cube"
    chg = Path(directory) / "CHGCAR_density"
    writer(cube, cube_text(atoms, density))
    writer(chg, chgcar_text(atoms, density))
    return [cube, chg]
