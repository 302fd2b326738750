"""``harness elastic``: relaxed-ion elastic tensor from finite strains, VRH moduli, EOS.

Protocol (matcalc's ``ElasticityCalc`` and the Materials Project's workflow, de Jong et al.
2015): relax the cell and positions; apply each of the six independent strains at several
magnitudes (normal: +-0.5 %, +-1 %; shear: +-1 %, +-2 % engineering strain), relax the
ions at fixed cell, read the stress; a straight-line fit of each
stress component against each strain component gives one column of C (the intercept
absorbs the residual stress of the relaxed cell). Voigt notation xx yy zz yz xz xy with
engineering shear strains, so sigma = C epsilon; stresses are ASE's (positive = tensile),
eV/A^3 converted to GPa. The fit residual (RMS, GPa) and the asymmetry of C are reported;
C is then symmetrized. Shear strains: matcalc's defaults are +-3 %, +-6 %; on the lj-test
fcc crystal those bias C44 by +4 % (third-order terms) against the analytic lattice sum,
+-1 %, +-2 % by 0.4 %, +-0.5 %, +-1 % by 0.2 % (tests/statics/test_elastic.py), so the
default is the middle set: small enough to be linear, large enough for float32 models.

From C: Voigt, Reuss and Hill bulk and shear moduli, Young's modulus
E = 9 K G / (3 K + G) and Poisson's ratio from the Hill averages, and mechanical
stability (Born criteria in their general form: all eigenvalues of C positive).
Cross-check: bulk modulus from a Birch-Murnaghan fit (ase.eos) of E(V) over isotropic
volume scalings of the relaxed cell (ions relaxed at each volume).

Every energy and stress comes from :class:`harness.statics.calculator.LammpsCalculator`
(``run 0`` through the MD pair style); relaxations use :mod:`harness.statics.relax`.
``C_voigt_GPa`` is in the Cartesian frame of the input structure (K, G, E are invariant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.statics.relax import RelaxationFailed, RelaxSettings, relax_atoms
from harness.units import GPA_PER_EV_PER_A3

VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")
_VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


class ElasticSpec(BaseModel):
    """``harness elastic`` options (also the YAML keys)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    structure: str = Field(..., description="CIF, POSCAR, extxyz or a bundled name")
    potential: str
    route: Literal["auto", "native", "mliap", "external"] = "auto"
    device: str = "auto"
    normal_strains: list[float] = Field([-0.01, -0.005, 0.005, 0.01])
    shear_strains: list[float] = Field([-0.02, -0.01, 0.01, 0.02],
                                       description="engineering shear strains (2 eps_ij)")
    relax_ions: bool = Field(True, description="relax ions in every strained cell "
                             "(relaxed-ion constants); False gives clamped-ion constants")
    relax_structure: bool = Field(True, description="relax cell and ions first")
    fmax_eV_per_A: float = Field(0.005, gt=0)
    smax_GPa: float = Field(0.02, gt=0)
    max_steps: int = Field(1000, gt=0)
    eos_volume_range: float = Field(0.06, gt=0, lt=0.5, description="EOS volumes span "
                                    "V0 (1 -+ this)")
    eos_points: int = Field(7, ge=5, le=31)
    out: str = "elastic"

    @field_validator("normal_strains", "shear_strains")
    @classmethod
    def _strains(cls, value: list[float]) -> list[float]:
        if len(value) < 2 or len(set(value)) < 2:
            raise ValueError("give at least two distinct strains for a linear fit")
        if any(v == 0 or abs(v) > 0.2 for v in value):
            raise ValueError("strains must be non-zero and at most 0.2 in magnitude")
        return value


# --- the maths (pure functions) ---------------------------------------------------------------
def strain_matrix(component: int, magnitude: float) -> np.ndarray:
    """Symmetric strain tensor for one Voigt component (engineering shear: eps_ij = g/2)."""
    i, j = _VOIGT_PAIRS[component]
    eps = np.zeros((3, 3))
    if i == j:
        eps[i, i] = magnitude
    else:
        eps[i, j] = eps[j, i] = magnitude / 2
    return eps


