"""Potential registry: a name maps to an adapter factory.

Entries name their factory as ``"module:callable"`` so that importing the registry is
cheap (no torch, no sevenn) and ``harness --help`` stays instant. A name may carry a
model file after a colon, e.g. ``mace:/path/model-lammps.pt`` or
``sevennet:/path/checkpoint.pth``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from potentials.base import Potential, PotentialError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: str  # "module:callable"
    description: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    accepts_file: bool = False


_ENTRIES: dict[str, Entry] = {}


def register(
    name: str, factory: str, *, description: str, accepts_file: bool = False, **kwargs: Any
) -> None:
    key = name.lower()
    if key in _ENTRIES:
        raise ValueError(f"potential '{name}' registered twice")
    _ENTRIES[key] = Entry(
        name=name,
        factory=factory,
        description=description,
        kwargs=tuple(sorted(kwargs.items())),
        accepts_file=accepts_file,
    )


def entries() -> list[Entry]:
    return sorted(_ENTRIES.values(), key=lambda e: e.name)


def get_potential(spec: str, *, route: str = "auto", device: str = "auto") -> Potential:
    """Build the adapter named by ``spec`` (``name`` or ``family:/path/to/model``)."""
    name, _, file_part = spec.partition(":")
    entry = _ENTRIES.get(name.lower())
    if entry is None:
        known = ", ".join(e.name for e in entries())
        raise PotentialError(f"unknown potential '{spec}'. Known potentials: {known}")
    kwargs = dict(entry.kwargs)
    if file_part:
        if not entry.accepts_file:
            raise PotentialError(
                f"potential '{entry.name}' does not take a model file; "
                f"use one of: {', '.join(e.name for e in entries() if e.accepts_file)}"
            )
        path = Path(file_part).expanduser()
        if not path.is_file():
            raise PotentialError(f"model file not found: {path}")
        kwargs["model_file"] = path.resolve()
    module_name, _, attr = entry.factory.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(name=spec, route=route, device=device, **kwargs)


# --- the potentials the project knows --------------------------------------------------
register(
    "sevennet-0",
    "potentials.sevennet:SevenNetPotential",
    description="SevenNet-0 (bundled 7net-0 checkpoint); native pair_style e3gnn plugin",
    checkpoint="7net-0",
)
register(
    "sevennet-l3i5",
    "potentials.sevennet:SevenNetPotential",
    description="SevenNet-l3i5 (bundled); native pair_style e3gnn plugin",
    checkpoint="7net-l3i5",
)
register(
    "sevennet-mf-0",
    "potentials.sevennet:SevenNetPotential",
    description="SevenNet-MF-0 multi-fidelity (bundled), modal 'PBE' by default",
    checkpoint="7net-MF-0",
    modal="PBE",
)
register(
    "sevennet",
    "potentials.sevennet:SevenNetPotential",
    description="SevenNet from a checkpoint file: sevennet:/path/checkpoint.pth",
    accepts_file=True,
)
register(
    "chgnet",
    "potentials.ase_models:CHGNetPotential",
    description="CHGNet 0.3.0 (bundled) through fix external",
    model_version="0.3.0",
)
register(
    "mace",
    "potentials.mace:MacePotential",
    description="MACE TorchScript LAMMPS export: mace:/path/model-lammps.pt",
    accepts_file=True,
)
register(
    "mace-tiny-test",
    "potentials.mace:MacePotential",
    description="Tiny Li-P-S-Cl MACE test fixture (not physical)",
    model_file=Path(__file__).resolve().parent / "data" / "mace-tiny-LiPSCl-lammps.pt",
)
register(
    "mace-mp-0-medium",
    "potentials.mace:MacePotential",
    description="MACE-MP-0 medium foundation model (needs `harness export mace --foundation`)",
    foundation="medium",
)
register(
    "mace-mpa-0-medium",
    "potentials.mace:MacePotential",
    description="MACE-MPA-0 medium (seed 004's model; needs `harness export mace --foundation`)",
    foundation="medium-mpa-0",
)
register(
    "deepmd",
    "potentials.deepmd:DeePMDPotential",
    description="DeePMD frozen model: deepmd:/path/model.pth (no deepmd-kit needed) or .pb",
    accepts_file=True,
)
register(
    "deepmd-tiny-test",
    "potentials.deepmd:DeePMDPotential",
    description="Tiny Li-S DeePMD test fixture (not physical); fix external",
    model_file=Path(__file__).resolve().parent / "data" / "deepmd-tiny-LiS.pth",
)
register(
    "mattersim-1m",
    "potentials.ase_models:MatterSimPotential",
    description="MatterSim v1 1M through fix external (downloads weights on first use)",
    checkpoint="mattersim-v1.0.0-1M.pth",
)
register(
    "snap-li3n",
    "potentials.snap:SnapPotential",
    description="Li3N electrostatic SNAP (Deng et al. 2019, maml, BSD-3): native pair_style "
                "snap + coul/long with Ewald; snap-li3n:/path/X.snapcoeff for other files",
    accepts_file=True,
    model="li3n",
)
register(
    "mtp-li3ycl6",
    "potentials.mtp:MTPPotential",
    description="Li3YCl6 Moment Tensor Potential (Qi et al. 2021, maml, BSD-3; PBE.PBE) "
                "through motep + fix external; mtp-li3ycl6:/path/fitted.mtp for a variant",
    accepts_file=True,
    model="li3ycl6",
)
register(
    "mtp-li7p3s11",
    "potentials.mtp:MTPPotential",
    description="Li7P3S11 Moment Tensor Potential (Qi et al. 2021, maml, BSD-3; PBE.PBE) "
                "through motep + fix external; mtp-li7p3s11:/path/fitted.mtp for a variant",
    accepts_file=True,
    model="li7p3s11",
)
register(
    "lj-test",
    "potentials.classical:ClassicalPotential",
    description="Soft Lennard-Jones for any elements: cheap classical reference for tests",
    kind="lj",
)
