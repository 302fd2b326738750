"""The ``harness md`` workflow: structure + potential + template -> LAMMPS run directory.

Order of work: validate everything that can be validated before LAMMPS starts (spec,
structure, element coverage, distances, template values), write the inputs and a
``manifest.json`` marked ``running``, run LAMMPS chunk by chunk (a restart file at every
chunk end), then mark the manifest ``completed`` (or ``failed`` with the error) with end
time, timings and the list of outputs.

Re-running the same spec on the same directory continues an interrupted run from its
last restart file to exactly the requested step count; a completed run is left as it is.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.md.rundir import (MANIFEST, atomic_write_json, atomic_write_text, git_sha, host_info,
                            now_iso, package_versions, read_manifest)
from harness.md.spec import MDSpec
from harness.md.templating import MDTemplateContext, plan_chunks, render, split_at_attach
from harness.units import fs_to_ps

# file names inside a run directory
DATA_FILE = "structure.data"
INPUT_FILE = "in.lammps"
LOG_FILE = "log.lammps"
THERMO_FILE = "thermo.csv"
DUMP_FILE = "traj.lammpstrj"
RESTART_TMP = "restart.tmp"
RESTART_RE = re.compile(r"^restart\.(\d+)$")
LOCK_FILE = ".harness.lock"
PROGRESS_FIX_ID = "harness_progress"
CHECKPOINT_MARKER = "#@harness checkpoint"
KEEP_RESTARTS = 2


class RunDirectoryError(RuntimeError):
    """The output directory cannot be used without destroying earlier results."""


class MDFailure(RuntimeError):
    """The run was stopped (watchdog or LAMMPS error); everything written so far is kept."""

    def __init__(self, message: str, *, failure: dict[str, Any]) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass
class MDResult:
    run_dir: Path
    manifest: dict[str, Any]
    n_atoms: int
    wall_s: float
    ms_per_step: float | None
    resumed_from_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: fault injection for the reliability tests: SIGKILL this process at the first progress
#: callback at or after this step (never set in normal use)
FAULT_KILL_ENV = "HARNESS_FAULT_KILL_AT_STEP"


class _Progress:
    """Called by LAMMPS every ``every`` steps through a no-force ``fix external``."""

    def __init__(self, *, total_steps: int, report: Callable[[int], None] | None,
                 watchdog: Any = None) -> None:
        self.total_steps = total_steps
        self.report = report
        self.watchdog = watchdog
        self.samples: list[tuple[int, float]] = []
        kill_at = os.environ.get(FAULT_KILL_ENV)
        self.kill_at = int(kill_at) if kill_at else None

    def __call__(self, _caller, ntimestep, nlocal, _tag, _x, f) -> None:
        f[:nlocal] = 0.0
        if self.kill_at is not None and ntimestep >= self.kill_at:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        self.samples.append((int(ntimestep), time.perf_counter()))
        if self.watchdog is not None:
            self.watchdog.check(int(ntimestep), nlocal)
        if self.report is not None:
            self.report(int(ntimestep))

    def ms_per_step(self, *, from_step: int) -> float | None:
        """Wall time per step over the samples at or after ``from_step``."""
        latest: dict[int, float] = {}
        for step, stamp in self.samples:
            if step >= from_step:
                latest[step] = stamp  # repeated steps (run setups): keep the last
        steps = sorted(latest)
        if len(steps) < 2:
            return None
        return 1000.0 * (latest[steps[-1]] - latest[steps[0]]) / (steps[-1] - steps[0])


def prepare_structure(spec: MDSpec):
    """Load, validate and replicate the structure named by the spec."""
    from harness.structures import check_min_distance, load_structure, make_supercell

    replicate = spec.supercell_min_length_A is not None or spec.supercell_matrix is not None
    if spec.ordering is not None:  # a disordered input: run ordering spec.ordering.index
        from harness.ordering import ordered_atoms_for_md

        own = (spec.ordering.supercell_min_length_A is not None
               or spec.ordering.supercell_matrix is not None)
        atoms, provenance = ordered_atoms_for_md(
            spec.structure, spec.ordering, min_length_A=None if own else spec.supercell_min_length_A,
            matrix=None if own else spec.supercell_matrix)
        atoms.info["ordering"] = provenance
        replicate = replicate and own  # the MD supercell was used for the ordering itself
    else:
        atoms = load_structure(spec.structure, occupancy_tolerance=spec.occupancy_tolerance)
    if replicate:
        atoms = make_supercell(atoms, min_length_A=spec.supercell_min_length_A,
                               matrix=spec.supercell_matrix)
    check_min_distance(atoms, min_distance_A=spec.min_distance_A)
    return atoms


# --- run-directory state -------------------------------------------------------------------
def _spec_key(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec that must match for a continuation (``out`` resolved)."""
    key = dict(spec_dict)
    key["out"] = str(Path(key["out"]).resolve())
    return key


