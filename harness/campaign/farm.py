"""The mpi4py task farm behind ``harness bench``.

Scheduling. World rank 0 keeps the queue. Workers (group leaders) ask for a task, run it,
report, and ask again until told to stop: dynamic scheduling with point-to-point messages
(tags REQUEST / ASSIGN / DONE / STOP on a duplicate of ``COMM_WORLD``). By default rank 0
works as well: it takes tasks from the same queue and answers the others' messages from
the MD progress callback (every ~0.5 % of a run) and between tasks, so ``mpirun -n 2`` runs
two tasks at a time. ``farm.scheduler_works: false`` keeps rank 0 for scheduling only.

Groups. With ``farm.ranks_per_task: k`` the worker ranks are split into groups of k
consecutive ranks; each group runs one LAMMPS instance over its own communicator (MPI
domain decomposition of large cells). The leader talks to the scheduler and hands the task
to its members; only the leader analyses the trajectory and writes the result.

Waiting ranks poll (``Iprobe`` + a short sleep) rather than block, because MPICH's blocking
receive spins a core at 100 % that a neighbour's LAMMPS could use.

GPUs. :func:`bind_gpu` sets ``CUDA_VISIBLE_DEVICES`` of each process to one GPU, chosen by
its node-local rank (``COMM_WORLD.Split_type(COMM_TYPE_SHARED)``) modulo the number of GPUs
of the node; several ranks may share one GPU. It must run before torch is imported (the
``harness bench`` command does it first thing).

Results. Each task writes ``tasks/<id>/result.json`` atomically when it ends, completed or
failed (failure kind and message recorded; the rest go on). Re-running the same command
skips tasks whose result.json exists (``--retry-failed`` retries the failed ones from
scratch) and continues interrupted MD from its last restart file (:func:`harness.md.workflow.run_md`).
Rank 0 rewrites ``results.parquet`` now and then while running and writes
``results.parquet`` + ``summary.csv`` + ``metrics.json`` at the end.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.campaign.tasks import CampaignSpec, Task, expand_tasks
from harness.md.layout import ENV_NODE_WORKERS
from harness.md.rundir import atomic_write_json, atomic_write_text, now_iso

RESULT_FILE = "result.json"
TASKS_DIR = "tasks"
ANALYSIS_DIR = "analysis"

TAG_REQUEST = 11
TAG_ASSIGN = 12
TAG_DONE = 13
TAG_STOP = 14

POLL_SLEEP_S = 0.01

#: watchdog kinds (harness.md.watchdog) and farm-level kinds -> the categories reported
FAILURE_CATEGORIES = {
    "nan": "md_blowup", "temperature_runaway": "md_blowup", "atoms_too_close": "md_blowup",
    "energy_drift": "md_blowup", "lost_atoms": "md_blowup", "lammps_error": "md_blowup",
    "framework_melting": "melting", "out_of_memory": "resource",
    "input_error": "setup", "run_directory": "setup", "analysis_error": "analysis",
    "error": "error",
}


def failure_category(kind: str | None) -> str | None:
    if kind is None:
        return None
    return FAILURE_CATEGORIES.get(kind, "error")


# --------------------------------------------------------------------------------------
# GPU mapping
# --------------------------------------------------------------------------------------
def gpu_for_local_rank(local_rank: int, gpus: list[str]) -> str | None:
    """The GPU id a node-local rank uses: round robin over the node's GPUs (None: no GPU)."""
    if not gpus:
        return None
    return gpus[local_rank % len(gpus)]


def node_gpus(setting: str | int = "auto", *, environ: dict[str, str] | None = None) -> list[str]:
    """GPU ids visible on this node, without importing torch.

    ``CUDA_VISIBLE_DEVICES`` when set (its entries, possibly UUIDs), else the count of
    ``/proc/driver/nvidia/gpus/*`` or ``nvidia-smi -L``; an int setting means ``0..n-1``.
    """
    env = os.environ if environ is None else environ
    if setting == "none":
        return []
    if isinstance(setting, int):
        return [str(i) for i in range(setting)]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20,
                                 check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def local_rank(comm: Any = None) -> int:
    from mpi4py import MPI

    comm = comm or MPI.COMM_WORLD
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank()
    finally:
        node.Free()


