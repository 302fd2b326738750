"""Unit conversions and physical constants of the transport analysis, in one place.

Lengths are in angstrom, times in picoseconds, temperatures in kelvin inside the analysis;
results are reported with the unit in the key (``D_cm2_per_s``, ``sigma_mS_per_cm``).
CODATA 2018 exact values for ``e`` and ``k_B``.
"""

from __future__ import annotations

import numpy as np

#: elementary charge, C
E_CHARGE_C = 1.602176634e-19
#: Boltzmann constant, J/K
KB_J_PER_K = 1.380649e-23
#: Boltzmann constant, eV/K
KB_EV_PER_K = KB_J_PER_K / E_CHARGE_C
#: 1 A^2/ps expressed in cm^2/s  (1e-16 cm^2 / 1e-12 s)
CM2_PER_S_PER_A2_PER_PS = 1.0e-4
#: 1 S/m expressed in mS/cm
MS_PER_CM_PER_S_PER_M = 10.0
FS_PER_PS = 1000.0


def fs_to_ps(value_fs: float) -> float:
    return value_fs / FS_PER_PS


def a2_per_ps_to_cm2_per_s(value):
    """Convert a diffusion coefficient (or MSD slope) from A^2/ps to cm^2/s."""
    return np.asarray(value, dtype=float) * CM2_PER_S_PER_A2_PER_PS if np.ndim(value) else \
        float(value) * CM2_PER_S_PER_A2_PER_PS


def msd_slope_to_D(slope_A2_per_ps, *, dimensions: int = 3):
    """Einstein relation: D = slope / (2 d), returned in cm^2/s."""
    return a2_per_ps_to_cm2_per_s(np.asarray(slope_A2_per_ps, dtype=float) / (2.0 * dimensions))


def nernst_einstein_mS_per_cm(D_cm2_per_s, *, n_ions: int | float, volume_A3: float,
                              temperature_K: float, charge: float = 1.0):
    """Nernst-Einstein conductivity sigma = N q^2 e^2 D / (V k_B T), in mS/cm.

    ``D_cm2_per_s`` may be an array (posterior samples); ``charge`` is the formal charge
    number of the ion (1 for Li+). With D the tracer D this is sigma_NE; with the charge
    (collective) diffusion coefficient it is the full conductivity of that species.
    """
    D_m2_per_s = np.asarray(D_cm2_per_s, dtype=float) * 1.0e-4
    volume_m3 = float(volume_A3) * 1.0e-30
    sigma_S_per_m = (float(n_ions) * (charge * E_CHARGE_C) ** 2 * D_m2_per_s
                     / (volume_m3 * KB_J_PER_K * float(temperature_K)))
    result = sigma_S_per_m * MS_PER_CM_PER_S_PER_M
    return float(result) if np.ndim(result) == 0 else result
