"""Calibration of D's 95 % interval and of the convergence stop rule on known-answer data.

For each seed a synthetic trajectory with known D (analysis/synthetic.py) is analysed the way
``harness md --until-converged`` analyses a growing run: checks every ``check_every_ps``
(estimate_D with the checks' kinisi settings, harness/md/convergence.py rule). From the same
estimates:

* fixed-length coverage: fraction of seeds whose 95 % interval at length L holds the true D,
  mean D/D_true - 1 (bias) and mean relative half-width, for every check length L;
* stop-rule coverage and bias: the rule with 1 and with 2 consecutive checks (target
  ``target_rel_ci95``, MSD gate ``min_msd_A2``), the D reported where it stops;
* non_diffusive rule: false-positive rate on a slowly diffusing case that does reach the MSD
  gate within max_ps (the right verdict is never non_diffusive), and the rate on a caged
  (non-diffusing) case, where the upper bound must hold the true D = 0 trivially.

    python benchmarks/ci_coverage.py --seeds 100 --out benchmarks/results/ci_coverage.json
    # or split over processes and merge:
    python benchmarks/ci_coverage.py --seed-start 0 --seeds 25 --raw-out part0.json  # ...
    python benchmarks/ci_coverage.py --merge part*.json --out benchmarks/results/ci_coverage.json

Runs on one core (OMP_NUM_THREADS=1); about 0.7 s CPU per kinisi estimate (6 per seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def binomial_interval(k: int, n: int) -> list[float]:
    """Wilson 95 % interval of a proportion k/n."""
    if n == 0:
        return [float("nan"), float("nan")]
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def check_estimates(traj, *, frame_interval_ps: float, times_ps, conv, settings, mobile_n: int,
                    analysed_at_max_ps: float, fit: bool = True) -> list[dict]:
    from analysis.incremental import estimate_D
    from harness.md.convergence import evaluate_check

    disp = np.ascontiguousarray((traj.unwrapped[:, :mobile_n] - traj.unwrapped[0, :mobile_n])
                                .transpose(1, 0, 2))
    out = []
    for t in times_ps:
        n = int(round(t / frame_interval_ps)) + 1
        est = estimate_D(disp[:, :n], frame_interval_ps=frame_interval_ps, seed=conv.seed,
                         settings=settings, fit=fit)
        meets, plateau, reach = evaluate_check(est, conv=conv, framework_msd_max_A2=0.0,
                                               framework_limit_A2=4.0,
                                               analysed_at_max_ps=analysed_at_max_ps)
        out.append({"production_ps": float(t), "D": est.D_cm2_per_s,
                    "lo": est.ci95_cm2_per_s[0], "hi": est.ci95_cm2_per_s[1],
                    "rel": est.rel_half_width, "msd_fit_end": est.msd_end_of_fit_A2,
                    "meets_target": meets, "plateau": plateau, "reachable": reach})
    return out


def apply_rule(checks: list[dict], *, conv, consecutive: int) -> dict:
    from harness.md.convergence import decide

    rule = conv.model_copy(update={"consecutive_checks": consecutive})
    history = []
    for i, c in enumerate(checks):
        history.append(c)
        decision = decide(history, conv=rule, at_min=c["production_ps"] + 1e-9 >= rule.min_ps,
                          at_max=i == len(checks) - 1)
        if decision != "continue":
            return {**c, "stop_reason": decision}
    return {**checks[-1], "stop_reason": "budget"}


def summarise(rows: list[dict], truth: float) -> dict:
    n = len(rows)
    covered = sum(r["lo"] <= truth <= r["hi"] for r in rows)
    ratio = np.array([r["D"] / truth for r in rows])
    return {"n": n, "coverage": covered / n, "coverage_wilson95": binomial_interval(covered, n),
            "bias_mean": float(ratio.mean() - 1), "bias_sem": float(ratio.std(ddof=1) / np.sqrt(n)),
            "rel_half_width_mean": float(np.mean([r["rel"] for r in rows]))}


D_FAST = 0.5  # A^2/ps = 5e-5 cm^2/s; the 20 A^2 gate is passed at the fit-window end from 13 ps
DT = 0.1
CASES = {
    # reaches the gate at the fit-window end by max_ps (6 D 50 ps = 25 A^2 + vibration)
    "slow_diffusive_D0.083": dict(D=0.25 / 3, noise=0.5),
    # caged: vibration only
    "caged_D0": dict(D=0.0, noise=0.5),
}


def policies():
    from harness.md.spec import ConvergenceSpec

    conv = ConvergenceSpec(target_rel_ci95=0.2, min_msd_A2=20.0, check_every_ps=5.0,
                           min_ps=5.0, max_ps=30.0)
    slow = ConvergenceSpec(min_msd_A2=20.0, check_every_ps=10.0, min_ps=10.0, max_ps=100.0)
    return conv, slow


def raw_runs(seeds, *, n_ions: int) -> dict:
    """Per-seed check estimates (the expensive part; seeds can be split over processes)."""
    from analysis.incremental import CHECK_KINISI
    from analysis.synthetic import brownian

    conv, slow = policies()
    times = np.arange(conv.check_every_ps, conv.max_ps + 1e-9, conv.check_every_ps)
    per_seed = {}
    for seed in seeds:
        traj = brownian(n_ions=n_ions, n_frames=int(round(conv.max_ps / DT)) + 1,
                        frame_interval_ps=DT, D_A2_per_ps=D_FAST, noise_A=0.3, seed=1000 + seed)
        per_seed[str(seed)] = check_estimates(traj, frame_interval_ps=DT, times_ps=times,
                                              conv=conv, settings=CHECK_KINISI,
                                              mobile_n=n_ions, analysed_at_max_ps=conv.max_ps)
    nd = {name: {} for name in CASES}
    for name, case in CASES.items():
        for seed in seeds:
            traj = brownian(n_ions=n_ions, n_frames=int(round(20.0 / DT)) + 1,
                            frame_interval_ps=DT, D_A2_per_ps=case["D"], noise_A=case["noise"],
                            seed=5000 + seed)
            checks = check_estimates(traj, frame_interval_ps=DT, times_ps=[10.0, 20.0],
                                     conv=slow, settings=CHECK_KINISI, mobile_n=n_ions,
                                     analysed_at_max_ps=slow.max_ps, fit=False)
            nd[name][str(seed)] = bool(all(c["plateau"] for c in checks))
    return {"per_seed": per_seed, "non_diffusive": nd, "n_ions": n_ions}


def summarise_all(raw: dict) -> dict:
    from analysis.incremental import CHECK_KINISI

    conv, slow = policies()
    per_seed = [raw["per_seed"][k] for k in sorted(raw["per_seed"], key=int)]
    n = len(per_seed)
    times = [c["production_ps"] for c in per_seed[0]]
    truth = D_FAST * 1e-4
    fixed = {f"{t:g}": summarise([checks[i] for checks in per_seed], truth)
             for i, t in enumerate(times)}
    rules = {}
    for k in (1, 2):
        stops = [apply_rule(checks, conv=conv, consecutive=k) for checks in per_seed]
        converged = [s for s in stops if s["stop_reason"] == "converged"]
        rules[f"consecutive_{k}"] = {
            "stop_reasons": {r: sum(s["stop_reason"] == r for s in stops)
                             for r in ("converged", "non_diffusive", "budget")},
            "stop_ps_mean": float(np.mean([s["production_ps"] for s in stops])),
            "stop_ps_quartiles": [float(q) for q in np.percentile(
                [s["production_ps"] for s in stops], [25, 50, 75])],
            "at_stop_all": summarise(stops, truth),
            "at_stop_converged": summarise(converged, truth) if len(converged) > 1 else None,
        }
    nd = {}
    for name, case in CASES.items():
        verdicts = list(raw["non_diffusive"][name].values())
        k = int(sum(verdicts))
        nd[name] = {"n": len(verdicts), "non_diffusive": k, "rate": k / len(verdicts),
                    "rate_wilson95": binomial_interval(k, len(verdicts)),
                    "D_A2_per_ps": case["D"], "vibration_rms_A": case["noise"]}
    return {
        "what": "coverage of kinisi 95% intervals (check settings) and stop-rule bias on "
                "Brownian ions with known D",
        "system": {"n_ions": raw["n_ions"], "frame_interval_ps": DT,
                   "D_true_A2_per_ps": D_FAST, "vibration_rms_A": 0.3, "seeds": n},
        "kinisi_settings": CHECK_KINISI.as_dict(),
        "policy": conv.model_dump(mode="json"),
        "fixed_length": fixed,
        "stop_rule": rules,
        "non_diffusive_rule": {"policy": slow.model_dump(mode="json"), "checks_ps": [10, 20],
                               "cases": nd},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--n-ions", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ci_coverage.json"))
    parser.add_argument("--raw-out", type=Path, default=None,
                        help="write the per-seed estimates only (for --merge)")
    parser.add_argument("--merge", type=Path, nargs="*", default=None,
                        help="combine --raw-out files of seed ranges into --out")
    args = parser.parse_args()
    from analysis.output import write_json

    started = time.perf_counter()
    if args.merge:
        raw = {"per_seed": {}, "non_diffusive": {name: {} for name in CASES}, "n_ions": None}
        for path in args.merge:
            part = json.loads(path.read_text())
            raw["per_seed"].update(part["per_seed"])
            for name in CASES:
                raw["non_diffusive"][name].update(part["non_diffusive"][name])
            raw["n_ions"] = part["n_ions"]
    else:
        raw = raw_runs(range(args.seed_start, args.seed_start + args.seeds), n_ions=args.n_ions)
        if args.raw_out is not None:
            write_json(args.raw_out, {**raw, "wall_s": round(time.perf_counter() - started, 1)})
            return
    result = summarise_all(raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    fixed, rules, nd = result["fixed_length"], result["stop_rule"], \
        result["non_diffusive_rule"]["cases"]
    print(json.dumps({"fixed_length": {k: (v["coverage"], round(v["bias_mean"], 4))
                                       for k, v in fixed.items()},
                      "stop_rule": {k: (v["stop_reasons"], v["at_stop_all"]["coverage"],
                                        round(v["at_stop_all"]["bias_mean"], 4),
                                        v["stop_ps_mean"]) for k, v in rules.items()},
                      "non_diffusive": {k: v["rate"] for k, v in nd.items()}}, indent=1))


if __name__ == "__main__":
    main()
