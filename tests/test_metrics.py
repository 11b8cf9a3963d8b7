"""Evaluation metrics: masked volume PSNR/SSIM and the patch IQMs order a better image above a worse one."""

import numpy as np

from prettier_bids.sr.metrics import patch_metrics, psnr, ssim


def test_masked_psnr_value_and_ssim_order():
    ref = np.zeros((10, 10, 10))
    pred = ref.copy()
    pred[0] = 0.1  # error only outside the mask
    mask = np.zeros_like(ref, bool)
    mask[2:] = True
    assert psnr(pred, ref, mask) == float("inf")
    assert abs(psnr(pred, ref) - 30.0) < 1e-9  # mse = 0.1**2 on a tenth of the voxels
    rng = np.random.default_rng(0)
    img = rng.random((24, 24, 24))
    assert ssim(img + 0.01 * rng.standard_normal(img.shape), img) > ssim(img + 0.2 * rng.standard_normal(img.shape), img)


def test_patch_metrics_rank_closer_prediction_higher():
    rng = np.random.default_rng(1)
    from scipy import ndimage

    ref = ndimage.gaussian_filter(rng.random((2, 3, 48, 48)), (0, 0, 2, 2)).astype(np.float32)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    good = ref + 0.02 * rng.standard_normal(ref.shape).astype(np.float32)
    bad = ndimage.uniform_filter(ref, (1, 1, 7, 1))  # blurred along the "slice" axis
    g, b = patch_metrics(good, ref), patch_metrics(bad, ref)
    for key in g:
        assert g[key] > b[key], key
    assert {"PSNR", "SSIM"} <= set(g)
