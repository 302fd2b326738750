"""Structures: read, check, replicate and write them for LAMMPS.

Everything the MD harness does to a crystal before LAMMPS sees it lives here:

* :func:`load_structure` reads a CIF (pymatgen, so partial occupancies are visible), a
  POSCAR/CONTCAR (ASE) or an extxyz/xyz file (ASE), or a structure bundled with the project
  (``"Li3N"`` or ``"bundled:Li3N"``), and returns an ordered, periodic :class:`ase.Atoms`.
* :func:`check_min_distance` rejects overlapping atoms before LAMMPS can blow up on them.
* :func:`supercell_matrix_for_min_length` / :func:`make_supercell` replicate a cell so that
  every perpendicular width reaches a minimum length (seed 004 uses >= 10 A).
* :func:`write_lammps_data` writes an ``atom_style atomic`` data file and returns the
  type -> element map.

Bad input raises :class:`StructureError` with one message that names the problem and the
fix; the CLI turns it into one red line and exit status 2. pymatgen is imported inside the
functions that need it, so ``import harness.structures`` stays cheap.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = [
    "BUNDLED_PREFIX",
    "CloseContactWarning",
    "OccupancyWarning",
    "StructureError",
    "bundled_path",
    "bundled_structures",
    "check_min_distance",
    "default_specorder",
    "load_structure",
    "make_supercell",
    "perpendicular_widths",
    "supercell_matrix_for_min_length",
    "write_lammps_data",
]

BUNDLED_PREFIX = "bundled:"

#: A contact closer than this fraction of the sum of the two covalent radii draws a
#: :class:`CloseContactWarning` (real bonds sit at 0.8-1.1 of the sum).
COVALENT_WARNING_FRACTION = 0.6

#: check_min_distance reports the shortest distance up to at least this range.
_CLOSEST_SEARCH_A = 3.0

#: make_supercell refuses to build more atoms than this unless told otherwise.
DEFAULT_MAX_ATOMS = 1_000_000

_CIF_SUFFIXES = {".cif"}
_VASP_SUFFIXES = {".vasp", ".poscar", ".contcar"}
_VASP_NAMES = ("POSCAR", "CONTCAR")
_XYZ_SUFFIXES = {".extxyz", ".xyz"}


class StructureError(ValueError):
    """A structure cannot be used as given; the message names the problem and the fix."""


class OccupancyWarning(UserWarning):
    """Near-1 site occupancies were rounded to 1."""


class CloseContactWarning(UserWarning):
    """Two atoms are unusually close for their elements, though above the hard floor."""


# --------------------------------------------------------------------------------------
# bundled structures
# --------------------------------------------------------------------------------------


def _inputs_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("inputs")))


@lru_cache(maxsize=1)
def _bundled_index() -> dict[str, dict[str, Any]]:
    import yaml

    meta_path = _inputs_dir() / "structures.yaml"
    try:
        data = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:  # a broken install, not user input
        raise StructureError(f"cannot read the bundled structure index {meta_path}: {exc}") from exc
    entries = (data or {}).get("structures")
    if not isinstance(entries, dict):
        raise StructureError(f"{meta_path} has no 'structures' mapping")
    index: dict[str, dict[str, Any]] = {}
    for name, meta in entries.items():
        if not isinstance(meta, dict) or "file" not in meta:
            raise StructureError(f"{meta_path}: entry {name!r} has no 'file'")
        index[str(name)] = {"name": str(name), **meta}
    return index


def bundled_structures() -> dict[str, dict[str, Any]]:
    """Metadata of the structures shipped in ``inputs/structures/``, keyed by name.

    Each value holds the keys of ``inputs/structures.yaml`` (``file``, ``formula``,
    ``space_group``, ``lattice``, ``n_atoms``, ``ordered_approximant``, ``source``, ``notes``)
    plus ``name``. The returned dict is a copy; changing it changes nothing on disk.
    """
    import copy

    return copy.deepcopy(_bundled_index())


def _lookup_bundled(name: str) -> str | None:
    index = _bundled_index()
    if name in index:
        return name
    folded = {key.casefold(): key for key in index}
    return folded.get(name.casefold())


def bundled_path(name: str) -> Path:
    """Path of the bundled structure ``name`` (case-insensitive; ``bundled:`` prefix allowed)."""
    if name.startswith(BUNDLED_PREFIX):
        name = name[len(BUNDLED_PREFIX):]
    key = _lookup_bundled(name)
    if key is None:
        raise StructureError(
            f"no bundled structure named {name!r}; bundled: {', '.join(sorted(_bundled_index()))}")
    path = _inputs_dir() / _bundled_index()[key]["file"]
    if not path.is_file():  # a broken install
        raise StructureError(f"bundled structure {key!r} is listed but its file is missing: {path}")
    return path


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def _resolve(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Return (file, source description) for a path or a bundled name."""
    text = os.fspath(path)
    if text.startswith(BUNDLED_PREFIX):
        file = bundled_path(text)
        return file, f"{BUNDLED_PREFIX}{_lookup_bundled(text[len(BUNDLED_PREFIX):])}"
    file = Path(text).expanduser()
    if file.exists():
        if file.is_dir():
            raise StructureError(f"structure path is a directory, not a file: {file}")
        return file, str(file.resolve())
    key = _lookup_bundled(text) if text and os.sep not in text else None
    if key is not None:
        return bundled_path(key), f"{BUNDLED_PREFIX}{key}"
    raise StructureError(
        f"structure file not found: {file} (working directory {Path.cwd()}). Give a CIF, "
        f"POSCAR or extxyz path, or a bundled name: {', '.join(sorted(_bundled_index()))}")


