"""Hostile specs, end to end through the CLI: YAML that tries to run code, and strings that
try to inject LAMMPS commands (newline, &, $, #, quotes, shell, python, include) into every
value that reaches a LAMMPS input. Each must exit 2 with one line, without a traceback,
without running anything and without leaving a run directory behind. (The template layer's
own checks are in test_templates.py.)
"""

import subprocess
import sys

import pytest
import yaml

BASE = {"structure": "Li3N", "potential": "lj-test", "steps": 10, "dump_every": 5,
        "thermo_every": 5, "restart_every": 10}

INJECTIONS = ["run\nshell touch PWNED", "run$(touch PWNED)", "run & touch PWNED",
              "run#comment", "run\"quoted\"", "run'quoted'", "run ${x}", "run\rshell ls"]


def harness(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def assert_refused(result, cwd, *, message=None):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    if message is not None:
        assert message in " ".join(result.stderr.split()), result.stderr
    assert not (cwd / "PWNED").exists()
    leftovers = sorted(p.name for p in cwd.iterdir() if p.name not in ("spec.yaml",
                                                                        "campaign.yaml"))
    assert leftovers == [], leftovers


@pytest.mark.parametrize("out", INJECTIONS)
def test_md_out_with_injection_is_refused_before_anything_is_written(tmp_path, out):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**BASE, "out": out}))
    assert_refused(harness("md", "--config", "spec.yaml", cwd=tmp_path), tmp_path,
                   message="unsafe in a LAMMPS input")


@pytest.mark.parametrize("key, value, message", [
    ("potential", "lj-test\nshell touch PWNED", "unknown potential"),
    ("potential", "mace:/tmp/x;shell touch PWNED.pt", "model file not found"),
    ("structure", "Li3N\ninclude /etc/passwd", "structure file not found"),
    ("ensemble", "nve\nshell touch PWNED", "ensemble"),
    ("dump_coordinates", "unwrapped & shell", "dump_coordinates"),
    ("seed", "5\nshell touch PWNED", "seed"),
    ("temperature_K", float("nan"), "finite number"),
    ("timestep_fs", float("inf"), "finite number"),
    ("supercell_matrix", "2 2 2\nshell", "supercell_matrix"),
    ("shell", "touch PWNED", "unknown key(s)"),
])
def test_md_hostile_values_are_refused(tmp_path, key, value, message):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**BASE, "out": "run", key: value}))
    assert_refused(harness("md", "--config", "spec.yaml", cwd=tmp_path), tmp_path,
                   message=message)


@pytest.mark.parametrize("text, message", [
    ("structure: Li3N\nseed: !!python/object/apply:os.system ['touch PWNED']\n",
     "not valid YAML"),
    ("!!python/object/new:os.system [touch PWNED]\n", "not valid YAML"),
    ("- structure\n- Li3N\n", "must hold a mapping"),
    ("structure: Li3N\nsteps: [unclosed\n", "not valid YAML"),
    # a billion-laughs alias bomb lands in a typed field and is refused, not expanded
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", "unknown key(s)"),
    # a self-referencing (infinitely deep) value is refused by the typed field, no hang
    ("structure: Li3N\npotential: lj-test\nsupercell_matrix: &c [[*c]]\n", "supercell_matrix"),
])
def test_md_hostile_yaml_is_refused(tmp_path, text, message):
    (tmp_path / "spec.yaml").write_text(text)
    assert_refused(harness("md", "--config", "spec.yaml", cwd=tmp_path), tmp_path,
                   message=message)


CAMPAIGN = {"name": "hostile", "structures": ["Li3N"], "potentials": ["lj-test"],
            "temperatures_K": [300], "md": {"steps": 10, "dump_every": 5}}


@pytest.mark.parametrize("change, message", [
    ({"structures": [{"name": "../../etc", "file": "Li3N"}]}, "structure name"),
    ({"structures": [{"name": "Li3N\nshell", "file": "Li3N"}]}, "structure name"),
    ({"potentials": ["lj-test\nshell touch PWNED"]}, "unknown potential"),
    ({"potentials": ["$(touch PWNED)"]}, "unknown potential"),
    ({"md": {"out": "/tmp/elsewhere"}}, "may not set out"),
    ({"md": {"shell": "touch PWNED"}}, "unknown MD key"),
    ({"md": {"ensemble": "nvt\ninclude x"}}, "ensemble"),
    ({"out": "camp\nshell touch PWNED"}, "unsafe in a LAMMPS input"),
    ({"out": "camp & touch PWNED"}, "unsafe in a LAMMPS input"),
    ({"farm": {"gpus": "$(touch PWNED)"}}, "gpus"),
    ({"preset": "seed004; shell"}, "preset"),
])
def test_campaign_hostile_values_are_refused(tmp_path, change, message):
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump({**CAMPAIGN, **change}))
    assert_refused(harness("bench", "campaign.yaml", "--quiet", cwd=tmp_path), tmp_path,
                   message=message)


def test_campaign_python_tag_is_refused(tmp_path):
    (tmp_path / "campaign.yaml").write_text(
        "name: x\nstructures: [Li3N]\npotentials: [lj-test]\n"
        "seed: !!python/object/apply:os.system ['touch PWNED']\n")
    assert_refused(harness("bench", "campaign.yaml", "--quiet", cwd=tmp_path), tmp_path,
                   message="not valid YAML")
