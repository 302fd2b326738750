"""Benchmark campaigns: one typed spec, protocol presets, and the expansion into tasks.

A campaign is ``structures x potentials x temperatures x replicas`` run under one protocol.
Every task is an :class:`~harness.md.spec.MDSpec` plus analysis settings, built by layering

    preset (seed004 | seed003 | seed001 | seed001-npt | seed002)
      < campaign fields (``md:`` / ``analysis:`` / ``temperatures_K`` / ``replicas``)
      < per-structure overrides (``structures: [{name, md: {...}, analysis: {...}}]``)
      < per-potential ``route`` / ``device``
      < the task's own structure, potential, temperature, seed and run directory.

Task IDs are deterministic (``<structure>__<potential>__T<T>__r<replica>``) and so are the
seeds: a stable hash (SHA-256, never Python's salted ``hash()``) of the campaign seed and
the *condition* ``<structure>__T<T>__r<replica>``. Every potential therefore starts a given
condition from the same initial velocities, and ``mpirun -n 1`` and ``-n 8`` give the same
per-task numbers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.md.spec import MDSpec, Route, SpecError, _format_errors, load_yaml

#: keys of MDSpec that a campaign sets itself for every task (not overridable)
TASK_OWNED_KEYS = ("structure", "potential", "temperature_K", "seed", "out")

#: seed 004 Table 2 (OBELiX IDs; the paper's OCR'd j0c/ip0/471 are joc/ipo/47i). goi
#: (LiClC3H7NO) is left out as in the paper, whose MACE MD failed for it.
OBELIX_SEED004_IDS = ("qa9", "t0h", "ur9", "uu4", "9zk", "bv2", "x2i", "5bz", "joc", "ipo",
                      "wyu", "be9", "2uv", "rr5", "fft", "gvd", "mdp", "dth", "clt", "47i",
                      "kfp")


# --------------------------------------------------------------------------------------
# analysis settings of a task
# --------------------------------------------------------------------------------------
class TaskAnalysis(BaseModel):
    """How each task's trajectory is analysed (``harness analyze`` settings + campaign rules)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    species: str | None = Field(None, description="mobile species (default: the alkali)")
    charges: dict[str, float] | None = Field(
        None, description="formal charge number per species for the conductivities, e.g. "
        "{Mg: 2} (default: analysis.analyzer.ION_CHARGE; recorded in transport.json)")
    analysis_start_ps: float = Field(0.0, ge=0, description="discarded from the trajectory start")
    fit_start_ps: float | None = Field(None, ge=0, description="fit window start (lag time)")
    fit_end_ps: float | None = Field(None, gt=0, description="fit window end (lag time)")
    fit_last_ps: float | None = Field(None, gt=0, description="fit the last X ps of lag time: "
                                      "window [duration - X, duration] (seed 003)")
    rdf_last_ps: float | None = Field(None, gt=0, description="RDF averaged over the last X ps")
    msd_reliable_A2: float = Field(20.0, gt=0, description="a temperature counts as reliable "
                                   "when the largest MSD reaches this (seed 004)")
    T_eval_K: float = Field(300.0, gt=0, description="Arrhenius extrapolation temperature")
    kinisi_n_samples: int | None = Field(None, ge=10)
    kinisi_n_walkers: int | None = Field(None, ge=4)
    kinisi_n_burn: int | None = Field(None, ge=0)
    compute_distinct: bool = Field(True, description="distinct van Hove part (costly)")
    plots: bool = Field(False, description="per-task PNGs (the report draws its own)")

    @model_validator(mode="after")
    def _windows(self) -> "TaskAnalysis":
        if self.fit_last_ps is not None and (self.fit_start_ps is not None
                                             or self.fit_end_ps is not None):
            raise ValueError("give fit_last_ps or fit_start_ps/fit_end_ps, not both")
        return self


