"""Helpers for the analysis tests: write synthetic trajectories as real input files."""
# imported by the test modules as `from _analysis_helpers import ...` (pytest puts this
# folder on sys.path: the tests folders have no __init__.py)

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.synthetic import (SyntheticTrajectory, type_numbers, write_lammps_data,
                                write_lammps_dump)

#: a cheaper kinisi sampler for tests (the defaults take ~3 s per fit)
FAST = dict(n_samples=400, n_burn=200, n_walkers=32, n_thin=4)


def write_dump_and_data(directory: Path, traj: SyntheticTrajectory, *, columns: str =
                        "x y z ix iy iz", dump_every: int = 50, wrapped=None, images=None,
                        name: str = "traj.lammpstrj", shuffle_seed: int | None = None):
    """Write traj as a LAMMPS dump (+ ASE data file). Returns (dump, data)."""
    directory.mkdir(parents=True, exist_ok=True)
    if wrapped is None:
        wrapped, images = traj.wrapped()
    positions = traj.unwrapped if columns.startswith("xu") else wrapped
    specorder = list(dict.fromkeys(traj.symbols))
    dump = write_lammps_dump(directory / name, positions=positions, cells=traj.cells,
                             types=type_numbers(traj.symbols, specorder),
                             steps=np.arange(traj.n_frames) * dump_every, images=images,
                             columns=columns, shuffle_seed=shuffle_seed)
    data = write_lammps_data(directory / "structure.data", symbols=traj.symbols,
                             positions=wrapped[0], cell=traj.cells[0], specorder=specorder)
    return dump, data


def make_run_dir(directory: Path, traj: SyntheticTrajectory, *, timestep_fs: float,
                 dump_every: int, temperature_K: float = 800.0, analysis_start_ps: float = 0.0,
                 columns: str = "x y z ix iy iz") -> Path:
    """A fake `harness md` run directory following the manifest contract."""
    dump, data = write_dump_and_data(directory, traj, columns=columns, dump_every=dump_every)
    specorder = list(dict.fromkeys(traj.symbols))
    manifest = {
        "kind": "md", "status": "completed",
        "spec": {"structure": "synthetic", "potential": "none", "temperature_K": temperature_K,
                 "timestep_fs": timestep_fs, "dump_every": dump_every,
                 "ensemble": "nvt_nose_hoover"},
        "type_map": {str(i + 1): el for i, el in enumerate(specorder)},
        "analysis_start_ps": analysis_start_ps,
        "frame_interval_fs": dump_every * timestep_fs,
        "outputs": {"dump": dump.name, "data": data.name, "thermo": "thermo.csv",
                    "log": "log.lammps"},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory

