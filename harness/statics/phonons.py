"""Harmonic and third-order force constants through the LAMMPS-backed calculator.

``harness phonons STRUCTURE --potential P`` (seed 000's IFC benchmark, matcalc's Cv):

* **fc2** with phonopy: finite displacements (``displacement_A``, default 0.01 A) of a
  supercell; every displaced supercell is evaluated by **one** LAMMPS instance (same atoms,
  new positions: a ``run 0`` each). The forces of the undisplaced supercell are subtracted
  (residual-force correction) so an imperfectly relaxed or reference geometry does not bias
  the IFCs.
* **fc3** with phono3py (``--fc3``): its displacement pairs (or the reference's random
  displacements, solved with symfc), the same single LAMMPS instance.
* Band structure (seekpath path) + DOS plot, heat capacity at ``temperature_K`` (300 K)
  on a ``mesh`` (20x20x20).
* **Reference** (``--reference``): a phonopy folder (``POSCAR-unitcell`` + ``FORCE_SETS``, or
  ``phonopy_disp.yaml``/``phonopy_params.yaml`` + ``FORCE_SETS``), a phono3py
  ``phono3py_params*.yaml(.xz)``, or ``fc2.hdf5``/``fc3.hdf5`` beside a ``POSCAR-unitcell``.
  The model is evaluated on the reference's own unit cell and displacement dataset, so
  both IFC sets are defined on the same supercell and are compared element by element:
  MAE and R^2 over every fc2 (eV/A^2) and fc3 (eV/A^3) element (the IFC parity of seed 000),
  and frequency errors on the mesh (THz, bands sorted per q-point), both without NAC.

Units of ``cv_300K_J_per_K_per_mol``: J/(K mol) per mole of the **input unit cell** (the
convention of matcalc and the Alexandria reference data); ``..._per_mol_atoms`` divides by its
number of atoms (Dulong-Petit limit 3R = 24.94).

A supercell whose perpendicular width is below twice the model's cutoff makes an atom
interact with two images of a displaced atom: the IFCs are then folded. Own displacements on
such a cell are refused (``allow_small_supercell`` overrides); with a reference dataset both
IFC sets fold alike and the run goes on with a recorded warning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.statics.statics_run import StaticsInputError

R_J_PER_K_PER_MOL = 8.314462618
#: one-layer interaction cutoffs of families whose adapters do not state one
_DEFAULT_CUTOFF_A = {"chgnet": 6.0}


class PhononSpec(BaseModel):
    """One phonon job: every field is a CLI flag and a YAML key."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    structure: str | None = Field(None, description="unit cell (CIF/POSCAR/extxyz/bundled)")
    reference: str | None = Field(None, description="phonopy/phono3py reference (see module doc)")
    potential: str = "sevennet-0"
    route: Literal["auto", "native", "mliap", "external"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["lammps", "ase"] = "lammps"
    supercell_matrix: list[int] | list[list[int]] | None = Field(None, description="default "
                                                                 "2x2x2 (as matcalc)")
    supercell_min_length_A: float | None = Field(None, gt=0, le=60)
    primitive_matrix: Literal["auto"] | None = "auto"
    displacement_A: float = Field(0.01, gt=0, le=0.2)
    relax: bool = Field(True, description="relax positions and cell first (never with a "
                        "reference: its geometry is kept)")
    relax_fmax_eV_per_A: float = Field(0.005, gt=0)
    relax_max_steps: int = Field(500, ge=1)
    fc3: bool = Field(False, description="also third-order IFCs (phono3py)")
    fc3_supercell_matrix: list[int] | list[list[int]] | None = None
    fc3_displacement_A: float = Field(0.03, gt=0, le=0.2)
    fc3_cutoff_pair_A: float | None = Field(None, gt=0, description="skip displacement "
                                            "pairs farther apart (phono3py)")
    mesh: list[int] = Field(default_factory=lambda: [20, 20, 20])
    temperature_K: float = Field(300.0, gt=0)
    cutoff_A: float | None = Field(None, gt=0, description="model interaction cutoff for the "
                                   "supercell check (default: from the model)")
    allow_small_supercell: bool = False
    out: str = "runs/phonons"

    @model_validator(mode="after")
    def _inputs(self) -> "PhononSpec":
        if self.structure is None and self.reference is None:
            raise ValueError("give a STRUCTURE or --reference")
        if self.supercell_matrix is not None and self.supercell_min_length_A is not None:
            raise ValueError("give supercell_matrix or supercell_min_length_A, not both")
        if len(self.mesh) != 3 or min(self.mesh) < 1:
            raise ValueError("mesh must be three positive integers")
        return self


# --------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------
def to_phonopy_atoms(atoms: Any) -> Any:
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions(wrap=False))


