"""Strong scaling of LAMMPS MD over MPI ranks, as JSON: ms/step on 1, 2 (, 4) ranks.

For each model and Li6PS5Cl supercell (~400, ~1,400, ~5,000 atoms; rattled by 0.05 A,
velocities at 600 K, NVE, 1 fs) LAMMPS runs under ``mpirun -n R`` with domain
decomposition on all R ranks (the harness' small-cell fold rule is *not* applied here:
this measures raw scaling). Models and what runs on several ranks:

``mace-tiny-test``  ``pair_style mace`` plugin; on R > 1 the adapter picks the plugin's
                    parallel mode (one-layer halo, feature exchange between layers)
``sevennet-0``      ``pair_style e3gnn`` on 1 rank, ``e3gnn/parallel`` on R > 1
``lj-test``         classical 12-6 LJ (``pair_style lj/cut``): the reference for how
                    LAMMPS itself scales on this machine

Fairness: every configuration runs the same untimed warm-up (``run W``) and then
``--repeats`` timed windows of ``run N pre no post yes``; ms/step is the median window.
torch threads per rank = usable cores // ranks (``OMP_NUM_THREADS`` wins when set), so
R ranks never use more cores than 1 rank. The time per step is split with LAMMPS' own
timing breakdown of the timed windows (log.lammps, ``MPI task timing breakdown``, average
over ranks): ``Pair`` (the model, incl. its feature exchange for message-passing
models), ``Comm`` (LAMMPS' ghost/force communication) and everything else (Neigh,
Modify, Output, Other). Reported: speedup = ms(1 rank) / ms(R ranks), parallel efficiency
= speedup / R.

The machine may be shared: ``os.getloadavg()`` before and after each measurement is
recorded, and a configuration whose projected wall time (warm-up + timed steps, from
``COST_MS_PER_ATOM_STEP``) exceeds ``--budget-s`` is skipped with that reason.

    python benchmarks/md_scaling.py                      # all defaults, CPU
    python benchmarks/md_scaling.py --quick              # ~400 atoms, few steps: a check
    python benchmarks/md_scaling.py --models sevennet-0 --sizes 1400 --ranks 1 2 \\
        --steps 5 --out benchmarks/results/md_scaling-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

#: nominal size -> Li6PS5Cl (52 atoms) supercell repetitions
SUPERCELLS = {400: (2, 2, 2), 1400: (3, 3, 3), 5000: (4, 4, 6)}
MODELS = ("mace-tiny-test", "sevennet-0", "lj-test")
#: rough single-core cost, ms per atom-step (this 2-core CPU), for the budget projection
COST_MS_PER_ATOM_STEP = {"mace-tiny-test": 0.45, "sevennet-0": 7.0, "lj-test": 0.002}
TIMESTEP_FS = 1.0
TEMPERATURE_K = 600.0
SEED = 2025
MPIRUN = Path(sys.executable).parent / "mpirun"
SECTIONS = ("Pair", "Neigh", "Comm", "Output", "Modify", "Other")


def cell(nominal: int) -> Any:
    from harness.structures import load_structure

    atoms = load_structure("Li6PS5Cl").repeat(SUPERCELLS[nominal])
    atoms.rattle(stdev=0.05, seed=SEED)
    return atoms


def parse_breakdown(log_text: str) -> list[dict[str, float]]:
    """Every ``MPI task timing breakdown`` table in a LAMMPS log: section -> avg seconds."""
    tables = []
    for block in log_text.split("MPI task timing breakdown:")[1:]:
        table = {}
        for line in block.splitlines()[2:12]:
            m = re.match(r"^(\w+)\s*\|\s*([\d.eE+-]+)\s*\|\s*([\d.eE+-]+)\s*\|", line)
            if m and m.group(1) in SECTIONS:
                table[m.group(1)] = float(m.group(3))
        tables.append(table)
    return tables


# -- the worker: one configuration under mpirun ----------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import warnings

    from mpi4py import MPI

    from harness.md.engine import LammpsEngine
    from harness.structures import write_lammps_data
    from potentials.registry import get_potential

    world = MPI.COMM_WORLD
    ranks = world.Get_size()
    workdir = Path(args.workdir)
    threads = None
    if args.model != "lj-test":
        import torch

        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else max(
            1, len(os.sched_getaffinity(0)) // ranks)
        torch.set_num_threads(threads)
    atoms = cell(args.size)
    data = workdir / "cell.data"
    type_elements = write_lammps_data(atoms, data) if world.Get_rank() == 0 else None
    type_elements = world.bcast(type_elements, root=0)
    potential = get_potential(args.model, route="native", device=args.device)
    log = workdir / "log.lammps"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        setup = potential.lammps_setup(type_elements=type_elements, workdir=workdir,
                                       nranks=ranks)
    with LammpsEngine(log_file=log, comm=world) as engine:
        engine.commands(["units metal", "atom_style atomic", "atom_modify map array",
                         "boundary p p p", f"read_data {data}"])
        engine.run_potential_block(setup.lines, required_styles=setup.required_styles,
                                   fix_it=setup.fix_it)
        potential.attach(engine.lmp, setup=setup, type_elements=type_elements, comm=engine.comm)
        engine.commands(["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
                         f"timestep {TIMESTEP_FS / 1000}",
                         f"velocity all create {TEMPERATURE_K} {SEED} dist gaussian",
                         "fix md all nve", "thermo_style custom step temp pe",
                         f"thermo {10 * (args.steps + args.warmup + 1)}",
                         f"run {args.warmup}"])
        seconds = []
        for _ in range(args.repeats):
            world.Barrier()
            start = time.perf_counter()
            engine.command(f"run {args.steps} pre no post yes")
            seconds.append(world.allreduce(time.perf_counter() - start, op=MPI.MAX))
        pe = engine.thermo("pe")
    if world.Get_rank() == 0:
        tables = parse_breakdown(log.read_text())[-args.repeats:]
        Path(args.worker_json).write_text(json.dumps({
            "seconds": seconds, "tables": tables, "n_atoms": len(atoms), "ranks": ranks,
            "torch_threads": threads, "lammps_lines": list(setup.lines), "pe_eV": pe,
            "route": setup.route}))


def run_config(model: str, size: int, ranks: int, *, steps: int, warmup: int, repeats: int,
               device: str, timeout_s: float) -> dict[str, Any]:
    import numpy as np

    entry: dict[str, Any] = {"model": model, "nominal_atoms": size, "ranks": ranks,
                             "supercell": list(SUPERCELLS[size]), "steps": steps,
                             "warmup_steps": warmup, "repeats": repeats,
                             "loadavg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="md-scaling-") as tmp:
        out = Path(tmp) / "worker.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-json", str(out),
               "--workdir", tmp, "--models", model, "--sizes", str(size), "--steps",
               str(steps), "--warmup", str(warmup), "--repeats", str(repeats), "--device",
               device]
        if ranks > 1 or MPIRUN.exists():
            cmd = [str(MPIRUN), "-n", str(ranks), *cmd]
        started = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        entry["wall_s"] = round(time.perf_counter() - started, 1)
        entry["loadavg_after"] = list(os.getloadavg())
        if result.returncode != 0 or not out.is_file():
            entry.update(status="failed", reason=result.stderr.strip()[-1500:])
            return entry
        raw = json.loads(out.read_text())
    ms = [1000.0 * s / steps for s in raw["seconds"]]
    entry.update(status="ok", n_atoms=raw["n_atoms"], torch_threads=raw["torch_threads"],
                 lammps_lines=raw["lammps_lines"], route=raw["route"], pe_eV=raw["pe_eV"],
                 ms_per_step_repeats=ms, ms_per_step=float(np.median(ms)))
    entry["atom_steps_per_s"] = 1000.0 * raw["n_atoms"] / entry["ms_per_step"]
    # ns/day = (steps per day) x (ns per step) = 86.4e6 ms / ms_per_step x dt_fs 1e-6
    entry["ns_per_day"] = 86.4 * TIMESTEP_FS / entry["ms_per_step"]
    if raw["tables"]:
        def med(key: str) -> float:
            return float(np.median([1000.0 * t.get(key, 0.0) / steps for t in raw["tables"]]))
        pair, comm = med("Pair"), med("Comm")
        other = sum(med(k) for k in SECTIONS if k not in ("Pair", "Comm"))
        entry["breakdown_ms_per_step"] = {"pair_model": pair, "comm_lammps": comm,
                                          "lammps_other": other}
    return entry


def add_scaling(entries: list[dict[str, Any]]) -> None:
    base = {(e["model"], e["nominal_atoms"]): e for e in entries
            if e.get("status") == "ok" and e["ranks"] == 1}
    for e in entries:
        one = base.get((e["model"], e["nominal_atoms"]))
        if e.get("status") == "ok" and one:
            e["speedup"] = one["ms_per_step"] / e["ms_per_step"]
            e["parallel_efficiency"] = e["speedup"] / e["ranks"]
            # same start, same NVE steps: the final potential energies agree to round-off
            # growth (float32 for sevennet-0) when the parallel modes are right
            e["pe_diff_vs_1rank_eV_per_atom"] = abs(e["pe_eV"] - one["pe_eV"]) / e["n_atoms"]


def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"kind": device, "cpu": cpu, "cpu_cores": os.cpu_count(),
                            "usable_cpus": len(os.sched_getaffinity(0)),
                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def table(entries: list[dict[str, Any]]) -> str:
    """A markdown table of the results (what the README shows)."""
    rows = ["| model | atoms | ranks | ms/step | speedup | efficiency | Pair / Comm / other ms "
            "| abs(PE - PE 1 rank) eV/atom |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in entries:
        if e.get("status") != "ok":
            rows.append(f"| {e['model']} | ~{e['nominal_atoms']} | {e['ranks']} | "
                        f"{e.get('status')}: {str(e.get('reason', ''))[:60]} | | | | |")
            continue
        b = e.get("breakdown_ms_per_step", {})
        rows.append(f"| {e['model']} | {e['n_atoms']} | {e['ranks']} | {e['ms_per_step']:.4g} | "
                    f"{e.get('speedup', float('nan')):.2f} | "
                    f"{e.get('parallel_efficiency', float('nan')):.2f} | "
                    f"{b.get('pair_model', 0):.3g} / {b.get('comm_lammps', 0):.3g} / "
                    f"{b.get('lammps_other', 0):.3g} | "
                    f"{e.get('pe_diff_vs_1rank_eV_per_atom', float('nan')):.1e} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=sorted(SUPERCELLS),
                        choices=sorted(SUPERCELLS))
    parser.add_argument("--ranks", nargs="+", type=int, default=None,
                        help="rank counts (default 1, 2 and 4 where the machine has the cores)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows; median kept")
    parser.add_argument("--sevennet-steps", type=int, default=3,
                        help="timed steps for SevenNet-0 (slow on CPU)")
    parser.add_argument("--budget-s", type=float, default=600.0,
                        help="skip a configuration whose projected wall time exceeds this")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true",
                        help="~400 atoms, 2 warm-up + 3 timed steps, 1 window: a smoke check")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker-json", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker_json:
        args.model, args.size = args.models[0], args.sizes[0]
        worker(args)
        return 0

    import torch

    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.sizes, args.steps, args.sevennet_steps = [400], 3, 2
        args.warmup, args.repeats = 2, 1
    cores = len(os.sched_getaffinity(0))
    ranks_list = args.ranks or [r for r in (1, 2, 4) if r <= max(2, cores)]
    if device == "cuda" and not args.ranks:
        ranks_list = [1, 2, 4]      # ranks share the GPU(s) round-robin

    from harness.md.rundir import git_sha, package_versions

    report: dict[str, Any] = {
        "benchmark": "md_scaling", "started": datetime.now(timezone.utc).isoformat(),
        "machine": machine_info(device), "host": platform.node(), "git_sha": git_sha(),
        "versions": package_versions(),
        "settings": {"structure": "Li6PS5Cl (bundled) supercells, rattled 0.05 A",
                     "ensemble": "NVE velocity Verlet", "timestep_fs": TIMESTEP_FS,
                     "temperature_K": TEMPERATURE_K, "steps": args.steps,
                     "sevennet_steps": args.sevennet_steps, "warmup": args.warmup,
                     "repeats": args.repeats, "neighbor_skin_A": 1.0, "ranks": ranks_list,
                     "budget_s": args.budget_s, "quick": args.quick,
                     "threads_rule": "torch threads per rank = usable cores // ranks "
                                     "(OMP_NUM_THREADS wins)"},
        "results": [], "skipped": [],
    }
    for model in args.models:
        steps = args.sevennet_steps if model.startswith("sevennet") else args.steps
        for size in args.sizes:
            n_atoms = 52 * SUPERCELLS[size][0] * SUPERCELLS[size][1] * SUPERCELLS[size][2]
            for ranks in ranks_list:
                per_step_s = COST_MS_PER_ATOM_STEP[model] * n_atoms / 1000.0
                if device == "cuda":
                    per_step_s /= 20.0
                else:
                    per_step_s /= min(ranks, cores) * 0.8 if ranks > 1 else 1.0
                projected = per_step_s * (args.warmup + 2 + steps * args.repeats) + 20.0
                if projected > args.budget_s:
                    report["skipped"].append({
                        "model": model, "nominal_atoms": size, "ranks": ranks,
                        "reason": f"projected {projected:.0f} s > --budget-s {args.budget_s:.0f}"
                                  f" ({COST_MS_PER_ATOM_STEP[model]} ms/atom-step x {n_atoms} "
                                  f"atoms on {device})"})
                    print(f"skip {model} {size} x{ranks}: projected {projected:.0f} s",
                          file=sys.stderr, flush=True)
                    continue
                print(f"{model} {size} atoms x{ranks} ranks ...", file=sys.stderr, flush=True)
                try:
                    entry = run_config(model, size, ranks, steps=steps, warmup=args.warmup,
                                       repeats=args.repeats, device=device,
                                       timeout_s=max(300.0, 3 * projected))
                except subprocess.TimeoutExpired as exc:
                    entry = {"model": model, "nominal_atoms": size, "ranks": ranks,
                             "status": "failed", "reason": f"timed out after {exc.timeout} s"}
                print(f"  {entry.get('ms_per_step', entry.get('reason'))}", file=sys.stderr,
                      flush=True)
                report["results"].append(entry)
                add_scaling(report["results"])
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(report, indent=1) + "\n")
    report["finished"] = datetime.now(timezone.utc).isoformat()
    report["table_markdown"] = table(report["results"])
    text = json.dumps(report, indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
        print(report["table_markdown"])
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
