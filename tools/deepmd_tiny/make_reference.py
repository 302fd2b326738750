"""Reference values of the tiny DeePMD model from deepmd-kit's own ASE calculator.

Writes ``tests/data/deepmd-tiny-reference.json``: energy, forces and stress of
``deepmd.calculator.DP`` on three rattled/strained/sheared Li-S cells, which
``tests/test_campaign_deepmd.py`` compares with the harness' deepmd-kit-free evaluator
(``potentials.deepmd.DeePMDTorchScriptCalculator``).

Needs deepmd-kit importable with the PyTorch backend. Under the project's torch 2.13 the
3.2.0 wheel's op library does not load, so (as for training the model, see README.md) use
a scratch copy of the wheel without ``deepmd/lib/libdeepmd_op_pt.so`` (deepmd.pt then runs
in pure PyTorch):

    pip install --target /tmp/dptarget --no-deps deepmd-kit==3.2.0 dargs wcmatch bracex \\
        h5py ml_dtypes array-api-compat lmdb msgpack einops mendeleev sqlalchemy pint \\
        flexcache flexparser platformdirs pyfiglet colorama deprecation greenlet
    rm /tmp/dptarget/deepmd/lib/libdeepmd_op_pt.so
    PYTHONPATH=/tmp/dptarget python tools/deepmd_tiny/make_reference.py
"""
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.structures import load_structure  # noqa: E402

MODEL = REPO / "potentials" / "data" / "deepmd-tiny-LiS.pth"
OUT = REPO / "tests" / "data" / "deepmd-tiny-reference.json"


def cells():
    base = load_structure("Li2S")  # 12-atom conventional antifluorite cell
    a = base.repeat((2, 1, 1))
    a.rattle(0.08, seed=1)
    b = base.copy()
    b.set_cell(b.cell.array @ np.array([[1.03, 0.0, 0.0], [0.06, 0.98, 0.0],
                                        [-0.04, 0.05, 1.01]]), scale_atoms=True)
    b.rattle(0.1, seed=2)
    c = base.repeat((1, 2, 1))
    c.set_cell(c.cell.array * 0.97, scale_atoms=True)
    c.rattle(0.12, seed=3)
    return {"li2s_2x1x1_rattled": a, "li2s_sheared_triclinic": b, "li2s_1x2x1_compressed": c}


def main():
    from deepmd.calculator import DP

    calc = DP(str(MODEL))
    out = {"model": MODEL.name, "deepmd_kit_version": version("deepmd-kit"),
           "torch_version": version("torch"),
           "units": {"energy": "eV", "forces": "eV/A",
                     "stress": "eV/A^3 (ASE sign, Voigt xx yy zz yz xz xy)"},
           "cells": {}}
    for name, atoms in cells().items():
        atoms.calc = calc
        out["cells"][name] = {
            "numbers": atoms.numbers.tolist(), "cell": atoms.cell.array.tolist(),
            "positions": atoms.positions.tolist(),
            "energy": float(atoms.get_potential_energy()),
            "forces": atoms.get_forces().tolist(),
            "stress": atoms.get_stress(voigt=True).tolist(),
        }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
