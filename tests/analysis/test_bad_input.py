"""Bad input: a clear AnalysisInputError (non-zero exit in the CLI) and nothing already
written destroyed; a partial last frame is dropped with a warning."""

import json
import warnings

import numpy as np
import pytest
from _analysis_helpers import write_dump_and_data

from analysis.errors import AnalysisInputError, AnalysisWarning
from analysis.readers import LammpsDumpSource, read_lammps_data
from analysis.synthetic import brownian, write_lammps_dump
from harness.analyze import run_analyze

OPTS = dict(temperature_K=600.0, plots=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    traj = brownian(n_ions=8, n_frames=60, frame_interval_ps=0.1, D_A2_per_ps=0.5,
                    n_framework=4, box_A=8.0, seed=1)
    folder = tmp_path_factory.mktemp("small")
    dump, data = write_dump_and_data(folder, traj)
    return traj, dump, data


def _run(dump, data, out, **extra):
    kwargs = dict(dump=dump, data=data, timestep_fs=2.0, out=out, **OPTS)
    kwargs.update(extra)
    return run_analyze(**kwargs)


def test_empty_dump(tmp_path, small):
    empty = tmp_path / "empty.lammpstrj"
    empty.write_text("")
    with pytest.raises(AnalysisInputError, match="empty"):
        _run(empty, small[2], tmp_path / "out")


def test_truncated_last_frame_uses_complete_frames_and_warns(tmp_path, small):
    traj, dump, data = small
    text = dump.read_bytes()
    # in atoms / in the header / inside the last number of the last line (every column still
    # there: an image flag -12 cut to -1 reads as a valid number) / before the final newline
    for cut in (len(text) - 40, text.rindex(b"ITEM: BOX") + 5, len(text) - 2, len(text) - 1):
        broken = tmp_path / f"cut{cut}.lammpstrj"
        broken.write_bytes(text[:cut])
        with pytest.warns(AnalysisWarning, match="incomplete"):
            result = _run(broken, data, tmp_path / f"out{cut}", fit_start_ps=0.5,
                          fit_end_ps=2.5)
        assert result["n_frames"] == 59
        assert "truncated_input" in result["flags"]


def test_inconsistent_atom_counts(tmp_path, small):
    traj, dump, data = small
    other = brownian(n_ions=9, n_frames=3, n_framework=4, box_A=8.0, seed=2)
    _, wrong_data = write_dump_and_data(tmp_path / "wrong", other)
    with pytest.raises(AnalysisInputError, match="inconsistent atom counts.*12.*13"):
        _run(dump, wrong_data, tmp_path / "out")
    # a frame in the middle with fewer atoms (e.g. lost atoms)
    lines = dump.read_text().splitlines(keepends=True)
    frame = 9 + 12
    lines[frame * 20 + 3] = "11\n"
    del lines[frame * 20 + 9]
    bad = tmp_path / "lost.lammpstrj"
    bad.write_text("".join(lines))
    with pytest.raises(AnalysisInputError, match="inconsistent atom counts: TIMESTEP 1000"):
        _run(bad, data, tmp_path / "out")


def test_unknown_species_missing_timestep_single_frame(tmp_path, small):
    traj, dump, data = small
    with pytest.raises(AnalysisInputError, match="unknown species 'Na'.*Li, S"):
        _run(dump, data, tmp_path / "out", species="Na")
    with pytest.raises(AnalysisInputError, match="not an element"):
        _run(dump, data, tmp_path / "out", species="Xx")
    with pytest.raises(AnalysisInputError, match="missing timestep"):
        _run(dump, data, tmp_path / "out", timestep_fs=None)
    one = tmp_path / "one.lammpstrj"
    text = dump.read_text()
    one.write_text(text[:text.index("ITEM: TIMESTEP", 10)])
    with pytest.raises(AnalysisInputError, match="single frame"):
        _run(one, data, tmp_path / "out")
    with pytest.raises(AnalysisInputError, match="temperature unknown"):
        _run(dump, data, tmp_path / "out", temperature_K=None)
    with pytest.raises(AnalysisInputError, match="exactly one input"):
        run_analyze(out=tmp_path / "out")


def test_errors_leave_existing_files_untouched(tmp_path, small):
    traj, dump, data = small
    out = tmp_path / "out"
    out.mkdir()
    (out / "transport.json").write_text('{"old": true}')
    (out / "notes.txt").write_text("mine")
    with pytest.raises(AnalysisInputError):
        _run(dump, data, out, species="Na")
    assert json.loads((out / "transport.json").read_text()) == {"old": True}
    result = _run(dump, data, out, fit_start_ps=0.5, fit_end_ps=2.5)
    assert json.loads((out / "transport.json").read_text())["D_cm2_per_s"] == \
        pytest.approx(result["D_cm2_per_s"])
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_elements_from_masses_type_map_and_bad_type_map(tmp_path, small):
    traj, dump, data = small
    parsed = read_lammps_data(data)
    assert parsed.n_atoms == 12 and set(parsed.masses) == {1, 2}
    info = LammpsDumpSource(dump, data=data, timestep_fs=2.0).info()  # from the masses
    assert list(info.symbols) == ["Li"] * 8 + ["S"] * 4
    info = LammpsDumpSource(dump, type_map="1=Na,2=Cl", timestep_fs=2.0).info()
    assert list(info.symbols) == ["Na"] * 8 + ["Cl"] * 4
    with pytest.raises(AnalysisInputError, match="--type-map"):
        LammpsDumpSource(dump, timestep_fs=2.0).info()  # no data file, no map
    with pytest.raises(AnalysisInputError, match="not TYPE=ELEMENT"):
        LammpsDumpSource(dump, type_map="1:Li", timestep_fs=2.0)
    odd = tmp_path / "odd.data"
    import re

    odd.write_text(re.sub(r"\n1 +6\.9\d* # Li", "\n1 13.3", data.read_text()))
    with pytest.raises(AnalysisInputError, match="type 1 .mass 13.3 matches no element"):
        LammpsDumpSource(dump, data=odd, timestep_fs=2.0).info()


def test_unsorted_dump_scaled_coordinates_and_uneven_frames(tmp_path, small):
    traj, dump, data = small
    wrapped, images = traj.wrapped()
    shuffled = write_lammps_dump(tmp_path / "shuffled.lammpstrj", positions=wrapped,
                                 cells=traj.cells, types=np.array([1] * 8 + [2] * 4),
                                 steps=np.arange(60) * 50, images=images, shuffle_seed=3)
    frames = [next(LammpsDumpSource(p, data=data, timestep_fs=2.0).blocks())
              for p in (dump, shuffled)]
    np.testing.assert_allclose(frames[0].positions, frames[1].positions)
    np.testing.assert_array_equal(frames[0].images, frames[1].images)
    # scaled coordinates
    text = dump.read_text().replace("ITEM: ATOMS id type x y z ix iy iz",
                                    "ITEM: ATOMS id type xs ys zs ix iy iz")
    lines = text.splitlines()
    for k, line in enumerate(lines):
        parts = line.split()
        if len(parts) == 8 and not line.startswith("ITEM"):
            parts[2:5] = [repr(float(v) / 8.0) for v in parts[2:5]]
            lines[k] = " ".join(parts)
    scaled = tmp_path / "scaled.lammpstrj"
    scaled.write_text("\n".join(lines) + "\n")
    block = next(LammpsDumpSource(scaled, data=data, timestep_fs=2.0).blocks())
    np.testing.assert_allclose(block.positions, frames[0].positions, atol=1e-9)
    # a gap in the dump interval
    uneven = tmp_path / "uneven.lammpstrj"
    uneven.write_text(dump.read_text().replace("ITEM: TIMESTEP\n500\n", "ITEM: TIMESTEP\n510\n"))
    with pytest.raises(AnalysisInputError, match="not evenly spaced"):
        _run(uneven, data, tmp_path / "out")
    # a frame repeated by an appended restart is dropped with a warning
    text = dump.read_text()
    start = text.index("ITEM: TIMESTEP\n500\n")
    end = text.index("ITEM: TIMESTEP\n550\n")
    repeated = tmp_path / "repeated.lammpstrj"
    repeated.write_text(text[:end] + text[start:end] + text[end:])
    with pytest.warns(AnalysisWarning, match="repeat the previous TIMESTEP"):
        result = _run(repeated, data, tmp_path / "out2", fit_start_ps=0.5, fit_end_ps=2.5)
    assert result["n_frames"] == 60


def test_nan_positions_are_flagged_and_cut(tmp_path, small):
    traj, dump, data = small
    lines = dump.read_text().splitlines()
    target = 50 * (9 + 12) + 9 + 3  # frame 50, atom 4
    parts = lines[target].split()
    parts[2] = "nan"
    lines[target] = " ".join(parts)
    bad = tmp_path / "nan.lammpstrj"
    bad.write_text("\n".join(lines) + "\n")
    result = _run(bad, data, tmp_path / "out", fit_start_ps=0.5, fit_end_ps=2.5)
    assert result["n_frames"] == 50
    assert "nan_positions" in result["flags"]


def test_cli_exits_non_zero_with_one_line(tmp_path, small):
    from typer.testing import CliRunner

    from harness.cli import app

    empty = tmp_path / "empty.lammpstrj"
    empty.write_text("")
    runner = CliRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(app, ["analyze", "--dump", str(empty), "--data", str(small[2]),
                                     "--timestep-fs", "2", "--temperature-K", "600"])
    assert result.exit_code == 2
    assert "empty" in result.output
    assert "Traceback" not in result.output


def test_plot_failure_keeps_the_numbers(tmp_path, small, monkeypatch):
    import analysis.plotting

    def broken(*args, **kwargs):
        raise RuntimeError("no usable matplotlib backend")

    monkeypatch.setattr(analysis.plotting, "plot_msd", broken)
    traj, dump, data = small
    with pytest.warns(AnalysisWarning, match="plots not written"):
        result = _run(dump, data, tmp_path / "out", plots=True, fit_start_ps=0.5,
                      fit_end_ps=2.5)
    saved = json.loads((tmp_path / "out" / "transport.json").read_text())
    assert saved["D_cm2_per_s"] == result["D_cm2_per_s"] > 0
    assert "no usable matplotlib backend" in saved["plot_error"]
    assert (tmp_path / "out" / "msd.csv").is_file()
