"""MD throughput of one model four ways, as JSON: ASE MD, LAMMPS + fix external, LAMMPS +
native plugin, and the bare model call.

For each model and cell size (Li6PS5Cl supercells of ~100, 500, 2,000 and 10,000 atoms,
rattled by 0.05 A, velocities at 600 K, NVE, 1 fs):

``ase``       ASE ``VelocityVerlet`` with the model's ASE calculator (the seed 004 approach;
              the baseline). MACE: :class:`potentials.mace.MaceTorchScriptCalculator` (what
              the harness has in place of mace-torch's MACECalculator); SevenNet:
              ``sevenn.calculator.SevenNetCalculator``.
``external``  LAMMPS ``fix nve`` + ``fix external`` driving that same calculator.
``native``    LAMMPS ``fix nve`` + the compiled pair style (``pair_style mace`` /
              ``pair_style e3gnn`` plugins).
``bare``      the model's energy + forces call on a prebuilt graph, nothing else: the floor
              any MD driver can reach.

Reported per entry: ms/step, atom-steps/s, ``speedup_vs_ase`` (ASE ms / this ms) and
``cost_vs_bare`` (this ms / bare ms; the goal for ``native`` is <= 1.10). Timed sections
exclude start-up: LAMMPS runs ``run W`` first and then times ``run N pre no post no``
(no extra setup force call); ASE runs ``W`` steps first. Only LAMMPS computes the virial on
thermo steps, and ``fix external`` asks the ASE calculator for stress on every call (what the
route costs); ASE MD and ``bare`` ask for energy and forces only.

Each measurement is ``--repeats`` timed windows of ``--steps`` steps after the same number
of untimed calls for every method (``--warmup`` steps + the initial force call); ms/step is
the median window.

``--concurrent N`` also measures N independent small cells run at the same time (N
processes, as N ranks of the task farm sharing one device) against one at a time, each
worker timing the same overlapping wall-clock window.

Run it (CPU here, GPU machine when available; results name the device):

    python benchmarks/md_throughput.py --models mace-tiny sevennet-0 --sizes 100 500 \\
        --concurrent 2 --out benchmarks/results/md_throughput-cpu.json

Sizes above ``--max-atoms-cpu`` (default 1000) are recorded as skipped ("GPU-only") when
no CUDA device is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

#: nominal size -> Li6PS5Cl (52 atoms) supercell repetitions
SUPERCELLS = {100: (2, 1, 1), 500: (3, 3, 1), 2000: (5, 4, 2), 10000: (8, 6, 4)}
METHODS = ("ase", "external", "native", "bare")
TIMESTEP_FS = 1.0
TEMPERATURE_K = 600.0
SEED = 2025


# -- models ------------------------------------------------------------------------------------
def make_potential(model: str, *, route: str, device: str) -> Any:
    """The harness adapter for ``model`` on ``route`` ('native' or 'external')."""
    from potentials.mace import TINY_MODEL_FILE, MacePotential, foundation_export_path

    if model == "mace-tiny":
        return MacePotential(name=model, route=route, device=device, model_file=TINY_MODEL_FILE)
    if model.startswith("mace-"):  # foundation model, e.g. mace-medium-mpa-0
        name = model.removeprefix("mace-")
        if not foundation_export_path(name).is_file():
            raise FileNotFoundError(f"no export of MACE foundation model '{name}' "
                                    f"(`harness export mace --foundation {name}` needs internet)")
        return MacePotential(name=model, route=route, device=device, foundation=name)
    if model == "sevennet-0":
        from potentials.sevennet import SevenNetPotential

        return SevenNetPotential(name=model, route=route, device=device, checkpoint="7net-0")
    raise ValueError(f"unknown model '{model}' (mace-tiny, mace-<foundation>, sevennet-0)")


def bare_call(model: str, calculator: Any, atoms: Any) -> Callable[[], None]:
    """A closure doing one energy + forces evaluation on a graph built once."""
    import torch

    if model.startswith("mace"):
        data = calculator.graph(atoms)
        local = torch.ones(len(atoms), dtype=calculator.dtype, device=calculator.device)

        def call() -> None:
            batch = dict(data)
            batch["positions"] = data["positions"].detach().clone()
            out = calculator.model(batch, local, compute_virials=False)
            out["forces"].sum().item()  # synchronise
        return call

    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    graph = AtomGraphData.from_numpy_dict(
        unlabeled_atoms_to_graph(atoms, calculator.cutoff, with_shift=False))
    graph.to(calculator.device)

    def call() -> None:
        out = calculator.model(graph.clone())
        out["inferred_force"].sum().item()
    return call


# -- structures -----------------------------------------------------------------------------
def cell(nominal: int) -> Any:
    from harness.structures import load_structure

    atoms = load_structure("Li6PS5Cl").repeat(SUPERCELLS[nominal])
    atoms.rattle(stdev=0.05, seed=SEED)
    return atoms


# -- timed methods ----------------------------------------------------------------------------
def time_ase(calculator: Any, atoms: Any, *, steps: int, warmup: int,
             repeats: int = 1) -> list[float]:
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K,
                                 rng=np.random.default_rng(SEED))
    dyn = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dyn.run(warmup)  # warmup + 1 force calls, as LAMMPS' `run warmup`
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        dyn.run(steps)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_lammps(potential: Any, atoms: Any, *, steps: int, warmup: int, workdir: Path,
                start_at: float | None = None,
                repeats: int = 1) -> tuple[list[float], float, float]:
    """(seconds of each repeat, t_start, t_end) of ``run steps`` after ``run warmup``."""
    from mpi4py import MPI

    from harness.md.engine import LammpsEngine
    from harness.structures import write_lammps_data

    data = workdir / "cell.data"
    type_elements = write_lammps_data(atoms, data)
    with LammpsEngine(log_file=workdir / "log.lammps", comm=MPI.COMM_SELF) as engine:
        setup = potential.lammps_setup(type_elements=type_elements, workdir=workdir, nranks=1)
        engine.commands(["units metal", "atom_style atomic", "atom_modify map array",
                         "boundary p p p", f"read_data {data}"])
        engine.commands(setup.lines)
        engine.require_styles(setup.required_styles, fix_it=setup.fix_it)
        potential.attach(engine.lmp, setup=setup, type_elements=type_elements, comm=engine.comm)
        engine.commands(["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
                         f"timestep {TIMESTEP_FS / 1000}",
                         f"velocity all create {TEMPERATURE_K} {SEED} dist gaussian",
                         "fix md all nve", "thermo_style custom step temp pe",
                         f"thermo {10 * (steps + warmup + 1)}", f"run {warmup}"])
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        t0, seconds = time.time(), []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.command(f"run {steps} pre no post no")
            seconds.append(time.perf_counter() - start)
        return seconds, t0, t0 + sum(seconds)


def time_bare(call: Callable[[], None], *, steps: int, warmup: int,
              repeats: int = 1) -> list[float]:
    for _ in range(warmup + 1):  # as many untimed calls as the MD drivers make
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            call()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(model: str, nominal: int, method: str, *, steps: int, warmup: int, device: str,
            workdir: Path, repeats: int = 3) -> dict[str, Any]:
    atoms = cell(nominal)
    entry: dict[str, Any] = {"model": model, "method": method, "nominal_atoms": nominal,
                             "n_atoms": len(atoms), "supercell": list(SUPERCELLS[nominal]),
                             "steps": steps, "warmup_steps": warmup, "repeats": repeats}
    route = "native" if method == "native" else "external"
    potential = make_potential(model, route=route, device=device)
    if method in ("ase", "bare"):
        calculator = potential.ase_calculator()
        seconds = (time_ase(calculator, atoms, steps=steps, warmup=warmup, repeats=repeats)
                   if method == "ase"
                   else time_bare(bare_call(model, calculator, atoms), steps=steps,
                                  warmup=warmup, repeats=repeats))
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            seconds, _, _ = time_lammps(potential, atoms, steps=steps, warmup=warmup,
                                        workdir=workdir, repeats=repeats)
        entry["lammps_lines"] = [line for line in potential.lammps_setup(
            type_elements=sorted(set(atoms.get_chemical_symbols())), workdir=workdir,
            nranks=1).lines]
    # the median of the repeats: robust to one disturbed window on a shared machine
    entry["ms_per_step_repeats"] = [1000.0 * t / steps for t in seconds]
    entry["ms_per_step"] = float(np.median(entry["ms_per_step_repeats"]))
    entry["atom_steps_per_s"] = 1000.0 * len(atoms) / entry["ms_per_step"]
    entry["status"] = "ok"
    return entry


# -- concurrency --------------------------------------------------------------------------------
def worker_main(args: argparse.Namespace) -> None:
    """One task-farm rank: one small cell, native route (external when no plugin)."""
    import torch

    torch.set_num_threads(args.threads)
    atoms = cell(args.size)
    potential = make_potential(args.model, route=args.route, device=args.device)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (seconds,), t0, t1 = time_lammps(potential, atoms, steps=args.steps,
                                         warmup=args.warmup, workdir=Path(tmp),
                                         start_at=args.start_at)
    Path(args.worker_json).write_text(json.dumps(
        {"seconds": seconds, "t_start": t0, "t_end": t1, "n_atoms": len(atoms),
         "steps": args.steps, "threads": args.threads}))


def run_workers(n: int, *, model: str, size: int, route: str, steps: int, warmup: int,
                device: str, threads: int, startup_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start_at = time.time() + startup_s
        procs, outs = [], []
        for k in range(n):
            out = Path(tmp) / f"w{k}.json"
            outs.append(out)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-json", str(out),
                   "--models", model, "--sizes", str(size), "--route", route,
                   "--steps", str(steps), "--warmup", str(warmup), "--device", device,
                   "--threads", str(threads), "--start-at", str(start_at)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env={**os.environ,
                                                          "OMP_NUM_THREADS": str(threads)}))
        for proc in procs:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"benchmark worker failed: {err[-2000:]}")
        results = [json.loads(o.read_text()) for o in outs]
    late = max(r["t_start"] for r in results) - start_at
    window = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    atom_steps = sum(r["n_atoms"] * r["steps"] for r in results)
    return {"processes": n, "threads_per_process": threads,
            "atom_steps_per_s": atom_steps / window, "window_s": window,
            "per_process_ms_per_step": [1000 * r["seconds"] / r["steps"] for r in results],
            "start_skew_s": late}


def concurrency(n: int, *, model: str, size: int, steps: int, warmup: int, device: str,
                route: str) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    one = run_workers(1, model=model, size=size, route=route, steps=steps, warmup=warmup,
                      device=device, threads=cores if device != "cuda" else 1, startup_s=45)
    many = run_workers(n, model=model, size=size, route=route, steps=steps, warmup=warmup,
                       device=device, threads=max(1, cores // n) if device != "cuda" else 1,
                       startup_s=45 + 10 * n)
    return {"model": model, "route": route, "nominal_atoms": size, "n_atoms": len(cell(size)),
            "one_at_a_time": one, "concurrent": many,
            "throughput_ratio": many["atom_steps_per_s"] / one["atom_steps_per_s"],
            "goal": ">= 3x on one GPU"}


# -- report -------------------------------------------------------------------------------------
def device_info(device: str) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"kind": device, "cpu": cpu, "cpu_cores": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["name"] = f"GPU {info['gpu']}"
    else:
        info["name"] = f"CPU {cpu} ({os.cpu_count()} cores, shared)"
    return info


def add_ratios(entries: list[dict[str, Any]]) -> None:
    by_key = {(e["model"], e["nominal_atoms"], e["method"]): e for e in entries
              if e["status"] == "ok"}
    for e in entries:
        if e["status"] != "ok":
            continue
        ase = by_key.get((e["model"], e["nominal_atoms"], "ase"))
        bare = by_key.get((e["model"], e["nominal_atoms"], "bare"))
        if ase:
            e["speedup_vs_ase"] = ase["ms_per_step"] / e["ms_per_step"]
        if bare:
            e["cost_vs_bare"] = e["ms_per_step"] / bare["ms_per_step"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mace-tiny", "sevennet-0"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 500, 2000, 10000],
                        choices=sorted(SUPERCELLS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (per measurement)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps first (TorchScript specialises on early calls)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed windows per measurement; ms/step is their median")
    parser.add_argument("--sevennet-steps", type=int, default=None,
                        help="timed steps for SevenNet (slower); default --steps")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--max-atoms-cpu", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=0,
                        help="also time N concurrent smallest cells vs one at a time")
    parser.add_argument("--concurrent-steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    # worker mode (used by --concurrent)
    parser.add_argument("--worker-json", help=argparse.SUPPRESS)
    parser.add_argument("--route", default="native", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    if args.worker_json:
        args.model, args.size = args.models[0], args.sizes[0]
        worker_main(args)
        return 0

    from harness.md.rundir import git_sha, package_versions

    report: dict[str, Any] = {
        "benchmark": "md_throughput", "started": datetime.now(timezone.utc).isoformat(),
        "device": device_info(device), "host": platform.node(), "git_sha": git_sha(),
        "versions": package_versions(),
        "settings": {"structure": "Li6PS5Cl (bundled) supercells, rattled 0.05 A",
                     "ensemble": "NVE velocity Verlet", "timestep_fs": TIMESTEP_FS,
                     "temperature_K": TEMPERATURE_K, "steps": args.steps,
                     "warmup": args.warmup, "repeats": args.repeats,
                     "neighbor_skin_A": 1.0, "mpi_ranks": 1},
        "results": [],
    }
    out = args.out
    with tempfile.TemporaryDirectory(prefix="md-throughput-") as tmp:
        for model in args.models:
            steps = args.sevennet_steps if (model.startswith("sevennet")
                                            and args.sevennet_steps) else args.steps
            for nominal in args.sizes:
                for method in args.methods:
                    skip = None
                    if device == "cpu" and len(cell(nominal)) > args.max_atoms_cpu:
                        skip = (f"GPU-only: {len(cell(nominal))} atoms exceed --max-atoms-cpu "
                                f"{args.max_atoms_cpu} on CPU")
                    if skip:
                        entry = {"model": model, "method": method, "nominal_atoms": nominal,
                                 "status": "skipped", "reason": skip}
                    else:
                        print(f"{model} {nominal} {method} ...", file=sys.stderr, flush=True)
                        try:
                            entry = measure(model, nominal, method, steps=steps,
                                            warmup=args.warmup, device=device,
                                            workdir=Path(tmp) / f"{model}-{nominal}-{method}",
                                            repeats=args.repeats)
                        except Exception as exc:  # recorded, the benchmark goes on
                            entry = {"model": model, "method": method, "nominal_atoms": nominal,
                                     "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                        print(f"  {entry.get('ms_per_step', entry.get('reason'))}",
                              file=sys.stderr, flush=True)
                    report["results"].append(entry)
                    add_ratios(report["results"])
                    if out:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps(report, indent=1) + "\n")
    if args.concurrent > 1:
        report["concurrency"] = []
        for model in args.models:
            print(f"{model} concurrency x{args.concurrent} ...", file=sys.stderr, flush=True)
            failures = []
            for route in ("native", "external"):  # external when the plugin is unavailable
                try:
                    report["concurrency"].append(concurrency(
                        args.concurrent, model=model, size=min(args.sizes),
                        steps=args.concurrent_steps, warmup=args.warmup, device=device,
                        route=route))
                    break
                except Exception as exc:
                    failures.append(f"{route}: {type(exc).__name__}: {exc}")
            else:
                report["concurrency"].append({"model": model, "status": "failed",
                                              "reason": "; ".join(failures)})
    report["finished"] = datetime.now(timezone.utc).isoformat()
    text = json.dumps(report, indent=1) + "\n"
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
