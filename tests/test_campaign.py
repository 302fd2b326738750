"""Campaign spec, presets, task expansion, seeds, references, GPU mapping and the tables
(no MD here: the farm under mpirun is tests/test_campaign_mpi.py)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.campaign.tasks import (OBELIX_SEED004_IDS, PRESETS, expand_tasks, load_campaign,
                              parse_campaign, stable_seed)
from harness.md.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent
OBELIX = ROOT.parent / "shared" / "data" / "obelix"
CAMPAIGNS = ROOT / "inputs" / "campaigns"


def spec_of(**values):
    base = {"structures": ["Li3N"], "potentials": ["lj-test"], "temperatures_K": [500]}
    base.update(values)
    return parse_campaign(base)


def test_seed004_preset_is_the_paper_protocol(tmp_path):
    tasks = expand_tasks(spec_of(preset="seed004", temperatures_K=None), campaign_dir=tmp_path)
    assert [t.temperature_K for t in tasks] == [800, 900, 1000, 1100, 1200]
    md = tasks[0].md
    assert md["supercell_min_length_A"] == 10.0 and md["ensemble"] == "nvt_nose_hoover"
    assert md["timestep_fs"] == 2.0 and md["steps"] * md["timestep_fs"] / 1000 == 100.0
    assert tasks[0].analysis["analysis_start_ps"] == 5.0
    assert tasks[0].analysis["msd_reliable_A2"] == 20.0 and tasks[0].analysis["T_eval_K"] == 300


def test_other_presets(tmp_path):
    s3 = expand_tasks(spec_of(preset="seed003", temperatures_K=None), campaign_dir=tmp_path)
    assert [t.temperature_K for t in s3] == [800, 1200]
    assert s3[0].md["minimize"] and s3[0].md["minimize_ftol_eV_per_A"] == 0.05
    assert s3[0].md["steps"] * 2 / 1000 == 50 and s3[0].analysis["fit_last_ps"] == 20
    s1 = expand_tasks(spec_of(preset="seed001", temperatures_K=None), campaign_dir=tmp_path)
    assert s1[0].md["supercell_matrix"] == [3, 3, 3] and s1[0].md["ensemble"] == "nvt_berendsen"
    assert s1[0].md["tdamp_fs"] == 200 and {t.temperature_K for t in s1} >= {300, 1100}
    npt = expand_tasks(spec_of(preset="seed001-npt"), campaign_dir=tmp_path)[0].md
    assert npt["ensemble"] == "npt_berendsen" and npt["pdamp_fs"] == 2000
    s2 = expand_tasks(spec_of(preset="seed002", replicas=3), campaign_dir=tmp_path)
    assert len(s2) == 3 and PRESETS["seed002"].replicas == 300
    with pytest.raises(SpecError, match="temperatures_K"):
        expand_tasks(spec_of(preset="seed002", temperatures_K=None), campaign_dir=tmp_path)


def test_override_precedence(tmp_path):
    spec = spec_of(preset="seed004", temperatures_K=[700],
                   md={"steps": 500, "dump_every": 10, "timestep_fs": 1.0},
                   analysis={"analysis_start_ps": 0.1},
                   structures=[{"name": "a", "file": "Li3N",
                                "md": {"supercell_matrix": [2, 2, 2], "steps": 300},
                                "analysis": {"kinisi_n_samples": 100}},
                               {"name": "b", "file": "Li2S", "temperatures_K": [600, 650]}],
                   potentials=["lj-test", {"name": "lj-test", "route": "external",
                                           "label": "ext"}])
    tasks = {t.task_id: t for t in expand_tasks(spec, campaign_dir=tmp_path)}
    assert sorted(tasks) == sorted(["a__lj-test__T700__r0", "a__ext__T700__r0",
                                    "b__lj-test__T600__r0", "b__lj-test__T650__r0",
                                    "b__ext__T600__r0", "b__ext__T650__r0"])
    a = tasks["a__ext__T700__r0"]
    # structure > campaign > preset; a supercell matrix replaces the preset's min length
    assert a.md["steps"] == 300 and a.md["timestep_fs"] == 1.0 and a.md["dump_every"] == 10
    assert a.md["supercell_matrix"] == [2, 2, 2] and a.md["supercell_min_length_A"] is None
    assert a.md["route"] == "external" and a.md["ensemble"] == "nvt_nose_hoover"
    assert a.analysis["analysis_start_ps"] == 0.1 and a.analysis["kinisi_n_samples"] == 100
    b = tasks["b__lj-test__T600__r0"]
    assert b.md["steps"] == 500 and b.md["supercell_min_length_A"] == 10.0
    assert b.md["out"] == str(tmp_path.resolve() / "tasks" / "b__lj-test__T600__r0")


def test_unknown_and_owned_keys_are_rejected(tmp_path):
    with pytest.raises(SpecError, match="unknown key 'temperature'"):
        parse_campaign({"structures": ["Li3N"], "potentials": ["lj-test"], "temperature": 5})
    with pytest.raises(SpecError, match="stepz"):
        expand_tasks(spec_of(md={"stepz": 3}), campaign_dir=tmp_path)
    with pytest.raises(SpecError, match="may not set temperature_K"):
        expand_tasks(spec_of(md={"temperature_K": 3}), campaign_dir=tmp_path)
    with pytest.raises(SpecError, match="MD spec of task"):
        expand_tasks(spec_of(md={"timestep_fs": -1}), campaign_dir=tmp_path)
    with pytest.raises(SpecError, match="unique"):
        expand_tasks(spec_of(potentials=["lj-test", "lj-test"]), campaign_dir=tmp_path)
    # temperatures that print alike would share a run directory
    with pytest.raises(SpecError, match="share the ID Li3N__lj-test__T500__r0"):
        expand_tasks(spec_of(temperatures_K=[500, 500.0000001]), campaign_dir=tmp_path)
    with pytest.raises(SpecError, match="reference_potential 'lj'.*lj-test"):
        expand_tasks(spec_of(references={"reference_potential": "lj"}), campaign_dir=tmp_path)
    # every MD route may be forced per potential, mliap included
    forced = expand_tasks(spec_of(potentials=[{"name": "lj-test", "route": "mliap"}]),
                          campaign_dir=tmp_path)
    assert forced[0].md["route"] == "mliap" and forced[0].potential_label == "lj-test-mliap"


def test_seeds_are_stable_and_shared_across_potentials(tmp_path):
    spec = spec_of(temperatures_K=[500, 600], replicas=2,
                   potentials=["lj-test", {"name": "lj-test", "route": "external"}])
    tasks = expand_tasks(spec, campaign_dir=tmp_path)
    again = expand_tasks(spec, campaign_dir=tmp_path / "elsewhere")
    assert [t.seed for t in tasks] == [t.seed for t in again]
    by_condition = {}
    for t in tasks:
        by_condition.setdefault((t.temperature_K, t.replica), set()).add(t.seed)
    assert all(len(s) == 1 for s in by_condition.values())  # same start for every potential
    assert len({next(iter(s)) for s in by_condition.values()}) == 4
    assert all(1 <= t.seed < 2**31 - 1 for t in tasks)
    # independent of Python's hash randomisation, and a pinned value
    code = ("from harness.campaign.tasks import stable_seed; print(stable_seed(7, 'Li3N__T500__r0'))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": h}
                           ).stdout.strip() for h in ("1", "2")}
    assert outs == {str(stable_seed(7, "Li3N__T500__r0"))}
    assert stable_seed(7, "Li3N__T500__r0") == 1 + int.from_bytes(
        __import__("hashlib").sha256("7\x1fLi3N__T500__r0".encode()).digest()[:8], "big") % (
        2**31 - 2)


def test_yaml_relative_paths_and_shipped_campaigns(tmp_path):
    (tmp_path / "s.cif").write_text((ROOT / "inputs" / "structures" / "Li2S.cif").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "name": "x", "structures": ["s.cif", "Li3N"], "potentials": ["lj-test"],
        "temperatures_K": [300], "out": "runs/x"}))
    spec = load_campaign(tmp_path / "c.yaml")
    tasks = expand_tasks(spec, campaign_dir=spec.out)
    assert tasks[0].structure == "s" and tasks[0].md["structure"] == str(tmp_path / "s.cif")
    assert tasks[1].md["structure"] == "Li3N" and spec.out == str(tmp_path / "runs" / "x")
    for path in sorted(CAMPAIGNS.glob("*.yaml")):
        overrides = {}
        if "obelix" in path.name:
            if not OBELIX.is_dir():
                continue
            overrides["benchmark_set"] = {"name": "obelix-seed004", "dir": str(OBELIX)}
        tasks = expand_tasks(load_campaign(path, overrides=overrides), campaign_dir=tmp_path)
        assert tasks, path


@pytest.mark.skipif(not OBELIX.is_dir(), reason="OBELiX subset not in ../shared/data/obelix")
def test_obelix_benchmark_set(tmp_path):
    spec = spec_of(preset="seed004", structures=[], temperatures_K=None,
                   benchmark_set={"name": "obelix-seed004", "dir": str(OBELIX)})
    tasks = expand_tasks(spec, campaign_dir=tmp_path)
    assert len(tasks) == 21 * 5 and "goi" not in {t.structure for t in tasks}
    assert {t.reference_id for t in tasks} == set(OBELIX_SEED004_IDS)
    with pytest.raises(SpecError, match="lacks"):
        expand_tasks(spec_of(structures=[], benchmark_set={"name": "obelix-seed004",
                                                           "dir": str(tmp_path)}),
                     campaign_dir=tmp_path)


# --- references -----------------------------------------------------------------------
def test_experimental_csv_bounds_and_matching(tmp_path):
    from harness.campaign.references import match_experimental, parse_conductivity, read_experimental_csv

    assert parse_conductivity("<1E-10") == (1e-10, "upper")
    assert parse_conductivity(" 2.6e-07 ") == (2.6e-7, None)
    assert parse_conductivity(">1e-3") == (1e-3, "lower")
    assert math.isnan(parse_conductivity("")[0])
    path = tmp_path / "exp.csv"
    path.write_text("ID,Reduced Composition,Ionic conductivity (S cm-1),Other\n"
                    "aa1,Li3N,1e-3,x\naa2,Li3N,2e-4,y\nbb1,LiX,<1E-10,z\ncc1,LiY,,w\n")
    table = read_experimental_csv(path)
    assert list(table["ID"]) == ["aa1", "aa2", "bb1"]
    assert table.set_index("ID").loc["bb1", "upper_bound"]
    found = match_experimental([{"name": "Li3N", "reference_id": "aa2"},
                                {"name": "Li3N-b"}, {"name": "LiX"}, {"name": "other"}],
                               table=table, inline=[{"structure": "other",
                                                     "sigma_S_per_cm": 3e-5}])
    assert found["Li3N"]["sigma_exp_S_per_cm"] == 2e-4
    assert "Li3N-b" not in found  # no ID, and the composition is ambiguous
    assert found["LiX"]["exp_upper_bound"] and found["other"]["sigma_exp_S_per_cm"] == 3e-5


@pytest.mark.skipif(not OBELIX.is_dir(), reason="OBELiX subset not in ../shared/data/obelix")
def test_obelix_csv():
    from harness.campaign.references import match_experimental, read_experimental_csv

    table = read_experimental_csv(OBELIX / "seed004_materials.csv").set_index("ID")
    assert len(table) == 22
    assert table.loc["47i", "upper_bound"] and table.loc["47i", "sigma_S_per_cm"] == 1e-10
    assert table.loc["gvd", "sigma_S_per_cm"] == pytest.approx(5.767e-4)
    found = match_experimental([{"name": "Li3N", "reference_id": "gvd"}, {"name": "Li7P3S11"}],
                               table=table.reset_index())
    assert found["Li3N"]["reference_id"] == "gvd" and found["Li7P3S11"]["reference_id"] == "mdp"


def test_reference_csv(tmp_path):
    from harness.campaign.references import ReferenceError, read_reference_csv

    path = tmp_path / "aimd.csv"
    path.write_text("# AIMD\nstructure,temperature_K,D_cm2_per_s,Ea_eV\nA,800,1e-5,\n"
                    "A,1200,1e-4,\nB,,,0.3\n")
    D, Ea = read_reference_csv(path)
    assert len(D) == 2 and list(Ea["structure"]) == ["B"] and Ea["Ea_eV"][0] == 0.3
    bad = tmp_path / "bad.csv"
    bad.write_text("structure,foo\nA,1\n")
    with pytest.raises(ReferenceError):
        read_reference_csv(bad)


# --- farm helpers -------------------------------------------------------------------------
def test_gpu_mapping_without_a_gpu():
    from harness.campaign.farm import gpu_for_local_rank, node_gpus

    assert [gpu_for_local_rank(r, ["0", "1"]) for r in range(5)] == ["0", "1", "0", "1", "0"]
    assert gpu_for_local_rank(3, []) is None
    assert node_gpus("auto", environ={"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert node_gpus("auto", environ={"CUDA_VISIBLE_DEVICES": ""}) == []
    assert node_gpus(4, environ={}) == ["0", "1", "2", "3"]
    assert node_gpus("none", environ={"CUDA_VISIBLE_DEVICES": "0"}) == []
    # a node with 2 GPUs (CUDA_VISIBLE_DEVICES 4,7) and 6 local ranks: 3 ranks per GPU
    gpus = node_gpus("auto", environ={"CUDA_VISIBLE_DEVICES": "4,7"})
    assert [gpu_for_local_rank(r, gpus) for r in range(6)] == ["4", "7"] * 3


def test_worker_groups():
    from harness.campaign.farm import worker_groups

    assert worker_groups(1, ranks_per_task=1, scheduler_works=False) == [[0]]
    assert worker_groups(4, ranks_per_task=1, scheduler_works=True) == [[0], [1], [2], [3]]
    assert worker_groups(4, ranks_per_task=1, scheduler_works=False) == [[1], [2], [3]]
    assert worker_groups(5, ranks_per_task=2, scheduler_works=True) == [[0, 1], [2, 3]]
    assert worker_groups(3, ranks_per_task=4, scheduler_works=True) == [[0, 1, 2]]


def test_fit_last_ps_window(tmp_path):
    from harness.campaign.farm import _analysis_kwargs

    spec = spec_of(md={"steps": 2500, "dump_every": 10},
                   analysis={"fit_last_ps": 2.0, "rdf_last_ps": 1.0, "analysis_start_ps": 1.0,
                             "kinisi_n_samples": 50})
    task = expand_tasks(spec, campaign_dir=tmp_path)[0]
    kwargs, notes = _analysis_kwargs(task)
    # 5 ps of production, 1 ps discarded: 4 ps analysed; fit the last 2 ps of lag time
    assert kwargs["fit_start_ps"] == pytest.approx(2.0) and kwargs["fit_end_ps"] == pytest.approx(4.0)
    assert kwargs["rdf_window_ps"] == pytest.approx((3.0, 4.0)) and kwargs["n_samples"] == 50
    assert kwargs["seed"] == task.seed and not notes


# --- tables from hand-made results --------------------------------------------------------
def _fake_result(task, *, D, msd_max, status="completed", kind=None, ms=2.0):
    from harness.campaign.farm import failure_category

    transport = None
    if status == "completed":
        transport = {"species": "Li", "n_ions": 48, "volume_A3": 1000.0, "D_cm2_per_s": D,
                     "D_ci95_cm2_per_s": [0.9 * D, 1.1 * D], "sigma_NE_mS_per_cm": 1.0,
                     "sigma_NE_ci95_mS_per_cm": [0.9, 1.1], "msd_max_A2": msd_max,
                     "fit_window_ps": [0.1, 1.0], "flags": []}
    return {"task_id": task.task_id, "status": status, "stage": None if kind is None else "md",
            "failure_kind": kind, "failure_category": failure_category(kind), "error": kind,
            "task": task.as_dict(), "transport": transport,
            "md": {"n_atoms": 100, "ms_per_step": ms, "atom_steps_per_s": 100 * 1000 / ms},
            "cost": {"cpu_hours": 0.01, "gpu_hours": 0.0, "task_wall_s": 36.0}}


def test_summary_metrics_and_report_from_known_numbers(tmp_path):
    from analysis.units import KB_EV_PER_K, nernst_einstein_mS_per_cm
    from harness.campaign.farm import prepare_campaign_dir, task_dir
    from harness.campaign.report import write_report
    from harness.md.rundir import atomic_write_json

    Ea, D0 = 0.4, 1e-2
    spec = spec_of(temperatures_K=[800, 1000, 1200], structures=["Li3N", "Li2S"],
                   potentials=["lj-test", {"name": "lj-test", "route": "external",
                                           "label": "ext"}],
                   references={"experimental": [{"structure": "Li3N", "sigma_S_per_cm": 1e-3}],
                               "reference_potential": "lj-test"})
    tasks = expand_tasks(spec, campaign_dir=tmp_path)
    prepare_campaign_dir(spec, tasks, tmp_path)
    for t in tasks:
        D = D0 * math.exp(-Ea / (KB_EV_PER_K * t.temperature_K))
        if t.potential_label == "ext":
            D *= 10.0  # one order of magnitude above the reference at every T
        if t.structure == "Li2S" and t.temperature_K == 1200 and t.potential_label == "ext":
            result = _fake_result(t, D=D, msd_max=0, status="failed", kind="framework_melting")
        elif t.structure == "Li2S" and t.temperature_K == 800:
            result = _fake_result(t, D=D, msd_max=5.0)  # below 20 A^2: no diffusion
        else:
            result = _fake_result(t, D=D, msd_max=50.0)
        atomic_write_json(task_dir(tmp_path, t.task_id) / "result.json", result)
    paths = write_report(tmp_path)
    import pandas as pd

    summary = pd.read_csv(paths["summary"]).set_index(["potential_label", "structure"])
    ref = summary.loc[("lj-test", "Li3N")]
    assert ref["Ea_eV"] == pytest.approx(Ea, rel=1e-9)
    D300 = D0 * math.exp(-Ea / (KB_EV_PER_K * 300))
    assert ref["D_eval_cm2_per_s"] == pytest.approx(D300, rel=1e-9)
    sigma300 = nernst_einstein_mS_per_cm(D300, n_ions=48, volume_A3=1000.0, temperature_K=300)
    assert ref["sigma_eval_mS_per_cm"] == pytest.approx(sigma300, rel=1e-9)
    assert ref["log10_error_sigma"] == pytest.approx(math.log10(sigma300 / 1000 / 1e-3))
    assert ref["reliability_count"] == 3 and ref["reliable"]
    li2s = summary.loc[("ext", "Li2S")]
    assert li2s["reliability_count"] == 1 and not li2s["reliable"]
    assert li2s["fail_melting"] == 1 and li2s["fail_no_diffusion"] == 1
    metrics = pd.read_csv(paths["metrics"]).set_index("potential_label")
    assert metrics.loc["ext", "MAE_log10_D_ref"] == pytest.approx(1.0)
    assert metrics.loc["ext", "ME_log10_D_ref"] == pytest.approx(1.0)
    assert metrics.loc["ext", "MAE_Ea_ref_eV"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.loc["lj-test", "MAE_log10_D_ref"] == 0
    assert metrics.loc["ext", "MAE_log10_sigma_exp"] == pytest.approx(
        abs(math.log10(10 * sigma300 / 1000 / 1e-3)))
    assert metrics.loc["ext", "n_exp_reliable"] == 1
    assert metrics.loc["ext", "fail_melting"] == 1 and metrics.loc["lj-test", "fail_no_diffusion"] == 1
    assert metrics.loc["lj-test", "ms_per_step_median"] == 2.0
    results = pd.read_parquet(tmp_path / "results.parquet")
    assert len(results) == 12 and set(results["status"]) == {"completed", "failed"}
    assert json.loads(results["md_spec_json"][0])["temperature_K"] == 800
    md = paths["report_md"].read_text()
    for title in ("Per-potential metrics", "Failures by category", "Cost", "Failed tasks"):
        assert f"## {title}" in md
    html = paths["report_html"].read_text()
    assert "parity_sigma.png" in html and "arrhenius_Li3N.png" in html
    assert (tmp_path / "report" / "parity_sigma.png").stat().st_size > 1000


def test_reference_trajectories_cache_per_file_and_settings(tmp_path):
    """Two AIMD files of one name, structure and T, or changed fit settings, never share a
    cached analysis; the same entry again is read from the cache."""
    from ase import Atoms
    from ase.io import write

    from analysis.synthetic import brownian
    from harness.campaign.references import analyse_reference_trajectories

    paths = []
    for k, D in enumerate((0.05, 0.5)):
        traj = brownian(n_ions=8, n_frames=150, frame_interval_ps=0.1, D_A2_per_ps=D,
                        n_framework=4, box_A=8.0, seed=k)
        wrapped, _ = traj.wrapped()
        path = tmp_path / f"run{k}" / "traj.extxyz"
        path.parent.mkdir()
        write(str(path), [Atoms(traj.symbols, positions=wrapped[f], cell=traj.cells[f],
                                pbc=True) for f in range(len(wrapped))], format="extxyz")
        paths.append(path)
    entry = {"structure": "Li3N", "temperature_K": 600.0, "frame_interval_fs": 100.0,
             "fit_start_ps": 1.0, "fit_end_ps": 10.0}
    out = tmp_path / "refs"
    slow, fast = analyse_reference_trajectories(
        [{**entry, "path": str(paths[0])}, {**entry, "path": str(paths[1])}], out_dir=out)
    assert slow["analysis_dir"] != fast["analysis_dir"]
    assert fast["D_cm2_per_s"] > 3 * slow["D_cm2_per_s"]
    refit, = analyse_reference_trajectories([{**entry, "path": str(paths[0]),
                                              "fit_end_ps": 5.0}], out_dir=out)
    assert refit["analysis_dir"] not in (slow["analysis_dir"], fast["analysis_dir"])
    cached = Path(slow["analysis_dir"]) / "transport.json"
    stamp = cached.stat().st_mtime_ns
    again, = analyse_reference_trajectories([{**entry, "path": str(paths[0])}], out_dir=out)
    assert again == slow and cached.stat().st_mtime_ns == stamp