def to_ase_atoms(cell: Any) -> Any:
    from ase import Atoms

    return Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                 pbc=True)


def model_cutoff_A(potential: dict[str, Any]) -> float | None:
    extra = potential.get("extra") or {}
    for key in ("cutoff_A", "r_max_A", "rcut_A", "rcut"):
        if extra.get(key):
            return float(extra[key])
    return _DEFAULT_CUTOFF_A.get(str(potential.get("family", "")).lower())


def check_supercell(supercell: Any, *, cutoff_A: float | None, spec: PhononSpec,
                    own_displacements: bool, what: str) -> list[str]:
    """Refuse (own displacements) or flag (reference dataset) a supercell under 2 x cutoff."""
    from harness.structures import perpendicular_widths

    if cutoff_A is None:
        return [f"{what}: model cutoff unknown; supercell width not checked (give --cutoff-A)"]
    width = float(perpendicular_widths(np.asarray(supercell.cell)).min())
    if width >= 2.0 * cutoff_A - 1e-6:
        return []
    message = (f"{what} supercell is {width:.2f} A wide (smallest perpendicular width), less "
               f"than 2 x the model cutoff {cutoff_A:g} A = {2 * cutoff_A:g} A: a displaced atom "
               "is seen through two periodic images and the force constants fold")
    if own_displacements and not spec.allow_small_supercell:
        raise StaticsInputError(message + "; use a larger --supercell-matrix (or "
                                "--supercell-min-length-A), or --allow-small-supercell")
    return [message + " (same folding in the reference; compared as is)"
            if not own_displacements else message + " (allowed by allow_small_supercell)"]


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------
class ForceEvaluator:
    """Forces of many displaced supercells through one calculator (one LAMMPS instance)."""

    def __init__(self, calc: Any) -> None:
        self.calc = calc
        self.calls = 0

    def forces(self, cell: Any) -> np.ndarray:
        atoms = to_ase_atoms(cell)
        atoms.calc = self.calc
        self.calls += 1
        f = np.asarray(atoms.get_forces(), float)
        if not np.all(np.isfinite(f)):
            raise StaticsInputError("the potential returned non-finite forces for a displaced "
                                    "supercell; check the structure")
        return f

    def many(self, cells: list[Any], *, perfect: Any) -> tuple[np.ndarray, float]:
        """Forces of ``cells`` (None entries skipped as zeros) minus the perfect cell's."""
        f0 = self.forces(perfect)
        out = np.zeros((len(cells), len(perfect.symbols), 3))
        for k, cell in enumerate(cells):
            if cell is not None:
                out[k] = self.forces(cell) - f0
        return out, float(np.abs(f0).max())


