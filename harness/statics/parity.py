"""``harness parity``: energy, force and stress parity of a potential against reference frames.

Reference frames are anything ``ase.io.read`` turns into Atoms with a single-point
calculator: extxyz with ``energy``/``forces``/``stress`` (ASE stress convention, eV/A^3,
positive = tensile), ``vasprun.xml`` and ``OUTCAR`` (ASE converts VASP's kBar and sign).
Every frame is evaluated with :class:`harness.statics.calculator.LammpsCalculator`, i.e.
``run 0`` through the same pair style as ``harness md``; one LAMMPS instance serves all
frames (its type map holds every element of the data set).

Metrics (MAE and RMSE): energy per atom (eV/atom), force components (eV/A), stress Voigt
components (GPa); overall, per element (forces on atoms of that element) and per material
(reduced formula, or an ``info`` key given as ``material_key``).

Energy reference offset (``energy_reference``), because DFT and model energies need not
share a zero: ``none`` (raw E_model - E_DFT per atom), ``per_material_mean`` (the mean
per-atom difference of each material is removed: only relative energies within a material
count; a material with one frame then has zero error by construction and is flagged),
``elemental_fit`` (per-element reference energies mu_el fitted by least squares to
(E_model - E_DFT)/N = sum_el x_el mu_el over all frames; the fitted mu are reported).

Frames without energy or forces are an error naming the frame (``incomplete="skip"``
records them as skipped in the table instead); frames without stress simply have no stress
error (``n_stress_frames`` says how many count). A frame the potential cannot evaluate
(non-finite output) is recorded as failed and excluded, and counted in the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.statics.statics_run import StaticsInputError
from harness.units import GPA_PER_EV_PER_A3

EnergyReference = Literal["none", "per_material_mean", "elemental_fit"]
VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")


class ParitySpec(BaseModel):
    """``harness parity`` options (also the YAML keys)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    frames: list[str] = Field(..., min_length=1, description="reference files: extxyz, "
                              "vasprun.xml, OUTCAR (anything ase.io.read reads)")
    potential: str = Field(..., description="registered potential, e.g. sevennet-0")
    route: Literal["auto", "native", "mliap", "external"] = "auto"
    device: str = "auto"
    index: str = Field(":", description="ASE index applied to every file, e.g. ':' or '::10'")
    max_frames: int | None = Field(None, gt=0, description="at most this many frames in all")
    energy_reference: EnergyReference = "none"
    material_key: str | None = Field(None, description="info key naming the material "
                                     "(default: the reduced formula)")
    incomplete: Literal["error", "skip"] = Field(
        "error", description="frames without energy or forces: stop, or record and skip")
    out: str = "parity"


# --- reading ---------------------------------------------------------------------------------
def _reference(atoms: Any) -> dict[str, Any]:
    """energy / forces / stress stored with a frame (None where absent)."""
    results = dict(getattr(atoms.calc, "results", {}) or {}) if atoms.calc is not None else {}
    energy = results.get("energy", atoms.info.get("energy"))
    forces = results.get("forces", atoms.arrays.get("forces"))
    stress = results.get("stress", atoms.info.get("stress"))
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (3, 3):
            stress = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif stress.shape != (6,):
            stress = None
    return {"energy": None if energy is None else float(energy),
            "forces": None if forces is None else np.asarray(forces, dtype=float),
            "stress": stress}


def read_frames(spec: ParitySpec) -> list[dict[str, Any]]:
    """Frames as dicts: atoms (no calculator), reference values, file and index."""
    from ase.io import read

    from analysis.readers import vasp_format

    frames: list[dict[str, Any]] = []
    for file in spec.frames:
        path = Path(file)
        if not path.is_file():
            raise StaticsInputError(f"reference file not found: {path}")
        try:
            images = read(path, index=spec.index, format=vasp_format(path), parallel=False)
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for bad files
            raise StaticsInputError(f"cannot read {path} with ase.io.read ({type(exc).__name__}: "
                                    f"{exc}); give extxyz, vasprun.xml or OUTCAR") from exc
        if not isinstance(images, list):
            images = [images]
        for k, atoms in enumerate(images):
            ref = _reference(atoms)
            clean = atoms.copy()
            clean.calc = None
            frames.append({"atoms": clean, "file": str(path), "index_in_file": k, **ref})
            if spec.max_frames is not None and len(frames) >= spec.max_frames:
                return frames
    return frames


