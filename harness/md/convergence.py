"""Adaptive production length: stop MD when D has converged (``harness md --until-converged``).

The run is planned up to ``convergence.max_ps`` and split into chunks that end every
``check_every_ps`` (harness/md/templating.py ``plan_chunks``). At each chunk end from
``min_ps`` on, :class:`ConvergenceMonitor` reads only the frames appended to the dump since the
last check (analysis/incremental.py), estimates D with kinisi over the trajectory so far
(minus the detected equilibration) and decides:

* ``converged`` - half the 95 % interval of D is at most ``target_rel_ci95`` x D and the MSD
  at the end of the fit window has reached ``min_msd_A2``, at ``consecutive_checks``
  consecutive checks (one check is not enough: the interval shrinks and grows with the
  noise, and stopping on the first lucky check biases D; benchmarks/ci_coverage.py measures
  it);
* ``non_diffusive`` - the mobile ions' MSD has plateaued (log-log slope in the fit window
  below ``plateau_loglog_slope``, MSD below the gate), the framework is intact (its MSD
  below the watchdog's melting bound) and even the upper end of D's interval could not
  lift the MSD to the gate by ``max_ps``, at ``consecutive_checks`` consecutive checks. The
  reported number is an upper bound on D (the 97.5th percentile), not a value;
* ``budget`` - ``max_ps`` of production or ``max_wall_h`` reached without a verdict
  (unconverged: D is reported with its interval and flagged);
* ``melting`` - the watchdog's framework_melting failure (recorded by the workflow).

The decision at a check depends only on the trajectory up to that check and on the earlier
checks, so a run killed at any point and continued from its last restart file reaches the
same checks with the same data and the same decision (the wall-time budget excepted). Each
check is written into the manifest before the restart file of that step is published.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

STOP_REASONS = ("converged", "non_diffusive", "budget", "melting")
HISTORY_CSV = "convergence.csv"
HISTORY_PNG = "convergence.png"
HISTORY_COLUMNS = ("step", "production_ps", "analysis_start_ps", "analysed_ps", "n_frames",
                   "D_cm2_per_s", "D_lo_cm2_per_s", "D_hi_cm2_per_s", "rel_half_width_ci95",
                   "msd_end_of_fit_A2", "msd_max_A2", "loglog_slope", "framework_msd_max_A2",
                   "D_upper_msd_cm2_per_s",
                   "meets_target", "plateau", "decision", "analysis_s", "elapsed_wall_s")


class ConvergenceMonitor:
    """Incremental analysis and stop rule of one adaptive MD run (rank 0 only)."""

    def __init__(self, *, spec, run_dir: Path, symbols, dump_name: str,
                 thermo_name: str) -> None:
        from analysis.incremental import IncrementalDisplacements
        from analysis.readers import default_mobile_species

        conv = spec.convergence
        self.spec = spec
        self.conv = conv
        self.run_dir = Path(run_dir)
        self.dump_path = self.run_dir / dump_name
        self.thermo_path = self.run_dir / thermo_name
        symbols = [str(s) for s in symbols]
        self.species = conv.species or default_mobile_species(symbols)
        if self.species not in symbols:
            raise ValueError(f"convergence.species {self.species!r} is not in the structure "
                             f"({', '.join(sorted(set(symbols)))})")
        self.state = IncrementalDisplacements(symbols, mobile=self.species)
        self.dt_ps = spec.timestep_fs / 1000.0
        self.frame_interval_ps = spec.dump_every * self.dt_ps
        self.eq_steps = spec.equilibration_steps
        self.max_steps = spec.steps
        self.check_steps = max(1, int(round(conv.check_every_ps / self.dt_ps)))
        self.min_steps = int(math.ceil(conv.min_ps / self.dt_ps - 1e-9))
        self.detect = (conv.detect_equilibration if conv.detect_equilibration is not None
                       else spec.equilibration_steps == 0)
        self.history: list[dict[str, Any]] = []
        self.analysis_s = 0.0
        self.read_s = 0.0
        self.segment_start = time.perf_counter()
        self.wall_before_s = 0.0

    # -- schedule ----------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """A check runs at production chunk ends every check_every_ps from min_ps on, and at
        the end of the planned production."""
        prod = step - self.eq_steps
        if prod <= 0:
            return False
        if prod >= self.max_steps:
            return True
        return prod % self.check_steps == 0 and prod >= self.min_steps

    # -- resume ------------------------------------------------------------------------
    def restore(self, *, old_convergence: dict | None, resume_step: int) -> None:
        """Continue after a kill: the checks up to ``resume_step`` and the frames of the
        (already truncated) dump."""
        old = old_convergence or {}
        self.history = [h for h in old.get("history", []) if int(h["step"]) <= resume_step]
        self.analysis_s = float(sum(h.get("analysis_s", 0.0) for h in self.history))
        if self.history:
            self.wall_before_s = float(self.history[-1].get("elapsed_wall_s", 0.0))
        if self.dump_path.exists() and resume_step > self.eq_steps:
            started = time.perf_counter()
            self.state.read_dump(self.dump_path, timestep_fs=self.spec.timestep_fs)
            self.read_s += time.perf_counter() - started

    def stopped(self) -> dict | None:
        """The last check if it was a stop decision."""
        if self.history and self.history[-1]["decision"] != "continue":
            return self.history[-1]
        return None

    # -- one check ---------------------------------------------------------------------
    def _equilibration(self, step: int) -> tuple[int, dict]:
        """First analysed frame and the record of how it was chosen."""
        if not self.detect:
            how = (f"explicit equilibration_steps={self.eq_steps} (not dumped)"
                   if self.eq_steps else "none (equilibration detection off)")
            return 0, {"method": "explicit" if self.eq_steps else "none", "detail": how,
                       "discarded_production_ps": 0.0}
        from analysis.incremental import detect_equilibration

        steps, pe = _read_thermo_pe(self.thermo_path, last_step=step)
        if not len(steps) or steps[-1] != step:
            raise RuntimeError(f"{self.thermo_path} ends at step "
                               f"{steps[-1] if len(steps) else None}, not at the check step "
                               f"{step}: the equilibration detection needs every row")
        t0_index, g, n_eff = detect_equilibration(pe)
        t0_step = int(steps[t0_index]) if len(steps) else self.eq_steps
        frames = self.state.all_steps()
        first = int(np.searchsorted(frames, t0_step, side="left"))
        # keep at least 60 % of the frames for the fit whatever the detection says,
        # and never fewer than the 10 frames a fit needs
        first = max(0, min(first, int(0.4 * len(frames)), len(frames) - 10))
        return first, {"method": "auto",
                       "detail": "Chodera (2016) discard maximising N_eff = (N - t0)/g of the "
                                 "potential energy (thermo.csv), at most 40 % of production",
                       "discarded_production_ps": float((frames[first] - frames[0]) * self.dt_ps)
                       if len(frames) else 0.0,
                       "statistical_inefficiency": g, "n_eff": n_eff,
                       "thermo_rows": int(len(pe)), "frames": int(len(frames)),
                       "explicit_equilibration_steps": self.eq_steps}

    def check(self, step: int) -> dict[str, Any]:
        from analysis.incremental import estimate_D

        started = time.perf_counter()
        self.state.read_dump(self.dump_path, timestep_fs=self.spec.timestep_fs)
        first, equil = self._equilibration(step)
        est = estimate_D(self.state.mobile_array(first), frame_interval_ps=self.frame_interval_ps,
                         seed=self.conv.seed)
        fw = self.state.framework_msd_max_A2()
        prod_ps = (step - self.eq_steps) * self.dt_ps
        lo, hi = est.ci95_cm2_per_s
        meets, plateau, msd_reachable = evaluate_check(
            est, conv=self.conv, framework_msd_max_A2=fw,
            framework_limit_A2=self.spec.framework_msd_limit_A2,
            analysed_at_max_ps=self.max_steps * self.dt_ps - equil["discarded_production_ps"])
        record: dict[str, Any] = {
            "step": int(step), "production_ps": prod_ps,
            "analysis_start_ps": equil["discarded_production_ps"],
            "analysed_ps": est.duration_ps, "n_frames": est.n_frames,
            "D_cm2_per_s": est.D_cm2_per_s, "D_lo_cm2_per_s": lo, "D_hi_cm2_per_s": hi,
            "rel_half_width_ci95": est.rel_half_width,
            "msd_end_of_fit_A2": est.msd_end_of_fit_A2, "msd_max_A2": est.msd_max_A2,
            "loglog_slope": est.loglog_slope, "framework_msd_max_A2": fw,
            "D_upper_msd_cm2_per_s": est.D_upper_msd_cm2_per_s,
            "msd_reachable_at_max_A2": msd_reachable,
            "meets_target": meets, "plateau": plateau, "equilibration": equil,
            "fit_window_ps": est.fit_window_ps,
        }
        self.history.append(record)
        record["decision"] = self._decide(step)
        record["analysis_s"] = time.perf_counter() - started
        self.analysis_s += record["analysis_s"]
        record["elapsed_wall_s"] = self.wall_before_s + time.perf_counter() - self.segment_start
        self.write_history()
        return record

    def _decide(self, step: int) -> str:
        conv = self.conv
        wall_exceeded = False
        if conv.max_wall_h is not None:
            elapsed = self.wall_before_s + time.perf_counter() - self.segment_start
            wall_exceeded = elapsed >= conv.max_wall_h * 3600.0
        return decide(self.history, conv=conv,
                      at_min=(step - self.eq_steps) >= self.min_steps,
                      at_max=(step - self.eq_steps) >= self.max_steps,
                      wall_exceeded=wall_exceeded)

    # -- outputs -----------------------------------------------------------------------
    def write_history(self) -> None:
        from analysis.output import write_text

        lines = [",".join(HISTORY_COLUMNS)]
        for h in self.history:
            lines.append(",".join(_fmt(h.get(c)) for c in HISTORY_COLUMNS))
        write_text(self.run_dir / HISTORY_CSV, "\n".join(lines) + "\n")

    def plot(self) -> Path | None:
        if not self.history:
            return None
        from analysis.output import write_figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        t = np.array([h["production_ps"] for h in self.history])
        D = np.array([h["D_cm2_per_s"] for h in self.history])
        lo = np.array([h["D_lo_cm2_per_s"] for h in self.history])
        hi = np.array([h["D_hi_cm2_per_s"] for h in self.history])
        msd = np.array([h["msd_end_of_fit_A2"] for h in self.history])
        fig = Figure(figsize=(11, 4.2))
        FigureCanvasAgg(fig)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.fill_between(t, lo, hi, color="tab:blue", alpha=0.25, label="95 % interval")
        ax1.plot(t, D, "o-", color="tab:blue", label=f"D({self.species}) median")
        last = self.history[-1]
        ax1.set_xlabel("production time (ps)")
        ax1.set_ylabel("D (cm$^2$/s)")
        ax1.set_title(f"stop: {last['decision']} at {last['production_ps']:g} ps "
                      f"(target +/-{100 * self.conv.target_rel_ci95:g} %)", fontsize=10)
        ax1.legend(fontsize=9)
        ax2.plot(t, msd, "s-", color="tab:green", label="MSD at fit-window end")
        ax2.axhline(self.conv.min_msd_A2, color="k", ls="--", lw=1,
                    label=f"gate {self.conv.min_msd_A2:g} A$^2$")
        ax2.set_xlabel("production time (ps)")
        ax2.set_ylabel("MSD (A$^2$)")
        ax2.legend(fontsize=9)
        fig.tight_layout()
        return write_figure(self.run_dir / HISTORY_PNG, fig)

    def summary(self, *, stop_reason: str, md_wall_s: float, detail: str | None = None) -> dict:
        """The ``convergence`` block of the manifest."""
        last = self.history[-1] if self.history else None
        out: dict[str, Any] = {
            "stop_reason": stop_reason,
            "converged": stop_reason == "converged",
            "species": self.species,
            "settings": self.conv.model_dump(mode="json"),
            "checks": len(self.history),
            "history": self.history,
            "history_csv": HISTORY_CSV,
            "analysis_wall_s": round(self.analysis_s + self.read_s, 3),
            "md_wall_s": round(md_wall_s, 3),
            "analysis_fraction_of_md": (round((self.analysis_s + self.read_s) / md_wall_s, 4)
                                        if md_wall_s > 0 else None),
            "kinisi_settings": _check_kinisi(),
        }
        if detail:
            out["detail"] = detail
        if last is not None:
            out["stopped_at_step"] = last["step"]
            out["production_ps"] = last["production_ps"]
            out["analysis_start_ps"] = last["analysis_start_ps"]
            out["equilibration"] = last["equilibration"]
            if stop_reason == "non_diffusive":
                out["D_upper_bound_cm2_per_s"] = last["D_upper_msd_cm2_per_s"]
                out["D_cm2_per_s"] = None
                out["note"] = ("MSD plateaued below the gate with an intact framework: D is "
                               "below the upper bound (MSD(t_e) + 2 sigma) / (6 t_e) at the "
                               "fit-window end t_e; no value is given")
            else:
                out["D_cm2_per_s"] = last["D_cm2_per_s"]
                out["D_ci95_cm2_per_s"] = [last["D_lo_cm2_per_s"], last["D_hi_cm2_per_s"]]
                if stop_reason != "converged":
                    out["flag"] = "unconverged"
        return out


def evaluate_check(est, *, conv, framework_msd_max_A2: float, framework_limit_A2: float,
                   analysed_at_max_ps: float) -> tuple[bool, bool, float]:
    """(meets_target, plateau, msd_reachable_A2) of one D estimate.

    ``meets_target``: D > 0, half the 95 % interval <= target x D, MSD at the fit-window
    end >= the gate. ``plateau``: log-log MSD slope in the fit window below
    ``plateau_loglog_slope``, largest MSD below the gate, framework MSD below the melting
    bound, and the gate out of reach by max_ps even at the interval's upper end:
    ``msd_reachable`` = MSD(fit end) + 6 D_up x (growth of the fit-window end by max_ps),
    D_up the MSD-based upper bound (analysis.incremental.DEstimate.D_upper_msd_cm2_per_s;
    kinisi's interval on a flat MSD is not usable).
    """
    hi = est.D_upper_msd_cm2_per_s
    meets = bool(est.D_cm2_per_s > 0 and est.rel_half_width <= conv.target_rel_ci95
                 and est.msd_end_of_fit_A2 >= conv.min_msd_A2)
    fit_end_gain_ps = 0.5 * max(0.0, analysed_at_max_ps - est.duration_ps)
    # 1 cm^2/s = 1e4 A^2/ps
    msd_reachable = est.msd_end_of_fit_A2 + 6.0 * max(hi, 0.0) * 1e4 * fit_end_gain_ps
    plateau = bool(est.loglog_slope < conv.plateau_loglog_slope
                   and est.msd_max_A2 < conv.min_msd_A2
                   and framework_msd_max_A2 < framework_limit_A2
                   and msd_reachable < conv.min_msd_A2)
    return meets, plateau, float(msd_reachable)


def decide(history: list[dict], *, conv, at_min: bool, at_max: bool,
           wall_exceeded: bool = False) -> str:
    """The stop rule over the checks so far (the last one is the current check)."""
    k = conv.consecutive_checks
    recent = history[-k:]
    if at_min and len(recent) == k:
        if all(h["meets_target"] for h in recent):
            return "converged"
        if all(h["plateau"] for h in recent):
            return "non_diffusive"
    if at_max or wall_exceeded:
        return "budget"
    return "continue"


def policy_on_array(displacements: np.ndarray, *, frame_interval_ps: float, conv,
                    framework_limit_A2: float = 4.0, framework_msd_max_A2: float = 0.0,
                    settings=None) -> dict[str, Any]:
    """Apply the stop rule to an in-memory trajectory (ions, frames, 3) as the MD would
    grow it: checks every ``check_every_ps`` from ``min_ps`` to ``max_ps`` (known-answer
    studies: benchmarks/ci_coverage.py, tests). No equilibration discard."""
    from analysis.incremental import estimate_D

    n_total = displacements.shape[1]
    max_ps = min(conv.max_ps, (n_total - 1) * frame_interval_ps)
    history: list[dict] = []
    t = conv.check_every_ps
    while t <= max_ps + 1e-9:
        if t + 1e-9 >= conv.min_ps or t + 1e-9 >= max_ps:
            n = int(round(t / frame_interval_ps)) + 1
            est = estimate_D(displacements[:, :n], frame_interval_ps=frame_interval_ps,
                             seed=conv.seed, settings=settings)
            meets, plateau, _ = evaluate_check(
                est, conv=conv, framework_msd_max_A2=framework_msd_max_A2,
                framework_limit_A2=framework_limit_A2, analysed_at_max_ps=max_ps)
            history.append({"production_ps": t, "D_cm2_per_s": est.D_cm2_per_s,
                            "ci95_cm2_per_s": est.ci95_cm2_per_s, "meets_target": meets,
                            "plateau": plateau})
            decision = decide(history, conv=conv, at_min=t + 1e-9 >= conv.min_ps,
                              at_max=t + conv.check_every_ps > max_ps + 1e-9)
            history[-1]["decision"] = decision
            if decision != "continue":
                return {"stop_reason": decision, **history[-1], "history": history}
        t += conv.check_every_ps
    return {"stop_reason": "budget", **(history[-1] if history else {}), "history": history}


def _check_kinisi() -> dict:
    from analysis.incremental import CHECK_KINISI

    return CHECK_KINISI.as_dict()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _read_thermo_pe(path: Path, *, last_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps and potential energies of the complete thermo.csv rows up to ``last_step``."""
    steps, pe = [], []
    if not path.exists():
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    with open(path) as handle:
        header = None
        for line in handle:
            if not line.endswith("\n") or not line.strip() or line.startswith("#"):
                continue
            parts = line.strip().split(",")
            if header is None and parts[0] == "step":
                header = parts
                continue
            if header is None:
                continue
            try:
                step = int(float(parts[0]))
                value = float(parts[header.index("pe_eV")])
            except (ValueError, IndexError):
                continue
            if step <= last_step:
                steps.append(step)
                pe.append(value)
    return np.asarray(steps, dtype=np.int64), np.asarray(pe)
