"""Bounded-memory storage of per-ion displacement series.

The all-origins MSD needs every frame of every mobile ion, but only one ion block at a
time. :class:`DisplacementStore` receives frames in time blocks (as the trajectory streams)
and hands back atom blocks over the whole time axis. Data are kept in a block-major layout
(for each block of ``block_frames`` frames, atoms x frames x 3, float32 by default), in RAM
up to ``ram_limit_bytes`` and then in a scratch file on disk, so an atom block over all time
is read as ``n_blocks`` contiguous slices.

Values stored are displacements from the first kept frame with the framework drift
removed, so they stay small and float32 keeps them to ~1e-7 relative precision.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


class DisplacementStore:
    def __init__(self, n_atoms: int, *, block_frames: int = 2048, dtype=np.float32,
                 ram_limit_bytes: int = 512 << 20, scratch_dir: str | Path | None = None) -> None:
        self.n_atoms = int(n_atoms)
        self.block_frames = int(block_frames)
        self.dtype = np.dtype(dtype)
        self.ram_limit_bytes = int(ram_limit_bytes)
        self.scratch_dir = scratch_dir
        self.n_frames = 0
        self._blocks: list[np.ndarray | tuple[int, int]] = []  # array in RAM or (offset, k)
        self._current = np.empty((self.n_atoms, self.block_frames, 3), dtype=self.dtype)
        self._fill = 0
        self._ram_bytes = 0
        self._file = None
        self._path: str | None = None
        self._file_bytes = 0
        self._mmap: np.memmap | None = None

    # -- writing -------------------------------------------------------------------------
    def append(self, frames: np.ndarray) -> None:
        """Append frames shaped (k, n_atoms, 3)."""
        frames = np.asarray(frames)
        k = frames.shape[0]
        pos = 0
        while pos < k:
            take = min(k - pos, self.block_frames - self._fill)
            self._current[:, self._fill:self._fill + take, :] = \
                frames[pos:pos + take].transpose(1, 0, 2)
            self._fill += take
            pos += take
            if self._fill == self.block_frames:
                self._seal()
        self.n_frames += k

    def _seal(self) -> None:
        if self._fill == 0:
            return
        block = np.ascontiguousarray(self._current[:, :self._fill, :])
        if self._ram_bytes + block.nbytes <= self.ram_limit_bytes:
            self._blocks.append(block.copy() if block.base is self._current else block)
            self._ram_bytes += block.nbytes
        else:
            if self._file is None:
                fd, self._path = tempfile.mkstemp(prefix="displacements-", suffix=".f32",
                                                  dir=self.scratch_dir)
                self._file = os.fdopen(fd, "wb")
            self._file.write(block.tobytes())
            self._blocks.append((self._file_bytes, self._fill))
            self._file_bytes += block.nbytes
        self._fill = 0

    def finish(self) -> None:
        """Flush the partial block; call once after the last append."""
        self._seal()
        self._current = np.empty((0, 0, 3), dtype=self.dtype)
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._mmap = np.memmap(self._path, dtype=self.dtype, mode="r")

    # -- reading -------------------------------------------------------------------------
    @property
    def on_disk_bytes(self) -> int:
        return self._file_bytes

    @property
    def in_ram_bytes(self) -> int:
        return self._ram_bytes

    def atoms(self, start: int, stop: int, *, dtype=np.float64,
              out: np.ndarray | None = None) -> np.ndarray:
        """Displacements of atoms ``start:stop`` over all frames, shape (m, n_frames, 3).

        ``out`` (optional, shaped (m, n_frames, 3), any strides) receives the values
        instead of a new array, so a caller can reuse one buffer for every atom block.
        """
        m = stop - start
        if out is None:
            out = np.empty((m, self.n_frames, 3), dtype=dtype)
        elif out.shape != (m, self.n_frames, 3):
            raise ValueError(f"out has shape {out.shape}, expected {(m, self.n_frames, 3)}")
        t = 0
        for block in self._blocks:
            if isinstance(block, tuple):
                offset, k = block
                flat = self._mmap[offset // self.dtype.itemsize:
                                  offset // self.dtype.itemsize + self.n_atoms * k * 3]
                data = flat.reshape(self.n_atoms, k, 3)[start:stop]
            else:
                data = block[start:stop]
                k = data.shape[1]
            out[:, t:t + k, :] = data
            t += k
        return out

    def frames(self, indices) -> np.ndarray:
        """Displacements of all atoms at the given frame indices, shape (len, n_atoms, 3)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.n_atoms, 3), dtype=np.float64)
        starts = np.cumsum([0] + [b[1] if isinstance(b, tuple) else b.shape[1]
                                  for b in self._blocks])
        for q, frame in enumerate(indices):
            b = int(np.searchsorted(starts, frame, side="right") - 1)
            local = frame - starts[b]
            block = self._blocks[b]
            if isinstance(block, tuple):
                offset, k = block
                flat = self._mmap[offset // self.dtype.itemsize:
                                  offset // self.dtype.itemsize + self.n_atoms * k * 3]
                out[q] = flat.reshape(self.n_atoms, k, 3)[:, local, :]
            else:
                out[q] = block[:, local, :]
        return out

    def close(self) -> None:
        self._blocks = []
        self._mmap = None
        if self._path and os.path.exists(self._path):
            os.unlink(self._path)
        self._path = None

    def __enter__(self) -> "DisplacementStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort cleanup
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
