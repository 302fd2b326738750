"""The CLI as a user meets it: real subprocesses, exit codes, one clear line per error."""

import subprocess
import sys

import pytest


def harness(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_help_is_fast_and_lists_commands():
    result = harness("--help", timeout=30)
    assert result.returncode == 0
    for command in ("md", "demo", "analyze", "arrhenius", "rdf-mae", "bench", "report",
                    "build-plugins", "potentials", "export"):
        assert command in result.stdout


def test_potentials_lists_registry():
    result = harness("potentials", timeout=60)
    assert result.returncode == 0
    assert "sevennet-0" in result.stdout and "chgnet" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["md", "no/such/file.cif", "--potential", "lj-test"], "not found"),
    (["md", "Li3N", "--potential", "no-such-model"], "unknown potential 'no-such-model'"),
    (["md", "Li3N", "--potential", "lj-test", "--timestep-fs", "-2"], "timestep_fs"),
    (["md", "Li3N", "--potential", "lj-test", "--ensemble", "nvt_magic"], "ensemble"),
])
def test_bad_input_exits_2_without_traceback(tmp_path, args, message):
    result = harness(*args, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("structure: Li3N\npotential: lj-test\ntemprature_K: 900\n")
    result = harness("md", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key(s)" in result.stderr and "temprature_K" in result.stderr
    assert "Traceback" not in result.stderr


def test_arrhenius_command_recovers_the_activation_energy(tmp_path):
    import json

    import numpy as np

    kB = 8.617333262e-5
    Ea, D0 = 0.30, 1e-3
    paths = []
    for T in (800.0, 1000.0, 1200.0):
        D = D0 * np.exp(-Ea / (kB * T))
        folder = tmp_path / f"T{T:g}"
        folder.mkdir()
        (folder / "transport.json").write_text(json.dumps({
            "species": "Li", "temperature_K": T, "D_cm2_per_s": D,
            "D_ci95_cm2_per_s": [0.9 * D, 1.1 * D], "n_ions": 48, "volume_A3": 1000.0,
            "charge": 1, "flags": []}))
        paths.append(folder)
    result = harness("arrhenius", *paths, "--out", tmp_path / "fit", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Ea = 0.300 eV" in result.stdout
    fit = json.loads((tmp_path / "fit" / "arrhenius.json").read_text())
    assert fit["Ea_eV"] == pytest.approx(Ea, rel=1e-6)
    assert fit["Ea_ci95_eV"][0] < Ea < fit["Ea_ci95_eV"][1]
    assert fit["D_eval_cm2_per_s"] == pytest.approx(D0 * np.exp(-Ea / (kB * 300.0)), rel=1e-6)
    # one temperature is not a fit: exit 2, one line
    bad = harness("arrhenius", paths[0], timeout=120)
    assert bad.returncode == 2 and "two or more temperatures" in bad.stderr


def test_rdf_mae_command(tmp_path):
    import numpy as np

    r = np.arange(0.025, 12.0, 0.05)
    for name, shift in (("a", 0.0), ("b", 0.5)):
        g_lis = np.where(r > 2.0, 1.0 + shift, 0.0)
        table = np.column_stack([r, g_lis, np.ones_like(r)])
        np.savetxt(tmp_path / f"{name}.csv", table, delimiter=",",
                   header="r_A,g_Li-S,g_S-S", comments="")
    result = harness("rdf-mae", tmp_path / "a.csv", tmp_path / "b.csv", timeout=120)
    assert result.returncode == 0, result.stderr
    values = dict(line.split(": ") for line in result.stdout.strip().splitlines())
    # |g1 - g2| = 0.5 on (2, 10] A for Li-S, 0 for S-S
    assert float(values["Li-S"].split()[0]) == pytest.approx(4.0, abs=0.03)
    assert float(values["S-S"].split()[0]) == pytest.approx(0.0, abs=1e-12)
    missing = harness("rdf-mae", tmp_path / "a.csv", tmp_path / "nope", timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