def node_workers(comm: Any, *, working: bool) -> int:
    """Ranks of ``comm`` on this node that run tasks (collective over ``comm``)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return int(node.allreduce(int(working), op=MPI.SUM))
    finally:
        node.Free()


def bind_gpu(setting: str | int = "auto", *, comm: Any = None) -> str | None:
    """Give this process one GPU by node-local rank; returns its id (None: CPU only).

    Collective over ``comm`` (default ``COMM_WORLD``). Call it before torch is imported;
    afterwards CUDA has fixed its device list and the call only warns.
    """
    gpus = node_gpus(setting)
    rank = local_rank(comm)
    chosen = gpu_for_local_rank(rank, gpus)
    if chosen is None:
        return None
    if "torch" in sys.modules:
        import warnings

        warnings.warn("torch was imported before the GPU binding; CUDA_VISIBLE_DEVICES is "
                      "set but may not take effect in this process")
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


# --------------------------------------------------------------------------------------
# campaign directory
# --------------------------------------------------------------------------------------
def task_dir(campaign_dir: Path, task_id: str) -> Path:
    return Path(campaign_dir) / TASKS_DIR / task_id


def read_result(campaign_dir: Path, task_id: str) -> dict[str, Any] | None:
    import json

    path = task_dir(campaign_dir, task_id) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: treated as not finished (writes are atomic, so rare)


def _same_md(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    def key(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        d["out"] = str(Path(d.get("out", "")).resolve())
        return d
    return key(stored) == key(current)


def prepare_campaign_dir(spec: CampaignSpec, tasks: list[Task], campaign_dir: Path) -> None:
    """Write campaign.yaml + tasks.json; refuse if finished tasks were run with other settings."""
    import json

    import yaml

    from harness.md.spec import SpecError

    conflicts = []
    for task in tasks:
        result = read_result(campaign_dir, task.task_id)
        stored = (result or {}).get("task", {}).get("md")
        if stored is None:
            manifest = task_dir(campaign_dir, task.task_id) / "manifest.json"
            if manifest.is_file():
                try:
                    stored = json.loads(manifest.read_text()).get("spec")
                except ValueError:
                    stored = None
        if stored is not None and not _same_md(stored, task.md):
            conflicts.append(task.task_id)
        elif result is not None and result.get("task", {}).get("analysis") != task.analysis:
            conflicts.append(task.task_id)
        elif result is not None and task.kind != "md" and \
                result.get("task", {}).get("extra") != task.extra:  # static job settings
            conflicts.append(task.task_id)
    if conflicts:
        listed = ", ".join(conflicts[:5]) + (f" (+{len(conflicts) - 5} more)"
                                              if len(conflicts) > 5 else "")
        raise SpecError(f"{campaign_dir} holds tasks run with other settings: {listed}. Use "
                        "another campaign directory (--out), or delete those task folders")
    campaign_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(campaign_dir / "campaign.yaml",
                      "# resolved campaign spec written by `harness bench`\n"
                      + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    atomic_write_json(campaign_dir / "tasks.json", [t.as_dict() for t in tasks])


# --------------------------------------------------------------------------------------
# one task
# --------------------------------------------------------------------------------------
def _analysis_kwargs(task: Task) -> tuple[dict[str, Any], list[str]]:
    """Settings for TransportAnalyzer.from_run_dir from the task's analysis block."""
    import math

    a = task.analysis_settings()
    md = task.md_spec()
    notes: list[str] = []
    kwargs: dict[str, Any] = dict(species=a.species, temperature_K=md.temperature_K,
                                  analysis_start_ps=a.analysis_start_ps, seed=task.seed,
                                  fit_start_ps=a.fit_start_ps, fit_end_ps=a.fit_end_ps,
                                  compute_distinct=a.compute_distinct, charges=a.charges)
    frame_ps = md.dump_every * md.timestep_fs / 1000.0
    n_frames = md.steps // md.dump_every + 1
    first = math.ceil(a.analysis_start_ps / frame_ps - 1e-9)
    duration = (n_frames - 1 - first) * frame_ps
    if a.fit_last_ps is not None:
        start = duration - a.fit_last_ps
        if start < 0:
            notes.append(f"fit_last_ps {a.fit_last_ps:g} exceeds the analysed {duration:g} ps; "
                         "fitting the whole trajectory")
        kwargs["fit_start_ps"] = max(start, frame_ps)
        kwargs["fit_end_ps"] = duration
    if a.rdf_last_ps is not None:
        kwargs["rdf_window_ps"] = (max(0.0, duration - a.rdf_last_ps), duration)
    for key in ("n_samples", "n_walkers", "n_burn"):
        value = getattr(a, f"kinisi_{key}")
        if value is not None:
            kwargs[key] = value
    return kwargs, notes


