"""Errors and warnings of the analysis layer.

``AnalysisInputError`` is raised for input the analysis cannot use (missing files, an
empty dump, inconsistent atom counts, unknown species, no time information, a single
frame). Its message names the problem and the fix; the CLI turns it into one red line and a
non-zero exit. ``AnalysisWarning`` is issued for input that is usable with a caveat
(a truncated last frame, dropped duplicate frames); such caveats also become flags.
"""

from __future__ import annotations


class AnalysisInputError(ValueError):
    """Input the transport analysis cannot use; the message says what to change."""


class AnalysisWarning(UserWarning):
    """Usable input with a caveat (e.g. a partial last frame that was dropped)."""
