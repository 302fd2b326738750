"""Vacancy-hop migration barriers: hop enumeration, endpoint relaxation, IDPP, CI-NEB.

``harness neb STRUCTURE --species Li --potential P`` (seed 003's protocol):

1. **Hops.** pymatgen-analysis-diffusion's ``MigrationGraph.with_distance`` connects the
   sites of the mobile species closer than ``cutoff_A`` (default 5 A) and groups the edges
   into symmetry-distinct hops (``unique_hops``). Each hop is built in a diagonal supercell
   whose perpendicular widths are >= ``supercell_min_length_A`` (10 A): the end site's atom
   is removed (the vacancy), the start image has the mover on the start site, the end image
   the same atom list with the mover moved by the hop vector, so both endpoints share one
   atom order. Or give the two endpoint files yourself (``start``/``end``).
2. **Endpoints** are relaxed at fixed cell (FIRE, ``endpoint_fmax_eV_per_A``).
3. **Band.** IDPP interpolation (``n_images`` intermediate images), then climbing-image NEB
   (ASE, improved tangent, FIRE) to ``fmax_eV_per_A``. All images share one LAMMPS instance.
4. **Barrier** = E_TS - (E_i + E_f)/2 (seed 003, eq. 1: kinetically resolved); forward and
   backward barriers are reported too.

Failure classes (seed 003; failed hops are excluded from the MAE):

* ``I`` - computational divergence: a non-finite energy or force, a force above
  ``force_limit_eV_per_A``, atoms closer than ``min_distance_A``, the energy per atom moving
  by more than ``energy_jump_eV_per_atom`` during a relaxation, a calculator/LAMMPS error, or
  a relaxation or band not converged within its step limit.
* ``II`` - unphysical barrier: E_TS < max(E_i, E_f) - ``type2_tolerance_eV``; also endpoints
  that relax into each other (no two distinct minima: the barrier has no meaning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.statics.statics_run import StaticsInputError

FAILURE_TYPES = ("none", "I", "II")


class NEBSpec(BaseModel):
    """One NEB job: every field is a CLI flag and a YAML key."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    structure: str | None = Field(None, description="unit cell (CIF/POSCAR/extxyz/bundled); "
                                  "hops are enumerated in it")
    start: str | None = Field(None, description="explicit start endpoint (same atom order as end)")
    end: str | None = Field(None, description="explicit end endpoint")
    species: str = Field("Li", description="migrating species")
    potential: str = "sevennet-0"
    route: Literal["auto", "native", "mliap", "external"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["lammps", "ase"] = Field("lammps", description="lammps: the LAMMPS-backed "
                                              "calculator; ase: the adapter's own (cross-check)")
    cutoff_A: float = Field(5.0, gt=0, le=10, description="longest hop considered")
    supercell_min_length_A: float = Field(10.0, gt=0, le=50)
    hops: list[str] | None = Field(None, description="only these hop labels (default: all)")
    max_hops: int | None = Field(None, ge=1, description="at most this many (shortest first)")
    n_images: int = Field(5, ge=1, le=30, description="intermediate images")
    climb: bool = True
    spring_constant_eV_per_A2: float = Field(0.1, gt=0)
    fmax_eV_per_A: float = Field(0.05, gt=0, description="NEB convergence (max force on images)")
    max_steps: int = Field(300, ge=1, description="NEB optimiser steps (Type I when exceeded)")
    relax_endpoints: bool = True
    endpoint_fmax_eV_per_A: float = Field(0.02, gt=0)
    endpoint_max_steps: int = Field(500, ge=1)
    type2_tolerance_eV: float = Field(0.005, ge=0, description="Type II when E_TS < "
                                      "max(E_i, E_f) - this")
    force_limit_eV_per_A: float = Field(50.0, gt=0, description="Type I above this force")
    energy_jump_eV_per_atom: float = Field(1.0, gt=0, description="Type I when a relaxation "
                                           "moves the energy per atom by more")
    min_distance_A: float = Field(0.5, ge=0, description="Type I when atoms come closer")
    merge_tolerance_A: float = Field(0.5, gt=0, description="endpoints whose mover ends "
                                     "closer than this have relaxed into each other")
    reference_barrier_eV: float | None = Field(None, description="reference for a single hop")
    reference_barriers_eV: dict[str, float] = Field(default_factory=dict,
                                                    description="hop label -> reference")
    out: str = "runs/neb"

    @model_validator(mode="after")
    def _inputs(self) -> "NEBSpec":
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end endpoint files, or neither")
        if self.structure is None and self.start is None:
            raise ValueError("give a STRUCTURE (hops are enumerated) or --start and --end")
        if self.structure is not None and self.start is not None:
            raise ValueError("give a STRUCTURE or --start/--end, not both")
        return self


# --------------------------------------------------------------------------------------
# hops
# --------------------------------------------------------------------------------------
@dataclass
class Hop:
    label: str
    length_A: float
    start: Any  # ase.Atoms, mover on the start site
    end: Any    # ase.Atoms, same atom order
    mover: int
    info: dict[str, Any] = field(default_factory=dict)


def enumerate_hops(unit_cell: Any, *, species: str, cutoff_A: float,
                   supercell_min_length_A: float) -> list[Hop]:
    """Symmetry-distinct vacancy hops of ``species`` shorter than ``cutoff_A``, shortest first."""
    from pymatgen.analysis.diffusion.neb.full_path_mapper import MigrationGraph
    from pymatgen.io.ase import AseAtomsAdaptor

    from harness.structures import make_supercell, supercell_matrix_for_min_length

    symbols = unit_cell.get_chemical_symbols()
    if species not in symbols:
        raise StaticsInputError(f"the structure holds no {species} (elements: "
                                f"{', '.join(sorted(set(symbols)))}); pass --species")
    if symbols.count(species) < 2 and len(unit_cell) > 0:
        pass  # a single site connects to its own images: still a hop in the supercell
    structure = AseAtomsAdaptor.get_structure(unit_cell)
    graph = MigrationGraph.with_distance(structure, species, max_distance=cutoff_A)
    hops_found = sorted(graph.unique_hops.items(), key=lambda kv: (kv[1]["hop"].length, kv[0]))
    if not hops_found:
        raise StaticsInputError(f"no {species}-{species} hop shorter than {cutoff_A:g} A in "
                                "this structure; raise --cutoff-A")
    P = supercell_matrix_for_min_length(unit_cell.cell, min_length_A=supercell_min_length_A)
    supercell = make_supercell(unit_cell, matrix=P)
    sc_symbols = np.array(supercell.get_chemical_symbols())
    hops = []
    for label, data in hops_found:
        hop = data["hop"]
        i_cart = np.asarray(hop.isite.coords, float)
        vector = np.asarray(hop.esite.coords, float) - i_cart
        a = _site_index(supercell, i_cart, species=species, symbols=sc_symbols)
        b = _site_index(supercell, i_cart + vector, species=species, symbols=sc_symbols)
        if a == b:
            raise StaticsInputError(f"hop {label} maps onto one site in the supercell; raise "
                                    "--supercell-min-length-A")
        start = supercell.copy()
        del start[b]
        mover = a - (1 if b < a else 0)
        end = start.copy()
        end.positions[mover] = start.positions[mover] + vector
        hops.append(Hop(label=f"hop{label}", length_A=float(np.linalg.norm(vector)), start=start,
                        end=end, mover=mover,
                        info={"pymatgen_hop_label": int(label),
                              "isite_frac": [round(float(x), 5) for x in hop.isite.frac_coords],
                              "esite_frac": [round(float(x), 5) for x in hop.esite.frac_coords],
                              "supercell_matrix": P.tolist(),
                              "n_equivalent_edges": sum(1 for *_, d in
                                                        graph.m_graph.graph.edges(data=True)
                                                        if d.get("hop_label") == label)}))
    return hops


def _site_index(atoms: Any, position: np.ndarray, *, species: str, symbols: np.ndarray) -> int:
    from ase.geometry import get_distances

    candidates = np.flatnonzero(symbols == species)
    _, d = get_distances(position[None, :], atoms.positions[candidates], cell=atoms.cell,
                         pbc=True)
    k = int(np.argmin(d[0]))
    if d[0, k] > 0.05:
        raise StaticsInputError(f"no {species} atom within 0.05 A of a hop site in the supercell "
                                f"(closest {d[0, k]:.3f} A)")
    return int(candidates[k])


def hop_from_endpoints(start: Any, end: Any, *, label: str = "hop0") -> Hop:
    """A hop given as two endpoint structures with one atom order (e.g. DFT CONTCARs)."""
    from ase.geometry import find_mic

    if len(start) != len(end) or start.get_chemical_symbols() != end.get_chemical_symbols():
        raise StaticsInputError("start and end must hold the same atoms in the same order "
                                f"(start {start.get_chemical_formula()} with {len(start)} atoms, "
                                f"end {end.get_chemical_formula()} with {len(end)} atoms)")
    if not np.allclose(start.cell.array, end.cell.array, atol=1e-3):
        raise StaticsInputError("start and end have different cells; NEB needs one cell")
    disp, dist = find_mic(end.positions - start.positions, start.cell, pbc=True)
    mover = int(np.argmax(dist))
    end = end.copy()
    end.positions = start.positions + disp  # unwrapped: the band does not jump across the cell
    return Hop(label=label, length_A=float(dist[mover]), start=start.copy(), end=end,
               mover=mover, info={"mover_element": start[mover].symbol,
                                  "mover_index": mover,
                                  "other_atoms_rms_shift_A": float(np.sqrt(np.mean(
                                      np.delete(dist, mover) ** 2))) if len(dist) > 1 else 0.0})


# --------------------------------------------------------------------------------------
# guarded evaluation (Type I detection)
# --------------------------------------------------------------------------------------
class Divergence(RuntimeError):
    """Type I: the potential or the relaxation diverged."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_state(atoms: Any, energy: float, forces: np.ndarray, *, spec: NEBSpec,
                e0_per_atom: float | None, where: str) -> None:
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise Divergence("non_finite", f"{where}: non-finite energy or forces")
    fmax = float(np.sqrt((forces ** 2).sum(axis=1)).max())
    if fmax > spec.force_limit_eV_per_A:
        raise Divergence("force_explosion", f"{where}: force {fmax:.3g} eV/A exceeds "
                         f"{spec.force_limit_eV_per_A:g} eV/A")
    if e0_per_atom is not None:
        jump = abs(energy / len(atoms) - e0_per_atom)
        if jump > spec.energy_jump_eV_per_atom:
            raise Divergence("energy_jump", f"{where}: energy per atom moved by {jump:.3g} eV "
                             f"(limit {spec.energy_jump_eV_per_atom:g})")
    if spec.min_distance_A > 0:
        dmin = min_distance(atoms)
        if dmin < spec.min_distance_A:
            raise Divergence("atoms_too_close", f"{where}: atoms {dmin:.3f} A apart (limit "
                             f"{spec.min_distance_A:g} A)")


def min_distance(atoms: Any) -> float:
    from matscipy.neighbours import neighbour_list

    d = neighbour_list("d", atoms, 1.5)
    return float(d.min()) if len(d) else math.inf


def _evaluate(atoms: Any, where: str) -> tuple[float, np.ndarray]:
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), float)
    except Divergence:
        raise
    except Exception as exc:  # noqa: BLE001 - a LAMMPS/model error during a relaxation is Type I
        raise Divergence("calculator_error", f"{where}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return energy, forces


def relax_positions(atoms: Any, calc: Any, *, spec: NEBSpec, where: str) -> dict[str, Any]:
    """FIRE at fixed cell with divergence checks every step; raises Divergence."""
    from ase.optimize import FIRE

    atoms.calc = calc
    energy, forces = _evaluate(atoms, where)
    e0 = energy / len(atoms)
    check_state(atoms, energy, forces, spec=spec, e0_per_atom=None, where=where)
    initial = energy

    def guard() -> None:
        e, f = _evaluate(atoms, where)
        check_state(atoms, e, f, spec=spec, e0_per_atom=e0, where=where)

    opt = FIRE(atoms, logfile=None)
    opt.attach(guard, interval=1)
    try:
        converged = bool(opt.run(fmax=spec.endpoint_fmax_eV_per_A, steps=spec.endpoint_max_steps))
    except Divergence:
        raise
    except Exception as exc:  # noqa: BLE001
        raise Divergence("calculator_error", f"{where}: {type(exc).__name__}: {exc}") from exc
    energy, forces = _evaluate(atoms, where)
    fmax = float(np.sqrt((forces ** 2).sum(axis=1)).max())
    if not converged:
        raise Divergence("not_converged", f"{where}: relaxation not converged in "
                         f"{spec.endpoint_max_steps} steps (max force {fmax:.3g} eV/A > "
                         f"{spec.endpoint_fmax_eV_per_A:g})")
    return {"energy_eV": energy, "initial_energy_eV": initial, "steps": int(opt.nsteps),
            "fmax_eV_per_A": fmax}


def _freeze(atoms: Any) -> Any:
    """Endpoint with its energy and forces stored (NEB re-reads them every step)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frozen = atoms.copy()
    frozen.calc = SinglePointCalculator(frozen, energy=float(atoms.get_potential_energy()),
                                        forces=np.asarray(atoms.get_forces()))
    return frozen


# --------------------------------------------------------------------------------------
# one hop
# --------------------------------------------------------------------------------------
def run_hop(hop: Hop, calc: Any, *, spec: NEBSpec, out: Path) -> dict[str, Any]:
    """Relax, interpolate, CI-NEB; returns the barriers.csv row (never raises for Type I/II)."""
    import time

    from ase.geometry import find_mic

    t0 = time.perf_counter()
    row: dict[str, Any] = {"hop": hop.label, "length_A": hop.length_A, "barrier_eV": math.nan,
                           "failure_type": "none", "failure_reason": "", "message": "",
                           "barrier_forward_eV": math.nan, "barrier_backward_eV": math.nan,
                           "E_initial_eV": math.nan, "E_final_eV": math.nan, "E_TS_eV": math.nan,
                           "ts_image": None, "n_images": spec.n_images, "n_atoms": len(hop.start),
                           "mover_index": hop.mover, "endpoint_steps_start": None,
                           "endpoint_steps_end": None, "neb_steps": None, "neb_converged": False,
                           "neb_fmax_eV_per_A": math.nan, "relaxed_hop_length_A": math.nan,
                           "reference_barrier_eV": _reference(spec, hop.label),
                           "error_eV": math.nan, "wall_s": math.nan}
    hop_dir = out / "hops" / hop.label
    hop_dir.mkdir(parents=True, exist_ok=True)
    start, end = hop.start.copy(), hop.end.copy()
    try:
        if spec.relax_endpoints:
            rs = relax_positions(start, calc, spec=spec, where=f"{hop.label} start relaxation")
            row["endpoint_steps_start"] = rs["steps"]
            re_ = relax_positions(end, calc, spec=spec, where=f"{hop.label} end relaxation")
            row["endpoint_steps_end"] = re_["steps"]
        else:
            for atoms, where in ((start, "start"), (end, "end")):
                atoms.calc = calc
                e, f = _evaluate(atoms, f"{hop.label} {where}")
                check_state(atoms, e, f, spec=spec, e0_per_atom=None,
                            where=f"{hop.label} {where}")
        _, sep = find_mic(end.positions[hop.mover] - start.positions[hop.mover], start.cell)
        row["relaxed_hop_length_A"] = float(sep)
        e_i, e_f = float(start.get_potential_energy()), float(end.get_potential_energy())
        row.update(E_initial_eV=e_i, E_final_eV=e_f)
        start_frozen, end_frozen = _freeze(start), _freeze(end)
        _write_structure(hop_dir / "start_relaxed.extxyz", start_frozen)
        _write_structure(hop_dir / "end_relaxed.extxyz", end_frozen)
        if sep < spec.merge_tolerance_A:
            row.update(failure_type="II", failure_reason="endpoints_merged",
                       message=f"{hop.label}: the endpoints relaxed into each other (mover "
                               f"{sep:.3f} A apart after relaxation, < {spec.merge_tolerance_A:g} "
                               "A): no two distinct minima, no barrier")
            return _finish(row, t0)
        images, neb_info = run_band(start_frozen, end_frozen, calc, spec=spec,
                                    where=hop.label)
        row.update(neb_steps=neb_info["steps"], neb_converged=neb_info["converged"],
                   neb_fmax_eV_per_A=neb_info["fmax"])
        energies = np.array(neb_info["energies"])
        path = _reaction_coordinate(images)
        _write_band(hop_dir, images, energies, path)
        k = int(np.argmax(energies[1:-1])) + 1
        e_ts = float(energies[k])
        row.update(E_TS_eV=e_ts, ts_image=k,
                   barrier_forward_eV=e_ts - e_i, barrier_backward_eV=e_ts - e_f,
                   barrier_eV=e_ts - 0.5 * (e_i + e_f))
        row["_mep"] = {"reaction_coordinate_A": path.tolist(),
                       "energy_eV": (energies - e_i).tolist()}
        if not neb_info["converged"]:
            row.update(failure_type="I", failure_reason="neb_not_converged",
                       message=f"{hop.label}: NEB not converged in {spec.max_steps} steps "
                               f"(max force {neb_info['fmax']:.3g} > {spec.fmax_eV_per_A:g} eV/A)")
        elif e_ts < max(e_i, e_f) - spec.type2_tolerance_eV:
            row.update(failure_type="II", failure_reason="ts_below_endpoint",
                       message=f"{hop.label}: E_TS is {max(e_i, e_f) - e_ts:.3f} eV below the "
                               "higher endpoint (unphysical barrier)")
    except Divergence as exc:
        row.update(failure_type="I", failure_reason=exc.reason, message=str(exc))
    return _finish(row, t0)


def _finish(row: dict[str, Any], t0: float) -> dict[str, Any]:
    import time

    row["wall_s"] = round(time.perf_counter() - t0, 3)
    if row["failure_type"] != "none":
        row["barrier_eV_if_failed"] = row["barrier_eV"]
        row["barrier_eV"] = math.nan  # a failed hop has no barrier to defend
    elif row["reference_barrier_eV"] is not None and math.isfinite(row["barrier_eV"]):
        row["error_eV"] = row["barrier_eV"] - row["reference_barrier_eV"]
    return row


def _reference(spec: NEBSpec, label: str) -> float | None:
    if label in spec.reference_barriers_eV:
        return float(spec.reference_barriers_eV[label])
    return spec.reference_barrier_eV


class ImageCalculator(Calculator):
    """Per-image cache in front of the one shared (LAMMPS) calculator.

    ASE's NEB asks every image for its energy and forces several times per optimiser step;
    a calculator shared by all images would recompute each time (its cache holds only the
    last image). This proxy keeps each image's own results until that image moves, so
    every image costs one ``run 0`` per step.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, shared: Any) -> None:
        super().__init__()
        self.shared = shared

    def calculate(self, atoms: Any = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        probe = self.atoms.copy()
        probe.calc = self.shared
        energy = float(probe.get_potential_energy())
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": np.array(probe.get_forces())}


def run_band(start: Any, end: Any, calc: Any, *, spec: NEBSpec,
             where: str) -> tuple[list[Any], dict[str, Any]]:
    """IDPP band + CI-NEB; raises Divergence (Type I) on non-finite/exploding states."""
    from ase.mep import NEB
    from ase.optimize import FIRE

    images = [start] + [start.copy() for _ in range(spec.n_images)] + [end]
    for image in images[1:-1]:
        image.calc = ImageCalculator(calc)
    neb = NEB(images, k=spec.spring_constant_eV_per_A2, climb=spec.climb,
              method="improvedtangent")
    neb.interpolate(method="idpp", mic=False)  # end is unwrapped relative to start
    e0 = float(start.get_potential_energy()) / len(start)

    def guard() -> None:
        for i, image in enumerate(images[1:-1], start=1):
            e = float(neb.energies[i])
            f = np.asarray(neb.real_forces[i])
            check_state(image, e, f, spec=spec, e0_per_atom=e0, where=f"{where} NEB image {i}")

    opt = FIRE(neb, logfile=None)
    opt.attach(guard, interval=1)
    try:
        converged = bool(opt.run(fmax=spec.fmax_eV_per_A, steps=spec.max_steps))
    except Divergence:
        raise
    except Exception as exc:  # noqa: BLE001 - LAMMPS/model error inside the band
        raise Divergence("calculator_error", f"{where} NEB: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    forces = neb.get_forces()
    fmax = float(np.sqrt((forces.reshape(-1, 3) ** 2).sum(axis=1)).max())
    energies = [float(start.get_potential_energy())] + \
        [float(neb.energies[i]) for i in range(1, len(images) - 1)] + \
        [float(end.get_potential_energy())]
    return images, {"steps": int(opt.nsteps), "converged": converged, "fmax": fmax,
                    "energies": energies}


def _reaction_coordinate(images: list[Any]) -> np.ndarray:
    steps = [np.linalg.norm(images[i + 1].positions - images[i].positions)
             for i in range(len(images) - 1)]
    return np.concatenate([[0.0], np.cumsum(steps)])


def _write_structure(path: Path, atoms: Any) -> None:
    from ase.io import write

    write(path, atoms, format="extxyz", parallel=False)


def _write_band(hop_dir: Path, images: list[Any], energies: np.ndarray, path: np.ndarray) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from analysis.output import write_csv

    frames = []
    for atoms, e in zip(images, energies):
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=float(e))
        frames.append(frame)
    write(hop_dir / "band.extxyz", frames, format="extxyz", parallel=False)
    write_csv(hop_dir / "mep.csv", ["image", "reaction_coordinate_A", "energy_eV",
                                    "energy_rel_initial_eV"],
              np.column_stack([np.arange(len(images)), path, energies, energies - energies[0]]))


# --------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------
@dataclass
class NEBResult:
    out: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def load_hops(spec: NEBSpec) -> list[Hop]:
    from harness.structures import load_structure

    if spec.start is not None:
        hops = [hop_from_endpoints(load_structure(spec.start), load_structure(spec.end))]
        if hops[0].start[hops[0].mover].symbol != spec.species:
            raise StaticsInputError(f"the atom that moves most between start and end is "
                                    f"{hops[0].start[hops[0].mover].symbol} (index "
                                    f"{hops[0].mover}), not {spec.species}; check the files or "
                                    "--species")
        return hops
    hops = enumerate_hops(load_structure(spec.structure), species=spec.species,
                          cutoff_A=spec.cutoff_A,
                          supercell_min_length_A=spec.supercell_min_length_A)
    if spec.hops:
        known = [h.label for h in hops]
        unknown = sorted(set(spec.hops) - set(known))
        if unknown:
            raise StaticsInputError(f"unknown hop label(s) {', '.join(unknown)}; this structure "
                                    f"has {', '.join(known)}")
        hops = [h for h in hops if h.label in spec.hops]
    if spec.max_hops:
        hops = hops[:spec.max_hops]
    return hops


def run_neb(spec: NEBSpec, *, force: bool = False, comm: Any = None) -> NEBResult:
    """Every hop of ``spec``; writes the output folder (see the module docstring)."""
    from harness.md.rundir import now_iso
    from harness.statics.statics_run import (Stopwatch, open_calculator, prepare_out_dir,
                                             write_json, write_manifest)

    hops = load_hops(spec)
    out = prepare_out_dir(spec.out, force=force)
    started, clock = now_iso(), Stopwatch()
    spec_dict = spec.model_dump(mode="json")
    write_manifest(out, kind="neb", spec=spec_dict, potential={"name": spec.potential},
                   status="running", started=started)
    rows: list[dict[str, Any]] = []
    potential: dict[str, Any] = {"name": spec.potential}
    try:
        with open_calculator(spec.potential, route=spec.route, device=spec.device,
                             workdir=out / "lammps", backend=spec.backend,
                             comm=comm) as (calc, potential):
            for hop in hops:
                rows.append(run_hop(hop, calc, spec=spec, out=out))
                _write_tables(out, rows, spec)  # partial results survive a crash
    except Exception as exc:
        write_manifest(out, kind="neb", spec=spec_dict, potential=potential, status="failed",
                       started=started, wall_s=clock.seconds, error=f"{type(exc).__name__}: {exc}")
        raise
    summary = summarize(rows, spec=spec, wall_s=clock.seconds, potential=potential)
    write_json(out / "neb.json", summary)
    outputs = _write_tables(out, rows, spec)
    try:
        outputs.append(str(plot_mep(rows, out / "mep.png", title=f"{spec.potential}: CI-NEB")
                           .name))
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
        summary.setdefault("notes", []).append(f"MEP plot failed: {exc}")
        write_json(out / "neb.json", summary)
    write_manifest(out, kind="neb", spec=spec_dict, potential=potential, status="completed",
                   started=started, wall_s=clock.seconds,
                   outputs=outputs + ["neb.json", "manifest.json"],
                   extra={"hops": [{"hop": h.label, **h.info} for h in hops]})
    return NEBResult(out=out, rows=rows, summary=summary)


BARRIER_COLUMNS = ["hop", "length_A", "barrier_eV", "failure_type", "failure_reason",
                   "barrier_forward_eV", "barrier_backward_eV", "E_initial_eV", "E_final_eV",
                   "E_TS_eV", "ts_image", "n_images", "n_atoms", "mover_index",
                   "relaxed_hop_length_A", "endpoint_steps_start", "endpoint_steps_end",
                   "neb_steps", "neb_converged", "neb_fmax_eV_per_A", "reference_barrier_eV",
                   "error_eV", "barrier_eV_if_failed", "wall_s", "message"]


def _write_tables(out: Path, rows: list[dict[str, Any]], spec: NEBSpec) -> list[str]:
    import pandas as pd

    from harness.md.rundir import atomic_write_text

    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    for c in BARRIER_COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    atomic_write_text(out / "barriers.csv", df[BARRIER_COLUMNS].to_csv(index=False))
    return ["barriers.csv"]


def summarize(rows: list[dict[str, Any]], *, spec: NEBSpec, wall_s: float,
              potential: dict[str, Any]) -> dict[str, Any]:
    ok = [r for r in rows if r["failure_type"] == "none"]
    with_ref = [r for r in ok if r["reference_barrier_eV"] is not None]
    errors = np.array([r["error_eV"] for r in with_ref], float)
    counts = {t: sum(1 for r in rows if r["failure_type"] == t) for t in FAILURE_TYPES}
    return {
        "potential": spec.potential, "route": potential.get("route"),
        "backend": potential.get("backend"), "species": spec.species,
        "n_hops": len(rows), "n_ok": len(ok),
        "n_failed_type_I": counts["I"], "n_failed_type_II": counts["II"],
        "barriers_eV": {r["hop"]: (None if not math.isfinite(r["barrier_eV"]) else r["barrier_eV"])
                        for r in rows},
        "failures": {r["hop"]: {"type": r["failure_type"], "reason": r["failure_reason"],
                                "message": r["message"]}
                     for r in rows if r["failure_type"] != "none"},
        "n_with_reference": len(with_ref),
        "mae_eV": float(np.abs(errors).mean()) if len(errors) else None,
        "mae_excludes": "hops with failure_type I or II (seed 003)",
        "barrier_definition": "E_TS - (E_initial + E_final) / 2 (seed 003 eq. 1)",
        "wall_s": round(wall_s, 2),
        "mep": {r["hop"]: r["_mep"] for r in rows if "_mep" in r},
    }


def plot_mep(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.output import write_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    drawn = 0
    for k, r in enumerate(rows):
        mep = r.get("_mep")
        if not mep:
            continue
        x, y = np.array(mep["reaction_coordinate_A"]), np.array(mep["energy_eV"])
        label = f"{r['hop']} ({r['length_A']:.2f} A): "
        label += (f"{r['barrier_eV']:.3f} eV" if r["failure_type"] == "none"
                  else f"failed, type {r['failure_type']}")
        style = "-" if r["failure_type"] == "none" else ":"
        ax.plot(x, y, style, marker="o", ms=4, color=f"C{k % 10}", label=label)
        if r["ts_image"] is not None:
            ax.plot(x[r["ts_image"]], y[r["ts_image"]], "*", ms=12, color=f"C{k % 10}")
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no hop produced a band", ha="center", va="center",
                transform=ax.transAxes)
    ax.axhline(0.0, color="0.6", lw=0.7)
    ax.set_xlabel("reaction coordinate (A)")
    ax.set_ylabel("E - E(initial) (eV)")
    ax.set_title(title + "; star = climbing image", fontsize=9)
    if drawn:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path
