"""Tidy tables of the statics commands: one CSV and one parquet per table, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def require_single_process(command: str) -> None:
    """The statics commands evaluate small cells on one process (one LAMMPS instance on
    MPI.COMM_SELF); under mpirun every rank would redo the work and write the same files."""
    from mpi4py import MPI

    from harness.statics.statics_run import StaticsInputError

    if MPI.COMM_WORLD.Get_size() > 1:
        raise StaticsInputError(f"harness {command} runs on one process; start it without "
                                "mpirun (farm many statics tasks with `harness bench`)")


def write_table(df: Any, out: Path, stem: str, *, parquet: bool = True) -> list[str]:
    """``stem.csv`` (and ``stem.parquet``) in ``out``; returns the file names written."""
    from analysis.output import atomic_write, write_text

    out = Path(out)
    names = [f"{stem}.csv"]
    write_text(out / names[0], df.to_csv(index=False, float_format="%.10g"))
    if parquet:
        names.append(f"{stem}.parquet")
        atomic_write(out / names[1], lambda handle: df.to_parquet(handle, index=False),
                     binary=True)
    return names


def figure(width_in: float = 5.0, height_in: float = 4.2, *, ncols: int = 1):
    """A matplotlib figure (Agg backend) and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width_in * ncols, height_in),
                             constrained_layout=True)
    return fig, axes


def save_figure(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    from analysis.output import write_figure

    write_figure(path, fig)
    plt.close(fig)
    return Path(path).name
