"""Transport analysis: MSD, D with uncertainty, conductivity, Arrhenius, van Hove, RDF.

Readers (:mod:`analysis.readers`) stream frames; the maths modules (:mod:`analysis.msd`,
:mod:`analysis.diffusion`, :mod:`analysis.vanhove`, :mod:`analysis.rdf`,
:mod:`analysis.density`, :mod:`analysis.arrhenius`) work on arrays;
:class:`TransportAnalyzer` ties them together; the Arrhenius fit is
:func:`analysis.arrhenius.arrhenius`. Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.errors import AnalysisInputError, AnalysisWarning

if TYPE_CHECKING:  # pragma: no cover
    from analysis.analyzer import TransportAnalyzer, TransportResults

__all__ = ["AnalysisInputError", "AnalysisWarning", "TransportAnalyzer", "TransportResults"]


def __getattr__(name: str):
    if name in ("TransportAnalyzer", "TransportResults"):
        from analysis import analyzer

        return getattr(analyzer, name)
    raise AttributeError(name)
