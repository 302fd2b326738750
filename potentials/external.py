"""Generic ASE route: any ASE calculator drives LAMMPS through ``fix external pf/callback``.

LAMMPS keeps integrating, thermostatting, dumping and writing restarts; every step the
callback hands the positions to an ASE calculator and writes back forces, the global
energy and the global virial. Under MPI each rank owns only its local atoms, so the
bridge gathers positions (ordered by atom tag) on rank 0, evaluates once there, scatters
the forces back by tag and broadcasts energy and virial (LAMMPS adds a fix's global
energy once, after the cross-rank sum of the pair energy, so every rank sets the total).

**These models compute on one rank.** Extra ranks add nothing but gathers; while rank 0
evaluates they sleep in :func:`sleeping_barrier` instead of spinning in MPI. ``harness
md`` therefore runs fix-external models on rank 0 alone and gives it all cores
(``harness/md/layout.py``); ``harness bench`` is the way to use many ranks with them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from potentials.base import LammpsSetup

#: fix ID used for the model-evaluating ``fix external``
EXTERNAL_FIX_ID = "harness_ext"


def external_setup(*, fix_it: str = "", neighbor_cutoff_A: float = 2.0) -> LammpsSetup:
    """LAMMPS lines for a model evaluated in Python.

    ``pair_style zero`` gives LAMMPS a (cheap) neighbour list and ghost-atom cutoff; the
    model does its own neighbour search on the gathered periodic cell.
    """
    return LammpsSetup(
        lines=(
            f"pair_style zero {neighbor_cutoff_A:.3f} nocoeff",
            "pair_coeff * *",
            f"fix {EXTERNAL_FIX_ID} all external pf/callback 1 1",
            f"fix_modify {EXTERNAL_FIX_ID} energy yes virial yes",
        ),
        required_styles=(("pair", "zero"), ("fix", "external")),
        external_fix_id=EXTERNAL_FIX_ID,
        route="external",
        fix_it=fix_it,
    )


def sleeping_barrier(comm: Any, *, max_sleep_s: float = 0.05) -> None:
    """A barrier whose waiting ranks sleep instead of spinning.

    MPICH (the ``mpich`` wheel, ch4 device) busy-polls inside blocking calls: a rank
    waiting in ``MPI_Scatter``/``MPI_Bcast`` while rank 0 evaluates a model burns a whole
    core that rank 0's torch threads could use. ``MPI_Ibarrier`` + ``MPI_Test`` with a
    sleep that doubles from 0.1 ms up to ``max_sleep_s`` costs microseconds per poll.
    """
    request = comm.Ibarrier()
    pause = 1e-4
    while not request.Test():
        time.sleep(pause)
        pause = min(max_sleep_s, pause * 2)


def lammps_cell(lmp: Any) -> np.ndarray:
    """Cell vectors (rows) of the current LAMMPS box in the LAMMPS frame."""
    boxlo, boxhi, xy, yz, xz, _periodicity, _box_change = lmp.extract_box()
    lx, ly, lz = (boxhi[i] - boxlo[i] for i in range(3))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]], dtype=float)


def stress_to_lammps_virial(stress_voigt: np.ndarray, volume_A3: float) -> list[float]:
    """ASE stress (eV/A^3, Voigt xx yy zz yz xz xy) -> LAMMPS global virial (eV).

    ASE's stress is dE/d(strain)/V, LAMMPS' virial is sum r.f = -V * stress, and
    LAMMPS orders the off-diagonal terms xy, xz, yz.
    """
    s = np.asarray(stress_voigt, dtype=float)
    xx, yy, zz, yz, xz, xy = s
    return [float(-volume_A3 * v) for v in (xx, yy, zz, xy, xz, yz)]


class AseExternalBridge:
    """Evaluates an ASE calculator for LAMMPS' ``fix external pf/callback``."""

    def __init__(self, *, lmp: Any, calculator: Any, type_elements: list[str], comm: Any,
                 fix_id: str = EXTERNAL_FIX_ID) -> None:
        self.lmp = lmp
        self.calculator = calculator
        self.type_elements = list(type_elements)
        self.comm = comm
        self.fix_id = fix_id
        self.n_calls = 0
        self.last_energy_eV: float | None = None
        #: longest sleep of a waiting rank between polls (bounds the latency it adds)
        self.max_sleep_s = 0.002

    def attach(self) -> None:
        self.lmp.set_fix_external_callback(self.fix_id, self._callback, self)

    # LAMMPS calls this with local atoms only: tag (nlocal,), x (nlocal, 3), f (nlocal, 3)
    def _callback(self, _caller: Any, _ntimestep: int, nlocal: int, tag: np.ndarray,
                  x: np.ndarray, f: np.ndarray) -> None:
        from ase import Atoms

        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:nlocal]
        tags = np.asarray(tag[:nlocal], dtype=np.int64)
        pos = np.asarray(x[:nlocal], dtype=float)
        parallel = self.comm is not None and self.comm.Get_size() > 1
        if parallel:
            gathered = self.comm.gather((tags, types.copy(), pos.copy()), root=0)
        else:
            gathered = [(tags, types, pos)]

        result = None
        if not parallel or self.comm.Get_rank() == 0:
            all_tags = np.concatenate([g[0] for g in gathered])
            order = np.argsort(all_tags)
            all_types = np.concatenate([g[1] for g in gathered])[order]
            all_pos = np.concatenate([g[2] for g in gathered])[order]
            cell = lammps_cell(self.lmp)
            symbols = [self.type_elements[t - 1] for t in all_types]
            atoms = Atoms(symbols=symbols, positions=all_pos, cell=cell, pbc=True)
            atoms.calc = self.calculator
            # stress first: calculators that compute the virial only when asked for it
            # (MaceTorchScriptCalculator) then return energy and forces from the same call
            stress = np.asarray(atoms.get_stress(voigt=True), dtype=float)
            energy = float(atoms.get_potential_energy())
            forces_sorted = np.asarray(atoms.get_forces(), dtype=float)
            virial = stress_to_lammps_virial(stress, abs(np.linalg.det(cell)))
            forces_by_tag = np.zeros((int(all_tags.max()) + 1, 3))
            forces_by_tag[all_tags[order]] = forces_sorted
            result = (energy, virial, forces_by_tag)
        if parallel:
            # the model runs on rank 0 only: the others sleep here rather than spin in
            # the scatter below (MPICH busy-polls); rank 0 arrives last and passes through
            sleeping_barrier(self.comm, max_sleep_s=self.max_sleep_s)
            if self.comm.Get_rank() == 0:
                energy, virial, forces_by_tag = result
                chunks = [forces_by_tag[g[0]] for g in gathered]
            else:
                chunks = None
                energy = virial = None
            local_forces = self.comm.scatter(chunks, root=0)
            energy, virial = self.comm.bcast((energy, virial), root=0)
        else:
            energy, virial, forces_by_tag = result
            local_forces = forces_by_tag[tags]

        f[:nlocal] = local_forces
        self.lmp.fix_external_set_energy_global(self.fix_id, energy)
        self.lmp.fix_external_set_virial_global(self.fix_id, virial)
        self.n_calls += 1
        self.last_energy_eV = energy


class ExternalModelPotential:
    """Mixin for adapters whose model runs in Python through :class:`AseExternalBridge`.

    Subclasses provide ``ase_calculator()``; the calculator is built once per adapter and
    shared by the bridge and by cross-checks.
    """

    _calculator: Any = None

    def shared_calculator(self) -> Any:
        if self._calculator is None:
            self._calculator = self.ase_calculator()
        return self._calculator

    def external_lammps_setup(self, *, fix_it: str = "") -> LammpsSetup:
        return external_setup(fix_it=fix_it)

    def attach(self, lmp: Any, *, setup: LammpsSetup, type_elements: list[str], comm: Any) -> None:
        if setup.external_fix_id is None:
            return
        is_evaluator = comm is None or comm.Get_rank() == 0
        calculator = self.shared_calculator() if is_evaluator else None
        self._bridge = AseExternalBridge(lmp=lmp, calculator=calculator,
                                         type_elements=type_elements, comm=comm,
                                         fix_id=setup.external_fix_id)
        self._bridge.attach()
