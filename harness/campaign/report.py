"""Campaign tables, metrics and the HTML/markdown report.

Tables (all written atomically into the campaign directory):

* ``results.parquet`` - one row per task (pending ones too): every input (the full MD
  spec and analysis settings as JSON, and the main ones as columns) and every output
  (status, failure kind, timing, cost, D with its 95 % interval, conductivity, MSD, flags).
* ``per_temperature.csv`` - per potential x structure x temperature: replicas combined.
  One replica: its kinisi D and interval. Several (seed 002): D of the replica-averaged
  MSD (OLS over the common fit window) with the 95 % interval of the replica mean
  (t-distribution over the replicas' D).
* ``summary.csv`` - per potential x structure: Arrhenius Ea, D and sigma at T_eval (300 K)
  with 95 % intervals, reliability count (temperatures whose largest MSD >= 20 A^2),
  failures by category, cost, the experimental value and the log10 error.
* ``metrics.csv`` / ``metrics.json`` - per potential, defined in :func:`potential_metrics`.

``harness report`` adds ``report/report.html``, ``report/report.md`` and PNG figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.campaign.farm import ANALYSIS_DIR, RESULT_FILE, TASKS_DIR
from harness.md.rundir import atomic_write_json, atomic_write_text

FAILURE_COLUMNS = ("md_blowup", "melting", "no_diffusion", "setup", "analysis", "resource",
                   "error")


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
def load_campaign_dir(campaign_dir: str | Path) -> tuple[Any, list[dict[str, Any]]]:
    """(resolved CampaignSpec, task dicts) of a campaign directory."""
    import yaml

    from harness.campaign.tasks import parse_campaign

    campaign_dir = Path(campaign_dir)
    spec_path, tasks_path = campaign_dir / "campaign.yaml", campaign_dir / "tasks.json"
    if not spec_path.is_file() or not tasks_path.is_file():
        raise FileNotFoundError(f"{campaign_dir} is not a campaign directory of `harness bench` "
                                "(no campaign.yaml / tasks.json)")
    spec = parse_campaign(yaml.safe_load(spec_path.read_text()), source=str(spec_path))
    return spec, json.loads(tasks_path.read_text())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def task_row(task: dict[str, Any], result: dict[str, Any] | None, *, campaign: str,
             preset: str | None) -> dict[str, Any]:
    """The tidy results row of one task."""
    md = task["md"]
    analysis = task["analysis"]
    result = result or {}
    status = result.get("status", "pending")
    mdres = result.get("md") or {}
    tr = result.get("transport") or {}
    cost = result.get("cost") or {}
    flags = tr.get("flags") or []
    ci = tr.get("D_ci95_cm2_per_s") or [None, None]
    sci = tr.get("sigma_NE_ci95_mS_per_cm") or [None, None]
    fit = tr.get("fit_window_ps") or [None, None]
    msd_max = tr.get("msd_max_A2")
    threshold = analysis.get("msd_reliable_A2", 20.0)
    supercell = md.get("supercell_matrix") or (
        f">={md['supercell_min_length_A']:g}A" if md.get("supercell_min_length_A") else "1x1x1")
    return {
        "task_id": task["task_id"], "campaign": campaign, "preset": preset,
        "structure": task["structure"], "structure_source": task["structure_source"],
        "reference_id": task.get("reference_id"), "potential": task["potential"],
        "potential_label": task["potential_label"], "temperature_K": task["temperature_K"],
        "replica": task["replica"], "seed": task["seed"],
        "ordering_index": (md.get("ordering") or {}).get("index"),
        "n_orderings": (md.get("ordering") or {}).get("n"),
        "status": status, "stage": result.get("stage"),
        "failure_kind": result.get("failure_kind"),
        "failure_category": result.get("failure_category"),
        "failure_step": result.get("failure_step"), "error": result.get("error"),
        "ensemble": md["ensemble"], "timestep_fs": md["timestep_fs"], "steps": md["steps"],
        "equilibration_steps": md["equilibration_steps"],
        "duration_ps": md["steps"] * md["timestep_fs"] / 1000.0, "dump_every": md["dump_every"],
        "tdamp_fs": md["tdamp_fs"], "pdamp_fs": md["pdamp_fs"], "minimize": md["minimize"],
        "supercell": str(supercell), "route_requested": md["route"],
        "route": mdres.get("potential_route"), "device": md["device"],
        "analysis_start_ps": analysis.get("analysis_start_ps"),
        "n_atoms": mdres.get("n_atoms"), "formula": mdres.get("formula"),
        "md_wall_s": mdres.get("wall_s"), "ms_per_step": mdres.get("ms_per_step"),
        "atom_steps_per_s": mdres.get("atom_steps_per_s"),
        "resumed_from_step": mdres.get("resumed_from_step"), "md_segments": mdres.get("segments"),
        "task_wall_s": cost.get("task_wall_s"), "analysis_wall_s": cost.get("analysis_wall_s"),
        "ranks": cost.get("ranks"), "cpu_hours": cost.get("cpu_hours"),
        "gpu_hours": cost.get("gpu_hours"),
        "species": tr.get("species"), "n_ions": tr.get("n_ions"), "charge": tr.get("charge"),
        "volume_A3": tr.get("volume_A3", mdres.get("volume_A3")),
        "D_cm2_per_s": tr.get("D_cm2_per_s"), "D_ci95_lo": ci[0], "D_ci95_hi": ci[1],
        "D_std_cm2_per_s": tr.get("D_std_cm2_per_s"),
        "D_ols_cm2_per_s": tr.get("D_ols_cm2_per_s"),
        "sigma_NE_mS_per_cm": tr.get("sigma_NE_mS_per_cm"), "sigma_NE_ci95_lo": sci[0],
        "sigma_NE_ci95_hi": sci[1], "D_charge_cm2_per_s": tr.get("D_charge_cm2_per_s"),
        "sigma_charge_mS_per_cm": tr.get("sigma_charge_mS_per_cm"),
        "haven_ratio": tr.get("haven_ratio"), "msd_max_A2": msd_max,
        "fit_start_ps": fit[0], "fit_end_ps": fit[1], "n_frames": tr.get("n_frames"),
        "flags": ";".join(flags),
        "reliable": bool(msd_max is not None and msd_max >= threshold),
        "no_diffusion": bool(status == "completed" and msd_max is not None
                             and msd_max < threshold),
        "framework_diffusing": bool({"framework_diffusing", "framework_rdf_loss"} & set(flags)),
        "finished": result.get("finished"),
        "worker_rank": (result.get("worker") or {}).get("world_rank"),
        "host": (result.get("worker") or {}).get("host"),
        **_convergence_columns(mdres.get("convergence"), task),
        "md_spec_json": json.dumps(md, sort_keys=True),
        "analysis_json": json.dumps(analysis, sort_keys=True),
    }


def _convergence_columns(conv: dict[str, Any] | None, task: dict[str, Any]) -> dict[str, Any]:
    """Stop verdict of an adaptive task (convergence policy); None for fixed-length tasks."""
    conv = conv or {}
    history_last = conv.get("D_ci95_cm2_per_s") or [None, None]
    D = conv.get("D_cm2_per_s")
    rel = ((history_last[1] - history_last[0]) / (2 * D)
           if D and history_last[0] is not None else None)
    return {"stop_reason": conv.get("stop_reason"),
            "production_ps_run": conv.get("production_ps"),
            "fixed_ps": (task.get("extra") or {}).get("fixed_ps"),
            "D_cm2_per_s_at_stop": D,
            "D_upper_bound_cm2_per_s": conv.get("D_upper_bound_cm2_per_s"),
            "rel_half_width_ci95_at_stop": rel,
            "analysis_fraction_of_md": conv.get("analysis_fraction_of_md")}


def _validation_rows(results, campaign_dir: Path, rdf_ref: dict) -> list[dict[str, Any]]:
    """Each completed task vs the reference analysis of its structure and temperature."""
    from harness.campaign.validation import compare

    rows = []
    for r in results[results["status"] == "completed"].itertuples():
        ref = rdf_ref.get((r.structure, float(r.temperature_K)))
        task_dir = campaign_dir / TASKS_DIR / r.task_id / ANALYSIS_DIR
        if ref is None or not (task_dir / "transport.json").is_file() or \
                Path(ref).parent == task_dir:
            continue
        conv = {"stop_reason": getattr(r, "stop_reason", None),
                "D_upper_bound_cm2_per_s": getattr(r, "D_upper_bound_cm2_per_s", None)}
        c = compare(task_dir, Path(ref).parent, convergence=conv)
        rows.append({"task_id": r.task_id, "stop_reason": conv["stop_reason"], **c,
                     "rdf_mae_mean": (c.get("rdf_mae") or {}).get("mean_over_pairs"),
                     "vanhove_self_L1_text": ";".join(f"{k}ps={v:.3f}" for k, v in
                                                 (c.get("vanhove_self_L1") or {}).items())})
    return rows


def results_frame(campaign_dir: str | Path):
    import pandas as pd

    campaign_dir = Path(campaign_dir)
    spec, tasks = load_campaign_dir(campaign_dir)
    rows = [task_row(t, _read_json(campaign_dir / TASKS_DIR / t["task_id"] / RESULT_FILE),
                     campaign=spec.name, preset=spec.preset) for t in tasks
            if t.get("kind", "md") == "md"]  # static tasks: statics_tasks.statics_frame
    return pd.DataFrame(rows)


def _atomic_parquet(df, path: Path) -> Path:
    from analysis.output import atomic_write

    return atomic_write(path, lambda handle: df.to_parquet(handle, index=False), binary=True)


def _atomic_csv(df, path: Path) -> Path:
    return atomic_write_text(path, df.to_csv(index=False))


def write_results_table(campaign_dir: str | Path) -> Path:
    campaign_dir = Path(campaign_dir)
    return _atomic_parquet(results_frame(campaign_dir), campaign_dir / "results.parquet")


# --------------------------------------------------------------------------------------
# per temperature (replicas combined)
# --------------------------------------------------------------------------------------
def _read_msd(campaign_dir: Path, task_id: str):
    import numpy as np

    path = campaign_dir / TASKS_DIR / task_id / ANALYSIS_DIR / "msd.csv"
    if not path.is_file():
        return None
    with open(path) as handle:
        lines = [line for line in handle if not line.startswith("#")]
    header = lines[0].strip().split(",")
    data = np.loadtxt(lines[1:], delimiter=",", ndmin=2)
    return data[:, header.index("time_ps")], data[:, header.index("msd_A2")]


def per_temperature(results, *, campaign_dir: Path):
    """One row per potential x structure x temperature (see the module docstring)."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    rows = []
    keys = ["potential_label", "structure", "temperature_K"]
    for (pot, struct, T), g in results.groupby(keys, sort=True):
        ok = g[(g["status"] == "completed") & g["D_cm2_per_s"].notna()]
        row: dict[str, Any] = {"potential_label": pot, "structure": struct, "temperature_K": T,
                               "n_replicas": len(g), "n_completed": len(ok),
                               "D_cm2_per_s": math.nan, "D_ci95_lo": math.nan,
                               "D_ci95_hi": math.nan, "msd_max_A2": math.nan,
                               "sigma_NE_mS_per_cm": math.nan, "n_ions": math.nan,
                               "charge": math.nan, "volume_A3": math.nan,
                               "replica_method": None}
        if len(ok):
            row["msd_max_A2"] = float(ok["msd_max_A2"].median())
            row["n_ions"] = float(ok["n_ions"].iloc[0])
            row["charge"] = _ion_charge(ok)
            row["volume_A3"] = float(ok["volume_A3"].mean())
            row["sigma_NE_mS_per_cm"] = float(ok["sigma_NE_mS_per_cm"].mean())
        if len(ok) == 1:
            r = ok.iloc[0]
            row.update(D_cm2_per_s=r["D_cm2_per_s"], D_ci95_lo=r["D_ci95_lo"],
                       D_ci95_hi=r["D_ci95_hi"], replica_method="kinisi (one replica)")
        elif len(ok) > 1:
            D = ok["D_cm2_per_s"].to_numpy(float)
            sem = D.std(ddof=1) / math.sqrt(len(D))
            half = float(stats.t.ppf(0.975, len(D) - 1) * sem)
            D_avg = _replica_msd_D(campaign_dir, ok)
            centre = D_avg if D_avg is not None else float(D.mean())
            row.update(D_cm2_per_s=centre, D_ci95_lo=centre - half, D_ci95_hi=centre + half,
                       D_replica_mean=float(D.mean()),
                       replica_method="OLS slope of the replica-averaged MSD; 95% interval of "
                                      "the replica mean (t)" if D_avg is not None else
                                      "mean of replica D; 95% interval of the mean (t)")
            if "ordering_index" in ok and ok["ordering_index"].notna().any():
                n_ord = int(ok["ordering_index"].nunique())
                row["replica_method"] += (f"; the replicas span {n_ord} orderings of the "
                                          "disordered structure (interval across orderings)")
            row["sigma_NE_mS_per_cm"] = float(ok["sigma_NE_mS_per_cm"].mean()) * centre / \
                float(D.mean()) if D.mean() else math.nan
        rows.append(row)
    columns = ["potential_label", "structure", "temperature_K", "n_replicas", "n_completed",
               "D_cm2_per_s", "D_ci95_lo", "D_ci95_hi", "D_replica_mean", "msd_max_A2",
               "sigma_NE_mS_per_cm", "n_ions", "charge", "volume_A3", "replica_method"]
    df = pd.DataFrame(rows)
    for c in columns:
        if c not in df.columns:
            df[c] = np.nan
    return df[columns]


