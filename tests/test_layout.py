"""The rank/thread layout rule of ``mpirun -n N harness md`` (harness/md/layout.py) and
the sleeping waits that keep idle ranks off the cores (potentials/external.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.md.layout import decomposition_ranks, plan_layout, usable_cpus

MPIRUN = Path(sys.executable).parent / "mpirun"
HARNESS = Path(sys.executable).parent / "harness"


def test_small_cells_fold_onto_one_rank(monkeypatch):
    monkeypatch.delenv("IONTRANSPORT_MIN_ATOMS_PER_RANK", raising=False)
    ranks, reason = decomposition_ranks(n_atoms=52, world_ranks=2, family="sevennet")
    assert ranks == 1 and "harness bench" in reason and "52 atoms" in reason
    assert decomposition_ranks(n_atoms=416, world_ranks=2, family="mace")[0] == 2
    assert decomposition_ranks(n_atoms=416, world_ranks=2, family="classical")[0] == 1
    assert decomposition_ranks(n_atoms=5000, world_ranks=2, family="classical")[0] == 2
    monkeypatch.setenv("IONTRANSPORT_MIN_ATOMS_PER_RANK", "0")
    assert decomposition_ranks(n_atoms=52, world_ranks=2, family="sevennet")[0] == 2
    monkeypatch.setenv("IONTRANSPORT_MIN_ATOMS_PER_RANK", "lots")
    with pytest.raises(ValueError, match="IONTRANSPORT_MIN_ATOMS_PER_RANK"):
        decomposition_ranks(n_atoms=52, world_ranks=2, family="sevennet")


def test_threads_and_external_models(monkeypatch):
    from mpi4py import MPI

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    layout = plan_layout(world=MPI.COMM_WORLD, n_atoms=500, family="mace", route="native",
                         max_ranks=None, size_ranks=1, size_reason="1 MPI rank")
    assert layout.torch_threads == usable_cpus() and layout.lammps_ranks == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    layout = plan_layout(world=MPI.COMM_WORLD, n_atoms=500, family="mace", route="native",
                         max_ranks=None, size_ranks=1, size_reason="1 MPI rank")
    assert layout.torch_threads == 3 and layout.threads_source == "OMP_NUM_THREADS"
    # a fix-external model never spans ranks, whatever the cell size allows
    layout = plan_layout(world=MPI.COMM_WORLD, n_atoms=5000, family="chgnet", route="external",
                         max_ranks=None, size_ranks=2, size_reason="domain decomposition")
    assert layout.lammps_ranks == 1 and "fix external" in layout.reason
    layout = plan_layout(world=MPI.COMM_WORLD, n_atoms=5000, family="classical", route="native",
                         max_ranks=None, size_ranks=1, size_reason="")
    assert layout.torch_threads is None


def test_campaign_workers_share_the_node_cores(monkeypatch):
    """Inside `mpirun -n N harness bench` each task's LAMMPS sees only its group's
    communicator; the farm says how many ranks work on the node, and each task takes its
    share of the cores (two 1-rank tasks on 2 cores: 1 thread each, not 2 + 2)."""
    from mpi4py import MPI

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = usable_cpus()
    for workers, expected in ((1, cpus), (2, max(1, cpus // 2)), (4 * cpus, 1)):
        monkeypatch.setenv("IONTRANSPORT_NODE_WORKERS", str(workers))
        layout = plan_layout(world=MPI.COMM_WORLD, n_atoms=500, family="sevennet",
                             route="native", max_ranks=None, size_ranks=1,
                             size_reason="1 MPI rank")
        assert layout.torch_threads == expected, (workers, layout)
    assert "campaign ranks working on the node (" in layout.threads_source


WORKERS_SCRIPT = r'''
import os
from mpi4py import MPI
from harness.campaign.farm import node_workers
comm = MPI.COMM_WORLD
n = node_workers(comm, working=comm.Get_rank() != 0)   # rank 0 as a pure scheduler
all_n = node_workers(comm, working=True)
if comm.Get_rank() == 0:
    print("WORKERS", n, all_n)
'''


@pytest.mark.mpi
@pytest.mark.skipif(not MPIRUN.exists(), reason="no mpirun next to the venv python")
def test_farm_counts_the_working_ranks_of_the_node(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    out = subprocess.run([str(MPIRUN), "-n", "3", sys.executable, str(script)],
                         capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "WORKERS 2 3" in out.stdout


SPIN_SCRIPT = r'''
import sys, time
from mpi4py import MPI
from potentials.external import sleeping_barrier
comm = MPI.COMM_WORLD
kind = sys.argv[1]
cpu0 = time.process_time()
if comm.Get_rank() == 0:
    time.sleep(2.0)          # "rank 0 evaluates the model"
if kind == "sleeping":
    sleeping_barrier(comm)
else:
    comm.Barrier()
cpu = comm.gather(time.process_time() - cpu0, root=0)
if comm.Get_rank() == 0:
    print("CPU", cpu[1])
'''


@pytest.mark.mpi
@pytest.mark.skipif(not MPIRUN.exists(), reason="no mpirun next to the venv python")
def test_waiting_ranks_sleep_instead_of_spinning(tmp_path):
    """MPICH busy-polls in MPI_Barrier: a rank waiting 2 s burns ~2 s of CPU. The
    sleeping barrier used by the fix-external bridge and for folded runs burns almost none."""
    script = tmp_path / "spin.py"
    script.write_text(SPIN_SCRIPT)
    cpu = {}
    for kind in ("sleeping", "blocking"):
        out = subprocess.run([str(MPIRUN), "-n", "2", sys.executable, str(script), kind],
                             capture_output=True, text=True, timeout=120, check=True,
                             env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        cpu[kind] = float(out.stdout.split("CPU")[1])
    print(cpu)
    assert cpu["sleeping"] < 0.3, cpu
    assert cpu["blocking"] > 3 * cpu["sleeping"], cpu   # shows what is being avoided


@pytest.mark.mpi
@pytest.mark.skipif(not MPIRUN.exists(), reason="no mpirun next to the venv python")
def test_harness_md_folds_a_small_cell_and_records_it(tmp_path):
    """52-atom Li6PS5Cl on 2 ranks with a classical potential: LAMMPS on rank 0 only, the
    reason and the thread choice in the manifest, a warning naming `harness bench`."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "IONTRANSPORT_MIN_ATOMS_PER_RANK")}
    result = subprocess.run(
        [str(MPIRUN), "-n", "2", str(HARNESS), "md", "Li6PS5Cl", "--potential", "lj-test",
         "--temperature-K", "300", "--steps", "20", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    layout = manifest["parallel_layout"]
    assert layout["world_ranks"] == 2 and layout["lammps_ranks"] == 1
    assert manifest["lammps"]["ranks"] == 1
    assert "too small" in layout["reason"]
    assert "harness bench" in result.stderr