# --------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    name: str
    source: str
    description: str
    md: dict[str, Any]
    analysis: dict[str, Any]
    temperatures_K: tuple[float, ...] | None
    replicas: int = 1
    notes: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    "seed004": Preset(
        name="seed004",
        source="seed 004 (OBELiX MD benchmark, ICLR 2026), section 2.2",
        description="supercell >= 10 A per axis, NVT Nose-Hoover, 2 fs, 800-1200 K in 100 K "
                    "steps, 100 ps, first 5 ps discarded, kinisi D, Arrhenius to 300 K, "
                    "reliability = temperatures with MSD >= 20 A^2",
        md=dict(supercell_min_length_A=10.0, ensemble="nvt_nose_hoover", timestep_fs=2.0,
                steps=50_000, equilibration_steps=0, dump_every=50, thermo_every=50,
                restart_every=5_000),
        analysis=dict(analysis_start_ps=5.0, msd_reliable_A2=20.0, T_eval_K=300.0),
        temperatures_K=(800.0, 900.0, 1000.0, 1100.0, 1200.0),
        notes=("thermostat time constant: the harness default (100 fs); the paper ran ASE "
               "and does not state it", "dump every 50 steps (0.1 ps): not stated"),
    ),
    "seed003": Preset(
        name="seed003",
        source="seed 003 (uMLIP benchmark for alkali-ion batteries), MD methods",
        description="relax (fmax 0.05 eV/A), NVT Nose-Hoover at 800 and 1200 K, 50 ps, 2 fs, "
                    "D from the MSD over the last 20 ps, Ea from the two temperatures, RDF "
                    "averaged over 30-50 ps, MAE vs a reference",
        md=dict(minimize=True, minimize_ftol_eV_per_A=0.05, ensemble="nvt_nose_hoover",
                timestep_fs=2.0, steps=25_000, equilibration_steps=0, dump_every=10,
                thermo_every=50, restart_every=5_000),
        analysis=dict(analysis_start_ps=0.0, fit_last_ps=20.0, rdf_last_ps=20.0),
        temperatures_K=(800.0, 1200.0),
        notes=("the relaxation is LAMMPS minimize with the 2-norm force tolerance 0.05 eV/A "
               "(stricter than a per-atom fmax) at fixed cell",
               "the seed stores every step; frames every 10 steps (20 fs) here",
               "'last 20 ps' is the lag window [30, 50] ps of the MSD, as the seed fits "
               "MSD(t) for t in the last 20 ps"),
    ),
    "seed001": Preset(
        name="seed001",
        source="seed 001 (uMLIP benchmark for solid-state electrolytes), MD methods",
        description="3x3x3 supercells, NVT Berendsen (tau_T 200 fs), 300-1100 K, 2 fs, 1 ns, "
                    "sigma(300 K)",
        md=dict(supercell_matrix=[3, 3, 3], ensemble="nvt_berendsen", tdamp_fs=200.0,
                timestep_fs=2.0, steps=500_000, equilibration_steps=0, dump_every=100,
                thermo_every=100, restart_every=10_000),
        analysis=dict(T_eval_K=300.0),
        temperatures_K=(300.0, 400.0, 500.0, 700.0, 900.0, 1100.0),
        notes=("the seed ran 1-10 ns; 1 ns here", "frames every 0.2 ps: not stated"),
    ),
    "seed001-npt": Preset(
        name="seed001-npt",
        source="seed 001, MD methods (NPT variant)",
        description="as seed001 with a non-uniform Berendsen barostat (tau_P 2000 fs) at 1 bar",
        md=dict(supercell_matrix=[3, 3, 3], ensemble="npt_berendsen", tdamp_fs=200.0,
                pdamp_fs=2000.0, pressure_bar=1.0, timestep_fs=2.0, steps=500_000,
                equilibration_steps=0, dump_every=100, thermo_every=100, restart_every=10_000),
        analysis=dict(T_eval_K=300.0),
        temperatures_K=(300.0, 400.0, 500.0, 700.0, 900.0, 1100.0),
        notes=("Berendsen barostat modulus: the harness default (30 GPa)",),
    ),
    "seed002": Preset(
        name="seed002",
        source="seed 002 (XC functionals and architectures, Li6PS5Cl), abstract/methods",
        description="300 independent replicas of 70 ps per condition, MSD averaged across "
                    "replicas",
        md=dict(ensemble="nvt_nose_hoover", timestep_fs=2.0, steps=35_000,
                equilibration_steps=0, dump_every=50, thermo_every=50, restart_every=5_000),
        analysis=dict(),
        temperatures_K=None,
        replicas=300,
        notes=("the seed text gives neither temperatures nor time step: set temperatures_K; "
               "2 fs assumed",),
    ),
}


