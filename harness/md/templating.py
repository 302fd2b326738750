"""Render LAMMPS inputs from ``templates/`` with typed, validated values.

Jinja runs with ``StrictUndefined`` (a missing variable is an error, never an empty
string). Every value is checked before rendering: numbers must be finite numbers,
element symbols must be element symbols, and strings (file paths, potential lines) may
not carry characters that LAMMPS' input parser would act on (``$`` variables, ``&``
continuation, ``#`` comments, quotes, newlines) or commands that reach outside the run
(``shell``, ``python``, ``include``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates"
#: the marker after which the engine attaches Python-evaluated potentials
ATTACH_MARKER = "#@harness attach-potential"

_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_./+:=@,\-]+$")
_SAFE_LINE_TOKEN = re.compile(r"^[A-Za-z0-9_./+:=@,*\-]+$")  # '*' for type ranges
_FORBIDDEN_WORDS = {"shell", "python", "include", "label", "jump", "next", "print"}
#: long-range Coulomb solvers the MD template may set (``kspace_style NAME accuracy``)
KSPACE_STYLES = ("ewald", "pppm")


class TemplateValueError(ValueError):
    """A value cannot be rendered safely into a LAMMPS input."""


def safe_token(value: str, *, what: str, pattern: re.Pattern = _SAFE_TOKEN) -> str:
    text = str(value)
    if not text or not pattern.match(text):
        allowed = "_ . / + : = @ , -" + (" *" if pattern is _SAFE_LINE_TOKEN else "")
        raise TemplateValueError(
            f"{what} {text!r} contains characters that are unsafe in a LAMMPS input "
            f"(allowed: letters, digits and {allowed}); rename or move the file")
    return text


def safe_line(line: str, *, what: str) -> str:
    """A whole LAMMPS command built by an adapter: tokens must each be safe."""
    if "\n" in line or "\r" in line:
        raise TemplateValueError(f"{what} contains a newline: {line!r}")
    tokens = line.split()
    if not tokens:
        raise TemplateValueError(f"{what} is empty")
    if tokens[0].lower() in _FORBIDDEN_WORDS:
        raise TemplateValueError(f"{what} uses the forbidden LAMMPS command '{tokens[0]}'")
    for token in tokens:
        safe_token(token, what=what, pattern=_SAFE_LINE_TOKEN)
    return line


def finite(value: float, *, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TemplateValueError(f"{what} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise TemplateValueError(f"{what} must be positive, got {value!r}")
    return float(value)


def count(value: int, *, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TemplateValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def element(symbol: str) -> str:
    from ase.data import chemical_symbols

    if symbol not in chemical_symbols[1:]:
        raise TemplateValueError(f"'{symbol}' is not a chemical element symbol")
    return symbol


@dataclass(frozen=True)
class Chunk:
    """One ``run`` between restart points: steps ``start_step`` -> ``end_step``."""

    start_step: int
    end_step: int
    phase: str  # "equilibration" | "production"
    first_production: bool = False  # define dump + thermo file before this chunk
    append: bool = False  # the dump/thermo files exist already (continuation)

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


def plan_chunks(*, equilibration_steps: int, production_steps: int, restart_every: int,
                resume_step: int = 0, check_every: int | None = None) -> tuple[Chunk, ...]:
    """Chunks ending at every multiple of ``restart_every`` and at the phase boundaries
    (and, for adaptive runs, every ``check_every`` production steps).

    The plan depends only on the step counts, so a continuation from ``resume_step``
    (a chunk end) runs exactly the remaining chunks of the uninterrupted plan.
    """
    ends = set(range(restart_every, equilibration_steps + production_steps, restart_every))
    ends |= {equilibration_steps, equilibration_steps + production_steps}
    if check_every:
        ends |= set(range(equilibration_steps + check_every,
                          equilibration_steps + production_steps, check_every))
    ends.discard(0)
    chunks, start = [], 0
    for end in sorted(ends):
        phase = "equilibration" if end <= equilibration_steps else "production"
        if end > resume_step:
            chunks.append(Chunk(start_step=start, end_step=end, phase=phase))
        start = end
    # the dump and thermo file are (re)defined before the first production chunk we run
    for index, chunk in enumerate(chunks):
        if chunk.phase == "production":
            chunks[index] = Chunk(start_step=chunk.start_step, end_step=chunk.end_step,
                                  phase=chunk.phase, first_production=True,
                                  append=chunk.start_step > equilibration_steps)
            break
    return tuple(chunks)


@dataclass(frozen=True)
class MDTemplateContext:
    """Every variable ``md.lammps.j2`` uses, typed."""

    ensemble: str
    data_file: str
    type_elements: tuple[str, ...]
    potential_name: str
    potential_route: str
    potential_lines: tuple[str, ...]
    neighbor_skin_A: float
    timestep_ps: float
    thermo_every: int
    minimize: bool
    minimize_ftol_eV_per_A: float
    minimize_max_iterations: int
    temperature_K: float
    seed: int
    tdamp_ps: float
    pressure_bar: float
    pdamp_ps: float
    barostat_modulus_bar: float
    triclinic: bool
    chunks: tuple[Chunk, ...]
    thermo_file: str
    dump_file: str
    dump_every: int
    dump_coordinates: str
    restart_tmp: str
    resume_file: str | None
    resume_step: int | None
    progress_every: int
    progress_fix_id: str
    watchdog: bool
    #: fixed point charge (e) per type, in type order (empty: the potential has no charges)
    type_charges: tuple[float, ...] = ()
    #: long-range Coulomb solver (needs charges) and its relative force accuracy
    kspace_style: str | None = None
    kspace_accuracy: float | None = None

    def validated(self) -> dict:
        ensembles = {p.name.split(".")[0] for p in (TEMPLATE_DIR / "ensembles").glob("*.lammps.j2")}
        if self.ensemble not in ensembles:
            raise TemplateValueError(
                f"unknown ensemble '{self.ensemble}'; known: {', '.join(sorted(ensembles))}")
        if self.dump_coordinates not in ("wrapped_images", "unwrapped"):
            raise TemplateValueError(f"unknown dump_coordinates '{self.dump_coordinates}'")
        for name in ("data_file", "thermo_file", "dump_file", "restart_tmp"):
            safe_token(getattr(self, name), what=name.replace("_", " "))
        if self.resume_file is not None:
            safe_token(self.resume_file, what="restart file")
            count(self.resume_step, what="resume_step", minimum=1)
        if not self.chunks:
            raise TemplateValueError("nothing to run: every chunk of the plan is already done")
        for chunk in self.chunks:
            count(chunk.start_step, what="chunk start", minimum=0)
            count(chunk.steps, what="chunk length", minimum=1)
        safe_token(self.potential_name, what="potential name")
        safe_token(self.progress_fix_id, what="progress fix id")
        safe_token(self.potential_route, what="potential route")
        for line in self.potential_lines:
            safe_line(line, what="potential line")
        for symbol in self.type_elements:
            element(symbol)
        for name in ("neighbor_skin_A", "timestep_ps", "minimize_ftol_eV_per_A", "temperature_K",
                     "tdamp_ps", "pdamp_ps", "barostat_modulus_bar"):
            finite(getattr(self, name), what=name, positive=True)
        finite(self.pressure_bar, what="pressure_bar")
        for name in ("thermo_every", "dump_every", "minimize_max_iterations", "seed",
                     "progress_every"):
            count(getattr(self, name), what=name, minimum=1)
        if self.type_charges:
            if len(self.type_charges) != len(self.type_elements):
                raise TemplateValueError(
                    f"type_charges has {len(self.type_charges)} value(s) for "
                    f"{len(self.type_elements)} atom type(s); give one charge per type")
            for index, charge in enumerate(self.type_charges, start=1):
                finite(charge, what=f"charge of type {index}")
        if self.kspace_style is not None:
            if self.kspace_style not in KSPACE_STYLES:
                raise TemplateValueError(f"unknown kspace_style '{self.kspace_style}'; "
                                         f"known: {', '.join(KSPACE_STYLES)}")
            if not self.type_charges:
                raise TemplateValueError(f"kspace_style {self.kspace_style} needs per-type "
                                         "charges (type_charges), none were given")
            accuracy = finite(self.kspace_accuracy, what="kspace_accuracy", positive=True)
            if accuracy >= 1e-2:
                raise TemplateValueError(f"kspace_accuracy {accuracy!r} is a relative force "
                                         "error and must be below 1e-2 (typical: 1e-6)")
        elif self.kspace_accuracy is not None:
            raise TemplateValueError("kspace_accuracy given without kspace_style")
        values = asdict(self)
        values["chunks"] = self.chunks  # keep the dataclasses (templates read .steps)
        return values


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template_name: str, context: MDTemplateContext) -> str:
    return _environment().get_template(template_name).render(**context.validated())


def split_at_attach(text: str) -> tuple[list[str], list[str]]:
    """Lines before and after the potential-attach marker."""
    lines = text.splitlines()
    try:
        index = lines.index(ATTACH_MARKER)
    except ValueError as exc:
        raise TemplateValueError(f"template lacks the '{ATTACH_MARKER}' marker") from exc
    return lines[:index], lines[index + 1:]