def analyse_task(task: Task, *, run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Transport analysis of a finished task (same layer as ``harness analyze``)."""
    from analysis.analyzer import TransportAnalyzer

    kwargs, notes = _analysis_kwargs(task)
    analyzer = TransportAnalyzer.from_run_dir(run_dir, **kwargs)
    try:
        results = analyzer.run()
    except ValueError as exc:
        if "rdf_window_ps" in kwargs and "RDF frames" in str(exc):
            notes.append(f"RDF window {kwargs.pop('rdf_window_ps')} held no frame; RDF over "
                         "the whole trajectory")
            results = TransportAnalyzer.from_run_dir(run_dir, **kwargs).run()
        else:
            raise
    results.write(run_dir / ANALYSIS_DIR, plots=task.analysis_settings().plots)
    return results.as_dict(), notes


def _known_input_errors() -> tuple[type[BaseException], ...]:
    from harness.md.spec import SpecError
    from potentials.base import PotentialError

    errors: list[type[BaseException]] = [SpecError, PotentialError]
    for module, name in (("harness.structures", "StructureError"),
                         ("harness.md.templating", "TemplateValueError"),
                         ("harness.md.engine", "EngineError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):  # pragma: no cover
            pass
    return tuple(errors)


def run_task(task: Task, *, campaign_dir: Path, comm: Any, fresh: bool = False,
             progress: Callable[[int, int], None] | None = None,
             gpu: str | None = None) -> dict[str, Any] | None:
    """Run MD (or continue it) and analyse; the leader writes and returns result.json.

    ``fresh`` deletes the task folder first (retrying a failed MD from scratch, so that no
    restart file of the failed attempt is picked up). Every exception is caught and
    recorded; on non-leader ranks of a group returns None.
    """
    import shutil

    from harness.md.workflow import MDFailure, RunDirectoryError, run_md

    if task.kind != "md":  # parity, elastic, formation, neb, phonons
        from harness.campaign.statics_tasks import run_statics_task

        return run_statics_task(task, campaign_dir=campaign_dir, comm=comm, fresh=fresh, gpu=gpu)
    leader = comm.Get_rank() == 0
    run_dir = task_dir(campaign_dir, task.task_id)
    if fresh:
        if leader:
            shutil.rmtree(run_dir, ignore_errors=True)
        comm.Barrier()
    started = time.perf_counter()
    result: dict[str, Any] = {"task_id": task.task_id, "status": "failed", "stage": "md",
                              "failure_kind": None, "failure_category": None,
                              "failure_step": None, "error": None, "notes": [],
                              "task": task.as_dict(), "md": {}, "transport": None,
                              "started": now_iso()}
    md_result = None
    try:
        md_result = run_md(task.md_spec(), comm=comm, progress=progress)
    except MDFailure as exc:
        result.update(failure_kind=exc.failure.get("kind"), failure_step=exc.failure.get("step"),
                      error=str(exc))
    except RunDirectoryError as exc:
        result.update(failure_kind="run_directory", error=str(exc), stage="setup")
    except _known_input_errors() as exc:
        result.update(failure_kind="input_error", error=f"{type(exc).__name__}: {exc}",
                      stage="setup")
    except Exception as exc:  # noqa: BLE001 - a task's failure must not stop the campaign
        result.update(failure_kind="error", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=8))
    md_wall = time.perf_counter() - started
    if not leader:
        return None
    manifest = _manifest(run_dir)
    result["md"] = _md_summary(manifest, md_result=md_result, wall_s=md_wall)
    analysis_wall = 0.0
    if md_result is not None:
        if task.analysis_settings().enabled:
            t0 = time.perf_counter()
            result["stage"] = "analysis"
            try:
                transport, notes = analyse_task(task, run_dir=run_dir)
                result["transport"] = transport
                result["notes"] += notes
                result.update(status="completed", stage=None)
            except Exception as exc:  # noqa: BLE001
                result.update(failure_kind="analysis_error",
                              error=f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc(limit=8))
            analysis_wall = time.perf_counter() - t0
        else:
            result.update(status="completed", stage=None)
    result["failure_category"] = failure_category(result["failure_kind"])
    ranks = comm.Get_size()
    uses_gpu = bool(gpu) and (manifest.get("host") or {}).get("cuda_available") and \
        (manifest.get("spec") or {}).get("device") != "cpu" and \
        (manifest.get("potential") or {}).get("family") not in (None, "classical")
    task_wall = md_wall + analysis_wall
    result["cost"] = {"task_wall_s": round(task_wall, 3), "md_wall_s": round(md_wall, 3),
                      "analysis_wall_s": round(analysis_wall, 3), "ranks": ranks,
                      "cpu_hours": task_wall * ranks / 3600.0,
                      "gpu_hours": md_wall / 3600.0 if uses_gpu else 0.0}
    result["worker"] = {"world_rank": _world_rank(), "host": socket.gethostname(),
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "gpu": gpu}
    result["finished"] = now_iso()
    atomic_write_json(run_dir / RESULT_FILE, result)
    return result


def _world_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def _manifest(run_dir: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _md_summary(manifest: dict[str, Any], *, md_result: Any, wall_s: float) -> dict[str, Any]:
    structure = manifest.get("structure") or {}
    timing = manifest.get("timing") or {}
    potential = manifest.get("potential") or {}
    return {
        "status": manifest.get("status"),
        "n_atoms": structure.get("n_atoms"),
        "formula": structure.get("formula"),
        "volume_A3": structure.get("volume_A3"),
        "wall_s": timing.get("wall_s"),
        "ms_per_step": timing.get("ms_per_step"),
        "atom_steps_per_s": timing.get("atom_steps_per_s"),
        "resumed_from_step": getattr(md_result, "resumed_from_step", None),
        "segments": len(manifest.get("segments") or []),
        "last_restart_step": manifest.get("last_restart_step"),
        "lammps_ranks": (manifest.get("lammps") or {}).get("ranks"),
        "potential_family": potential.get("family"),
        "potential_route": potential.get("route"),
        "model_sha256": potential.get("model_sha256"),
        "call_wall_s": round(wall_s, 3),
        # adaptive length (convergence policy): the verdict without the check history
        "convergence": {k: v for k, v in (manifest.get("convergence") or {}).items()
                        if k != "history"} or None,
    }


# --------------------------------------------------------------------------------------
# scheduling
# --------------------------------------------------------------------------------------
@dataclass
class FarmState:
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: dict[int, tuple[str, float]] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


class Display:
    """Rich progress on rank 0: tasks done / running / failed, elapsed and ETA."""

    def __init__(self, state: FarmState, *, enabled: bool, n_workers: int) -> None:
        self.state = state
        self.enabled = enabled
        self.n_workers = max(1, n_workers)
        self.progress = None
        self.bar = None

    def __enter__(self) -> "Display":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self.progress = Progress(TextColumn("[bold]tasks"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.description}"), TimeElapsedColumn(),
                                     transient=False)
            self.progress.__enter__()
            self.bar = self.progress.add_task(self._text(), total=self.state.total)
            self.update()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.update()
            self.progress.__exit__(*exc)

    def eta_s(self) -> float | None:
        s = self.state
        remaining = s.total - s.skipped - s.done - s.failed
        if remaining <= 0:
            return 0.0
        if not s.durations:
            return None
        mean = sum(s.durations) / len(s.durations)
        return mean * remaining / self.n_workers

    def _text(self) -> str:
        s = self.state
        eta = self.eta_s()
        eta_text = "--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        skipped = f", {s.skipped} already done" if s.skipped else ""
        return (f"done {s.done + s.skipped}, running {len(s.running)}, failed {s.failed}"
                f"{skipped}  ETA {eta_text}")

    def update(self) -> None:
        if self.progress is not None:
            s = self.state
            self.progress.update(self.bar, completed=s.skipped + s.done + s.failed,
                                 description=self._text())

    def log(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, highlight=False)


class Scheduler:
    """Rank 0's queue; ``poll()`` answers every waiting message without blocking."""

    def __init__(self, comm: Any, queue: list[Task], *, remote_leaders: int, state: FarmState,
                 display: Display, fresh: set[str] | None = None) -> None:
        self.comm = comm
        self.queue = deque(queue)
        self.fresh = set(fresh or ())
        self.remote_active = remote_leaders
        self.state = state
        self.display = display

    def poll(self) -> bool:
        from mpi4py import MPI

        status = MPI.Status()
        handled = False
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            source, tag = status.Get_source(), status.Get_tag()
            message = self.comm.recv(source=source, tag=tag)
            if tag == TAG_DONE:
                self.record(source, message)
            self._assign(source)
            handled = True
        if handled:
            self.display.update()
        return handled

    def _assign(self, rank: int) -> None:
        if self.queue:
            task = self.queue.popleft()
            self.state.running[rank] = (task.task_id, time.perf_counter())
            self.comm.send((task.as_dict(), task.task_id in self.fresh), dest=rank,
                           tag=TAG_ASSIGN)
        else:
            self.comm.send(None, dest=rank, tag=TAG_STOP)
            self.remote_active -= 1

    def take_local(self) -> Task | None:
        if not self.queue:
            return None
        task = self.queue.popleft()
        self.state.running[0] = (task.task_id, time.perf_counter())
        self.display.update()
        return task

    def record(self, rank: int, summary: dict[str, Any]) -> None:
        task_id, t0 = self.state.running.pop(rank, (summary.get("task_id"), time.perf_counter()))
        elapsed = time.perf_counter() - t0
        if summary.get("status") == "completed":
            self.state.done += 1
            self.state.durations.append(elapsed)
            self.display.log(f"[green]done[/] {task_id} ({elapsed:.1f} s, rank {rank})")
        else:
            self.state.failed += 1
            self.display.log(f"[red]failed[/] {task_id}: {summary.get('failure_kind')} - "
                             f"{str(summary.get('error'))[:200]}")
        self.display.update()


def _summary(result: dict[str, Any] | None) -> dict[str, Any]:
    result = result or {}
    return {k: result.get(k) for k in ("task_id", "status", "failure_kind", "error")}


def _wait_message(comm: Any, *, source: int) -> tuple[Any, int]:
    """A polling receive (MPICH's blocking receive spins a core)."""
    from mpi4py import MPI

    status = MPI.Status()
    while not comm.Iprobe(source=source, tag=MPI.ANY_TAG, status=status):
        time.sleep(POLL_SLEEP_S)
    tag = status.Get_tag()
    return comm.recv(source=source, tag=tag), tag


@dataclass
class CampaignOutcome:
    campaign_dir: Path
    total: int
    skipped: int
    completed: int
    failed: int
    wall_s: float
    outputs: dict[str, str]


def worker_groups(size: int, *, ranks_per_task: int, scheduler_works: bool) -> list[list[int]]:
    """World ranks of each LAMMPS group (the first of a group is its leader)."""
    ranks = list(range(size)) if (scheduler_works or size == 1) else list(range(1, size))
    k = min(ranks_per_task, len(ranks))
    return [ranks[i:i + k] for i in range(0, len(ranks) - k + 1, k)]


def run_campaign(spec: CampaignSpec | None, *, campaign_dir: str | Path, retry_failed: bool = False,
                 show_progress: bool = True, gpu: str | None = None,
                 comm: Any = None) -> CampaignOutcome | None:
    """Run every unfinished task of the campaign over ``comm`` (default COMM_WORLD).

    Collective: every rank calls it. ``spec`` is needed on rank 0 only. Returns the
    outcome on rank 0, None elsewhere.
    """
    from mpi4py import MPI

    world = (comm or MPI.COMM_WORLD).Dup()
    rank, size = world.Get_rank(), world.Get_size()
    campaign_dir = Path(campaign_dir).resolve()
    farm = spec.farm if spec is not None else None
    settings = world.bcast((farm.ranks_per_task, farm.scheduler_works) if rank == 0 else None,
                           root=0)
    groups = worker_groups(size, ranks_per_task=settings[0], scheduler_works=settings[1])
    my_group = next((g for g in groups if rank in g), None)
    color = groups.index(my_group) if my_group else MPI.UNDEFINED
    group_comm = world.Split(color, rank)
    # the ranks working on this node, for the thread rule of each task (harness.md.layout):
    # a task sees only its group's communicator, not the groups computing beside it
    previous = os.environ.get(ENV_NODE_WORKERS)
    os.environ[ENV_NODE_WORKERS] = str(node_workers(world, working=my_group is not None))
    if rank == 0 and size > 1:
        idle = [r for r in range(size) if not any(r in g for g in groups)]
        if groups and len(groups[0]) < settings[0]:
            warnings.warn(f"farm.ranks_per_task is {settings[0]} but only {len(groups[0])} "
                          f"rank(s) can work per task under mpirun -n {size}; LAMMPS "
                          "decomposes each task over that many ranks (trajectories differ "
                          "from a run with another decomposition)", RuntimeWarning, stacklevel=2)
        if idle and not (idle == [0] and not settings[1]):
            warnings.warn(f"rank(s) {idle} get no tasks: mpirun -n {size} is not a multiple of "
                          f"farm.ranks_per_task {settings[0]}", RuntimeWarning, stacklevel=2)
    try:
        if rank == 0:
            return _run_rank0(spec, world=world, group_comm=group_comm, groups=groups,
                              campaign_dir=campaign_dir, retry_failed=retry_failed,
                              show_progress=show_progress, gpu=gpu)
        if my_group is None:
            return None  # left over: world size not a multiple of ranks_per_task
        if my_group[0] == rank:
            _leader_loop(world, group_comm, campaign_dir=campaign_dir, gpu=gpu)
        else:
            _member_loop(group_comm, campaign_dir=campaign_dir, gpu=gpu)
        return None
    except Exception as exc:
        if size > 1 and not getattr(exc, "farm_stopped", False):
            # a task's own failures are recorded by run_task; what escapes it (disk full,
            # permissions, a bug) leaves the other ranks waiting on this one forever: end the
            # whole job instead. Finished tasks are on disk; the same command resumes.
            sys.stderr.write(f"harness bench: rank {rank} stopped on {type(exc).__name__}: "
                             f"{exc}\nending all {size} ranks; finished tasks are kept and "
                             "the same command resumes the campaign\n")
            sys.stderr.flush()
            world.Abort(1)
        raise
    finally:
        if previous is None:
            os.environ.pop(ENV_NODE_WORKERS, None)
        else:
            os.environ[ENV_NODE_WORKERS] = previous
        if group_comm != MPI.COMM_NULL:
            group_comm.Free()
        world.Free()


def _run_rank0(spec: CampaignSpec, *, world: Any, group_comm: Any, groups: list[list[int]],
               campaign_dir: Path, retry_failed: bool, show_progress: bool,
               gpu: str | None) -> CampaignOutcome:
    from harness.campaign import report

    started = time.perf_counter()
    error = None
    try:
        tasks = expand_tasks(spec, campaign_dir=campaign_dir)
        prepare_campaign_dir(spec, tasks, campaign_dir)
    except Exception as exc:  # noqa: BLE001 - stop the workers, then re-raise
        error, tasks = exc, []
    pending, fresh = [], set()
    skipped = 0
    for task in tasks:
        result = read_result(campaign_dir, task.task_id)
        if result is None:
            pending.append(task)
        elif result.get("status") == "failed" and retry_failed:
            pending.append(task)
            if result.get("stage") != "analysis":  # the MD itself failed: start it afresh
                fresh.add(task.task_id)
        else:
            skipped += 1
    state = FarmState(total=len(tasks), skipped=skipped)
    remote = [g[0] for g in groups if g[0] != 0]
    i_work = any(g[0] == 0 for g in groups)
    display = Display(state, enabled=show_progress and error is None, n_workers=len(groups))
    last_assembly = time.perf_counter()
    with display:
        scheduler = Scheduler(world, pending, remote_leaders=len(remote), state=state,
                              display=display, fresh=fresh)
        if error is not None:
            scheduler.queue.clear()

        def progress(_step: int, _total: int) -> None:
            scheduler.poll()

        while i_work:
            scheduler.poll()
            task = scheduler.take_local()
            if task is None:
                break
            fresh = task.task_id in scheduler.fresh
            for member in range(1, group_comm.Get_size()):
                group_comm.send((task.as_dict(), fresh), dest=member, tag=TAG_ASSIGN)
            result = run_task(task, campaign_dir=campaign_dir, comm=group_comm, fresh=fresh,
                              progress=progress, gpu=gpu)
            scheduler.record(0, _summary(result))
            if time.perf_counter() - last_assembly > spec.farm.assemble_every_s:
                _safe_assemble(report, campaign_dir, display)
                last_assembly = time.perf_counter()
        if i_work and group_comm.Get_size() > 1:
            for member in range(1, group_comm.Get_size()):
                group_comm.send(None, dest=member, tag=TAG_STOP)
        while scheduler.remote_active > 0:
            if not scheduler.poll():
                time.sleep(POLL_SLEEP_S)
            elif time.perf_counter() - last_assembly > spec.farm.assemble_every_s:
                _safe_assemble(report, campaign_dir, display)
                last_assembly = time.perf_counter()
    if error is not None:
        try:
            error.farm_stopped = True  # every worker was sent STOP: a clean error, no abort
        except AttributeError:  # pragma: no cover - an exception type with __slots__
            pass
        raise error
    outputs = report.assemble(campaign_dir)
    return CampaignOutcome(campaign_dir=campaign_dir, total=len(tasks), skipped=skipped,
                           completed=state.done, failed=state.failed,
                           wall_s=time.perf_counter() - started,
                           outputs={k: str(v) for k, v in outputs.items()})


def _safe_assemble(report: Any, campaign_dir: Path, display: Display) -> None:
    try:
        report.write_results_table(campaign_dir)
    except Exception as exc:  # noqa: BLE001 - a table refresh must not stop the farm
        display.log(f"[yellow]could not refresh results.parquet:[/] {exc}")


def _leader_loop(world: Any, group_comm: Any, *, campaign_dir: Path, gpu: str | None) -> None:
    world.send({"rank": world.Get_rank()}, dest=0, tag=TAG_REQUEST)
    while True:
        message, tag = _wait_message(world, source=0)
        if tag == TAG_STOP:
            break
        task_dict, fresh = message
        for member in range(1, group_comm.Get_size()):
            group_comm.send(message, dest=member, tag=TAG_ASSIGN)
        result = run_task(Task.from_dict(task_dict), campaign_dir=campaign_dir, comm=group_comm,
                          fresh=fresh, gpu=gpu)
        world.send(_summary(result), dest=0, tag=TAG_DONE)
    for member in range(1, group_comm.Get_size()):
        group_comm.send(None, dest=member, tag=TAG_STOP)


def _member_loop(group_comm: Any, *, campaign_dir: Path, gpu: str | None) -> None:
    while True:
        message, tag = _wait_message(group_comm, source=0)
        if tag == TAG_STOP:
            break
        task_dict, fresh = message
        run_task(Task.from_dict(task_dict), campaign_dir=campaign_dir, comm=group_comm,
                 fresh=fresh, gpu=gpu)
