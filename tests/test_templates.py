"""Rendered LAMMPS inputs: snapshots per ensemble plus checks of what matters physically.

Snapshots live in tests/snapshots/; regenerate deliberately with
``UPDATE_SNAPSHOTS=1 python -m pytest tests/test_templates.py`` and review the diff.
"""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from harness.md.templating import (ATTACH_MARKER, MDTemplateContext, TemplateValueError,
                                plan_chunks, render, split_at_attach)

SNAPSHOTS = Path(__file__).parent / "snapshots"
ENSEMBLES = ["nvt_nose_hoover", "nvt_berendsen", "nvt_langevin", "npt_iso", "npt_aniso",
             "npt_berendsen", "nve"]


def context(**changes) -> MDTemplateContext:
    base = MDTemplateContext(
        ensemble="nvt_nose_hoover", data_file="/run/structure.data", type_elements=("Li", "P", "S"),
        potential_name="lj-test", potential_route="native",
        potential_lines=("pair_style lj/cut 6.0", "pair_coeff * * 0.05 2.0"),
        neighbor_skin_A=1.0, timestep_ps=0.002, thermo_every=10, minimize=False,
        minimize_ftol_eV_per_A=0.05, minimize_max_iterations=500, temperature_K=1000.0,
        seed=4242, tdamp_ps=0.1, pressure_bar=1.0, pdamp_ps=1.0, barostat_modulus_bar=3.0e5, triclinic=False,
        chunks=plan_chunks(equilibration_steps=500, production_steps=2500, restart_every=1000),
        thermo_file="/run/thermo.csv", dump_file="/run/traj.lammpstrj", dump_every=50,
        dump_coordinates="wrapped_images", restart_tmp="/run/restart.tmp", resume_file=None,
        resume_step=None, progress_every=25, progress_fix_id="harness_progress",
        watchdog=True)
    return replace(base, **changes)


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_snapshot(ensemble):
    text = render("md.lammps.j2", context(ensemble=ensemble, minimize=ensemble == "npt_iso"))
    path = SNAPSHOTS / f"md_{ensemble}.lammps"
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"snapshot {path.name} was missing and has been written; review it")
    assert text == path.read_text()


def test_physics_in_rendered_input():
    text = render("md.lammps.j2", context())
    assert "velocity        all create 1000.0 4242 mom yes rot no dist gaussian" in text
    assert "fix             harness_integrate all nvt temp 1000.0 1000.0 0.1" in text
    assert "id type x y z ix iy iz" in text
    # equilibration (500) runs before the dump is defined; a `run 0` makes the production's
    # initial state current for its thermo line; production in restart chunks
    runs = [int(line.split()[1]) for line in text.splitlines() if line.startswith("run ")]
    assert runs == [500, 0, 500, 1000, 1000]
    assert text.index("run             500") < text.index("dump            harness_traj")
    assert text.count("write_restart   /run/restart.tmp") == 4
    assert "#@harness checkpoint 3000 production" in text
    before, after = split_at_attach(text)
    assert any(line.startswith("pair_style") for line in before)
    assert after[0].startswith("fix             harness_progress")
    assert ATTACH_MARKER not in before + after


def test_langevin_seed_differs_from_velocity_seed():
    text = render("md.lammps.j2", context(ensemble="nvt_langevin"))
    assert "langevin 1000.0 1000.0 0.1 4243 zero yes" in text


def test_unwrapped_dump_and_no_equilibration():
    chunks = plan_chunks(equilibration_steps=0, production_steps=300, restart_every=1000)
    text = render("md.lammps.j2", context(dump_coordinates="unwrapped", chunks=chunks))
    assert "id type xu yu zu" in text
    assert text.count("\nrun ") == 2  # run 0 (initial thermo line) and the production


def test_continuation_input():
    """From a restart at step 1000: no velocities, append to outputs, remaining chunks only."""
    chunks = plan_chunks(equilibration_steps=500, production_steps=2500, restart_every=1000,
                         resume_step=1000)
    assert [(c.start_step, c.end_step) for c in chunks] == [(1000, 2000), (2000, 3000)]
    text = render("md.lammps.j2", context(chunks=chunks, resume_file="/run/restart.1000",
                                          resume_step=1000))
    assert "read_restart    /run/restart.1000" in text and "read_data" not in text
    assert "velocity" not in text
    assert "append yes delay 1001" in text
    assert "append /run/thermo.csv" in text and "title" not in text


@pytest.mark.parametrize("eq, prod, every, ends", [
    (0, 10, 4, [4, 8, 10]),
    (5, 10, 4, [4, 5, 8, 12, 15]),
    (10, 10, 5, [5, 10, 15, 20]),
    (0, 3, 1000, [3]),
])
def test_chunk_plan(eq, prod, every, ends):
    chunks = plan_chunks(equilibration_steps=eq, production_steps=prod, restart_every=every)
    assert [c.end_step for c in chunks] == ends
    assert sum(c.steps for c in chunks) == eq + prod
    assert [c.first_production for c in chunks].count(True) == 1


@pytest.mark.parametrize("changes, message", [
    ({"data_file": "/run/a b.data"}, "unsafe"),
    ({"dump_file": "/run/x$y"}, "unsafe"),
    ({"potential_lines": ("pair_style zero 2.0", "shell rm -rf /")}, "forbidden"),
    ({"potential_lines": ("pair_coeff * * 1 1\nshell ls",)}, "newline"),
    ({"potential_lines": ("pair_coeff * * 1 1 # hi",)}, "unsafe"),
    ({"type_elements": ("Li", "Xx")}, "not a chemical element"),
    ({"temperature_K": float("nan")}, "finite"),
    ({"temperature_K": -5.0}, "positive"),
    ({"chunks": ()}, "nothing to run"),
    ({"seed": 1.5}, "integer"),
    ({"ensemble": "nvt_magic"}, "unknown ensemble"),
])
def test_unsafe_or_invalid_values_rejected(changes, message):
    with pytest.raises(TemplateValueError, match=message):
        render("md.lammps.j2", context(**changes))