def material_of(atoms: Any, key: str | None) -> str:
    if key is None:
        from pymatgen.core import Composition

        return Composition(atoms.get_chemical_formula()).reduced_formula
    if key not in atoms.info:
        raise StaticsInputError(f"frame has no info key {key!r} for material_key; available: "
                                f"{', '.join(sorted(atoms.info)) or 'none'}")
    return str(atoms.info[key])


# --- energy offsets --------------------------------------------------------------------------
def energy_errors(diff_per_atom: np.ndarray, *, materials: list[str],
                  compositions: np.ndarray, elements: list[str],
                  mode: EnergyReference) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-atom energy errors after the chosen offset, and what the offset was.

    ``diff_per_atom`` is (E_model - E_ref)/N per frame, ``compositions`` the atom counts
    (frames x elements).
    """
    diff = np.asarray(diff_per_atom, dtype=float)
    if mode == "none":
        return diff.copy(), {"mode": mode}
    if mode == "per_material_mean":
        out = diff.copy()
        offsets = {}
        for material in sorted(set(materials)):
            mask = np.array([m == material for m in materials])
            offsets[material] = float(diff[mask].mean())
            out[mask] -= offsets[material]
        singles = sorted(m for m in offsets if materials.count(m) == 1)
        return out, {"mode": mode, "offset_eV_per_atom": offsets,
                     "single_frame_materials": singles}
    if mode == "elemental_fit":
        counts = np.asarray(compositions, dtype=float)
        fractions = counts / counts.sum(axis=1, keepdims=True)
        mu, _res, rank, _sv = np.linalg.lstsq(fractions, diff, rcond=None)
        out = diff - fractions @ mu
        info = {"mode": mode, "mu_eV_per_atom": dict(zip(elements, mu.tolist())),
                "rank": int(rank), "n_elements": len(elements)}
        if rank < len(elements):
            info["note"] = ("compositions do not determine every elemental reference "
                            "(minimum-norm solution); errors are still offset-free")
        return out, info
    raise StaticsInputError(f"energy_reference must be none, per_material_mean or "
                            f"elemental_fit, not {mode!r}")


def _mae_rmse(values: np.ndarray) -> tuple[float | None, float | None]:
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    return float(np.abs(values).mean()), float(np.sqrt((values ** 2).mean()))


# --- the workflow ----------------------------------------------------------------------------
def run_parity(spec: ParitySpec, *, force: bool = False, progress: Any = None) -> dict[str, Any]:
    import pandas as pd

    from harness.md.rundir import now_iso
    from harness.statics.calculator import LammpsCalculator, NonFiniteResult
    from harness.statics.statics_run import (Stopwatch, _model_info, prepare_out_dir,
                                             write_json, write_manifest)
    from harness.statics.tables import write_table
    from harness.structures import default_specorder
    from potentials.registry import get_potential

    frames = read_frames(spec)
    if not frames:
        raise StaticsInputError(f"no frames in {', '.join(spec.frames)} (index {spec.index!r})")
    missing = [f for f in frames if f["energy"] is None or f["forces"] is None]
    if missing and spec.incomplete == "error":
        f = missing[0]
        what = " and ".join(n for n in ("energy", "forces") if f[n] is None)
        raise StaticsInputError(
            f"{len(missing)} frame(s) have no reference {what}, first: {f['file']} frame "
            f"{f['index_in_file']}; give frames with energy and forces, or pass "
            "--incomplete skip to record and skip them")
    potential = get_potential(spec.potential, route=spec.route, device=spec.device)
    elements = default_specorder(sorted({s for f in frames
                                         for s in f["atoms"].get_chemical_symbols()}))
    from harness.statics.calculator import check_coverage

    check_coverage(potential, elements)
    out = prepare_out_dir(spec.out, force=force)
    started, clock = now_iso(), Stopwatch()
    spec_dict = spec.model_dump(mode="json")
    provenance = _model_info(potential)
    write_manifest(out, kind="parity", spec=spec_dict, potential=provenance, status="running",
                   started=started)

    rows, atom_rows = [], []
    calc = LammpsCalculator(potential, workdir=out / "lammps", type_elements=elements)
    try:
        for i, frame in enumerate(frames):
            atoms = frame["atoms"]
            n = len(atoms)
            row: dict[str, Any] = {
                "frame": i, "file": Path(frame["file"]).name, "index_in_file": frame["index_in_file"],
                "material": material_of(atoms, spec.material_key),
                "formula": atoms.get_chemical_formula(), "n_atoms": n,
                "config_type": str(atoms.info.get("config_type", "")), "status": "ok",
                "message": ""}
            if frame["energy"] is None or frame["forces"] is None:
                row.update(status="skipped", message="no reference " + " and ".join(
                    k for k in ("energy", "forces") if frame[k] is None))
                rows.append(row)
                continue
            if frame["forces"].shape != (n, 3):
                raise StaticsInputError(f"{frame['file']} frame {frame['index_in_file']}: "
                                        f"forces have shape {frame['forces'].shape}, not ({n}, 3)")
            atoms.calc = calc
            try:
                energy = atoms.get_potential_energy()
                forces = atoms.get_forces()
                stress = atoms.get_stress(voigt=True)
            except NonFiniteResult as exc:
                row.update(status="failed", message=str(exc))
                rows.append(row)
                continue
            finally:
                atoms.calc = None
            df = forces - frame["forces"]
            row.update({
                "energy_ref_eV": frame["energy"], "energy_model_eV": energy,
                "energy_ref_eV_per_atom": frame["energy"] / n,
                "energy_model_eV_per_atom": energy / n,
                "energy_diff_eV_per_atom": (energy - frame["energy"]) / n,
                "force_mae_eV_per_A": float(np.abs(df).mean()),
                "force_rmse_eV_per_A": float(np.sqrt((df ** 2).mean())),
                "force_max_error_eV_per_A": float(np.linalg.norm(df, axis=1).max()),
            })
            for k, name in enumerate(VOIGT):
                row[f"stress_model_{name}_GPa"] = float(stress[k] * GPA_PER_EV_PER_A3)
                row[f"stress_ref_{name}_GPa"] = (float(frame["stress"][k] * GPA_PER_EV_PER_A3)
                                                 if frame["stress"] is not None else np.nan)
            if frame["stress"] is not None:
                ds = (stress - frame["stress"]) * GPA_PER_EV_PER_A3
                row["stress_mae_GPa"] = float(np.abs(ds).mean())
            rows.append(row)
            for a, symbol in enumerate(atoms.get_chemical_symbols()):
                atom_rows.append((i, a, symbol, *frame["forces"][a], *forces[a]))
            if progress is not None:
                progress(i + 1, len(frames))
        counts_calls = dict(calc.counts)
        route = calc.route
    finally:
        calc.close()

    table = pd.DataFrame(rows)
    ok = table["status"] == "ok"
    if not ok.any():
        write_manifest(out, kind="parity", spec=spec_dict, potential=provenance,
                       status="failed", started=started, wall_s=clock.seconds,
                       error="no frame could be evaluated")
        raise StaticsInputError(f"no frame could be evaluated ({table['message'].iloc[0]}); "
                                f"see {out / 'manifest.json'}")
    good = table[ok]
    comp = np.array([[f["atoms"].get_chemical_symbols().count(el) for el in elements]
                     for f, is_ok in zip(frames, ok) if is_ok])
    e_err, offset_info = energy_errors(good["energy_diff_eV_per_atom"].to_numpy(),
                                       materials=good["material"].tolist(), compositions=comp,
                                       elements=elements, mode=spec.energy_reference)
    table.loc[ok, "energy_error_eV_per_atom"] = e_err

    forces_df = pd.DataFrame(atom_rows, columns=["frame", "atom", "element", "fx_ref", "fy_ref",
                                                 "fz_ref", "fx_model", "fy_model", "fz_model"])
    f_err = (forces_df[["fx_model", "fy_model", "fz_model"]].to_numpy()
             - forces_df[["fx_ref", "fy_ref", "fz_ref"]].to_numpy())
    has_stress = good["stress_mae_GPa"].notna() if "stress_mae_GPa" in good else good["n_atoms"] < 0
    s_err = np.concatenate([
        (good.loc[has_stress, [f"stress_model_{v}_GPa" for v in VOIGT]].to_numpy()
         - good.loc[has_stress, [f"stress_ref_{v}_GPa" for v in VOIGT]].to_numpy()).ravel()
    ]) if has_stress.any() else np.array([])

    e_mae, e_rmse = _mae_rmse(e_err)
    f_mae, f_rmse = _mae_rmse(f_err)
    s_mae, s_rmse = _mae_rmse(s_err)
    per_element = []
    for el in elements:
        mask = (forces_df["element"] == el).to_numpy()
        if mask.any():
            mae, rmse = _mae_rmse(f_err[mask])
            per_element.append({"element": el, "n_atoms": int(mask.sum()),
                                "force_mae_eV_per_A": mae, "force_rmse_eV_per_A": rmse})
    per_material = []
    table_ok = table[ok]
    for material, group in table_ok.groupby("material", sort=True):
        idx = group["frame"].to_numpy()
        fmask = forces_df["frame"].isin(idx).to_numpy()
        e_m = group["energy_error_eV_per_atom"].to_numpy()
        smask = group["stress_mae_GPa"].notna() if "stress_mae_GPa" in group else None
        s_m = (group.loc[smask, [f"stress_model_{v}_GPa" for v in VOIGT]].to_numpy()
               - group.loc[smask, [f"stress_ref_{v}_GPa" for v in VOIGT]].to_numpy()
               ) if smask is not None and smask.any() else np.array([])
        em, er = _mae_rmse(e_m)
        fm, fr = _mae_rmse(f_err[fmask])
        sm, sr = _mae_rmse(s_m)
        per_material.append({"material": material, "n_frames": len(group),
                             "energy_mae_eV_per_atom": em, "energy_rmse_eV_per_atom": er,
                             "force_mae_eV_per_A": fm, "force_rmse_eV_per_A": fr,
                             "stress_mae_GPa": sm, "stress_rmse_GPa": sr})
    summary = {
        "potential": spec.potential, "route": route,
        "energy_reference": spec.energy_reference,
        "energy_mae_eV_per_atom": e_mae, "energy_rmse_eV_per_atom": e_rmse,
        "force_mae_eV_per_A": f_mae, "force_rmse_eV_per_A": f_rmse,
        "stress_mae_GPa": s_mae, "stress_rmse_GPa": s_rmse,
        "n_frames": int(ok.sum()), "n_frames_read": len(frames),
        "n_skipped": int((table["status"] == "skipped").sum()),
        "n_failed": int((table["status"] == "failed").sum()),
        "n_stress_frames": int(has_stress.sum()), "n_materials": len(per_material),
        "n_force_components": int(f_err.size),
        "energy_offset": offset_info,
        "per_element": per_element, "per_material": per_material,
        "lammps_calls": counts_calls, "wall_s": None,
        "conventions": {"energy": "per atom, after the energy_reference offset",
                        "forces": "MAE/RMSE over all Cartesian components",
                        "stress": "MAE/RMSE over the 6 Voigt components, GPa, ASE sign "
                                  "(positive = tensile)"},
    }
    outputs = []
    outputs += write_table(table, out, "frames")
    outputs += write_table(forces_df, out, "forces", parquet=True)
    outputs += write_table(pd.DataFrame(per_element), out, "per_element")
    outputs += write_table(pd.DataFrame(per_material), out, "per_material")
    try:
        outputs += parity_plots(table[ok], forces_df, out=out, title=spec.potential,
                                energy_reference=spec.energy_reference, summary=summary)
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
        summary["plot_error"] = f"{type(exc).__name__}: {exc}"
    summary["wall_s"] = clock.seconds
    write_json(out / "parity.json", summary)
    outputs.append("parity.json")
    provenance["route"] = route
    write_manifest(out, kind="parity", spec=spec_dict, potential=provenance, status="completed",
                   started=started, wall_s=clock.seconds, outputs=outputs,
                   extra={"type_elements": elements, "lammps_calls": counts_calls})
    summary["out"] = str(out)
    return summary


def parity_plots(table: Any, forces_df: Any, *, out: Path, title: str,
                 energy_reference: str, summary: dict[str, Any]) -> list[str]:
    """parity_energy.png, parity_forces.png, parity_stress.png (model vs reference)."""
    from harness.statics.tables import figure, save_figure

    written = []

    def square(ax, x, y, *, label_x, label_y, text, groups=None):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        finite = np.isfinite(x) & np.isfinite(y)
        if groups is not None and len(set(groups)) <= 10:
            groups = np.asarray(groups)
            for g in sorted(set(groups[finite])):
                m = finite & (groups == g)
                ax.scatter(x[m], y[m], s=8, alpha=0.7, label=g)
            ax.legend(fontsize=7, loc="upper left", markerscale=1.5, frameon=False)
        elif finite.sum() > 5000:
            ax.hexbin(x[finite], y[finite], gridsize=80, bins="log", mincnt=1, cmap="viridis")
        else:
            ax.scatter(x[finite], y[finite], s=6, alpha=0.6)
        lo = float(min(x[finite].min(), y[finite].min()))
        hi = float(max(x[finite].max(), y[finite].max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(label_x)
        ax.set_ylabel(label_y)
        ax.text(0.97, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)

    e_ref = table["energy_ref_eV_per_atom"].to_numpy()
    e_model = e_ref + table["energy_error_eV_per_atom"].to_numpy()
    fig, ax = figure()
    square(ax, e_ref, e_model, label_x="reference energy (eV/atom)",
           label_y=f"model energy, offset '{energy_reference}' (eV/atom)",
           text=f"MAE {summary['energy_mae_eV_per_atom'] * 1000:.1f} meV/atom\n"
                f"{summary['n_frames']} frames", groups=table["material"].tolist())
    written.append(save_figure(fig, out / "parity_energy.png"))

    fig, ax = figure()
    ref = forces_df[["fx_ref", "fy_ref", "fz_ref"]].to_numpy().ravel()
    mod = forces_df[["fx_model", "fy_model", "fz_model"]].to_numpy().ravel()
    groups = np.repeat(forces_df["element"].to_numpy(), 3)
    square(ax, ref, mod, label_x="reference force component (eV/A)",
           label_y="model force component (eV/A)",
           text=f"MAE {summary['force_mae_eV_per_A'] * 1000:.1f} meV/A",
           groups=groups if ref.size <= 50000 else None)
    written.append(save_figure(fig, out / "parity_forces.png"))

    cols_ref = [f"stress_ref_{v}_GPa" for v in VOIGT]
    cols_mod = [f"stress_model_{v}_GPa" for v in VOIGT]
    if summary["stress_mae_GPa"] is not None:
        fig, ax = figure()
        has = table["stress_mae_GPa"].notna()
        square(ax, table.loc[has, cols_ref].to_numpy().ravel(),
               table.loc[has, cols_mod].to_numpy().ravel(),
               label_x="reference stress component (GPa)", label_y="model stress component (GPa)",
               text=f"MAE {summary['stress_mae_GPa']:.3f} GPa\n"
                    f"{summary['n_stress_frames']} frames")
        written.append(save_figure(fig, out / "parity_stress.png"))
    return written
