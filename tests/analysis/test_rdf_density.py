"""Partial RDFs (ideal gas, simple cubic lattice, cells smaller than r_max), the seed 003
RDF MAE, and the mobile-ion density grid (integral, sites, CHGCAR/cube files)."""

import numpy as np
import pytest
from _analysis_helpers import FAST

from analysis.analyzer import TransportAnalyzer
from analysis.rdf import RDFAccumulator, rdf_mae, rdf_mae_between
from analysis.synthetic import lattice_hopping


def _rdf(frames, cell, symbols, r_max=10.0, dr=0.05):
    acc = RDFAccumulator(symbols=np.array(symbols, dtype=object), r_max=r_max, dr=dr,
                         max_frames=1000)
    for i, positions in enumerate(frames):
        acc.add(i, 0.1 * i, positions, cell)
    return acc.result()


def test_ideal_gas_rdf_is_one():
    rng = np.random.default_rng(0)
    box = 14.0
    symbols = ["Li"] * 60 + ["S"] * 40
    frames = [rng.uniform(0, box, size=(100, 3)) for _ in range(30)]
    res = _rdf(frames, np.eye(3) * box, symbols, dr=0.25)
    far = res.r > 3.0
    assert np.mean(res.pairs["Li-S"][far]) == pytest.approx(1.0, rel=0.02)
    assert np.mean(res.pairs["Li-Li"][far]) == pytest.approx(59 / 60, rel=0.03)
    assert np.mean(res.total[far]) == pytest.approx(99 / 100, rel=0.02)


def test_simple_cubic_lattice_shells_and_small_cell_equals_supercell():
    a = 3.0
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    small = _rdf([grid], np.eye(3) * 2 * a, ["Li"] * 8, r_max=10.0, dr=0.02)  # 6 A cell
    big_grid = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    big = _rdf([big_grid], np.eye(3) * 8 * a, ["Li"] * 512, r_max=10.0, dr=0.02)  # 24 A
    rho = 1 / a ** 3
    g = small.pairs["Li-Li"]
    for shell, count in ((a, 6), (a * np.sqrt(2), 12), (a * np.sqrt(3), 8), (2 * a, 6)):
        window = np.abs(small.r - shell) < 0.05
        n = np.sum(4 * np.pi * small.r[window] ** 2 * rho * g[window]) * 0.02
        assert n == pytest.approx(count * 8 / 8, rel=0.02)
    # the 6 A cell (r_max > half the cell) sees the same crystal as a 24 A supercell: the
    # same g(r) (ordered pairs over N_A^2, periodic self-images counted), bin for bin
    np.testing.assert_allclose(small.pairs["Li-Li"], big.pairs["Li-Li"], rtol=1e-12,
                               atol=1e-12)
    assert small.pairs["Li-Li"][small.r > 6.0].sum() > 0  # beyond the small cell's width


def test_rdf_mae_seed_003():
    r = np.arange(0.025, 12, 0.05)
    g = np.exp(-((r - 3) ** 2))
    assert rdf_mae(r, g, g) == 0.0
    assert rdf_mae(r, g, g + 0.1) == pytest.approx(0.1 * 10.0, rel=1e-3)  # integral to 10 A
    assert rdf_mae(r, g, g + 0.1, r_cut_A=5.0) == pytest.approx(0.5, rel=1e-3)


@pytest.fixture(scope="module")
def hopping_run(tmp_path_factory):
    traj = lattice_hopping(n_ions=24, n_frames=400, frame_interval_ps=0.1,
                           rate_per_neighbour_per_ps=0.2, a_A=2.5, sites_per_side=4,
                           noise_A=0.1, n_framework=27, seed=8)
    wrapped, images = traj.wrapped()
    out = tmp_path_factory.mktemp("hop")
    results = TransportAnalyzer.from_arrays(
        wrapped, symbols=traj.symbols, cells=traj.cells, images=images, frame_interval_fs=100,
        temperature_K=600, density_spacing_A=0.25, **FAST).run()
    results.write(out, plots=True)
    return traj, results, out


def test_density_grid_integrates_to_the_ion_count_and_peaks_on_sites(hopping_run):
    from ase.io.cube import read_cube_data
    from pymatgen.io.vasp import Chgcar

    traj, results, out = hopping_run
    box = traj.cells[0, 0, 0]
    density = results.density
    voxel = box ** 3 / density.size
    assert density.sum() * voxel == pytest.approx(24, rel=1e-9)
    # the lattice sites (a/2 + n a) hold nearly all of the density
    top = np.argwhere(density > 0.5 * density.max())
    frac = (top + 0.5) / np.array(density.shape)
    offsets = (frac * box - 1.25) / 2.5
    assert np.abs(offsets - np.rint(offsets)).max() < 0.15
    cube, atoms = read_cube_data(str(out / "density.cube"))
    assert cube.shape == density.shape
    assert cube.sum() * voxel == pytest.approx(24, rel=1e-4)
    assert len(atoms) == len(traj.symbols)
    chg = Chgcar.from_file(str(out / "CHGCAR_density"))
    assert chg.data["total"].mean() == pytest.approx(24, rel=1e-6)


def test_rdf_csv_and_mae_between_two_runs(hopping_run, tmp_path):
    """rdf.csv read back against another run: a second seed of the same system gives a small
    MAE, a denser lattice a large one (seed 003's metric on real files)."""
    import matplotlib.image as mpimg

    traj, results, out = hopping_run
    same = rdf_mae_between(out / "rdf.csv", results.rdf)
    assert same["mean_over_pairs"] == pytest.approx(0.0, abs=1e-6)  # csv round trip

    def run(**changes):
        values = dict(n_ions=24, n_frames=400, frame_interval_ps=0.1,
                      rate_per_neighbour_per_ps=0.2, a_A=2.5, sites_per_side=4, noise_A=0.1,
                      n_framework=27, seed=9)
        values.update(changes)
        other = lattice_hopping(**values)
        wrapped, images = other.wrapped()
        return TransportAnalyzer.from_arrays(
            wrapped, symbols=other.symbols, cells=other.cells, images=images,
            frame_interval_fs=100, temperature_K=600, compute_distinct=False, compute_charge=False,
            **FAST).run().rdf

    replica = rdf_mae_between(out / "rdf.csv", run())
    denser = rdf_mae_between(out / "rdf.csv", run(a_A=2.0))
    assert set(replica) >= {"Li-Li", "Li-S", "S-S", "mean_over_pairs", "total"}
    # measured: 7.3 (sharp lattice peaks, sampling noise) against 14.1
    assert 0 < replica["mean_over_pairs"] < 0.7 * denser["mean_over_pairs"]
    for name in ("msd.png", "vanhove.png", "rdf.png"):
        image = mpimg.imread(out / name)
        assert image.shape[0] >= 400 and image.shape[1] >= 600, (name, image.shape)
        assert image[..., :3].std() > 0.05, name  # not a blank canvas