def _guess_format(file: Path) -> str | None:
    suffix = file.suffix.lower()
    if suffix in _CIF_SUFFIXES:
        return "cif"
    if suffix in _VASP_SUFFIXES or file.name.upper().startswith(_VASP_NAMES):
        return "vasp"
    if suffix in _XYZ_SUFFIXES:
        return "extxyz"
    try:
        head = file.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return None
    if "_cell_length_a" in head and any(line.lstrip().startswith("data_")
                                        for line in head.splitlines()):
        return "cif"
    return None


def _ase_filetype(file: Path) -> str | None:
    """ASE's content sniffing, for files whose name says nothing; ``None`` if it fails."""
    from ase.io.formats import filetype

    try:
        kind = filetype(file, guess=True)
    except Exception:  # noqa: BLE001 - unknown content: let the reader report it
        return None
    return {"cif": "cif", "vasp": "vasp", "extxyz": "extxyz", "xyz": "extxyz"}.get(kind, kind)


def load_structure(path: str | os.PathLike[str], *,
                   occupancy_tolerance: float = 0.05) -> Atoms:
    """Read one ordered, periodic crystal structure.

    ``path`` is a file or a bundled name (``"Li6PS5Cl"``, ``"bundled:Li6PS5Cl"``); an existing
    file wins over a bundled name. The format comes from the suffix (``.cif``; ``POSCAR*``,
    ``CONTCAR*``, ``.vasp``; ``.extxyz``, ``.xyz``), else from the content.

    CIFs are read with pymatgen so that occupancies are visible: a single-species site with
    occupancy in ``[1 - occupancy_tolerance, 1)`` is rounded to 1 with an
    :class:`OccupancyWarning` naming the sites; lower occupancy or mixed species raise
    :class:`StructureError` listing the sites. Multi-frame extxyz files are refused rather
    than silently picking a frame.

    Returns a fresh :class:`ase.Atoms` (no constraints, calculator or velocities) with
    ``pbc=True``, positions wrapped into the cell, and ``info["source"]`` (resolved path or
    ``bundled:NAME``) and ``info["format"]``.
    """
    if not 0.0 <= occupancy_tolerance < 0.5:
        raise StructureError(
            f"occupancy_tolerance must be in [0, 0.5), got {occupancy_tolerance}")
    file, source = _resolve(path)
    fmt = _guess_format(file)
    if fmt is None:
        fmt = _ase_filetype(file)
    if fmt == "cif":
        atoms = _read_cif(file, occupancy_tolerance=occupancy_tolerance)
    else:
        atoms = _read_ase(file, fmt=fmt)
    _check_periodic(atoms, file=file)
    atoms.wrap()
    atoms.info["source"] = source
    atoms.info["format"] = fmt or "ase-auto"
    return atoms