def relax_cell(atoms: Any, calc: Any, *, spec: PhononSpec) -> dict[str, Any]:
    """Positions and cell (FrechetCellFilter + FIRE); raises on non-convergence."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms.calc = calc
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = bool(opt.run(fmax=spec.relax_fmax_eV_per_A, steps=spec.relax_max_steps))
    fmax = float(np.abs(atoms.get_forces()).max())
    if not converged:
        raise StaticsInputError(f"relaxation did not converge in {spec.relax_max_steps} steps "
                                f"(max force {fmax:.3g} eV/A); raise --relax-max-steps or "
                                "check the structure (--no-relax keeps it as given)")
    return {"steps": int(opt.nsteps), "fmax_eV_per_A": fmax,
            "cell_A": atoms.cell.array.tolist(), "volume_A3": float(atoms.get_volume())}


# --------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------
@dataclass
class Reference:
    kind: str                  # phonopy | phono3py | fc-files
    source: str
    unitcell: Any              # PhonopyAtoms
    supercell_matrix: np.ndarray
    primitive_matrix: Any
    fc2_dataset: dict[str, Any] | None = None   # with forces (DFT)
    fc3_dataset: dict[str, Any] | None = None
    fc3_supercell_matrix: np.ndarray | None = None
    fc2: np.ndarray | None = None               # precomputed (fc2.hdf5)
    fc3: np.ndarray | None = None


def load_reference(path: str | Path, *, supercell_matrix: Any = None) -> Reference:
    """A phonopy folder/YAML, a phono3py YAML, or fc2.hdf5/fc3.hdf5 beside a POSCAR-unitcell."""
    path = Path(path)
    if not path.exists():
        raise StaticsInputError(f"reference not found: {path}")
    folder = path if path.is_dir() else path.parent
    name = path.name
    if path.is_file() and name.startswith("phono3py") and ".yaml" in name:
        return _load_phono3py_reference(path)
    if path.is_dir():
        p3 = sorted(folder.glob("phono3py*.yaml*"))
        if p3 and not (folder / "FORCE_SETS").is_file():
            return _load_phono3py_reference(p3[0])
    import phonopy

    yaml = next((p for p in ([path] if path.is_file() and name.endswith(".yaml") else
                             [folder / "phonopy_params.yaml", folder / "phonopy_disp.yaml"])
                 if p.is_file()), None)
    force_sets = folder / "FORCE_SETS"
    fc2_file, fc3_file = folder / "fc2.hdf5", folder / "fc3.hdf5"
    unitcell_file = folder / "POSCAR-unitcell"
    sc = _matrix(supercell_matrix) if supercell_matrix is not None else None
    if yaml is None and not unitcell_file.is_file():
        raise StaticsInputError(f"{path}: no phonopy_disp.yaml/phonopy_params.yaml and no "
                                "POSCAR-unitcell; the reference needs its unit cell")
    if force_sets.is_file() or yaml is not None:
        kwargs: dict[str, Any] = dict(produce_fc=False, is_nac=False, log_level=0)
        if yaml is not None:
            ph = phonopy.load(yaml, force_sets_filename=force_sets if force_sets.is_file()
                              else None, **kwargs)
        else:
            ph = phonopy.load(unitcell_filename=unitcell_file,
                              supercell_matrix=sc if sc is not None else np.diag([2, 2, 2]),
                              primitive_matrix="auto", force_sets_filename=force_sets,
                              **kwargs)
        dataset = ph.dataset
        if not dataset or ph.forces is None:
            raise StaticsInputError(f"{path}: no forces in the reference (FORCE_SETS missing?)")
        return Reference(kind="phonopy", source=str(path), unitcell=ph.unitcell,
                         supercell_matrix=np.asarray(ph.supercell_matrix),
                         primitive_matrix=ph.primitive_matrix, fc2_dataset=dataset,
                         fc3=_read_fc(fc3_file, "fc3") if fc3_file.is_file() else None)
    if fc2_file.is_file() or fc3_file.is_file():
        from phonopy.interface.calculator import read_crystal_structure

        unitcell, _ = read_crystal_structure(str(unitcell_file), interface_mode="vasp")
        return Reference(kind="fc-files", source=str(path), unitcell=unitcell,
                         supercell_matrix=sc if sc is not None else np.diag([2, 2, 2]),
                         primitive_matrix="auto",
                         fc2=_read_fc(fc2_file, "fc2") if fc2_file.is_file() else None,
                         fc3=_read_fc(fc3_file, "fc3") if fc3_file.is_file() else None)
    raise StaticsInputError(f"{path}: found no FORCE_SETS, phono3py YAML or fc2/fc3.hdf5")


def _read_fc(path: Path, key: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as handle:
        if key not in handle:
            raise StaticsInputError(f"{path} holds no '{key}' dataset")
        return np.asarray(handle[key][:])


def _load_phono3py_reference(path: Path) -> Reference:
    import lzma
    import tempfile

    import phono3py

    source = path
    if path.suffix == ".xz":
        tmp = Path(tempfile.mkdtemp(prefix="harness-ph3-")) / path.stem
        tmp.write_bytes(lzma.decompress(path.read_bytes()))
        path = tmp
    ph3 = phono3py.load(path, produce_fc=False, is_nac=False, log_level=0)
    if ph3.dataset is None:
        raise StaticsInputError(f"{source}: no fc3 displacement dataset")
    phonon_dataset = ph3.phonon_dataset
    return Reference(kind="phono3py", source=str(source), unitcell=ph3.unitcell,
                     supercell_matrix=np.asarray(ph3.phonon_supercell_matrix
                                                 if phonon_dataset else ph3.supercell_matrix),
                     primitive_matrix=ph3.primitive_matrix,
                     fc2_dataset=phonon_dataset, fc3_dataset=ph3.dataset,
                     fc3_supercell_matrix=np.asarray(ph3.supercell_matrix))


def _matrix(value: Any) -> np.ndarray:
    m = np.asarray(value, dtype=int)
    return np.diag(m) if m.shape == (3,) else m


def _displacements_only(dataset: dict[str, Any]) -> dict[str, Any]:
    """A copy of a phonopy/phono3py dataset without forces/energies (we supply our own)."""
    import copy

    data = copy.deepcopy(dataset)
    for key in ("forces", "supercell_energies"):
        data.pop(key, None)
    for entry in data.get("first_atoms", []):
        entry.pop("forces", None)
        entry.pop("supercell_energy", None)
        for second in entry.get("second_atoms", []):
            second.pop("forces", None)
            second.pop("supercell_energy", None)
    return data


def _dataset_forces(dataset: dict[str, Any]) -> np.ndarray:
    if "forces" in dataset:
        return np.asarray(dataset["forces"])
    return np.array([d["forces"] for d in dataset["first_atoms"]])


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------
def parity(mine: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R^2 (1 - SS_res / SS_tot about the reference mean) over all elements."""
    a, b = np.asarray(mine, float).ravel(), np.asarray(ref, float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"IFC arrays differ in shape: {np.shape(mine)} vs {np.shape(ref)}")
    resid = a - b
    ss_tot = float(((b - b.mean()) ** 2).sum())
    return {"mae": float(np.abs(resid).mean()), "rmse": float(np.sqrt((resid ** 2).mean())),
            "r2": float(1.0 - (resid ** 2).sum() / ss_tot) if ss_tot > 0 else math.nan,
            "max_abs_error": float(np.abs(resid).max()), "n_elements": int(a.size)}


