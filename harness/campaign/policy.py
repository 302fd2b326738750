"""Campaigns under a convergence policy: every task runs ``--until-converged``.

YAML (campaign level)::

    convergence_policy:
      convergence: {target_rel_ci95: 0.2, check_every_ps: 5, min_ps: 10}   # ConvergenceSpec
      max_factor: 1.0            # a task may run up to this x the preset's fixed length
      budget_atom_steps: 2.0e9   # optional campaign budget (production atom-steps)

* Each task's production becomes adaptive (harness/md/convergence.py). The preset's fixed
  length (``steps``) is kept as the reference protocol: ``task.extra["fixed_steps"]``.
* Budget (optional ``budget_atom_steps``): shared out before the run. When the caps would
  exceed it, caps are trimmed from the hottest temperatures first (down to min_ps), so the
  cold temperatures of every potential x material keep their full cap: an Arrhenius fit's
  slope is most uncertain at its coldest points (slowest diffusion, widest intervals). What
  early stops leave unused is reported (``budget_saved``); it is not yet handed to tasks
  still running (README, known limits).
* Tasks are ordered hottest first within each potential x material.

The report (harness/campaign/report.py) reads :func:`convergence_table`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.md.spec import ConvergenceSpec, MDSpec, SpecError, _format_errors


class CampaignPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    convergence: dict[str, Any] = Field(default_factory=dict,
                                        description="ConvergenceSpec keys for every task")
    max_factor: float = Field(1.0, gt=0, le=20, description="cap: this x the fixed length "
                              "(unless convergence.max_ps is given); 1 = the policy only "
                              "stops early")
    budget_atom_steps: float | None = Field(None, gt=0, description="campaign budget in "
                                            "production atom-steps")


def _round_to_checks(ps: float, *, check_ps: float, min_ps: float) -> float:
    """Round down to a whole number of checks (the cap must be a check point), >= min."""
    n = max(1, math.floor(ps / check_ps + 1e-9))
    return max(n * check_ps, math.ceil(min_ps / check_ps - 1e-9) * check_ps, check_ps)


def apply_policy(tasks: list, policy_values: dict[str, Any], *,
                 n_atoms: dict[str, int] | None = None) -> list:
    """Make every task adaptive; returns the tasks in queue order (hottest first).

    ``n_atoms`` (task_id -> atoms) is needed for an atom-step budget; it is computed from
    the structures when not given.
    """
    try:
        policy = CampaignPolicy(**policy_values)
        base = ConvergenceSpec(**policy.convergence)  # validates the keys early
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, source="convergence_policy")) from None
    caps: dict[str, float] = {}
    for task in tasks:
        md = dict(task.md)
        fixed_steps = int(md["steps"])
        fixed_ps = fixed_steps * md["timestep_fs"] / 1000.0
        conv = {**policy.convergence, **(md.get("convergence") or {})}
        # defaults scale with short protocols: >= 4 checks and a verdict from half-way
        check_ps = conv.setdefault("check_every_ps", min(base.check_every_ps, fixed_ps / 4))
        min_ps = conv.setdefault("min_ps", min(base.min_ps, fixed_ps / 2))
        if "max_ps" not in conv:
            conv["max_ps"] = _round_to_checks(policy.max_factor * fixed_ps, check_ps=check_ps,
                                              min_ps=min_ps)
        caps[task.task_id] = conv["max_ps"]
        task.extra["fixed_steps"] = fixed_steps
        task.extra["fixed_ps"] = fixed_ps
        task.md = {**md, "convergence": conv}
    if policy.budget_atom_steps is not None:
        if n_atoms is None:
            n_atoms = _atom_counts(tasks)
        _share_budget(tasks, caps, budget=policy.budget_atom_steps, n_atoms=n_atoms)
    out = []
    for task in tasks:
        md = dict(task.md)
        md.pop("steps", None)  # follows convergence.max_ps
        try:
            task.md = MDSpec(**md).model_dump(mode="json")
        except ValidationError as exc:
            raise SpecError(_format_errors(exc, source=f"MD spec of task {task.task_id} under "
                                           "the convergence policy")) from None
        out.append(task)
    # hottest first within each potential x structure (they converge first)
    out.sort(key=lambda t: (t.structure, t.potential_label, -t.temperature_K, t.replica))
    return out


def _atom_counts(tasks: list) -> dict[str, int]:
    from harness.md.workflow import prepare_structure

    cache: dict[tuple, int] = {}
    counts = {}
    for task in tasks:
        md = task.md
        key = (md["structure"], json_key(md.get("supercell_matrix")),
               md.get("supercell_min_length_A"))
        if key not in cache:
            spec = MDSpec(**{k: v for k, v in md.items() if k not in ("convergence",)})
            cache[key] = len(prepare_structure(spec))
        counts[task.task_id] = cache[key]
    return counts


def json_key(value: Any) -> str:
    import json

    return json.dumps(value)


def _share_budget(tasks: list, caps: dict[str, float], *, budget: float,
                  n_atoms: dict[str, int]) -> None:
    """Lower the caps so that sum(n_atoms x cap steps) <= budget, taking from the hottest
    temperatures of each potential x structure first (water-filling from the cold end)."""
    def steps(task, ps):
        return ps * 1000.0 / task.md["timestep_fs"]

    need = sum(n_atoms[t.task_id] * steps(t, caps[t.task_id]) for t in tasks)
    if need <= budget:
        for t in tasks:
            t.extra["budget_cap_ps"] = caps[t.task_id]
        return
    # cold tasks keep their full cap as long as possible: shrink from the hottest
    order = sorted(tasks, key=lambda t: -t.temperature_K)
    remaining = need - budget
    for t in order:
        conv = dict(t.md["convergence"])
        check_ps, min_ps = conv.get("check_every_ps", 5.0), conv["min_ps"]
        floor_ps = max(min_ps, check_ps)
        cut_ps = min(caps[t.task_id] - floor_ps,
                     remaining / (n_atoms[t.task_id] * 1000.0 / t.md["timestep_fs"]))
        if cut_ps > 0:
            new = _round_to_checks(caps[t.task_id] - cut_ps, check_ps=check_ps, min_ps=min_ps)
            remaining -= n_atoms[t.task_id] * (steps(t, caps[t.task_id]) - steps(t, new))
            caps[t.task_id] = new
            conv["max_ps"] = new
            t.md = {**t.md, "convergence": conv}
        if remaining <= 0:
            break
    if remaining > 0:
        raise SpecError(f"convergence_policy.budget_atom_steps ({budget:.3g}) cannot cover "
                        f"min_ps for every task (short by {remaining:.3g} atom-steps); raise "
                        "the budget or lower convergence.min_ps")
    for t in tasks:
        t.extra["budget_cap_ps"] = caps[t.task_id]


def convergence_table(results) -> tuple[Any, dict[str, Any]]:
    """Per-task stop reasons and time to convergence, and the budget saved against the fixed
    length of the same preset (production atom-steps)."""
    import pandas as pd

    cols = ["task_id", "potential_label", "structure", "temperature_K", "replica",
            "stop_reason", "production_ps_run", "fixed_ps", "D_cm2_per_s_at_stop",
            "D_upper_bound_cm2_per_s", "rel_half_width_ci95_at_stop", "analysis_fraction_of_md"]
    if "stop_reason" not in results or results["stop_reason"].isna().all():
        return pd.DataFrame(columns=cols), {}
    df = results[results["stop_reason"].notna()].copy()
    used = (df["production_ps_run"] * 1000.0 / df["timestep_fs"] * df["n_atoms"]).sum()
    fixed = (df["fixed_ps"] * 1000.0 / df["timestep_fs"] * df["n_atoms"]).sum()
    counts = df["stop_reason"].value_counts().to_dict()
    summary = {"tasks": int(len(df)), "stop_reasons": {str(k): int(v) for k, v in counts.items()},
               "atom_steps_used": float(used), "atom_steps_fixed_protocol": float(fixed),
               "budget_saved_fraction": float(1.0 - used / fixed) if fixed else None,
               "median_time_to_convergence_ps": float(df.loc[df["stop_reason"] == "converged",
                                                             "production_ps_run"].median())
               if (df["stop_reason"] == "converged").any() else None}
    return df[[c for c in cols if c in df]], summary
