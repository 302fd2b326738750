"""ASE's read/iread/write are 'parallel functions': once mpi4py is imported, rank 0 does the
I/O and broadcasts over COMM_WORLD. In a campaign farm every rank runs its own task, so each
ASE call here must pass parallel=False. Caught live: a farm rank writing a CHGCAR after its
analysis spun in MPI_Bcast until the other rank's 60-minute MD reached a write too (and an
iread would have handed rank 1 rank 0's frames)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MPIRUN = Path(sys.executable).parent / "mpirun"
pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(not MPIRUN.exists(), reason="no mpirun next to the venv python")]

SCRIPT = r'''
import sys, time
from pathlib import Path
from mpi4py import MPI
import numpy as np
from ase.build import bulk
import ase.io

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
tmp = Path(sys.argv[1])
# each rank its own trajectory: different lattice constants
frames = [bulk("Li", "bcc", a=3.0 + rank, cubic=True) for _ in range(3)]
ase.io.write(tmp / f"r{rank}.extxyz", frames, format="extxyz", parallel=False)
comm.Barrier()
if rank == 0:
    time.sleep(8.0)          # "a long MD": no collective call for a while
    print("R0 done", flush=True)
else:
    t0 = time.perf_counter()
    from analysis.density import chgcar_text
    from analysis.readers import AseSource
    from harness.statics.parity import ParitySpec, read_frames

    text = chgcar_text(frames[0], np.ones((2, 2, 2)))
    got = [float(a.cell[0, 0]) for a in AseSource(tmp / "r1.extxyz", frame_interval_fs=1.0)._iter_atoms()]
    ref = read_frames(ParitySpec(frames=[str(tmp / "r1.extxyz")], potential="lj-test"))
    print("R1", round(time.perf_counter() - t0, 2), got, float(ref[0]["atoms"].cell[0, 0]),
          flush=True)
'''


def test_ase_io_in_one_rank_does_not_wait_for_the_others(tmp_path):
    script = tmp_path / "io.py"
    script.write_text(SCRIPT)
    out = subprocess.run([str(MPIRUN), "-n", "2", sys.executable, str(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("R1"))
    seconds = float(line.split()[1])
    assert seconds < 6.0, line   # did not wait for rank 0's 8 s
    assert "[4.0, 4.0, 4.0] 4.0" in line   # rank 1 read its own file (a = 3 + 1), not rank 0's