def thermal(ph: Any, *, mesh: list[int], temperature_K: float) -> dict[str, Any]:
    # phonopy's default (Monkhorst-Pack) mesh, as matcalc and the Alexandria Cv data use it;
    # a Gamma-centred mesh would count the three zero-frequency modes at Gamma by round-off
    ph.run_mesh(mesh, with_eigenvectors=False, is_mesh_symmetry=True)
    ph.run_thermal_properties(temperatures=[temperature_K])
    tp = ph.get_thermal_properties_dict()
    n_prim = len(ph.primitive)
    n_unit = len(ph.unitcell)
    cv_prim = float(tp["heat_capacity"][0])
    freqs = ph.get_mesh_dict()["frequencies"]
    return {"cv_per_mol_unitcell": cv_prim * n_unit / n_prim,
            "cv_per_mol_atoms": cv_prim / n_prim,
            "min_frequency_THz": float(np.min(freqs)),
            "mesh_frequencies_THz": np.sort(freqs, axis=1)}


# --------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------
@dataclass
class PhononResult:
    out: Path
    summary: dict[str, Any]


def run_phonons(spec: PhononSpec, *, force: bool = False, comm: Any = None) -> PhononResult:
    """fc2 (+ fc3), bands/DOS, Cv and reference parity; writes the output folder."""
    with warnings.catch_warnings():
        # phonopy 4 announces its 'auto' primitive default on every construction: noise here
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted")
        warnings.filterwarnings("ignore", message="Half-grid shift")
        return _run_phonons(spec, force=force, comm=comm)