def _ion_charge(ok) -> float:
    """The ion charge the analyses used (transport.json ``charge``); 1 for old results."""
    values = {float(v) for v in ok["charge"] if v is not None and not math.isnan(float(v))} \
        if "charge" in ok else set()
    if len(values) > 1:
        raise ValueError(f"replicas of one condition were analysed with different ion charges "
                         f"{sorted(values)}; set analysis.charges once for the campaign")
    return values.pop() if values else 1.0


def _replica_msd_D(campaign_dir: Path, ok) -> float | None:
    """D from the MSD averaged over replicas (seed 002), fit over the first replica's window."""
    import numpy as np

    curves = [_read_msd(campaign_dir, tid) for tid in ok["task_id"]]
    if any(c is None for c in curves):
        return None
    n = min(len(c[0]) for c in curves)
    t = curves[0][0][:n]
    msd = np.mean([c[1][:n] for c in curves], axis=0)
    start, end = ok["fit_start_ps"].iloc[0], ok["fit_end_ps"].iloc[0]
    if start is None or end is None or not np.isfinite([start, end]).all():
        return None
    window = (t >= start - 1e-9) & (t <= end + 1e-9)
    if window.sum() < 3:
        return None
    slope = np.polyfit(t[window], msd[window], 1)[0]
    return float(slope / 6.0 * 1e-4)


