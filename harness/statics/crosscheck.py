"""Single-point LAMMPS evaluation of any adapter, for LAMMPS-vs-ASE agreement checks.

``lammps_single_point`` writes the cell as a LAMMPS data file, sets the adapter's
potential lines, runs ``run 0`` and reads back energy, per-atom forces (ordered like the
input atoms) and the virial stress. ``compare_with_ase`` evaluates the adapter's ASE
calculator on the very same (LAMMPS-frame) cell and reports the largest differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


# The command sequence shared by every single point; the potential block goes in between.
_HEADER = ("units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
           "boundary p p p")


@dataclass
class SinglePoint:
    energy_eV: float
    forces_eV_per_A: np.ndarray
    stress_eV_per_A3: np.ndarray  # Voigt xx yy zz yz xz xy, ASE sign convention

    def max_differences(self, other: "SinglePoint", *, n_atoms: int) -> dict[str, float]:
        return {
            "energy_per_atom_eV": abs(self.energy_eV - other.energy_eV) / n_atoms,
            "force_max_eV_per_A": float(np.abs(self.forces_eV_per_A - other.forces_eV_per_A).max()),
            "stress_max_eV_per_A3": float(
                np.abs(self.stress_eV_per_A3 - other.stress_eV_per_A3).max()),
        }


def lammps_frame_atoms(atoms: Any, *, workdir: Path) -> tuple[Any, list[str], Path]:
    """Write ``atoms`` as a data file; return the cell as LAMMPS sees it, type map, path."""
    from ase.io import read

    from harness.structures import write_lammps_data

    data_file = workdir / "single_point.data"
    type_elements = write_lammps_data(atoms, data_file)
    frame = read(data_file, format="lammps-data", atom_style="atomic", parallel=False)
    symbols = [type_elements[t - 1] for t in frame.get_array("type")]
    frame.set_chemical_symbols(symbols)
    frame.pbc = True
    return frame, type_elements, data_file


def lammps_single_point(potential: Any, atoms: Any, *, workdir: str | Path,
                        comm: Any = None) -> tuple[SinglePoint, Any]:
    """``run 0`` with ``potential``; returns the result and the LAMMPS-frame Atoms."""
    from harness.md.engine import LammpsEngine

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    frame, type_elements, data_file = lammps_frame_atoms(atoms, workdir=workdir)
    potential.check_elements(frame.get_chemical_symbols())
    with LammpsEngine(log_file=workdir / "log.single_point.lammps", comm=comm) as engine:
        setup = potential.lammps_setup(type_elements=type_elements, workdir=workdir,
                                       nranks=engine.nprocs)
        engine.commands(_HEADER)
        engine.command(f"read_data {data_file}")
        if setup.type_charges:  # as templates/md.lammps.j2 does
            engine.command("fix harness_q all property/atom q ghost yes")
            engine.commands([f"set type {t} charge {q!r}"
                             for t, q in enumerate(setup.type_charges, start=1)])
        engine.run_potential_block(setup.lines, required_styles=setup.required_styles,
                                   fix_it=setup.fix_it)
        if setup.kspace:
            engine.command(f"kspace_style {setup.kspace[0]} {setup.kspace[1]!r}")
        potential.attach(engine.lmp, setup=setup, type_elements=type_elements,
                         comm=engine.comm)
        engine.commands([
            "compute harness_pvir all pressure NULL virial",
            "thermo_style custom step pe c_harness_pvir[*]",
            "run 0",
        ])
        energy = engine.thermo("pe")
        p = [engine.lmp.extract_compute("harness_pvir", 0, 1)[k] for k in range(6)]
        forces = _gather_forces(engine, len(frame))
        # LAMMPS' own eV/A^3 -> bar factor (metal units), so the round trip is exact
        bar_per_eV_per_A3 = float(engine.lmp.extract_global("nktv2p"))
    pxx, pyy, pzz, pxy, pxz, pyz = p
    stress = -np.array([pxx, pyy, pzz, pyz, pxz, pxy]) / bar_per_eV_per_A3
    return SinglePoint(energy_eV=energy, forces_eV_per_A=forces, stress_eV_per_A3=stress), frame


def _gather_forces(engine: Any, n_atoms: int) -> np.ndarray:
    """Forces of all atoms ordered by atom ID (= input order), on every rank."""
    lmp = engine.lmp
    nlocal = lmp.extract_global("nlocal")
    tags = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal].astype(np.int64)
    f = np.asarray(lmp.numpy.extract_atom("f"))[:nlocal].copy()
    if engine.nprocs > 1:
        parts = engine.comm.allgather((tags, f))
        tags = np.concatenate([t for t, _ in parts])
        f = np.concatenate([x for _, x in parts])
    out = np.zeros((n_atoms, 3))
    out[tags - 1] = f
    return out


def ase_single_point(calculator: Any, frame: Any) -> SinglePoint:
    atoms = frame.copy()
    atoms.calc = calculator
    return SinglePoint(
        energy_eV=float(atoms.get_potential_energy()),
        forces_eV_per_A=np.asarray(atoms.get_forces(), dtype=float),
        stress_eV_per_A3=np.asarray(atoms.get_stress(voigt=True), dtype=float),
    )


def compare_with_ase(potential: Any, atoms: Any, *, workdir: str | Path,
                     comm: Any = None) -> dict[str, float]:
    """Largest LAMMPS-vs-ASE differences for ``potential`` on ``atoms``."""
    lmp_result, frame = lammps_single_point(potential, atoms, workdir=workdir, comm=comm)
    ase_result = ase_single_point(potential.ase_calculator(), frame)
    return lmp_result.max_differences(ase_result, n_atoms=len(frame))
