"""Training data for the tiny DeePMD test model, labelled with the lj-test reference
(potentials.classical.PairwiseLJCalculator), on 2x1x1 Li2S cells (24 atoms):

* 150 rattled (0.05-0.25 A) and strained (1 %) copies of the crystal;
* 450 snapshots of lj-test MD at 300, 600 and 1000 K (the configurations MD visits, close
  contacts included, so that the model is stable in short MD runs). Make them first:

      printf "supercell_matrix: [2, 1, 1]\\nwatchdog: false\\n" > /tmp/sc.yaml
      for T in 300 600 1000; do harness md Li2S --potential lj-test --temperature-K $T \\
          --timestep-fs 2 --steps 2000 --dump-every 10 --out /tmp/ljdata/T$T --seed $T \\
          --quiet --config /tmp/sc.yaml; done

Run from this folder: python make_data.py [/tmp/ljdata] (writes data/train, data/valid).
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ase.io import iread  # noqa: E402

from harness.structures import load_structure  # noqa: E402
from potentials.classical import PairwiseLJCalculator  # noqa: E402

MD_DIR = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ljdata")
TYPE_MAP = ["Li", "S"]

rng = np.random.default_rng(0)
frames = []
base = load_structure("Li2S").repeat((2, 1, 1))
for i in range(150):
    a = base.copy()
    a.set_cell(a.cell * (1 + rng.normal(0, 0.01)), scale_atoms=True)
    a.positions += rng.normal(0, rng.uniform(0.05, 0.25), a.positions.shape)
    frames.append(a)
for T in (300, 600, 1000):
    run = MD_DIR / f"T{T}"
    elements = {1: "Li", 2: "S"}  # structure.data types are ordered by atomic number
    snaps = list(iread(run / "traj.lammpstrj", format="lammps-dump-text", index=":"))
    for a in snaps[50::1][:150]:
        a.set_chemical_symbols([elements[int(t)] for t in a.get_atomic_numbers()])
        a.pbc = True
        frames.append(a)

coords, forces, energies, boxes, types = [], [], [], [], []
for a in frames:
    a.calc = PairwiseLJCalculator()
    energies.append(a.get_potential_energy())
    forces.append(a.get_forces().ravel())
    coords.append(a.positions.ravel())
    boxes.append(a.cell.array.ravel())
    types.append([TYPE_MAP.index(s) for s in a.get_chemical_symbols()])
assert all(t == types[0] for t in types), "atom order differs between frames"
order = rng.permutation(len(frames))
n_valid = len(frames) // 10
for name, idx in (("train", order[n_valid:]), ("valid", order[:n_valid])):
    d = f"data/{name}/set.000"
    os.makedirs(d, exist_ok=True)
    np.save(f"{d}/coord.npy", np.array(coords)[idx])
    np.save(f"{d}/force.npy", np.array(forces)[idx])
    np.save(f"{d}/energy.npy", np.array(energies)[idx])
    np.save(f"{d}/box.npy", np.array(boxes)[idx])
    np.savetxt(f"data/{name}/type.raw", types[0], fmt="%d")
    Path(f"data/{name}/type_map.raw").write_text("\n".join(TYPE_MAP) + "\n")
print("frames", len(frames), "train", len(frames) - n_valid, "valid", n_valid)
