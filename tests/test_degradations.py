"""Realistic training degradations (issue 28, item 3): prettier_bids.training.degradations and the ``realistic``
option of PatchSampler."""

import numpy as np
import pytest
from scipy import ndimage

from prettier_bids.training import degradations as D
from prettier_bids.training.config import ConfigError, load_config
from prettier_bids.training.patches import PatchSampler, TrainVolume, fixed_batches


#: sum of the inputs of the first batch of 4 from _vols() with seed 11 (8 x 32 patches), measured at f5cc991, before
#: the realistic option existed: a sampler without it must still give exactly those batches
LR_SUM_WITHOUT_OPTION = 4644.57373046875


def _vols():
    rng = np.random.default_rng(5)
    v = ndimage.gaussian_filter(rng.random((40, 120, 110)).astype(np.float32), 2) * 3
    return [TrainVolume("a", v.astype(np.float32))]


def test_noise_sigma_recovers_known_noise_on_a_smooth_image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    smooth = (0.5 + 0.3 * np.sin(3 * xx) * np.cos(2 * yy)).astype(np.float32)
    for sigma in (0.005, 0.02, 0.05):
        noisy = smooth[None] + rng.normal(0, sigma, (4, 96, 96)).astype(np.float32)
        assert D.noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)
    assert D.noise_sigma(np.repeat(smooth[None], 2, 0)) < 1e-3
    # only neighbourhoods inside the mask count: noise outside it is not seen
    noisy = smooth[None] + rng.normal(0, 0.05, (2, 96, 96)).astype(np.float32) * (xx > 0.5)[None]
    mask = np.broadcast_to(xx < 0.4, noisy.shape)
    assert D.noise_sigma(noisy, mask) < 1e-3
    assert np.isnan(D.noise_sigma(noisy, np.zeros_like(mask)))


def test_rician_noise_level_and_positivity():
    rng = np.random.default_rng(1)
    img = np.full((3, 64, 64), 0.8, np.float32)
    out = D.rician(img, 0.03, rng)
    assert out.min() >= 0 and abs(float(out.std()) - 0.03) < 0.003 and abs(float(out.mean()) - 0.8) < 0.005
    assert D.rician(img, 0.0, rng) is img


def _plan(gamma=1.0, slopes=(0.0, 0.0), blur=0.0, sigma=0.0):
    return D.PairPlan(gamma, slopes, blur, sigma)


def test_degrade_pair_noise_and_blur_on_the_input_only_field_on_both():
    rng = np.random.default_rng(2)
    lr = np.full((3, 8, 32), 0.5, np.float32)
    hr = np.full((3, 48, 32), 0.5, np.float32)
    # a linear field: the input's slice i gets the target's gain at its centre row, i * 6 + centre_row(6)
    lo, ho = D.degrade_pair(lr, hr, _plan(slopes=(0.06, -0.04)), rng, 6)
    assert ho.max() - ho.min() > 0.005 and ho.max() <= 0.5 * 1.1 + 1e-6 and ho.min() >= 0.5 * 0.9 - 1e-6
    assert np.allclose(lo, ho[:, 2::6], atol=1e-6)
    lo, ho = D.degrade_pair(lr, hr, _plan(sigma=0.02), rng, 6)
    assert np.array_equal(ho, hr) and 0.015 < lo.std() < 0.025
    assert D.degrade_pair(lr, hr, None, rng, 6) == (lr, hr)


def test_contrast_acts_before_the_slice_simulation():
    """lr must stay the slice simulation of hr: the power is applied to the 1 mm rows, not to the slices."""
    from prettier_bids.sr.degrade import extract_pair

    vol = np.zeros((40, 60, 40), np.float32)
    vol[:, :31] = 1.0  # a sharp edge across the slices
    vol[:, 31:] = 0.2
    plan = _plan(gamma=0.85)
    args = (1, 0, 20, 0, 8, 6, 5.0, "boxcar", 6, 32)
    lr_t, hr_t = extract_pair(vol, *args, plan.contrast)
    lr_ref, _ = extract_pair(plan.contrast(vol), *args)
    assert np.allclose(lr_t, lr_ref) and np.allclose(hr_t, extract_pair(vol, *args)[1] ** np.float32(0.85))
    lr_plain, _ = extract_pair(vol, *args)
    assert np.abs(lr_plain ** 0.85 - lr_t).max() > 0.01  # a power after the averaging would differ at the edge


