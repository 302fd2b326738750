"""van Hove self part: normalised to 1, second moment = MSD at that lag, Gaussian for free
diffusion; distinct part: the ion-ion RDF at t = 0 and uniform for an ideal gas."""

import numpy as np
import pytest
from _analysis_helpers import FAST

from analysis.analyzer import TransportAnalyzer
from analysis.msd import all_origin_statistics
from analysis.rdf import frame_pair_counts
from analysis.synthetic import brownian
from analysis.vanhove import distinct_part, self_part


@pytest.fixture(scope="module")
def walk():
    traj = brownian(n_ions=64, n_frames=600, frame_interval_ps=0.1, D_A2_per_ps=0.5,
                    noise_A=0.0, seed=3)
    return traj


def test_self_part_normalisation_and_second_moment(walk):
    x = walk.unwrapped.transpose(1, 0, 2)
    lags = [0, 5, 50, 300]
    stats = all_origin_statistics(x, vh_lags=lags, vh_dr=0.02, max_samples_per_lag=None)
    vh = self_part(stats, frame_interval_ps=0.1)
    dr = vh.dr_A
    np.testing.assert_allclose(vh.probability_per_A.sum(axis=1) * dr, 1.0, rtol=1e-12)
    # 4 pi r^2 Gs dr integrates to 1 as well (Gs is a 3D density)
    np.testing.assert_allclose((4 * np.pi * vh.r_A ** 2 * vh.gs_per_A3)[1:].sum(axis=1) * dr,
                               1.0, rtol=2e-3)  # bin-centre quadrature (lag 0: a delta at 0)
    # second moment: exact from the samples, and from the histogram to binning accuracy
    np.testing.assert_allclose(vh.second_moment_A2[1:], stats.msd[lags[1:]], rtol=1e-10)
    binned = (vh.r_A ** 2 * vh.probability_per_A).sum(axis=1) * dr
    np.testing.assert_allclose(binned[1:], stats.msd[lags[1:]], rtol=5e-3)
    # free diffusion: Gs is the Gaussian (4 pi D t)^-3/2 exp(-r^2 / 4 D t)
    k = 50
    t = k * 0.1
    gauss = 4 * np.pi * vh.r_A ** 2 * (4 * np.pi * 0.5 * t) ** -1.5 * np.exp(
        -vh.r_A ** 2 / (4 * 0.5 * t))
    row = lags.index(k)
    cdf = np.cumsum(vh.probability_per_A[row]) * dr
    assert np.abs(cdf - np.cumsum(gauss) * dr).max() < 0.05


def test_distinct_part_at_zero_lag_is_the_ion_rdf_and_flat_for_an_ideal_gas():
    rng = np.random.default_rng(5)
    n, frames, box = 60, 40, 11.0
    positions = rng.uniform(0, box, size=(frames, n, 3))  # ideal gas, independent frames
    cells = np.broadcast_to(np.eye(3) * box, (frames, 3, 3))
    vd = distinct_part(lambda idx: positions[np.asarray(idx)], lags=np.array([0, 10]),
                       n_frames=frames, cells=cells, frame_interval_ps=0.1, r_max_A=9.0,
                       dr_A=0.25, max_origins=30)
    counts = sum(frame_pair_counts(positions[f], cells[f], codes=np.zeros(n, int), n_groups=1,
                                   r_max=9.0, dr=0.25)[0, 0] for f in vd_origins(frames, 30))
    edges = np.arange(37) * 0.25
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    rdf = counts / (len(vd_origins(frames, 30)) * n * n / box ** 3 * shell)
    np.testing.assert_allclose(vd.gd[0], rdf, rtol=1e-10)
    far = vd.r_A > 3
    for row in (0, 1):  # uniform: (N - 1)/N everywhere, within counting noise
        assert np.mean(vd.gd[row, far]) == pytest.approx((n - 1) / n, rel=0.03)


def vd_origins(frames, count):
    return np.unique(np.linspace(0, frames - 1, min(count, frames)).astype(int))


def test_vanhove_files_from_the_pipeline(tmp_path, walk):
    wrapped, images = walk.wrapped()
    results = TransportAnalyzer.from_arrays(
        wrapped, symbols=walk.symbols, cells=walk.cells, images=images, frame_interval_fs=100,
        temperature_K=500, max_samples_per_lag=None, compute_rdf=False, **FAST).run()
    results.write(tmp_path, plots=False)
    gs = np.load(tmp_path / "vanhove_self.npz")
    gd = np.load(tmp_path / "vanhove_distinct.npz")
    assert set(gs.files) >= {"lag_times_ps", "r_A", "P_self_per_A", "Gs_per_A3",
                             "second_moment_A2"}
    assert gs["P_self_per_A"].shape == (len(gs["lag_times_ps"]), len(gs["r_A"]))
    lags = np.rint(gs["lag_times_ps"] / 0.1).astype(int)
    np.testing.assert_allclose(gs["second_moment_A2"][1:], results.msd[lags[1:]], rtol=1e-6)
    np.testing.assert_allclose(gs["P_self_per_A"].sum(axis=1) * float(gs["dr_A"]), 1.0)
    assert gd["Gd"].shape == (len(gd["lag_times_ps"]), len(gd["r_A"]))
    assert np.isfinite(gd["Gd"]).all()


def test_distinct_part_counts_periodic_self_images_like_the_rdf():
    """A 6 A cell analysed to 8 A: beyond the cell width the neighbours include the lattice
    copies of each ion itself. G_d(r, 0) must equal the RDF there too, and for a frozen
    crystal G_d(r, t) stays the RDF at every lag."""
    from analysis.vanhove import self_image_distances

    a = 3.0
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    rng = np.random.default_rng(1)
    base = grid + rng.normal(scale=0.2, size=grid.shape)
    box = 2 * a
    frames = np.stack([base + box * rng.integers(-2, 3, size=(8, 3))] * 6)  # outside the cell
    cells = np.broadcast_to(np.eye(3) * box, (6, 3, 3))
    vd = distinct_part(lambda idx: frames[np.asarray(idx)], lags=np.array([0, 3]),
                       n_frames=6, cells=cells, frame_interval_ps=0.1, r_max_A=8.0, dr_A=0.07)
    # (0.07 A bins: the lattice distance 6 A is not on a bin edge, where round-off decides)
    counts = frame_pair_counts(base, cells[0], codes=np.zeros(8, int), n_groups=1, r_max=8.0,
                               dr=0.07)[0, 0]
    edges = np.arange(len(counts) + 1) * 0.07
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    rdf = counts / (8 * 8 / box ** 3 * shell)
    assert rdf[vd.r_A > box].sum() > 0  # the range beyond the cell width is populated
    np.testing.assert_allclose(vd.gd[0], rdf, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vd.gd[1], rdf, rtol=1e-10, atol=1e-12)
    # the images of an ion seen from itself: the 6 shortest lattice vectors; after a move by
    # (1, 0, 12) A its n = 0 image (itself, 12.04 A) is the self part; its copies at 1 and 5 A
    d = self_image_distances(np.zeros((1, 3)), cells[0], r_max=6.01)
    assert sorted(np.round(d, 9)) == [box] * 6
    d = self_image_distances(np.array([[1.0, 0.0, 12.0]]), cells[0], r_max=5.2)
    assert sorted(np.round(d, 9)) == [1.0, 5.0]
