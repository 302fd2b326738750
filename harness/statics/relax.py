"""``harness relax``: relax positions (and the cell) through the LAMMPS-backed calculator.

Tool: ASE's FIRE on :class:`ase.filters.FrechetCellFilter` (cell degrees of freedom as the
log of the deformation gradient, so the cell and the atoms converge together, the choice
of matcalc and janus-core), driving :class:`harness.statics.calculator.LammpsCalculator`.
Every energy, force and stress is a ``run 0`` of the same pair style as ``harness md``.
Why not LAMMPS' ``minimize`` + ``fix box/relax``: one code path for every route (a ``fix
external`` model's virial would have to reach box/relax through ``fix_modify virial``
and box/relax's pressure target is a scalar/diagonal one), and one convergence criterion
(max force *and* max stress) that is checked in Python each step, where divergence is
caught and classified. The cost per step is one ``run 0``; relaxations of the cells the
statics use (tens of atoms) are dominated by the model evaluation either way.

Failure classes (``failure_class``): ``none``; ``non_finite`` (the model returned NaN/inf:
a diverged structure); ``exploded`` (a force above ``explode_force_eV_per_A`` or the
volume changed by more than a factor ``explode_volume_factor``); ``not_converged`` (the
step budget ran out); ``lammps_error`` (LAMMPS refused a step, e.g. lost atoms). A
relaxation that fails raises :class:`RelaxationFailed` from the command (the files, with
the failure recorded, are kept); the library function returns the result with the class
set so callers (elastic, formation, campaigns) decide.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.units import GPA_PER_EV_PER_A3

FailureClass = Literal["none", "non_finite", "exploded", "not_converged", "lammps_error"]


class RelaxationFailed(RuntimeError):
    """A relaxation diverged or did not converge; ``failure`` holds the record."""

    def __init__(self, message: str, *, failure: dict[str, Any]) -> None:
        super().__init__(message)
        self.failure = failure


class RelaxSettings(BaseModel):
    """How to relax (shared by relax, elastic and formation)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fmax_eV_per_A: float = Field(0.01, gt=0, description="converged when every force is below "
                                 "this (and the stress below smax_GPa when the cell relaxes)")
    smax_GPa: float = Field(0.05, gt=0, description="stress criterion of a cell relaxation")
    max_steps: int = Field(1000, gt=0, description="FIRE steps before 'not_converged'")
    relax_cell: bool = Field(True, description="relax the cell as well as the positions")
    explode_force_eV_per_A: float = Field(1.0e3, gt=0)
    explode_volume_factor: float = Field(3.0, gt=1)


class RelaxSpec(RelaxSettings):
    """``harness relax`` options (also the YAML keys)."""

    structure: str = Field(..., description="CIF, POSCAR, extxyz or a bundled name")
    potential: str
    route: Literal["auto", "native", "mliap", "external"] = "auto"
    device: str = "auto"
    min_distance_A: float = Field(0.5, ge=0, description="refuse closer atom pairs")
    out: str = "relax"


@dataclass
class RelaxResult:
    atoms: Any
    converged: bool
    failure_class: str
    message: str
    n_steps: int
    energy_eV: float | None
    fmax_eV_per_A: float | None
    smax_GPa: float | None
    trajectory: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        atoms = self.atoms
        return {
            "converged": self.converged, "failure_class": self.failure_class,
            "message": self.message, "n_steps": self.n_steps, "energy_eV": self.energy_eV,
            "energy_eV_per_atom": (None if self.energy_eV is None
                                   else self.energy_eV / len(atoms)),
            "fmax_eV_per_A": self.fmax_eV_per_A, "smax_GPa": self.smax_GPa,
            "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms),
            "a_A": atoms.cell.lengths().tolist(), "angles_deg": atoms.cell.angles().tolist(),
            "volume_A3": float(atoms.get_volume()),
            "volume_per_atom_A3": float(atoms.get_volume() / len(atoms)),
        }


def _stress_max_GPa(atoms: Any) -> float:
    return float(np.abs(atoms.get_stress(voigt=True)).max() * GPA_PER_EV_PER_A3)


