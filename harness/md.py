"""The ``harness md`` workflow: structure + potential + template -> LAMMPS run directory.

Order of work: validate everything that can be validated before LAMMPS starts (spec,
structure, element coverage, distances, template values), write the inputs and a
``manifest.json`` marked ``running``, run LAMMPS, then mark the manifest ``completed``
(or ``failed`` with the error) with end time, timings and the list of outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.rundir import (MANIFEST, atomic_write_json, atomic_write_text, git_sha, host_info,
                            now_iso, package_versions)
from harness.spec import MDSpec
from harness.templating import MDTemplateContext, render, split_at_attach
from harness.units import fs_to_ps

# file names inside a run directory
DATA_FILE = "structure.data"
INPUT_FILE = "in.lammps"
LOG_FILE = "log.lammps"
THERMO_FILE = "thermo.csv"
DUMP_FILE = "traj.lammpstrj"
RESTART_PREFIX = "restart"
PROGRESS_FIX_ID = "harness_progress"


class RunDirectoryError(RuntimeError):
    """The output directory cannot be used without destroying earlier results."""


@dataclass
class MDResult:
    run_dir: Path
    manifest: dict[str, Any]
    n_atoms: int
    wall_s: float
    ms_per_step: float | None
    extra: dict[str, Any] = field(default_factory=dict)


class _Progress:
    """Called by LAMMPS every ``every`` steps through a no-force ``fix external``."""

    def __init__(self, *, total_steps: int, report: Callable[[int], None] | None) -> None:
        self.total_steps = total_steps
        self.report = report
        self.samples: list[tuple[int, float]] = []

    def __call__(self, _caller, ntimestep, nlocal, _tag, _x, f) -> None:
        f[:nlocal] = 0.0
        self.samples.append((int(ntimestep), time.perf_counter()))
        if self.report is not None:
            self.report(int(ntimestep))

    def ms_per_step(self, *, from_step: int) -> float | None:
        points = [(s, t) for s, t in self.samples if s >= from_step]
        # drop duplicate step entries (setup calls) keeping the last
        dedup: dict[int, float] = {}
        for s, t in points:
            dedup[s] = t
        steps = sorted(dedup)
        if len(steps) < 2 or steps[-1] == steps[0]:
            return None
        return 1000.0 * (dedup[steps[-1]] - dedup[steps[0]]) / (steps[-1] - steps[0])


def prepare_structure(spec: MDSpec):
    """Load, validate and replicate the structure named by the spec."""
    from harness.structures import check_min_distance, load_structure, make_supercell

    atoms = load_structure(spec.structure, occupancy_tolerance=spec.occupancy_tolerance)
    if spec.supercell_min_length_A is not None or spec.supercell_matrix is not None:
        atoms = make_supercell(atoms, min_length_A=spec.supercell_min_length_A,
                               matrix=spec.supercell_matrix)
    check_min_distance(atoms, min_distance_A=spec.min_distance_A)
    return atoms


def _check_run_dir(run_dir: Path, *, force: bool) -> None:
    manifest = run_dir / MANIFEST
    if manifest.exists() and not force:
        raise RunDirectoryError(
            f"{run_dir} already holds a run ({manifest}); nothing was changed. "
            "Choose another --out, or pass --force to overwrite it")


def run_md(spec: MDSpec, *, comm: Any = None, force: bool = False,
           progress: Callable[[int, int], None] | None = None) -> MDResult:
    """Run one MD job described by ``spec``; ``progress(step, total)`` is called as it goes."""
    from harness.engine import LammpsEngine, _mpi
    from harness.structures import write_lammps_data
    from potentials.registry import get_potential

    MPI = _mpi()
    world = comm if comm is not None else MPI.COMM_WORLD
    rank = world.Get_rank()
    run_dir = Path(spec.out).resolve()

    # --- validation before anything is written --------------------------------------------
    _check_run_dir(run_dir, force=force)
    potential = get_potential(spec.potential, route=spec.route, device=spec.device)
    atoms = prepare_structure(spec)
    potential.check_elements(atoms.get_chemical_symbols())
    world.Barrier()
    run_dir.mkdir(parents=True, exist_ok=True)

    # --- inputs --------------------------------------------------------------------------------
    data_path = run_dir / DATA_FILE
    type_elements = write_lammps_data(atoms, data_path) if rank == 0 else None
    type_elements = world.bcast(type_elements, root=0)
    setup = potential.lammps_setup(type_elements=type_elements, workdir=run_dir,
                                   nranks=world.Get_size())
    total_steps = spec.equilibration_steps + spec.steps
    progress_every = max(1, total_steps // 200)
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
        triclinic=bool(abs(atoms.cell.array[[1, 2, 2], [0, 0, 1]]).max() > 1e-8
                       or abs(atoms.cell.array[0, 1:]).max() > 1e-8),
        equilibration_steps=spec.equilibration_steps,
        production_steps=spec.steps,
        thermo_file=str(run_dir / THERMO_FILE),
        dump_file=str(run_dir / DUMP_FILE),
        dump_every=spec.dump_every,
        dump_coordinates=spec.dump_coordinates,
        restart_every=spec.restart_every,
        restart_prefix=str(run_dir / RESTART_PREFIX),
        progress_every=progress_every,
        progress_fix_id=PROGRESS_FIX_ID,
    )
    text = render("md.lammps.j2", context)
    before, after = split_at_attach(text)

    model = potential.model_info()
    manifest: dict[str, Any] = {
        "kind": "md",
        "status": "running",
        "spec": spec.model_dump(mode="json"),
        "structure": {
            "source": str(atoms.info.get("source", spec.structure)),
            "formula": atoms.get_chemical_formula(),
            "n_atoms": len(atoms),
            "cell_A": atoms.cell.array.round(8).tolist(),
            "volume_A3": float(atoms.get_volume()),
        },
        "type_map": {str(i + 1): el for i, el in enumerate(type_elements)},
        "potential": {**model.__dict__, "route": setup.route, "lammps_lines": list(setup.lines)},
        "analysis_start_ps": 0.0,
        "frame_interval_fs": spec.dump_every * spec.timestep_fs,
        "versions": package_versions(),
        "git_sha": git_sha(),
        "host": host_info(),
        "mpi_ranks": world.Get_size(),
        "started": now_iso(),
        "finished": None,
        "outputs": {
            "data": DATA_FILE,
            "input": INPUT_FILE,
            "log": LOG_FILE,
            "thermo": THERMO_FILE,
            "dump": DUMP_FILE,
            "restart": [f"{RESTART_PREFIX}.a", f"{RESTART_PREFIX}.b", f"{RESTART_PREFIX}.final"],
        },
    }
    if rank == 0:
        atomic_write_text(run_dir / INPUT_FILE, text)
        atomic_write_json(run_dir / MANIFEST, manifest)

    # --- LAMMPS, on as many ranks as the potential allows ------------------------------------
    lammps_comm = world
    if setup.max_ranks is not None and world.Get_size() > setup.max_ranks:
        color = 0 if rank < setup.max_ranks else MPI.UNDEFINED
        lammps_comm = world.Split(color, rank)
        if rank == 0:
            import warnings

            warnings.warn(f"{potential.name} ({setup.route}) runs on at most {setup.max_ranks} "
                          f"MPI rank(s); the other {world.Get_size() - setup.max_ranks} idle")

    reporter = _Progress(total_steps=total_steps,
                         report=(lambda step: progress(step, total_steps)) if progress else None)
    started = time.perf_counter()
    error: BaseException | None = None
    if lammps_comm != MPI.COMM_NULL:
        try:
            with LammpsEngine(log_file=run_dir / LOG_FILE, comm=lammps_comm) as engine:
                manifest["lammps"] = {"version": engine.version,
                                      "packages": engine.installed_packages,
                                      "ranks": engine.nprocs}
                engine.commands(before)
                engine.require_styles(setup.required_styles, fix_it=setup.fix_it)
                potential.attach(engine.lmp, setup=setup, type_elements=type_elements,
                                 comm=engine.comm)
                # the progress fix is the first line after the attach marker
                engine.command(after[0])
                engine.lmp.set_fix_external_callback(PROGRESS_FIX_ID, reporter, None)
                engine.commands(after[1:])
        except BaseException as exc:  # record, then re-raise
            error = exc
    wall_s = time.perf_counter() - started
    failed = world.allreduce(error is not None, op=MPI.LOR)

    ms_per_step = reporter.ms_per_step(from_step=spec.equilibration_steps)
    manifest.update({
        "status": "failed" if failed else "completed",
        "finished": now_iso(),
        "timing": {"wall_s": round(wall_s, 3), "ms_per_step": ms_per_step,
                   "atom_steps_per_s": (len(atoms) * 1000.0 / ms_per_step) if ms_per_step else None},
    })
    if error is not None:
        manifest["error"] = f"{type(error).__name__}: {error}"
    if rank == 0:
        atomic_write_json(run_dir / MANIFEST, manifest)
    if error is not None:
        raise error
    if failed:
        raise RuntimeError("MD failed on another MPI rank; see the manifest")
    return MDResult(run_dir=run_dir, manifest=manifest, n_atoms=len(atoms), wall_s=wall_s,
                    ms_per_step=ms_per_step)

