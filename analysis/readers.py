"""Trajectory readers: stream frames in blocks of numpy arrays, never a whole trajectory.

Readers know file formats and nothing about diffusion. Each source yields
:class:`FrameBlock` objects (a few hundred frames each, atoms sorted by id) and describes
its atoms (element symbols) and its clock (time per unit of the frame counter).

* :class:`LammpsDumpSource` - our own chunked reader for ``dump custom`` text files with
  ``id type`` plus ``x y z`` (optionally ``ix iy iz``), ``xu yu zu``, ``xs ys zs`` or
  ``xsu ysu zsu``; orthogonal and triclinic boxes; variable cells (NPT).
* :func:`read_lammps_data` - atom count, types, masses and box of a LAMMPS data file.
* :class:`AseSource` - anything ``ase.io.iread`` reads (extxyz, VASP XDATCAR, vasprun.xml).
* :class:`UniverseSource` - an MDAnalysis ``Universe``.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from analysis.errors import AnalysisInputError, AnalysisWarning

#: elements that count as "the alkali" when no species is given, in order of preference
ALKALI = ("Li", "Na", "K", "Rb", "Cs")


@dataclass
class FrameBlock:
    """Consecutive frames. Atoms are in a fixed order (sorted by id) in every frame.

    ``steps`` is the frame counter (LAMMPS TIMESTEP, or the frame index); the source's
    ``fs_per_step`` turns it into time. ``cells`` holds the lattice vectors as rows.
    ``images`` is given only for wrapped coordinates with LAMMPS image flags.
    """

    steps: np.ndarray  # (k,) int64
    cells: np.ndarray  # (k, 3, 3) float64, rows a, b, c
    origins: np.ndarray  # (k, 3) float64
    positions: np.ndarray  # (k, n, 3) float64 Cartesian
    images: np.ndarray | None  # (k, n, 3) int64 or None
    unwrapped: bool  # True when positions are already unwrapped (xu yu zu)

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class SourceInfo:
    """What a source knows about its atoms and its clock."""

    symbols: np.ndarray  # (n,) element symbol per atom, id order
    fs_per_step: float | None  # time per unit of FrameBlock.steps, fs (None: unknown)
    description: str
    coordinates: str  # "wrapped+images" | "wrapped" | "unwrapped"
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# element identification
# ---------------------------------------------------------------------------------------

def parse_type_map(type_map: str | dict | None) -> dict[int, str] | None:
    """``"1=Li,2=S,3=P"`` or ``{"1": "Li"}`` -> ``{1: "Li", ...}`` with checked symbols."""
    if type_map is None:
        return None
    if isinstance(type_map, str):
        pairs: dict[object, object] = {}
        for item in filter(None, (part.strip() for part in type_map.split(","))):
            if "=" not in item:
                raise AnalysisInputError(
                    f"--type-map entry {item!r} is not TYPE=ELEMENT; write e.g. 1=Li,2=S,3=P")
            key, value = item.split("=", 1)
            pairs[key.strip()] = value.strip()
    else:
        pairs = dict(type_map)
    result: dict[int, str] = {}
    for key, value in pairs.items():
        try:
            number = int(key)
        except (TypeError, ValueError):
            raise AnalysisInputError(f"type map key {key!r} is not a LAMMPS type number; "
                                     "write e.g. 1=Li,2=S,3=P") from None
        result[number] = check_element(str(value), what=f"type map entry {number}")
    return result


def check_element(symbol: str, *, what: str = "element") -> str:
    from ase.data import atomic_numbers

    symbol = symbol.strip()
    if symbol not in atomic_numbers or symbol == "X":
        raise AnalysisInputError(f"{what}: {symbol!r} is not an element symbol (e.g. Li, S, P)")
    return symbol


def element_from_mass(mass: float, *, tolerance_amu: float = 0.05) -> str | None:
    """The element whose standard atomic mass is within ``tolerance_amu`` of ``mass``."""
    from ase.data import atomic_masses, chemical_symbols

    diffs = np.abs(np.asarray(atomic_masses[1:]) - float(mass))
    best = int(np.argmin(diffs))
    if diffs[best] <= max(tolerance_amu, 1e-3 * float(mass)):
        return chemical_symbols[best + 1]
    return None


def default_mobile_species(symbols: Sequence[str]) -> str:
    present = set(symbols)
    for alkali in ALKALI:
        if alkali in present:
            return alkali
    raise AnalysisInputError(
        f"no alkali ({', '.join(ALKALI)}) in the trajectory (elements: "
        f"{', '.join(sorted(present))}); name the mobile species with --species")


# ---------------------------------------------------------------------------------------
# LAMMPS data file
# ---------------------------------------------------------------------------------------

@dataclass
class LammpsData:
    n_atoms: int
    n_types: int
    ids: np.ndarray  # (n,) sorted atom ids
    types: np.ndarray  # (n,) type of each id
    masses: dict[int, float]
    mass_comments: dict[int, str]
    cell: np.ndarray  # (3, 3)
    origin: np.ndarray  # (3,)
    positions: np.ndarray  # (n, 3), id order


_SECTIONS = {"Atoms", "Velocities", "Masses", "Bonds", "Angles", "Dihedrals", "Impropers",
             "Pair Coeffs", "PairIJ Coeffs", "Bond Coeffs", "Angle Coeffs", "Dihedral Coeffs",
             "Improper Coeffs", "Ellipsoids", "Lines", "Triangles", "Bodies"}
#: (columns without images, index of type, index of first coordinate) per atom style
_ATOM_STYLES = {"atomic": (5, 1, 2), "charge": (6, 1, 3), "full": (7, 2, 4),
                "molecular": (6, 2, 3), "bond": (6, 2, 3), "angle": (6, 2, 3)}


def read_lammps_data(path: str | Path) -> LammpsData:
    """Read counts, box, masses, types and positions of a LAMMPS data file."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisInputError(f"LAMMPS data file {path} does not exist; pass --data FILE")
    lines = path.read_text(errors="replace").splitlines()
    n_atoms = n_types = None
    bounds = {"x": (0.0, 0.0), "y": (0.0, 0.0), "z": (0.0, 0.0)}
    tilt = (0.0, 0.0, 0.0)
    sections: dict[str, tuple[int, str]] = {}
    i = 1  # the first line is a title
    while i < len(lines):
        raw = lines[i]
        text = raw.split("#", 1)[0].strip()
        head = text.split()
        if text in _SECTIONS or (head and " ".join(head[:2]) in _SECTIONS) or \
                (head and head[0] in _SECTIONS):
            name = text if text in _SECTIONS else head[0]
            comment = raw.split("#", 1)[1].strip() if "#" in raw else ""
            sections[name] = (i, comment)
        elif text.endswith(" atoms") and len(head) == 2:
            n_atoms = int(head[0])
        elif text.endswith("atom types") and len(head) == 3:
            n_types = int(head[0])
        elif len(head) == 4 and head[2:] in (["xlo", "xhi"], ["ylo", "yhi"], ["zlo", "zhi"]):
            bounds[head[2][0]] = (float(head[0]), float(head[1]))
        elif len(head) == 6 and head[3:] == ["xy", "xz", "yz"]:
            tilt = (float(head[0]), float(head[1]), float(head[2]))
        i += 1
    if n_atoms is None or "Atoms" not in sections:
        raise AnalysisInputError(f"{path} is not a LAMMPS data file (no 'N atoms' header or "
                                 "no Atoms section); pass the data file written with the dump")
    n_types = n_types or 0

    def section_rows(name: str, count: int) -> list[list[str]]:
        start = sections[name][0] + 1
        rows: list[list[str]] = []
        j = start
        while j < len(lines) and len(rows) < count:
            body = lines[j].split("#", 1)[0].split()
            if body:
                rows.append(body)
            elif rows:
                break
            j += 1
        return rows

    masses: dict[int, float] = {}
    mass_comments: dict[int, str] = {}
    if "Masses" in sections:
        start = sections["Masses"][0] + 1
        j = start
        while j < len(lines):
            body = lines[j].split("#", 1)
            fields = body[0].split()
            if not fields:
                if masses:
                    break
                j += 1
                continue
            if len(fields) != 2:
                break
            masses[int(fields[0])] = float(fields[1])
            if len(body) > 1 and body[1].strip():
                mass_comments[int(fields[0])] = body[1].strip().split()[0]
            j += 1

    rows = section_rows("Atoms", n_atoms)
    if len(rows) != n_atoms:
        raise AnalysisInputError(f"{path}: header says {n_atoms} atoms but the Atoms section "
                                 f"has {len(rows)} rows; the data file is truncated")
    style = sections["Atoms"][1].split()[0] if sections["Atoms"][1] else None
    ncol = len(rows[0])
    if style in _ATOM_STYLES:
        base, type_col, x_col = _ATOM_STYLES[style]
    else:  # guess from the column count
        guesses = {5: "atomic", 8: "atomic", 6: "charge", 9: "charge", 7: "full", 10: "full"}
        if ncol not in guesses:
            raise AnalysisInputError(f"{path}: cannot tell the atom style of the Atoms section "
                                     f"({ncol} columns); add a comment like 'Atoms # atomic'")
        base, type_col, x_col = _ATOM_STYLES[guesses[ncol]]
    table = np.array([r[:base] for r in rows], dtype=float)
    ids = table[:, 0].astype(np.int64)
    order = np.argsort(ids)
    types = table[order, type_col].astype(np.int64)
    positions = table[order, x_col:x_col + 3]
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = bounds["x"], bounds["y"], bounds["z"]
    xy, xz, yz = tilt
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return LammpsData(n_atoms=n_atoms, n_types=max(n_types, int(types.max())), ids=ids[order],
                      types=types, masses=masses, mass_comments=mass_comments, cell=cell,
                      origin=np.array([xlo, ylo, zlo]), positions=positions)


