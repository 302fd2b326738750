"""The campaign farm for real: `mpirun -n 2 harness bench`, SIGKILL half-way, re-run.

The campaign is inputs/campaigns/ci.yaml (2 structures x 2 potentials x 3 temperatures,
lj-test through LAMMPS' lj/cut and through the fix-external bridge) plus one structure whose
watchdog bound is set to fail, so a failing task is recorded while the rest go on.

* a serial run (`harness bench`, one process) is the reference;
* `mpirun -n 2` is killed (SIGKILL of the whole process group) once some tasks have finished
  and another is in the middle of its MD, then the same command is run again: finished tasks
  are not touched (result, trajectory mtimes), the interrupted MD continues from its restart
  file, and every per-task number equals the serial run's (same seeds, exact continuation);
* the report is complete.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MPIRUN = Path(sys.executable).parent / "mpirun"
OBELIX_CSV = ROOT.parent / "shared" / "data" / "obelix" / "seed004_materials.csv"
pytestmark = [pytest.mark.mpi, pytest.mark.timeout(900),
              pytest.mark.skipif(not MPIRUN.exists(), reason="mpich wheel's mpirun not in venv")]

COMPARED = ["status", "failure_kind", "seed", "n_atoms", "D_cm2_per_s", "D_ci95_lo",
            "D_ci95_hi", "D_ols_cm2_per_s", "sigma_NE_mS_per_cm", "msd_max_A2", "haven_ratio",
            "fit_start_ps", "fit_end_ps", "flags"]


@pytest.fixture(scope="module")
def campaign_yaml(tmp_path_factory):
    spec = yaml.safe_load((ROOT / "inputs" / "campaigns" / "ci.yaml").read_text())
    spec["structures"].append({"name": "Li2S-hot", "file": "Li2S", "temperatures_K": [300],
                               "md": {"supercell_matrix": [2, 1, 1],
                                      "max_temperature_factor": 1.01}})
    spec["references"]["experimental"] = [
        {"structure": "Li2S", "sigma_S_per_cm": 1.0e-9, "source": "synthetic test value"}]
    path = tmp_path_factory.mktemp("yaml") / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def bench_cmd(campaign_yaml, out, *, ranks, extra=()):
    cmd = [sys.executable, "-m", "harness.cli", "bench", str(campaign_yaml), "--out", str(out),
           "--quiet", *extra]
    return [str(MPIRUN), "-n", str(ranks), *cmd] if ranks > 1 else cmd


def run_bench(campaign_yaml, out, *, ranks, extra=()):
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_FAULT_KILL_AT_STEP"}
    result = subprocess.run(bench_cmd(campaign_yaml, out, ranks=ranks, extra=extra), env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    result.stdout = " ".join(result.stdout.split())
    return result


def results(out):
    import pandas as pd

    return pd.read_parquet(out / "results.parquet").set_index("task_id").sort_index()


def task_ids(out):
    return [t["task_id"] for t in json.loads((out / "tasks.json").read_text())]


@pytest.fixture(scope="module")
def serial(campaign_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "campaign"
    run_bench(campaign_yaml, out, ranks=1, extra=["--no-report"])
    return out


def _state(out):
    finished, running = [], []
    for task in (out / "tasks").glob("*"):
        if (task / "result.json").is_file():
            finished.append(task.name)
        elif (task / "manifest.json").is_file():
            try:
                manifest = json.loads((task / "manifest.json").read_text())
            except ValueError:
                continue
            if manifest.get("status") == "running" and manifest.get("last_restart_step"):
                running.append(task.name)
    return finished, running


def test_serial_campaign_records_failure_and_goes_on(serial):
    table = results(serial)
    assert len(table) == 14
    hot = table.loc["Li2S-hot__lj-test__T300__r0"]
    assert hot["status"] == "failed" and hot["failure_kind"] == "temperature_runaway"
    assert hot["failure_category"] == "md_blowup" and "303 K" in hot["error"]
    others = table.drop(index=[t for t in table.index if t.startswith("Li2S-hot")])
    assert (others["status"] == "completed").all()
    assert (others["D_cm2_per_s"] > 0).all() and others["ms_per_step"].notna().all()
    summary = (serial / "summary.csv").read_text()
    assert "Li3N" in summary and "lj-test-ext" in summary


def test_sigkill_mpirun_then_rerun_recomputes_nothing_and_matches_serial(campaign_yaml, serial,
                                                                          tmp_path):
    out = tmp_path / "campaign"
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_FAULT_KILL_AT_STEP"}
    proc = subprocess.Popen(bench_cmd(campaign_yaml, out, ranks=2, extra=["--no-report"]),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 400
    try:
        while True:
            finished, running = _state(out) if (out / "tasks").is_dir() else ([], [])
            if len(finished) >= 3 and running:
                break
            assert proc.poll() is None, "campaign ended before it could be interrupted: " + \
                proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no interruption point reached"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mpirun, its proxies and both ranks
        proc.wait(timeout=60)
    time.sleep(0.5)
    finished, interrupted = _state(out)
    assert finished and interrupted
    before = {t: ((out / "tasks" / t / "result.json").stat().st_mtime_ns,
                  (out / "tasks" / t / "manifest.json").stat().st_mtime_ns)
              for t in finished}
    assert all(json.loads((out / "tasks" / t / "manifest.json").read_text())["status"]
               == "running" for t in interrupted)

    rerun = run_bench(campaign_yaml, out, ranks=2)
    assert f"{len(finished)} finished earlier" in rerun.stdout
    for t, stamps in before.items():  # nothing finished is recomputed
        assert ((out / "tasks" / t / "result.json").stat().st_mtime_ns,
                (out / "tasks" / t / "manifest.json").stat().st_mtime_ns) == stamps, t
    for t in interrupted:  # the killed MD continued from its last restart file
        result = json.loads((out / "tasks" / t / "result.json").read_text())
        manifest = json.loads((out / "tasks" / t / "manifest.json").read_text())
        assert result["status"] == "completed" and result["md"]["resumed_from_step"] >= 100
        assert len(manifest["segments"]) == 2 and manifest["status"] == "completed"

    # nothing lost: every task is there, and -n 2 with a kill == -n 1 without one
    mpi, ref = results(out), results(serial)
    assert list(mpi.index) == sorted(task_ids(out)) == list(ref.index)
    assert (mpi["status"] != "pending").all()
    import pandas as pd

    pd.testing.assert_frame_equal(mpi[COMPARED], ref[COMPARED], check_exact=True)
    for t in mpi.index:
        for name in ("thermo.csv", "traj.lammpstrj"):
            mine, theirs = out / "tasks" / t / name, serial / "tasks" / t / name
            if theirs.is_file():
                assert mine.read_bytes() == theirs.read_bytes(), (t, name)
    assert set(mpi["worker_rank"].dropna().astype(int)) == {0, 1}

    # the report is complete
    report = out / "report"
    md = (report / "report.md").read_text()
    for title in ("Per-potential metrics", "Failures by category", "Cost",
                  "Per potential x structure", "Per temperature", "Failed tasks"):
        assert f"## {title}" in md
    assert "Li2S-hot__lj-test__T300__r0" in md and "temperature_runaway" in md
    html = (report / "report.html").read_text()
    for png in ("parity_sigma.png", "arrhenius_Li3N.png", "arrhenius_Li2S.png", "msd_Li2S.png",
                "msd_Li3N.png"):
        assert (report / png).stat().st_size > 1000 and png in html
    metrics = pd.read_csv(out / "metrics.csv").set_index("potential_label")
    # the external route of the same LJ against the native one: D(T) agree closely
    assert metrics.loc["lj-test-ext", "MAE_log10_D_ref"] < 0.05
    assert metrics.loc["lj-test", "fail_md_blowup"] == 1


def test_rerun_skips_finished_and_retries_failed_on_request(campaign_yaml, serial):
    hot = serial / "tasks" / "Li2S-hot__lj-test__T300__r0" / "result.json"
    done = serial / "tasks" / "Li3N__lj-test__T300__r0" / "result.json"
    stamps = hot.stat().st_mtime_ns, done.stat().st_mtime_ns
    again = run_bench(campaign_yaml, serial, ranks=1, extra=["--no-report"])
    assert "14 finished earlier" in again.stdout
    assert (hot.stat().st_mtime_ns, done.stat().st_mtime_ns) == stamps
    retry = run_bench(campaign_yaml, serial, ranks=1, extra=["--no-report", "--retry-failed"])
    assert "2 failed in this run, 12 finished earlier" in retry.stdout  # both potentials
    assert hot.stat().st_mtime_ns != stamps[0] and done.stat().st_mtime_ns == stamps[1]


@pytest.mark.skipif(not OBELIX_CSV.is_file(), reason="OBELiX subset not in ../shared/data/obelix")
def test_report_command_with_obelix_csv(serial):
    result = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(serial),
                             "--experimental-csv", str(OBELIX_CSV)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    import pandas as pd

    summary = pd.read_csv(serial / "summary.csv").set_index(["potential_label", "structure"])
    li3n = summary.loc[("lj-test", "Li3N")]
    assert li3n["exp_reference_id"] == "gvd"
    assert li3n["sigma_exp_S_per_cm"] == pytest.approx(5.767e-4)
    assert (serial / "report" / "parity_sigma.png").is_file()


def test_campaign_spec_changes_are_refused(campaign_yaml, serial, tmp_path):
    spec = yaml.safe_load(campaign_yaml.read_text())
    spec["md"]["steps"] = 500
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(spec))
    result = subprocess.run(bench_cmd(changed, serial, ranks=1), capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 2 and "other settings" in " ".join(result.stderr.split())
