"""Validation of uMLIP MD against a reference trajectory (AIMD), analysed the same way.

For one task and its reference (both analysis folders written by ``harness analyze``):

* D: both values with their 95 % intervals, log10(D / D_ref), and whether the intervals
  overlap; when the task stopped as ``non_diffusive`` its upper bound is compared instead;
* RDF: seed 003's MAE, int_0^10A |g - g_ref| dr per species pair and their mean
  (analysis.rdf.rdf_mae_between);
* self van Hove: at lag times common to both (0.5, 1, 2, 5, 10 ps and half and all of the
  task's longest stored lag; nearest stored lag within 10 %), the L1
  distance int |P_s(r, t) - P_s,ref(r, t)| dr of the radial probability densities
  P_s = 4 pi r^2 G_s (0 = identical, 2 = disjoint).

Used by the report (section "Validation against reference trajectories") and by the
seed003-aimd-validation preset.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

VANHOVE_LAGS_PS = (0.5, 1.0, 2.0, 5.0, 10.0)


def vanhove_self_l1(task_npz: str | Path, ref_npz: str | Path, *,
                    lags_ps=VANHOVE_LAGS_PS) -> dict[str, float]:
    """L1 distance of the self van Hove radial densities at common lag times."""
    a, b = np.load(task_npz), np.load(ref_npz)
    out = {}
    # short runs: also half and all of the task's longest stored lag
    longest = float(a["lag_times_ps"].max())
    lags_ps = sorted(set(lags_ps) | {round(longest / 2, 6), round(longest, 6)} - {0.0})
    for lag in lags_ps:
        ia = int(np.argmin(np.abs(a["lag_times_ps"] - lag)))
        ib = int(np.argmin(np.abs(b["lag_times_ps"] - lag)))
        if abs(a["lag_times_ps"][ia] - lag) > 0.1 * lag or abs(b["lag_times_ps"][ib] - lag) > \
                0.1 * lag:
            continue
        r = a["r_A"] if a["r_A"].size >= b["r_A"].size else b["r_A"]
        pa = np.interp(r, a["r_A"], a["P_self_per_A"][ia], right=0.0)
        pb = np.interp(r, b["r_A"], b["P_self_per_A"][ib], right=0.0)
        dr = float(r[1] - r[0]) if r.size > 1 else 1.0
        out[f"{lag:g}"] = float(np.abs(pa - pb).sum() * dr)
    return out


def compare(task_dir: str | Path, ref_dir: str | Path, *,
            convergence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Task analysis folder vs reference analysis folder (transport.json, rdf.csv,
    vanhove_self.npz)."""
    from analysis.rdf import rdf_mae_between

    task_dir, ref_dir = Path(task_dir), Path(ref_dir)
    t = json.loads((task_dir / "transport.json").read_text())
    r = json.loads((ref_dir / "transport.json").read_text())
    D, D_ref = t["D_cm2_per_s"], r["D_cm2_per_s"]
    ci, ci_ref = t.get("D_ci95_cm2_per_s") or [None, None], \
        r.get("D_ci95_cm2_per_s") or [None, None]
    out: dict[str, Any] = {
        "D_cm2_per_s": D, "D_ci95_cm2_per_s": ci, "D_ref_cm2_per_s": D_ref,
        "D_ref_ci95_cm2_per_s": ci_ref,
        "log10_D_ratio": (math.log10(D / D_ref) if D and D_ref and D > 0 and D_ref > 0
                          else None),
        "intervals_overlap": (bool(ci[0] <= ci_ref[1] and ci_ref[0] <= ci[1])
                              if None not in (*ci, *ci_ref) else None),
        "flags": t.get("flags", []), "ref_flags": r.get("flags", []),
    }
    if convergence and convergence.get("stop_reason") == "non_diffusive":
        bound = convergence.get("D_upper_bound_cm2_per_s")
        out["D_upper_bound_cm2_per_s"] = bound
        out["bound_holds_ref"] = bool(bound is not None and D_ref <= bound)
    if (task_dir / "rdf.csv").is_file() and (ref_dir / "rdf.csv").is_file():
        try:
            out["rdf_mae"] = rdf_mae_between(task_dir / "rdf.csv", ref_dir / "rdf.csv")
        except ValueError as exc:
            out["rdf_mae_error"] = str(exc)
    if (task_dir / "vanhove_self.npz").is_file() and (ref_dir / "vanhove_self.npz").is_file():
        out["vanhove_self_L1"] = vanhove_self_l1(task_dir / "vanhove_self.npz",
                                                 ref_dir / "vanhove_self.npz")
    return out
