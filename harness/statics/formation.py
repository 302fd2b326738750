"""``harness formation``: formation energy and energy above the hull with one potential.

Every energy is the potential's own, through :class:`LammpsCalculator` (``run 0`` of the MD
pair style): the target structure, each elemental reference and each competing phase are
relaxed (cell and ions, :mod:`harness.statics.relax`) and their energies taken at the end.
As in matcalc's ``EnergeticsCalc`` the elemental chemical potential mu_el is the lowest
energy per atom among the given polymorphs of that element (never a DFT number), and

    E_form = [E(target) - sum_el n_el mu_el] / N.

E_above_hull uses pymatgen's ``PhaseDiagram`` over the elemental references, the supplied
competing phases and the target: ``e_above_hull_eV_per_atom`` (>= 0, the target included in
the hull) and ``hull_distance_eV_per_atom`` (signed: the hull built without the target; < 0
means the target would be a new stable phase), with the decomposition products.

MP compatibility. Hull energies are only comparable with the Materials Project's when they
sit on the MP2020 scale (anion and GGA/GGA+U mixing corrections). Which treatment a model
needs depends on the energies it was trained on, and we measured it (README "Statics"):
on five WBM selenides/tellurides/sulfides whose MP2020 correction is 0.21-0.25 eV/atom,
SevenNet-0 reproduces the *uncorrected* DFT energies (mean |dE| 0.022 eV/atom, vs 0.22 to the
corrected ones) and CHGNet 0.3.0 the *corrected* ones (0.055 vs 0.27): CHGNet was trained on
MP2020-corrected MPtrj energies. Hence ``compatibility="auto"``:

* ``mp2020``: apply ``MaterialsProject2020Compatibility`` (pymatgen, ``check_potcar=False``,
  GGA+U with MP's U values when O or F meets Co, Cr, Fe, Mn, Mo, Ni, V, W) to every entry;
  for SevenNet (MPtrj), MACE-MP/MPA and MatterSim (uncorrected PBE(+U) training data);
* ``mp2020_included``: CHGNet: its energies already carry the corrections; nothing added;
* ``none``: everything else (classical, DeePMD, custom MACE): raw model energies.

The treatment used is written into ``formation.json`` (``compatibility``) with the reason.
Entries MP2020 refuses (unsupported chemistry) are an error naming the entry.

refs.json: ``{"Li": "Li.cif", "S": ["S_alpha.cif", "S_beta.vasp"], ...}`` (paths relative
to the file), or matcalc's/MP's element-reference format ``{"Li": {"structure": [pymatgen
dicts], "energy_per_atom": [...]}}`` (the shared ``mp_pbe_element_refs_subset.json.gz``);
for an element missing from it, ASE's ``bulk(element)`` reference crystal is used when ASE
knows one (it is stated in the output), else the run stops and asks for a structure.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.statics.relax import RelaxationFailed, RelaxSettings, relax_atoms
from harness.statics.statics_run import StaticsInputError

Compatibility = Literal["auto", "mp2020", "mp2020_included", "none"]

#: MP's GGA+U values (MPRelaxSet), applied by MP2020 to oxides and fluorides of these metals
MP_U_VALUES_eV = {"Co": 3.32, "Cr": 3.7, "Fe": 5.3, "Mn": 3.9, "Mo": 4.38, "Ni": 6.2,
                  "V": 3.25, "W": 6.2}

#: which treatment each potential family needs (see the module docstring for the evidence)
_AUTO = (
    (("chgnet",), "mp2020_included",
     "CHGNet 0.3.0 was trained on MP2020-corrected MPtrj energies (measured: it reproduces "
     "corrected WBM energies); corrections are not applied again"),
    (("sevennet", "mace-mp", "mace-mpa", "mattersim"), "mp2020",
     "trained on uncorrected MP-compatible PBE(+U) energies (SevenNet-0 measured to reproduce "
     "uncorrected WBM energies): MaterialsProject2020Compatibility applied to every entry"),
)


class FormationSpec(BaseModel):
    """``harness formation`` options (also the YAML keys)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    structure: str = Field(..., description="the compound (CIF, POSCAR, extxyz, bundled name)")
    potential: str
    references: str | None = Field(None, description="refs.json: element -> structure file(s), "
                                   "or the MP/matcalc element-reference format")
    phases: list[str] = Field(default_factory=list, description="competing phases (structure "
                              "files) for E_above_hull")
    route: Literal["auto", "native", "mliap", "external"] = "auto"
    device: str = "auto"
    compatibility: Compatibility = "auto"
    max_polymorphs: int = Field(3, ge=1, description="elemental polymorphs relaxed per element "
                                "(lowest DFT energy first when the file gives energies)")
    relax: bool = Field(True, description="relax every structure (cell and ions) first")
    fmax_eV_per_A: float = Field(0.02, gt=0)
    smax_GPa: float = Field(0.1, gt=0)
    max_steps: int = Field(1000, gt=0)
    out: str = "formation"