def _run_phonons(spec: PhononSpec, *, force: bool, comm: Any) -> PhononResult:
    import phonopy

    from harness.md.rundir import now_iso
    from harness.statics.statics_run import (Stopwatch, open_calculator, prepare_out_dir,
                                             write_json, write_manifest)
    from harness.structures import load_structure

    reference = (load_reference(spec.reference, supercell_matrix=spec.supercell_matrix)
                 if spec.reference else None)
    if reference is None:
        unit_atoms = load_structure(spec.structure)
    else:
        unit_atoms = to_ase_atoms(reference.unitcell)
        if spec.structure is not None:
            warnings.warn("with --reference the reference's unit cell is used; STRUCTURE is "
                          "ignored", stacklevel=2)
    out = prepare_out_dir(spec.out, force=force)
    started, clock = now_iso(), Stopwatch()
    spec_dict = spec.model_dump(mode="json")
    write_manifest(out, kind="phonons", spec=spec_dict, potential={"name": spec.potential},
                   status="running", started=started)
    summary: dict[str, Any] = {"potential": spec.potential, "notes": [],
                               "formula": unit_atoms.get_chemical_formula(),
                               "n_atoms_unitcell": len(unit_atoms)}
    potential: dict[str, Any] = {"name": spec.potential}
    try:
        with open_calculator(spec.potential, route=spec.route, device=spec.device,
                             workdir=out / "lammps", backend=spec.backend,
                             comm=comm) as (calc, potential):
            cutoff = spec.cutoff_A or model_cutoff_A(potential)
            summary["model_cutoff_A"] = cutoff
            if reference is None and spec.relax:
                summary["relaxation"] = relax_cell(unit_atoms, calc, spec=spec)
            elif reference is not None:
                summary["notes"].append("reference geometry kept (no relaxation): both IFC sets "
                                        "come from the same displaced supercells")
            if reference is not None:
                sc = reference.supercell_matrix
                prim = reference.primitive_matrix
            else:
                sc = _supercell(unit_atoms, spec)
                prim = spec.primitive_matrix
            unitcell = to_phonopy_atoms(unit_atoms)
            ph = phonopy.Phonopy(unitcell, supercell_matrix=sc, primitive_matrix=prim)
            own = reference is None or reference.fc2_dataset is None
            summary["notes"] += check_supercell(ph.supercell, cutoff_A=cutoff, spec=spec,
                                                own_displacements=own, what="fc2")
            if own:
                ph.generate_displacements(distance=spec.displacement_A)
            else:
                ph.dataset = _displacements_only(reference.fc2_dataset)
            evaluator = ForceEvaluator(calc)
            clock_fc2 = Stopwatch()
            cells = ph.supercells_with_displacements
            forces, residual = evaluator.many(cells, perfect=ph.supercell)
            ph.forces = forces
            fc_calculator = None if _regular(ph.dataset) else "symfc"
            ph.produce_force_constants(fc_calculator=fc_calculator)
            summary.update(fc2_supercell_matrix=np.asarray(sc).tolist(),
                           fc2_n_atoms_supercell=len(ph.supercell),
                           fc2_n_displacements=len(cells),
                           fc2_displacements_from="reference" if not own else "phonopy",
                           fc2_solver=fc_calculator or "phonopy (regular displacements)",
                           residual_force_max_eV_per_A=residual,
                           fc2_wall_s=round(clock_fc2.seconds, 2))
            th = thermal(ph, mesh=spec.mesh, temperature_K=spec.temperature_K)
            summary.update(cv_300K_J_per_K_per_mol=th["cv_per_mol_unitcell"]
                           if spec.temperature_K == 300.0 else None,
                           cv_J_per_K_per_mol=th["cv_per_mol_unitcell"],
                           cv_J_per_K_per_mol_atoms=th["cv_per_mol_atoms"],
                           cv_temperature_K=spec.temperature_K,
                           cv_per="mole of the input unit cell",
                           dulong_petit_J_per_K_per_mol=3 * R_J_PER_K_PER_MOL * len(unit_atoms),
                           min_frequency_THz=th["min_frequency_THz"],
                           imaginary_modes=bool(th["min_frequency_THz"] < -0.05),
                           mesh=spec.mesh)
            if spec.temperature_K == 300.0:
                summary["cv_300K_J_per_K_per_mol_atoms"] = th["cv_per_mol_atoms"]
            if summary["imaginary_modes"]:
                summary["notes"].append(f"imaginary modes (min {th['min_frequency_THz']:.3f} "
                                        "THz): the structure is not a minimum of the model")
            ph.save(out / "phonopy_params.yaml")  # dataset + forces; fc2 in fc2.hdf5
            _write_fc(out / "fc2.hdf5", "fc2", ph.force_constants)
            if reference is not None:
                summary.update(_compare_fc2(ph, reference, spec=spec, mine_thermal=th))
            if spec.fc3 or (reference is not None and reference.fc3_dataset is not None):
                summary.update(_fc3(unitcell, reference, evaluator, spec=spec, cutoff=cutoff,
                                    sc=sc, prim=prim, out=out, notes=summary["notes"]))
            summary["n_force_calls"] = evaluator.calls
            summary["band_structure"] = _plot_bands_dos(
                ph, out / "phonons.png", title=f"{summary['formula']}, {spec.potential}")
    except Exception as exc:
        write_manifest(out, kind="phonons", spec=spec_dict, potential=potential,
                       status="failed", started=started, wall_s=clock.seconds,
                       error=f"{type(exc).__name__}: {exc}")
        raise
    summary["route"] = potential.get("route")
    summary["backend"] = potential.get("backend")
    summary["wall_s"] = round(clock.seconds, 2)
    write_json(out / "phonons.json", summary)
    outputs = [p.name for p in out.iterdir() if p.is_file()]
    write_manifest(out, kind="phonons", spec=spec_dict, potential=potential, status="completed",
                   started=started, wall_s=clock.seconds, outputs=outputs + ["manifest.json"],
                   extra={"reference": reference.source if reference else None})
    return PhononResult(out=out, summary=summary)