def elements_for_types(types: np.ndarray, *, type_map: dict[int, str] | None,
                       data: LammpsData | None) -> np.ndarray:
    """Element symbol per atom: ``type_map`` first, else the data file's masses."""
    needed = sorted(set(int(t) for t in np.unique(types)))
    mapping: dict[int, str] = {}
    missing: list[str] = []
    for t in needed:
        if type_map and t in type_map:
            mapping[t] = type_map[t]
            continue
        if data is not None:
            comment = data.mass_comments.get(t)
            if comment:
                try:
                    mapping[t] = check_element(comment)
                    continue
                except AnalysisInputError:
                    pass
            if t in data.masses:
                symbol = element_from_mass(data.masses[t])
                if symbol is not None:
                    mapping[t] = symbol
                    continue
                missing.append(f"type {t} (mass {data.masses[t]:g} matches no element)")
                continue
        missing.append(f"type {t}")
    if missing:
        raise AnalysisInputError(
            "cannot tell the element of " + ", ".join(missing)
            + ": pass --type-map, e.g. --type-map 1=Li,2=S,3=P (or a data file with Masses)")
    return np.array([mapping[int(t)] for t in types], dtype=object)


# ---------------------------------------------------------------------------------------
# LAMMPS dump (text, dump custom / atom)
# ---------------------------------------------------------------------------------------

