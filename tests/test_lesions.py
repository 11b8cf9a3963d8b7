"""Lesion metrics and synthetic lesions on tiny generated volumes with known answers."""

import math

import numpy as np
import pytest

from prettier_bids.sr import lesions as L


def _cube(shape, lo, size):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


def test_lesion_psnr_uses_dilated_mask_only():
    ref = np.zeros((20, 20, 20), np.float32)
    les = _cube(ref.shape, (8, 8, 8), 3)
    region = np.zeros_like(les)
    region[7:12, 8:11, 8:11] = region[8:11, 7:12, 8:11] = region[8:11, 8:11, 7:12] = True  # 1-voxel dilation
    pred = ref.copy()
    pred[region] += 0.1  # error 0.1 everywhere in the region -> 20 dB
    pred[0, 0, 0] = 5.0  # outside: ignored
    assert L.lesion_psnr(pred, ref, les) == pytest.approx(20.0, abs=1e-4)
    pred[7, 7, 7] = 5.0  # corner voxel is not in a 6-connected 1-voxel dilation
    assert L.lesion_psnr(pred, ref, les) == pytest.approx(20.0, abs=1e-4)


def test_contrast_kept_ring_excludes_other_lesions_and_small_lesions():
    shape = (30, 30, 30)
    brain = np.ones(shape, bool)
    ref = np.ones(shape, np.float32)
    big = _cube(shape, (10, 10, 10), 3)  # 27 voxels
    other = _cube(shape, (14, 10, 10), 2)  # 8 voxels, 1 voxel gap from big (inside big's 2-voxel ring)
    ref[big] = 3.0
    ref[other] = 9.0
    pred = ref.copy()
    pred[big] = 2.0  # contrast 1 instead of 2
    mask = big | other
    cons = L.contrast_kept(pred, ref, mask, brain)
    assert len(cons) == 1  # the 8-voxel lesion is below the 10-voxel minimum
    assert cons[0].voxels == 27
    assert cons[0].truth == pytest.approx(2.0)  # ring mean is 1: the other lesion (9.0) was excluded
    assert cons[0].kept == pytest.approx(0.5)
    assert L.median_kept(cons) == pytest.approx(0.5)
    # a ring voxel outside the brain is excluded as well
    brain2 = brain.copy()
    brain2[:, :, :10] = False
    ref2 = ref.copy()
    ref2[:, :, :10] = 100.0
    assert L.contrast_kept(ref2, ref2, mask, brain2)[0].truth == pytest.approx(2.0)


def test_simple_segmentation_threshold_size_and_rim():
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[2:38, 2:38, 2:38] = True
    vol = np.where(brain, 1.0 + 0.01 * rng.standard_normal(shape), 0).astype(np.float32)
    lesion = _cube(shape, (15, 15, 15), 4)  # 64 voxels, deep
    tiny = _cube(shape, (28, 28, 28), 2)  # 8 voxels < 10: dropped
    rim = _cube(shape, (2, 20, 20), 3)  # at the brain edge: outside the eroded mask
    vol[lesion | tiny | rim] = 3.0
    seg = L.simple_segmentation(vol, brain)
    assert seg[lesion].all()
    assert not seg[tiny].any()
    assert not seg[rim].any()
    assert seg.sum() == 64


def test_segmentation_scores_lesionwise():
    shape = (30, 30, 30)
    t1, t2 = _cube(shape, (3, 3, 3), 3), _cube(shape, (20, 20, 20), 3)
    fp = _cube(shape, (3, 20, 3), 2)
    seg = _cube(shape, (4, 4, 4), 3) | fp  # overlaps t1 by 8 voxels
    s = L.segmentation_scores(seg, t1 | t2)
    assert s["sensitivity"] == pytest.approx(0.5)
    assert s["precision"] == pytest.approx(0.5)
    assert s["dice"] == pytest.approx(2 * 8 / (35 + 54))
    assert s["n_truth_lesions"] == 2 and s["n_found"] == 2


def test_invented_ml_tolerates_one_voxel():
    shape = (30, 30, 30)
    truth = _cube(shape, (5, 5, 5), 3)
    seg = _cube(shape, (6, 5, 5), 3) | _cube(shape, (20, 20, 20), 3)  # shifted by 1 + a new 27-voxel blob
    assert L.invented_ml(seg, truth) == pytest.approx(0.027)
    assert L.invented_ml(seg, truth, tolerance=0) == pytest.approx(0.036)


def test_blob_size_and_softness():
    rng = np.random.default_rng(3)
    for d in (2.0, 6.0, 15.0):
        b = L.blob(rng, d)
        assert 0 <= b.min() and b.max() == pytest.approx(1.0)
        vol = float((b > 0.5).sum())
        assert 0.3 * math.pi / 6 * d ** 3 <= vol <= 3 * math.pi / 6 * d ** 3 + 8
        assert ((b > 0.05) & (b < 0.95)).any()  # soft edge


def test_lesion_mask_for(tmp_path):
    (tmp_path / "openms_p07_lesions.nii.gz").write_bytes(b"x")
    assert L.lesion_mask_for(tmp_path / "openms_p07_FLAIR.nii.gz") == tmp_path / "openms_p07_lesions.nii.gz"
    assert L.lesion_mask_for(tmp_path / "openms_p07_ce-gd_T1w.nii.gz") == tmp_path / "openms_p07_lesions.nii.gz"
    assert L.lesion_mask_for(tmp_path / "openms_p19_FLAIR.nii.gz") is None
    assert L.lesion_mask_for(tmp_path / "mass_t03_T1w.nii.gz") is None
    assert L.contrast_of("hr/openms_p07_ce-gd_T1w.nii.gz") == "T1w"
    assert L.contrast_of("hr/openms_p07_FLAIR.nii.gz") == "FLAIR"


def test_real_scan_protocol_recovers_a_linear_signal():
    """Merging slice pairs, cubic-upsampling and averaging over the original slabs returns the original
    slices exactly for a signal linear along the slice axis (cubic splines and boxcars keep lines)."""
    from prettier_bids.sr.degrade import apply_along_axis
    from prettier_bids.sr.evaluate import merge_adjacent_slices, original_slab_matrix
    from prettier_bids.sr.reconstruct import cubic_array

    vol = np.broadcast_to(np.arange(41, dtype=np.float32)[None, None, :] * 0.5 + 1, (4, 5, 41)).copy()
    merged = merge_adjacent_slices(vol, 2)
    assert merged.shape == (4, 5, 20)
    assert np.allclose(merged[..., 0], 1.25)
    for factor in (6, 7, 8):
        up = cubic_array(merged, 2, factor)
        w, idx = original_slab_matrix(20, factor)
        assert idx[0] in (0, 1) and idx[-1] == 39  # slice 40 was dropped (odd count)
        back = apply_along_axis(w, up, 2)
        inner = (idx > 14) & (idx < 26)  # away from the spline's edge conditions
        # odd factors put the original centres at quarter rows: a small staircase error of the boxcar
        assert np.allclose(back[..., inner], vol[..., idx[inner]], atol=1e-4 if factor % 2 == 0 else 1e-2)