def test_blur_softens_the_input_columns_and_respects_plane_spacing():
    rng = np.random.default_rng(3)
    lr = np.zeros((3, 8, 32), np.float32)
    lr[:, :, ::2] = 1.0
    lo, _ = D.degrade_pair(lr, lr, _plan(blur=1.0), rng, 1)
    assert np.abs(np.diff(lo, axis=2)).mean() < 0.2 * np.abs(np.diff(lr, axis=2)).mean()
    planes = np.zeros((3, 8, 32), np.float32)
    planes[1] = 1.0
    near, _ = D.degrade_pair(planes, planes, _plan(blur=0.6), rng, 1, plane_spacing=1.0)
    far, _ = D.degrade_pair(planes, planes, _plan(blur=0.6), rng, 1, plane_spacing=6.0)
    assert near[0].mean() > 0.1 and far[0].mean() < 1e-3  # 0.6 mm hardly reaches a plane 6 mm away


def test_draw_plan_ranges():
    rng = np.random.default_rng(4)
    cfg = D.realistic_option({"prob": 1.0, "noise": [0.01, 0.02], "contrast": 0.2, "bias": 0.1})
    plans = [D.draw_plan(cfg, rng) for _ in range(200)]
    assert all(0.8 <= p.gamma <= 1.2 and 0.01 <= p.sigma <= 0.02 and abs(p.slopes[0]) <= 0.05 for p in plans)
    assert all(D.draw_plan(D.realistic_option({"prob": 0.0}), rng) is None for _ in range(20))


def test_option_off_leaves_batches_unchanged_and_validation_ignores_it():
    kw = dict(seed=11, lr_rows=8, width=32, min_foreground=0.0)
    a = PatchSampler(_vols(), **kw).batch(4)
    # the batches of a sampler without realistic degradations, as before they existed (f5cc991)
    assert float(a.lr.sum()) == pytest.approx(LR_SUM_WITHOUT_OPTION, rel=1e-6)
    c = PatchSampler(_vols(), realistic={"prob": 1.0}, **kw).batch(4)
    assert not np.array_equal(a.lr, c.lr)
    assert PatchSampler(_vols(), realistic={}, **kw).realistic_cfg == D.REALISTIC_DEFAULTS  # {}: the defaults
    v1 = fixed_batches(_vols(), 1, 4, 7, lr_rows=8, width=32, min_foreground=0.0)[0]
    v2 = fixed_batches(_vols(), 1, 4, 7, lr_rows=8, width=32, min_foreground=0.0, realistic={"prob": 1.0})[0]
    assert np.array_equal(v1.lr, v2.lr)


def test_thickness_jitter_changes_the_simulation_not_the_recorded_thickness():
    # a paraboloid: a boxcar slice of thickness t over it reads t^2/12 (x curvature) above its centre row,
    # whatever the slice axis, so (input - target at the slice centre) tells each pair's simulated thickness
    i = np.arange(60, dtype=np.float32) - 30
    vol = (i[:, None, None] ** 2 + i[None, :, None] ** 2 + i[None, None, :] ** 2) / 900.0
    kw = dict(seed=11, lr_rows=6, width=24, min_foreground=0.0, augment=False)

    def excess(realistic):
        b = PatchSampler([TrainVolume("p", vol)], realistic=realistic, **kw).batch(8, spacing=6, thickness=4.0)
        assert b.thickness == 4.0
        return np.round(b.lr[:, 1, 2, 5] - b.hr[:, 1, 2 * 6 + 2, 5], 6)  # centre_row(6) = 2

    assert len(set(excess({"prob": 0.0}))) == 1
    assert len(set(excess({"prob": 0.0, "thickness_jitter": 0.3}))) > 4


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown realistic option"):
        PatchSampler(_vols(), realistic={"noize": [0, 0.1]})
    with pytest.raises(ValueError, match="low <= high"):
        D.realistic_option({"noise": [0.1, 0.0]})
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        D.realistic_option({"bias": 1.5})
    cfg = load_config(overrides={"patch": {"realistic": {"prob": 0.3}}})
    assert cfg.patch.realistic == {"prob": 0.3}
    with pytest.raises(ConfigError):
        load_config(overrides={"patch": {"realism": {}}})
    for bad in ({"noize": 1}, {"bias": 5}, {"noise": 0.02}, {"prob": "x"}, [1]):  # refused when read
        with pytest.raises(ConfigError, match="realistic"):
            load_config(overrides={"patch": {"realistic": bad}})