def _clean_atoms(symbols: Sequence[str], *, cell: Any, positions: Any = None,
                 scaled_positions: Any = None, pbc: Any = True) -> Atoms:
    from ase import Atoms

    return Atoms(symbols=list(symbols), cell=np.asarray(cell, dtype=float),
                 positions=positions, scaled_positions=scaled_positions, pbc=pbc)


def _read_ase(file: Path, *, fmt: str | None) -> Atoms:
    import ase.io

    tried = {"vasp": "POSCAR/CONTCAR (ASE 'vasp')", "extxyz": "extxyz/xyz (ASE 'extxyz')",
             None: "any format ASE recognises"}.get(fmt, f"ASE format {fmt!r}")
    try:
        frames = ase.io.read(file, index=":", format=fmt, parallel=False)
    except Exception as exc:  # noqa: BLE001 - every parser failure is the same user error
        raise StructureError(
            f"could not read {file} as {tried}: {type(exc).__name__}: {_sentence(exc)}. "
            "Check the file, or convert it to CIF, POSCAR or extxyz") from None
    if not isinstance(frames, list):
        frames = [frames]
    if len(frames) != 1:
        raise StructureError(
            f"{file} holds {len(frames)} frames; write the one frame to run into its own file "
            "(e.g. ase.io.write('start.extxyz', ase.io.read(path, index=-1)))")
    src = frames[0]
    return _clean_atoms(src.get_chemical_symbols(), cell=src.cell[:],
                        positions=src.get_positions(), pbc=src.pbc)


def _read_cif(file: Path, *, occupancy_tolerance: float) -> Atoms:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser(file)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:  # noqa: BLE001 - every parser failure is the same user error
            notes = "; ".join(sorted({str(w.message).splitlines()[0] for w in caught}))
            raise StructureError(
                f"could not read {file} as CIF (pymatgen CifParser): {_sentence(exc)}"
                + (f" [{notes}]" if notes else "")
                + ". Check the file (truncated? missing _cell_length_* or _atom_site_* loops?)"
            ) from None
    for caught_warning in caught:  # pass on what pymatgen noticed, minus routine notes
        message = str(caught_warning.message)
        if issubclass(caught_warning.category, DeprecationWarning) \
                or "rounded to ideal values" in message:
            continue
        warnings.warn(f"{file.name}: pymatgen CifParser: {message}", UserWarning, stacklevel=3)
    if not structures:
        raise StructureError(f"{file} contains no crystal structure (pymatgen CifParser)")
    if len(structures) > 1:
        raise StructureError(
            f"{file} holds {len(structures)} data blocks; keep the one structure to run")
    structure = structures[0]
    if len(structure) == 0:
        raise StructureError(f"{file} has no atom sites")

    rounded: dict[str, str] = {}
    partial: dict[str, str] = {}
    symbols: list[str | None] = []  # None: a site that cannot be made ordered
    for i, site in enumerate(structure):
        label = getattr(site, "label", None) or f"site{i}"
        items = [(getattr(sp, "symbol", str(sp)), float(occ)) for sp, occ in site.species.items()]
        description = " + ".join(f"{el} {occ:.3g}" for el, occ in items)
        if len(items) == 1 and items[0][1] >= 1.0 - 1e-6:
            symbols.append(items[0][0])
        elif len(items) == 1 and items[0][1] >= 1.0 - occupancy_tolerance - 1e-9:
            rounded.setdefault(label, description)
            symbols.append(items[0][0])
        else:
            partial.setdefault(label, description)
            symbols.append(None)
    unknown = sorted({el for el in symbols if el is not None and el not in _atomic_numbers()})
    if unknown:
        raise StructureError(
            f"{file} has species that are not chemical elements: {', '.join(unknown)}; "
            "replace dummy or placeholder species by real elements")
    if partial:
        listed = ", ".join(f"{label} ({text})" for label, text in partial.items())
        raise StructureError(
            f"{file} has partially occupied or mixed-species sites, which MD cannot run as "
            f"they are: {listed}. Order it first: `harness order {file.name} --n 5 --out DIR` "
            "(or an `ordering: {n: 1}` block in the MD spec), or give an ordered cell. "
            "Single-species sites with occupancy >= "
            f"{1.0 - occupancy_tolerance:g} would be rounded to 1 (occupancy_tolerance="
            f"{occupancy_tolerance:g})")
    if rounded:
        listed = ", ".join(f"{label} ({text})" for label, text in rounded.items())
        formula = _formula(symbols)
        warnings.warn(
            f"{file.name}: rounded near-1 occupancies to 1 on sites {listed} "
            f"(occupancy_tolerance={occupancy_tolerance:g}); running it as fully occupied "
            f"{formula}", OccupancyWarning, stacklevel=3)
    lattice = structure.lattice
    atoms = _clean_atoms(symbols, cell=lattice.matrix, scaled_positions=structure.frac_coords)
    if rounded:
        atoms.info["rounded_occupancy_sites"] = sorted(rounded)
    return atoms


