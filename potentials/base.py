"""The one interface every potential family implements.

An adapter answers four questions for the engine:

* which LAMMPS input lines it needs (``plugin load``, ``pair_style``, ``pair_coeff``,
  or a ``pair_style zero`` + ``fix external`` pair for Python-evaluated models),
* which LAMMPS styles must exist before those lines are issued (checked with
  ``lmp.has_style`` so a missing plugin fails early with a fix-it message),
* how to evaluate the same model from ASE (for LAMMPS-vs-ASE agreement tests and
  for the ``fix external`` route),
* what identifies the model for provenance (package version, file sha256).

Adapters are registered by name in :mod:`potentials.registry`; nothing else in the
code base switches on the potential family.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports only for type checkers
    from ase import Atoms
    from ase.calculators.calculator import Calculator


class PotentialError(RuntimeError):
    """A potential cannot be used as asked; the message says how to fix it."""


@dataclass(frozen=True)
class LammpsSetup:
    """What an adapter contributes to a LAMMPS input.

    ``lines`` are rendered verbatim into the ``potential`` block of the template (after
    ``read_data``). ``required_styles`` are ``(category, name)`` pairs checked with
    ``lmp.has_style`` before the input runs (category as LAMMPS names it: ``pair``,
    ``fix``...). ``external_fix_id`` is set when the model is evaluated in Python through
    ``fix external pf/callback``; the engine then attaches :meth:`Potential.attach`.
    ``max_ranks`` limits the number of MPI ranks the LAMMPS instance may span
    (the e3gnn plugin, for instance, is single-rank).
    """

    lines: tuple[str, ...]
    required_styles: tuple[tuple[str, str], ...] = ()
    external_fix_id: str | None = None
    max_ranks: int | None = None
    route: str = "native"
    fix_it: str = ""
    #: fixed point charge (e) of each LAMMPS type, in type order; empty = no charges.
    #: The MD template then adds ``fix property/atom q`` and ``set type N charge q``.
    type_charges: tuple[float, ...] = ()
    #: ``(kspace_style, relative accuracy)`` for long-range Coulomb, e.g. ``("ewald", 1e-6)``
    kspace: tuple[str, float] | None = None


@dataclass
class ModelInfo:
    """Provenance of a model: written into every manifest."""

    name: str
    family: str
    package: str | None = None
    package_version: str | None = None
    model_file: str | None = None
    model_sha256: str | None = None
    route: str = "native"
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def package_version(dist_name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist_name)
    except PackageNotFoundError:
        return None


class Potential:
    """Base class of potential adapters.

    Subclasses set ``family`` and implement :meth:`lammps_setup`, :meth:`ase_calculator`
    and :meth:`model_info`. ``elements`` is the set of chemical symbols the model covers
    (``None`` means any element).
    """

    family: str = "base"

    def __init__(self, *, name: str) -> None:
        self.name = name

    # -- coverage -------------------------------------------------------------------
    @property
    def elements(self) -> frozenset[str] | None:
        return None

    def check_elements(self, symbols: list[str] | tuple[str, ...]) -> None:
        covered = self.elements
        if covered is None:
            return
        missing = sorted(set(symbols) - covered)
        if missing:
            raise PotentialError(
                f"potential '{self.name}' does not cover element(s) {', '.join(missing)}; "
                f"choose a potential trained on them (see `harness potentials`)"
            )

    # -- LAMMPS -----------------------------------------------------------------------
    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        """LAMMPS lines for a data file whose type i (1-based) is ``type_elements[i-1]``."""
        raise NotImplementedError

    def attach(self, lmp: Any, *, setup: LammpsSetup, type_elements: list[str], comm: Any) -> None:
        """Hook run after the potential lines; the ``fix external`` route sets its callback here."""

    # -- ASE -----------------------------------------------------------------------------
    def ase_calculator(self) -> "Calculator":
        raise NotImplementedError

    # -- provenance ---------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        raise NotImplementedError

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{type(self).__name__}(name={self.name!r})"
