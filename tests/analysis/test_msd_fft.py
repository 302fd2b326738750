"""All-origins FFT MSD: equal to the direct sum, to MDAnalysis EinsteinMSD, chunk- and
storage-independent, and its lag statistics equal the brute-force ones."""

import numpy as np
import pytest

from analysis.msd import all_origin_statistics, collective_statistics
from analysis.store import DisplacementStore


def _direct_msd(x):
    n = x.shape[1]
    return np.array([np.mean(np.sum((x[:, k:] - x[:, :n - k]) ** 2, axis=2)) for k in range(n)])


@pytest.fixture
def walk():
    rng = np.random.default_rng(7)
    return np.cumsum(rng.normal(size=(9, 257, 3)), axis=1) + 50.0  # (ions, frames, 3)


def test_fft_msd_equals_direct_sum_per_axis_and_total(walk):
    result = all_origin_statistics(walk, chunk_ions=4)
    direct = _direct_msd(walk)
    np.testing.assert_allclose(result.msd[1:], direct[1:], rtol=1e-11)
    for axis in range(3):
        np.testing.assert_allclose(result.msd_axes[1:, axis], _direct_msd(walk[..., axis:axis + 1])[1:],
                                   rtol=1e-10)
    assert result.msd[0] == 0.0
    np.testing.assert_allclose(result.n_obs[1:], 9 * 256 / np.arange(1, 257))


def test_fft_msd_equals_mdanalysis_einstein_msd(walk):
    import MDAnalysis as mda
    from MDAnalysis.analysis.msd import EinsteinMSD
    from MDAnalysis.coordinates.memory import MemoryReader

    x32 = walk.astype(np.float32)
    universe = mda.Universe.empty(x32.shape[0], trajectory=True)
    universe.load_new(x32.transpose(1, 0, 2).copy(), format=MemoryReader)
    for fft in (True, False):
        reference = EinsteinMSD(universe, select="all", msd_type="xyz", fft=fft).run()
        ours = all_origin_statistics(x32.astype(float))
        np.testing.assert_allclose(ours.msd[1:], reference.results.timeseries[1:], rtol=1e-10)


def test_lag_statistics_and_histograms_match_brute_force(walk):
    lags = [3, 40, 200]
    result = all_origin_statistics(walk, var_lags=lags, vh_lags=[0, 40], vh_dr=0.1,
                                   max_samples_per_lag=None)
    n = walk.shape[1]
    for i, k in enumerate(lags):
        s = np.sum((walk[:, k:] - walk[:, :n - k]) ** 2, axis=2).ravel()
        assert result.s_mean[i] == pytest.approx(s.mean(), rel=1e-12)
        assert result.s_var[i] == pytest.approx(s.var(ddof=1), rel=1e-10)
        assert result.s_samples[i] == s.size
    s40 = np.sqrt(np.sum((walk[:, 40:] - walk[:, :n - 40]) ** 2, axis=2).ravel())
    hist = np.bincount(np.floor(s40 / 0.1).astype(int))
    np.testing.assert_array_equal(result.vh_counts[1][:hist.size], hist)
    assert result.vh_counts[0][0] == walk.shape[0] * n  # lag 0: every sample at r = 0


def test_origin_striding_caps_samples_and_keeps_the_mean(walk):
    full = all_origin_statistics(walk, var_lags=[10], max_samples_per_lag=None)
    strided = all_origin_statistics(walk, var_lags=[10], max_samples_per_lag=500)
    assert strided.s_samples[0] <= 500
    # a subset of the same samples: its mean within 4 standard errors of the subset's size
    assert abs(strided.s_mean[0] - full.s_mean[0]) < 4 * np.sqrt(full.s_var[0] /
                                                                  strided.s_samples[0])
    np.testing.assert_allclose(strided.msd, full.msd)  # the MSD always uses all origins


@pytest.mark.parametrize("ram_limit", [1 << 30, 0])  # in RAM, or spilled to a scratch file
def test_store_roundtrip_and_msd_independent_of_storage(walk, tmp_path, ram_limit):
    frames = walk.transpose(1, 0, 2)
    with DisplacementStore(walk.shape[0], block_frames=50, dtype=np.float64,
                           ram_limit_bytes=ram_limit, scratch_dir=tmp_path) as store:
        for start in range(0, frames.shape[0], 37):
            store.append(frames[start:start + 37])
        store.finish()
        assert store.n_frames == frames.shape[0]
        assert (store.on_disk_bytes > 0) == (ram_limit == 0)
        np.testing.assert_array_equal(store.atoms(2, 6), walk[2:6])
        np.testing.assert_array_equal(store.frames([0, 49, 50, 256]), frames[[0, 49, 50, 256]])
        result = all_origin_statistics(store, chunk_ions=2)
    np.testing.assert_allclose(result.msd[1:], _direct_msd(walk)[1:], rtol=1e-11)
    assert not list(tmp_path.iterdir())  # the scratch file is removed on close


def test_collective_statistics_is_msd_of_the_summed_series(walk):
    series = walk.sum(axis=0)
    msd, means, variances = collective_statistics(series, lags=[5, 17])
    np.testing.assert_allclose(msd[1:], _direct_msd(series[None])[1:], rtol=1e-10)
    d = series[5:] - series[:-5]
    assert means[0] == pytest.approx(np.sum(d * d, axis=1).mean())
    assert variances[0] == pytest.approx(np.sum(d * d, axis=1).var(ddof=1))