def relax_atoms(atoms: Any, calc: Any, *, settings: RelaxSettings) -> RelaxResult:
    """Relax a copy of ``atoms`` with ``calc``; never raises for a diverging structure."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from harness.md.engine import EngineError
    from harness.statics.calculator import NonFiniteResult

    atoms = atoms.copy()
    atoms.calc = calc
    v0 = atoms.get_volume()
    trajectory: list[dict[str, float]] = []

    def state() -> tuple[float, float, float | None]:
        energy = float(atoms.get_potential_energy())
        fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
        smax = _stress_max_GPa(atoms) if settings.relax_cell else None
        return energy, fmax, smax

    def record(step: int) -> None:
        energy, fmax, smax = state()
        trajectory.append({"step": step, "energy_eV": energy, "fmax_eV_per_A": fmax,
                           "smax_GPa": np.nan if smax is None else smax,
                           "volume_A3": float(atoms.get_volume())})
        if fmax > settings.explode_force_eV_per_A:
            raise _Exploded(f"a force reached {fmax:.3g} eV/A at step {step}")
        ratio = atoms.get_volume() / v0
        if not 1 / settings.explode_volume_factor < ratio < settings.explode_volume_factor:
            raise _Exploded(f"the volume changed by a factor {ratio:.3g} at step {step}")

    def converged() -> bool:
        _, fmax, smax = state()
        return fmax < settings.fmax_eV_per_A and (smax is None or smax < settings.smax_GPa)

    target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
    # FIRE on the filter's generalized forces; our own criterion decides convergence
    opt = FIRE(target, logfile=None)
    failure, message, steps = "none", "", 0
    with warnings.catch_warnings():
        # FrechetCellFilter's scipy.linalg.logm reports round-off of ~1e-12 as a warning
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        try:
            record(0)
            while not converged():
                if steps >= settings.max_steps:
                    failure = "not_converged"
                    message = f"not converged in {settings.max_steps} steps"
                    break
                opt.step()
                steps += 1
                record(steps)
        except NonFiniteResult as exc:
            failure, message = "non_finite", str(exc)
        except _Exploded as exc:
            failure, message = "exploded", str(exc)
        except EngineError as exc:  # e.g. lost atoms, a plugin refusing the geometry
            failure, message = "lammps_error", str(exc)
    last = trajectory[-1] if trajectory else {}
    result = RelaxResult(
        atoms=atoms, converged=failure == "none", failure_class=failure, message=message,
        n_steps=steps, energy_eV=last.get("energy_eV"), fmax_eV_per_A=last.get("fmax_eV_per_A"),
        smax_GPa=(None if not settings.relax_cell or "smax_GPa" not in last
                  else last["smax_GPa"]),
        trajectory=trajectory)
    atoms.calc = None
    return result


class _Exploded(RuntimeError):
    pass


def load_checked_structure(path: str, *, min_distance_A: float = 0.5) -> Any:
    from harness.structures import check_min_distance, load_structure

    atoms = load_structure(path)
    if min_distance_A > 0:
        check_min_distance(atoms, min_distance_A=min_distance_A)
    return atoms


def run_relax(spec: RelaxSpec, *, force: bool = False) -> dict[str, Any]:
    """Relax one structure; writes relaxed.extxyz/POSCAR, relax.csv/parquet, relax.json,
    relax.png and manifest.json. Raises :class:`RelaxationFailed` after writing them when
    the relaxation failed."""
    import pandas as pd
    from ase.io import write

    from harness.md.rundir import now_iso
    from harness.statics.statics_run import (Stopwatch, _model_info, prepare_out_dir,
                                             write_json, write_manifest)
    from harness.statics.calculator import LammpsCalculator
    from harness.statics.tables import write_table
    from potentials.registry import get_potential

    atoms = load_checked_structure(spec.structure, min_distance_A=spec.min_distance_A)
    potential = get_potential(spec.potential, route=spec.route, device=spec.device)
    potential.check_elements(atoms.get_chemical_symbols())
    out = prepare_out_dir(spec.out, force=force)
    started, clock = now_iso(), Stopwatch()
    spec_dict = spec.model_dump(mode="json")
    provenance = _model_info(potential)
    write_manifest(out, kind="relax", spec=spec_dict, potential=provenance, status="running",
                   started=started)
    settings = RelaxSettings(**{k: getattr(spec, k) for k in RelaxSettings.model_fields})
    route = None
    with LammpsCalculator(potential, workdir=out / "lammps") as calc:
        result = relax_atoms(atoms, calc, settings=settings)
        provenance["route"] = route = calc.route
        calls = dict(calc.counts)
    summary = {"potential": spec.potential, "route": route,
               "initial": {"a_A": atoms.cell.lengths().tolist(),
                           "volume_A3": float(atoms.get_volume())},
               **result.summary(), "lammps_calls": calls}
    outputs = write_table(pd.DataFrame(result.trajectory), out, "relax")
    if result.converged:
        write(out / "relaxed.extxyz", result.atoms, format="extxyz", parallel=False)
        write(out / "POSCAR.relaxed", result.atoms, format="vasp", direct=True, sort=False,
              parallel=False)
        outputs += ["relaxed.extxyz", "POSCAR.relaxed"]
    try:
        outputs.append(relax_plot(result.trajectory, out=out, title=f"{spec.potential}: "
                                  f"{atoms.get_chemical_formula()}"))
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
        summary["plot_error"] = f"{type(exc).__name__}: {exc}"
    summary["wall_s"] = clock.seconds
    write_json(out / "relax.json", summary)
    outputs.append("relax.json")
    status = "completed" if result.converged else "failed"
    write_manifest(out, kind="relax", spec=spec_dict, potential=provenance, status=status,
                   started=started, wall_s=clock.seconds, outputs=outputs,
                   extra={"failure_class": result.failure_class},
                   error=result.message or None)
    summary["out"] = str(out)
    if not result.converged:
        raise RelaxationFailed(f"relaxation of {atoms.get_chemical_formula()} failed "
                               f"({result.failure_class}): {result.message}; see {out}",
                               failure={"failure_class": result.failure_class,
                                        "message": result.message})
    return summary


def relax_plot(trajectory: list[dict[str, float]], *, out: Path, title: str) -> str:
    from harness.statics.tables import figure, save_figure

    steps = [t["step"] for t in trajectory]
    fig, (ax1, ax2) = figure(4.6, 3.6, ncols=2)
    energy = np.array([t["energy_eV"] for t in trajectory])
    ax1.plot(steps, energy - energy[-1], "-o", ms=2)
    ax1.set_xlabel("FIRE step")
    ax1.set_ylabel("E - E(final) (eV)")
    ax1.set_title(title, fontsize=9)
    ax2.semilogy(steps, [max(t["fmax_eV_per_A"], 1e-12) for t in trajectory], label="max force (eV/A)")
    smax = [t["smax_GPa"] for t in trajectory]
    if np.isfinite(smax).any():
        ax2.semilogy(steps, np.maximum(smax, 1e-12), label="max stress (GPa)")
    ax2.set_xlabel("FIRE step")
    ax2.set_ylabel("residual")
    ax2.legend(fontsize=8, frameon=False)
    return save_figure(fig, out / "relax.png")