_COORD_SETS = (  # (columns, unwrapped, scaled)
    (("xu", "yu", "zu"), True, False),
    (("x", "y", "z"), False, False),
    (("xsu", "ysu", "zsu"), True, True),
    (("xs", "ys", "zs"), False, True),
)
_MARK = b"ITEM: TIMESTEP"


@dataclass
class _DumpLayout:
    columns: list[str]
    id_col: int
    type_col: int | None
    coord_cols: tuple[int, int, int]
    image_cols: tuple[int, int, int] | None
    unwrapped: bool
    scaled: bool


def _layout(columns: list[str], path: Path) -> _DumpLayout:
    if "id" not in columns:
        raise AnalysisInputError(f"{path}: the dump has no 'id' column (columns: "
                                 f"{' '.join(columns)}); dump with 'id type x y z ix iy iz'")
    for names, unwrapped, scaled in _COORD_SETS:
        if all(n in columns for n in names):
            coord_cols = tuple(columns.index(n) for n in names)
            images = None
            if not unwrapped and all(n in columns for n in ("ix", "iy", "iz")):
                images = tuple(columns.index(n) for n in ("ix", "iy", "iz"))
            return _DumpLayout(columns, columns.index("id"),
                               columns.index("type") if "type" in columns else None,
                               coord_cols, images, unwrapped, scaled)  # type: ignore[arg-type]
    raise AnalysisInputError(f"{path}: no coordinate columns (x y z, xu yu zu, xs ys zs) in "
                             f"the dump (columns: {' '.join(columns)})")


