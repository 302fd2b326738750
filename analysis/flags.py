"""Reliability flags: conditions under which a transport number should not be trusted.

Every flag has a short code (listed in ``transport.json["flags"]``) and a sentence with the
numbers behind it (``transport.json["flag_details"]``). Thresholds, all stated here:

==========================  ===================================================================
``msd_below_20A2``          largest MSD of the species < 20 A^2 (seed 004: ~4.5 A, an
                            interatomic distance; below it motion may be local vibration only)
``framework_diffusing``     MSD (from the first frame, drift removed) of a framework element
                            > 5 A^2 at the end of the run (melting / amorphisation)
``framework_rdf_loss``      first-peak height of a framework-framework RDF drops by > 30 %
                            from the first to the last quarter of the run
``fit_window_short``        fit window shorter than 10 ps or fewer than 20 frames
``few_observations``        fewer than 30 independent observations at the end of the fit
                            window (n_ions x duration / lag; pymatgen's min_obs)
``msd_not_linear``          log-log slope of the MSD over the fit window outside [0.8, 1.25]
                            (caged, sub-diffusive, or ballistic: not the diffusive regime)
``D_uncertain``             the 95 % interval of D is wider than D itself
``D_fit_refused``           the posterior median of D exceeds 3 x the MSD bound
                            (MSD(t_e) + 2 sigma) / (6 t_e) at the fit-window end: the
                            regression ran away on a flat (caged) MSD; D and sigma are
                            written as null, the bound and the rejected numbers are kept
``nan_positions``           non-finite coordinates appeared; frames from there on were dropped
``lost_atoms``              the MD log reports lost atoms
``unwrap_ambiguous``        no image flags and some atom moved > 0.3 of a cell width between
                            frames: the minimum-image unwrapping may have missed crossings
``truncated_input``         the last frame of the file was incomplete and was dropped
``few_frames``              fewer than 100 frames analysed
==========================  ===================================================================
"""

from __future__ import annotations

MSD_MIN_A2 = 20.0
FRAMEWORK_MSD_MAX_A2 = 5.0
FRAMEWORK_RDF_PEAK_DROP = 0.30
FIT_WINDOW_MIN_PS = 10.0
FIT_WINDOW_MIN_FRAMES = 20
MIN_OBSERVATIONS = 30.0
LOGLOG_SLOPE_RANGE = (0.8, 1.25)
D_MAX_RELATIVE_CI = 1.0
D_MAX_OVER_MSD_BOUND = 3.0
UNWRAP_MAX_STEP_FRACTION = 0.3
MIN_FRAMES = 100


class Flags:
    def __init__(self) -> None:
        self.details: dict[str, str] = {}

    def add(self, code: str, message: str) -> None:
        if code in self.details:
            self.details[code] += "; " + message
        else:
            self.details[code] = message

    @property
    def codes(self) -> list[str]:
        return list(self.details)


def thresholds() -> dict[str, float | list[float]]:
    return {"msd_min_A2": MSD_MIN_A2, "framework_msd_max_A2": FRAMEWORK_MSD_MAX_A2,
            "framework_rdf_peak_drop": FRAMEWORK_RDF_PEAK_DROP,
            "fit_window_min_ps": FIT_WINDOW_MIN_PS, "fit_window_min_frames": FIT_WINDOW_MIN_FRAMES,
            "min_observations": MIN_OBSERVATIONS, "loglog_slope_range": list(LOGLOG_SLOPE_RANGE),
            "D_max_relative_ci": D_MAX_RELATIVE_CI,
            "unwrap_max_step_fraction": UNWRAP_MAX_STEP_FRACTION, "min_frames": MIN_FRAMES}