def restart_files(run_dir: Path) -> dict[int, Path]:
    """Complete restart files by step (incomplete ones are only ever ``restart.tmp``)."""
    found = {}
    for path in run_dir.glob("restart.*"):
        match = RESTART_RE.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def inspect_run_dir(run_dir: Path, spec: MDSpec, *, force: bool) -> tuple[str, dict | None]:
    """``("new", None)``, ``("completed", manifest)`` or ``("resume", manifest)``."""
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists() or force:
        return "new", None
    try:
        manifest = read_manifest(run_dir)
    except (OSError, ValueError) as exc:
        raise RunDirectoryError(f"{manifest_path} is unreadable ({exc}); nothing was changed. "
                                "Choose another --out, or pass --force to start over") from exc
    if manifest.get("kind") != "md" or _spec_key(manifest.get("spec", {})) != _spec_key(
            spec.model_dump(mode="json")):
        raise RunDirectoryError(
            f"{run_dir} already holds a different run ({manifest_path}); nothing was changed. "
            "Choose another --out, or pass --force to overwrite it")
    if manifest.get("status") == "completed":
        return "completed", manifest
    return "resume", manifest


def _truncate_dump(path: Path, *, last_step: int) -> None:
    """Keep only complete frames with TIMESTEP <= ``last_step`` (streamed, in place)."""
    if not path.exists():
        return
    keep_bytes = 0
    with open(path, "rb") as handle:
        offset = 0
        frame_start = None
        frame_step = None
        lines_needed = None
        lines_seen = 0
        pending = []
        for raw in handle:
            line = raw.rstrip(b"\n")
            if line == b"ITEM: TIMESTEP":
                frame_start, frame_step, lines_needed, lines_seen = offset, None, None, 0
                pending = []
            elif frame_start is not None:
                lines_seen += 1
                pending.append(line)
                if lines_seen == 1:
                    frame_step = int(line)
                elif lines_seen == 3:
                    lines_needed = 8 + int(line)  # header lines after TIMESTEP + atoms
                if lines_needed is not None and lines_seen == lines_needed:
                    if frame_step <= last_step:
                        keep_bytes = offset + len(raw)
                    frame_start = None
            offset += len(raw)
    with open(path, "r+b") as handle:
        handle.truncate(keep_bytes)