def _regular(dataset: dict[str, Any]) -> bool:
    return "first_atoms" in dataset


def _supercell(atoms: Any, spec: PhononSpec) -> np.ndarray:
    from harness.structures import supercell_matrix_for_min_length

    if spec.supercell_matrix is not None:
        return _matrix(spec.supercell_matrix)
    if spec.supercell_min_length_A is not None:
        return supercell_matrix_for_min_length(atoms.cell, min_length_A=spec.supercell_min_length_A)
    return np.diag([2, 2, 2])


def _write_fc(path: Path, key: str, fc: np.ndarray) -> None:
    import h5py

    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as handle:
        handle.create_dataset(key, data=fc, compression="gzip")
    tmp.replace(path)


def _compare_fc2(ph: Any, reference: Reference, *, spec: PhononSpec,
                 mine_thermal: dict[str, Any]) -> dict[str, Any]:
    import phonopy

    ref = phonopy.Phonopy(reference.unitcell, supercell_matrix=reference.supercell_matrix,
                          primitive_matrix=reference.primitive_matrix)
    if reference.fc2 is not None:
        ref.force_constants = reference.fc2
    elif reference.fc2_dataset is not None:
        ref.dataset = reference.fc2_dataset
        ref.produce_force_constants(fc_calculator=None if _regular(reference.fc2_dataset)
                                    else "symfc")
    else:
        return {}
    mine_fc, ref_fc = _same_layout(ph.force_constants, ref.force_constants, ph)
    p = parity(mine_fc, ref_fc)
    th_ref = thermal(ref, mesh=spec.mesh, temperature_K=spec.temperature_K)
    f_mine, f_ref = mine_thermal["mesh_frequencies_THz"], th_ref["mesh_frequencies_THz"]
    result = {"fc2_mae_eV_per_A2": p["mae"], "fc2_rmse_eV_per_A2": p["rmse"], "fc2_r2": p["r2"],
              "fc2_max_abs_error_eV_per_A2": p["max_abs_error"], "fc2_n_elements": p["n_elements"],
              "frequency_mae_THz": float(np.abs(f_mine - f_ref).mean()),
              "frequency_max_abs_error_THz": float(np.abs(f_mine - f_ref).max()),
              "frequency_comparison": "mesh frequencies, bands sorted per q-point, no NAC",
              "cv_reference_J_per_K_per_mol": th_ref["cv_per_mol_unitcell"],
              "cv_error_J_per_K_per_mol": mine_thermal["cv_per_mol_unitcell"]
              - th_ref["cv_per_mol_unitcell"],
              "reference": reference.source}
    _plot_parity(mine_fc, ref_fc, Path(spec.out) / "fc2_parity.png",
                 label="fc2 (eV/A^2)", metrics=p)
    return result