def resolve_compatibility(potential_name: str, requested: str) -> tuple[str, str]:
    if requested != "auto":
        return requested, "requested explicitly"
    name = potential_name.lower()
    for prefixes, scheme, reason in _AUTO:
        if any(name.startswith(p) for p in prefixes):
            return scheme, reason
    return "none", ("no known MP training scale for this potential: raw energies (pass "
                    "--compatibility mp2020 for a model trained on uncorrected MP PBE(+U) data)")


def mp2020_energy(atoms: Any, energy_eV: float) -> tuple[float, float]:
    """(corrected energy, correction) for a structure with a raw GGA(+U)-scale energy."""
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedStructureEntry
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(atoms)
    elements = {el.symbol for el in structure.composition}
    hubbards = ({el: MP_U_VALUES_eV[el] for el in elements if el in MP_U_VALUES_eV}
                if elements & {"O", "F"} else {})
    entry = ComputedStructureEntry(structure, energy_eV, parameters={
        "run_type": "GGA+U" if hubbards else "GGA", "is_hubbard": bool(hubbards),
        "hubbards": hubbards})
    import warnings

    with warnings.catch_warnings():
        # intermetallics: "Failed to guess oxidation states ... most electronegative atom"
        warnings.filterwarnings("ignore", message="Failed to guess oxidation states")
        processed = MaterialsProject2020Compatibility(check_potcar=False).process_entry(
            entry, clean=True)
    if processed is None:
        raise StaticsInputError(f"MaterialsProject2020Compatibility refuses "
                                f"{structure.composition.reduced_formula} (unsupported "
                                "chemistry); use --compatibility none")
    return float(processed.energy), float(processed.correction)


# --- inputs -----------------------------------------------------------------------------------
def _atoms_from(item: Any, *, base: Path) -> Any:
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    from harness.structures import load_structure

    if isinstance(item, dict):
        return AseAtomsAdaptor.get_atoms(Structure.from_dict(item))
    path = Path(item)
    if not path.is_absolute():
        path = base / path
    return load_structure(str(path))


