"""Static tasks in `harness bench`: a two-task statics campaign (lj-test) through the farm,
resumed without recomputation, with its report sections; presets expand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from harness.campaign.tasks import expand_tasks, load_campaign

ROOT = Path(__file__).resolve().parents[2]
A_FCC = 2.0 * 1.28 * math.sqrt(2.0)


def _campaign(tmp_path: Path) -> Path:
    from ase.build import bulk
    from ase.io import write

    write(tmp_path / "li_fcc.vasp", bulk("Li", "fcc", a=A_FCC), format="vasp")
    write(tmp_path / "li_conv.vasp", bulk("Li", "fcc", a=A_FCC, cubic=True), format="vasp")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "name": "statics-ci", "potentials": ["lj-test"], "out": "camp",
        "statics": [
            {"kind": "neb", "settings": {"n_images": 3, "max_hops": 1, "fmax_eV_per_A": 0.01,
                                         "endpoint_fmax_eV_per_A": 0.01},
             "structures": [{"name": "Li-fcc", "file": "li_fcc.vasp",
                             "reference": {"barrier_eV": 0.25}}]},
            {"kind": "phonons", "settings": {"relax": False, "supercell_matrix": [2, 2, 2],
                                             "allow_small_supercell": True, "mesh": [6, 6, 6]},
             "structures": [{"name": "Li-conv", "file": "li_conv.vasp"},
                            {"name": "absent", "file": "no/such/file.vasp"}]},
        ]}))
    return tmp_path / "c.yaml"


@pytest.mark.slow
def test_statics_campaign_farm_resume_report(tmp_path):
    from harness.campaign.farm import run_campaign
    from harness.campaign.report import write_report

    with pytest.warns(UserWarning, match="no/such/file.vasp not found; task skipped"):
        spec = load_campaign(_campaign(tmp_path))
        tasks = expand_tasks(spec, campaign_dir=tmp_path / "camp")
    assert sorted(t.task_id for t in tasks) == ["neb__Li-fcc__lj-test",
                                                "phonons__Li-conv__lj-test"]
    with pytest.warns(UserWarning):
        outcome = run_campaign(spec, campaign_dir=spec.out, show_progress=False)
    assert outcome.completed == 2 and outcome.failed == 0
    camp = Path(spec.out)
    neb = json.loads((camp / "tasks" / "neb__Li-fcc__lj-test" / "result.json").read_text())
    assert neb["status"] == "completed" and neb["kind"] == "neb"
    barrier = neb["statics"]["barriers_eV"]["hop1"]
    assert barrier == pytest.approx(0.2126, abs=0.003)  # the fcc LJ hop of test_neb
    assert (camp / "tasks" / "neb__Li-fcc__lj-test" / "run" / "barriers.csv").is_file()
    ph = json.loads((camp / "tasks" / "phonons__Li-conv__lj-test" / "result.json").read_text())
    assert ph["statics"]["cv_300K_J_per_K_per_mol"] > 0
    mtimes = {p: p.stat().st_mtime_ns for p in camp.glob("tasks/*/result.json")}
    # resume: nothing recomputed
    with pytest.warns(UserWarning):
        again = run_campaign(spec, campaign_dir=spec.out, show_progress=False)
    assert again.skipped == 2 and again.completed == 0
    assert {p: p.stat().st_mtime_ns for p in camp.glob("tasks/*/result.json")} == mtimes
    paths = write_report(camp)
    report = Path(paths["report_md"]).read_text()
    assert "Statics: NEB failures by type" in report and "Statics: phonons" in report
    assert "Statics: cost" in report and "0.25" in report
    assert (camp / "report" / "statics_neb_parity.png").is_file()
    assert (camp / "statics.csv").is_file()
    # changed settings on the same directory are refused
    data = yaml.safe_load(_campaign(tmp_path).read_text())
    data["statics"][0]["settings"]["n_images"] = 4
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    from harness.campaign.farm import prepare_campaign_dir
    from harness.md.spec import SpecError

    with pytest.warns(UserWarning):
        spec2 = load_campaign(tmp_path / "c.yaml")
        tasks2 = expand_tasks(spec2, campaign_dir=camp)
    with pytest.raises(SpecError, match="other settings"):
        prepare_campaign_dir(spec2, tasks2, camp)


def test_statics_presets_expand(tmp_path):
    import warnings

    paths = sorted((ROOT / "inputs" / "campaigns").glob("seed00*-statics*.yaml"))
    assert len(paths) == 3
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shared data may be absent: those tasks skip
            tasks = expand_tasks(load_campaign(path), campaign_dir=tmp_path)
        kinds = {t.kind for t in tasks}
        assert tasks and kinds <= {"parity", "elastic", "formation", "neb", "phonons"}, path


def test_bad_statics_block_is_one_clear_error(tmp_path):
    from harness.md.spec import SpecError

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "name": "x", "potentials": ["lj-test"],
        "statics": [{"kind": "neb", "settings": {"n_imagez": 3}, "structures": ["Li3N"]}]}))
    with pytest.raises(SpecError, match="n_imagez"):
        expand_tasks(load_campaign(tmp_path / "c.yaml"), campaign_dir=tmp_path)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({
        "name": "x", "potentials": ["lj-test"],
        "statics": [{"kind": "bands", "structures": ["Li3N"]}]}))
    with pytest.raises(SpecError, match="kind"):
        expand_tasks(load_campaign(tmp_path / "d.yaml"), campaign_dir=tmp_path)
