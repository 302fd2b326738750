"""uMLIP forces on snap-li3n MD frames: a cheap static comparison with the reference potential.

    python benchmarks/results/li3n-snap-arrhenius/force_parity.py RUN_DIR [N_FRAMES]

RUN_DIR is a `harness md` run with snap-li3n (e.g. the 1000 K task of the Li3N study). For N
evenly spaced frames of its dump, the forces of snap-li3n (its LAMMPS route, via the harness'
single-point code) are compared with SevenNet-0 and CHGNet (their ASE calculators): force MAE and
RMSE over all atoms and components, per species, and the spread of the energy difference between
frames (the absolute energies have different references). Writes force_parity.json here.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(run_dir: str, n_frames: int = 6) -> None:
    from ase.io import read

    from harness.statics.crosscheck import lammps_single_point
    from potentials.registry import get_potential

    run = Path(run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    type_map = manifest["type_map"]
    frames = read(run / "traj.lammpstrj", index=":", format="lammps-dump-text")
    picks = np.linspace(len(frames) // 4, len(frames) - 1, n_frames).astype(int)
    snap = get_potential("snap-li3n")
    models = {name: get_potential(name).ase_calculator() for name in ("sevennet-0", "chgnet")}
    ref_f, ref_e, out_f, out_e, symbols = [], [], {m: [] for m in models}, {m: [] for m in models}, None
    seconds = {m: 0.0 for m in models}
    for k in picks:
        atoms = frames[k]
        atoms.set_chemical_symbols([type_map[str(t)] for t in atoms.get_array("type")])
        atoms.pbc = True
        with tempfile.TemporaryDirectory() as tmp:
            sp, frame = lammps_single_point(snap, atoms, workdir=tmp)
        symbols = frame.get_chemical_symbols()
        ref_f.append(sp.forces_eV_per_A)
        ref_e.append(sp.energy_eV / len(frame))
        for name, calc in models.items():
            a = frame.copy()
            a.calc = calc
            t0 = time.perf_counter()
            out_e[name].append(a.get_potential_energy() / len(a))
            out_f[name].append(np.asarray(a.get_forces()))
            seconds[name] += time.perf_counter() - t0
    ref_f = np.array(ref_f)
    sym = np.array(symbols)
    result = {"run_dir": str(run), "temperature_K": manifest["spec"]["temperature_K"],
              "n_atoms": len(symbols), "frames": picks.tolist(),
              "reference": "snap-li3n (LAMMPS)", "models": {}}
    for name in models:
        f = np.array(out_f[name])
        d = f - ref_f
        de = np.array(out_e[name]) - np.array(ref_e)
        result["models"][name] = {
            "force_MAE_eV_per_A": float(np.abs(d).mean()),
            "force_RMSE_eV_per_A": float(np.sqrt((d ** 2).mean())),
            "force_MAE_by_species_eV_per_A": {s: float(np.abs(d[:, sym == s]).mean())
                                               for s in sorted(set(symbols))},
            "reference_force_RMS_eV_per_A": float(np.sqrt((ref_f ** 2).mean())),
            "energy_offset_mean_eV_per_atom": float(de.mean()),
            "energy_offset_std_eV_per_atom": float(de.std(ddof=1)) if len(de) > 1 else None,
            "seconds_per_frame": seconds[name] / len(picks),
        }
    (HERE / "force_parity.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6)