# --------------------------------------------------------------------------------------
# the campaign spec
# --------------------------------------------------------------------------------------
class StructureEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="label used in task IDs and tables")
    file: str | None = Field(None, description="structure file or bundled name (default: name)")
    reference_id: str | None = Field(None, description="row ID in the experimental CSV")
    md: dict[str, Any] = Field(default_factory=dict, description="MDSpec overrides")
    analysis: dict[str, Any] = Field(default_factory=dict, description="analysis overrides")
    temperatures_K: list[float] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", value):
            raise ValueError(f"structure name {value!r} may hold only letters, digits and . _ + -"
                             " (it becomes part of task IDs and directory names)")
        if "__" in value:
            raise ValueError(f"structure name {value!r} may not contain '__'")
        return value


class PotentialEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered name or family:/path/model")
    label: str | None = Field(None, description="short label for task IDs and tables")
    route: Route | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None


class BenchmarkSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["obelix-seed004", "bundled"]
    dir: str | None = Field(None, description="folder with <ID>.cif (obelix-seed004)")
    ids: list[str] | None = Field(None, description="subset of the set's IDs")


class ExperimentalValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    structure: str
    sigma_S_per_cm: float = Field(gt=0)
    upper_bound: bool = False
    source: str | None = None


class ReferenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experimental_csv: str | None = Field(None, description="OBELiX-style CSV (ID, Reduced "
                                         "Composition, Ionic conductivity (S cm-1))")
    experimental: list[ExperimentalValue] = Field(default_factory=list)
    reference_csv: str | None = Field(None, description="CSV of reference D(T) and/or Ea "
                                      "(AIMD, DeePMD): structure, temperature_K, D_cm2_per_s, "
                                      "Ea_eV")
    trajectories: list[dict[str, Any]] = Field(default_factory=list, description="reference "
                                               "trajectories analysed like the tasks")
    reference_potential: str | None = Field(None, description="a campaign potential (label) "
                                            "used as the reference, e.g. a DeePMD model")
    label: str = Field("reference", description="name of the reference in tables (AIMD, ...)")


class FarmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranks_per_task: int = Field(1, ge=1, description="MPI ranks per LAMMPS instance")
    scheduler_works: bool = Field(True, description="rank 0 runs tasks too, serving the "
                                  "queue between MD progress callbacks")
    gpus: Literal["auto", "none"] | int = Field("auto", description="GPUs per node for the "
                                                "local-rank mapping (auto: detect)")
    assemble_every_s: float = Field(30.0, gt=0, description="rewrite results.parquet at most "
                                    "this often while running")


