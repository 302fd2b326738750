"""An ASE calculator backed by one LAMMPS instance running any registered potential.

Every static property in :mod:`harness.statics` (parity, relaxation, elastic constants,
formation energies, NEB, phonons) is evaluated through :class:`LammpsCalculator`, so the
numbers come from the very pair style (native plugin, ML-IAP or ``fix external``) that
``harness md`` runs: the adapter's ``lammps_setup`` lines and ``attach`` hook are used
unchanged.

One evaluation is a ``run 0`` on the current positions and cell, giving the energy
(thermo ``pe``), the forces (gathered by atom ID, i.e. in the ASE atom order) and the
stress (``compute pressure NULL virial``, converted to ASE's convention: Voigt
``xx yy zz yz xz xy`` in eV/A^3, ``stress = -virial / V``, positive = tensile).

The LAMMPS instance is created on the first call and reused:

* same atoms and types as the last call: ``change_box`` to the new cell and
  ``scatter_atoms`` the new positions (the common case in relaxations, strains and
  finite displacements);
* different atom count or order but only elements already in the type map:
  ``delete_atoms`` + ``create_atoms`` in the same instance (the model stays loaded);
* an element outside the type map: the instance is closed and rebuilt. Pass
  ``type_elements`` with every element of a data set to avoid rebuilds.

Adapters with fixed per-type charges and long-range Coulomb (``LammpsSetup.type_charges``,
``kspace``; e.g. ``snap-li3n``) get ``fix property/atom q``, ``set type N charge q`` after
every (re)population and their ``kspace_style``, as in the MD template.

Frames. LAMMPS wants a cell with ``a`` along x and ``b`` in the xy plane. The ASE cell
``C`` (rows) is mapped there by an orthogonal ``Q`` from a QR decomposition of ``C^T``
(``C Q`` is lower triangular with a positive diagonal); positions go in as ``r Q``,
forces come back as ``f Q^T`` and the stress as ``Q s Q^T``, so callers never see the
LAMMPS frame. For a left-handed ASE cell ``Q`` is improper (a mirror image is evaluated):
the energy, forces and stress of the O(3)-invariant models here (MACE, SevenNet, CHGNet,
DeePMD, pair potentials) are unchanged by it. Tilt factors are reduced by lattice
vectors (the same periodic crystal) so LAMMPS never sees a very skewed box.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase.calculators.calculator import Calculator, CalculatorError, all_changes

#: the property set one ``run 0`` gives
PROPERTIES = ("energy", "free_energy", "forces", "stress")

_HEADER = ("units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
           "boundary p p p")
_BOX_REGION = "harness_box"
_PRESSURE = "harness_pvir"
#: LAMMPS errors after which re-creating the pair style and repeating ``run 0`` is correct:
#: sevenn's ``pair_style e3gnn`` sizes its edge buffer from the first evaluation (x1.2)
#: and refuses a later structure with more edges (a bigger cell, a compressed strain)
_RETRY_AFTER_PAIR_RESET = ("nedges exceeded nedges_upper_bound",)


class NonFiniteResult(CalculatorError):
    """The potential returned NaN or inf (energy, forces or stress): a diverged structure."""


class StructureNotSupported(CalculatorError):
    """The atoms cannot be evaluated as given (not periodic, no atoms, non-finite input)."""


def lammps_frame(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cell_lmp, Q)``: the lower-triangular cell ``cell @ Q`` (positive diagonal) and the
    orthogonal ``Q`` that maps row vectors from the ASE frame to the LAMMPS frame."""
    cell = np.asarray(cell, dtype=float)
    q, r = np.linalg.qr(cell.T)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs  # flip columns
    r = signs[:, None] * r  # flip rows: cell.T = q @ r, diag(r) > 0
    cell_lmp = r.T.copy()
    cell_lmp[np.triu_indices(3, k=1)] = 0.0  # exact zeros above the diagonal
    return cell_lmp, q


def reduce_tilts(cell_lmp: np.ndarray) -> np.ndarray:
    """The same lattice with |xy| <= lx/2, |xz| <= lx/2, |yz| <= ly/2 (lattice-vector sums)."""
    a, b, c = (np.array(v, dtype=float) for v in cell_lmp)
    c = c - np.round(c[1] / b[1]) * b
    c = c - np.round(c[0] / a[0]) * a
    b = b - np.round(b[0] / a[0]) * a
    return np.array([a, b, c])


