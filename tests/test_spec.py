"""Spec loading: defaults < YAML < flags, unknown keys rejected, values validated."""

import pytest

from harness.md.spec import MDSpec, SpecError, build_spec


def test_precedence_defaults_yaml_flags(tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("structure: Li3N\ntemperature_K: 800\nsteps: 50\ndump_every: 5\n")
    spec = build_spec(MDSpec, config=cfg, overrides={"temperature_K": 900.0, "seed": None})
    assert spec.temperature_K == 900.0  # flag beats YAML
    assert spec.steps == 50  # YAML beats default
    assert spec.seed == MDSpec.model_fields["seed"].default  # None flag = not given
    assert spec.duration_ps == pytest.approx(0.1)


def test_every_cli_flag_is_a_yaml_key():
    import inspect

    from harness.cli import md
    from harness.md.spec import ConvergenceSpec

    flags = set(inspect.signature(md).parameters) - {"config", "force", "quiet"}
    # --until-converged switches the `convergence:` block on; its flags are that block's keys
    conv_flags = {"species", "target_rel_ci95", "min_msd_A2", "check_every_ps", "min_ps",
                  "max_ps", "max_wall_h"}
    assert conv_flags <= set(ConvergenceSpec.model_fields)
    assert "convergence" in MDSpec.model_fields
    assert flags - conv_flags - {"until_converged"} <= set(MDSpec.model_fields)


def test_unknown_yaml_key_rejected(tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("structure: Li3N\ntemperture_K: 800\n")
    with pytest.raises(SpecError, match="unknown key.*temperture_K.*Valid keys"):
        build_spec(MDSpec, config=cfg)


@pytest.mark.parametrize("text, message", [
    ("structure: Li3N\ntimestep_fs: -1\n", "timestep_fs"),
    ("structure: Li3N\nensemble: nvt_magic\n", "ensemble"),
    ("structure: Li3N\nsteps: 10\ndump_every: 100\n", "dump_every"),
    ("structure: Li3N\nsupercell_matrix: [1, 2]\n", "supercell_matrix"),
    ("- a\n- b\n", "mapping"),
    ("structure: [unclosed\n", "not valid YAML"),
])
def test_invalid_values(tmp_path, text, message):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text(text)
    with pytest.raises(SpecError, match=message):
        build_spec(MDSpec, config=cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(SpecError, match="config file not found"):
        build_spec(MDSpec, config=tmp_path / "nope.yaml")
