"""``TransportAnalyzer``: one constructor per input source, ``run()`` gives the results.

    analyzer = TransportAnalyzer.from_lammps_dump("traj.lammpstrj", data="structure.data",
                                                  timestep_fs=2.0, temperature_K=800)
    results = analyzer.run()
    results.as_dict()["D_cm2_per_s"]
    results.write("analysis/")          # transport.json, msd.csv, ..., PNG plots

The pipeline: one streaming pass (:mod:`analysis.collect`), then the maths on what it
gathered: all-origins MSD and lag statistics (:mod:`analysis.msd`), D with kinisi's
uncertainty (:mod:`analysis.diffusion`), conductivities, van Hove, RDF, density, flags.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis import flags as F
from analysis.collect import CollectSettings, collect
from analysis.diffusion import (BayesianFit, KinisiSettings, choose_fit_window, fit_lags,
                                msd_upper_bound_D,
                                kinisi_fit, loglog_exponent, ols_slope, slope_to_D_cm2_per_s)
from analysis.errors import AnalysisInputError, AnalysisWarning
from analysis.msd import all_origin_statistics, collective_statistics
from analysis.readers import (ArraySource, AseSource, LammpsDumpSource, UniverseSource,
                              check_element, default_mobile_species)
from analysis.units import nernst_einstein_mS_per_cm

#: formal charge number of common mobile ions (sigma goes with q^2, the sign is irrelevant)
ION_CHARGE = {"H": 1, "Li": 1, "Na": 1, "K": 1, "Rb": 1, "Cs": 1, "Ag": 1, "Cu": 1, "Tl": 1,
              "Mg": 2, "Ca": 2, "Zn": 2, "Sr": 2, "Ba": 2, "Al": 3, "F": -1, "Cl": -1,
              "Br": -1, "I": -1, "O": -2, "S": -2}


@dataclass
class AnalysisSettings:
    """Everything that changes the numbers; written into transport.json."""

    species: str | None = None
    temperature_K: float | None = None
    charge: float | None = None  # formal charge number of the analysed species
    charges: dict[str, float] | None = None  # per species, e.g. {"Mg": 2, "Li": 1}
    analysis_start_ps: float = 0.0
    fit_start_ps: float | None = None
    fit_end_ps: float | None = None
    seed: int = 0
    kinisi: KinisiSettings = field(default_factory=KinisiSettings)
    max_samples_per_lag: int | None = 2_000_000
    vanhove_lags: int = 40
    vanhove_dr_A: float = 0.05
    vanhove_distinct_lags: int = 12
    vanhove_distinct_r_max_A: float = 8.0
    vanhove_distinct_max_pairs_per_lag: int = 5_000_000
    rdf_window_ps: tuple[float, float] | None = None
    collect: CollectSettings = field(default_factory=CollectSettings)
    memory_budget_bytes: int = 256 << 20
    compute_distinct: bool = True
    compute_rdf: bool = True
    compute_charge: bool = True


class TransportAnalyzer:
    """Transport analysis of one mobile species over one trajectory."""

    def __init__(self, source, *, settings: AnalysisSettings | None = None,
                 frame_interval_fs: float | None = None,
                 provenance: dict[str, Any] | None = None, extra_flags: dict[str, str] | None = None):
        self.source = source
        self.settings = settings or AnalysisSettings()
        self.frame_interval_fs = frame_interval_fs
        self.provenance = dict(provenance or {})
        self.extra_flags = dict(extra_flags or {})

    # -- constructors --------------------------------------------------------------------
    @classmethod
    def from_lammps_dump(cls, dump: str | Path, *, data: str | Path | None = None,
                         type_map: str | dict | None = None, timestep_fs: float | None = None,
                         frame_interval_fs: float | None = None, **settings) -> "TransportAnalyzer":
        """A LAMMPS text dump (+ data file for masses/types). Time per frame = TIMESTEP
        difference x ``timestep_fs`` (or ``frame_interval_fs`` per frame)."""
        source = LammpsDumpSource(dump, data=data, type_map=type_map, timestep_fs=timestep_fs,
                                  frame_interval_fs=frame_interval_fs)
        prov = {"input": "lammps_dump", "dump": str(dump), "data": str(data) if data else None,
                "timestep_fs": timestep_fs, "frame_interval_fs": frame_interval_fs}
        return cls(source, settings=_settings(**settings), frame_interval_fs=frame_interval_fs,
                   provenance=prov)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, *, type_map: str | dict | None = None,
                     **settings) -> "TransportAnalyzer":
        """A run directory of ``harness md``: everything from its ``manifest.json``."""
        run_dir = Path(run_dir)
        path = run_dir / "manifest.json"
        if not path.is_file():
            raise AnalysisInputError(f"{run_dir} is not a run directory of `harness md` "
                                     "(no manifest.json); for a bare dump use --dump/--data")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AnalysisInputError(f"{path} is not valid JSON ({exc})") from None
        spec = manifest.get("spec") or {}
        outputs = manifest.get("outputs") or {}
        if "dump" not in outputs:
            raise AnalysisInputError(f"{path} lists no dump under 'outputs'")
        dump = run_dir / outputs["dump"]
        data = run_dir / outputs["data"] if outputs.get("data") else None
        if not dump.is_file():
            status = manifest.get("status")
            raise AnalysisInputError(f"{dump} does not exist (run status: {status}); "
                                     "the MD run wrote no trajectory")
        timestep_fs = spec.get("timestep_fs")
        if settings.get("temperature_K") is None:
            settings["temperature_K"] = spec.get("temperature_K")
        if settings.get("analysis_start_ps") is None:
            settings["analysis_start_ps"] = float(manifest.get("analysis_start_ps") or 0.0)
        tmap = type_map if type_map is not None else manifest.get("type_map")
        source = LammpsDumpSource(dump, data=data if data and data.is_file() else None,
                                  type_map=tmap, timestep_fs=timestep_fs,
                                  frame_interval_fs=manifest.get("frame_interval_fs"))
        extra = {}
        main_log = run_dir / str(outputs.get("log", "log.lammps"))
        # resumed segments log to log.from_<step>.lammps
        logs = [main_log, *sorted(run_dir.glob("log.from_*.lammps"))]
        lost = [log.name for log in logs if log.is_file() and _log_reports_lost_atoms(log)]
        if lost:
            extra["lost_atoms"] = f"{', '.join(lost)} report(s) lost atoms"
        if manifest.get("status") not in (None, "completed"):
            extra["run_not_completed"] = f"manifest status is {manifest.get('status')!r}"
        prov = {"input": "run_dir", "run_dir": str(run_dir), "dump": str(dump),
                "data": str(data) if data else None, "timestep_fs": timestep_fs,
                "ensemble": spec.get("ensemble"), "potential": spec.get("potential"),
                "structure": spec.get("structure"), "manifest_status": manifest.get("status")}
        return cls(source, settings=_settings(**settings), provenance=prov, extra_flags=extra)

    @classmethod
    def from_ase(cls, trajectory, *, frame_interval_fs: float | None = None,
                 format: str | None = None, index: str = ":", **settings) -> "TransportAnalyzer":
        """Anything ``ase.io.iread`` reads (extxyz, XDATCAR, vasprun.xml) or a list of Atoms."""
        source = AseSource(trajectory, frame_interval_fs=frame_interval_fs, format=format,
                           index=index)
        prov = {"input": "ase", "trajectory": str(trajectory) if isinstance(trajectory, (str, Path))
                else f"{len(trajectory)} Atoms objects", "format": source.format,
                "frame_interval_fs": frame_interval_fs}
        return cls(source, settings=_settings(**settings), frame_interval_fs=frame_interval_fs,
                   provenance=prov)

    @classmethod
    def from_pieces(cls, paths, *, frame_interval_fs: float | None = None,
                    format: str | None = None, **settings) -> "TransportAnalyzer":
        """Consecutive files of one trajectory (ASE formats, gz allowed), in order."""
        from analysis.readers import ConcatenatedSource

        source = ConcatenatedSource([AseSource(p, frame_interval_fs=frame_interval_fs,
                                               format=format) for p in paths])
        prov = {"input": "ase_pieces", "trajectory": [str(p) for p in paths],
                "format": source.sources[0].format, "frame_interval_fs": frame_interval_fs}
        return cls(source, settings=_settings(**settings), frame_interval_fs=frame_interval_fs,
                   provenance=prov)

    @classmethod
    def from_universe(cls, universe, *, frame_interval_fs: float | None = None,
                      **settings) -> "TransportAnalyzer":
        """An MDAnalysis ``Universe`` (elements from ``atoms.elements`` or ``types``)."""
        source = UniverseSource(universe, frame_interval_fs=frame_interval_fs)
        prov = {"input": "mdanalysis", "universe": str(universe)}
        return cls(source, settings=_settings(**settings),
                   frame_interval_fs=source.info().fs_per_step, provenance=prov)

    @classmethod
    def from_arrays(cls, positions, *, symbols, cells, frame_interval_fs: float, images=None,
                    **settings) -> "TransportAnalyzer":
        """In-memory arrays: positions (frames, atoms, 3), cells (frames, 3, 3) or (3, 3)."""
        source = ArraySource(positions, symbols=symbols, cells=cells,
                             frame_interval_fs=frame_interval_fs, images=images)
        prov = {"input": "arrays", "shape": list(source.positions.shape),
                "frame_interval_fs": frame_interval_fs}
        return cls(source, settings=_settings(**settings), frame_interval_fs=frame_interval_fs,
                   provenance=prov)

    # -- the analysis --------------------------------------------------------------------
    def run(self) -> "TransportResults":
        s = self.settings
        info = self.source.info()
        symbols = [str(x) for x in info.symbols]
        species = s.species
        if species is None:
            species = default_mobile_species(symbols)
        else:
            species = check_element(species, what="--species")
            if species not in set(symbols):
                raise AnalysisInputError(
                    f"unknown species {species!r}: the trajectory holds "
                    f"{', '.join(sorted(set(symbols)))}; pass one of them to --species")
        if s.temperature_K is None or not np.isfinite(s.temperature_K) or s.temperature_K <= 0:
            raise AnalysisInputError("temperature unknown: pass --temperature-K T (needed for "
                                     "the Nernst-Einstein conductivity)")
        if s.rdf_window_ps is not None:
            lo, hi = s.rdf_window_ps
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
                raise AnalysisInputError(f"rdf window {s.rdf_window_ps} ps must be "
                                         "(start, end) with 0 <= start < end")
        charge, charge_source = ion_charge(species, charge=s.charge, charges=s.charges)
        frame_interval_fs = self.frame_interval_fs
        if frame_interval_fs is None and getattr(self.source, "frame_interval_fs", None):
            frame_interval_fs = self.source.frame_interval_fs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if charge_source == "assumed":
                warnings.warn(f"no formal charge known for {species}; the conductivities use "
                              f"q = +1 (set the analysis setting charge to the ion's charge)",
                              AnalysisWarning, stacklevel=2)
            data = collect(self.source, info, mobile=species,
                           frame_interval_fs=frame_interval_fs, settings=s.collect)
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        try:
            return self._analyse(data, info=info, species=species, charge=charge,
                                 charge_source=charge_source,
                                 input_warnings=[str(w.message) for w in caught])
        finally:
            data.store.close()

    def _analyse(self, data, *, info, species, charge, charge_source,
                 input_warnings) -> "TransportResults":
        s = self.settings
        dt = data.frame_interval_ps
        n = data.n_frames
        if n < 10:
            raise AnalysisInputError(f"only {n} frames after the discard: a diffusion fit "
                                     "needs at least 10; run longer or dump more often")
        window = choose_fit_window(frame_interval_ps=dt, n_frames=n, start_ps=s.fit_start_ps,
                                   end_ps=s.fit_end_ps)
        lags = fit_lags(window, max_points=s.kinisi.max_fit_points)
        vh_lags = np.unique(np.rint(np.linspace(0, window.end_index, s.vanhove_lags + 1))
                            .astype(np.int64))
        stats = all_origin_statistics(data.store, var_lags=lags, vh_lags=vh_lags,
                                      vh_dr=s.vanhove_dr_A,
                                      max_samples_per_lag=s.max_samples_per_lag,
                                      memory_budget_bytes=s.memory_budget_bytes)
        n_ions = len(data.mobile_index)
        time_ps = np.arange(n) * dt
        msd = stats.msd
        n_obs_fit = n_ions * (n - 1) / lags
        fit = kinisi_fit(lag_times_ps=lags * dt, msd_A2=msd[lags], s_var_A4=stats.s_var,
                         n_obs=n_obs_fit, seed=s.seed, settings=s.kinisi)
        # -- the tracer posterior is checked against the MSD it was fitted to --------------
        # (MSD(t_e) + 2 sigma) / (6 t_e) bounds D for any MSD = c + 6 D t with c >= 0; a
        # posterior median far above it (kinisi's sampler on a flat likelihood: a caged
        # MSD gave D = 2e16 cm^2/s on the Li6PS5Cl AIMD) is refused, not written
        end = int(lags[-1])
        D_upper = msd_upper_bound_D(msd_A2=msd[end], s_var_A4=stats.s_var[-1],
                                    n_obs=n_obs_fit[-1], time_ps=end * dt)
        D_rejected = None
        if not np.isfinite(fit.median) or fit.median > F.D_MAX_OVER_MSD_BOUND * D_upper:
            D_rejected = {"D_cm2_per_s": fit.median, "D_ci95_cm2_per_s": fit.ci95,
                          "reason": (f"posterior median {fit.median:.3g} cm^2/s exceeds "
                                     f"{F.D_MAX_OVER_MSD_BOUND:g} x the MSD bound "
                                     f"{D_upper:.3g} cm^2/s = (MSD + 2 sigma) / (6 t) at the "
                                     f"fit-window end; the regression ran away")}
            fit = BayesianFit(samples_cm2_per_s=np.full_like(fit.samples_cm2_per_s, np.nan),
                              intercept_samples_A2=None, settings=fit.settings)
        window_idx = np.arange(window.start_index, window.end_index + 1)
        ols = ols_slope(time_ps[window_idx], msd[window_idx])
        D_axes = [slope_to_D_cm2_per_s(ols_slope(time_ps[window_idx],
                                                 stats.msd_axes[window_idx, k])[0], dimensions=1)
                  for k in range(3)]
        volumes = data.volumes
        volume = float(volumes.mean())
        T = float(s.temperature_K)

        def ne(D):
            return nernst_einstein_mS_per_cm(D, n_ions=n_ions, volume_A3=volume, temperature_K=T,
                                             charge=charge)

        # -- charge (collective) diffusion: fitted, then checked (analysis.charge) --------
        from analysis.charge import ChargeResult, charge_diffusion

        mscd_sum, c_mean, c_var = collective_statistics(data.collective, lags=lags)
        mscd = mscd_sum / n_ions
        if s.compute_charge:
            charge_result = charge_diffusion(lag_times_ps=lags * dt, mscd_A2=mscd[lags],
                                             s_var_A4=c_var / n_ions ** 2, n_frames=n,
                                             lags=lags, tracer=fit, seed=s.seed + 1,
                                             settings=s.kinisi)
        else:
            charge_result = ChargeResult(status="not_computed")
        charge_fit = charge_result.fit if charge_result.usable else None
        # -- van Hove ------------------------------------------------------------------------
        from analysis.vanhove import distinct_part, self_part

        vh_self = self_part(stats, frame_interval_ps=dt)
        vh_distinct = None
        if s.compute_distinct and n_ions >= 2:
            pick = np.unique(np.rint(np.linspace(0, len(vh_lags) - 1,
                                                 min(s.vanhove_distinct_lags, len(vh_lags))))
                             .astype(int))
            vh_distinct = distinct_part(data.mobile_positions, lags=vh_lags[pick], n_frames=n,
                                        cells=data.cells, frame_interval_ps=dt,
                                        r_max_A=s.vanhove_distinct_r_max_A,
                                        max_pairs_per_lag=s.vanhove_distinct_max_pairs_per_lag)
        rdf = data.rdf.result(window_ps=s.rdf_window_ps) if s.compute_rdf and data.rdf.frames \
            else None
        density = data.density.density_per_A3()
        # -- flags ---------------------------------------------------------------------------
        flags = F.Flags()
        msd_max = float(np.max(msd))
        if msd_max < F.MSD_MIN_A2:
            flags.add("msd_below_20A2", f"largest MSD {msd_max:.2f} A^2 < {F.MSD_MIN_A2:g} A^2 "
                      "(seed 004 reliability threshold)")
        fw_msd_end = {e: float(v[-1]) for e, v in data.framework_msd.items()}
        for e, v in fw_msd_end.items():
            if v > F.FRAMEWORK_MSD_MAX_A2:
                flags.add("framework_diffusing", f"{e} MSD {v:.2f} A^2 > "
                          f"{F.FRAMEWORK_MSD_MAX_A2:g} A^2 at the end (melting/amorphisation?)")
        rdf_drop = _framework_rdf_drop(data, species)
        for pair, drop in rdf_drop.items():
            if drop > F.FRAMEWORK_RDF_PEAK_DROP:
                flags.add("framework_rdf_loss", f"{pair} first RDF peak drops {100 * drop:.0f} % "
                          "from the first to the last quarter of the run")
        width_ps = window.end_ps - window.start_ps
        if width_ps < F.FIT_WINDOW_MIN_PS or window.end_index - window.start_index + 1 < \
                F.FIT_WINDOW_MIN_FRAMES:
            flags.add("fit_window_short", f"fit window {width_ps:.2f} ps, "
                      f"{window.end_index - window.start_index + 1} frames (want >= "
                      f"{F.FIT_WINDOW_MIN_PS:g} ps and >= {F.FIT_WINDOW_MIN_FRAMES} frames)")
        obs_end = n_ions * (n - 1) / window.end_index
        if obs_end < F.MIN_OBSERVATIONS:
            flags.add("few_observations", f"{obs_end:.1f} independent observations at the fit "
                      f"window end (< {F.MIN_OBSERVATIONS:g})")
        alpha = loglog_exponent(time_ps[window_idx], msd[window_idx])
        lo_a, hi_a = F.LOGLOG_SLOPE_RANGE
        if not (lo_a <= alpha <= hi_a):
            flags.add("msd_not_linear", f"log-log slope of the MSD over the fit window is "
                      f"{alpha:.2f} (diffusive: 1)")
        ci = fit.ci95
        if D_rejected is not None:
            flags.add("D_fit_refused", D_rejected["reason"] + f" (least-squares slope: "
                      f"{slope_to_D_cm2_per_s(ols[0]):.2e} cm^2/s); D and sigma are null")
        elif fit.median <= 0 or (ci[1] - ci[0]) > F.D_MAX_RELATIVE_CI * fit.median:
            flags.add("D_uncertain", f"95% interval [{ci[0]:.2e}, {ci[1]:.2e}] is wider than "
                      f"D = {fit.median:.2e} cm^2/s")
        if data.nan_at_frame is not None:
            flags.add("nan_positions", f"non-finite coordinates at frame {data.nan_at_frame} "
                      f"of the input (counted from 0); the analysis stops before it "
                      f"({data.n_frames} frames analysed)")
        if data.unwrap_mode == "minimum_image" and \
                data.max_step_fraction > F.UNWRAP_MAX_STEP_FRACTION:
            flags.add("unwrap_ambiguous", f"largest frame-to-frame step "
                      f"{data.max_step_fraction:.2f} of a cell width without image flags")
        for message in input_warnings:
            if "incomplete" in message:
                flags.add("truncated_input", message)
        if n < F.MIN_FRAMES:
            flags.add("few_frames", f"{n} frames analysed (< {F.MIN_FRAMES})")
        for code, message in self.extra_flags.items():
            flags.add(code, message)
        for code, message in charge_result.flags.items():
            flags.add(code, message)
        sigma_samples = ne(fit.samples_cm2_per_s)
        summary: dict[str, Any] = {
            "species": species,
            "temperature_K": T,
            "n_ions": n_ions,
            "charge": charge,
            "charge_source": charge_source,
            "volume_A3": volume,
            "volume_std_A3": float(volumes.std()),
            "D_cm2_per_s": fit.median,
            "D_ci95_cm2_per_s": ci,
            "D_std_cm2_per_s": fit.std,
            "D_ols_cm2_per_s": slope_to_D_cm2_per_s(ols[0]),
            "D_upper_msd_cm2_per_s": D_upper,
            "D_fit_rejected": D_rejected,
            "D_axes_ols_cm2_per_s": D_axes,
            "sigma_NE_mS_per_cm": ne(fit.median),
            "sigma_NE_ci95_mS_per_cm": [float(v) for v in np.percentile(sigma_samples, [2.5, 97.5])],
            # NaN unless the charge fit passed analysis.charge's checks (see charge_fit)
            "D_charge_cm2_per_s": charge_result.D_cm2_per_s,
            "D_charge_ci95_cm2_per_s": list(charge_result.D_ci95_cm2_per_s),
            "sigma_charge_mS_per_cm": ne(charge_result.D_cm2_per_s),
            "sigma_charge_ci95_mS_per_cm": [ne(v) for v in charge_result.D_ci95_cm2_per_s],
            "haven_ratio": charge_result.haven,
            "haven_ratio_ci95": list(charge_result.haven_ci95),
            "charge_fit": charge_result.diagnostics(),
            "msd_max_A2": msd_max,
            "msd_end_of_fit_A2": float(msd[window.end_index]),
            "fit_window_ps": window.as_list(),
            "fit_window_rule": window.rule,
            "msd_loglog_slope_in_fit": alpha,
            "framework_msd_end_A2": fw_msd_end,
            "framework_rdf_peak_drop": rdf_drop,
            "flags": flags.codes,
            "flag_details": flags.details,
            "n_frames": n,
            "frame_interval_ps": dt,
            "duration_ps": dt * (n - 1),
            "analysis_start_ps": s.collect.analysis_start_ps,
            "frames_discarded": data.skipped_frames,
            "unwrapping": data.unwrap_mode,
            "source": self.provenance,
            "input_notes": list(input_warnings) + data.notes + list(info.notes),
            "methods": {
                "msd": "all time origins, FFT (per axis), drift of the framework atoms' mean "
                       "position (unweighted) "
                       "removed; n_obs = n_ions (N_frames - 1) / lag (kinisi)",
                "D": "kinisi Bayesian regression (emcee) of MSD vs lag on "
                     f"{len(lags)} lags evenly spread over the fit window; median and "
                     "2.5-97.5 percentiles of D = slope/6",
                "variance_model": s.kinisi.variance_model,
                "kinisi_settings": s.kinisi.as_dict(),
                "seed": s.seed,
                "origin_samples_per_lag_max": s.max_samples_per_lag,
                "sigma": "Nernst-Einstein N q^2 e^2 D / (V k_B T), V = mean cell volume",
                "charge_diffusion": "MSCD = <|sum_i dr_i|^2> / N of the species (kinisi "
                                    "convention), D_charge = slope/6, same fit as D, then "
                                    "checked (analysis.charge): NaN when refused",
                "haven_ratio": "D_tracer / D_charge (medians); interval from the ratio of "
                               "independently paired (shuffled) posterior samples",
                "thresholds": F.thresholds(),
            },
            "versions": _versions(),
        }
        return TransportResults(summary=summary, time_ps=time_ps, msd_axes=stats.msd_axes,
                                n_obs=stats.n_obs, mscd=mscd, fit=fit, charge_fit=charge_fit,
                                ols=ols, vanhove_self=vh_self, vanhove_distinct=vh_distinct,
                                rdf=rdf, density=density,
                                reference_atoms=_reference_atoms(data),
                                fit_lags=lags, s_var=stats.s_var)


@dataclass
class TransportResults:
    summary: dict[str, Any]
    time_ps: np.ndarray
    msd_axes: np.ndarray
    n_obs: np.ndarray
    mscd: np.ndarray
    fit: BayesianFit
    charge_fit: BayesianFit
    ols: tuple[float, float]
    vanhove_self: Any
    vanhove_distinct: Any
    rdf: Any
    density: np.ndarray
    reference_atoms: Any
    fit_lags: np.ndarray
    s_var: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        from analysis.output import json_ready

        return json_ready(self.summary)

    @property
    def msd(self) -> np.ndarray:
        return self.msd_axes.sum(axis=1)

    def write(self, out: str | Path, *, plots: bool = True) -> list[Path]:
        """Write transport.json, msd.csv, vanhove_*.npz, rdf.csv, density files, plots."""
        from analysis import output
        from analysis.density import write_density

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        s = self.summary
        table = np.column_stack([self.time_ps, self.msd_axes, self.msd, self.n_obs, self.mscd])
        written.append(output.write_csv(
            out / "msd.csv", ["time_ps", "msd_x_A2", "msd_y_A2", "msd_z_A2", "msd_A2",
                              "n_obs", "mscd_A2"], table,
            comment=f"{s['species']} all-origins MSD (drift removed); n_obs = independent "
                    "observations per lag (kinisi); mscd = <|sum dr|^2>/N"))
        written.append(output.write_npz(out / "vanhove_self.npz", self.vanhove_self.arrays()))
        if self.vanhove_distinct is not None:
            written.append(output.write_npz(out / "vanhove_distinct.npz",
                                            self.vanhove_distinct.arrays()))
        if self.rdf is not None:
            names, data = self.rdf.table()
            written.append(output.write_csv(
                out / "rdf.csv", names, data,
                comment=f"partial RDFs g_AB(r), {self.rdf.n_frames} frames between "
                        f"{self.rdf.window_ps[0]:.3f} and {self.rdf.window_ps[1]:.3f} ps"))
        written += write_density(out, self.reference_atoms, self.density, output.write_text)
        plot_error = None
        if plots:
            # the numbers do not depend on the figures: a plotting failure (a matplotlib
            # backend, a font) is reported, and transport.json is still written with the data
            try:
                from analysis import plotting

                refused = s.get("D_fit_rejected") is not None
                written.append(plotting.plot_msd(
                    out / "msd.png", time_ps=self.time_ps, msd_axes=self.msd_axes,
                    window_ps=s["fit_window_ps"],
                    slope_samples_A2_per_ps=(None if refused
                                             else self.fit.samples_cm2_per_s * 6e4),
                    intercept_samples_A2=self.fit.intercept_samples_A2, ols=self.ols,
                    species=s["species"],
                    D_text=(f"D refused (regression ran away; MSD bound "
                            f"{s['D_upper_msd_cm2_per_s']:.2e} cm^2/s), "
                            f"T = {s['temperature_K']:g} K") if refused else
                           (f"D = {s['D_cm2_per_s']:.3e} cm^2/s (95% CI "
                            f"{s['D_ci95_cm2_per_s'][0]:.2e}..{s['D_ci95_cm2_per_s'][1]:.2e}), "
                            f"T = {s['temperature_K']:g} K")))
                written.append(plotting.plot_vanhove(
                    out / "vanhove.png", self_part=self.vanhove_self,
                    distinct_part=self.vanhove_distinct, species=s["species"]))
                if self.rdf is not None:
                    written.append(plotting.plot_rdf(out / "rdf.png", rdf=self.rdf))
            except Exception as exc:  # noqa: BLE001 - see above
                plot_error = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"plots not written ({plot_error}); the data files are",
                              AnalysisWarning, stacklevel=2)
        summary = dict(self.summary)
        if plot_error is not None:
            summary["plot_error"] = plot_error
        summary["outputs"] = sorted(p.name for p in written) + ["transport.json"]
        written.append(output.write_json(out / "transport.json", summary))
        return written


# ---------------------------------------------------------------------------------------

def ion_charge(species: str, *, charge: float | None = None,
               charges: dict[str, float] | None = None) -> tuple[float, str]:
    """Formal charge number of ``species`` and where it came from.

    ``charge`` (the analysed species) wins over ``charges[species]``, which wins over the
    table :data:`ION_CHARGE`; an ion in none of them is taken as +1 (``"assumed"``).
    """
    for value, source in ((charge, "setting charge"),
                          ((charges or {}).get(species), f"setting charges[{species}]")):
        if value is not None:
            value = float(value)
            if not np.isfinite(value) or value == 0:
                raise AnalysisInputError(f"charge of {species} must be a non-zero number, not "
                                         f"{value!r} (e.g. --charge {species}=2)")
            return value, source
    if species in ION_CHARGE:
        return float(ION_CHARGE[species]), "formal charge table (analysis.analyzer.ION_CHARGE)"
    return 1.0, "assumed"


def _settings(**kwargs) -> AnalysisSettings:
    """AnalysisSettings from flat keyword arguments (CLI-like names)."""
    collect_keys = set(CollectSettings.__dataclass_fields__)
    top = AnalysisSettings()
    col = CollectSettings()
    for key, value in kwargs.items():
        if value is None and key not in ("fit_start_ps", "fit_end_ps"):
            continue
        if key == "analysis_start_ps":
            col.analysis_start_ps = float(value)
        elif key in collect_keys:
            setattr(col, key, value)
        elif key in AnalysisSettings.__dataclass_fields__:
            setattr(top, key, value)
        elif key in KinisiSettings.__dataclass_fields__:
            setattr(top.kinisi, key, value)
        else:
            raise TypeError(f"unknown analysis setting {key!r}")
    if not top.compute_rdf:
        col.rdf_max_frames = 0
    top.collect = col
    return top


def _log_reports_lost_atoms(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return b"Lost atoms" in handle.read()
    except OSError:
        return False


def _framework_rdf_drop(data, species: str) -> dict[str, float]:
    frames = data.rdf.frames
    if len(frames) < 8:
        return {}
    quarter = max(2, len(frames) // 4)
    acc = data.rdf
    early = acc.result(window_ps=(frames[0][1], frames[quarter - 1][1]))
    late = acc.result(window_ps=(frames[-quarter][1], frames[-1][1]))
    drops = {}
    from analysis.readers import ALKALI

    for pair, g in early.pairs.items():
        a, b = pair.split("-")
        if a == species or b == species or a in ALKALI or b in ALKALI:
            continue
        peak = float(g.max())
        if peak > 0:
            drops[pair] = max(0.0, 1.0 - float(late.pairs[pair].max()) / peak)
    return drops


def _reference_atoms(data):
    from ase import Atoms

    cell = data.density.mean_cell
    atoms = Atoms(symbols=list(map(str, data.symbols)), positions=data.reference_positions,
                  cell=cell, pbc=True)
    atoms.wrap()
    return atoms


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    result = {}
    for name in ("kinisi", "numpy", "scipy", "ase", "emcee"):
        try:
            result[name] = version(name)
        except PackageNotFoundError:
            result[name] = None
    return result
