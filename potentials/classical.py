"""Classical LAMMPS pair styles: cheap references for tests and smoke runs.

``lj-test`` is a shifted, truncated 12-6 Lennard-Jones potential for any elements, with
per-pair parameters derived from covalent radii (sigma_ij = (r_i + r_j) / 2^(1/6), so the
minimum sits at the sum of covalent radii) and a single well depth. It is not a model of
any material; it exists so that the engine, templates, dumps, restarts and analysis can be
exercised in seconds. The same function is implemented twice, as LAMMPS ``lj/cut`` and as
an ASE calculator, and the two are checked against each other like any other adapter.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from potentials.base import LammpsSetup, ModelInfo, Potential, PotentialError
from potentials.external import ExternalModelPotential, external_setup

LJ_EPSILON_eV = 0.05
LJ_CUTOFF_A = 6.0


def lj_parameters(element_a: str, element_b: str) -> tuple[float, float]:
    """(epsilon_eV, sigma_A) for a pair of elements."""
    from ase.data import atomic_numbers, covalent_radii

    r_sum = covalent_radii[atomic_numbers[element_a]] + covalent_radii[atomic_numbers[element_b]]
    return LJ_EPSILON_eV, float(r_sum / 2 ** (1 / 6))


class PairwiseLJCalculator(Calculator):
    """ASE calculator for the mixed-element shifted LJ used by ``lj-test``."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, *, cutoff_A: float = LJ_CUTOFF_A) -> None:
        super().__init__()
        self.cutoff_A = cutoff_A

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from matscipy.neighbours import neighbour_list  # C implementation (ASE's is slow)

        super().calculate(atoms, properties, system_changes)
        symbols = self.atoms.get_chemical_symbols()
        i, j, d, D = neighbour_list("ijdD", self.atoms, self.cutoff_A)  # D = r_j - r_i
        species = sorted(set(symbols))
        index = {s: k for k, s in enumerate(species)}
        eps = np.zeros((len(species), len(species)))
        sig = np.zeros_like(eps)
        for a in species:
            for b in species:
                eps[index[a], index[b]], sig[index[a], index[b]] = lj_parameters(a, b)
        kind = np.array([index[s] for s in symbols])
        e_ij, s_ij = eps[kind[i], kind[j]], sig[kind[i], kind[j]]
        sr6 = (s_ij / d) ** 6
        src6 = (s_ij / self.cutoff_A) ** 6
        pair_e = 4 * e_ij * (sr6 * sr6 - sr6) - 4 * e_ij * (src6 * src6 - src6)
        dedr = 4 * e_ij * (-12 * sr6 * sr6 + 6 * sr6) / d
        pair_f = (dedr / d)[:, None] * D  # force on i from j
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, pair_f)
        # every pair appears as (i, j) and (j, i): halve energy and virial
        virial = -0.5 * np.einsum("ka,kb->ab", D, pair_f)
        stress = -virial / self.atoms.get_volume()
        energy = 0.5 * float(pair_e.sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "stress": stress.flat[[0, 4, 8, 5, 2, 1]],
        }


class ClassicalPotential(ExternalModelPotential, Potential):
    family = "classical"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 kind: str = "lj") -> None:
        super().__init__(name=name)
        if kind != "lj":
            raise PotentialError(f"unknown classical potential kind '{kind}'")
        if route not in ("auto", "native", "external"):
            raise PotentialError(f"route must be auto, native or external, not '{route}'")
        self.route = "native" if route == "auto" else route

    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        if self.route == "external":
            return external_setup()
        lines = [f"pair_style lj/cut {LJ_CUTOFF_A:.3f}", "pair_modify shift yes"]
        for a in range(len(type_elements)):
            for b in range(a, len(type_elements)):
                eps, sig = lj_parameters(type_elements[a], type_elements[b])
                lines.append(f"pair_coeff {a + 1} {b + 1} {eps!r} {sig!r}")
        return LammpsSetup(lines=tuple(lines), required_styles=(("pair", "lj/cut"),))

    def ase_calculator(self):
        return PairwiseLJCalculator()

    def model_info(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family, route=self.route,
                         extra={"epsilon_eV": LJ_EPSILON_eV, "cutoff_A": LJ_CUTOFF_A,
                                "sigma_rule": "(r_cov_i + r_cov_j) / 2^(1/6)"})