def _atomic_numbers() -> dict[str, int]:
    from ase.data import atomic_numbers

    return atomic_numbers


def _sentence(exc: BaseException) -> str:
    """An exception's message on one line, without a trailing full stop."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


def _formula(symbols: Sequence[str]) -> str:
    from ase.formula import Formula

    return Formula.from_list(list(symbols)).format("metal")


def _check_periodic(atoms: Atoms, *, file: Path) -> None:
    if len(atoms) == 0:
        raise StructureError(f"{file} contains no atoms")
    volume = abs(float(np.linalg.det(atoms.cell[:]))) if atoms.cell.rank == 3 else 0.0
    if not all(atoms.pbc) or volume < 1e-6:
        raise StructureError(
            f"{file} is not a 3-D periodic crystal (pbc={[bool(p) for p in atoms.pbc]}, "
            f"cell volume {volume:.3g} A^3): MD here needs a periodic cell. Give a CIF or "
            "POSCAR, or an extxyz with Lattice=\"...\" and pbc=\"T T T\"")


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------


def check_min_distance(atoms: Atoms, *, min_distance_A: float = 0.5) -> float:
    """Refuse overlapping atoms; warn about contacts that are short for their elements.

    Distances include periodic images (an atom and its own image count), computed with
    :func:`ase.neighborlist.neighbor_list`.

    * Error: any distance below ``min_distance_A`` (default 0.5 A, below the shortest real
      bond, H-H at 0.74 A; such pairs are duplicated or overlapping sites and would give
      LAMMPS huge forces or a crash). The message names the closest pair. ``0`` disables it.
    * Warning (:class:`CloseContactWarning`): a pair closer than 0.6 x the sum of the
      elements' covalent radii (``ase.data.covalent_radii``; Li-Li 1.54 A, Li-S 1.40 A), which
      is unusual for a crystal but not impossible.

    Returns the shortest interatomic distance in A (``inf`` if none is within 3 A).
    """
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    if min_distance_A < 0 or not math.isfinite(min_distance_A):
        raise StructureError(f"min_distance_A must be >= 0, got {min_distance_A}")
    if len(atoms) == 0:
        raise StructureError("the structure has no atoms")
    numbers = atoms.get_atomic_numbers()
    radii = covalent_radii[numbers]
    cutoff = max(min_distance_A, 2 * COVALENT_WARNING_FRACTION * float(radii.max()),
                 _CLOSEST_SEARCH_A)
    i, j, d, shifts = neighbor_list("ijdS", atoms, cutoff, self_interaction=False)
    # each pair once: (i, j) and (j, i) are both listed, and an atom's image at +S and -S
    first_nonzero = np.take_along_axis(shifts, np.argmax(shifts != 0, axis=1)[:, None], 1)[:, 0]
    keep = (i < j) | ((i == j) & (first_nonzero > 0))
    i, j, d = i[keep], j[keep], d[keep]
    if d.size == 0:
        return math.inf
    symbols = atoms.get_chemical_symbols()
    k = int(np.argmin(d))
    closest = float(d[k])
    if closest < min_distance_A:
        n_bad = int(np.count_nonzero(d < min_distance_A))
        what = (f"atom {i[k]} ({symbols[i[k]]}) and its own periodic image" if i[k] == j[k]
                else f"atoms {i[k]} ({symbols[i[k]]}) and {j[k]} ({symbols[j[k]]})")
        raise StructureError(
            f"{what} are {closest:.3f} A apart, below the {min_distance_A:g} A floor "
            f"({n_bad} pair(s) in all, periodic images included): overlapping or duplicated "
            "sites, a wrong cell, or partial occupancies written out as full sites. Fix the "
            "structure (min_distance_A sets the floor)")
    limit = COVALENT_WARNING_FRACTION * (radii[i] + radii[j])
    short = np.flatnonzero(d < limit)
    if short.size:
        worst = short[np.argsort(d[short] / limit[short])][:3]
        listed = "; ".join(
            f"{i[m]} ({symbols[i[m]]}) - {j[m]} ({symbols[j[m]]}) {d[m]:.2f} A" for m in worst)
        warnings.warn(
            f"{short.size} contact(s) shorter than {COVALENT_WARNING_FRACTION} x the sum of "
            f"covalent radii, e.g. {listed}; check the structure before a long run",
            CloseContactWarning, stacklevel=2)
    return closest


# --------------------------------------------------------------------------------------
# supercells
# --------------------------------------------------------------------------------------


def _cell_matrix(cell: Any) -> np.ndarray:
    matrix = np.asarray(getattr(cell, "cell", cell)[:], dtype=float)
    if matrix.shape != (3, 3):
        raise StructureError(f"expected a 3x3 cell, got shape {matrix.shape}")
    return matrix


def perpendicular_widths(cell: Any) -> np.ndarray:
    """Distances between opposite faces of the cell: ``V / |a_j x a_k|`` for each axis i."""
    matrix = _cell_matrix(cell)
    volume = abs(float(np.linalg.det(matrix)))
    if volume < 1e-9:
        raise StructureError("the cell has zero volume")
    areas = np.array([np.linalg.norm(np.cross(matrix[(i + 1) % 3], matrix[(i + 2) % 3]))
                      for i in range(3)])
    return volume / areas


def supercell_matrix_for_min_length(cell: Any, *, min_length_A: float) -> np.ndarray:
    """Diagonal repetition matrix making every perpendicular width >= ``min_length_A``.

    The width that matters for periodic images is the distance between opposite faces,
    ``h_i = V / |a_j x a_k|``, not the vector length ``|a_i|`` (they differ in non-orthogonal
    cells: a hexagonal cell with a = 10 A is only 8.66 A wide across). Repeating axis i
    ``n_i`` times multiplies ``h_i`` by ``n_i``, so ``n_i = ceil(min_length_A / h_i)``
    (with a 1e-6 relative slack against round-off). A sphere of radius ``min_length_A / 2``
    then never meets its own image. ``cell`` is a 3x3 array, an :class:`ase.cell.Cell` or
    an :class:`ase.Atoms`.
    """
    if not (isinstance(min_length_A, (int, float)) and math.isfinite(min_length_A)
            and min_length_A > 0):
        raise StructureError(f"min_length_A must be a positive number, got {min_length_A!r}")
    widths = perpendicular_widths(cell)
    reps = [max(1, math.ceil(min_length_A / h * (1 - 1e-6))) for h in widths]
    return np.diag(reps).astype(int)


def _as_matrix(matrix: Any) -> np.ndarray:
    try:
        array = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape == (3,):
        array = np.diag(array)
    if array.shape != (3, 3) or not np.all(np.isfinite(array)) \
            or not np.allclose(array, np.round(array)):
        raise StructureError(
            f"supercell matrix must be 3 integers or a 3x3 integer matrix, got {matrix!r}")
    array = np.round(array).astype(int)
    det = round(float(np.linalg.det(array)))
    if det <= 0:
        raise StructureError(
            f"supercell matrix {array.tolist()} has determinant {det}; it must be positive "
            "(a zero determinant collapses the cell, a negative one flips its handedness)")
    return array


def make_supercell(atoms: Atoms, *, min_length_A: float | None = None,
                   matrix: Sequence[int] | Sequence[Sequence[int]] | None = None,
                   max_atoms: int = DEFAULT_MAX_ATOMS) -> Atoms:
    """Replicate ``atoms`` by a minimum perpendicular width or by an explicit matrix.

    Give one of ``min_length_A`` (see :func:`supercell_matrix_for_min_length`) or ``matrix``
    (3 integers for a diagonal repetition, or a 3x3 integer matrix P whose rows are the new
    cell vectors in units of the old ones: ``new_cell = P @ old_cell``). Neither returns a
    copy. The result keeps ``info`` and adds ``info["supercell_matrix"]``; it refuses to
    build more than ``max_atoms`` atoms.
    """
    from ase.build import make_supercell as ase_make_supercell

    if min_length_A is not None and matrix is not None:
        raise StructureError("give a supercell matrix or a minimum length, not both")
    if min_length_A is None and matrix is None:
        return atoms.copy()
    P = (supercell_matrix_for_min_length(atoms.cell, min_length_A=min_length_A)
         if min_length_A is not None else _as_matrix(matrix))
    det = round(float(np.linalg.det(P)))
    n_atoms = det * len(atoms)
    if n_atoms > max_atoms:
        raise StructureError(
            f"supercell {P.tolist()} would hold {n_atoms} atoms, more than max_atoms="
            f"{max_atoms}; ask for a smaller minimum length or matrix")
    if np.count_nonzero(P - np.diag(np.diagonal(P))) == 0:
        result = atoms.repeat(tuple(int(n) for n in np.diagonal(P)))
    else:
        result = ase_make_supercell(atoms, P, wrap=True)
        if len(result) != n_atoms:  # pragma: no cover - ASE guards this itself
            raise StructureError(f"supercell {P.tolist()} produced {len(result)} atoms, "
                                 f"expected {n_atoms}")
    result.info = dict(atoms.info)
    result.info["supercell_matrix"] = P.tolist()
    result.pbc = True
    return result


# --------------------------------------------------------------------------------------
# LAMMPS data files
# --------------------------------------------------------------------------------------


def default_specorder(symbols: Sequence[str]) -> list[str]:
    """Elements in order of atomic number: the default LAMMPS type order (type 1 = lightest)."""
    from ase.data import atomic_numbers

    return sorted(set(symbols), key=lambda s: atomic_numbers[s])


def write_lammps_data(atoms: Atoms, path: str | os.PathLike[str], *,
                      specorder: Sequence[str] | None = None) -> list[str]:
    """Write an ``atom_style atomic`` LAMMPS data file (metal units, with Masses).

    Returns the type -> element map as a list: type ``i`` is ``result[i - 1]``. By default
    the elements are sorted by atomic number (deterministic; Li is type 1 whenever it is the
    lightest element present). ``specorder`` fixes the order instead; it must name every
    element present and may add absent ones (so several structures share one type map).

    ASE rotates the cell into LAMMPS' lower-triangular frame (a along x, b in the xy plane)
    and the positions with it: distances, angles and the volume are unchanged, Cartesian
    directions are not. Read the data file back to get the frame LAMMPS uses. The file is
    written to a temporary name and renamed into place.
    """
    import ase.io
    from ase.data import atomic_numbers

    symbols = atoms.get_chemical_symbols()
    if not symbols:
        raise StructureError("cannot write a LAMMPS data file with no atoms")
    if specorder is None:
        order = default_specorder(symbols)
    else:
        order = [str(s) for s in specorder]
        unknown = [s for s in order if s not in atomic_numbers]
        duplicated = sorted({s for s in order if order.count(s) > 1})
        missing = sorted(set(symbols) - set(order), key=lambda s: atomic_numbers[s])
        if unknown or duplicated or missing:
            problems = []
            if unknown:
                problems.append(f"unknown element(s) {unknown}")
            if duplicated:
                problems.append(f"repeated {duplicated}")
            if missing:
                problems.append(f"missing {missing} present in the structure")
            raise StructureError(f"specorder {order}: {'; '.join(problems)}")
    if not all(atoms.pbc):
        raise StructureError("write_lammps_data needs a periodic structure (pbc=True)")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        umask = os.umask(0)  # mkstemp makes 0600; the file gets the normal 0666 & ~umask
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        ase.io.write(tmp_name, atoms, format="lammps-data", specorder=order, masses=True, parallel=False,
                     units="metal", atom_style="atomic")
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return order
