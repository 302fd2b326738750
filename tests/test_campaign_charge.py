"""The ion charge reaches the campaign's sigma(T_eval): q = 2 gives 4 x the q = 1 conductivity
(Nernst-Einstein goes with q^2), from each task's transport.json ``charge`` (no MD here)."""

import math

import pytest

from harness.campaign.tasks import expand_tasks, parse_campaign


def _fake(task, *, D, charge):
    transport = {"species": "Mg", "n_ions": 32, "volume_A3": 2000.0, "D_cm2_per_s": D,
                 "D_ci95_cm2_per_s": [0.9 * D, 1.1 * D], "sigma_NE_mS_per_cm": 1.0,
                 "sigma_NE_ci95_mS_per_cm": [0.9, 1.1], "msd_max_A2": 50.0,
                 "fit_window_ps": [0.1, 1.0], "flags": []}
    if charge is not None:
        transport["charge"] = charge
    return {"task_id": task.task_id, "status": "completed", "stage": None,
            "failure_kind": None, "failure_category": None, "error": None,
            "task": task.as_dict(), "transport": transport,
            "md": {"n_atoms": 100, "ms_per_step": 2.0, "atom_steps_per_s": 5e4},
            "cost": {"cpu_hours": 0.01, "gpu_hours": 0.0, "task_wall_s": 36.0}}


def _campaign(tmp_path, charge):
    from analysis.units import KB_EV_PER_K
    from harness.campaign.farm import prepare_campaign_dir, task_dir
    from harness.campaign.report import build_tables
    from harness.md.rundir import atomic_write_json

    analysis = {"charges": {"Mg": charge}} if charge is not None else {}
    spec = parse_campaign({"structures": ["Li3N"], "potentials": ["lj-test"],
                           "temperatures_K": [800, 1000], "analysis": analysis})
    tasks = expand_tasks(spec, campaign_dir=tmp_path)
    prepare_campaign_dir(spec, tasks, tmp_path)
    for t in tasks:
        D = 1e-2 * math.exp(-0.3 / (KB_EV_PER_K * t.temperature_K))
        atomic_write_json(task_dir(tmp_path, t.task_id) / "result.json",
                          _fake(t, D=D, charge=charge))
    return spec, tasks, build_tables(tmp_path)


def test_campaign_sigma_scales_with_the_charge_squared(tmp_path):
    from analysis.units import KB_EV_PER_K, nernst_einstein_mS_per_cm
    from harness.campaign.farm import _analysis_kwargs

    spec, tasks, two = _campaign(tmp_path / "q2", 2.0)
    # the setting reaches each task's analysis
    kwargs, _ = _analysis_kwargs(tasks[0])
    assert kwargs["charges"] == {"Mg": 2.0}
    _, _, one = _campaign(tmp_path / "q1", None)  # old results without "charge": q = 1
    s2, s1 = two["summary"].iloc[0], one["summary"].iloc[0]
    assert two["per_T"]["charge"].tolist() == [2.0, 2.0]
    assert one["per_T"]["charge"].tolist() == [1.0, 1.0]
    assert s2["sigma_eval_mS_per_cm"] == pytest.approx(4 * s1["sigma_eval_mS_per_cm"], rel=1e-12)
    D300 = 1e-2 * math.exp(-0.3 / (KB_EV_PER_K * 300.0))
    # written out: sigma = N q^2 e^2 D / (V k_B T) with q = 2
    e, kB = 1.602176634e-19, 1.380649e-23
    expected = 32 * (2 * e) ** 2 * D300 * 1e-4 / (2000e-30 * kB * 300.0) * 10.0
    assert s2["sigma_eval_mS_per_cm"] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(nernst_einstein_mS_per_cm(
        D300, n_ions=32, volume_A3=2000.0, temperature_K=300.0, charge=2.0), rel=1e-12)


def test_replicas_with_different_charges_are_an_error(tmp_path):
    import pandas as pd

    from harness.campaign.report import _ion_charge

    with pytest.raises(ValueError, match="different ion charges"):
        _ion_charge(pd.DataFrame({"charge": [1.0, 2.0]}))