def fit_stiffness(strains: dict[int, list[float]],
                  stresses: dict[int, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """C (6x6, units of the stresses) and the RMS fit residual per column.

    ``strains[j]`` are the magnitudes applied to Voigt component j, ``stresses[j]`` the
    Voigt stress vectors measured for them: column j of C is the slope of a straight-line
    fit (with intercept) of each stress component against the strain.
    """
    c = np.zeros((6, 6))
    residual = np.zeros(6)
    for j in range(6):
        x = np.asarray(strains[j], dtype=float)
        y = np.asarray(stresses[j], dtype=float)  # (n, 6)
        design = np.vstack([x, np.ones_like(x)]).T
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        c[:, j] = coef[0]
        residual[j] = float(np.sqrt(np.mean((design @ coef - y) ** 2)))
    return c, residual


def vrh_moduli(c: np.ndarray) -> dict[str, float]:
    """Voigt/Reuss/Hill bulk and shear moduli, Young's modulus and Poisson's ratio."""
    c = np.asarray(c, dtype=float)
    k_v = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9
    g_v = ((c[0, 0] + c[1, 1] + c[2, 2]) - (c[0, 1] + c[1, 2] + c[0, 2])
           + 3 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15
    try:
        s = np.linalg.inv(c)
        k_r = 1 / (s[0, 0] + s[1, 1] + s[2, 2] + 2 * (s[0, 1] + s[1, 2] + s[0, 2]))
        g_r = 15 / (4 * (s[0, 0] + s[1, 1] + s[2, 2]) - 4 * (s[0, 1] + s[1, 2] + s[0, 2])
                    + 3 * (s[3, 3] + s[4, 4] + s[5, 5]))
    except np.linalg.LinAlgError:
        k_r = g_r = float("nan")
    k, g = (k_v + k_r) / 2, (g_v + g_r) / 2
    return {"K_V_GPa": k_v, "K_R_GPa": k_r, "K_VRH_GPa": k, "G_V_GPa": g_v, "G_R_GPa": g_r,
            "G_VRH_GPa": g, "E_GPa": 9 * k * g / (3 * k + g),
            "poisson_ratio": (3 * k - 2 * g) / (2 * (3 * k + g))}


def stability(c: np.ndarray) -> dict[str, Any]:
    """Born stability in general form: C (symmetric) positive definite."""
    eig = np.linalg.eigvalsh((np.asarray(c) + np.asarray(c).T) / 2)
    return {"mechanically_stable": bool(np.all(eig > 0)),
            "eigenvalues_GPa": eig.tolist(), "min_eigenvalue_GPa": float(eig.min())}


def birch_murnaghan(volumes: np.ndarray, energies: np.ndarray) -> dict[str, float]:
    from ase.eos import EquationOfState

    eos = EquationOfState(np.asarray(volumes), np.asarray(energies), eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    bp = _bm_params(eos)[3]
    return {"V0_A3": float(v0), "E0_eV": float(e0), "K_EOS_GPa": float(b * GPA_PER_EV_PER_A3),
            "K_prime": bp}


def _bm_params(eos: Any) -> tuple[float, ...]:
    params = getattr(eos, "eos_parameters", None)
    if params is None:
        return (np.nan,) * 5
    e0, b0, bp, v0 = params
    return e0, b0, v0, float(bp), 0.0


#: thresholds of :func:`consistency_flags`
K_MISMATCH_FRACTION = 0.05
V0_MISMATCH_FRACTION = 0.005
RESIDUAL_FRACTION = 0.01
ASYMMETRY_FRACTION = 0.05


def consistency_flags(*, c: np.ndarray, c_raw: np.ndarray, residual: np.ndarray,
                      moduli: dict[str, float], eos: dict[str, float],
                      volume_A3: float) -> list[str]:
    """Warnings that a number is less certain than its digits suggest (empty: none)."""
    flags = []
    scale = float(np.abs(c).max())
    k, k_eos = moduli["K_VRH_GPa"], eos["K_EOS_GPa"]
    if not np.isfinite(k_eos) or abs(k - k_eos) > K_MISMATCH_FRACTION * abs(k):
        flags.append(f"K_VRH {k:.1f} and K_EOS {k_eos:.1f} GPa differ by more than "
                     f"{K_MISMATCH_FRACTION:.0%}: the stress is not the strain derivative of "
                     "the energy to this accuracy, or E(V) is not Birch-Murnaghan over the range")
    if abs(eos["V0_A3"] / volume_A3 - 1) > V0_MISMATCH_FRACTION:
        flags.append(f"EOS V0 {eos['V0_A3']:.3f} A^3 differs from the relaxed (zero-stress) "
                     f"volume {volume_A3:.3f} A^3 by more than {V0_MISMATCH_FRACTION:.1%}")
    if residual.max() > RESIDUAL_FRACTION * scale:
        flags.append(f"stress-strain fit residual {residual.max():.3f} GPa exceeds "
                     f"{RESIDUAL_FRACTION:.0%} of max |C| ({scale:.1f} GPa): nonlinear or noisy")
    if np.abs(c_raw - c_raw.T).max() > ASYMMETRY_FRACTION * scale:
        flags.append(f"C was asymmetric by {np.abs(c_raw - c_raw.T).max():.2f} GPa (> "
                     f"{ASYMMETRY_FRACTION:.0%} of max |C|) before symmetrization")
    if not np.all(np.linalg.eigvalsh(c) > 0):
        flags.append("mechanically unstable: C has a non-positive eigenvalue")
    return flags


# --- the workflow -----------------------------------------------------------------------------
def _stress_GPa(atoms: Any, calc: Any) -> np.ndarray:
    atoms.calc = calc
    try:
        return np.asarray(atoms.get_stress(voigt=True)) * GPA_PER_EV_PER_A3
    finally:
        atoms.calc = None


def run_elastic(spec: ElasticSpec, *, force: bool = False) -> dict[str, Any]:
    """Relax, strain, fit; writes elastic.json, strains.csv/parquet, eos.csv/parquet,
    stress_strain.png, eos.png, relaxed.extxyz and manifest.json."""
    import pandas as pd
    from ase.io import write

    from harness.md.rundir import now_iso
    from harness.statics.calculator import LammpsCalculator
    from harness.statics.relax import load_checked_structure
    from harness.statics.statics_run import (Stopwatch, _model_info, prepare_out_dir,
                                             write_json, write_manifest)
    from harness.statics.tables import write_table
    from potentials.registry import get_potential

    atoms = load_checked_structure(spec.structure)
    potential = get_potential(spec.potential, route=spec.route, device=spec.device)
    potential.check_elements(atoms.get_chemical_symbols())
    out = prepare_out_dir(spec.out, force=force)
    started, clock = now_iso(), Stopwatch()
    spec_dict = spec.model_dump(mode="json")
    provenance = _model_info(potential)
    write_manifest(out, kind="elastic", spec=spec_dict, potential=provenance,
                   status="running", started=started)
    cell_settings = RelaxSettings(fmax_eV_per_A=spec.fmax_eV_per_A, smax_GPa=spec.smax_GPa,
                                  max_steps=spec.max_steps, relax_cell=True)
    ion_settings = cell_settings.model_copy(update={"relax_cell": False})

    def fail(stage: str, result: Any) -> None:
        write_manifest(out, kind="elastic", spec=spec_dict, potential=provenance,
                       status="failed", started=started, wall_s=clock.seconds,
                       extra={"failure_class": result.failure_class, "stage": stage},
                       error=result.message)
        raise RelaxationFailed(f"{stage} of {atoms.get_chemical_formula()} failed "
                               f"({result.failure_class}): {result.message}; no elastic "
                               f"constants written (see {out / 'manifest.json'})",
                               failure={"failure_class": result.failure_class, "stage": stage})

    rows: list[dict[str, Any]] = []
    eos_rows: list[dict[str, Any]] = []
    with LammpsCalculator(potential, workdir=out / "lammps") as calc:
        if spec.relax_structure:
            relaxed = relax_atoms(atoms, calc, settings=cell_settings)
            if not relaxed.converged:
                fail("relaxation", relaxed)
            ref = relaxed.atoms
            relax_info = relaxed.summary()
        else:
            ref, relax_info = atoms.copy(), {"skipped": True}
        ref.calc = None
        stress0 = _stress_GPa(ref.copy(), calc)
        strains: dict[int, list[float]] = {}
        stresses: dict[int, list[np.ndarray]] = {}
        for j in range(6):
            magnitudes = spec.normal_strains if j < 3 else spec.shear_strains
            strains[j], stresses[j] = [], []
            for mag in magnitudes:
                strained = ref.copy()
                strained.set_cell(ref.cell.array @ (np.eye(3) + strain_matrix(j, mag)),
                                  scale_atoms=True)
                n_steps = 0
                if spec.relax_ions:
                    res = relax_atoms(strained, calc, settings=ion_settings)
                    if not res.converged:
                        fail(f"ionic relaxation at strain {VOIGT[j]}={mag}", res)
                    strained, n_steps = res.atoms, res.n_steps
                sigma = _stress_GPa(strained, calc)
                strains[j].append(mag)
                stresses[j].append(sigma)
                rows.append({"component": VOIGT[j], "strain": mag, "ionic_steps": n_steps,
                             **{f"stress_{v}_GPa": float(sigma[k]) for k, v in enumerate(VOIGT)}})
        # EOS: isotropic scaling, ions relaxed at each volume
        n_atoms = len(ref)
        for f in np.linspace(1 - spec.eos_volume_range, 1 + spec.eos_volume_range,
                             spec.eos_points):
            scaled = ref.copy()
            scaled.set_cell(ref.cell.array * f ** (1 / 3), scale_atoms=True)
            if spec.relax_ions:
                res = relax_atoms(scaled, calc, settings=ion_settings)
                if not res.converged:
                    fail(f"ionic relaxation at volume factor {f:.3f}", res)
                scaled = res.atoms
            scaled.calc = calc
            eos_rows.append({"volume_factor": float(f), "volume_A3": float(scaled.get_volume()),
                             "energy_eV": float(scaled.get_potential_energy()),
                             "energy_eV_per_atom": float(scaled.get_potential_energy()) / n_atoms,
                             "pressure_GPa": float(-np.mean(scaled.get_stress()[:3])
                                                   * GPA_PER_EV_PER_A3)})
            scaled.calc = None
        provenance["route"] = calc.route
        calls = dict(calc.counts)

    c_raw, residual = fit_stiffness(strains, stresses)
    asym = float(np.abs(c_raw - c_raw.T).max())
    c = (c_raw + c_raw.T) / 2
    moduli = vrh_moduli(c)
    eos = birch_murnaghan(np.array([r["volume_A3"] for r in eos_rows]),
                          np.array([r["energy_eV"] for r in eos_rows]))
    flags = consistency_flags(c=c, c_raw=c_raw, residual=residual, moduli=moduli, eos=eos,
                              volume_A3=float(ref.get_volume()))
    summary = {
        "potential": spec.potential, "route": provenance["route"],
        "formula": ref.get_chemical_formula(), "n_atoms": n_atoms, "flags": flags,
        "C_voigt_GPa": c.tolist(), **moduli,
        "a_A": ref.cell.lengths().tolist(), "angles_deg": ref.cell.angles().tolist(),
        "volume_A3": float(ref.get_volume()),
        "K_EOS_GPa": eos["K_EOS_GPa"], "EOS": eos,
        "K_VRH_minus_K_EOS_GPa": moduli["K_VRH_GPa"] - eos["K_EOS_GPa"],
        **stability(c),
        "fit_residual_rms_GPa": dict(zip(VOIGT, residual.tolist())),
        "max_fit_residual_GPa": float(residual.max()),
        "C_asymmetry_max_GPa": asym, "C_voigt_unsymmetrized_GPa": c_raw.tolist(),
        "residual_stress_GPa": stress0.tolist(),
        "protocol": {"normal_strains": spec.normal_strains,
                     "shear_strains_engineering": spec.shear_strains,
                     "ions": "relaxed at fixed cell" if spec.relax_ions else "clamped",
                     "fit": "least squares line with intercept, per strain component",
                     "stress": "ASE sign (positive = tensile), Voigt xx yy zz yz xz xy",
                     "eos": "Birch-Murnaghan (ase.eos) over isotropic volume scalings"},
        "relaxation": relax_info, "lammps_calls": calls,
    }
    outputs = write_table(pd.DataFrame(rows), out, "strains")
    outputs += write_table(pd.DataFrame(eos_rows), out, "eos")
    write(out / "relaxed.extxyz", ref, format="extxyz", parallel=False)
    outputs.append("relaxed.extxyz")
    try:
        outputs += elastic_plots(rows, eos_rows, eos=eos, out=out,
                                 title=f"{spec.potential}: {ref.get_chemical_formula()}")
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
        summary["plot_error"] = f"{type(exc).__name__}: {exc}"
    summary["wall_s"] = clock.seconds
    write_json(out / "elastic.json", summary)
    outputs.append("elastic.json")
    write_manifest(out, kind="elastic", spec=spec_dict, potential=provenance,
                   status="completed", started=started, wall_s=clock.seconds, outputs=outputs)
    summary["out"] = str(out)
    return summary


def elastic_plots(rows: list[dict[str, Any]], eos_rows: list[dict[str, Any]], *,
                  eos: dict[str, float], out: Path, title: str) -> list[str]:
    from harness.statics.tables import figure, save_figure

    fig, axes = figure(4.2, 3.6, ncols=2)
    for j, name in enumerate(VOIGT):
        pts = [r for r in rows if r["component"] == name]
        x = [100 * r["strain"] for r in pts]
        ax = axes[0] if j < 3 else axes[1]
        ax.plot(x, [r[f"stress_{name}_GPa"] for r in pts], "o-", ms=3,
                label=f"sigma_{name} vs eps_{name}")
    axes[0].set_xlabel("normal strain (%)")
    axes[1].set_xlabel("engineering shear strain (%)")
    for ax in axes:
        ax.set_ylabel("stress (GPa, tensile > 0)")
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_title(title, fontsize=9)
    written = [save_figure(fig, out / "stress_strain.png")]

    fig, ax = figure(4.6, 3.6)
    v = np.array([r["volume_A3"] for r in eos_rows])
    e = np.array([r["energy_eV"] for r in eos_rows])
    ax.plot(v, e, "o", label="relaxed-ion energies")
    b = eos["K_EOS_GPa"] / GPA_PER_EV_PER_A3
    if np.isfinite(eos.get("K_prime", np.nan)):
        vv = np.linspace(v.min(), v.max(), 200)
        eta = (eos["V0_A3"] / vv) ** (2 / 3)
        bp = eos["K_prime"]
        fit = eos["E0_eV"] + 9 * eos["V0_A3"] * b / 16 * (
            (eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta))
        ax.plot(vv, fit, "-", label=f"Birch-Murnaghan, K = {eos['K_EOS_GPa']:.1f} GPa")
    ax.set_xlabel("volume (A^3)")
    ax.set_ylabel("energy (eV)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    written.append(save_figure(fig, out / "eos.png"))
    return written