def _same_layout(mine: np.ndarray, ref: np.ndarray, ph: Any) -> tuple[np.ndarray, np.ndarray]:
    """Full (n_sc x n_sc x 3 x 3) arrays from full or compact force constants."""
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    def full(fc):
        return compact_fc_to_full_fc(ph.primitive, fc) if fc.shape[0] != fc.shape[1] else fc

    return full(mine), full(ref)


def _fc3(unitcell: Any, reference: Reference | None, evaluator: ForceEvaluator, *,
         spec: PhononSpec, cutoff: float | None, sc: Any, prim: Any, out: Path,
         notes: list[str]) -> dict[str, Any]:
    from phono3py import Phono3py

    from harness.statics.statics_run import Stopwatch

    clock = Stopwatch()
    if reference is not None and reference.fc3_dataset is not None:
        sc3 = reference.fc3_supercell_matrix
    else:
        sc3 = _matrix(spec.fc3_supercell_matrix) if spec.fc3_supercell_matrix is not None else sc
    ph3 = Phono3py(unitcell, supercell_matrix=sc3, primitive_matrix=prim, log_level=0)
    own = reference is None or reference.fc3_dataset is None
    notes += check_supercell(ph3.supercell, cutoff_A=cutoff, spec=spec, own_displacements=own,
                             what="fc3")
    if own:
        ph3.generate_displacements(distance=spec.fc3_displacement_A,
                                   cutoff_pair_distance=spec.fc3_cutoff_pair_A)
    else:
        ph3.dataset = _displacements_only(reference.fc3_dataset)
    cells = ph3.supercells_with_displacements
    forces, _ = evaluator.many(cells, perfect=ph3.supercell)
    ph3.forces = forces
    regular = _regular(ph3.dataset)
    ph3.produce_fc3(fc_calculator=None if regular else "symfc")
    fc3 = ph3.fc3
    _write_fc(out / "fc3.hdf5", "fc3", fc3)
    result = {"fc3_supercell_matrix": np.asarray(sc3).tolist(),
              "fc3_n_displacements": int(sum(c is not None for c in cells)),
              "fc3_solver": "phono3py (regular displacements)" if regular else "symfc",
              "fc3_displacements_from": "phono3py" if own else "reference",
              "fc3_wall_s": round(clock.seconds, 2)}
    if reference is not None and (reference.fc3_dataset is not None or reference.fc3 is not None):
        if reference.fc3 is not None:
            ref_fc3 = reference.fc3
        else:
            ref3 = Phono3py(reference.unitcell, supercell_matrix=sc3,
                            primitive_matrix=reference.primitive_matrix, log_level=0)
            ref3.dataset = reference.fc3_dataset
            ref3.produce_fc3(fc_calculator=None if _regular(reference.fc3_dataset) else "symfc")
            ref_fc3 = ref3.fc3
        if ref_fc3.shape != fc3.shape:
            notes.append(f"fc3 shapes differ ({fc3.shape} vs reference {ref_fc3.shape}): "
                         "fc3 parity skipped")
            return result
        p = parity(fc3, ref_fc3)
        result.update(fc3_mae_eV_per_A3=p["mae"], fc3_rmse_eV_per_A3=p["rmse"], fc3_r2=p["r2"],
                      fc3_max_abs_error_eV_per_A3=p["max_abs_error"],
                      fc3_n_elements=p["n_elements"])
        _plot_parity(fc3, ref_fc3, out / "fc3_parity.png", label="fc3 (eV/A^3)", metrics=p)
    return result


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_bands_dos(ph: Any, path: Path, *, title: str) -> str:
    """Bands (seekpath path) + DOS into ``path``; returns 'plotted' or why the bands are not."""
    from analysis.output import write_figure

    plt = _plt()
    fig, (ax_b, ax_d) = plt.subplots(1, 2, figsize=(8.0, 4.2), sharey=True,
                                     gridspec_kw={"width_ratios": [3, 1]})
    status = "plotted"
    try:
        ph.auto_band_structure(plot=False, write_yaml=False)
        bs = ph.get_band_structure_dict()
        labels = _band_labels(ph)
        offset = 0.0
        ticks = []
        for dists, freqs in zip(bs["distances"], bs["frequencies"]):
            ax_b.plot(dists, freqs, color="C0", lw=1)
            ticks.append(dists[0])
            offset = dists[-1]
        ticks.append(offset)
        for x in ticks:
            ax_b.axvline(x, color="0.7", lw=0.6)
        if labels and len(labels) == len(ticks):
            ax_b.set_xticks(ticks)
            ax_b.set_xticklabels(labels, fontsize=8)
        else:
            ax_b.set_xticks([])
        ax_b.set_xlim(ticks[0], ticks[-1])
    except Exception as exc:  # noqa: BLE001 - seekpath can fail on odd cells; keep the DOS
        status = f"band path unavailable: {type(exc).__name__}: {exc}"
        ax_b.text(0.5, 0.5, f"band path unavailable:\n{exc}", ha="center", va="center",
                  transform=ax_b.transAxes, fontsize=8)
    ax_b.axhline(0.0, color="0.5", lw=0.6)
    ax_b.set_ylabel("frequency (THz)")
    ax_b.set_title(title, fontsize=9)
    ph.run_total_dos()
    dos = ph.get_total_dos_dict()
    ax_d.plot(dos["total_dos"], dos["frequency_points"], color="C1", lw=1)
    ax_d.set_xlabel("DOS (states/THz)")
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return status


