"""Unit conversions in one place. LAMMPS runs in ``units metal`` (eV, A, ps, bar, K)."""

from __future__ import annotations

#: 1 eV/A^3 expressed in bar (160.21766208 GPa)
BAR_PER_EV_PER_A3 = 1.602176634e6
#: 1 eV/A^3 in GPa (statics: stresses and elastic constants)
GPA_PER_EV_PER_A3 = BAR_PER_EV_PER_A3 / 1.0e4
#: LAMMPS metal time unit is the picosecond
FS_PER_PS = 1000.0


def fs_to_ps(value_fs: float) -> float:
    return value_fs / FS_PER_PS


def ps_to_fs(value_ps: float) -> float:
    return value_ps * FS_PER_PS