# --------------------------------------------------------------------------------------
# per potential x structure
# --------------------------------------------------------------------------------------
def summarize(results, per_T, *, spec, experimental: dict[str, dict[str, Any]]):
    """summary.csv rows: Arrhenius per potential x structure + failures + cost + experiment."""
    import numpy as np
    import pandas as pd

    from analysis.arrhenius import arrhenius

    rows = []
    for (pot, struct), g in results.groupby(["potential_label", "structure"], sort=True):
        analysis = json.loads(g["analysis_json"].iloc[0])
        T_eval = float(analysis.get("T_eval_K", 300.0))
        pts = per_T[(per_T["potential_label"] == pot) & (per_T["structure"] == struct)]
        temps = sorted(g["temperature_K"].unique())
        good = pts[np.isfinite(pts["D_cm2_per_s"]) & (pts["D_cm2_per_s"] > 0)]
        row: dict[str, Any] = {
            "potential_label": pot, "potential": g["potential"].iloc[0], "structure": struct,
            "reference_id": g["reference_id"].iloc[0], "formula": _first(g["formula"]),
            "n_atoms": _first(g["n_atoms"]), "n_tasks": len(g),
            "n_completed": int((g["status"] == "completed").sum()),
            "n_failed": int((g["status"] == "failed").sum()),
            "n_pending": int((g["status"] == "pending").sum()),
            "temperatures_K": ";".join(f"{t:g}" for t in temps),
            "n_temperatures": len(temps),
            "reliability_count": int((pts["msd_max_A2"] >= analysis.get("msd_reliable_A2", 20.0))
                                     .sum()),
            "T_eval_K": T_eval, "Ea_eV": math.nan, "Ea_ci95_lo": math.nan,
            "Ea_ci95_hi": math.nan, "D0_cm2_per_s": math.nan, "D_eval_cm2_per_s": math.nan,
            "D_eval_ci95_lo": math.nan, "D_eval_ci95_hi": math.nan,
            "sigma_eval_mS_per_cm": math.nan, "sigma_eval_ci95_lo": math.nan,
            "sigma_eval_ci95_hi": math.nan, "arrhenius_points": len(good),
            "arrhenius_method": None,
        }
        row["reliable"] = bool(row["reliability_count"] == len(temps) and len(temps) >= 1
                               and row["n_completed"] == len(g))
        if len(good) >= 2 and len(set(good["temperature_K"])) >= 2:
            points = [{"temperature_K": r.temperature_K, "D_cm2_per_s": r.D_cm2_per_s,
                       "D_ci95_cm2_per_s": [r.D_ci95_lo, r.D_ci95_hi]
                       if np.isfinite([r.D_ci95_lo, r.D_ci95_hi]).all() else None}
                      for r in good.itertuples()]
            closest = good.iloc[int(np.argmin(np.abs(good["temperature_K"] - T_eval)))]
            try:
                fit = arrhenius(points, T_eval_K=T_eval, n_ions=closest["n_ions"],
                                volume_A3=closest["volume_A3"],
                                charge=float(closest["charge"]))
            except ValueError as exc:
                row["arrhenius_method"] = f"failed: {exc}"
            else:
                ea_ci = fit.Ea_ci95_eV or [math.nan, math.nan]
                d_ci = fit.D_eval_ci95_cm2_per_s or [math.nan, math.nan]
                s_ci = fit.sigma_eval_ci95_mS_per_cm or [math.nan, math.nan]
                row.update(Ea_eV=fit.Ea_eV, Ea_ci95_lo=ea_ci[0], Ea_ci95_hi=ea_ci[1],
                           D0_cm2_per_s=fit.D0_cm2_per_s, D_eval_cm2_per_s=fit.D_eval_cm2_per_s,
                           D_eval_ci95_lo=d_ci[0], D_eval_ci95_hi=d_ci[1],
                           sigma_eval_mS_per_cm=fit.sigma_eval_mS_per_cm,
                           sigma_eval_ci95_lo=s_ci[0], sigma_eval_ci95_hi=s_ci[1],
                           arrhenius_method=fit.method)
        # failures by category (no_diffusion and melting include completed runs' diagnostics)
        cats = g["failure_category"].value_counts().to_dict()
        for c in FAILURE_COLUMNS:
            row[f"fail_{c}"] = int(cats.get(c, 0))
        row["fail_no_diffusion"] = int(g["no_diffusion"].sum())
        row["fail_melting"] += int(((g["status"] == "completed") & g["framework_diffusing"]).sum())
        row["failure_kinds"] = ";".join(sorted(g["failure_kind"].dropna().unique()))
        # cost
        row["ms_per_step_median"] = _median(g["ms_per_step"])
        row["atom_steps_per_s_median"] = _median(g["atom_steps_per_s"])
        row["cpu_hours"] = float(pd.to_numeric(g["cpu_hours"]).fillna(0).sum())
        row["gpu_hours"] = float(pd.to_numeric(g["gpu_hours"]).fillna(0).sum())
        # experiment
        exp = experimental.get(struct)
        row["sigma_exp_S_per_cm"] = exp["sigma_exp_S_per_cm"] if exp else math.nan
        row["exp_upper_bound"] = bool(exp["exp_upper_bound"]) if exp else False
        row["exp_reference_id"] = exp["reference_id"] if exp else None
        pred = row["sigma_eval_mS_per_cm"] / 1000.0
        row["log10_error_sigma"] = (math.log10(pred) - math.log10(row["sigma_exp_S_per_cm"])
                                    if exp and pred > 0 and math.isfinite(pred) else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _first(series):
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _median(series) -> float:
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


# --------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------
def experimental_values(spec, *, override_csv: str | None = None) -> dict[str, dict[str, Any]]:
    from harness.campaign.tasks import structure_entries
    from harness.campaign.references import match_experimental, read_experimental_csv

    refs = spec.references
    csv = override_csv or refs.experimental_csv
    table = read_experimental_csv(csv) if csv else None
    try:
        entries = structure_entries(spec)
    except Exception:  # noqa: BLE001 - a moved benchmark folder: fall back to names
        entries = [s for s in spec.structures if not isinstance(s, str)]
    structures = [{"name": e.name, "reference_id": e.reference_id} for e in entries]
    return match_experimental(structures, table=table,
                              inline=[v.model_dump() for v in refs.experimental])


def reference_data(spec, *, campaign_dir: Path, per_T, results, summary=None):
    """Reference D(T), Ea per structure and RDF sources: (D_ref, Ea_ref, rdf_ref)."""
    import numpy as np
    import pandas as pd

    from analysis.arrhenius import arrhenius
    from harness.campaign.references import analyse_reference_trajectories, read_reference_csv

    refs = spec.references
    D_parts, Ea = [], pd.DataFrame(columns=["structure", "Ea_eV"])
    rdf_ref: dict[tuple[str, float], Path] = {}
    if refs.reference_csv:
        D_csv, Ea = read_reference_csv(refs.reference_csv)
        D_parts.append(D_csv)
    if refs.trajectories:
        recs = analyse_reference_trajectories(refs.trajectories,
                                              out_dir=campaign_dir / "references",
                                              seed=spec.seed)
        D_parts.append(pd.DataFrame(recs))
        for r in recs:
            path = Path(r["analysis_dir"]) / "rdf.csv"
            if path.is_file():
                rdf_ref[(r["structure"], float(r["temperature_K"]))] = path
    if refs.reference_potential:
        mine = per_T[per_T["potential_label"] == refs.reference_potential]
        D_parts.append(mine[["structure", "temperature_K", "D_cm2_per_s", "D_ci95_lo",
                             "D_ci95_hi"]].assign(source=f"potential {refs.reference_potential}"))
        done = results[(results["potential_label"] == refs.reference_potential)
                       & (results["replica"] == 0) & (results["status"] == "completed")]
        for r in done.itertuples():
            path = campaign_dir / TASKS_DIR / r.task_id / ANALYSIS_DIR / "rdf.csv"
            if path.is_file():
                rdf_ref.setdefault((r.structure, float(r.temperature_K)), path)
    if refs.reference_potential and summary is not None:  # its own (weighted) Arrhenius Ea
        own = summary[(summary["potential_label"] == refs.reference_potential)
                      & np.isfinite(summary["Ea_eV"])][["structure", "Ea_eV"]]
        own = own[~own["structure"].isin(set(Ea["structure"]))]
        Ea = pd.concat([Ea, own], ignore_index=True) if len(Ea) else own
    D_ref = pd.concat(D_parts, ignore_index=True) if D_parts else pd.DataFrame(
        columns=["structure", "temperature_K", "D_cm2_per_s"])
    D_ref = D_ref[np.isfinite(pd.to_numeric(D_ref["D_cm2_per_s"], errors="coerce"))]
    # Ea of structures with reference D at >= 2 temperatures and no Ea given
    have = set(Ea["structure"]) if len(Ea) else set()
    extra = []
    for struct, g in D_ref.groupby("structure"):
        g = g[g["D_cm2_per_s"] > 0]
        if struct in have or g["temperature_K"].nunique() < 2:
            continue
        fit = arrhenius([(r.temperature_K, r.D_cm2_per_s) for r in g.itertuples()])
        extra.append({"structure": struct, "Ea_eV": fit.Ea_eV})
    if extra:
        Ea = pd.concat([Ea, pd.DataFrame(extra)], ignore_index=True)
    return D_ref.reset_index(drop=True), Ea.reset_index(drop=True), rdf_ref


# --------------------------------------------------------------------------------------
# metrics per potential
# --------------------------------------------------------------------------------------
def potential_metrics(summary, per_T, results, *, D_ref, Ea_ref, rdf_ref, campaign_dir: Path,
                      reference_label: str, reference_potential: str | None):
    """Per potential:

    * ``MAE_log10_sigma_exp`` / ``ME_log10_sigma_exp``: mean |.| and mean of
      log10 sigma(T_eval, Arrhenius) - log10 sigma_exp over structures with both (all), and
      over the reliable ones (every temperature reached MSD >= 20 A^2, seed 004).
    * ``MAE_log10_D_ref``: mean |log10 D - log10 D_ref| over (structure, T) pairs present in
      the reference (AIMD/DeePMD CSV, trajectories or reference potential).
    * ``MAE_Ea_ref_eV``: mean |Ea - Ea_ref| over structures.
    * ``RDF_MAE``: mean over (structure, T) of seed 003's int_0^10A |g - g_ref| dr, averaged
      over species pairs (replica 0 of each condition).
    * failures per category (md_blowup, melting, no_diffusion, setup, analysis, ...).
    * cost: median ms/step and atom-steps/s, total CPU and GPU hours.
    """
    import numpy as np
    import pandas as pd

    from analysis.rdf import rdf_mae_between, read_rdf_csv

    rows = []
    for pot, s in summary.groupby("potential_label", sort=True):
        r = results[results["potential_label"] == pot]
        row: dict[str, Any] = {"potential_label": pot, "potential": s["potential"].iloc[0],
                               "n_structures": len(s), "n_tasks": len(r),
                               "n_completed": int((r["status"] == "completed").sum()),
                               "n_failed": int((r["status"] == "failed").sum()),
                               "n_with_Ea": int(np.isfinite(s["Ea_eV"]).sum())}
        err = s["log10_error_sigma"].to_numpy(float)
        fin = np.isfinite(err)
        rel = fin & s["reliable"].to_numpy(bool)
        row.update(n_exp=int(fin.sum()),
                   MAE_log10_sigma_exp=float(np.abs(err[fin]).mean()) if fin.any() else math.nan,
                   ME_log10_sigma_exp=float(err[fin].mean()) if fin.any() else math.nan,
                   n_exp_reliable=int(rel.sum()),
                   MAE_log10_sigma_exp_reliable=float(np.abs(err[rel]).mean())
                   if rel.any() else math.nan,
                   ME_log10_sigma_exp_reliable=float(err[rel].mean()) if rel.any() else math.nan)
        is_ref = reference_potential is not None and pot == reference_potential
        # D(T) vs reference
        mine = per_T[(per_T["potential_label"] == pot)]
        merged = mine.merge(D_ref, on=["structure", "temperature_K"], suffixes=("", "_ref"))
        merged = merged[(merged["D_cm2_per_s"] > 0) & (merged["D_cm2_per_s_ref"] > 0)]
        d_err = np.log10(merged["D_cm2_per_s"].to_numpy(float)) - \
            np.log10(merged["D_cm2_per_s_ref"].to_numpy(float))
        row.update(n_D_ref=len(merged),
                   MAE_log10_D_ref=float(np.abs(d_err).mean()) if len(merged) else math.nan,
                   ME_log10_D_ref=float(d_err.mean()) if len(merged) else math.nan)
        ea = s.merge(Ea_ref, on="structure", suffixes=("", "_ref"))
        ea = ea[np.isfinite(ea["Ea_eV"]) & np.isfinite(ea["Ea_eV_ref"].astype(float))]
        ea_err = ea["Ea_eV"].to_numpy(float) - ea["Ea_eV_ref"].to_numpy(float)
        row.update(n_Ea_ref=len(ea),
                   MAE_Ea_ref_eV=float(np.abs(ea_err).mean()) if len(ea) else math.nan,
                   ME_Ea_ref_eV=float(ea_err.mean()) if len(ea) else math.nan)
        maes = []
        done = r[(r["replica"] == 0) & (r["status"] == "completed")]
        for t in done.itertuples():
            ref = rdf_ref.get((t.structure, float(t.temperature_K)))
            mine_rdf = campaign_dir / TASKS_DIR / t.task_id / ANALYSIS_DIR / "rdf.csv"
            if ref is None or not mine_rdf.is_file() or ref == mine_rdf:
                continue
            try:
                # seed 003 integrates to 10 A; the RDFs' last bin centre may sit just below it
                r_cut = min(10.0, float(read_rdf_csv(mine_rdf)[0][-1]),
                            float(read_rdf_csv(ref)[0][-1]))
                maes.append(rdf_mae_between(mine_rdf, ref, r_cut_A=r_cut)["mean_over_pairs"])
            except (ValueError, KeyError, IndexError):
                continue
        row.update(n_RDF_ref=len(maes), RDF_MAE=float(np.mean(maes)) if maes else math.nan)
        row["reference"] = f"{reference_label} (is this potential)" if is_ref else reference_label
        for c in FAILURE_COLUMNS:
            row[f"fail_{c}"] = int(s[f"fail_{c}"].sum())
        row["ms_per_step_median"] = _median(r["ms_per_step"])
        row["atom_steps_per_s_median"] = _median(r["atom_steps_per_s"])
        row["cpu_hours"] = float(pd.to_numeric(r["cpu_hours"]).fillna(0).sum())
        row["gpu_hours"] = float(pd.to_numeric(r["gpu_hours"]).fillna(0).sum())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------
def assemble(campaign_dir: str | Path, *, experimental_csv: str | None = None) -> dict[str, Path]:
    """Write results.parquet, per_temperature.csv, summary.csv, metrics.csv/json."""
    campaign_dir = Path(campaign_dir)
    from harness.campaign import statics_tasks

    if not statics_tasks.has_md_tasks(campaign_dir):  # a statics-only campaign
        return statics_tasks.assemble_statics(campaign_dir)
    tables = build_tables(campaign_dir, experimental_csv=experimental_csv)
    out = {"results": _atomic_parquet(tables["results"], campaign_dir / "results.parquet"),
           "per_temperature": _atomic_csv(tables["per_T"], campaign_dir / "per_temperature.csv"),
           "summary": _atomic_csv(tables["summary"], campaign_dir / "summary.csv"),
           "metrics": _atomic_csv(tables["metrics"], campaign_dir / "metrics.csv")}
    atomic_write_json(campaign_dir / "metrics.json",
                      {"metrics": _records(tables["metrics"]), "notes": tables["notes"]})
    return out


def _records(df) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def build_tables(campaign_dir: Path, *, experimental_csv: str | None = None) -> dict[str, Any]:
    spec, _ = load_campaign_dir(campaign_dir)
    results = results_frame(campaign_dir)
    per_T = per_temperature(results, campaign_dir=campaign_dir)
    notes: list[str] = []
    try:
        experimental = experimental_values(spec, override_csv=experimental_csv)
    except (OSError, ValueError) as exc:
        experimental = {}
        notes.append(f"experimental values not used: {exc}")
    summary = summarize(results, per_T, spec=spec, experimental=experimental)
    try:
        D_ref, Ea_ref, rdf_ref = reference_data(spec, campaign_dir=campaign_dir, per_T=per_T,
                                                results=results, summary=summary)
    except (OSError, ValueError) as exc:
        import pandas as pd

        notes.append(f"reference data not used: {exc}")
        D_ref = pd.DataFrame(columns=["structure", "temperature_K", "D_cm2_per_s"])
        Ea_ref = pd.DataFrame(columns=["structure", "Ea_eV"])
        rdf_ref = {}
    metrics = potential_metrics(summary, per_T, results, D_ref=D_ref, Ea_ref=Ea_ref,
                                rdf_ref=rdf_ref, campaign_dir=campaign_dir,
                                reference_label=spec.references.label,
                                reference_potential=spec.references.reference_potential)
    return {"spec": spec, "results": results, "per_T": per_T, "summary": summary,
            "metrics": metrics, "D_ref": D_ref, "Ea_ref": Ea_ref, "notes": notes,
            "rdf_ref": rdf_ref}


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_parity(summary, path: Path) -> Path | None:
    """sigma(T_eval) vs experiment; circle area grows with the reliability count (seed 004 Fig. 1)."""
    import numpy as np

    data = summary[np.isfinite(summary["sigma_exp_S_per_cm"])
                   & np.isfinite(summary["sigma_eval_mS_per_cm"])
                   & (summary["sigma_eval_mS_per_cm"] > 0)]
    if data.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    for k, (pot, g) in enumerate(data.groupby("potential_label")):
        x = g["sigma_exp_S_per_cm"].to_numpy(float) * 1000.0
        y = g["sigma_eval_mS_per_cm"].to_numpy(float)
        lo = np.clip(y - g["sigma_eval_ci95_lo"].fillna(y[0]).to_numpy(float), 0, None)
        hi = np.clip(g["sigma_eval_ci95_hi"].fillna(y[0]).to_numpy(float) - y, 0, None)
        size = 30 + 60 * g["reliability_count"].to_numpy(float)
        color = f"C{k}"
        ax.errorbar(x, y, yerr=[np.minimum(lo, y * 0.999), hi], fmt="none", ecolor=color,
                    alpha=0.5, zorder=1)
        bound = g["exp_upper_bound"].to_numpy(bool)
        ax.scatter(x[~bound], y[~bound], s=size[~bound], color=color, alpha=0.7,
                   edgecolor="k", label=pot, zorder=2)
        if bound.any():
            ax.scatter(x[bound], y[bound], s=size[bound], facecolor="none", edgecolor=color,
                       zorder=2, label=f"{pot} (exp. upper bound)")
        for xi, yi, name in zip(x, y, g["structure"]):
            ax.annotate(str(name), (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    lims = np.array(ax.get_xlim() + ax.get_ylim())
    ax.set_xscale("log")
    ax.set_yscale("log")
    allv = np.concatenate([data["sigma_exp_S_per_cm"].to_numpy(float) * 1000.0,
                           data["sigma_eval_mS_per_cm"].to_numpy(float)])
    lo_v, hi_v = allv.min() / 30, allv.max() * 30
    ax.plot([lo_v, hi_v], [lo_v, hi_v], "k-", lw=0.8)
    ax.fill_between([lo_v, hi_v], [lo_v / 10, hi_v / 10], [lo_v * 10, hi_v * 10], color="0.9",
                    zorder=0, label="within 1 order")
    ax.set_xlim(lo_v, hi_v)
    ax.set_ylim(lo_v, hi_v)
    del lims
    T = summary["T_eval_K"].iloc[0]
    ax.set_xlabel("experimental sigma (mS/cm)")
    ax.set_ylabel(f"simulated sigma({T:g} K), Arrhenius (mS/cm)")
    ax.set_title("parity; circle size = temperatures with MSD >= 20 A^2", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_arrhenius(per_T, summary, D_ref, structure: str, path: Path) -> Path | None:
    import numpy as np

    pts = per_T[(per_T["structure"] == structure) & np.isfinite(per_T["D_cm2_per_s"])
                & (per_T["D_cm2_per_s"] > 0)]
    if pts.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for k, (pot, g) in enumerate(pts.groupby("potential_label")):
        x = 1000.0 / g["temperature_K"].to_numpy(float)
        y = g["D_cm2_per_s"].to_numpy(float)
        lo = np.where(np.isfinite(g["D_ci95_lo"]), y - g["D_ci95_lo"].to_numpy(float), 0)
        hi = np.where(np.isfinite(g["D_ci95_hi"]), g["D_ci95_hi"].to_numpy(float) - y, 0)
        lo = np.clip(np.minimum(lo, y * 0.999), 0, None)
        ax.errorbar(x, y, yerr=[lo, np.clip(hi, 0, None)], fmt="o", color=f"C{k}", capsize=3,
                    label=pot)
        srow = summary[(summary["structure"] == structure) & (summary["potential_label"] == pot)]
        if len(srow) and np.isfinite(srow["Ea_eV"].iloc[0]):
            from analysis.units import KB_EV_PER_K

            Ea, D0 = srow["Ea_eV"].iloc[0], srow["D0_cm2_per_s"].iloc[0]
            T_eval = srow["T_eval_K"].iloc[0]
            xx = np.linspace(min(x.min(), 1000.0 / T_eval), x.max(), 50)
            ax.plot(xx, D0 * np.exp(-Ea / (KB_EV_PER_K * 1000.0 / xx)), "--", color=f"C{k}",
                    lw=0.8, label=f"{pot}: Ea {Ea:.2f} eV")
    ref = D_ref[D_ref["structure"] == structure] if len(D_ref) else D_ref
    if len(ref):
        ax.plot(1000.0 / ref["temperature_K"].astype(float), ref["D_cm2_per_s"].astype(float),
                "ks", mfc="none", label="reference")
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("D (cm^2/s)")
    ax.set_title(f"{structure}: Arrhenius (95% intervals)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_msd(results, campaign_dir: Path, structure: str, path: Path) -> Path | None:
    done = results[(results["structure"] == structure) & (results["status"] == "completed")
                   & (results["replica"] == 0)]
    curves = [(r, _read_msd(campaign_dir, r.task_id)) for r in done.itertuples()]
    curves = [(r, c) for r, c in curves if c is not None]
    if not curves:
        return None
    plt = _plt()
    pots = sorted({r.potential_label for r, _ in curves})
    temps = sorted({r.temperature_K for r, _ in curves})
    fig, axes = plt.subplots(1, len(pots), figsize=(4.2 * len(pots), 3.6), squeeze=False,
                             sharey=True)
    for r, (t, msd) in curves:
        ax = axes[0][pots.index(r.potential_label)]
        ax.plot(t, msd, color=f"C{temps.index(r.temperature_K)}", label=f"{r.temperature_K:g} K")
        ax.set_title(f"{structure} / {r.potential_label}", fontsize=9)
    for ax in axes[0]:
        ax.axhline(20.0, color="0.5", ls=":", lw=0.8)
        ax.set_xlabel("lag time (ps)")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("Li MSD (A^2); dotted: 20 A^2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def markdown_table(df, columns: list[str] | None = None) -> str:
    columns = [c for c in (columns or list(df.columns)) if c in df.columns]
    if df.empty:
        return "_(none)_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df[columns].iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _html_table(df, columns: list[str]) -> str:
    columns = [c for c in columns if c in df.columns]
    if df.empty:
        return "<p><em>(none)</em></p>"
    return df[columns].to_html(index=False, na_rep="", float_format=_fmt, border=0,
                               classes="t", escape=True)


METRIC_COLUMNS = ["potential_label", "n_structures", "n_completed", "n_failed", "n_exp",
                  "MAE_log10_sigma_exp", "ME_log10_sigma_exp", "n_exp_reliable",
                  "MAE_log10_sigma_exp_reliable", "ME_log10_sigma_exp_reliable", "n_D_ref",
                  "MAE_log10_D_ref", "n_Ea_ref", "MAE_Ea_ref_eV", "n_RDF_ref", "RDF_MAE",
                  "reference"]
FAILURE_TABLE_COLUMNS = ["potential_label", "n_tasks", "n_failed"] + \
    [f"fail_{c}" for c in FAILURE_COLUMNS]
COST_COLUMNS = ["potential_label", "n_completed", "ms_per_step_median",
                "atom_steps_per_s_median", "cpu_hours", "gpu_hours"]
SUMMARY_COLUMNS = ["potential_label", "structure", "reference_id", "n_atoms", "n_completed",
                   "n_failed", "reliability_count", "n_temperatures", "Ea_eV", "Ea_ci95_lo",
                   "Ea_ci95_hi", "D_eval_cm2_per_s", "sigma_eval_mS_per_cm", "sigma_eval_ci95_lo",
                   "sigma_eval_ci95_hi", "sigma_exp_S_per_cm", "exp_upper_bound",
                   "log10_error_sigma", "failure_kinds"]
PER_T_COLUMNS = ["potential_label", "structure", "temperature_K", "n_completed", "D_cm2_per_s",
                 "D_ci95_lo", "D_ci95_hi", "msd_max_A2", "sigma_NE_mS_per_cm"]
FAILED_COLUMNS = ["task_id", "failure_kind", "failure_category", "failure_step", "error"]


def write_report(campaign_dir: str | Path, *, experimental_csv: str | None = None) -> dict[str, Path]:
    """Tables + report/report.md + report/report.html + PNGs; returns the paths."""
    import html

    campaign_dir = Path(campaign_dir)
    from harness.campaign import statics_tasks

    if not statics_tasks.has_md_tasks(campaign_dir):  # a statics-only campaign
        return statics_tasks.write_statics_report(campaign_dir)
    paths = assemble(campaign_dir, experimental_csv=experimental_csv)
    paths.update(statics_tasks.assemble_statics(campaign_dir))
    t = build_tables(campaign_dir, experimental_csv=experimental_csv)
    spec, results, per_T, summary, metrics = (t["spec"], t["results"], t["per_T"],
                                              t["summary"], t["metrics"])
    out = campaign_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path]] = []
    parity = plot_parity(summary, out / "parity_sigma.png")
    if parity:
        figures.append(("Parity: simulated vs experimental conductivity", parity))
    for struct in sorted(results["structure"].unique()):
        p = plot_arrhenius(per_T, summary, t["D_ref"], struct, out / f"arrhenius_{struct}.png")
        if p:
            figures.append((f"Arrhenius: {struct}", p))
    for struct in sorted(results["structure"].unique()):
        p = plot_msd(results, campaign_dir, struct, out / f"msd_{struct}.png")
        if p:
            figures.append((f"MSD: {struct}", p))
    failed = results[results["status"] == "failed"]
    counts = results["status"].value_counts().to_dict()
    status_line = (f"{len(results)} tasks: {counts.get('completed', 0)} completed, "
                   f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending")
    protocol = f"preset `{spec.preset}`" if spec.preset else "no preset"
    sections = [
        ("Per-potential metrics", metrics, METRIC_COLUMNS),
        ("Failures by category", metrics, FAILURE_TABLE_COLUMNS),
        ("Cost", metrics, COST_COLUMNS),
        ("Per potential x structure", summary, SUMMARY_COLUMNS),
        ("Per temperature", per_T, PER_T_COLUMNS),
        ("Failed tasks", failed, FAILED_COLUMNS),
    ]
    md = [f"# Campaign report: {spec.name}\n", f"{status_line}; {protocol}; campaign seed "
          f"{spec.seed}; potentials: {', '.join(sorted(results['potential_label'].unique()))}; "
          f"structures: {', '.join(sorted(results['structure'].unique()))}.\n",
          "Metric definitions: see `harness/campaign/report.py::potential_metrics`. log10 errors are "
          "log10(simulated) - log10(reference); sigma is the Nernst-Einstein conductivity at "
          "T_eval from the Arrhenius fit; reliable = every temperature reached MSD >= 20 A^2.\n"]
    md += [f"> note: {n}\n" for n in t["notes"]]
    from harness.campaign.policy import convergence_table

    conv_df, conv_summary = convergence_table(results)
    if conv_summary:
        saved = conv_summary["budget_saved_fraction"]
        line = (f"Convergence policy: stop reasons {conv_summary['stop_reasons']}; production "
                f"{conv_summary['atom_steps_used']:.3g} atom-steps against "
                f"{conv_summary['atom_steps_fixed_protocol']:.3g} for the fixed-length "
                f"protocol of the same preset: budget saved "
                f"{100 * saved:.1f} %" if saved is not None else "")
        md.append(f"## Convergence policy\n\n{line}\n")
        md.append(markdown_table(conv_df, list(conv_df.columns)))
        sections.append(("Convergence policy (per task)", conv_df, list(conv_df.columns)))
        paths["convergence_json"] = atomic_write_text(
            out / "convergence.json", json.dumps(conv_summary, indent=1))
    validation = _validation_rows(results, campaign_dir, t.get("rdf_ref") or {})
    if validation:
        import pandas as pd

        val_df = pd.DataFrame(validation)
        cols = [c for c in ("task_id", "stop_reason", "D_cm2_per_s", "D_ref_cm2_per_s",
                            "log10_D_ratio", "intervals_overlap", "D_upper_bound_cm2_per_s",
                            "rdf_mae_mean", "vanhove_self_L1_text") if c in val_df]
        md.append("## Validation against reference trajectories\n\nSame analysis layer for "
                  "both; RDF MAE = int_0^10A |g - g_ref| dr (mean over pairs); van Hove = "
                  "L1 distance of 4 pi r^2 G_s(r, t) at the listed lags (0 same, 2 disjoint)."
                  "\n")
        md.append(markdown_table(val_df, cols))
        paths["validation_json"] = atomic_write_text(out / "validation.json",
                                                     json.dumps(validation, indent=1,
                                                                default=str))
    for title, df, cols in sections:
        if title.startswith("Convergence policy"):
            continue
        md.append(f"## {title}\n")
        md.append(markdown_table(df, cols))
    statics_md, statics_html, statics_figures = \
        statics_tasks.statics_markdown_and_html(campaign_dir, out)
    md += statics_md
    figures += statics_figures
    md.append("## Figures\n")
    for title, p in figures:
        md.append(f"### {title}\n\n![{title}]({p.name})\n")
    paths["report_md"] = atomic_write_text(out / "report.md", "\n".join(md))
    body = [f"<h1>Campaign report: {html.escape(spec.name)}</h1>",
            f"<p>{html.escape(md[1])}</p>", f"<p>{html.escape(md[2])}</p>"]
    body += [f"<p class='note'>note: {html.escape(n)}</p>" for n in t["notes"]]
    for title, df, cols in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(_html_table(df, cols))
    body += statics_html
    body.append("<h2>Figures</h2>")
    for title, p in figures:
        body.append(f"<h3>{html.escape(title)}</h3><img src='{html.escape(p.name)}' "
                    f"alt='{html.escape(title)}'>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(spec.name)} report</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1200px}"
            "table.t{border-collapse:collapse;font-size:12px;margin-bottom:1em}"
            "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "img{max-width:100%}.note{color:#a60}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    paths["report_html"] = atomic_write_text(out / "report.html", page)
    for title, p in figures:
        paths[f"figure:{p.name}"] = p
    return paths