def _band_labels(ph: Any) -> list[str] | None:
    bs = ph.band_structure
    labels = getattr(bs, "labels", None)
    if not labels:
        return None
    connections = getattr(bs, "path_connections", None)
    import re

    clean = [re.sub(r"\$|\\mathrm\{|\}", "", str(x)).replace("\\Gamma", "G")
             .replace("GAMMA", "G") for x in labels]
    out = [clean[0]]
    k = 1
    connections = list(connections or [])
    for i, conn in enumerate(connections):
        if conn or i == len(connections) - 1 or k + 1 >= len(clean):
            out.append(clean[k])
            k += 1
        else:
            out.append(f"{clean[k]}|{clean[k + 1]}")
            k += 2
    return out


def _plot_parity(mine: np.ndarray, ref: np.ndarray, path: Path, *, label: str,
                 metrics: dict[str, float]) -> Path:
    from analysis.output import write_figure

    plt = _plt()
    a, b = np.asarray(mine).ravel(), np.asarray(ref).ravel()
    keep = (np.abs(a) > 1e-6) | (np.abs(b) > 1e-6)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(b[keep], a[keep], s=4, alpha=0.4)
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"model {label}")
    ax.set_title(f"MAE {metrics['mae']:.3g}, R^2 {metrics['r2']:.3f} "
                 f"({metrics['n_elements']} elements)", fontsize=9)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path