def _tidy_thermo(path: Path, *, last_step: int | None = None) -> None:
    """Keep the header and complete rows (up to ``last_step``); drop the comment line that
    LAMMPS' ``fix print ... append`` writes when a continuation reopens the file."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines
            if line.startswith("step") or (
                line.strip() and not line.startswith("#") and line.endswith("\n")
                and (last_step is None or int(float(line.split(",")[0])) <= last_step))]
    if kept != lines:
        atomic_write_text(path, "".join(kept))


def energy_drift(path: Path, *, n_atoms: int, ensemble: str) -> dict[str, Any]:
    """Drift of the total energy over the production in thermo.csv (least-squares slope of
    etotal / N against time), in eV/atom/ps. Meaningful for NVE only: a thermostat or a
    barostat exchanges energy with the system by design, so other ensembles get null."""
    result: dict[str, Any] = {"eV_per_atom_per_ps": None, "quantity": "etotal (LAMMPS, "
                              "including fix external energy) / atoms, production",
                              "ensemble": ensemble}
    if ensemble != "nve":
        result["note"] = "not conserved in this ensemble (thermostat/barostat)"
        return result
    try:
        import numpy as np

        table = np.genfromtxt(path, delimiter=",", names=True)
        t, e = np.atleast_1d(table["time_ps"]), np.atleast_1d(table["etotal_eV"])
    except (OSError, ValueError) as exc:
        result["note"] = f"thermo file unreadable ({exc})"
        return result
    if len(t) < 3 or not np.all(np.isfinite(e)) or np.ptp(t) <= 0:
        result["note"] = "fewer than 3 finite thermo rows"
        return result
    result["eV_per_atom_per_ps"] = float(np.polyfit(t, e / n_atoms, 1)[0])
    result["max_deviation_eV_per_atom"] = float(np.max(np.abs(e - e[0])) / n_atoms)
    result["duration_ps"] = float(np.ptp(t))
    return result


class _RunLock:
    """An exclusive lock on the run directory for the lifetime of the run (rank 0)."""

    def __init__(self, run_dir: Path, *, enabled: bool) -> None:
        self.path = run_dir / LOCK_FILE
        self.enabled = enabled
        self.handle = None

    def __enter__(self) -> "_RunLock":
        if self.enabled:
            import fcntl

            self.handle = open(self.path, "w")
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                self.handle.close()
                raise RunDirectoryError(f"{self.path.parent} is in use by another harness "
                                        "process; wait for it or choose another --out") from exc
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.handle is not None:
            self.handle.close()


def run_md(spec: MDSpec, *, comm: Any = None, force: bool = False,
           progress: Callable[[int, int], None] | None = None) -> MDResult:
    """Run (or continue) one MD job; ``progress(step, total)`` is called as it goes."""
    from harness.md.engine import _mpi
    from potentials.registry import get_potential

    MPI = _mpi()
    world = comm if comm is not None else MPI.COMM_WORLD
    rank = world.Get_rank()
    run_dir = Path(spec.out).resolve()

    # --- validation before anything is written --------------------------------------------
    from harness.md.templating import safe_token

    # every file LAMMPS reads or writes lives in the run directory: its path goes into the
    # input, so it must pass the template's token check (no spaces, quotes, $, &, #, ...)
    safe_token(str(run_dir / "structure.data"), what="run directory (--out)")
    state, old_manifest = inspect_run_dir(run_dir, spec, force=force)
    if state == "completed":
        timing = old_manifest.get("timing", {})
        return MDResult(run_dir=run_dir, manifest=old_manifest,
                        n_atoms=old_manifest["structure"]["n_atoms"],
                        wall_s=timing.get("wall_s", 0.0), ms_per_step=timing.get("ms_per_step"))
    potential = get_potential(spec.potential, route=spec.route, device=spec.device)
    atoms = prepare_structure(spec)
    potential.check_elements(atoms.get_chemical_symbols())
    world.Barrier()
    run_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(run_dir, enabled=rank == 0):
        return _run_locked(spec, world=world, run_dir=run_dir, potential=potential, atoms=atoms,
                           old_manifest=old_manifest if state == "resume" else None,
                           progress=progress)


def _run_locked(spec: MDSpec, *, world: Any, run_dir: Path, potential: Any, atoms: Any,
                old_manifest: dict | None, progress: Callable[[int, int], None] | None) -> MDResult:
    from harness.md.engine import EngineError, LammpsEngine, _mpi
    from harness.structures import write_lammps_data
    from harness.md.watchdog import Watchdog, WatchdogLimits, classify_lammps_error

    MPI = _mpi()
    rank = world.Get_rank()
    total_steps = spec.equilibration_steps + spec.steps

    # --- where to start: fresh, or the last complete restart file ----------------------------
    resume_step = 0
    resume_file = None
    if old_manifest is not None:
        restarts = restart_files(run_dir)
        if restarts:
            resume_step = max(restarts)
            resume_file = restarts[resume_step]
    if rank == 0:
        if resume_file is not None:
            _truncate_dump(run_dir / DUMP_FILE, last_step=resume_step)
            _tidy_thermo(run_dir / THERMO_FILE, last_step=resume_step)
        else:  # a fresh start owns the output files
            for name in (DUMP_FILE, THERMO_FILE):
                (run_dir / name).unlink(missing_ok=True)
    world.Barrier()

    # --- adaptive length (--until-converged): checks so far, frames read so far ----------------
    monitor = None
    check_every = None
    if spec.convergence is not None:
        check_every = max(1, int(round(spec.convergence.check_every_ps * 1000.0 / spec.timestep_fs)))
        if rank == 0:
            from harness.md.convergence import ConvergenceMonitor

            monitor = ConvergenceMonitor(spec=spec, run_dir=run_dir,
                                         symbols=atoms.get_chemical_symbols(),
                                         dump_name=DUMP_FILE, thermo_name=THERMO_FILE)
            if resume_file is not None:
                monitor.restore(old_convergence=(old_manifest or {}).get("convergence"),
                                resume_step=resume_step)
        already = world.bcast(monitor.stopped() if monitor is not None else None, root=0)
        if already is not None:  # killed after the stop decision was recorded
            return _finish_stopped(spec, world=world, run_dir=run_dir, atoms=atoms,
                                   old_manifest=old_manifest, monitor=monitor, record=already)

    # --- inputs --------------------------------------------------------------------------------
    data_path = run_dir / DATA_FILE
    type_elements = write_lammps_data(atoms, data_path) if rank == 0 else None
    type_elements = world.bcast(type_elements, root=0)
    # how many ranks LAMMPS spans and how many torch threads each gets: harness/md/layout.py
    from harness.md.layout import apply_threads, decomposition_ranks, plan_layout, sleeping_barrier

    size_ranks, size_reason = decomposition_ranks(n_atoms=len(atoms), world_ranks=world.Get_size(),
                                                  family=potential.family)
    setup = potential.lammps_setup(type_elements=type_elements, workdir=run_dir,
                                   nranks=size_ranks)
    layout = plan_layout(world=world, n_atoms=len(atoms), family=potential.family,
                         route=setup.route, max_ranks=setup.max_ranks, size_ranks=size_ranks,
                         size_reason=size_reason)
    context = MDTemplateContext(
        ensemble=spec.ensemble,
        data_file=str(data_path),
        type_elements=tuple(type_elements),
        potential_name=potential.name,
        potential_route=setup.route,
        potential_lines=setup.lines,
        neighbor_skin_A=spec.neighbor_skin_A,
        timestep_ps=fs_to_ps(spec.timestep_fs),
        thermo_every=spec.thermo_every,
        minimize=spec.minimize,
        minimize_ftol_eV_per_A=spec.minimize_ftol_eV_per_A,
        minimize_max_iterations=spec.minimize_max_iterations,
        temperature_K=spec.temperature_K,
        seed=spec.seed,
        tdamp_ps=fs_to_ps(spec.tdamp_fs),
        pressure_bar=spec.pressure_bar,
        pdamp_ps=fs_to_ps(spec.pdamp_fs),
        barostat_modulus_bar=spec.barostat_modulus_bar,
        triclinic=bool(abs(atoms.cell.array[[1, 2, 2], [0, 0, 1]]).max() > 1e-8
                       or abs(atoms.cell.array[0, 1:]).max() > 1e-8),
        chunks=plan_chunks(equilibration_steps=spec.equilibration_steps,
                           production_steps=spec.steps, restart_every=spec.restart_every,
                           resume_step=resume_step, check_every=check_every),
        thermo_file=str(run_dir / THERMO_FILE),
        dump_file=str(run_dir / DUMP_FILE),
        dump_every=spec.dump_every,
        dump_coordinates=spec.dump_coordinates,
        restart_tmp=str(run_dir / RESTART_TMP),
        resume_file=str(resume_file) if resume_file else None,
        resume_step=resume_step if resume_file else None,
        progress_every=spec.thermo_every * max(1, total_steps // (200 * spec.thermo_every)),
        progress_fix_id=PROGRESS_FIX_ID,
        watchdog=spec.watchdog,
        type_charges=tuple(setup.type_charges),
        kspace_style=setup.kspace[0] if setup.kspace else None,
        kspace_accuracy=setup.kspace[1] if setup.kspace else None,
    )
    text = render("md.lammps.j2", context)
    before, after = split_at_attach(text)

    model = potential.model_info()
    manifest: dict[str, Any] = dict(old_manifest or {})
    manifest.update({
        "kind": "md",
        "status": "running",
        "spec": spec.model_dump(mode="json"),
        "structure": {
            "source": str(atoms.info.get("source", spec.structure)),
            "formula": atoms.get_chemical_formula(),
            "n_atoms": len(atoms),
            "cell_A": atoms.cell.array.round(8).tolist(),
            "volume_A3": float(atoms.get_volume()),
            **({"ordering": atoms.info["ordering"]} if "ordering" in atoms.info else {}),
        },
        "type_map": {str(i + 1): el for i, el in enumerate(type_elements)},
        "potential": {**model.__dict__, "route": setup.route, "lammps_lines": list(setup.lines)},
        "analysis_start_ps": 0.0,
        "frame_interval_fs": spec.dump_every * spec.timestep_fs,
        "total_steps": total_steps,
        "versions": package_versions(),
        "git_sha": git_sha(),
        "host": host_info(),
        "mpi_ranks": world.Get_size(),
        "parallel_layout": layout.as_dict(),
        "started": (old_manifest or {}).get("started") or now_iso(),
        "finished": None,
        "outputs": {"data": DATA_FILE, "input": INPUT_FILE, "log": LOG_FILE,
                    "thermo": THERMO_FILE, "dump": DUMP_FILE},
    })
    manifest.setdefault("segments", []).append(
        {"started": now_iso(), "from_step": resume_step, "host": manifest["host"]["hostname"]})
    log_name = LOG_FILE if resume_file is None else f"log.from_{resume_step}.lammps"
    if rank == 0:
        atomic_write_text(run_dir / (INPUT_FILE if resume_file is None
                                     else f"in.from_{resume_step}.lammps"), text)
        atomic_write_json(run_dir / MANIFEST, manifest)

    # --- LAMMPS, on as many ranks as the potential allows ------------------------------------
    lammps_comm = world
    if layout.lammps_ranks < world.Get_size():
        color = 0 if rank < layout.lammps_ranks else MPI.UNDEFINED
        lammps_comm = world.Split(color, rank)
        if rank == 0:
            import warnings

            warnings.warn(f"{potential.name} ({setup.route}): LAMMPS runs on "
                          f"{layout.lammps_ranks} of {world.Get_size()} MPI ranks with "
                          f"{layout.torch_threads or 1} thread(s); {layout.reason}")
    if lammps_comm != MPI.COMM_NULL:
        apply_threads(layout)

    reporter = _Progress(total_steps=total_steps,
                         report=(lambda step: progress(step, total_steps)) if progress else None)
    started = time.perf_counter()
    error: BaseException | None = None
    failure: dict[str, Any] | None = None
    stop_decision: tuple[str, int] | None = None
    analysis_before_s = monitor.analysis_s if monitor is not None else 0.0
    if lammps_comm != MPI.COMM_NULL:
        try:
            with LammpsEngine(log_file=run_dir / log_name, comm=lammps_comm) as engine:
                manifest["lammps"] = {"version": engine.version,
                                      "packages": engine.installed_packages,
                                      "ranks": engine.nprocs}
                engine.run_potential_block(before, required_styles=setup.required_styles,
                                           fix_it=setup.fix_it)
                potential.attach(engine.lmp, setup=setup, type_elements=type_elements,
                                 comm=engine.comm)
                # the progress fix is the first line after the attach marker
                engine.command(after[0])
                engine.lmp.set_fix_external_callback(PROGRESS_FIX_ID, reporter, None)
                if spec.watchdog:
                    reporter.watchdog = Watchdog(
                        lmp=engine.lmp, comm=engine.comm, type_elements=type_elements,
                        target_temperature_K=spec.temperature_K, limits=WatchdogLimits(
                            max_temperature_factor=spec.max_temperature_factor,
                            min_distance_A=spec.min_distance_A,
                            max_energy_drift_eV_per_atom=spec.max_energy_drift_eV_per_atom,
                            framework_msd_A2=spec.framework_msd_limit_A2,
                            check_nve_drift=spec.ensemble == "nve"))
                for line in after[1:]:
                    if line.startswith(CHECKPOINT_MARKER):
                        step = int(line.split()[2])
                        decision = None
                        if check_every is not None and (step - spec.equilibration_steps) > 0:
                            # the check is recorded before its restart file is published: a
                            # continuation from this restart never misses this decision
                            if engine.rank == 0 and monitor.due(step):
                                decision = monitor.check(step)["decision"]
                                manifest["convergence"] = {"stop_reason": None,
                                                           "history": monitor.history}
                                atomic_write_json(run_dir / MANIFEST, manifest)
                            decision = engine.comm.bcast(decision, root=0)
                        if engine.rank == 0:
                            _checkpoint(run_dir, step=step, manifest=manifest)
                        if decision not in (None, "continue"):
                            stop_decision = (decision, step)
                            break
                    else:
                        engine.commands([line])
                    if reporter.watchdog is not None and reporter.watchdog.failure is not None:
                        failure = reporter.watchdog.failure.as_dict()
                        break
        except EngineError as exc:
            failure = {"kind": classify_lammps_error(str(exc)), "step": None, "detail": str(exc)}
            error = exc
        except BaseException as exc:  # record, then re-raise
            error = exc
    wall_s = time.perf_counter() - started
    sleeping_barrier(world)  # ranks without LAMMPS waited here, asleep
    failure = world.bcast(failure, root=0)
    failed = world.allreduce(error is not None or failure is not None, op=MPI.LOR)

    ms_per_step = reporter.ms_per_step(from_step=max(spec.equilibration_steps, resume_step))
    manifest["segments"][-1]["finished"] = now_iso()
    manifest.update({
        "status": "failed" if failed else "completed",
        "finished": now_iso(),
        "timing": {"wall_s": round(wall_s, 3), "ms_per_step": ms_per_step,
                   "atom_steps_per_s": (len(atoms) * 1000.0 / ms_per_step) if ms_per_step else None},
    })
    if error is not None:
        manifest["error"] = f"{type(error).__name__}: {error}"
    if failure is not None:
        manifest["failure"] = failure
    if monitor is not None:
        md_wall = (float((old_manifest or {}).get("convergence", {}).get("md_wall_s") or 0.0)
                   + wall_s - (monitor.analysis_s - analysis_before_s))
        if failure is not None and failure.get("kind") == "framework_melting":
            manifest["convergence"] = monitor.summary(stop_reason="melting", md_wall_s=md_wall,
                                                      detail=failure.get("detail"))
        elif stop_decision is not None:
            manifest["convergence"] = monitor.summary(stop_reason=stop_decision[0],
                                                      md_wall_s=md_wall)
            _apply_stop(manifest, monitor=monitor, step=stop_decision[1])
        else:
            manifest["convergence"] = {**monitor.summary(stop_reason=None, md_wall_s=md_wall),
                                       "converged": False}
    if rank == 0:
        _tidy_thermo(run_dir / THERMO_FILE)
        manifest["energy_drift"] = energy_drift(run_dir / THERMO_FILE, n_atoms=len(atoms),
                                                ensemble=spec.ensemble)
        atomic_write_json(run_dir / MANIFEST, manifest)
    if failure is not None:
        where = f" at step {failure['step']}" if failure.get("step") is not None else ""
        raise MDFailure(f"MD stopped{where}: {failure['kind']} ({failure['detail']}); "
                        f"files written so far are kept in {run_dir}", failure=failure) from error
    if error is not None:
        raise error
    if failed:
        raise RuntimeError("MD failed on another MPI rank; see the manifest")
    return MDResult(run_dir=run_dir, manifest=manifest, n_atoms=len(atoms), wall_s=wall_s,
                    ms_per_step=ms_per_step,
                    resumed_from_step=resume_step if resume_file else None,
                    extra={"convergence": manifest.get("convergence")} if monitor else {})


def _apply_stop(manifest: dict[str, Any], *, monitor: Any, step: int) -> None:
    """Record where an adaptive run stopped; later analyses start where the checks did."""
    conv = manifest["convergence"]
    manifest["total_steps"] = step
    manifest["production_steps_run"] = step - monitor.eq_steps
    manifest["analysis_start_ps"] = float(conv.get("analysis_start_ps") or 0.0)
    plot = monitor.plot()
    manifest["outputs"]["convergence_csv"] = conv["history_csv"]
    if plot is not None:
        manifest["outputs"]["convergence_plot"] = plot.name


def _finish_stopped(spec: MDSpec, *, world: Any, run_dir: Path, atoms: Any,
                    old_manifest: dict[str, Any], monitor: Any,
                    record: dict[str, Any]) -> MDResult:
    """A continuation that finds the stop decision already recorded: nothing left to run."""
    manifest = dict(old_manifest)
    if world.Get_rank() == 0:
        md_wall = float(manifest.get("convergence", {}).get("md_wall_s") or 0.0)
        manifest["convergence"] = monitor.summary(stop_reason=record["decision"],
                                                  md_wall_s=md_wall)
        _apply_stop(manifest, monitor=monitor, step=int(record["step"]))
        manifest.update({"status": "completed", "finished": now_iso()})
        _tidy_thermo(run_dir / THERMO_FILE)
        atomic_write_json(run_dir / MANIFEST, manifest)
    manifest = world.bcast(manifest, root=0)
    timing = manifest.get("timing", {})
    return MDResult(run_dir=run_dir, manifest=manifest, n_atoms=len(atoms),
                    wall_s=timing.get("wall_s", 0.0), ms_per_step=timing.get("ms_per_step"),
                    extra={"convergence": manifest.get("convergence")})


def _checkpoint(run_dir: Path, *, step: int, manifest: dict[str, Any]) -> None:
    """Publish the restart file just written, prune old ones, record it in the manifest."""
    os.replace(run_dir / RESTART_TMP, run_dir / f"restart.{step}")
    for old_step in sorted(restart_files(run_dir))[:-KEEP_RESTARTS]:
        (run_dir / f"restart.{old_step}").unlink(missing_ok=True)
    manifest["last_restart_step"] = step
    manifest["outputs"]["restart"] = [p.name for _, p in sorted(restart_files(run_dir).items())]
    atomic_write_json(run_dir / MANIFEST, manifest)
