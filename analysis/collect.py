"""One streaming pass over a trajectory: everything later maths needs, in bounded memory.

Per block of frames: check, time-stamp and unwrap the frames, drop those before the
analysis start, remove the framework drift, and hand on

* the mobile-ion displacements (drift-corrected, from the first analysed frame) to a
  :class:`~analysis.store.DisplacementStore` (RAM up to a limit, then a scratch file);
* their sum (the charge displacement of the species) and the framework MSD per element from
  the first frame (O(frames) numbers);
* pair histograms of evenly spaced frames (RDF) and the mobile-ion density grid.

Only the current block and the previous frame are held besides these.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.density import DensityGrid
from analysis.errors import AnalysisInputError, AnalysisWarning
from analysis.rdf import RDFAccumulator
from analysis.readers import ALKALI, SourceInfo
from analysis.store import DisplacementStore
from analysis.unwrap import Unwrapper


@dataclass
class CollectSettings:
    analysis_start_ps: float = 0.0
    block_frames: int = 256
    store_ram_limit_bytes: int = 512 << 20
    scratch_dir: str | None = None
    rdf_r_max_A: float = 10.0
    rdf_dr_A: float = 0.05
    rdf_max_frames: int = 100
    density_spacing_A: float = 0.3
    max_frames: int | None = None


@dataclass
class Collected:
    symbols: np.ndarray
    mobile: str
    mobile_index: np.ndarray
    frame_interval_ps: float
    n_frames: int
    cells: np.ndarray  # (n_frames, 3, 3)
    store: DisplacementStore
    collective: np.ndarray  # (n_frames, 3) sum of mobile displacements
    framework_msd: dict[str, np.ndarray]  # element -> (n_frames,) MSD from frame 0
    mobile_start: np.ndarray  # (n_mobile, 3) positions in the first analysed frame
    reference_positions: np.ndarray  # (n_atoms, 3) first analysed frame
    rdf: RDFAccumulator
    density: DensityGrid
    unwrap_mode: str
    max_step_fraction: float
    skipped_frames: int
    nan_at_frame: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def volumes(self) -> np.ndarray:
        return np.abs(np.linalg.det(self.cells))

    def mobile_positions(self, indices) -> np.ndarray:
        """Drift-corrected Cartesian positions of the mobile ions at frame indices."""
        return self.mobile_start[None] + self.store.frames(indices)


def collect(source, info: SourceInfo, *, mobile: str, frame_interval_fs: float | None,
            settings: CollectSettings) -> Collected:
    symbols = np.asarray(info.symbols, dtype=object)
    mobile_mask = symbols == mobile
    mobile_index = np.flatnonzero(mobile_mask)
    framework_index = np.flatnonzero(~mobile_mask)
    framework_elements = sorted(set(symbols[framework_index].tolist()) - set(ALKALI))
    element_index = {e: np.flatnonzero(symbols == e) for e in framework_elements}
    # a contiguous run of mobile ions (the usual atom order) is taken as a slice: a view
    # instead of a gathered copy of every block
    mobile_take = (slice(int(mobile_index[0]), int(mobile_index[-1]) + 1)
                   if mobile_index.size and mobile_index[-1] - mobile_index[0] + 1 ==
                   mobile_index.size else mobile_index)
    fs_per_step = info.fs_per_step
    if fs_per_step is None and frame_interval_fs is None:
        raise AnalysisInputError(
            "missing timestep information: pass --timestep-fs (the MD timestep; time per "
            "frame = difference of dump TIMESTEP values x timestep) or --frame-interval-fs")

    unwrap = Unwrapper()
    store = DisplacementStore(len(mobile_index), ram_limit_bytes=settings.store_ram_limit_bytes,
                              scratch_dir=settings.scratch_dir)
    rdf = RDFAccumulator(symbols=symbols, r_max=settings.rdf_r_max_A, dr=settings.rdf_dr_A,
                         max_frames=settings.rdf_max_frames)
    density: DensityGrid | None = None
    cells_kept: list[np.ndarray] = []
    collective: list[np.ndarray] = []
    fw_msd: dict[str, list[np.ndarray]] = {e: [] for e in framework_elements}
    u0 = None
    first_step = prev_step = None
    step_spacing = None
    frame_interval = None
    n_seen = 0
    n_kept = 0
    skipped = 0
    nan_at = None
    notes: list[str] = []
    duplicates = 0
    try:
        for block in source.blocks(block_frames=settings.block_frames):
            # -- corrupted frames: stop before the first non-finite one ---------------------
            finite = np.isfinite(block.positions).all(axis=(1, 2)) & \
                np.isfinite(block.cells).all(axis=(1, 2))
            stop_here = False
            if not finite.all():
                bad = int(np.argmin(finite))
                nan_at = n_seen + bad
                stop_here = True
                block = _slice_block(block, slice(0, bad))
                if len(block) == 0:
                    break
            # -- time stamps: uniform spacing, duplicates dropped -------------------------
            steps = block.steps
            keep = np.ones(len(steps), dtype=bool)
            for q, step in enumerate(steps):
                if prev_step is not None:
                    delta = int(step - prev_step)
                    if delta == 0:
                        keep[q] = False
                        duplicates += 1
                        continue
                    if delta < 0:
                        raise AnalysisInputError(
                            f"frame counter goes backwards ({prev_step} -> {step}): frames from "
                            "different runs are mixed; analyze one continuous trajectory")
                    if step_spacing is None:
                        step_spacing = delta
                    elif delta != step_spacing:
                        raise AnalysisInputError(
                            f"frames are not evenly spaced: TIMESTEP {prev_step} -> {step} "
                            f"(spacing {delta}) but earlier frames are {step_spacing} apart; "
                            "dump with a constant dump interval")
                else:
                    first_step = int(step)
                prev_step = int(step)
            if not keep.all():
                block = _slice_block(block, keep)
            if len(block) == 0:
                continue
            # -- unwrap every frame (also the discarded ones: it carries state) ----------
            unwrapped = unwrap(block)
            index = n_seen + np.arange(len(block))
            n_seen += len(block)
            if step_spacing is not None:
                frame_interval = (step_spacing * fs_per_step / 1000.0 if fs_per_step
                                  else frame_interval_fs / 1000.0)
            t_ps = (_times_ps(block.steps, first_step, fs_per_step, index, frame_interval_fs))
            kept = t_ps >= settings.analysis_start_ps - 1e-9
            skipped += int((~kept).sum())
            if not kept.any():
                continue
            u = unwrapped if kept.all() else unwrapped[kept]
            cells = block.cells[kept]
            if u0 is None:
                u0 = u[0].copy()
                density = DensityGrid(cells[0], spacing_A=settings.density_spacing_A)
            disp = u - u0[None]
            if framework_index.size:
                drift = disp[:, framework_index].mean(axis=1)
            else:
                drift = np.zeros((len(u), 3))
            mob = disp[:, mobile_take] - drift[:, None, :]
            store.append(mob.astype(store.dtype))
            collective.append(mob.sum(axis=1))
            for e, idx in element_index.items():
                d = disp[:, idx] - drift[:, None, :]
                fw_msd[e].append(np.einsum("fni,fni->f", d, d) / len(idx))
            cells_kept.append(cells)
            for q in range(len(u) if settings.rdf_max_frames > 0 else 0):
                if rdf.wants(n_kept + q):
                    rdf.add(n_kept + q, (n_kept + q) * (frame_interval or 0.0), u[q], cells[q])
            density.add(u0[mobile_index][None] + mob, cells)
            n_kept += len(u)
            if stop_here or (settings.max_frames and n_kept >= settings.max_frames):
                break
    except BaseException:
        store.close()
        raise
    store.finish()
    if duplicates:
        message = (f"dropped {duplicates} frame(s) that repeat the previous TIMESTEP "
                   "(appended restarts)")
        notes.append(message)
        warnings.warn(message, AnalysisWarning, stacklevel=2)
    if n_seen == 0:
        store.close()
        raise AnalysisInputError("the trajectory holds no complete frame")
    if n_kept == 0:
        store.close()
        raise AnalysisInputError(f"no frame at or after analysis start "
                                 f"{settings.analysis_start_ps:g} ps; lower the discard time")
    if n_kept == 1:
        store.close()
        raise AnalysisInputError(
            "a single frame: diffusion needs a trajectory (at least 10 frames); check that "
            "the run dumped more than one frame")
    if frame_interval is None or frame_interval <= 0:
        store.close()
        raise AnalysisInputError("cannot tell the time between frames; pass --timestep-fs "
                                 "or --frame-interval-fs")
    return Collected(symbols=symbols, mobile=mobile, mobile_index=mobile_index,
                     frame_interval_ps=float(frame_interval), n_frames=n_kept,
                     cells=np.concatenate(cells_kept), store=store,
                     collective=np.concatenate(collective),
                     framework_msd={e: np.concatenate(v) for e, v in fw_msd.items()},
                     mobile_start=u0[mobile_index].copy(), reference_positions=u0.copy(),
                     rdf=rdf, density=density, unwrap_mode=unwrap.mode or "images",
                     max_step_fraction=unwrap.max_step_fraction, skipped_frames=skipped,
                     nan_at_frame=nan_at, notes=notes)


def _times_ps(steps, first_step, fs_per_step, index, frame_interval_fs) -> np.ndarray:
    if fs_per_step:
        return (np.asarray(steps) - first_step) * fs_per_step / 1000.0
    return np.asarray(index, dtype=float) * frame_interval_fs / 1000.0


def _slice_block(block, selection):
    from analysis.readers import FrameBlock

    return FrameBlock(steps=block.steps[selection], cells=block.cells[selection],
                      origins=block.origins[selection], positions=block.positions[selection],
                      images=None if block.images is None else block.images[selection],
                      unwrapped=block.unwrapped)
