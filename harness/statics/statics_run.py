"""Shared plumbing of the NEB and phonon workflows: the calculator, output folder, manifest.

Every static property is evaluated through :func:`open_calculator`: an ASE calculator backed
by one LAMMPS instance running the registered potential on its selected route (native pair
style, ML-IAP or ``fix external``), so the statics see the same model as ``harness md``. One
instance serves every evaluation of a job (all NEB images, all phonon displacements): LAMMPS
is started once and each call is a ``run 0`` on new positions.
``backend="ase"`` evaluates the adapter's own ASE calculator instead (cross-checks only).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class StaticsInputError(ValueError):
    """Bad input for a static calculation; the message names the problem and the fix."""


@contextmanager
def open_calculator(potential: str, *, route: str = "auto", device: str = "auto",
                    workdir: str | Path, backend: str = "lammps",
                    comm: Any = None) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Yield ``(calculator, provenance)``; the LAMMPS instance is closed on exit.

    ``provenance`` holds the potential's model info (name, family, route, sha256) and
    ``backend``; it goes into every manifest.
    """
    from potentials.registry import get_potential

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pot = get_potential(potential, route=route, device=device)
    if backend == "ase":
        calc = pot.ase_calculator()
        info = _model_info(pot)
        info["backend"] = "ase (the adapter's own calculator, no LAMMPS)"
        yield calc, info
        return
    if backend != "lammps":
        raise StaticsInputError(f"backend must be 'lammps' or 'ase', not {backend!r}")
    from harness.statics.calculator import LammpsCalculator

    calc = LammpsCalculator(pot, workdir=workdir, comm=comm)
    try:
        info = _model_info(pot)
        info["backend"] = "lammps (harness.statics.calculator.LammpsCalculator, run 0 per call)"
        yield calc, info
        if calc.route:
            info["route"] = calc.route
        info["lammps_calls"] = dict(calc.counts)
    finally:
        close = getattr(calc, "close", None)
        if close is not None:
            close()


def _model_info(pot: Any) -> dict[str, Any]:
    from dataclasses import asdict

    try:
        return asdict(pot.model_info())
    except Exception as exc:  # noqa: BLE001 - provenance must not stop a run
        return {"name": getattr(pot, "name", "?"), "error": f"{type(exc).__name__}: {exc}"}


def prepare_out_dir(out: str | Path, *, force: bool) -> Path:
    """A fresh output folder; an existing non-empty one needs ``force``."""
    import shutil

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise StaticsInputError(f"output directory {out} exists and is not empty; choose "
                                    "another --out or pass --force to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_manifest(out: Path, *, kind: str, spec: dict[str, Any], potential: dict[str, Any],
                   status: str, started: str, wall_s: float | None = None,
                   outputs: list[str] | None = None, extra: dict[str, Any] | None = None,
                   error: str | None = None) -> Path:
    """``manifest.json`` with the resolved spec, model provenance, versions, host, times."""
    from harness.md.rundir import (atomic_write_json, git_sha, host_info, now_iso,
                                   package_versions)

    versions = package_versions()
    for name in ("phonopy", "phono3py", "pymatgen-analysis-diffusion"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    manifest = {"kind": kind, "status": status, "spec": spec, "potential": potential,
                "versions": versions, "git_sha": git_sha(), "host": host_info(),
                "started": started, "finished": now_iso() if status != "running" else None,
                "wall_s": wall_s, "outputs": sorted(outputs or []), **(extra or {})}
    if error:
        manifest["error"] = error
    return atomic_write_json(Path(out) / "manifest.json", manifest)


def write_json(path: Path, data: Any) -> Path:
    from analysis.output import write_json as _write

    return _write(path, data)


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
