"""Health checks while MD runs; a failure stops the run early with a recorded kind.

The watchdog runs inside the harness' no-force ``fix external`` callback every
``check_every`` steps (a multiple of the thermo interval, so the potential energy is tallied
on those steps). On a failure it sets the LAMMPS internal variable ``h_abort`` to 1;
``fix harness_halt ... halt 1 v_h_abort > 0.5 error soft`` then ends the current ``run`` at
that step, the harness stops issuing further commands, keeps every file written so far and
records the failure kind in the manifest.

Failure kinds (counted per kind in campaigns, as seed 003 does):

* ``nan`` - non-finite positions, velocities, forces or energy;
* ``temperature_runaway`` - instantaneous temperature above ``max_temperature_factor`` x target;
* ``atoms_too_close`` - two atoms closer than ``min_distance_A`` (a collapse/fusion);
* ``energy_drift`` - |E_total(t) - E_total(0)| per atom above the bound (NVE runs only);
* ``framework_melting`` - mean-square displacement of the framework (non-mobile) atoms from
  the start of the segment above ``framework_msd_A2`` (melting or amorphisation);
* ``lost_atoms`` and other LAMMPS errors - raised by LAMMPS itself, classified from its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ABORT_VARIABLE = "h_abort"
MOBILE_SPECIES = ("Li", "Na", "K", "Rb", "Cs", "Mg", "Ag", "Cu")


@dataclass(frozen=True)
class WatchdogLimits:
    max_temperature_factor: float = 3.0
    min_distance_A: float = 0.5
    max_energy_drift_eV_per_atom: float = 0.05
    framework_msd_A2: float = 4.0
    check_nve_drift: bool = False


@dataclass
class Failure:
    kind: str
    step: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "detail": self.detail}


def classify_lammps_error(message: str) -> str:
    text = message.lower()
    if "lost atoms" in text:
        return "lost_atoms"
    if "nan" in text or "inf" in text.split():
        return "nan"
    if "out of range atoms" in text or "bond atoms missing" in text:
        return "lost_atoms"
    if "cuda out of memory" in text or "out of memory" in text:
        return "out_of_memory"
    return "lammps_error"


def mobile_species(type_elements: list[str]) -> set[str]:
    return {el for el in type_elements if el in MOBILE_SPECIES[:5]} or \
        {el for el in type_elements if el in MOBILE_SPECIES}


class Watchdog:
    def __init__(self, *, lmp: Any, comm: Any, type_elements: list[str], target_temperature_K: float,
                 limits: WatchdogLimits) -> None:
        self.lmp = lmp
        self.comm = comm
        self.type_elements = list(type_elements)
        self.target_temperature_K = target_temperature_K
        self.limits = limits
        mobile = mobile_species(self.type_elements)
        self.framework_types = np.array(
            [i + 1 for i, el in enumerate(self.type_elements) if el not in mobile], dtype=int)
        self.failure: Failure | None = None
        self._reference: np.ndarray | None = None
        self._e0_per_atom: float | None = None
        self.checks = 0

    # -- helpers --------------------------------------------------------------------------
    def _sum(self, value: float) -> float:
        return self.comm.allreduce(value) if self.comm is not None else value

    def _max(self, value: float) -> float:
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX) if self.comm is not None else value

    def _unwrapped(self, nlocal: int) -> tuple[np.ndarray, np.ndarray]:
        lmp = self.lmp
        x = np.asarray(lmp.numpy.extract_atom("x"))[:nlocal]
        image = np.asarray(lmp.numpy.extract_atom("image"))[:nlocal].astype(np.int64)
        # LAMMPS packs image flags in 10-bit fields (IMGBITS=10, IMGMAX=512) by default
        ix = (image & 1023) - 512
        iy = ((image >> 10) & 1023) - 512
        iz = (image >> 20) - 512
        boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
        h = np.array([[boxhi[0] - boxlo[0], 0, 0], [xy, boxhi[1] - boxlo[1], 0],
                      [xz, yz, boxhi[2] - boxlo[2]]])
        shifts = np.stack([ix, iy, iz], axis=1) @ h
        tags = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal].astype(np.int64)
        return tags, x + shifts

    # -- the check --------------------------------------------------------------------------
    def check(self, step: int, nlocal: int) -> Failure | None:
        if self.failure is not None:
            return self.failure
        self.checks += 1
        failure = (self._check_finite(step, nlocal) or self._check_temperature(step)
                   or self._check_drift(step) or self._check_framework(step, nlocal)
                   or self._check_distances(step, nlocal))
        if failure is not None:
            self.failure = failure
            self.lmp.set_internal_variable(ABORT_VARIABLE, 1.0)
        return failure

    def _check_finite(self, step: int, nlocal: int) -> Failure | None:
        bad = 0.0
        for name in ("x", "v", "f"):
            arr = np.asarray(self.lmp.numpy.extract_atom(name))[:nlocal]
            bad += float(np.count_nonzero(~np.isfinite(arr)))
        if self._sum(bad) > 0:
            return Failure("nan", step, "non-finite positions, velocities or forces")
        return None

    def _check_temperature(self, step: int) -> Failure | None:
        temperature = float(self.lmp.get_thermo("temp"))
        if not np.isfinite(temperature):
            return Failure("nan", step, "non-finite temperature")
        bound = self.limits.max_temperature_factor * self.target_temperature_K
        if temperature > bound:
            return Failure("temperature_runaway", step,
                           f"T = {temperature:.0f} K exceeds {bound:.0f} K "
                           f"({self.limits.max_temperature_factor:g} x target)")
        return None

    def _check_drift(self, step: int) -> Failure | None:
        if not self.limits.check_nve_drift:
            return None
        try:
            etotal = float(self.lmp.get_thermo("etotal"))
        except Exception:  # energy not tallied on this step
            return None
        natoms = float(self.lmp.get_natoms())
        if not np.isfinite(etotal):
            return Failure("nan", step, "non-finite total energy")
        if self._e0_per_atom is None:
            self._e0_per_atom = etotal / natoms
            return None
        drift = abs(etotal / natoms - self._e0_per_atom)
        if drift > self.limits.max_energy_drift_eV_per_atom:
            return Failure("energy_drift", step,
                           f"|dE| = {drift:.3g} eV/atom in NVE exceeds "
                           f"{self.limits.max_energy_drift_eV_per_atom:g}")
        return None

    def _check_framework(self, step: int, nlocal: int) -> Failure | None:
        if self.framework_types.size == 0:
            return None
        tags, unwrapped = self._unwrapped(nlocal)
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:nlocal]
        mask = np.isin(types, self.framework_types)
        if self._reference is None:
            # every rank keeps the reference of all framework atoms, indexed by tag
            parts = [(tags[mask], unwrapped[mask])]
            if self.comm is not None and self.comm.Get_size() > 1:
                parts = self.comm.allgather(parts[0])
            ref = np.full((int(self.lmp.get_natoms()) + 1, 3), np.nan)
            for part_tags, part_x in parts:
                ref[part_tags] = part_x
            self._reference = ref
            return None
        disp = unwrapped[mask] - self._reference[tags[mask]]
        total = self._sum(float(np.nansum(disp ** 2)))
        count = self._sum(float(mask.sum()))
        msd = total / count if count else 0.0
        if msd > self.limits.framework_msd_A2:
            return Failure("framework_melting", step,
                           f"framework MSD {msd:.2f} A^2 exceeds {self.limits.framework_msd_A2:g} "
                           "A^2 (melting or amorphisation)")
        return None

    def _check_distances(self, step: int, nlocal: int) -> Failure | None:
        """Closest pair from LAMMPS' own neighbour list data: x of local + ghost atoms."""
        floor = self.limits.min_distance_A
        if floor <= 0:
            return None
        lmp = self.lmp
        nghost = lmp.extract_global("nghost")
        x = np.asarray(lmp.numpy.extract_atom("x"))[: nlocal + nghost]
        local = x[:nlocal]
        from scipy.spatial import cKDTree

        tree = cKDTree(x)
        pairs = tree.query_ball_point(local, r=floor)
        close = [(i, j) for i, js in enumerate(pairs) for j in js if j != i]
        n_close = self._sum(float(len(close)))
        if n_close > 0:
            detail = "atoms closer than {:.2f} A".format(floor)
            if close:
                i, j = close[0]
                detail += f" (distance {np.linalg.norm(x[i] - x[j]):.3f} A)"
            return Failure("atoms_too_close", step, detail)
        return None