def _parse_box(lines: list[bytes], path: Path) -> tuple[np.ndarray, np.ndarray]:
    head = lines[0].decode().split()
    if "abc" in head:
        raise AnalysisInputError(f"{path}: general triclinic 'BOX BOUNDS abc origin' dumps are "
                                 "not supported; dump with the default restricted triclinic box")
    values = [list(map(float, lines[k].split())) for k in (1, 2, 3)]
    if len(values[0]) == 3:  # triclinic: bounding box plus tilt factors
        (xlo_b, xhi_b, xy), (ylo_b, yhi_b, xz), (zlo, zhi, yz) = values
        xlo = xlo_b - min(0.0, xy, xz, xy + xz)
        xhi = xhi_b - max(0.0, xy, xz, xy + xz)
        ylo = ylo_b - min(0.0, yz)
        yhi = yhi_b - max(0.0, yz)
    else:
        (xlo, xhi), (ylo, yhi), (zlo, zhi) = (v[:2] for v in values)
        xy = xz = yz = 0.0
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo])


class LammpsDumpSource:
    """Stream a LAMMPS text dump frame block by frame block.

    Memory: one read chunk (``chunk_bytes``) plus one parsed block. Atom lines of many
    frames are parsed at once with pandas' C parser. Checks every frame for a constant atom
    count and the same set of ids; a partial last frame is dropped with a warning.
    """

    def __init__(self, path: str | Path, *, data: str | Path | LammpsData | None = None,
                 type_map: str | dict | None = None, timestep_fs: float | None = None,
                 frame_interval_fs: float | None = None, chunk_bytes: int = 32 << 20,
                 max_frames: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AnalysisInputError(f"dump file {self.path} does not exist")
        if self.path.stat().st_size == 0:
            raise AnalysisInputError(f"dump file {self.path} is empty: the run wrote no frames "
                                     "(did it fail before the first dump?)")
        self.data = data if isinstance(data, LammpsData) or data is None else read_lammps_data(data)
        self.type_map = parse_type_map(type_map)
        self.timestep_fs = timestep_fs
        self.frame_interval_fs = frame_interval_fs
        self.chunk_bytes = int(chunk_bytes)
        self.max_frames = max_frames
        self.warnings: list[str] = []
        self._first = self._read_first_frame()

    # -- first frame: layout, atoms, elements --------------------------------------------
    def _read_first_frame(self) -> dict:
        with open(self.path, "rb") as handle:
            head = handle.read(min(self.chunk_bytes, 4 << 20))
        if _MARK not in head:
            raise AnalysisInputError(f"{self.path} is not a LAMMPS text dump (no "
                                     "'ITEM: TIMESTEP' in its first bytes)")
        start = head.index(_MARK)
        header = self._parse_header(head[start:], complete_required=False)
        if header is None:
            raise AnalysisInputError(f"{self.path}: the first frame header is incomplete; the "
                                     "dump is truncated before its first frame ended")
        return header

    def _parse_header(self, frame: bytes, *, complete_required: bool = True) -> dict | None:
        parts = frame.split(b"\n", 16)
        lines = parts[:-1]
        try:
            atoms_line = next(k for k, line in enumerate(lines) if line.startswith(b"ITEM: ATOMS"))
        except StopIteration:
            return None
        header_lines = lines[:atoms_line + 1]
        try:
            step = int(header_lines[1].split()[0])
            k_n = next(k for k, line in enumerate(header_lines)
                       if line.startswith(b"ITEM: NUMBER OF ATOMS"))
            n_atoms = int(header_lines[k_n + 1].split()[0])
            k_box = next(k for k, line in enumerate(header_lines)
                         if line.startswith(b"ITEM: BOX BOUNDS"))
            cell, origin = _parse_box(header_lines[k_box:k_box + 4], self.path)
        except (StopIteration, ValueError, IndexError):
            raise AnalysisInputError(f"{self.path}: malformed frame header near "
                                     f"{frame[:200]!r}") from None
        columns = header_lines[atoms_line].decode().split()[2:]
        header_len = sum(len(line) + 1 for line in header_lines)
        return {"step": step, "n_atoms": n_atoms, "cell": cell, "origin": origin,
                "columns": columns, "header_len": header_len}

    def info(self) -> SourceInfo:
        first = self._first
        layout = _layout(first["columns"], self.path)
        n = first["n_atoms"]
        if n < 1:
            raise AnalysisInputError(f"{self.path}: the first frame has no atoms")
        if self.data is not None and self.data.n_atoms != n:
            raise AnalysisInputError(
                f"inconsistent atom counts: the dump has {n} atoms per frame but the data file "
                f"has {self.data.n_atoms}; pass the data file that belongs to this dump")
        frame0 = next(self._frames(limit=1))
        ids = frame0["ids"]
        if layout.type_col is not None:
            types = frame0["types"]
        elif self.data is not None:
            types = self.data.types
        else:
            raise AnalysisInputError(f"{self.path}: the dump has no 'type' column; pass --data")
        if self.data is not None and not np.array_equal(ids, self.data.ids):
            raise AnalysisInputError("inconsistent atom ids: the dump's atom ids differ from the "
                                     "data file's; pass the data file that belongs to this dump")
        symbols = elements_for_types(types, type_map=self.type_map, data=self.data)
        fs_per_step = self.timestep_fs
        notes = []
        if fs_per_step is None and self.frame_interval_fs is not None:
            fs_per_step = None  # resolved from the step spacing when blocks are read
            notes.append("time per frame from --frame-interval-fs")
        coords = "unwrapped" if layout.unwrapped else (
            "wrapped+images" if layout.image_cols else "wrapped")
        return SourceInfo(symbols=symbols, fs_per_step=fs_per_step,
                          description=f"LAMMPS dump {self.path}", coordinates=coords, notes=notes)

    # -- streaming -----------------------------------------------------------------------
    def _frames_raw(self) -> Iterator[tuple[bytes, bool]]:
        """Yield the bytes of each frame; the flag is True for the last (maybe partial) one."""
        buffer = b""
        with open(self.path, "rb") as handle:
            eof = False
            while not eof:
                chunk = handle.read(self.chunk_bytes)
                eof = not chunk
                buffer += chunk
                starts = [m.start() for m in re.finditer(re.escape(_MARK), buffer)]
                if not starts:
                    if eof:
                        break
                    continue
                if starts[0] > 0 and buffer[:starts[0]].strip():
                    raise AnalysisInputError(f"{self.path}: unexpected text before a frame: "
                                             f"{buffer[:80]!r}")
                for a, b in zip(starts[:-1], starts[1:]):
                    yield buffer[a:b], False
                buffer = buffer[starts[-1]:]
                if eof:
                    yield buffer, True
                    buffer = b""

    def _frames(self, *, limit: int | None = None, batch: int = 256) -> Iterator[dict]:
        for block in self._frame_batches(batch=batch, limit=limit):
            for k in range(len(block["steps"])):
                yield {key: (value[k] if isinstance(value, np.ndarray) and value.ndim and
                             key != "ids" and key != "types" else value)
                       for key, value in block.items()}

    def _frame_batches(self, *, batch: int, limit: int | None = None) -> Iterator[dict]:
        first = self._first
        layout = _layout(first["columns"], self.path)
        n = first["n_atoms"]
        ref_ids = None
        pending: list[tuple[dict, bytes]] = []
        count = 0
        limit = limit if limit is not None else self.max_frames

        def flush(items: list[tuple[dict, bytes]]) -> dict:
            nonlocal ref_ids
            body = b"".join(atoms for _, atoms in items)
            table = _parse_table(body, len(layout.columns), self.path)
            if table.shape[0] != n * len(items):
                raise AnalysisInputError(f"{self.path}: atom lines do not match the atom count "
                                         f"near TIMESTEP {items[0][0]['step']}")
            integer_cols = [layout.id_col] + ([layout.type_col] if layout.type_col is not None
                                              else []) + list(layout.image_cols or ())
            if np.isnan(table[:, integer_cols]).any():
                raise AnalysisInputError(f"{self.path}: malformed atom lines (missing or "
                                         f"non-numeric fields) near TIMESTEP {items[0][0]['step']}")
            table = table.reshape(len(items), n, len(layout.columns))
            ids = table[:, :, layout.id_col].astype(np.int64)
            order = np.argsort(ids, axis=1, kind="stable")
            table = np.take_along_axis(table, order[:, :, None], axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
            if ref_ids is None:
                ref_ids = ids[0].copy()
                if len(np.unique(ref_ids)) != n:
                    raise AnalysisInputError(f"{self.path}: duplicate atom ids in a frame")
            bad = np.flatnonzero(np.any(ids != ref_ids, axis=1))
            if bad.size:
                raise AnalysisInputError(
                    f"inconsistent atoms: the set of atom ids changes at TIMESTEP "
                    f"{items[int(bad[0])][0]['step']} of {self.path}; every frame must hold the "
                    "same atoms")
            cells = np.stack([h["cell"] for h, _ in items])
            origins = np.stack([h["origin"] for h, _ in items])
            coords = table[:, :, list(layout.coord_cols)]
            if layout.scaled:
                coords = origins[:, None, :] + np.einsum("fni,fij->fnj", coords, cells)
            images = None
            if layout.image_cols is not None:
                images = np.rint(table[:, :, list(layout.image_cols)]).astype(np.int64)
            out = {"steps": np.array([h["step"] for h, _ in items], dtype=np.int64),
                   "cells": cells, "origins": origins, "positions": coords, "images": images,
                   "ids": ref_ids,
                   "types": (table[0, :, layout.type_col].astype(np.int64)
                             if layout.type_col is not None else None)}
            return out

        for frame, last in self._frames_raw():
            header = self._parse_header(frame)
            if header is None:
                if last:
                    self._warn(f"{self.path}: the last frame is incomplete (header cut off); "
                               f"using the {count} complete frames")
                    break
                raise AnalysisInputError(f"{self.path}: a frame without an 'ITEM: ATOMS' line")
            if header["n_atoms"] != n:
                raise AnalysisInputError(
                    f"inconsistent atom counts: TIMESTEP {header['step']} of {self.path} has "
                    f"{header['n_atoms']} atoms, the first frame has {n} (atoms lost during the "
                    "run?); analyze a trajectory with a constant number of atoms")
            if header["columns"] != first["columns"]:
                raise AnalysisInputError(f"{self.path}: the dump columns change at TIMESTEP "
                                         f"{header['step']}")
            atoms = frame[header["header_len"]:]
            n_lines = atoms.count(b"\n") + (0 if atoms.endswith(b"\n") or not atoms.strip() else 1)
            if last and atoms.strip() and not atoms.endswith(b"\n"):
                # LAMMPS ends every atom line with a newline: a file that does not end with
                # one was cut inside its last line, even when that line still has every column
                # (an image flag -12 cut to -1 would read as a valid, wrong number)
                n_lines -= 1
            if n_lines < n:
                if last:
                    self._warn(f"{self.path}: the last frame (TIMESTEP {header['step']}) is "
                               f"incomplete ({n_lines} of {n} atom lines); using the {count} "
                               "complete frames before it")
                    break
                raise AnalysisInputError(f"{self.path}: TIMESTEP {header['step']} has {n_lines} "
                                         f"atom lines, expected {n}")
            if not atoms.endswith(b"\n"):
                atoms += b"\n"
            pending.append((header, atoms))
            count += 1
            if len(pending) >= batch:
                yield flush(pending)
                pending = []
            if limit is not None and count >= limit:
                break
        if pending:
            yield flush(pending)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, AnalysisWarning, stacklevel=3)

    def blocks(self, *, block_frames: int = 256) -> Iterator[FrameBlock]:
        layout = _layout(self._first["columns"], self.path)
        for raw in self._frame_batches(batch=block_frames):
            yield FrameBlock(steps=raw["steps"], cells=raw["cells"], origins=raw["origins"],
                             positions=raw["positions"], images=raw["images"],
                             unwrapped=layout.unwrapped)


def _parse_table(body: bytes, n_columns: int, path: Path) -> np.ndarray:
    import pandas as pd

    if not body.strip():
        return np.empty((0, n_columns))
    try:
        frame = pd.read_csv(io.BytesIO(body), sep=r"\s+", header=None, dtype=np.float64,
                            usecols=range(n_columns), engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        raise AnalysisInputError(f"{path}: unreadable atom lines ({exc}); only numeric dump "
                                 "columns are supported") from None
    return frame.to_numpy()


# ---------------------------------------------------------------------------------------
# ASE and MDAnalysis sources
# ---------------------------------------------------------------------------------------

def vasp_format(path: str | Path) -> str | None:
    """ASE format of VASP outputs by their conventional names, which ASE's guess from the
    extension misses (``XDATCAR_2``, ``vasprun.xml-001``, ``OUTCAR.relax``); None: let ASE
    guess."""
    name = Path(path).name.lower()
    if "xdatcar" in name:
        return "vasp-xdatcar"
    if name.endswith(".xml") or (name.startswith("vasprun") and ".xml" in name):
        return "vasp-xml"
    if name.startswith("outcar"):
        return "vasp-out"
    return None


class AseSource:
    """Frames from ``ase.io.iread`` (extxyz, vasp-xdatcar, vasp-xml, ASE .traj, ...).

    Positions are treated as wrapped (unwrapped by the minimum-image convention from frame to
    frame), which is also right for trajectories that are already unwrapped.
    """

    def __init__(self, path: str | Path | Sequence, *, frame_interval_fs: float | None,
                 format: str | None = None, index: str = ":") -> None:
        self.path = path
        self.format = format
        self.index = index
        self.frame_interval_fs = frame_interval_fs
        self.warnings: list[str] = []
        if isinstance(path, (str, Path)):
            p = Path(path)
            if not p.is_file():
                raise AnalysisInputError(f"trajectory file {p} does not exist")
            if p.stat().st_size == 0:
                raise AnalysisInputError(f"trajectory file {p} is empty")
            if self.format is None:
                self.format = vasp_format(p)

    def _iter_atoms(self):
        if not isinstance(self.path, (str, Path)):
            yield from self.path
            return
        import ase.io

        try:
            yield from ase.io.iread(str(self.path), index=self.index, format=self.format,
                                    parallel=False)
        except (StopIteration, IndexError):
            return
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for bad files
            raise AnalysisInputError(f"ASE cannot read {self.path} ({type(exc).__name__}: "
                                     f"{exc}); give --format or convert it to extxyz") from None

    def info(self) -> SourceInfo:
        first = next(iter(self._iter_atoms()), None)
        if first is None:
            raise AnalysisInputError(f"{self.path}: no frames could be read")
        return SourceInfo(symbols=np.array(first.get_chemical_symbols(), dtype=object),
                          fs_per_step=self.frame_interval_fs, description=f"ASE {self.path}",
                          coordinates="wrapped")

    def blocks(self, *, block_frames: int = 256) -> Iterator[FrameBlock]:
        buffer_pos, buffer_cell = [], []
        index = 0
        n = None
        symbols = None
        for atoms in self._iter_atoms():
            if n is None:
                n = len(atoms)
                symbols = atoms.get_chemical_symbols()
            elif len(atoms) != n:
                raise AnalysisInputError(f"inconsistent atom counts: frame {index} of "
                                         f"{self.path} has {len(atoms)} atoms, the first has {n}")
            elif atoms.get_chemical_symbols() != symbols:
                raise AnalysisInputError(f"frame {index} of {self.path} lists different elements")
            buffer_pos.append(atoms.get_positions())
            buffer_cell.append(atoms.cell.array.copy())
            index += 1
            if len(buffer_pos) == block_frames:
                yield _block_from_lists(buffer_pos, buffer_cell, index)
                buffer_pos, buffer_cell = [], []
        if buffer_pos:
            yield _block_from_lists(buffer_pos, buffer_cell, index)


def _block_from_lists(positions: list, cells: list, end: int) -> FrameBlock:
    k = len(positions)
    cells_arr = np.stack(cells).astype(float)
    if np.any(np.abs(np.linalg.det(cells_arr)) < 1e-6):
        raise AnalysisInputError("a frame has no periodic cell (zero volume); the transport "
                                 "analysis needs periodic boundary conditions")
    return FrameBlock(steps=np.arange(end - k, end, dtype=np.int64), cells=cells_arr,
                      origins=np.zeros((k, 3)), positions=np.stack(positions).astype(float),
                      images=None, unwrapped=False)


class UniverseSource:
    """Frames of an MDAnalysis ``Universe`` (any format MDAnalysis reads)."""

    def __init__(self, universe, *, frame_interval_fs: float | None = None) -> None:
        self.universe = universe
        self.frame_interval_fs = frame_interval_fs
        self.warnings: list[str] = []

    def info(self) -> SourceInfo:
        atoms = self.universe.atoms
        try:
            symbols = np.array(atoms.elements, dtype=object)
        except Exception:  # noqa: BLE001 - no elements attribute
            symbols = np.array(atoms.types, dtype=object)
        for s in set(symbols):
            check_element(str(s), what="atom element of the Universe")
        fs = self.frame_interval_fs
        if fs is None:
            # formats without a time record make MDAnalysis return dt = 1 ps with the warning
            # "Reader has no dt information, set to 1.0 ps": that default is treated as none
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dt_ps = getattr(self.universe.trajectory, "dt", None)
            if any("no dt information" in str(w.message) for w in caught):
                dt_ps = None
            fs = None if dt_ps is None else float(dt_ps) * 1000.0
        return SourceInfo(symbols=symbols, fs_per_step=fs,
                          description=f"MDAnalysis Universe {self.universe}",
                          coordinates="wrapped")

    def blocks(self, *, block_frames: int = 256) -> Iterator[FrameBlock]:
        from MDAnalysis.lib.mdamath import triclinic_vectors

        pos, cells = [], []
        index = 0
        for ts in self.universe.trajectory:
            if ts.dimensions is None:
                raise AnalysisInputError("the Universe has no box; periodic cells are needed")
            pos.append(ts.positions.astype(float).copy())
            cells.append(triclinic_vectors(ts.dimensions).astype(float))
            index += 1
            if len(pos) == block_frames:
                yield _block_from_lists(pos, cells, index)
                pos, cells = [], []
        if pos:
            yield _block_from_lists(pos, cells, index)


class ArraySource:
    """Frames held in memory: positions (frames, atoms, 3) in A, cells (frames, 3, 3) or
    (3, 3), element symbols, time between frames. For synthetic data and other codes'
    arrays; positions may be wrapped or unwrapped (unwrapped by minimum image), or
    wrapped with ``images``."""

    def __init__(self, positions, *, symbols, cells, frame_interval_fs: float,
                 images=None) -> None:
        self.positions = np.asarray(positions, dtype=float)
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise AnalysisInputError("positions must be shaped (frames, atoms, 3)")
        cells = np.asarray(cells, dtype=float)
        self.cells = np.broadcast_to(cells, (len(self.positions), 3, 3)) if cells.ndim == 2 \
            else cells
        self.symbols = np.array([check_element(str(s)) for s in symbols], dtype=object)
        if len(self.symbols) != self.positions.shape[1]:
            raise AnalysisInputError(f"inconsistent atom counts: {len(self.symbols)} symbols "
                                     f"for {self.positions.shape[1]} atoms")
        self.images = None if images is None else np.asarray(images)
        self.frame_interval_fs = frame_interval_fs
        self.warnings: list[str] = []

    def info(self) -> SourceInfo:
        return SourceInfo(symbols=self.symbols, fs_per_step=self.frame_interval_fs,
                          description=f"arrays {self.positions.shape}",
                          coordinates="wrapped+images" if self.images is not None else "wrapped")

    def blocks(self, *, block_frames: int = 256) -> Iterator[FrameBlock]:
        for start in range(0, len(self.positions), block_frames):
            stop = min(start + block_frames, len(self.positions))
            yield FrameBlock(steps=np.arange(start, stop, dtype=np.int64),
                             cells=np.array(self.cells[start:stop]),
                             origins=np.zeros((stop - start, 3)),
                             positions=self.positions[start:stop],
                             images=None if self.images is None else self.images[start:stop],
                             unwrapped=False)


class ConcatenatedSource:
    """Consecutive pieces of one trajectory (e.g. AIMD segments, each file restarting at
    frame 0) read as one: the frame counter continues across the pieces, so that time is
    continuous. All pieces must hold the same atoms in the same order; the clock is the
    first piece's. LAMMPS dump pieces keep their own TIMESTEP values (they are absolute)."""

    def __init__(self, sources: Sequence) -> None:
        if not sources:
            raise AnalysisInputError("no trajectory files given")
        self.sources = list(sources)
        self.warnings: list[str] = []
        self.frame_interval_fs = getattr(self.sources[0], "frame_interval_fs", None)

    def info(self) -> SourceInfo:
        infos = [s.info() for s in self.sources]
        first = infos[0]
        for k, other in enumerate(infos[1:], start=2):
            if len(other.symbols) != len(first.symbols) or \
                    list(other.symbols) != list(first.symbols):
                raise AnalysisInputError(
                    f"trajectory piece {k} ({other.description}) holds different atoms than "
                    f"piece 1 ({first.description}); pieces must be consecutive parts of one "
                    "trajectory")
        return SourceInfo(symbols=first.symbols, fs_per_step=first.fs_per_step,
                          description=" + ".join(i.description for i in infos),
                          coordinates=first.coordinates,
                          notes=[f"{len(infos)} consecutive files read as one trajectory"]
                          + [n for i in infos for n in i.notes])

    def blocks(self, *, block_frames: int = 256) -> Iterator[FrameBlock]:
        offset = 0
        for source in self.sources:
            absolute = isinstance(source, LammpsDumpSource)
            last = None
            for block in source.blocks(block_frames=block_frames):
                steps = block.steps if absolute else block.steps + offset
                last = int(steps[-1])
                yield FrameBlock(steps=steps, cells=block.cells, origins=block.origins,
                                 positions=block.positions, images=block.images,
                                 unwrapped=block.unwrapped)
            if last is not None and not absolute:
                offset = last + 1
            self.warnings.extend(getattr(source, "warnings", []))
