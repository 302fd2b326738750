"""Static-property tasks in campaigns: parity, elastic, formation, NEB, phonons.

A campaign YAML may hold a ``statics:`` list beside (or instead of) the MD structures::

    statics:
      - kind: neb                        # parity | elastic | formation | neb | phonons
        settings: {n_images: 3}          # keys of that command's spec (NEBSpec, ...)
        structures:
          - {name: LiFePO4-b, settings: {start: a.vasp, end: b.vasp}, reference: {barrier_eV: 0.27}}
          - Li3N                         # a bundled name or a file

Every (group, structure, potential) is one task ``<kind>__<structure>__<potential>`` run by the
same mpi4py farm as MD (resume: a task with a result.json is not run again; failures are
recorded). A task calls the command's workflow function (``run_neb``, ``run_phonons``,
``run_elastic``, ...) with its spec, writing the command's usual folder under
``tasks/<id>/run``. Paths are resolved relative to the YAML; a file that does not exist
(e.g. the shared reference data next to the repository) skips that task with a warning and a
note in the report. ``reference`` values (``barrier_eV``, ``K_VRH_GPa``, ``G_VRH_GPa``,
``E_form_eV_per_atom``, ``cv_300K_J_per_K_per_mol``) feed the report's parity tables.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

StaticsKind = Literal["parity", "elastic", "formation", "neb", "phonons"]


@dataclass(frozen=True)
class KindInfo:
    module: str
    spec: str
    run: str
    summary_file: str
    structure_key: str  # the spec field a structure entry's file goes into
    path_keys: tuple[str, ...]  # settings keys holding file paths (resolved against the YAML)


KINDS: dict[str, KindInfo] = {
    "parity": KindInfo("harness.statics.parity", "ParitySpec", "run_parity", "parity.json",
                       "frames", ("frames",)),
    "elastic": KindInfo("harness.statics.elastic", "ElasticSpec", "run_elastic", "elastic.json",
                        "structure", ()),
    "formation": KindInfo("harness.statics.formation", "FormationSpec", "run_formation",
                          "formation.json", "structure", ("references", "phases")),
    "neb": KindInfo("harness.statics.neb", "NEBSpec", "run_neb", "neb.json", "structure",
                    ("start", "end")),
    "phonons": KindInfo("harness.statics.phonons", "PhononSpec", "run_phonons", "phonons.json",
                        "structure", ("reference",)),
}


class StaticsStructure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    file: str | None = Field(None, description="structure file / bundled name (frames file "
                             "for parity); none when settings give start/end or a reference")
    settings: dict[str, Any] = Field(default_factory=dict)
    reference: dict[str, float] = Field(default_factory=dict, description="reference values "
                                        "for the report (barrier_eV, K_VRH_GPa, ...)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", value) or "__" in value:
            raise ValueError(f"statics structure name {value!r} may hold only letters, digits "
                             "and . _ + - (no '__')")
        return value


class StaticsGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: StaticsKind
    settings: dict[str, Any] = Field(default_factory=dict)
    structures: list[str | StaticsStructure] = Field(min_length=1)


def groups_of(spec: Any) -> list[StaticsGroup]:
    from harness.md.spec import SpecError, _format_errors

    out = []
    for k, item in enumerate(getattr(spec, "statics", None) or []):
        try:
            out.append(StaticsGroup(**item) if isinstance(item, dict) else item)
        except ValidationError as exc:
            raise SpecError(_format_errors(exc, source=f"statics[{k}]")) from None
    return out


def _entries(group: StaticsGroup) -> list[StaticsStructure]:
    from harness.campaign.tasks import _structure_name

    return [StaticsStructure(name=_structure_name(s), file=s) if isinstance(s, str) else s
            for s in group.structures]


# --------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------
def _resolve_one(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or ":" in value.split("/")[0]:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = (base / p)
    if candidate.exists() or "/" in value or value.startswith("."):
        return str(candidate.resolve())
    return value  # a bundled name


def resolve_statics_paths(items: list[Any], base: Path) -> list[Any]:
    """Make file paths of a ``statics:`` block absolute (relative to the YAML folder)."""
    out = []
    for item in items or []:
        if not isinstance(item, dict):
            out.append(item)
            continue
        item = json.loads(json.dumps(item))
        info = KINDS.get(item.get("kind", ""))
        keys = info.path_keys if info else ()

        def fix(settings: dict[str, Any]) -> None:
            for key in keys:
                if key in settings:
                    v = settings[key]
                    settings[key] = [_resolve_one(x, base) for x in v] if isinstance(v, list) \
                        else _resolve_one(v, base)

        fix(item.setdefault("settings", {}))
        structures = []
        for s in item.get("structures", []):
            if isinstance(s, str):
                s = {"name": _name_of(s), "file": s}
            s["file"] = _resolve_one(s["file"], base) if s.get("file") else None
            fix(s.setdefault("settings", {}))
            structures.append(s)
        item["structures"] = structures
        out.append(item)
    return out


def _name_of(source: str) -> str:
    from harness.campaign.tasks import _structure_name

    return _structure_name(source)


def _missing_files(values: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    from harness.structures import bundled_structures

    missing = []
    for key in keys:
        v = values.get(key)
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, str) and not Path(x).exists() and x not in bundled_structures():
                missing.append(x)
    return missing


# --------------------------------------------------------------------------------------
# expansion
# --------------------------------------------------------------------------------------
def expand_statics_tasks(spec: Any, *, campaign_dir: Path) -> list[Any]:
    """Tasks of the ``statics:`` block (kind != 'md'); files that are absent skip a task."""
    from harness.campaign.tasks import Task, potential_entries, potential_label
    from harness.md.spec import SpecError, _format_errors

    groups = groups_of(spec)
    if not groups:
        return []
    potentials = potential_entries(spec)
    tasks = []
    for group in groups:
        info = KINDS[group.kind]
        module = importlib.import_module(info.module)
        spec_cls = getattr(module, info.spec)
        for entry in _entries(group):
            settings = {**group.settings, **entry.settings}
            if entry.file is not None:
                settings[info.structure_key] = [entry.file] if info.structure_key == "frames" \
                    else entry.file
            missing = _missing_files(settings, (info.structure_key,) + info.path_keys)
            if missing:
                warnings.warn(f"statics {group.kind} {entry.name}: {', '.join(missing)} not "
                              "found; task skipped (shared data absent?)", stacklevel=2)
                continue
            for pot in potentials:
                label = potential_label(pot)
                tid = f"{group.kind}__{entry.name}__{label}"
                values = dict(settings, potential=pot.name,
                              out=str(Path(campaign_dir) / "tasks" / tid / "run"))
                for key in ("route", "device"):
                    if getattr(pot, key, None):
                        values[key] = getattr(pot, key)
                try:
                    job = spec_cls(**values)
                except ValidationError as exc:
                    raise SpecError(_format_errors(exc, source=f"statics task {tid}")) from None
                tasks.append(Task(task_id=tid, structure=entry.name,
                                  structure_source=entry.file or "", reference_id=None,
                                  potential=pot.name, potential_label=label, temperature_K=0.0,
                                  replica=0, seed=0, md={}, analysis={}, kind=group.kind,
                                  extra={"statics": {"kind": group.kind,
                                                     "spec": job.model_dump(mode="json"),
                                                     "reference": entry.reference}}))
    return tasks


# --------------------------------------------------------------------------------------
# running one task (called by the farm)
# --------------------------------------------------------------------------------------
def run_statics_task(task: Any, *, campaign_dir: Path, comm: Any, fresh: bool = False,
                     gpu: str | None = None) -> dict[str, Any] | None:
    """The group leader runs the static job and writes result.json; members return None."""
    from harness.campaign.farm import RESULT_FILE, _known_input_errors, failure_category, \
        task_dir
    from harness.md.rundir import atomic_write_json, now_iso
    from harness.statics.statics_run import StaticsInputError

    if comm.Get_rank() != 0:
        return None  # static jobs evaluate on one rank (LAMMPS on COMM_SELF)
    run_dir = task_dir(campaign_dir, task.task_id)
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = task.extra["statics"]
    info = KINDS[meta["kind"]]
    result: dict[str, Any] = {"task_id": task.task_id, "kind": meta["kind"], "status": "failed",
                              "stage": "statics", "failure_kind": None, "failure_category": None,
                              "failure_step": None, "error": None, "notes": [],
                              "task": task.as_dict(), "md": {}, "transport": None,
                              "statics": None, "started": now_iso()}
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(info.module)
        job = getattr(module, info.spec)(**meta["spec"])
        getattr(module, info.run)(job, force=True)
        summary_path = Path(job.out) / info.summary_file
        result["statics"] = json.loads(summary_path.read_text())
        result.update(status="completed", stage=None)
    except (StaticsInputError, *_known_input_errors()) as exc:
        result.update(failure_kind="input_error", error=f"{type(exc).__name__}: {exc}",
                      stage="setup")
    except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the campaign
        result.update(failure_kind="error", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=8))
    wall = time.perf_counter() - t0
    result["failure_category"] = failure_category(result["failure_kind"])
    result["cost"] = {"task_wall_s": round(wall, 3), "ranks": 1, "cpu_hours": wall / 3600.0,
                      "gpu_hours": 0.0}
    result["finished"] = now_iso()
    atomic_write_json(run_dir / RESULT_FILE, result)
    return result


# --------------------------------------------------------------------------------------
# tables and report
# --------------------------------------------------------------------------------------
def statics_task_dicts(campaign_dir: Path) -> list[dict[str, Any]]:
    path = Path(campaign_dir) / "tasks.json"
    if not path.is_file():
        return []
    return [t for t in json.loads(path.read_text()) if t.get("kind", "md") != "md"]


def has_md_tasks(campaign_dir: Path) -> bool:
    path = Path(campaign_dir) / "tasks.json"
    return path.is_file() and any(t.get("kind", "md") == "md"
                                  for t in json.loads(path.read_text()))


def statics_frame(campaign_dir: Path):
    """One row per static task: status, cost and the kind's headline numbers."""
    import pandas as pd

    from harness.campaign.farm import RESULT_FILE, TASKS_DIR

    rows = []
    for t in statics_task_dicts(campaign_dir):
        try:
            res = json.loads((Path(campaign_dir) / TASKS_DIR / t["task_id"] / RESULT_FILE)
                             .read_text())
        except (OSError, ValueError):
            res = {}
        s = res.get("statics") or {}
        ref = (t.get("extra") or {}).get("statics", {}).get("reference", {})
        row = {"task_id": t["task_id"], "kind": t["kind"], "structure": t["structure"],
               "potential_label": t["potential_label"], "status": res.get("status", "pending"),
               "failure_kind": res.get("failure_kind"), "error": res.get("error"),
               "task_wall_s": (res.get("cost") or {}).get("task_wall_s"),
               "route": s.get("route") or (s.get("potential_info") or {}).get("route")}
        for key in ("energy_mae_eV_per_atom", "force_mae_eV_per_A", "stress_mae_GPa", "n_frames",
                    "K_VRH_GPa", "G_VRH_GPa", "E_GPa", "mechanically_stable",
                    "E_form_eV_per_atom", "e_form_eV_per_atom", "E_above_hull_eV_per_atom",
                    "e_above_hull_eV_per_atom",
                    "n_hops", "n_ok", "n_failed_type_I", "n_failed_type_II", "mae_eV",
                    "cv_300K_J_per_K_per_mol", "fc2_mae_eV_per_A2", "fc2_r2",
                    "fc3_mae_eV_per_A3", "fc3_r2", "frequency_mae_THz",
                    "cv_reference_J_per_K_per_mol"):
            if key in s and not isinstance(s[key], (dict, list)):
                row[key] = s[key]
        if t["kind"] == "neb":
            barriers = s.get("barriers_eV") or {}
            row["barriers_eV"] = json.dumps(barriers)
            if len(barriers) == 1:
                row["barrier_eV"] = next(iter(barriers.values()))
        for key, value in ref.items():
            row[f"ref_{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def assemble_statics(campaign_dir: Path) -> dict[str, Path]:
    from harness.md.rundir import atomic_write_text

    df = statics_frame(campaign_dir)
    if df.empty:
        return {}
    return {"statics": atomic_write_text(Path(campaign_dir) / "statics.csv",
                                         df.to_csv(index=False))}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _parity_plot(df, x: str, y: str, path: Path, *, xlabel: str, ylabel: str,
                 title: str) -> Path | None:
    import numpy as np

    from analysis.output import write_figure

    if x not in df or y not in df:
        return None
    data = df[np.isfinite(df[x].astype(float)) & np.isfinite(df[y].astype(float))]
    if data.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    for k, (pot, g) in enumerate(data.groupby("potential_label")):
        ax.scatter(g[x].astype(float), g[y].astype(float), color=f"C{k}", label=pot, s=40,
                   edgecolor="k", zorder=2)
        for xi, yi, name in zip(g[x], g[y], g["structure"]):
            ax.annotate(str(name), (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    lo = float(min(data[x].min(), data[y].min()))
    hi = float(max(data[x].max(), data[y].max()))
    pad = 0.1 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def statics_sections(campaign_dir: Path, out: Path) -> tuple[list[tuple[str, Any, list[str], str]],
                                                             list[tuple[str, Path]]]:
    """(sections, figures) for the report: (title, table, columns, note) and (title, png)."""
    import numpy as np

    df = statics_frame(campaign_dir)
    if df.empty:
        return [], []
    sections: list[tuple[str, Any, list[str], str]] = []
    figures: list[tuple[str, Path]] = []
    base = ["potential_label", "structure", "status", "route"]

    def part(kind: str):
        return df[df["kind"] == kind].copy()

    p = part("parity")
    if len(p):
        sections.append(("Statics: energy/force/stress parity", p,
                         base + ["n_frames", "energy_mae_eV_per_atom", "force_mae_eV_per_A",
                                 "stress_mae_GPa", "error"], "MAE against the reference frames"))
        for row in p.itertuples():
            for name in ("parity.png", "parity_forces.png", "forces_parity.png"):
                src = Path(campaign_dir) / "tasks" / row.task_id / "run" / name
                if src.is_file():
                    dst = out / f"parity_{row.task_id}.png"
                    shutil.copyfile(src, dst)
                    figures.append((f"Parity: {row.structure} / {row.potential_label}", dst))
                    break
    e = part("elastic")
    if len(e):
        for k in ("K_VRH_GPa", "G_VRH_GPa"):
            if f"ref_{k}" in e and k in e:
                e[f"{k}_error"] = e[k].astype(float) - e[f"ref_{k}"].astype(float)
        sections.append(("Statics: elastic moduli vs reference", e,
                         base + ["K_VRH_GPa", "ref_K_VRH_GPa", "K_VRH_GPa_error", "G_VRH_GPa",
                                 "ref_G_VRH_GPa", "G_VRH_GPa_error", "E_GPa",
                                 "mechanically_stable", "error"], "Voigt-Reuss-Hill moduli"))
        fig = _parity_plot(e, "ref_K_VRH_GPa", "K_VRH_GPa", out / "statics_bulk_modulus.png",
                           xlabel="reference K_VRH (GPa)", ylabel="model K_VRH (GPa)",
                           title="bulk modulus")
        if fig:
            figures.append(("Bulk modulus vs reference", fig))
    f = part("formation")
    if len(f):
        sections.append(("Statics: formation energy and E_above_hull", f,
                         base + [c for c in ("E_form_eV_per_atom", "e_form_eV_per_atom",
                                             "ref_E_form_eV_per_atom",
                                             "E_above_hull_eV_per_atom",
                                             "e_above_hull_eV_per_atom") if c in f] + ["error"],
                         "same-potential elemental references"))
    n = part("neb")
    if len(n):
        counts = n.groupby("potential_label").agg(
            n_tasks=("task_id", "count"),
            n_hops=("n_hops", lambda s: int(np.nansum(s.astype(float)))),
            n_ok=("n_ok", lambda s: int(np.nansum(s.astype(float)))),
            n_failed_type_I=("n_failed_type_I", lambda s: int(np.nansum(s.astype(float)))),
            n_failed_type_II=("n_failed_type_II", lambda s: int(np.nansum(s.astype(float)))),
        ).reset_index()
        if "barrier_eV" in n and "ref_barrier_eV" in n:
            n["barrier_error_eV"] = n["barrier_eV"].astype(float) - n["ref_barrier_eV"].astype(float)
            mae = n.groupby("potential_label")["barrier_error_eV"].apply(
                lambda s: float(np.nanmean(np.abs(s))) if s.notna().any() else math.nan)
            counts["barrier_MAE_eV"] = counts["potential_label"].map(mae)
        sections.append(("Statics: NEB failures by type", counts,
                         list(counts.columns), "Type I = divergence, Type II = E_TS below an "
                         "endpoint; failed hops are excluded from the MAE (seed 003)"))
        sections.append(("Statics: NEB barriers", n,
                         base + [c for c in ("barrier_eV", "ref_barrier_eV", "barrier_error_eV",
                                             "n_hops", "n_failed_type_I", "n_failed_type_II",
                                             "barriers_eV", "error") if c in n], ""))
        fig = _parity_plot(n, "ref_barrier_eV", "barrier_eV", out / "statics_neb_parity.png",
                           xlabel="reference barrier (eV)", ylabel="model barrier (eV)",
                           title="NEB barrier parity (failed hops left out)")
        if fig:
            figures.append(("NEB barrier parity", fig))
    ph = part("phonons")
    if len(ph):
        sections.append(("Statics: phonons and IFC parity", ph,
                         base + [c for c in ("cv_300K_J_per_K_per_mol",
                                             "cv_reference_J_per_K_per_mol",
                                             "ref_cv_300K_J_per_K_per_mol", "fc2_mae_eV_per_A2",
                                             "fc2_r2", "fc3_mae_eV_per_A3", "fc3_r2",
                                             "frequency_mae_THz", "error") if c in ph],
                         "IFC MAE/R^2 over all supercell elements against the reference"))
        for row in ph.itertuples():
            src = Path(campaign_dir) / "tasks" / row.task_id / "run" / "fc2_parity.png"
            if src.is_file():
                dst = out / f"fc2_parity_{row.task_id}.png"
                shutil.copyfile(src, dst)
                figures.append((f"fc2 parity: {row.structure} / {row.potential_label}", dst))
    cost = df.groupby(["kind", "potential_label"]).agg(
        n_tasks=("task_id", "count"),
        n_failed=("status", lambda s: int((s == "failed").sum())),
        wall_s_total=("task_wall_s", lambda s: float(np.nansum(s.astype(float)))),
        wall_s_median=("task_wall_s", lambda s: float(np.nanmedian(s.astype(float)))
                       if s.notna().any() else math.nan)).reset_index()
    sections.append(("Statics: cost", cost, list(cost.columns), "wall seconds per task"))
    return sections, figures


def write_statics_report(campaign_dir: Path) -> dict[str, Path]:
    """Report of a campaign without MD tasks (report/report.md + .html)."""
    import html

    from harness.campaign.report import _html_table, markdown_table
    from harness.campaign.tasks import parse_campaign
    from harness.md.rundir import atomic_write_text

    import yaml

    campaign_dir = Path(campaign_dir)
    spec = parse_campaign(yaml.safe_load((campaign_dir / "campaign.yaml").read_text()))
    paths = assemble_statics(campaign_dir)
    out = campaign_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections, figures = statics_sections(campaign_dir, out)
    df = statics_frame(campaign_dir)
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    status = (f"{len(df)} static tasks: {counts.get('completed', 0)} completed, "
              f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending")
    md = [f"# Campaign report: {spec.name}\n", f"{status}.\n"]
    body = [f"<h1>Campaign report: {html.escape(spec.name)}</h1>", f"<p>{html.escape(status)}</p>"]
    for title, table, cols, note in sections:
        md += [f"## {title}\n", f"{note}\n" if note else "", markdown_table(table, cols)]
        body += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(note)}</p>",
                 _html_table(table, cols)]
    md.append("## Figures\n")
    body.append("<h2>Figures</h2>")
    for title, p in figures:
        md.append(f"### {title}\n\n![{title}]({p.name})\n")
        body.append(f"<h3>{html.escape(title)}</h3><img src='{html.escape(p.name)}' "
                    f"alt='{html.escape(title)}'>")
    paths["report_md"] = atomic_write_text(out / "report.md", "\n".join(md))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(spec.name)} report</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1200px}"
            "table.t{border-collapse:collapse;font-size:12px;margin-bottom:1em}"
            "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    paths["report_html"] = atomic_write_text(out / "report.html", page)
    for _, p in figures:
        paths[f"figure:{p.name}"] = p
    return paths


def statics_markdown_and_html(campaign_dir: Path, out: Path) -> tuple[list[str], list[str],
                                                                       list[tuple[str, Path]]]:
    """Sections for a mixed (MD + statics) report: markdown lines, HTML parts, figures."""
    import html

    from harness.campaign.report import _html_table, markdown_table

    sections, figures = statics_sections(campaign_dir, out)
    md: list[str] = []
    body: list[str] = []
    for title, table, cols, note in sections:
        md += [f"## {title}\n", f"{note}\n" if note else "", markdown_table(table, cols)]
        body += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(note)}</p>",
                 _html_table(table, cols)]
    return md, body, figures
