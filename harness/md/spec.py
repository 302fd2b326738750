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
