"""How ``mpirun -n N harness md`` uses its N ranks: the layout rule, in one place.

Rule (also in the README, section *MPI ranks, threads and the layout rule*):

1. **Domain decomposition** (LAMMPS on all N ranks) when the potential computes on every
   rank (native pair styles, e3gnn/parallel, pair_style mace's parallel mode) *and* each
   rank would own at least ``min_atoms_per_rank`` atoms (per family below; override with
   ``IONTRANSPORT_MIN_ATOMS_PER_RANK``; 0 = always decompose, fix-external models too,
   which is only useful to test the bridge's gather/scatter).
2. Otherwise **one computing rank**: LAMMPS runs on rank 0 with the whole cell and the
   other ranks' cores become rank 0's torch threads; the idle ranks sleep in a polling
   ``MPI_Ibarrier`` (no busy-wait) until it finishes. This covers cells too small to split
   and ``fix external`` models (CHGNet, MatterSim, DeePMD and MACE evaluators, SevenNet's
   ASE route), which evaluate on rank 0 whatever LAMMPS does. A warning says so and names
   ``harness bench`` (independent replicas, one per rank group) as the way to use N ranks
   on small cells. N ranks are then never slower than one, up to the ~ms start-up cost.
3. **Threads**: torch intra-op threads per computing rank = usable cores on the node
   (CPU affinity) // computing ranks on that node, at least 1, so ranks x threads never
   oversubscribes the cores. ``OMP_NUM_THREADS``, when the user set it, wins.

The decision and its reason go into the run manifest (``parallel_layout``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from potentials.external import sleeping_barrier  # noqa: F401  (re-exported for the workflow)

#: smallest atoms per rank for which domain decomposition beats one rank with all cores.
#: ML potentials: per-rank cost follows local atoms but each rank also pays its halo
#: (one interaction cutoff of ghost nodes) and a feature exchange per layer. On Li6PS5Cl
#: 2x2x2 (416 atoms, 208 per rank) 2 ranks beat 1 for mace-tiny-test and SevenNet-0
#: (benchmarks/md_scaling.py); 100 keeps the bundled 52-atom cell on one rank, where the
#: halo would exceed the local atoms. Classical pair styles cost microseconds per atom, so
#: MPI latency dominates until a few thousand atoms per rank.
MIN_ATOMS_PER_RANK: dict[str, int] = {"classical": 2000, "default": 100}
#: families whose models run in libtorch (their thread count is torch's)
TORCH_FAMILIES = frozenset({"sevennet", "mace", "chgnet", "mattersim", "deepmd"})
ENV_MIN_ATOMS = "IONTRANSPORT_MIN_ATOMS_PER_RANK"
#: set by the campaign farm: ranks of the whole job that work on this node. A task's LAMMPS
#: runs on its group's communicator, which cannot see the other groups computing beside it
ENV_NODE_WORKERS = "IONTRANSPORT_NODE_WORKERS"


@dataclass
class RankLayout:
    world_ranks: int
    lammps_ranks: int           # ranks LAMMPS runs on (1 = folded onto rank 0)
    torch_threads: int | None   # intra-op threads of each computing rank (None: no torch)
    threads_source: str         # "OMP_NUM_THREADS" or "usable cores // computing ranks"
    usable_cpus: int            # CPUs this process may run on (affinity)
    local_ranks: int            # ranks of this job on this node
    min_atoms_per_rank: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask; cgroup quotas are not visible here)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def min_atoms_per_rank(family: str) -> int:
    env = os.environ.get(ENV_MIN_ATOMS)
    if env is not None and env.strip():
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{ENV_MIN_ATOMS}={env!r} is not an integer; set a number of "
                             "atoms per rank (0 = always domain-decompose)") from None
        return max(0, value)
    return MIN_ATOMS_PER_RANK.get(family, MIN_ATOMS_PER_RANK["default"])


def decomposition_ranks(*, n_atoms: int, world_ranks: int, family: str) -> tuple[int, str]:
    """Ranks LAMMPS should span by the cell size alone (rule 1/2), with the reason."""
    floor = min_atoms_per_rank(family)
    if world_ranks <= 1:
        return 1, "1 MPI rank"
    if n_atoms >= floor * world_ranks:
        return world_ranks, (f"domain decomposition: {n_atoms} atoms / {world_ranks} ranks >= "
                             f"{floor} atoms per rank")
    return 1, (f"cell too small to split: {n_atoms} atoms / {world_ranks} ranks < {floor} "
               f"atoms per rank ({ENV_MIN_ATOMS} overrides); LAMMPS runs on rank 0 with all "
               f"cores, use `harness bench` (replicas) to use {world_ranks} ranks")


def plan_layout(*, world: Any, n_atoms: int, family: str, route: str,
                max_ranks: int | None, size_ranks: int, size_reason: str) -> RankLayout:
    """The final layout once the potential's setup is known (route and max_ranks)."""
    from mpi4py import MPI

    nranks = world.Get_size()
    lammps_ranks, reason = size_ranks, size_reason
    forced = os.environ.get(ENV_MIN_ATOMS, "").strip() == "0"
    if route == "external" and lammps_ranks > 1 and not forced:
        lammps_ranks, reason = 1, ("fix external model: it evaluates on rank 0 whatever LAMMPS "
                                   "does, so LAMMPS runs on rank 0 with all cores and the "
                                   "other ranks sleep")
    if max_ranks is not None and lammps_ranks > max_ranks:
        lammps_ranks, reason = max_ranks, (f"the potential runs on at most {max_ranks} rank(s); "
                                           "the other ranks' cores go to the computing rank(s)")
    shared = world.Split_type(MPI.COMM_TYPE_SHARED)
    local_ranks = shared.Get_size()
    computing_here = shared.allreduce(1 if world.Get_rank() < lammps_ranks else 0, op=MPI.SUM)
    shared.Free()
    cpus = usable_cpus()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads: int | None
    if env.isdigit() and int(env) > 0:
        threads, source = int(env), "OMP_NUM_THREADS"
    else:
        share, source = group_cpu_share(cpus, local_ranks)
        threads = max(1, share // max(1, computing_here))
        source += f" // computing ranks of this run on this node ({computing_here})"
    if family not in TORCH_FAMILIES:
        threads, source = None, f"{family}: no torch model"
    return RankLayout(world_ranks=nranks, lammps_ranks=lammps_ranks, torch_threads=threads,
                      threads_source=source, usable_cpus=cpus, local_ranks=local_ranks,
                      min_atoms_per_rank=min_atoms_per_rank(family), reason=reason)


def group_cpu_share(cpus: int, local_ranks: int) -> tuple[int, str]:
    """Cores of this node that belong to this run: all of them, or, inside a campaign
    farm (:data:`ENV_NODE_WORKERS` working ranks on the node, several tasks at once), the
    run's share ``cpus x local_ranks / node_workers`` (at least 1)."""
    text = os.environ.get(ENV_NODE_WORKERS, "").strip()
    workers = int(text) if text.isdigit() else 0
    if workers > local_ranks:
        share = max(1, cpus * local_ranks // workers)
        return share, (f"usable cores ({cpus}) x this task's ranks on the node ({local_ranks}) "
                       f"/ campaign ranks working on the node ({workers}) = {share}")
    return cpus, f"usable cores ({cpus})"


def apply_threads(layout: RankLayout) -> None:
    """Set torch's intra-op threads of this (computing) rank."""
    if layout.torch_threads is None:
        return
    import torch

    if torch.get_num_threads() != layout.torch_threads:
        torch.set_num_threads(layout.torch_threads)