class CampaignSpec(BaseModel):
    """A benchmark campaign: every key is a YAML key; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    name: str = "campaign"
    preset: Literal["seed004", "seed003", "seed001", "seed001-npt", "seed002"] | None = None
    seed: int = Field(2024, ge=0, description="campaign seed; task seeds derive from it")
    structures: list[str | StructureEntry] = Field(default_factory=list)
    benchmark_set: BenchmarkSet | None = None
    potentials: list[str | PotentialEntry] = Field(min_length=1)
    temperatures_K: list[float] | None = None
    replicas: int | None = Field(None, ge=1)
    md: dict[str, Any] = Field(default_factory=dict, description="MDSpec overrides")
    analysis: dict[str, Any] = Field(default_factory=dict)
    references: ReferenceSettings = Field(default_factory=ReferenceSettings)
    farm: FarmSettings = Field(default_factory=FarmSettings)
    statics: list[dict[str, Any]] = Field(default_factory=list, description="static-property "
                                          "task groups (harness/campaign/statics_tasks.py)")
    out: str | None = Field(None, description="campaign directory (default campaigns/<name>)")
    convergence_policy: dict[str, Any] | None = Field(
        None, description="run every task until D converges (harness/campaign/policy.py)")

    @model_validator(mode="after")
    def _something_to_run(self) -> "CampaignSpec":
        if not self.structures and self.benchmark_set is None and not self.statics:
            raise ValueError("name at least one structure (structures:), a benchmark_set "
                             "or a statics: group")
        return self


# --------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------
@dataclass
class Task:
    """One MD run + its analysis. ``md`` is the full MDSpec as a dict (JSON-able)."""

    task_id: str
    structure: str
    structure_source: str
    reference_id: str | None
    potential: str
    potential_label: str
    temperature_K: float
    replica: int
    seed: int
    md: dict[str, Any]
    analysis: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "md"  # or a static kind (harness/campaign/statics_tasks.py)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        return cls(**data)

    def md_spec(self) -> MDSpec:
        return MDSpec(**self.md)

    def analysis_settings(self) -> TaskAnalysis:
        return TaskAnalysis(**self.analysis)


def stable_seed(*parts: Any, modulus: int = 2**31 - 2) -> int:
    """A seed in [1, 2^31 - 2] from SHA-256 of the parts (same on every machine and run)."""
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulus + 1


def format_temperature(value: float) -> str:
    return f"{value:g}"


def potential_label(entry: PotentialEntry) -> str:
    if entry.label:
        label = entry.label
    else:
        name, _, file_part = entry.name.partition(":")
        label = f"{name}-{Path(file_part).stem}" if file_part else name
        if entry.route not in (None, "auto"):
            label += f"-{entry.route}"
    label = re.sub(r"[^A-Za-z0-9.+-]+", "-", label).strip("-")
    if not label:
        raise SpecError(f"cannot make a label for potential {entry.name!r}; give label:")
    return label


def task_id(*, structure: str, potential_label: str, temperature_K: float, replica: int) -> str:
    return f"{structure}__{potential_label}__T{format_temperature(temperature_K)}__r{replica}"


def condition_id(*, structure: str, temperature_K: float, replica: int) -> str:
    return f"{structure}__T{format_temperature(temperature_K)}__r{replica}"


def load_campaign(path: str | Path, *, overrides: dict[str, Any] | None = None) -> CampaignSpec:
    """Read a campaign YAML (relative paths inside it are taken from its folder)."""
    path = Path(path)
    data = load_yaml(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    spec = parse_campaign(data, source=f"campaign {path}")
    return resolve_paths(spec, base=path.resolve().parent)


def parse_campaign(data: dict[str, Any], *, source: str = "campaign") -> CampaignSpec:
    try:
        return CampaignSpec(**data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, source=source)) from None


def _resolve(value: str | None, base: Path) -> str | None:
    """A relative path that exists next to the YAML becomes absolute; bundled names stay."""
    if value is None or ":" in value.split("/")[0]:
        return value
    candidate = Path(value).expanduser()
    if not candidate.is_absolute() and (base / candidate).exists():
        return str((base / candidate).resolve())
    return value


def resolve_paths(spec: CampaignSpec, *, base: Path) -> CampaignSpec:
    data = spec.model_dump(mode="json")
    structures = []
    for item in data["structures"]:
        if isinstance(item, str):
            item = {"name": _structure_name(item), "file": item}
        item["file"] = _resolve(item.get("file") or item["name"], base)
        structures.append(item)
    data["structures"] = structures
    if data.get("benchmark_set") and data["benchmark_set"].get("dir"):
        data["benchmark_set"]["dir"] = _resolve(data["benchmark_set"]["dir"], base)
    refs = data["references"]
    for key in ("experimental_csv", "reference_csv"):
        refs[key] = _resolve(refs.get(key), base)
    for traj in refs["trajectories"]:
        if "path" in traj:
            traj["path"] = ([_resolve(p, base) for p in traj["path"]]
                            if isinstance(traj["path"], list) else _resolve(traj["path"], base))
    potentials = []
    for item in data["potentials"]:
        entry = {"name": item} if isinstance(item, str) else item
        name, sep, file_part = entry["name"].partition(":")
        if sep and file_part:
            entry["name"] = f"{name}:{_resolve(file_part, base)}"
        potentials.append(entry)
    data["potentials"] = potentials
    if data.get("statics"):
        from harness.campaign.statics_tasks import resolve_statics_paths

        data["statics"] = resolve_statics_paths(data["statics"], base)
    if data.get("out"):
        out = Path(data["out"]).expanduser()
        data["out"] = str(out if out.is_absolute() else base / out)
    return parse_campaign(data)


def _structure_name(source: str) -> str:
    stem = Path(source.removeprefix("bundled:")).name
    for suffix in (".cif", ".vasp", ".extxyz", ".xyz"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).replace("__", "_") or "structure"


def structure_entries(spec: CampaignSpec) -> list[StructureEntry]:
    """The campaign's structures, the benchmark set's first, in a fixed order."""
    entries: list[StructureEntry] = []
    if spec.benchmark_set is not None:
        entries += _benchmark_entries(spec.benchmark_set)
    for item in spec.structures:
        if isinstance(item, str):
            item = StructureEntry(name=_structure_name(item), file=item)
        entries.append(item)
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"structure names must be unique; repeated: {', '.join(duplicates)} "
                        "(give name: to tell them apart)")
    return entries


def _benchmark_entries(bench: BenchmarkSet) -> list[StructureEntry]:
    if bench.name == "bundled":
        from harness.structures import bundled_structures

        ids = list(bench.ids or bundled_structures())
        return [StructureEntry(name=i, file=f"bundled:{i}") for i in ids]
    # obelix-seed004: the CIFs are not shipped (CC BY 4.0 data; see references.download_obelix)
    if not bench.dir:
        raise SpecError("benchmark_set obelix-seed004 needs dir: a folder holding the OBELiX "
                        "CIFs named <ID>.cif (harness.campaign.references.download_obelix fetches them)")
    folder = Path(bench.dir)
    ids = list(bench.ids or OBELIX_SEED004_IDS)
    unknown = sorted(set(ids) - set(OBELIX_SEED004_IDS) - {"goi"})
    if unknown:
        raise SpecError(f"not in seed 004's OBELiX set: {', '.join(unknown)}")
    missing = [i for i in ids if not (folder / f"{i}.cif").is_file()]
    if missing:
        raise SpecError(f"{folder} lacks {', '.join(f'{i}.cif' for i in missing)}; "
                        "download the OBELiX CIFs (harness.campaign.references.download_obelix)")
    return [StructureEntry(name=i, file=str(folder / f"{i}.cif"), reference_id=i) for i in ids]


def potential_entries(spec: CampaignSpec) -> list[PotentialEntry]:
    from potentials.registry import entries as registered

    entries = [PotentialEntry(name=p) if isinstance(p, str) else p for p in spec.potentials]
    known = {e.name.lower() for e in registered()}
    unknown = [e.name for e in entries if e.name.partition(":")[0].lower() not in known]
    if unknown:
        raise SpecError(f"unknown potential(s) {', '.join(map(repr, unknown))}; known: "
                        f"{', '.join(sorted(known))} (see `harness potentials`)")
    labels = [potential_label(e) for e in entries]
    duplicates = sorted({lab for lab in labels if labels.count(lab) > 1})
    if duplicates:
        raise SpecError(f"potential labels must be unique; repeated: {', '.join(duplicates)} "
                        "(give label: to tell them apart)")
    return entries


def _check_md_keys(values: dict[str, Any], *, where: str) -> None:
    unknown = sorted(set(values) - set(MDSpec.model_fields))
    if unknown:
        raise SpecError(f"unknown MD key(s) in {where}: {', '.join(unknown)}. "
                        f"Valid keys: {', '.join(MDSpec.model_fields)}")
    owned = sorted(set(values) & set(TASK_OWNED_KEYS))
    if owned:
        raise SpecError(f"{where} may not set {', '.join(owned)}: the campaign sets them per task "
                        "(structures:, potentials:, temperatures_K:, seed:, the campaign dir)")


def _merge_md(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; a supercell choice in a later layer replaces the other kind."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if "supercell_matrix" in layer and layer["supercell_matrix"] is not None:
            merged.pop("supercell_min_length_A", None)
        if "supercell_min_length_A" in layer and layer["supercell_min_length_A"] is not None:
            merged.pop("supercell_matrix", None)
        merged.update(layer)
    return merged


def preset_of(spec: CampaignSpec) -> Preset | None:
    return PRESETS[spec.preset] if spec.preset else None


def expand_tasks(spec: CampaignSpec, *, campaign_dir: str | Path) -> list[Task]:
    """Every task of the campaign, in a fixed order (structure, potential, T, replica)."""
    campaign_dir = Path(campaign_dir).resolve()
    preset = preset_of(spec)
    _check_md_keys(spec.md, where="md:")
    temperatures = spec.temperatures_K or (list(preset.temperatures_K) if preset and
                                           preset.temperatures_K else None)
    replicas = spec.replicas or (preset.replicas if preset else 1)
    tasks: list[Task] = []
    errors: list[str] = []
    potentials = potential_entries(spec)
    for entry in structure_entries(spec):
        _check_md_keys(entry.md, where=f"structure {entry.name} md:")
        temps = entry.temperatures_K or temperatures
        if not temps:
            raise SpecError(f"no temperatures for {entry.name}: set temperatures_K"
                            + (f" (preset {preset.name} fixes none)" if preset else ""))
        analysis_values = {**(preset.analysis if preset else {}), **spec.analysis,
                           **entry.analysis}
        try:
            analysis = TaskAnalysis(**analysis_values)
        except ValidationError as exc:
            raise SpecError(_format_errors(exc, source=f"analysis settings of {entry.name}")) \
                from None
        for pot in potentials:
            label = potential_label(pot)
            pot_layer = {k: v for k, v in (("route", pot.route), ("device", pot.device)) if v}
            # a disordered structure with an ordering: block runs each of its n orderings
            # as replicas of one task: replica r runs ordering r % n (pooled in the report)
            ordering = _merge_md(preset.md if preset else {}, spec.md, entry.md).get("ordering")
            n_orderings = int(ordering.get("n", 1)) if isinstance(ordering, dict) else 1
            for T in temps:
                for replica in range(replicas * n_orderings):
                    tid = task_id(structure=entry.name, potential_label=label, temperature_K=T,
                                  replica=replica)
                    seed = stable_seed(spec.seed, condition_id(structure=entry.name,
                                                               temperature_K=T, replica=replica))
                    md = _merge_md(preset.md if preset else {}, spec.md, entry.md, pot_layer)
                    md.update(structure=entry.file or entry.name, potential=pot.name,
                              temperature_K=float(T), seed=seed,
                              out=str(campaign_dir / "tasks" / tid))
                    if isinstance(ordering, dict):
                        md["ordering"] = {**ordering, "index": replica % n_orderings}
                    try:
                        md_spec = MDSpec(**md)
                    except ValidationError as exc:
                        errors.append(_format_errors(exc, source=f"MD spec of task {tid}"))
                        continue
                    tasks.append(Task(task_id=tid, structure=entry.name,
                                      structure_source=entry.file or entry.name,
                                      reference_id=entry.reference_id, potential=pot.name,
                                      potential_label=label, temperature_K=float(T),
                                      replica=replica, seed=seed,
                                      md=md_spec.model_dump(mode="json"),
                                      analysis=analysis.model_dump(mode="json")))
    if spec.convergence_policy is not None and not errors:
        from harness.campaign.policy import apply_policy

        tasks = apply_policy(tasks, spec.convergence_policy)
    if spec.statics:
        from harness.campaign.statics_tasks import expand_statics_tasks

        tasks += expand_statics_tasks(spec, campaign_dir=campaign_dir)
    seen: dict[str, Task] = {}
    for task in tasks:
        if task.task_id in seen:
            first = seen[task.task_id]
            raise SpecError(
                f"two tasks would share the ID {task.task_id} (temperatures "
                f"{first.temperature_K!r} K and {task.temperature_K!r} K of {task.structure}, "
                f"potential {task.potential_label}): list each temperature once (IDs keep 6 "
                "significant digits of the temperature)")
        seen[task.task_id] = task
    ref_pot = spec.references.reference_potential
    if ref_pot is not None and ref_pot not in {potential_label(p) for p in potentials}:
        raise SpecError(f"references.reference_potential {ref_pot!r} is not a potential of this "
                        f"campaign; its labels: "
                        f"{', '.join(potential_label(p) for p in potentials)}")
    if errors:
        shown = "\n".join(errors[:5])
        more = f"\n(and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise SpecError(shown + more)
    return tasks


def default_campaign_dir(spec: CampaignSpec) -> Path:
    return Path(spec.out) if spec.out else Path("campaigns") / spec.name


def describe_presets() -> str:
    """Markdown table of the presets (used by the README section and `harness bench --help`)."""
    lines = ["| preset | source | protocol | temperatures (K) | replicas |", "| --- | --- | --- | --- | --- |"]
    for p in PRESETS.values():
        temps = ", ".join(format_temperature(t) for t in p.temperatures_K) \
            if p.temperatures_K else "(set temperatures_K)"
        lines.append(f"| `{p.name}` | {p.source} | {p.description} | {temps} | {p.replicas} |")
    return "\n".join(lines)
