"""Collect the Li3N SNAP Arrhenius campaign into this folder (results.json, CSVs, plot, table).

    python benchmarks/results/li3n-snap-arrhenius/export.py /work/runs/li3n-snap

Reads what `harness bench` / `harness report` wrote (summary.csv, per_temperature.csv,
report/arrhenius_Li3N.png, tasks/*/manifest.json) and copies or condenses it; no number is
computed here except unit conversions (mS/cm -> S/cm) and the MSD gate flag (>= 20 A^2).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(campaign_dir: str) -> None:
    camp = Path(campaign_dir)
    summary = pd.read_csv(camp / "summary.csv")
    per_t = pd.read_csv(camp / "per_temperature.csv")
    gate = 20.0
    out: dict = {"campaign": "inputs/campaigns/li3n-snap-arrhenius.yaml", "potentials": {}}
    for row in summary.itertuples():
        pts = per_t[per_t["potential_label"] == row.potential_label].sort_values("temperature_K")
        tasks = []
        for p in pts.itertuples():
            tasks.append({
                "temperature_K": p.temperature_K,
                "D_cm2_per_s": clean(p.D_cm2_per_s),
                "D_ci95_cm2_per_s": [clean(p.D_ci95_lo), clean(p.D_ci95_hi)],
                "msd_max_A2": clean(p.msd_max_A2),
                "msd_gate_passed": bool(p.msd_max_A2 >= gate) if math.isfinite(p.msd_max_A2) else False,
                "sigma_NE_mS_per_cm": clean(p.sigma_NE_mS_per_cm),
            })
        out["potentials"][row.potential_label] = {
            "potential": row.potential, "structure": row.structure, "n_atoms": clean(row.n_atoms),
            "temperatures_K": row.temperatures_K,
            "Ea_eV": clean(row.Ea_eV), "Ea_ci95_eV": [clean(row.Ea_ci95_lo), clean(row.Ea_ci95_hi)],
            "T_eval_K": row.T_eval_K,
            "D_eval_cm2_per_s": clean(row.D_eval_cm2_per_s),
            "D_eval_ci95_cm2_per_s": [clean(row.D_eval_ci95_lo), clean(row.D_eval_ci95_hi)],
            "sigma_eval_S_per_cm": clean(row.sigma_eval_mS_per_cm / 1000.0),
            "sigma_eval_ci95_S_per_cm": [clean(row.sigma_eval_ci95_lo / 1000.0),
                                         clean(row.sigma_eval_ci95_hi / 1000.0)],
            "arrhenius_method": row.arrhenius_method,
            "msd_gate_A2": gate, "reliability_count": int(row.reliability_count),
            "reliable_all_temperatures": bool(row.reliable),
            "ms_per_step_median": clean(row.ms_per_step_median),
            "cpu_hours": clean(row.cpu_hours),
            "experiment": {"source": "OBELiX seed004_materials.csv row "
                                     f"{row.exp_reference_id} (alpha-Li3N, room temperature)",
                           "sigma_S_per_cm": clean(row.sigma_exp_S_per_cm)},
            "log10_error_sigma": clean(row.log10_error_sigma),
            "per_temperature": tasks,
        }
    # sensitivity: the same fit (analysis.arrhenius, as the report uses) on the temperatures
    # that pass the MSD gate only
    from analysis.arrhenius import arrhenius

    for label, entry in out["potentials"].items():
        passed = [t for t in entry["per_temperature"] if t["msd_gate_passed"] and t["D_cm2_per_s"]]
        pts = per_t[per_t["potential_label"] == label]
        if len(passed) >= 2 and len(passed) < len(entry["per_temperature"]):
            ref = pts.iloc[0]
            fit = arrhenius([{"temperature_K": t["temperature_K"], "D_cm2_per_s": t["D_cm2_per_s"],
                              "D_ci95_cm2_per_s": t["D_ci95_cm2_per_s"]} for t in passed],
                            T_eval_K=entry["T_eval_K"], n_ions=float(ref["n_ions"]),
                            volume_A3=float(ref["volume_A3"]), charge=float(ref["charge"]))
            entry["gated_fit"] = {
                "temperatures_K": fit.temperatures_K, "Ea_eV": fit.Ea_eV,
                "Ea_ci95_eV": fit.Ea_ci95_eV, "sigma_eval_S_per_cm": fit.sigma_eval_mS_per_cm / 1e3,
                "sigma_eval_ci95_S_per_cm": [v / 1e3 for v in fit.sigma_eval_ci95_mS_per_cm]
                if fit.sigma_eval_ci95_mS_per_cm else None, "method": fit.method}
    (HERE / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    for name in ("summary.csv", "per_temperature.csv"):
        shutil.copy2(camp / name, HERE / name)
    for png in (camp / "report").glob("*.png"):
        shutil.copy2(png, HERE / png.name)
    md = camp / "report" / "report.md"
    if md.exists():
        shutil.copy2(md, HERE / "campaign-report.md")
    (HERE / "table.md").write_text(markdown(out))
    print(json.dumps(out, indent=1)[:3000])


def _ci(pair, fmt="{:.3g}"):
    if not pair or any(v is None for v in pair):
        return "n/a"
    return "[" + ", ".join(fmt.format(v) for v in pair) + "]"


def markdown(out: dict) -> str:
    """The per-temperature and Arrhenius tables (README of this folder includes them)."""
    lines = []
    for label, e in out["potentials"].items():
        lines += [f"**{label}** ({e['potential']}, {e['structure']}, {int(e['n_atoms'])} atoms)", "",
                  "| T (K) | D (cm^2/s) | 95% interval | max Li MSD (A^2) | MSD >= 20 A^2 | sigma_NE (mS/cm) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for t in e["per_temperature"]:
            lines.append(f"| {t['temperature_K']:g} | {t['D_cm2_per_s']:.3g} | "
                         f"{_ci(t['D_ci95_cm2_per_s'])} | {t['msd_max_A2']:.1f} | "
                         f"{'yes' if t['msd_gate_passed'] else 'NO'} | {t['sigma_NE_mS_per_cm']:.3g} |")
        lines += ["", "| fit | temperatures (K) | Ea (eV) | 95% interval | sigma(300 K) (S/cm) | 95% interval |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| all temperatures | {e['temperatures_K'].replace(';', ', ')} | {e['Ea_eV']:.3f} | "
                  f"{_ci(e['Ea_ci95_eV'], '{:.3f}')} | {e['sigma_eval_S_per_cm']:.3g} | "
                  f"{_ci(e['sigma_eval_ci95_S_per_cm'])} |"]
        g = e.get("gated_fit")
        if g:
            lines.append(f"| MSD-gated only | {', '.join(f'{t:g}' for t in g['temperatures_K'])} | "
                         f"{g['Ea_eV']:.3f} | {_ci(g['Ea_ci95_eV'], '{:.3f}')} | "
                         f"{g['sigma_eval_S_per_cm']:.3g} | {_ci(g['sigma_eval_ci95_S_per_cm'])} |")
        exp = e["experiment"]
        lines += ["", f"Experiment ({exp['source']}): sigma = {exp['sigma_S_per_cm']:.3g} S/cm; "
                  f"log10(sigma_model / sigma_exp) = {e['log10_error_sigma']:+.2f}. "
                  f"Fit: {e['arrhenius_method']}. Median cost {e['ms_per_step_median']:.1f} ms/step.", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1])
