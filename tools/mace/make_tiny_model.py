"""Build the tiny Li-P-S-Cl MACE test model and its reference values (run once, offline).

The model is a *test fixture*, not a potential for science: a few thousand parameters
fitted in seconds to SevenNet-0 labels on 30 small rattled and strained cells. What the
tests need from it is a real MACE architecture (equivariant messages, several species,
periodic images) whose numbers are fixed and reproducible.

Steps (``tools/mace/make_tiny_model.sh`` runs them in order, each in the right venv):

``frames``     main venv (SevenNet): write rattled Li-P-S-Cl frames with SevenNet-0
               energy/forces/stress labels as extended XYZ.
``train``      mace-torch venv: ``mace_run_train`` (command recorded in the provenance).
``reference``  mace-torch venv: evaluate the trained ``.model`` with mace-torch's own
               ``MACECalculator`` on three fixed rattled cells; write the cells and the
               values as JSON, so the main venv can check our TorchScript evaluator against
               mace-torch without importing it.
``provenance`` either venv: write ``potentials/data/mace-tiny-LiPSCl.json``.

Only numpy, ase and (per step) sevenn or mace are imported, inside the step functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "potentials" / "data"
MODEL_STEM = "mace-tiny-LiPSCl"
REFERENCE_JSON = REPO / "tests" / "data" / "mace-tiny-reference.json"
SEED = 20250722

#: hyper-parameters of the tiny model (float64 so the TorchScript export is double precision)
TRAIN_ARGS = {
    "model": "MACE",
    "num_channels": "8",
    "max_L": "1",
    "max_ell": "2",
    "correlation": "2",
    "num_interactions": "2",
    "num_radial_basis": "6",
    "r_max": "4.5",
    "E0s": "average",
    "loss": "stress",
    "energy_weight": "1.0",
    "forces_weight": "10.0",
    "stress_weight": "10.0",
    "energy_key": "REF_energy",
    "forces_key": "REF_forces",
    "stress_key": "REF_stress",
    "valid_fraction": "0.1",
    "batch_size": "4",
    "valid_batch_size": "4",
    "max_num_epochs": "30",
    "lr": "0.01",
    "default_dtype": "float64",
    "device": "cpu",
    "seed": "7",
    "num_workers": "0",
}


# --- structures -------------------------------------------------------------------------
def prototype_li7s3cl():
    """Antifluorite Li2S (a = 5.71 A) with one S -> Cl and one Li vacancy: Li7S3Cl, 11 atoms."""
    from ase.spacegroup import crystal

    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71, 5.71, 5.71, 90, 90, 90])
    symbols = atoms.get_chemical_symbols()
    symbols[symbols.index("S")] = "Cl"
    atoms.set_chemical_symbols(symbols)
    del atoms[[a.index for a in atoms if a.symbol == "Li"][0]]
    return atoms


def prototype_licl():
    """Rock-salt LiCl (a = 5.13 A), 8 atoms."""
    from ase.build import bulk

    return bulk("LiCl", "rocksalt", a=5.13, cubic=True)


def prototype_li3ps4():
    """Two PS4 tetrahedra (P-S 2.05 A) on a bcc lattice plus six Li: Li6P2S8, a = 6.7 A."""
    import numpy as np
    from ase import Atoms

    a = 6.7
    tetra = 2.05 / np.sqrt(3) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    positions, symbols = [], []
    for centre in (np.zeros(3), np.full(3, a / 2)):
        positions += [centre, *(centre + tetra)]
        symbols += ["P", "S", "S", "S", "S"]
    for frac in ((0.5, 0, 0), (0, 0.5, 0), (0, 0, 0.5), (0, 0.5, 0.5), (0.5, 0, 0.5),
                 (0.5, 0.5, 0)):
        positions.append(np.array(frac) * a)
        symbols.append("Li")
    return Atoms(symbols=symbols, positions=positions, cell=[a, a, a], pbc=True)


def strained(atoms, rng, *, max_strain: float):
    """A copy with a random symmetric strain (|e_ij| <= max_strain), atoms scaled along."""
    import numpy as np

    e = rng.uniform(-max_strain, max_strain, size=(3, 3))
    e = 0.5 * (e + e.T)
    out = atoms.copy()
    out.set_cell(out.cell.array @ (np.eye(3) + e), scale_atoms=True)
    return out


def training_frames(*, n_per_prototype: int = 10):
    import numpy as np

    rng = np.random.default_rng(SEED)
    frames = []
    for proto in (prototype_li7s3cl, prototype_licl, prototype_li3ps4):
        for k in range(n_per_prototype):
            atoms = strained(proto(), rng, max_strain=0.04)
            atoms.positions += rng.normal(scale=0.04 + 0.1 * k / n_per_prototype,
                                          size=atoms.positions.shape)
            atoms.wrap()
            atoms.info["config_type"] = proto.__name__.removeprefix("prototype_")
            frames.append(atoms)
    return frames


def reference_cells():
    """Three fixed cells for evaluator checks: triclinic, a supercell, a small cubic one."""
    import numpy as np

    rng = np.random.default_rng(SEED + 1)
    a = prototype_li7s3cl()
    cell = a.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 1] -= 0.3
    a.set_cell(cell, scale_atoms=True)
    b = prototype_li3ps4().repeat((2, 1, 1))
    c = strained(prototype_licl(), rng, max_strain=0.03)
    cells = {"li7s3cl_triclinic": a, "li6p2s8_2x1x1": b, "licl_strained": c}
    for atoms in cells.values():
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    return cells


# --- steps -------------------------------------------------------------------------------
def step_frames(args) -> None:
    """Label the training frames with SevenNet-0 (main venv)."""
    import numpy as np
    from ase.io import write
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator("7net-0", device="cpu")
    frames = training_frames()
    for atoms in frames:
        atoms.calc = calc
        atoms.info["REF_energy"] = float(atoms.get_potential_energy())
        atoms.arrays["REF_forces"] = np.asarray(atoms.get_forces(), dtype=float)
        atoms.info["REF_stress"] = np.asarray(atoms.get_stress(voigt=True), dtype=float)
        atoms.calc = None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write(args.out, frames, format="extxyz")
    print(f"wrote {len(frames)} frames to {args.out}")


def train_command(*, train_file: Path, work_dir: Path, name: str) -> list[str]:
    exe = Path(sys.executable).with_name("mace_run_train")
    cmd = [str(exe), f"--name={name}", f"--train_file={train_file}", f"--work_dir={work_dir}"]
    cmd += [f"--{key}={value}" for key, value in TRAIN_ARGS.items()]
    return cmd


def step_train(args) -> None:
    """Run mace_run_train (mace-torch venv)."""
    work = Path(args.work_dir)
    cmd = train_command(train_file=Path(args.frames), work_dir=work, name=MODEL_STEM)
    print(shlex.join(cmd))
    subprocess.run(cmd, check=True, timeout=1800)
    model = work / f"{MODEL_STEM}.model"
    if not model.is_file():
        raise SystemExit(f"mace_run_train did not write {model}")
    (work / "train_command.txt").write_text(shlex.join(cmd) + "\n")


def step_reference(args) -> None:
    """mace-torch's own MACECalculator on the fixed cells (mace-torch venv)."""
    import numpy as np
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=args.model, device="cpu", default_dtype="float64")
    out = {"model": Path(args.model).name, "mace_torch_version": _version("mace-torch"),
           "units": {"energy": "eV", "forces": "eV/A", "stress": "eV/A^3 (ASE sign, Voigt "
                     "xx yy zz yz xz xy)"}, "cells": {}}
    for name, atoms in reference_cells().items():
        atoms.calc = calc
        out["cells"][name] = {
            "numbers": atoms.numbers.tolist(),
            "cell": atoms.cell.array.tolist(),
            "positions": atoms.positions.tolist(),
            "energy": float(atoms.get_potential_energy()),
            "forces": np.asarray(atoms.get_forces()).tolist(),
            "stress": np.asarray(atoms.get_stress(voigt=True)).tolist(),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


def step_provenance(args) -> None:
    """Describe the committed files (either venv)."""
    work = Path(args.work_dir)
    exported = DATA / f"{MODEL_STEM}-lammps.pt"
    frames = Path(args.frames)
    info = {
        "description": "Tiny MACE test fixture for Li-P-S-Cl; NOT a physical potential. "
                       "Fitted to SevenNet-0 labels on 30 rattled/strained 8-16 atom cells.",
        "elements": ["Li", "P", "S", "Cl"],
        "r_max_A": float(TRAIN_ARGS["r_max"]),
        "default_dtype": TRAIN_ARGS["default_dtype"],
        "hyperparameters": TRAIN_ARGS,
        "mace_torch_version": args.mace_version,
        "torch_version": args.torch_version,
        "e3nn_version": args.e3nn_version,
        "labels": "SevenNet-0 (sevenn 0.13.0, checkpoint 7net-0) energies, forces, stress",
        "training_frames": {"count": sum(1 for line in frames.read_text().splitlines()
                                         if line.strip().isdigit()),
                            "sha256": _sha256(frames), "seed": SEED,
                            "generator": "tools/mace/make_tiny_model.py frames"},
        "train_command": (work / "train_command.txt").read_text().strip()
                         .replace(f"{REPO}/", ""),
        "export_command": "harness.export.export_mace(model=..., out=...) "
                          "(LAMMPS_MACE wrapper + e3nn jit.compile, float64)",
        "files": {exported.name: {"sha256": _sha256(exported),
                                  "bytes": exported.stat().st_size}},
        "reference_values": str(REFERENCE_JSON.relative_to(REPO)),
        "rebuild": "bash tools/mace/make_tiny_model.sh",
    }
    model = DATA / f"{MODEL_STEM}.model"
    if model.is_file():
        info["files"][model.name] = {"sha256": _sha256(model), "bytes": model.stat().st_size}
    target = DATA / f"{MODEL_STEM}.json"
    if target.is_file():  # the export's own sidecar (harness.export): keep it, nested
        previous = json.loads(target.read_text())
        info["export"] = previous.get("export", previous)
    target.write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {target}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("frames")
    p.add_argument("--out", required=True)
    p.set_defaults(func=step_frames)
    p = sub.add_parser("train")
    p.add_argument("--frames", required=True)
    p.add_argument("--work-dir", required=True)
    p.set_defaults(func=step_train)
    p = sub.add_parser("reference")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default=str(REFERENCE_JSON))
    p.set_defaults(func=step_reference)
    p = sub.add_parser("provenance")
    p.add_argument("--frames", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--mace-version", required=True)
    p.add_argument("--torch-version", required=True)
    p.add_argument("--e3nn-version", required=True)
    p.set_defaults(func=step_provenance)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
