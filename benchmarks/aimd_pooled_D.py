"""D(Li) of the Li6PS5Cl (ordered, 0p) VASP AIMD at 500 K: five consecutive 14 ps XDATCARs
read as one 70 ps trajectory (analysis.readers.ConcatenatedSource), with the analysis layer.

Reports, for the pooled trajectory: kinisi D and interval (check settings and full settings),
the OLS D over the default fit window, the log-log MSD slope, the MSD-based upper bound
(analysis.incremental.estimate_D) and the stop rule's verdict; and for the five 14 ps blocks:
OLS D per block, mean and 95 % t-interval over the blocks (block averaging).

    python benchmarks/aimd_pooled_D.py --out benchmarks/results/aimd_li6ps5cl_0p_500K.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/aimd/argyrodite")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/aimd_li6ps5cl_0p_500K.json"))
    args = parser.parse_args()
    from scipy import stats as st

    from analysis.collect import CollectSettings, collect
    from analysis.diffusion import KinisiSettings, ols_slope, slope_to_D_cm2_per_s
    from analysis.incremental import CHECK_KINISI, estimate_D
    from analysis.readers import AseSource, ConcatenatedSource
    from harness.md.convergence import evaluate_check
    from harness.md.spec import ConvergenceSpec

    started = time.perf_counter()
    files = [args.data / f"0p_run{i}_XDATCAR.gz" for i in range(1, 6)]
    source = ConcatenatedSource([AseSource(f, frame_interval_fs=100.0) for f in files])
    info = source.info()
    data = collect(source, info, mobile="Li", frame_interval_fs=100.0,
                   settings=CollectSettings(rdf_max_frames=0))
    disp = np.empty((data.store.n_atoms, data.n_frames, 3))
    data.store.atoms(0, data.store.n_atoms, out=disp)
    data.store.close()
    dt = data.frame_interval_ps
    out: dict = {"files": [str(f) for f in files], "n_frames": data.n_frames,
                 "frame_interval_ps": dt, "n_li": int(disp.shape[0]), "temperature_K": 500.0}
    pooled = {}
    for name, settings in (("check", CHECK_KINISI), ("full", KinisiSettings())):
        est = estimate_D(disp, frame_interval_ps=dt, settings=settings)
        pooled[name] = est.as_dict()
    t = est.time_ps
    i0, i1 = int(round(pooled["full"]["fit_window_ps"][0] / dt)), \
        int(round(pooled["full"]["fit_window_ps"][1] / dt))
    pooled["D_ols_cm2_per_s"] = slope_to_D_cm2_per_s(ols_slope(t[i0:i1 + 1],
                                                               est.msd_A2[i0:i1 + 1])[0])
    conv = ConvergenceSpec(max_ps=70.0, min_ps=14.0)
    meets, plateau, reach = evaluate_check(est, conv=conv, framework_msd_max_A2=max(
        float(v.max()) for v in data.framework_msd.values()), framework_limit_A2=4.0,
        analysed_at_max_ps=70.0)
    pooled["stop_rule_at_70ps"] = {"meets_target": meets, "plateau": plateau,
                                   "msd_reachable_A2": reach}
    pooled["msd_A2_at_ps"] = {f"{x:g}": float(est.msd_A2[int(round(x / dt))])
                              for x in (1, 5, 10, 20, 35, 50, 69.9)}
    out["pooled_70ps"] = pooled
    blocks = []
    per = data.n_frames // 5
    for b in range(5):
        d = disp[:, b * per:(b + 1) * per]
        d = d - d[:, :1]
        e = estimate_D(d, frame_interval_ps=dt, settings=CHECK_KINISI)
        j0, j1 = int(round(e.fit_window_ps[0] / dt)), int(round(e.fit_window_ps[1] / dt))
        D_ols = slope_to_D_cm2_per_s(ols_slope(e.time_ps[j0:j1 + 1], e.msd_A2[j0:j1 + 1])[0])
        blocks.append({"block": b + 1, "D_ols_cm2_per_s": D_ols, **e.as_dict()})
    D_b = np.array([b["D_ols_cm2_per_s"] for b in blocks])
    half = st.t.ppf(0.975, len(D_b) - 1) * D_b.std(ddof=1) / np.sqrt(len(D_b))
    out["blocks_14ps"] = {"blocks": blocks, "D_ols_mean_cm2_per_s": float(D_b.mean()),
                          "D_ols_ci95_cm2_per_s": [float(D_b.mean() - half),
                                                   float(D_b.mean() + half)],
                          "method": "OLS slope over [10 %, 50 %] of each 14 ps block; mean and "
                                    "95 % t-interval over the 5 blocks"}
    out["wall_s"] = round(time.perf_counter() - started, 1)
    from analysis.output import write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(json.dumps({"pooled_check": pooled["check"], "D_ols": pooled["D_ols_cm2_per_s"],
                      "rule": pooled["stop_rule_at_70ps"],
                      "blocks": out["blocks_14ps"]["D_ols_mean_cm2_per_s"],
                      "blocks_ci": out["blocks_14ps"]["D_ols_ci95_cm2_per_s"]}, indent=1))


if __name__ == "__main__":
    main()
