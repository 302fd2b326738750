"""Typed job specs. One spec per job; its fields are the CLI flags and the YAML keys.

Precedence: built-in defaults < YAML file (``--config``) < flags given on the command
line. Unknown YAML keys are rejected with the list of valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Ensemble = Literal["nvt_nose_hoover", "nvt_berendsen", "nvt_langevin", "npt_iso", "npt_aniso",
                   "npt_berendsen", "nve"]
Route = Literal["auto", "native", "mliap", "external"]  # potentials/routes.py ROUTE_CHOICES


class SpecError(ValueError):
    """A spec (YAML or flags) is invalid; the message lists every problem."""


class ConvergenceSpec(BaseModel):
    """Adaptive production length (``harness md --until-converged``; harness/md/convergence.py).

    Production runs in chunks of ``check_every_ps``; after each chunk from ``min_ps`` on, D of
    ``species`` is estimated from the trajectory so far and the run stops as ``converged``,
    ``non_diffusive``, ``melting`` (watchdog) or ``budget`` (``max_ps`` / ``max_wall_h``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    species: str | None = Field(None, description="mobile species (default: the alkali)")
    target_rel_ci95: float = Field(0.2, gt=0, lt=10, description="stop when half the 95 % "
                                   "interval of D is at most this fraction of D")
    min_msd_A2: float = Field(20.0, ge=0, description="MSD gate: the MSD at the end of the fit "
                              "window must reach this before D counts as converged")
    check_every_ps: float = Field(5.0, gt=0, description="production time between checks")
    min_ps: float = Field(10.0, ge=0, description="no verdict before this production time")
    max_ps: float = Field(200.0, gt=0, description="production budget")
    max_wall_h: float | None = Field(None, gt=0, description="wall-time budget (all segments)")
    consecutive_checks: int = Field(2, ge=1, le=10, description="a verdict must hold at this "
                                    "many consecutive checks (guards against stopping on a "
                                    "fluctuation)")
    detect_equilibration: bool | None = Field(None, description="discard the start of "
                                              "production found from the potential energy "
                                              "(Chodera 2016); default: when "
                                              "equilibration_steps is 0")
    plateau_loglog_slope: float = Field(0.5, gt=0, lt=1, description="non_diffusive needs the "
                                        "log-log MSD slope in the fit window below this")
    seed: int = Field(0, ge=0, description="kinisi sampler seed of the checks")

    @model_validator(mode="after")
    def _order(self) -> "ConvergenceSpec":
        if self.min_ps > self.max_ps:
            raise ValueError(f"convergence.min_ps ({self.min_ps}) exceeds max_ps ({self.max_ps})")
        if self.check_every_ps > self.max_ps:
            raise ValueError(f"convergence.check_every_ps ({self.check_every_ps}) exceeds "
                             f"max_ps ({self.max_ps})")
        return self


class OrderingSpec(BaseModel):
    """How a disordered structure becomes ordered supercells (``harness order``, ``ordering:``).

    The rules (rounding, enumeration or Ewald-screened sampling, split-site exclusion) are
    in :mod:`harness.ordering`.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n: int = Field(1, ge=1, le=1000, description="orderings made (a campaign runs each as a "
                   "replica of one task)")
    index: int = Field(0, ge=0, description="which ordering `harness md` runs (0 = lowest "
                       "energy by rank_by)")
    supercell_min_length_A: float | None = Field(None, gt=0, le=200, description="supercell "
                                                 "of the ordering (default: the MD spec's)")
    supercell_matrix: list[int] | list[list[int]] | None = None
    seed: int = Field(0, ge=0, description="random sampling seed")
    method: Literal["auto", "enumerate", "sample"] = Field(
        "auto", description="auto: enumerate when the configurations number at most "
        "max_enumerate, else sample")
    max_enumerate: int = Field(20_000, ge=1, description="largest configuration count "
                               "enumerated exhaustively")
    n_samples: int = Field(500, ge=1, description="random configurations drawn when sampling")
    exclusion_distance_A: float = Field(2.0, ge=0, description="two partially occupied "
                                        "sites closer than this are never both occupied")
    oxidation_states: dict[str, float] | None = Field(None, description="e.g. {Li: 1, P: 5, "
                                                      "S: -2, Cl: -1}; default: guessed")
    charge_neutral: bool = Field(True, description="adjust the rounding to keep the cell "
                                 "neutral where possible")
    rank_by: str = Field("ewald", description="ewald, or a potential name: relaxed energy")

    @model_validator(mode="after")
    def _supercell(self) -> "OrderingSpec":
        if self.supercell_matrix is not None and self.supercell_min_length_A is not None:
            raise ValueError("ordering: give supercell_matrix or supercell_min_length_A, not both")
        if self.index >= self.n:
            raise ValueError(f"ordering.index {self.index} must be below ordering.n {self.n} "
                             "(index 0 is the lowest-energy ordering)")
        return self


class MDSpec(BaseModel):
    """One molecular-dynamics run of one structure with one potential."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    structure: str = Field(description="structure file (CIF, POSCAR, extxyz) or bundled name")
    potential: str = Field("sevennet-0", description="registered name, or family:/path/to/model")
    route: Route = Field("auto", description="LAMMPS route: native pair style, ML-IAP "
                         "(full build) or fix external; auto = fastest available")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    temperature_K: float = Field(1000.0, gt=0, le=5000)
    timestep_fs: float = Field(2.0, gt=0, le=10)
    steps: int = Field(1000, ge=1, description="production steps (after equilibration)")
    equilibration_steps: int = Field(0, ge=0, description="steps run first and not dumped")
    ensemble: Ensemble = "nvt_nose_hoover"
    tdamp_fs: float = Field(100.0, gt=0, description="thermostat time constant")
    pressure_bar: float = Field(1.0, description="NPT target pressure")
    pdamp_fs: float = Field(1000.0, gt=0, description="barostat time constant")
    barostat_modulus_bar: float = Field(3.0e5, gt=0, description="bulk modulus guess for the "
                                        "Berendsen barostat (30 GPa, typical of solid electrolytes)")

    minimize: bool = False
    minimize_ftol_eV_per_A: float = Field(0.05, gt=0)
    minimize_max_iterations: int = Field(500, ge=1)

    supercell_min_length_A: float | None = Field(None, gt=0, le=200)
    supercell_matrix: list[int] | list[list[int]] | None = None
    min_distance_A: float = Field(0.5, ge=0, description="closest allowed interatomic distance")
    occupancy_tolerance: float = Field(0.05, ge=0, lt=0.5)

    dump_every: int = Field(10, ge=1)
    dump_coordinates: Literal["wrapped_images", "unwrapped"] = "wrapped_images"
    thermo_every: int = Field(10, ge=1)
    restart_every: int = Field(1000, ge=1)
    seed: int = Field(12345, ge=1, lt=2**31 - 1)
    watchdog: bool = Field(True, description="health checks every few thermo steps")
    max_temperature_factor: float = Field(3.0, gt=1, description="runaway bound, x target T")
    max_energy_drift_eV_per_atom: float = Field(0.05, gt=0, description="NVE runs only")
    framework_msd_limit_A2: float = Field(4.0, gt=0, description="melting bound for the "
                                          "framework (non-mobile) atoms")
    out: str = "runs/md"
    neighbor_skin_A: float = Field(1.0, gt=0, le=5)
    ordering: OrderingSpec | None = Field(None, description="order a disordered structure "
                                          "first (harness.ordering); runs ordering.index")
    convergence: ConvergenceSpec | None = Field(None, description="adaptive production "
                                                "length; then steps = max_ps / timestep")

    @model_validator(mode="before")
    @classmethod
    def _steps_from_convergence(cls, values: Any) -> Any:
        """With a convergence block, ``steps`` (the most production steps) follows max_ps."""
        if not isinstance(values, dict) or values.get("convergence") is None:
            return values
        conv = values["convergence"]
        max_ps = (conv.get("max_ps", ConvergenceSpec.model_fields["max_ps"].default)
                  if isinstance(conv, dict) else getattr(conv, "max_ps", None))
        timestep = values.get("timestep_fs", cls.model_fields["timestep_fs"].default)
        try:
            derived = max(1, int(round(float(max_ps) * 1000.0 / float(timestep))))
        except (TypeError, ValueError, ZeroDivisionError):
            return values  # the field validators report the bad value
        if values.get("steps") is not None and int(values["steps"]) != derived:
            raise ValueError(f"steps ({values['steps']}) conflicts with convergence.max_ps "
                             f"({max_ps} ps = {derived} steps): give only convergence.max_ps")
        return {**values, "steps": derived}

    @field_validator("supercell_matrix")
    @classmethod
    def _matrix_shape(cls, value: Any) -> Any:
        if value is None:
            return value
        if len(value) != 3 or (isinstance(value[0], list) and any(len(r) != 3 for r in value)):
            raise ValueError("supercell_matrix must be 3 integers or a 3x3 integer matrix")
        return value

    @model_validator(mode="after")
    def _consistency(self) -> "MDSpec":
        if self.supercell_matrix is not None and self.supercell_min_length_A is not None:
            raise ValueError("give supercell_matrix or supercell_min_length_A, not both")
        if self.dump_every > self.steps:
            raise ValueError(f"dump_every ({self.dump_every}) exceeds steps ({self.steps}): "
                             "no production frame would be written")
        return self

    @property
    def duration_ps(self) -> float:
        return self.steps * self.timestep_fs / 1000.0


def _format_errors(err: ValidationError, *, source: str) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(spec)"
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        else:
            lines.append(f"{loc}: {item['msg']}")
    return f"invalid {source}:\n  " + "\n  ".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"config file {path} must hold a mapping of keys to values")
    return data


def build_spec(model: type[BaseModel], *, config: str | Path | None = None,
               overrides: dict[str, Any] | None = None) -> Any:
    """defaults < YAML < explicit flags (``None`` values in ``overrides`` mean 'not given')."""
    values: dict[str, Any] = {}
    source = "flags"
    if config is not None:
        values.update(load_yaml(config))
        source = f"config {config}"
        unknown = sorted(set(values) - set(model.model_fields))
        if unknown:
            raise SpecError(
                f"unknown key(s) in {config}: {', '.join(unknown)}. "
                f"Valid keys: {', '.join(model.model_fields)}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model(**values)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, source=source)) from None
