"""`harness md` run directories (manifest contract), ASE-readable trajectories (extxyz,
XDATCAR), the transport.json output contract, and reliability flags."""

import json

import numpy as np
import pytest
from _analysis_helpers import FAST, make_run_dir

from analysis.analyzer import TransportAnalyzer
from analysis.synthetic import brownian
from harness.analyze import run_analyze

CONTRACT_KEYS = {"species", "temperature_K", "n_ions", "volume_A3", "D_cm2_per_s",
                 "D_ci95_cm2_per_s", "D_ols_cm2_per_s", "sigma_NE_mS_per_cm",
                 "sigma_NE_ci95_mS_per_cm", "D_charge_cm2_per_s", "sigma_charge_mS_per_cm",
                 "haven_ratio", "msd_max_A2", "fit_window_ps", "flags"}


@pytest.fixture(scope="module")
def traj():
    return brownian(n_ions=24, n_frames=500, frame_interval_ps=0.1, D_A2_per_ps=1.0,
                    noise_A=0.1, n_framework=16, box_A=10.0, seed=4)


def test_run_dir_contract_and_outputs(tmp_path, traj):
    run = make_run_dir(tmp_path / "run", traj, timestep_fs=2.0, dump_every=50,
                       temperature_K=900.0, analysis_start_ps=5.0)
    result = run_analyze(run_dir=run, plots=True)
    out = run / "analysis"
    assert CONTRACT_KEYS <= set(result)
    on_disk = json.loads((out / "transport.json").read_text())
    # the file holds exactly what the call returned, plus the list of files it wrote
    assert {k: v for k, v in on_disk.items() if k != "outputs"} == \
        json.loads(json.dumps(result))
    assert set(on_disk["outputs"]) == {p.name for p in out.iterdir()}
    assert result["temperature_K"] == 900.0  # from the manifest's spec
    assert result["frames_discarded"] == 50 and result["n_frames"] == 450  # 5 ps discarded
    assert result["analysis_start_ps"] == 5.0
    assert result["species"] == "Li" and result["n_ions"] == 24
    assert len(result["D_ci95_cm2_per_s"]) == 2 and len(result["fit_window_ps"]) == 2
    assert result["fit_window_ps"] == pytest.approx([4.5, 22.45], abs=0.06)  # [10 %, 50 %]
    for name in ("msd.csv", "vanhove_self.npz", "vanhove_distinct.npz", "rdf.csv",
                 "density.cube", "CHGCAR_density", "msd.png", "vanhove.png", "rdf.png"):
        assert (out / name).is_file(), name
    table = np.loadtxt(out / "msd.csv", delimiter=",", comments="#", skiprows=2)
    header = (out / "msd.csv").read_text().splitlines()[1].split(",")
    assert header == ["time_ps", "msd_x_A2", "msd_y_A2", "msd_z_A2", "msd_A2", "n_obs",
                      "mscd_A2"]
    assert table.shape == (450, 7)
    # the MSD column against the exact all-origins MSD of the known positions (frames from
    # 5 ps on, framework drift removed; dump precision 1e-10 A)
    truth = traj.unwrapped[50:] - traj.unwrapped[50:, 24:].mean(axis=1, keepdims=True)
    x = truth[:, :24]
    for k in (1, 40, 300):
        direct = np.mean(np.sum((x[k:] - x[:-k]) ** 2, axis=2))
        assert table[k, 4] == pytest.approx(direct, rel=1e-5), k
    assert table[40, 1:4].sum() == pytest.approx(table[40, 4], rel=1e-6)
    assert result["D_ci95_cm2_per_s"][0] < traj.D_cm2_per_s < result["D_ci95_cm2_per_s"][1]


def test_run_dir_lost_atoms_in_log_is_flagged(tmp_path, traj):
    run = make_run_dir(tmp_path / "run", traj, timestep_fs=2.0, dump_every=50)
    (run / "log.lammps").write_text("WARNING: Lost atoms: original 40 current 39\n")
    result = TransportAnalyzer.from_run_dir(run, compute_distinct=False, compute_rdf=False,
                                            **FAST).run().as_dict()
    assert "lost_atoms" in result["flags"]


@pytest.mark.parametrize("fmt", ["extxyz", "vasp-xdatcar"])
def test_ase_trajectories_match_array_input(tmp_path, traj, fmt):
    from ase import Atoms
    from ase.io import write

    wrapped, images = traj.wrapped()
    frames = [Atoms(traj.symbols, positions=wrapped[f], cell=traj.cells[f], pbc=True)
              for f in range(200)]
    path = tmp_path / ("XDATCAR" if fmt == "vasp-xdatcar" else "traj.extxyz")
    write(str(path), frames, format=fmt)
    result = run_analyze(trajectory=path, frame_interval_fs=100.0, temperature_K=800.0,
                         out=tmp_path / "out", plots=False)
    reference = TransportAnalyzer.from_arrays(
        wrapped[:200], symbols=traj.symbols, cells=traj.cells[:200], frame_interval_fs=100.0,
        temperature_K=800.0).run().as_dict()
    assert result["msd_max_A2"] == pytest.approx(reference["msd_max_A2"], rel=1e-6)
    # file precision (1e-8) changes the MCMC path: agreement to Monte Carlo noise
    assert result["D_cm2_per_s"] == pytest.approx(reference["D_cm2_per_s"], rel=0.02)
    assert result["D_ols_cm2_per_s"] == pytest.approx(reference["D_ols_cm2_per_s"], rel=1e-6)
    assert result["source"]["input"] == "ase"


def test_reliability_flags(traj):
    slow = brownian(n_ions=16, n_frames=120, frame_interval_ps=0.05, D_A2_per_ps=0.01,
                    noise_A=0.2, n_framework=16, box_A=10.0, seed=1)
    melt = slow.unwrapped.copy()
    steps = np.random.default_rng(0).normal(scale=0.5, size=(120, 16, 3)).cumsum(axis=0)
    melt[:, 16:] += steps  # the framework diffuses
    result = TransportAnalyzer.from_arrays(
        melt, symbols=slow.symbols, cells=slow.cells, frame_interval_fs=50.0,
        temperature_K=600.0, compute_distinct=False, **FAST).run().as_dict()
    flags = set(result["flags"])
    assert {"msd_below_20A2", "framework_diffusing", "fit_window_short"} <= flags
    assert all(code in result["flag_details"] for code in flags)
    assert "20 A^2" in result["flag_details"]["msd_below_20A2"]
    # a healthy run raises none of them
    good = TransportAnalyzer.from_arrays(
        traj.unwrapped, symbols=traj.symbols, cells=traj.cells, frame_interval_fs=100.0,
        temperature_K=600.0, compute_distinct=False, compute_rdf=False, **FAST).run().as_dict()
    # (one charge series over 50 ps of 24 ions is too noisy for D_charge, and says so)
    assert [f for f in good["flags"] if not f.startswith(("charge_", "D_charge", "haven_"))] == []
    assert set(good["flags"]) <= {"D_charge_uncertain"}
