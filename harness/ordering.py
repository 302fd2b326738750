"""Ordered supercells from a disordered crystal (``harness order`` and the ``ordering:`` block).

Most solid-electrolyte CIFs are disordered (argyrodite S/Cl and split Li sites, garnets,
NASICONs). MD needs one atom per site, so a disordered cell is turned into ordered
supercells by these rules:

1. **Supercell.** The disordered cell (pymatgen, occupancies kept) is replicated by
   ``supercell_min_length_A`` (perpendicular widths, as :func:`harness.structures.make_supercell`)
   or a ``supercell_matrix``.
2. **Site groups and rounding.** Sites that are images of one CIF site (same label, same
   species and occupancies) form a group. A group of ``n`` sites with occupancies ``o_s``
   should hold ``n o_s`` atoms of species ``s``; the number of occupied sites is
   ``round(n sum_s o_s)`` and the atoms are shared out by the **largest-remainder (Hamilton)
   rule**: each species gets ``floor(n o_s)``, the remaining seats go to the largest
   fractional parts (ties: alphabetical). If the oxidation states are known and the
   result is charged, single changes of one count within ``[floor, ceil]`` of its exact value
   (or a swap between two species of one group) are made greedily, each time the one that
   lowers ``|Q|`` most at the smallest rounding error, until the cell is neutral or no move
   helps (``charge_neutral``). Every count that differs from its exact value is reported in
   an :class:`OrderingWarning`.
3. **Split sites.** Two partially occupied sites closer than ``exclusion_distance_A``
   (default 2.0 A: split 48h pairs in argyrodites are 1.9 A apart; the shortest Li-Li
   distance in Li2S is 2.85 A) are never both occupied. A count that cannot be placed
   under this rule (e.g. more Li than split pairs) is an error.
4. **Enumeration or sampling.** The number of configurations (product of multinomials over
   the groups, before exclusion and symmetry) is counted. If it is at most
   ``max_enumerate`` (``method: auto``), every configuration is enumerated, those breaking
   the exclusion rule are dropped and one representative per symmetry class is kept
   (the space group of the disordered cell, from spglib, times the lattice translations
   of the supercell; the representative is the lexicographically smallest image).
   Otherwise ``n_samples`` configurations are drawn at random (``seed``; each group fills
   its sites in a random order, skipping sites excluded by ones already filled, and
   restarts if it cannot finish) and reduced to distinct symmetry classes the same way.
5. **Ranking.** Every candidate's electrostatic energy is the Ewald sum of formal point
   charges (oxidation states given or guessed by pymatgen), computed once as a site-pair
   matrix (pymatgen :class:`~pymatgen.analysis.ewald.EwaldSummation` of the whole supercell
   with unit charges) and then ``q^T M q`` per candidate, plus the neutralising-background
   term if the cell is charged; this equals ``EwaldSummation`` of the ordered cell (tested).
   The ``n`` lowest are kept, lowest first. ``rank_by: <potential>`` then relaxes each
   (fixed cell, positions) with the potential's ASE calculator and re-ranks by its energy.

Why not an enumeration package: ``enumlib`` (pymatgen's EnumerateStructureTransformation)
needs the compiled ``enum.x``/``makestr.x`` executables that no PyPI wheel ships; ``icet``
installs from PyPI (it brings numba and trainstation) but its enumeration lists all
derivative supercells up to a size, not the configurations of one fixed supercell, and
its SQS generator targets correlation functions, not ranked distinct orderings; pymatgen's
OrderDisorderedStructureTransformation ranks by Ewald energy but neither reduces by
symmetry nor knows split-site exclusion. The fixed-supercell enumeration with symmetry
reduction above is ~150 lines of numpy on top of spglib and pymatgen, which the harness
already depends on.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from harness.md.spec import OrderingSpec
from harness.structures import StructureError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms
    from pymatgen.core import Structure

__all__ = ["OrderingError", "OrderingResult", "OrderingSpec", "OrderingWarning", "Candidate",
           "order_structure", "read_disordered", "write_orderings", "ordered_atoms_for_md"]

VACANCY = "X"  # placeholder symbol of an empty site in configuration tables
#: FIRE relaxation (rank_by a potential): force tolerance and step cap
RELAX_FMAX_eV_per_A = 0.05
RELAX_MAX_STEPS = 300


class OrderingError(StructureError):
    """A disordered structure cannot be ordered as asked; the message names the fix."""


class OrderingWarning(UserWarning):
    """Occupancies were rounded to the supercell, or the result is not charge neutral."""


# --------------------------------------------------------------------------------------
# reading the disordered cell
# --------------------------------------------------------------------------------------
def read_disordered(path: str | os.PathLike[str]) -> tuple["Structure", str]:
    """(pymatgen Structure with occupancies, source description) of a file or bundled name."""
    from harness.structures import _guess_format, _resolve

    file, source = _resolve(path)
    fmt = _guess_format(file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fmt == "cif":
                from pymatgen.io.cif import CifParser

                structures = CifParser(file).parse_structures(primitive=False, on_error="raise")
                if len(structures) != 1:
                    raise OrderingError(f"{file} holds {len(structures)} structures; keep one")
                structure = structures[0]
            else:
                from pymatgen.core import Structure

                structure = Structure.from_file(file)
        except OrderingError:
            raise
        except Exception as exc:  # noqa: BLE001 - every parser failure is the same user error
            raise OrderingError(f"could not read {file} (pymatgen): "
                                f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    for i, site in enumerate(structure):
        total = sum(site.species.values())
        if total > 1.0 + 1e-3:
            raise OrderingError(
                f"{file}: site {getattr(site, 'label', None) or i} has total occupancy "
                f"{total:.3g} > 1 ({site.species}); no ordering can hold that. Fix the CIF "
                "occupancies")
        for sp in site.species:
            if getattr(sp, "symbol", None) is None or sp.symbol not in _elements():
                raise OrderingError(f"{file}: species {sp} is not a chemical element")
    return structure, source


def _elements() -> set[str]:
    from ase.data import chemical_symbols

    return set(chemical_symbols[1:])


# --------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------
@dataclass
class Group:
    """Sites of the supercell that are images of one disordered CIF site."""

    label: str
    occupancy: dict[str, float]           # species -> occupancy (vacancy implicit)
    sites: list[int]                      # indices in the supercell
    exact: dict[str, float] = field(default_factory=dict)   # species -> n * occ
    counts: dict[str, int] = field(default_factory=dict)    # species -> rounded count

    @property
    def n_vacant(self) -> int:
        return len(self.sites) - sum(self.counts.values())

    @property
    def is_partial(self) -> bool:
        return self.n_vacant > 0 or sum(1 for c in self.counts.values() if c > 0) > 1


@dataclass
class Candidate:
    """One ordered supercell."""

    rank: int
    key: bytes                      # canonical configuration (symmetry-class representative)
    config: np.ndarray              # species index per partial site (0 = vacancy)
    ewald_eV: float
    atoms: Any = None               # ase.Atoms
    relaxed_energy_eV: float | None = None
    relax_steps: int | None = None

    def summary(self) -> dict[str, Any]:
        n = len(self.atoms) if self.atoms is not None else None
        out = {"rank": self.rank, "formula": self.atoms.get_chemical_formula() if n else None,
               "n_atoms": n, "ewald_eV": self.ewald_eV,
               "ewald_eV_per_atom": self.ewald_eV / n if n else None}
        if self.relaxed_energy_eV is not None:
            out.update(relaxed_energy_eV=self.relaxed_energy_eV,
                       relaxed_energy_eV_per_atom=self.relaxed_energy_eV / n,
                       relax_steps=self.relax_steps)
        return out


@dataclass
class OrderingResult:
    candidates: list[Candidate]
    info: dict[str, Any]


# --------------------------------------------------------------------------------------
# step 1-2: supercell, groups, rounding
# --------------------------------------------------------------------------------------
def _supercell_matrix(structure: "Structure", spec: OrderingSpec, *,
                      min_length_A: float | None, matrix: Any) -> np.ndarray:
    from harness.structures import _as_matrix, supercell_matrix_for_min_length

    if spec.supercell_matrix is not None:
        return _as_matrix(spec.supercell_matrix)
    if spec.supercell_min_length_A is not None:
        return supercell_matrix_for_min_length(structure.lattice.matrix,
                                               min_length_A=spec.supercell_min_length_A)
    if matrix is not None:
        return _as_matrix(matrix)
    if min_length_A is not None:
        return supercell_matrix_for_min_length(structure.lattice.matrix, min_length_A=min_length_A)
    return np.eye(3, dtype=int)


def _occupancy_of(site: Any) -> dict[str, float]:
    return {sp.symbol: float(occ) for sp, occ in sorted(site.species.items(),
                                                        key=lambda kv: kv[0].symbol)}


def _groups(structure: "Structure") -> list[Group]:
    groups: dict[tuple, Group] = {}
    for i, site in enumerate(structure):
        occ = _occupancy_of(site)
        label = getattr(site, "label", None) or "+".join(occ)
        key = (label, tuple((s, round(o, 4)) for s, o in occ.items()))
        if key not in groups:
            groups[key] = Group(label=label, occupancy=occ, sites=[])
        groups[key].sites.append(i)
    return list(groups.values())


def _largest_remainder(n_sites: int, occupancy: dict[str, float]) -> tuple[dict[str, float],
                                                                           dict[str, int]]:
    exact = {s: n_sites * o for s, o in occupancy.items()}
    seats = min(n_sites, int(math.floor(sum(exact.values()) + 0.5)))
    counts = {s: int(math.floor(v + 1e-9)) for s, v in exact.items()}
    left = seats - sum(counts.values())
    order = sorted(exact, key=lambda s: (-(exact[s] - counts[s]), s))
    for s in order[:max(left, 0)]:
        counts[s] += 1
    return exact, counts


def _charge(groups: Sequence[Group], oxi: dict[str, float]) -> float:
    return float(sum(c * oxi[s] for g in groups for s, c in g.counts.items()))


def _make_neutral(groups: list[Group], oxi: dict[str, float]) -> None:
    """Greedy single moves within [floor, ceil] of each exact count until Q = 0 (see module)."""
    for _ in range(sum(len(g.sites) for g in groups)):
        Q = _charge(groups, oxi)
        if abs(Q) < 1e-6:
            return
        best = None
        for gi, g in enumerate(groups):
            lo = {s: math.floor(v + 1e-9) for s, v in g.exact.items()}
            hi = {s: math.ceil(v - 1e-9) for s, v in g.exact.items()}
            moves = []
            for s in g.counts:
                if g.counts[s] + 1 <= hi[s] and g.n_vacant > 0:
                    moves.append({s: +1})
                if g.counts[s] - 1 >= lo[s]:
                    moves.append({s: -1})
                for t in g.counts:
                    if t != s and g.counts[s] + 1 <= hi[s] and g.counts[t] - 1 >= lo[t]:
                        moves.append({s: +1, t: -1})
            for move in moves:
                dq = sum(d * oxi[s] for s, d in move.items())
                new_q = abs(Q + dq)
                if new_q >= abs(Q) - 1e-9:
                    continue
                err = sum(abs(g.counts[s] + d - g.exact[s]) - abs(g.counts[s] - g.exact[s])
                          for s, d in move.items())
                score = (new_q, err, gi, sorted(move.items()))
                if best is None or score < best[0]:
                    best = (score, gi, move)
        if best is None:
            return
        _, gi, move = best
        for s, d in move.items():
            groups[gi].counts[s] += d


def guess_oxidation_states(structure: "Structure") -> dict[str, float] | None:
    """Formal oxidation states by element (pymatgen's guess on the rounded composition)."""
    from pymatgen.core import Composition

    comp = Composition({el: amt for el, amt in structure.composition.element_composition.items()})
    if len(comp.elements) == 1:
        return {comp.elements[0].symbol: 0.0}
    try:
        guesses = comp.oxi_state_guesses(max_sites=-50)
    except Exception:  # noqa: BLE001 - the guesser fails on odd compositions
        guesses = ()
    if not guesses:
        try:  # allow a small charge: partially occupied compositions are rarely exact
            guesses = Composition({k: round(v) or 1 for k, v in comp.items()}).oxi_state_guesses()
        except Exception:  # noqa: BLE001
            guesses = ()
    if not guesses:
        return None
    return {el: float(v) for el, v in guesses[0].items()}


# --------------------------------------------------------------------------------------
# step 3-4: symmetry, exclusion, enumeration and sampling
# --------------------------------------------------------------------------------------
def _symmetry_permutations(parent: "Structure", P: np.ndarray, super_frac_parent: np.ndarray,
                           partial: np.ndarray, *, symprec: float = 1e-3) -> np.ndarray:
    """Permutations of the partial sites under the parent's space group x supercell translations.

    ``super_frac_parent`` holds every supercell site in fractional units of the parent cell.
    Returns an (n_ops, n_partial) array ``perm`` with op(site i) = site perm[i].
    """
    import spglib
    from pymatgen.util.coord import lattice_points_in_supercell

    kinds: dict[tuple, int] = {}
    types = [kinds.setdefault(tuple(sorted((sp.symbol, round(o, 4))
                                           for sp, o in site.species.items())), len(kinds))
             for site in parent]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib's error-handling notice
        sym = spglib.get_symmetry((parent.lattice.matrix, parent.frac_coords, types),
                                  symprec=symprec) or {"rotations": np.eye(3, dtype=int)[None],
                                                       "translations": np.zeros((1, 3))}
    translations = lattice_points_in_supercell(P) @ P  # parent-lattice vectors in the supercell
    Pinv = np.linalg.inv(P)
    X = super_frac_parent[partial]
    grid = 2000
    target = np.mod(np.round(np.mod(X @ Pinv, 1.0) * grid), grid).astype(np.int64)
    lookup = {tuple(row): k for k, row in enumerate(target)}
    perms = []
    for R, t in zip(sym["rotations"], sym["translations"]):
        # only operations that map the supercell lattice onto itself act on a periodic
        # configuration of the supercell (a 2x1x1 cell of a cubic crystal keeps 16 of 48)
        M = P @ R.T @ Pinv
        if not np.allclose(M, np.round(M), atol=1e-6):
            continue
        base = X @ R.T + t
        for T in translations:
            Y = np.mod((base + T) @ Pinv, 1.0)
            keys = np.mod(np.round(Y * grid), grid).astype(np.int64)
            perm = [lookup.get(tuple(row), -1) for row in keys]
            if -1 in perm:  # round-off at a rounding boundary: nearest image instead
                perm = _match_nearest(Y, np.mod(X @ Pinv, 1.0), perm)
                if perm is None:
                    continue
            perms.append(perm)
    if not perms:
        perms = [list(range(len(partial)))]
    return np.unique(np.asarray(perms, dtype=np.int64), axis=0)


def _match_nearest(Y: np.ndarray, X: np.ndarray, perm: list[int], tol: float = 2e-3):
    out = list(perm)
    for i, k in enumerate(perm):
        if k != -1:
            continue
        d = Y[i] - X
        d -= np.round(d)
        j = int(np.argmin(np.linalg.norm(d, axis=1)))
        if np.linalg.norm(d[j]) > tol:
            return None
        out[i] = j
    return out if len(set(out)) == len(out) else None


def _canonical(config: np.ndarray, perms: np.ndarray) -> bytes:
    """Smallest image of ``config`` under the permutations (the class representative)."""
    images = np.empty((len(perms), config.size), dtype=np.int8)
    images[np.arange(len(perms))[:, None], perms] = config[None, :]
    return min(row.tobytes() for row in images)


def _exclusion_pairs(cart: np.ndarray, lattice: np.ndarray, partial: np.ndarray,
                     distance_A: float) -> list[set[int]]:
    """Neighbours (indices into ``partial``) closer than ``distance_A``, minimum image."""
    neighbours: list[set[int]] = [set() for _ in partial]
    if distance_A <= 0 or len(partial) < 2:
        return neighbours
    from ase import Atoms
    from matscipy.neighbours import neighbour_list

    atoms = Atoms(numbers=np.ones(len(partial), dtype=int), positions=cart[partial],
                  cell=lattice, pbc=True)
    i, j = neighbour_list("ij", atoms, distance_A)
    for a, b in zip(i, j):
        if a != b:
            neighbours[a].add(int(b))
    return neighbours


class _Sampler:
    """Random configurations of the partial sites under the exclusion rule."""

    def __init__(self, *, blocks: list[tuple[np.ndarray, list[int]]],
                 neighbours: list[set[int]], n_partial: int) -> None:
        self.blocks = blocks            # (positions in the partial list, species indices)
        self.neighbours = neighbours
        self.n_partial = n_partial

    def draw(self, rng: np.random.Generator, *, tries: int = 200) -> np.ndarray | None:
        for _ in range(tries):
            config = np.zeros(self.n_partial, dtype=np.int8)
            occupied = np.zeros(self.n_partial, dtype=bool)
            ok = True
            for positions, atoms in self.blocks:
                order = rng.permutation(positions)
                species = list(rng.permutation(atoms))
                for p in order:
                    if not species:
                        break
                    if any(occupied[q] for q in self.neighbours[p]):
                        continue
                    config[p] = species.pop()
                    occupied[p] = True
                if species:
                    ok = False
                    break
            if ok:
                return config
        return None


def _max_independent(positions: np.ndarray, neighbours: list[set[int]]) -> tuple[int, bool]:
    """Largest number of sites of one group that can be filled (exact when the exclusion
    graph is a union of cliques, e.g. split pairs; else a greedy lower bound)."""
    pos = set(int(p) for p in positions)
    seen: set[int] = set()
    total, exact = 0, True
    for p in pos:
        if p in seen:
            continue
        comp, stack = set(), [p]
        while stack:
            q = stack.pop()
            if q in comp:
                continue
            comp.add(q)
            stack.extend(r for r in neighbours[q] if r in pos and r not in comp)
        seen |= comp
        if all((comp - {q}) <= neighbours[q] for q in comp):
            total += 1
        else:
            exact = False
            chosen: set[int] = set()
            for q in sorted(comp, key=lambda q: len(neighbours[q] & comp)):
                if not neighbours[q] & chosen:
                    chosen.add(q)
            total += len(chosen)
    return total, exact


# --------------------------------------------------------------------------------------
# step 5: Ewald energies
# --------------------------------------------------------------------------------------
class EwaldModel:
    """E(config) = q^T M q (+ background term) from one pymatgen Ewald matrix of all sites."""

    def __init__(self, lattice: Any, frac_coords: np.ndarray) -> None:
        from pymatgen.analysis.ewald import EwaldSummation
        from pymatgen.core import Lattice, Species, Structure

        unit = Structure(Lattice(lattice), [Species("H", 1)] * len(frac_coords), frac_coords)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ewald = EwaldSummation(unit)
            self.matrix = np.asarray(ewald.total_energy_matrix, dtype=float)
        self.eta = float(ewald._eta)
        self.volume_A3 = float(unit.volume)
        self.conv = float(EwaldSummation.CONV_FACT)

    def energy(self, charges: np.ndarray) -> float:
        q = np.asarray(charges, dtype=float)
        background = -self.conv / 2 * np.pi / self.volume_A3 / self.eta * q.sum() ** 2
        return float(q @ self.matrix @ q + background)


# --------------------------------------------------------------------------------------
# the whole procedure
# --------------------------------------------------------------------------------------
def order_structure(structure: str | os.PathLike[str] | "Structure", spec: OrderingSpec, *,
                    min_length_A: float | None = None, matrix: Any = None,
                    source: str | None = None) -> OrderingResult:
    """Make ``spec.n`` distinct ordered supercells of a disordered structure, lowest first.

    ``structure`` is a path / bundled name or a pymatgen Structure. ``min_length_A`` /
    ``matrix`` are the supercell used when the spec names none (the MD spec's).
    Raises :class:`OrderingError` for an ordered input, an impossible count or too few
    distinct configurations; warns (:class:`OrderingWarning`) about rounding.
    """
    from pymatgen.core import Structure

    if isinstance(structure, Structure):
        parent, source = structure, source or "pymatgen Structure"
    else:
        parent, source = read_disordered(structure)
    name = source
    if parent.is_ordered:
        raise OrderingError(
            f"{name} is already ordered (every site holds one species at occupancy 1): there "
            "is nothing to enumerate. Remove the ordering block / run it directly")
    P = _supercell_matrix(parent, spec, min_length_A=min_length_A, matrix=matrix)
    n_cells = round(abs(float(np.linalg.det(P))))
    if n_cells * len(parent) > 20_000:
        raise OrderingError(f"supercell {P.tolist()} has {n_cells * len(parent)} sites; ask for "
                            "a smaller supercell (supercell_min_length_A)")
    parent = parent.copy()
    parent.add_site_property("parent_index", list(range(len(parent))))
    labels = [getattr(s, "label", None) for s in parent]
    sc = parent.make_supercell(P, in_place=False)
    for site in sc:  # labels travel with the parent index
        site.label = labels[site.properties["parent_index"]] or site.label
    groups = _groups(sc)

    # --- rounding ------------------------------------------------------------------------
    for g in groups:
        g.exact, g.counts = _largest_remainder(len(g.sites), g.occupancy)
    oxi = dict(spec.oxidation_states) if spec.oxidation_states else guess_oxidation_states(parent)
    elements = {s for g in groups for s in g.occupancy}
    if oxi is not None:
        missing = sorted(elements - set(oxi))
        if missing:
            raise OrderingError(f"oxidation_states lacks {', '.join(missing)}; give every "
                                f"element, e.g. {{{', '.join(f'{e}: 0' for e in sorted(elements))}}}")
    if oxi is not None and spec.charge_neutral:
        _make_neutral(groups, oxi)
    charge = _charge(groups, oxi) if oxi is not None else None
    rounding = []
    for g in groups:
        for s in g.occupancy:
            if abs(g.counts[s] - g.exact[s]) > 1e-6:
                rounding.append(f"{g.label} {s}: {g.exact[s]:.4g} -> {g.counts[s]}")
    if rounding:
        warnings.warn(f"{Path(str(name)).name}: occupancies rounded to the {n_cells}-cell "
                      f"supercell ({len(sc)} sites): " + "; ".join(rounding),
                      OrderingWarning, stacklevel=2)
    if charge is not None and abs(charge) > 1e-6:
        warnings.warn(f"{Path(str(name)).name}: the rounded supercell carries charge "
                      f"{charge:+g} e with oxidation states {oxi}; the Ewald energies include "
                      "the neutralising background", OrderingWarning, stacklevel=2)

    # --- configuration space ------------------------------------------------------------
    partial_groups = [g for g in groups if g.is_partial]
    if not partial_groups:
        raise OrderingError(
            f"after rounding to the supercell every site of {name} is fully occupied by one "
            "species (occupancies within rounding of 1): there is one ordering only. Run the "
            "structure directly, or choose a larger supercell")
    partial = np.array([i for g in partial_groups for i in g.sites], dtype=np.int64)
    species_list = sorted({s for g in partial_groups for s in g.occupancy})
    species_index = {s: k + 1 for k, s in enumerate(species_list)}  # 0 = vacancy
    lattice = sc.lattice.matrix
    cart = sc.cart_coords
    neighbours = _exclusion_pairs(cart, lattice, partial, spec.exclusion_distance_A)
    blocks, start = [], 0
    for g in partial_groups:
        positions = np.arange(start, start + len(g.sites))
        start += len(g.sites)
        atoms = [species_index[s] for s, c in g.counts.items() for _ in range(c)]
        limit, exact = _max_independent(positions, neighbours)
        if len(atoms) > limit:
            raise OrderingError(
                f"cannot place {len(atoms)} atoms on the {len(g.sites)} '{g.label}' sites with "
                f"no two closer than exclusion_distance_A={spec.exclusion_distance_A:g} A: "
                f"{'at most' if exact else 'about'} {limit} fit. Check the occupancies "
                "(stoichiometry) or lower exclusion_distance_A")
        blocks.append((positions, atoms))
    n_configs = 1
    for g in partial_groups:
        rest = len(g.sites)
        for c in list(g.counts.values()):
            n_configs *= math.comb(rest, c)
            rest -= c
    method = spec.method
    if method == "auto":
        method = "enumerate" if n_configs <= spec.max_enumerate else "sample"
    if method == "enumerate" and n_configs > max(spec.max_enumerate, 10 ** 6):
        raise OrderingError(f"{n_configs:.3g} configurations are too many to enumerate; use "
                            "method: sample (or auto)")

    super_frac_parent = sc.frac_coords @ P  # supercell fractions -> parent fractions
    perms = _symmetry_permutations(parent, P, super_frac_parent, partial)

    # charges of each partial-site species and of the fixed sites
    if oxi is not None:
        fixed = np.array([i for g in groups if not g.is_partial for i in g.sites], dtype=np.int64)
        fixed_species = {i: next(s for s, c in g.counts.items() if c)
                         for g in groups if not g.is_partial for i in g.sites}
        q_fixed = np.zeros(len(sc))
        for i in fixed:
            q_fixed[i] = oxi[fixed_species[i]]
        q_of_species = np.array([0.0] + [oxi[s] for s in species_list])
        model = EwaldModel(lattice, sc.frac_coords)
    else:
        model = None
        warnings.warn(f"{Path(str(name)).name}: no oxidation states (give oxidation_states); "
                      "orderings are not ranked by electrostatics", OrderingWarning, stacklevel=2)

    def energy(config: np.ndarray) -> float:
        if model is None:
            return float("nan")
        q = q_fixed.copy()
        q[partial] = q_of_species[config]
        return model.energy(q)

    candidates: dict[bytes, np.ndarray] = {}
    n_valid = 0
    if method == "enumerate":
        pairs = np.array([(a, b) for a, nb in enumerate(neighbours) for b in nb if b > a],
                         dtype=np.int64).reshape(-1, 2)
        for config in _enumerate(blocks, len(partial)):
            if len(pairs) and np.any((config[pairs[:, 0]] > 0) & (config[pairs[:, 1]] > 0)):
                continue
            n_valid += 1
            key = _canonical(config, perms)
            candidates.setdefault(key, config)
        rule = (f"all {n_configs} configurations enumerated; {n_valid} obey the exclusion rule; "
                f"{len(candidates)} symmetry-distinct ({len(perms)} symmetry operations)")
    else:
        rng = np.random.default_rng(spec.seed)
        sampler = _Sampler(blocks=blocks, neighbours=neighbours, n_partial=len(partial))
        for _ in range(spec.n_samples):
            config = sampler.draw(rng)
            if config is None:
                raise OrderingError(
                    f"random filling failed 200 times in a row for {name}: the exclusion rule "
                    f"(exclusion_distance_A={spec.exclusion_distance_A:g}) leaves almost no "
                    "room; lower it or check the occupancies")
            n_valid += 1
            candidates.setdefault(_canonical(config, perms), config)
        rule = (f"{n_configs:.4g} configurations: too many to enumerate (max_enumerate="
                f"{spec.max_enumerate}); {spec.n_samples} drawn at random (seed {spec.seed}), "
                f"{len(candidates)} symmetry-distinct, the {spec.n} lowest in Ewald energy kept")
    if len(candidates) < spec.n:
        found = ("has" if method == "enumerate" else
                 f"gave in {spec.n_samples} random draws")
        raise OrderingError(
            f"n={spec.n} orderings asked but {name} {found} only {len(candidates)} "
            f"symmetry-distinct configurations in this supercell ({rule}); ask for n <= "
            f"{len(candidates)}, a larger supercell" + (" or more n_samples"
                                                         if method == "sample" else ""))
    scored = sorted(((energy(c), k, c) for k, c in candidates.items()),
                    key=lambda item: (item[0] if math.isfinite(item[0]) else 0.0, item[1]))
    chosen = [Candidate(rank=r, key=k, config=c, ewald_eV=e)
              for r, (e, k, c) in enumerate(scored[:spec.n])]
    symbols_fixed = {i: next(s for s, c in g.counts.items() if c)
                     for g in groups if not g.is_partial for i in g.sites}
    for cand in chosen:
        cand.atoms = _atoms_of(sc, partial, cand.config, species_list, symbols_fixed)
    if spec.rank_by != "ewald":
        _rerank_by_potential(chosen, potential=spec.rank_by)

    info = {
        "source": str(source),
        "parent_formula": parent.composition.formula,
        "parent_occupancies": [{"label": g.label, "occupancy": g.occupancy,
                                "sites_in_supercell": len(g.sites), "exact": g.exact,
                                "counts": g.counts} for g in groups],
        "supercell_matrix": P.tolist(),
        "n_sites_supercell": len(sc),
        "oxidation_states": oxi,
        "charge_e": charge,
        "rounding": rounding or None,
        "rounding_rule": "largest remainder per site group; greedy charge-neutral "
                         "correction within [floor, ceil]" if spec.charge_neutral else
                         "largest remainder per site group",
        "exclusion_distance_A": spec.exclusion_distance_A,
        "n_configurations": n_configs,
        "n_valid_seen": n_valid,
        "n_distinct": len(candidates),
        "n_symmetry_operations": int(len(perms)),
        "method": method,
        "rule": rule,
        "seed": spec.seed,
        "rank_by": spec.rank_by,
        "spec": spec.model_dump(mode="json"),
    }
    return OrderingResult(candidates=chosen, info=info)


def _enumerate(blocks: list[tuple[np.ndarray, list[int]]], n_partial: int):
    """Every assignment of each group's atoms to its sites (multiset permutations)."""
    per_group = []
    for positions, atoms in blocks:
        options = []
        kinds = sorted(set(atoms))
        counts = [atoms.count(k) for k in kinds]

        def fill(free: tuple, k: int, acc: dict):
            if k == len(kinds):
                yield dict(acc)
                return
            for chosen in itertools.combinations(free, counts[k]):
                rest = tuple(p for p in free if p not in chosen)
                acc.update({p: kinds[k] for p in chosen})
                yield from fill(rest, k + 1, acc)
                for p in chosen:
                    acc.pop(p)
        for assignment in fill(tuple(int(p) for p in positions), 0, {}):
            options.append(assignment)
        per_group.append(options)
    for combo in itertools.product(*per_group):
        config = np.zeros(n_partial, dtype=np.int8)
        for assignment in combo:
            for p, k in assignment.items():
                config[p] = k
        yield config


def _atoms_of(sc: "Structure", partial: np.ndarray, config: np.ndarray,
              species_list: list[str], symbols_fixed: dict[int, str]) -> "Atoms":
    from ase import Atoms

    symbols: list[str | None] = [None] * len(sc)
    for i, s in symbols_fixed.items():
        symbols[i] = s
    for p, k in zip(partial, config):
        symbols[p] = species_list[k - 1] if k else None
    keep = [i for i, s in enumerate(symbols) if s is not None]
    atoms = Atoms(symbols=[symbols[i] for i in keep], cell=sc.lattice.matrix,
                  scaled_positions=sc.frac_coords[keep], pbc=True)
    atoms.wrap()
    return atoms


# --------------------------------------------------------------------------------------
# optional re-ranking by a potential
# --------------------------------------------------------------------------------------
def relaxed_energy(atoms: "Atoms", *, potential: str, fmax_eV_per_A: float = RELAX_FMAX_eV_per_A,
                   max_steps: int = RELAX_MAX_STEPS) -> tuple[float, int, "Atoms"]:
    """Energy after a fixed-cell FIRE relaxation of the positions.

    Through the harness' LAMMPS-backed calculator and relaxation
    (:mod:`harness.statics.relax`: the same pair style as ``harness md``) when they are
    installed, else FIRE with the potential's own ASE calculator.
    """
    try:
        from harness.statics.calculator import LammpsCalculator
        from harness.statics.relax import RelaxSettings, relax_atoms
    except ImportError:
        LammpsCalculator = None  # noqa: N806
    if LammpsCalculator is not None:
        calc = LammpsCalculator(potential, device="cpu")
        try:
            result = relax_atoms(atoms, calc, settings=RelaxSettings(
                fmax_eV_per_A=fmax_eV_per_A, max_steps=max_steps, relax_cell=False))
        finally:
            calc.close()
        if result.energy_eV is None or result.failure_class in ("non_finite", "exploded"):
            raise OrderingError(f"relaxing an ordering with {potential} failed "
                                f"({result.failure_class}: {result.message})")
        return float(result.energy_eV), int(result.n_steps), result.atoms
    from ase.optimize import FIRE

    from potentials.registry import get_potential

    work = atoms.copy()
    work.calc = get_potential(potential, device="cpu").ase_calculator()
    opt = FIRE(work, logfile=None)
    opt.run(fmax=fmax_eV_per_A, steps=max_steps)
    return float(work.get_potential_energy()), int(opt.nsteps), work


def _rerank_by_potential(candidates: list[Candidate], *, potential: str) -> None:
    for cand in candidates:
        energy, steps, _ = relaxed_energy(cand.atoms, potential=potential)
        cand.relaxed_energy_eV, cand.relax_steps = energy, steps
    candidates.sort(key=lambda c: (c.relaxed_energy_eV, c.ewald_eV))
    for r, cand in enumerate(candidates):
        cand.rank = r


# --------------------------------------------------------------------------------------
# output and the MD hook
# --------------------------------------------------------------------------------------
def write_orderings(result: OrderingResult, out: str | os.PathLike[str], *,
                    command: str | None = None) -> Path:
    """``ordering-NNN.cif`` + ``ordering-NNN.vasp`` per candidate and ``manifest.json``."""
    import ase.io

    from harness.md.rundir import atomic_write_json, git_sha, now_iso, package_versions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cand in result.candidates:
        stem = f"ordering-{cand.rank:03d}"
        ase.io.write(out / f"{stem}.cif", cand.atoms, format="cif", parallel=False)
        ase.io.write(out / f"{stem}.vasp", cand.atoms, format="vasp", direct=True, sort=True,
                     parallel=False)
        rows.append({**cand.summary(), "cif": f"{stem}.cif", "poscar": f"{stem}.vasp"})
    manifest = {"kind": "ordering", "created": now_iso(), "command": command,
                **result.info, "orderings": rows, "git_sha": git_sha(),
                "versions": {k: v for k, v in package_versions().items()
                             if k in ("pymatgen", "ase", "spglib", "numpy", "harness")}}
    atomic_write_json(out / "manifest.json", manifest)
    return out / "manifest.json"


def ordered_atoms_for_md(structure: str, spec: OrderingSpec, *, min_length_A: float | None,
                         matrix: Any) -> tuple["Atoms", dict[str, Any]]:
    """The ordering ``spec.index`` of a disordered structure, for ``harness md``.

    Returns (atoms, provenance for the run manifest). The MD spec's supercell is used for
    the ordering when the ordering block names none (and then not applied again).
    """
    result = order_structure(structure, spec, min_length_A=min_length_A, matrix=matrix)
    cand = result.candidates[spec.index]
    atoms = cand.atoms
    atoms.info["source"] = result.info["source"]
    provenance = {k: result.info[k] for k in (
        "source", "supercell_matrix", "method", "rule", "rounding", "rounding_rule", "charge_e",
        "oxidation_states", "n_configurations", "n_distinct", "exclusion_distance_A", "seed",
        "rank_by")}
    provenance.update(index=spec.index, n=spec.n, selected=cand.summary(),
                      all_energies_eV=[c.ewald_eV for c in result.candidates])
    return atoms, provenance