def load_references(path: str | None, elements: list[str], *,
                    max_polymorphs: int) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Element -> candidate structures, and where each element's candidates came from."""
    data: dict[str, Any] = {}
    base = Path(".")
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise StaticsInputError(f"references file not found: {file}")
        opener = gzip.open if file.suffix == ".gz" else open
        try:
            with opener(file, "rt") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            raise StaticsInputError(f"cannot read {file} as JSON ({exc}); give "
                                    '{"Li": "Li.cif", ...}') from exc
        if not isinstance(data, dict):
            raise StaticsInputError(f"{file} must map element symbols to structures")
        base = file.parent
    candidates: dict[str, list[Any]] = {}
    sources: dict[str, str] = {}
    for el in elements:
        entry = data.get(el)
        if entry is None:
            from ase.build import bulk

            try:
                candidates[el] = [bulk(el)]
            except (ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
                raise StaticsInputError(
                    f"no reference structure for {el}: ASE has no bulk reference crystal for "
                    f"it ({exc}); add \"{el}\": \"{el}.cif\" to the references file") from exc
            sources[el] = "ase.build.bulk (reference crystal)"
            continue
        if isinstance(entry, dict) and "structure" in entry:
            structures = entry["structure"]
            structures = structures if isinstance(structures, list) else [structures]
            energies = entry.get("energy_per_atom")
            order = (np.argsort(energies) if isinstance(energies, list)
                     and len(energies) == len(structures) else range(len(structures)))
            chosen = [structures[i] for i in list(order)[:max_polymorphs]]
            sources[el] = (f"{path}: {len(chosen)} of {len(structures)} polymorphs"
                           + (" (lowest DFT energy first)" if energies is not None else ""))
        else:
            items = entry if isinstance(entry, list) else [entry]
            chosen = items[:max_polymorphs]
            sources[el] = f"{path}: {', '.join(map(str, chosen))}"
        candidates[el] = [_atoms_from(item, base=base) for item in chosen]
        for atoms in candidates[el]:
            if set(atoms.get_chemical_symbols()) != {el}:
                raise StaticsInputError(f"reference for {el} in {path} contains "
                                        f"{atoms.get_chemical_formula()}")
    return candidates, sources


# --- the workflow -----------------------------------------------------------------------------
def run_formation(spec: FormationSpec, *, force: bool = False) -> dict[str, Any]:
    import pandas as pd
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    from harness.md.rundir import now_iso
    from harness.statics.calculator import LammpsCalculator
    from harness.statics.relax import load_checked_structure
    from harness.statics.statics_run import (Stopwatch, _model_info, prepare_out_dir,
                                             write_json, write_manifest)
    from harness.statics.tables import write_table
    from harness.structures import default_specorder, load_structure
    from potentials.registry import get_potential

    target = load_checked_structure(spec.structure)
    phases = []
    for p in spec.phases:
        if not Path(p).is_file():
            raise StaticsInputError(f"competing phase file not found: {p}")
        phases.append((p, load_structure(p)))
    elements = default_specorder(sorted(set(target.get_chemical_symbols())))
    for name, atoms in phases:
        extra = set(atoms.get_chemical_symbols()) - set(elements)
        if extra:
            raise StaticsInputError(f"competing phase {name} contains {sorted(extra)}, which "
                                    f"the target {target.get_chemical_formula()} does not")
    refs, ref_sources = load_references(spec.references, elements,
                                        max_polymorphs=spec.max_polymorphs)
    potential = get_potential(spec.potential, route=spec.route, device=spec.device)
    from harness.statics.calculator import check_coverage

    check_coverage(potential, elements)
    scheme, scheme_reason = resolve_compatibility(spec.potential, spec.compatibility)
    out = prepare_out_dir(spec.out, force=force)
    started, clock = now_iso(), Stopwatch()
    spec_dict = spec.model_dump(mode="json")
    provenance = _model_info(potential)
    write_manifest(out, kind="formation", spec=spec_dict, potential=provenance,
                   status="running", started=started)
    settings = RelaxSettings(fmax_eV_per_A=spec.fmax_eV_per_A, smax_GPa=spec.smax_GPa,
                             max_steps=spec.max_steps, relax_cell=True)
    rows: list[dict[str, Any]] = []

    def evaluate(role: str, name: str, atoms: Any, calc: Any) -> dict[str, Any]:
        steps = 0
        if spec.relax:
            res = relax_atoms(atoms, calc, settings=settings)
            if not res.converged:
                write_manifest(out, kind="formation", spec=spec_dict, potential=provenance,
                               status="failed", started=started, wall_s=clock.seconds,
                               extra={"failure_class": res.failure_class, "stage": name},
                               error=res.message)
                raise RelaxationFailed(
                    f"relaxation of {role} {name} ({atoms.get_chemical_formula()}) failed "
                    f"({res.failure_class}): {res.message}; no formation energy written",
                    failure={"failure_class": res.failure_class, "stage": name})
            atoms, steps = res.atoms, res.n_steps
        atoms = atoms.copy()
        atoms.calc = calc
        energy = float(atoms.get_potential_energy())
        atoms.calc = None
        corrected, correction = (mp2020_energy(atoms, energy) if scheme == "mp2020"
                                 else (energy, 0.0))
        row = {"role": role, "name": name, "formula": atoms.get_chemical_formula(),
               "reduced_formula": Composition(atoms.get_chemical_formula()).reduced_formula,
               "n_atoms": len(atoms), "relax_steps": steps, "energy_eV": energy,
               "energy_eV_per_atom": energy / len(atoms), "correction_eV": correction,
               "hull_energy_eV": corrected,
               "hull_energy_eV_per_atom": corrected / len(atoms),
               "volume_per_atom_A3": float(atoms.get_volume() / len(atoms))}
        rows.append(row)
        return row

    with LammpsCalculator(potential, workdir=out / "lammps", type_elements=elements) as calc:
        mu: dict[str, float] = {}
        mu_raw: dict[str, float] = {}
        for el in elements:
            best = None
            for k, atoms in enumerate(refs[el]):
                row = evaluate("element", f"{el}#{k}", atoms, calc)
                if best is None or row["hull_energy_eV_per_atom"] < best["hull_energy_eV_per_atom"]:
                    best = row
            mu[el] = best["hull_energy_eV_per_atom"]
            mu_raw[el] = best["energy_eV_per_atom"]
            best["is_reference"] = True
        phase_rows = [evaluate("phase", Path(name).name, atoms, calc) for name, atoms in phases]
        target_row = evaluate("target", Path(spec.structure).name, target, calc)
        provenance["route"] = calc.route
        calls = dict(calc.counts)

    def e_form(row: dict[str, Any], *, energies: dict[str, float], key: str) -> float:
        comp = Composition(row["formula"])
        return (row[key] - sum(energies[el.symbol] * n for el, n in comp.items())) / row["n_atoms"]

    for row in rows:
        row["formation_energy_eV_per_atom"] = e_form(row, energies=mu, key="hull_energy_eV")
        row["formation_energy_raw_eV_per_atom"] = e_form(row, energies=mu_raw, key="energy_eV")
    entries = [PDEntry(Composition(el), mu[el], name=f"{el} (reference)") for el in elements]
    entries += [PDEntry(Composition(r["formula"]), r["hull_energy_eV"], name=r["name"])
                for r in phase_rows]
    target_entry = PDEntry(Composition(target_row["formula"]), target_row["hull_energy_eV"],
                           name=target_row["name"])
    pd_without = PhaseDiagram(entries)
    decomposition, hull_distance = pd_without.get_decomp_and_e_above_hull(
        target_entry, allow_negative=True)
    pd_with = PhaseDiagram(entries + [target_entry])
    e_above = float(pd_with.get_e_above_hull(target_entry))
    for row in rows:
        comp_entry = PDEntry(Composition(row["formula"]), row["hull_energy_eV"])
        row["e_above_hull_eV_per_atom"] = float(pd_with.get_e_above_hull(comp_entry))
    summary = {
        "potential": spec.potential, "route": provenance["route"],
        "formula": target_row["formula"], "reduced_formula": target_row["reduced_formula"],
        "formation_energy_eV_per_atom": target_row["formation_energy_eV_per_atom"],
        "formation_energy_raw_eV_per_atom": target_row["formation_energy_raw_eV_per_atom"],
        "energy_eV_per_atom": target_row["energy_eV_per_atom"],
        "e_above_hull_eV_per_atom": e_above,
        "hull_distance_eV_per_atom": float(hull_distance),
        "decomposition": {e.name: float(f) for e, f in decomposition.items()},
        "stable": bool(hull_distance <= 1e-9),
        "n_competing_phases": len(phase_rows),
        "compatibility": {"scheme": scheme, "reason": scheme_reason,
                          "target_correction_eV": target_row["correction_eV"]},
        "elemental_references": {el: {"mu_eV_per_atom": mu[el], "mu_raw_eV_per_atom": mu_raw[el],
                                      "source": ref_sources[el]} for el in elements},
        "conventions": {"formation_energy_eV_per_atom": "hull energies (after the compatibility "
                        "scheme) minus elemental references, per atom",
                        "formation_energy_raw_eV_per_atom": "raw model energies, no correction "
                        "(compare with uncorrected DFT formation energies)"},
        "lammps_calls": calls,
    }
    outputs = write_table(pd.DataFrame(rows), out, "entries")
    try:
        outputs.append(hull_plot(rows, elements=elements, out=out,
                                 title=f"{spec.potential}: {target_row['reduced_formula']}"))
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
        summary["plot_error"] = f"{type(exc).__name__}: {exc}"
    summary["wall_s"] = clock.seconds
    write_json(out / "formation.json", summary)
    outputs.append("formation.json")
    write_manifest(out, kind="formation", spec=spec_dict, potential=provenance,
                   status="completed", started=started, wall_s=clock.seconds, outputs=outputs)
    summary["out"] = str(out)
    return summary


def hull_plot(rows: list[dict[str, Any]], *, elements: list[str], out: Path, title: str) -> str:
    """Formation energy vs composition (binary: x of the second element; otherwise by entry)."""
    from pymatgen.core import Composition

    from harness.statics.tables import figure, save_figure

    fig, ax = figure(5.2, 4.0)
    if len(elements) == 2:
        b = elements[1]
        pts = sorted(((Composition(r["formula"]).get_atomic_fraction(b),
                       r["formation_energy_eV_per_atom"], r) for r in rows), key=lambda t: t[0])
        hull = [(x, e) for x, e, r in pts if r["e_above_hull_eV_per_atom"] < 1e-9]
        ax.plot(*zip(*sorted(hull)), "k-", lw=1, label="hull")
        for x, e, r in pts:
            style = {"target": ("*", "C3", 12), "phase": ("o", "C0", 6),
                     "element": ("s", "C2", 6)}[r["role"]]
            ax.plot(x, e, style[0], color=style[1], ms=style[2])
            ax.annotate(r["reduced_formula"], (x, e), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.set_xlabel(f"fraction of {b}")
    else:
        for k, r in enumerate(rows):
            ax.plot(k, r["e_above_hull_eV_per_atom"], "o", color="C3" if r["role"] == "target"
                    else "C0")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["reduced_formula"] for r in rows], rotation=60, fontsize=7)
    ax.set_ylabel("formation energy (eV/atom)" if len(elements) == 2
                  else "energy above hull (eV/atom)")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, out / "hull.png")
