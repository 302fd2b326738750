"""Incremental unwrapping of periodic coordinates, block by block (NVT and NPT).

Displacements are accumulated frame to frame (the "TOR" scheme of Bullerjahn, von Buelow
and Hummer, J. Chem. Phys. 2023, which kinisi also uses): the step from frame t-1 to t is
``w_t - w_{t-1} + (n_t - n_{t-1}) H_t`` where ``w`` are wrapped positions, ``n`` image
counts and ``H_t`` the cell of frame t (rows = lattice vectors). With image flags the image
change is exact; without them it is the minimum-image choice ``-round(frac(w_t - w_{t-1}))``,
exact as long as no atom moves half a cell between frames. Unwrapped input (``xu yu zu``)
is first split into wrapped position and image count with the cell of its own frame, which
removes the artefact of ``xu = x + n H_t`` jumping when an NPT cell changes size.
"""

from __future__ import annotations

import numpy as np

from analysis.readers import FrameBlock


def perpendicular_widths(cells: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of each cell: V / |b x c| etc. Shape (..., 3)."""
    cells = np.asarray(cells, dtype=float)
    a, b, c = cells[..., 0, :], cells[..., 1, :], cells[..., 2, :]
    volume = np.abs(np.einsum("...i,...i->...", a, np.cross(b, c)))
    areas = np.stack([np.linalg.norm(np.cross(b, c), axis=-1),
                      np.linalg.norm(np.cross(c, a), axis=-1),
                      np.linalg.norm(np.cross(a, b), axis=-1)], axis=-1)
    return volume[..., None] / areas


class Unwrapper:
    """Turns consecutive :class:`FrameBlock` s into unwrapped Cartesian positions.

    Keeps only the previous frame between blocks. ``max_step_fraction`` records the largest
    frame-to-frame step of any atom as a fraction of the cell width (for the minimum-image
    case a value near 0.5 means the unwrapping may be ambiguous).
    """

    def __init__(self) -> None:
        self._prev_wrapped: np.ndarray | None = None
        self._prev_images: np.ndarray | None = None
        self._prev_unwrapped: np.ndarray | None = None
        self.max_step_fraction = 0.0
        self.mode: str | None = None

    def __call__(self, block: FrameBlock) -> np.ndarray:
        positions = block.positions - block.origins[:, None, :]
        cells = block.cells
        inverse = np.linalg.inv(cells)
        if block.unwrapped:
            frac = np.matmul(positions, inverse)
            images = np.floor(frac)
            wrapped = positions - np.matmul(images, cells)
            mode = "images"
        elif block.images is not None:
            images = block.images.astype(float)
            wrapped = positions
            mode = "images"
        else:
            images = None
            wrapped = positions
            mode = "minimum_image"
        self.mode = self.mode or mode

        k = len(block)
        steps = np.empty_like(wrapped)
        if self._prev_wrapped is None:
            start = wrapped[0] + (images[0] @ cells[0] if images is not None else 0.0)
            steps[0] = 0.0
        else:
            start = self._prev_unwrapped
            steps[0] = self._step(self._prev_wrapped, wrapped[0], self._prev_images,
                                  None if images is None else images[0], cells[0], inverse[0])
        if k > 1:
            steps[1:] = self._step(wrapped[:-1], wrapped[1:],
                                   None if images is None else images[:-1],
                                   None if images is None else images[1:], cells[1:], inverse[1:])
        unwrapped = start[None, :, :] + np.cumsum(steps, axis=0)
        frac_steps = np.abs(np.matmul(steps, inverse))
        if frac_steps.size:
            self.max_step_fraction = max(self.max_step_fraction, float(frac_steps.max()))
        self._prev_wrapped = wrapped[-1].copy()
        self._prev_images = None if images is None else images[-1].copy()
        self._prev_unwrapped = unwrapped[-1].copy()
        return unwrapped

    @staticmethod
    def _step(w0, w1, n0, n1, cell, inverse) -> np.ndarray:
        diff = w1 - w0
        if n0 is not None and n1 is not None:
            dn = n1 - n0
            if cell.ndim == 2:
                return diff + dn @ cell
            return diff + np.matmul(dn, cell)
        if cell.ndim == 2:
            frac = diff @ inverse
            return (frac - np.rint(frac)) @ cell
        frac = np.matmul(diff, inverse)
        return np.matmul(frac - np.rint(frac), cell)