def wrap_positions(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Positions moved into the cell (fractional coordinates in [0, 1))."""
    frac = positions @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    frac[frac >= 1.0] = 0.0  # -1e-17 + 1 rounds to 1.0
    return frac @ cell


def check_coverage(potential: Any, elements: Sequence[str]) -> None:
    """The potential covers every element (``Potential.check_elements`` takes the symbols of
    one structure and may check more, e.g. charge neutrality)."""
    from potentials.base import PotentialError

    covered = potential.elements
    missing = sorted(set(elements) - set(covered)) if covered is not None else []
    if missing:
        raise PotentialError(f"potential '{potential.name}' does not cover element(s) "
                             f"{', '.join(missing)}; choose a potential trained on them "
                             "(see `harness potentials`)")


class LammpsCalculator(Calculator):
    """ASE calculator: energy, forces and stress from ``run 0`` in a reused LAMMPS instance.

    ``potential`` is an adapter (:class:`potentials.base.Potential`) or a registry name
    (``sevennet-0``, ``mace:/path/model-lammps.pt``, ``chgnet``, ``lj-test`` ...), built
    with ``route`` and ``device``. ``workdir`` receives the LAMMPS log (a temporary
    directory, removed by :meth:`close`, when not given). ``type_elements`` fixes the
    LAMMPS type map (every element that will ever be evaluated); by default it is the
    elements of the first structure, by atomic number. ``comm`` is the MPI communicator the
    instance spans (default ``MPI.COMM_SELF``: every rank of an MPI job evaluates alone);
    with more than one rank every rank must call the calculator with the same atoms.
    """

    implemented_properties = list(PROPERTIES)

    def __init__(self, potential: Any, *, workdir: str | Path | None = None,
                 type_elements: Sequence[str] | None = None, route: str = "auto",
                 device: str = "auto", comm: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(potential, str):
            from potentials.registry import get_potential

            potential = get_potential(potential, route=route, device=device)
        self.potential = potential
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="harness-calc-") if workdir is None
                            else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_types = list(type_elements) if type_elements is not None else None
        if self._fixed_types is not None:
            check_coverage(potential, self._fixed_types)
        self._comm = comm
        self.engine: Any = None
        self.setup: Any = None
        self.type_elements: list[str] = []
        self._types: np.ndarray | None = None
        #: how often the instance was built, re-populated and re-used (for tests and logs)
        self.counts = {"build": 0, "repopulate": 0, "update": 0, "run0": 0}

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> "LammpsCalculator":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the LAMMPS instance (and remove the temporary work directory)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self._types = None
        if self._own_workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            if self.engine is not None:
                self.engine.close()
        except Exception:
            pass

    @property
    def route(self) -> str | None:
        """The route the LAMMPS instance uses (native, mliap, external), once built."""
        return None if self.setup is None else self.setup.route

    @property
    def log_file(self) -> Path:
        return self.workdir / "log.calculator.lammps"

    # -- ASE -------------------------------------------------------------------------------------
    def calculate(self, atoms: Any = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check_input(atoms)
        cell_lmp, q = lammps_frame(atoms.cell.array)
        cell_lmp = reduce_tilts(cell_lmp)
        positions = wrap_positions(atoms.positions @ q, cell_lmp)
        symbols = atoms.get_chemical_symbols()
        self.potential.check_elements(symbols)  # coverage (and e.g. neutrality) per structure
        self._place(symbols, cell_lmp=cell_lmp, positions=positions)
        energy, forces_lmp, stress_lmp = self._run0(len(atoms))
        forces = forces_lmp @ q.T
        stress = q @ stress_lmp @ q.T
        bad = [name for name, value in (("energy", energy), ("forces", forces),
                                         ("stress", stress)) if not np.all(np.isfinite(value))]
        if bad:
            raise NonFiniteResult(
                f"potential '{self.potential.name}' returned non-finite {', '.join(bad)} for "
                f"{atoms.get_chemical_formula()} (diverged or unphysical structure)")
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "stress": stress.flat[[0, 4, 8, 5, 2, 1]].copy(),
        }

    @staticmethod
    def _check_input(atoms: Any) -> None:
        if len(atoms) == 0:
            raise StructureNotSupported("cannot evaluate a structure with no atoms")
        if not all(atoms.pbc):
            raise StructureNotSupported(
                "LammpsCalculator needs a periodic cell in all three directions (pbc=True); "
                "put molecules in a large periodic box")
        if abs(atoms.cell.volume) < 1e-6:
            raise StructureNotSupported("the cell has zero volume; give three lattice vectors")
        if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.cell.array))):
            raise NonFiniteResult("positions or cell contain NaN/inf (a diverged structure)")

    # -- LAMMPS ------------------------------------------------------------------------------------
    def _place(self, symbols: list[str], *, cell_lmp: np.ndarray, positions: np.ndarray) -> None:
        """Put the structure into the instance: update, re-populate or rebuild."""
        species = set(symbols)
        if self.engine is None or not species <= set(self.type_elements):
            self._build(species)
        index = {el: i + 1 for i, el in enumerate(self.type_elements)}
        types = np.array([index[s] for s in symbols], dtype=np.int32)
        self._set_box(cell_lmp)
        if self._types is not None and np.array_equal(types, self._types):
            self._scatter_positions(positions)
            self.counts["update"] += 1
        else:
            self._populate(types, positions)
            self.counts["repopulate"] += 1

    def _build(self, species: set[str]) -> None:
        from ase.data import atomic_masses, atomic_numbers

        from harness.md.engine import LammpsEngine
        from harness.structures import default_specorder

        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self._fixed_types is not None:
            missing = sorted(species - set(self._fixed_types))
            if missing:
                raise StructureNotSupported(
                    f"element(s) {', '.join(missing)} are not in the calculator's "
                    f"type_elements {self._fixed_types}; add them")
            self.type_elements = list(self._fixed_types)
        else:
            self.type_elements = default_specorder(sorted(species))
        check_coverage(self.potential, self.type_elements)
        comm = self._comm
        if comm is None:
            from mpi4py import MPI

            comm = MPI.COMM_SELF
        engine = LammpsEngine(log_file=self.log_file, comm=comm)
        try:
            setup = self.potential.lammps_setup(type_elements=self.type_elements,
                                                workdir=self.workdir, nranks=engine.nprocs)
            if setup.max_ranks is not None and engine.nprocs > setup.max_ranks:
                raise StructureNotSupported(
                    f"potential '{self.potential.name}' (route {setup.route}) runs on at most "
                    f"{setup.max_ranks} MPI rank(s); give the calculator a smaller communicator")
            engine.commands(_HEADER)
            engine.command(f"region {_BOX_REGION} prism 0 1 0 1 0 1 0 0 0 units box")
            engine.command(f"create_box {len(self.type_elements)} {_BOX_REGION}")
            for i, element in enumerate(self.type_elements, start=1):
                engine.command(f"mass {i} {float(atomic_masses[atomic_numbers[element]])!r}")
            if getattr(setup, "type_charges", ()):  # as templates/md.lammps.j2 does
                engine.command("fix harness_q all property/atom q ghost yes")
            engine.run_potential_block(setup.lines, required_styles=setup.required_styles,
                                       fix_it=setup.fix_it)
            if getattr(setup, "kspace", None):
                engine.command(f"kspace_style {setup.kspace[0]} {setup.kspace[1]!r}")
            self.potential.attach(engine.lmp, setup=setup, type_elements=self.type_elements,
                                  comm=engine.comm)
            engine.commands([f"compute {_PRESSURE} all pressure NULL virial",
                             f"thermo_style custom step pe c_{_PRESSURE}[*]",
                             "thermo_modify lost error"])
        except BaseException:
            engine.close()
            raise
        self.engine, self.setup = engine, setup
        self._types = None
        self.counts["build"] += 1

    def _set_box(self, cell_lmp: np.ndarray) -> None:
        (lx, _, _), (xy, ly, _), (xz, yz, lz) = (map(float, row) for row in cell_lmp)
        self.engine.command(
            f"change_box all x final 0 {lx!r} y final 0 {ly!r} z final 0 {lz!r} "
            f"xy final {xy!r} xz final {xz!r} yz final {yz!r} units box")

    def _populate(self, types: np.ndarray, positions: np.ndarray) -> None:
        lmp = self.engine.lmp
        if self.engine.natoms() > 0:
            self.engine.command("delete_atoms group all compress yes")
        n = len(types)
        ids = list(range(1, n + 1))
        lmp.create_atoms(n, ids, types.tolist(), positions.reshape(-1).tolist())
        for t, q in enumerate(getattr(self.setup, "type_charges", ()), start=1):
            self.engine.command(f"set type {t} charge {float(q)!r}")
        created = self.engine.natoms()
        if created != n:
            self._types = None
            raise StructureNotSupported(
                f"LAMMPS placed {created} of {n} atoms in the box (atoms on the cell boundary "
                "were lost); wrap the structure into its cell")
        self._types = types.copy()

    def _scatter_positions(self, positions: np.ndarray) -> None:
        flat = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1)
        data = (ctypes.c_double * flat.size).from_buffer(flat)
        self.engine.lmp.scatter_atoms("x", 1, 3, data)

    def _reset_pair_style(self) -> None:
        """Re-create the pair style (same lines, no plugin reload): fresh internal state."""
        lines = [line for line in self.setup.lines
                 if line.split()[:1] in (["pair_style"], ["pair_coeff"], ["pair_modify"])]
        self.engine.commands(["pair_style zero 1.0 nocoeff", "pair_coeff * *", *lines])
        self.counts["pair_reset"] = self.counts.get("pair_reset", 0) + 1

    def _run0(self, n_atoms: int) -> tuple[float, np.ndarray, np.ndarray]:
        from harness.md.engine import EngineError

        engine = self.engine
        try:
            engine.command("run 0 post no")
        except EngineError as exc:
            if not any(marker in str(exc) for marker in _RETRY_AFTER_PAIR_RESET):
                raise
            self._reset_pair_style()
            engine.command("run 0 post no")
        self.counts["run0"] += 1
        energy = engine.thermo("pe")
        p = [engine.lmp.extract_compute(_PRESSURE, 0, 1)[k] for k in range(6)]
        bar_per_eV_per_A3 = float(engine.lmp.extract_global("nktv2p"))
        forces = np.ctypeslib.as_array(engine.lmp.gather_atoms("f", 1, 3)).reshape(n_atoms, 3)
        pxx, pyy, pzz, pxy, pxz, pyz = p
        pressure = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
        return float(energy), forces.astype(float).copy(), -pressure / bar_per_eV_per_A3


def calculator_for(potential: Any, **kwargs: Any) -> LammpsCalculator:
    """Shorthand: ``LammpsCalculator(potential, **kwargs)``."""
    return LammpsCalculator(potential, **kwargs)
