"""ms/step of ``pair_style mace`` on Li6PS5Cl supercells: one rank vs N ranks, by graph mode.

    python tools/mace/time_parallel.py --reps 2 3 --steps 20 [--model X-lammps.pt]

For each supercell (``--reps 2`` = 2x2x2 = 416 atoms, 3 = 1,404 atoms) it runs, each in a
fresh ``mpirun`` (OMP_NUM_THREADS=1, torch intra-op threads 1 per rank):

* 1 rank, default mode (``no_domain_decomposition``: the whole model, the serial reference);
* N ranks, ``parallel`` (per-layer split, one-r_max halos);
* N ranks, ``domain_decomposition`` (whole model, num_interactions x r_max halos), unless
  ``--skip-dd`` (it is slow).

NVE at 600 K, 1 fs, neighbour skin 2 A, 3 warm-up steps then ``--steps`` timed. Prints one
JSON line per run (wall ms/step; CPU ms/step of every rank, which on a loaded shared machine
is the better measure of the work; the load average before and after) and the speedups.
Not a test: a measurement for the README and issue 10 (benchmarks/md_scaling.py is the
benchmark proper).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WORKER = r'''
import json, sys, time
from mpi4py import MPI
import torch
torch.set_num_threads(1)
from lammps import lammps
cfg = json.loads(sys.argv[1])
comm = MPI.COMM_WORLD
lmp = lammps(cmdargs=["-log", cfg["log"], "-screen", "none", "-nocite"], comm=comm)
for line in ["units metal", "atom_style atomic", "atom_modify map array", "boundary p p p",
             f"read_data {cfg['data']}", f"plugin load {cfg['plugin']}",
             f"pair_style mace {cfg['style']}".strip(),
             f"pair_coeff * * {cfg['model']} {' '.join(cfg['elements'])}",
             "neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes",
             "velocity all create 600 5 dist gaussian", "timestep 0.001", "fix 1 all nve",
             "thermo 100", "run 3"]:
    lmp.command(line)
comm.Barrier(); t0 = time.perf_counter(); c0 = time.process_time()
lmp.command(f"run {cfg['steps']}")
c1 = time.process_time(); comm.Barrier(); t1 = time.perf_counter()
cpu = comm.gather(1000 * (c1 - c0) / cfg["steps"], root=0)
pe = lmp.get_thermo("pe")
natoms = lmp.get_natoms()
lmp.close()
if comm.Get_rank() == 0:
    print("RESULT " + json.dumps({"ms_per_step": 1000 * (t1 - t0) / cfg["steps"],
                                  "cpu_ms_per_step_per_rank": cpu, "pe_eV": pe,
                                  "n_atoms": natoms}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=str(REPO / "potentials/data/mace-tiny-LiPSCl-lammps.pt"))
    parser.add_argument("--skip-dd", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from harness.statics.crosscheck import lammps_frame_atoms
    from harness.structures import load_structure
    from potentials.mace_layers import cached_layers
    from potentials.plugins import build_plugins, cache_root

    plugin = build_plugins(names=("mace",))["mace"]
    layers = cached_layers(args.model, cache_root())
    mpirun = Path(sys.executable).parent / "mpirun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="mace-par-") as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        for rep in args.reps:
            atoms = load_structure("Li6PS5Cl").repeat((rep, rep, rep))
            _, elements, data = lammps_frame_atoms(atoms, workdir=Path(tmp) / f"c{rep}")
            runs = [(1, "", "whole model, 1 rank"),
                    (args.ranks, f"parallel layers {layers}", "parallel")]
            if not args.skip_dd:
                runs.append((args.ranks, "domain_decomposition", "domain_decomposition"))
            results = {}
            for ranks, style, label in runs:
                cfg = {"plugin": str(plugin), "data": str(data), "model": args.model,
                       "style": style, "elements": elements, "steps": args.steps,
                       "log": str(Path(tmp) / "log.lammps")}
                load0 = os.getloadavg()[0]
                out = subprocess.run([str(mpirun), "-n", str(ranks), sys.executable,
                                      str(script), json.dumps(cfg)], env=env, check=True,
                                     capture_output=True, text=True).stdout
                res = json.loads(next(l for l in out.splitlines()
                                      if l.startswith("RESULT "))[7:])
                res.update(label=label, ranks=ranks, supercell=rep,
                           load_avg_1min=[round(load0, 2), round(os.getloadavg()[0], 2)])
                results[label] = res
                print(json.dumps(res), flush=True)
            base = results["whole model, 1 rank"]
            for label, res in results.items():
                if res["ranks"] > 1:
                    wall = base["ms_per_step"] / res["ms_per_step"]
                    cpu = (base["cpu_ms_per_step_per_rank"][0]
                           / max(res["cpu_ms_per_step_per_rank"]))
                    print(f"{res['n_atoms']} atoms, {label} on {res['ranks']} ranks: speedup "
                          f"wall {wall:.2f}x, CPU {cpu:.2f}x; "
                          f"|dE| {abs(res['pe_eV'] - base['pe_eV']):.1e} eV", flush=True)


if __name__ == "__main__":
    main()
