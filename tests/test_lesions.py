"""Lesion metrics and synthetic lesions on tiny generated volumes with known answers."""

import math

import numpy as np
import pytest

from prettier_bids.evaluation import lesions as L
from prettier_bids.training import lesions as S  # synthetic lesions


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
        b = S.blob(rng, d)
        assert 0 <= b.min() and b.max() == pytest.approx(1.0)
        vol = float((b > 0.5).sum())
        assert 0.3 * math.pi / 6 * d ** 3 <= vol <= 3 * math.pi / 6 * d ** 3 + 8
        assert ((b > 0.05) & (b < 0.95)).any()  # soft edge


def test_lesion_masks_come_from_the_split_manifest_not_from_file_names(tmp_path):
    """A volume's consensus lesion mask is the one the split's ``lesion_masks`` names (no naming rule of a
    dataset in the code); a mask named there but absent is an error before training."""
    import nibabel as nib

    from prettier_bids.training.patches import PatchSampler
    from prettier_bids.training.train import load_split_volumes

    vol = _phantom()
    (tmp_path / "hr").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "hr" / "a_FLAIR.nii.gz")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "hr" / "a_p07_T1w.nii.gz")
    mask = np.zeros(vol.shape, np.uint8)
    mask[20:24, 30:34, 40:43] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "hr" / "seg.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "hr" / "a_p07_lesions.nii.gz")  # the old name rule
    vols = load_split_volumes(tmp_path, "train", ["hr/a_FLAIR.nii.gz", "hr/a_p07_T1w.nii.gz"],
                              lesion_masks={"hr/a_FLAIR.nii.gz": "hr/seg.nii.gz"})
    assert vols[0].lesion_source == str(tmp_path / "hr" / "seg.nii.gz") and vols[1].lesion_source is None
    s = PatchSampler(vols, seed=3, lr_rows=6, width=24, min_foreground=0.0,
                     lesions={"real_prob": 1.0, "insert_prob": 0.0})
    assert s._real == [0] and vols[0].lesions.sum() == mask.sum()
    with pytest.raises(FileNotFoundError, match="lesion mask of hr/a_FLAIR.nii.gz not found"):
        load_split_volumes(tmp_path, "train", ["hr/a_FLAIR.nii.gz"], lesion_masks={"hr/a_FLAIR.nii.gz": "hr/no.nii.gz"})
    assert S.contrast_of("hr/openms_p07_ce-gd_T1w.nii.gz") == "T1w"
    assert S.contrast_of("hr/openms_p07_FLAIR.nii.gz") == "FLAIR"
    assert S.contrast_of("hr/openms_p07_lesions.nii.gz") is None


def test_real_scan_protocol_recovers_a_linear_signal():
    """Merging slice pairs, cubic-upsampling and averaging over the original slabs returns the original
    slices exactly for a signal linear along the slice axis (cubic splines and boxcars keep lines)."""
    from prettier_bids.sr.degrade import apply_along_axis
    from prettier_bids.evaluation.benchmark import merge_adjacent_slices, original_slab_matrix
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


# --- synthetic lesions and lesion-aware patch sampling ----------------------------------------------------

def _phantom(seed=0):
    """A 1 mm 'brain': WM 0.6 with noise, brighter GM rim, dark central ventricles, zero outside."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[:72, :80, :72].astype(np.float32)
    r = np.sqrt(((g - np.array([36, 40, 36])[:, None, None, None]) ** 2).sum(0))
    vol = np.where(r < 32, 0.6, 0.0).astype(np.float32)
    vol[(r >= 27) & (r < 32)] = 0.8
    vol[r < 9] = 0.1
    vol += (r < 32) * 0.02 * rng.standard_normal(vol.shape).astype(np.float32)
    return vol


def test_inserter_paints_flair_bright_t1_dark_with_soft_edges():
    vol = _phantom()
    ins = S.LesionInserter({"per_patch": 4})
    for contrast, brighter in (("FLAIR", True), ("T1w", False)):
        out, mask = ins.insert(vol, np.random.default_rng(1), contrast, key=contrast, n=4)
        assert mask.max() == pytest.approx(1.0, abs=1e-3) and ((mask > 0.05) & (mask < 0.95)).any()
        assert np.array_equal(out[mask == 0], vol[mask == 0])  # untouched outside the lesions
        core = mask > 0.99
        ratio = np.median(out[core] / vol[core])
        r = ins.stats["intensity_ratio"][contrast]
        assert r["p10"] - 1e-3 <= ratio <= r["p90"] + 1e-3
        assert (ratio > 1) == brighter
    # a block region: lesions only inside, same shape as the block
    region = (slice(10, 40), slice(20, 60), slice(30, 50))
    out, mask = ins.insert(vol, np.random.default_rng(2), "FLAIR", key="FLAIR", region=region, n=6)
    assert out.shape == mask.shape == (30, 40, 20)
    # a contrast without statistics gets nothing
    out, mask = ins.insert(vol, np.random.default_rng(2), "PD", key="PD", n=3)
    assert not mask.any() and np.array_equal(out, vol)


def _vols():
    from scipy import ndimage

    from prettier_bids.training.patches import TrainVolume

    rng = np.random.default_rng(5)
    v = ndimage.gaussian_filter(rng.random((40, 120, 110)).astype(np.float32), 2) * 3
    return [TrainVolume("a", v.astype(np.float32))]


def test_patch_batches_unchanged_with_lesion_option_off():
    """Reference sums from the sampler before the lesion option existed (same code path when it is off)."""
    from prettier_bids.training.patches import PatchSampler

    expected = [(6, 5.0, 4644.573502779007, 27870.29087626934), (5, 4.0, 4493.246335983276, 22466.518372297287),
                (6, 4.5, 4651.8881895542145, 27911.07174384594)]
    for kwargs in ({}, {"lesions": None}, {"lesions": {}}):
        s = PatchSampler(_vols(), seed=11, lr_rows=8, width=32, min_foreground=0.0, **kwargs)
        for factor, t, lr_sum, hr_sum in expected:
            b = s.batch(4)
            assert (b.factor, b.thickness, b.lesion) == (factor, t, None)
            assert float(b.lr.astype(np.float64).sum()) == pytest.approx(lr_sum, rel=1e-6)
            assert float(b.hr.astype(np.float64).sum()) == pytest.approx(hr_sum, rel=1e-6)


def test_patch_sampler_lesions_real_and_synthetic():
    from prettier_bids.training.patches import PatchSampler, TrainVolume, fixed_batches

    vol = _phantom()
    real = np.zeros(vol.shape, bool)
    real[20:24, 30:34, 40:43] = True
    tv = TrainVolume("hr/openms_p99_FLAIR.nii.gz", vol, lesions=real)
    # lesion-rich sampling: every patch contains a real lesion voxel
    s = PatchSampler([tv], seed=3, lr_rows=6, width=24, min_foreground=0.0,
                     lesions={"real_prob": 1.0, "insert_prob": 0.0})
    b = s.batch(6, spacing=4, thickness=4.0)
    assert b.lesion.shape == b.hr.shape and b.lesion.dtype == np.float32
    assert (b.lesion.reshape(6, -1).max(axis=1) == 1).all()
    # synthetic lesions: the HR target is brighter than the volume where the map says lesion
    s = PatchSampler([TrainVolume("hr/openms_p99_FLAIR.nii.gz", vol)], seed=4, lr_rows=6, width=48,
                     min_foreground=0.0, augment=False,
                     lesions={"real_prob": 0.0, "insert_prob": 1.0, "per_patch": 4, "periventricular_prob": 1.0})
    found = 0
    for _ in range(4):
        b = s.batch(4, spacing=4, thickness=4.0)
        assert b.lesion.min() >= 0 and b.lesion.max() <= 1
        found += int((b.lesion > 0.99).sum())
        assert np.all(b.hr[b.lesion > 0.99] > 0.6)  # FLAIR lesions in WM (0.6) or GM (0.8) are brighter
    assert found > 0
    # not on volumes outside the 'volumes' filter; never in validation batches
    s = PatchSampler([TrainVolume("hr/mass_t99_T1w.nii.gz", vol)], seed=4, lr_rows=6, width=48,
                     min_foreground=0.0, lesions={"insert_prob": 1.0, "volumes": ["openms_"]})
    assert not s.batch(4, spacing=4, thickness=4.0).lesion.any()
    s = PatchSampler([TrainVolume("hr/mass_t99_T1w.nii.gz", vol)], seed=4, lr_rows=6, width=48,
                     min_foreground=0.0, lesions={"insert_prob": 1.0, "per_patch": 4})  # default: every volume
    assert any(s.batch(4, spacing=4, thickness=4.0).lesion.any() for _ in range(4))
    vb = fixed_batches([tv], 1, 2, 0, 4, 4.0, lr_rows=6, width=24, min_foreground=0.0, lesions={"real_prob": 1})
    assert vb[0].lesion is None
    with pytest.raises(ValueError, match="unknown lesion option"):
        PatchSampler([tv], lesions={"insert_probability": 1})


def test_lesion_weighted_l1():
    import torch
    import torch.nn.functional as F

    from prettier_bids.training.losses import lesion_weighted_l1

    pred, target = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    pred[0, 1, 0, 0] = 1.0  # the only error, inside the lesion
    lesion = torch.zeros(1, 3, 4, 4)
    lesion[0, 1, 0, 0] = 1.0
    assert lesion_weighted_l1(pred, target, torch.zeros_like(lesion)).item() == pytest.approx(F.l1_loss(pred, target).item())
    assert lesion_weighted_l1(pred, target, lesion, weight=0).item() == pytest.approx(1 / 48)
    assert lesion_weighted_l1(pred, target, lesion, weight=4).item() == pytest.approx(5 / 52)


# --- the two benchmarks end to end on generated data (tiny random model) ----------------------------------

def _write_case(root):
    import nibabel as nib

    vol = _phantom()[10:62, 12:68, 14:58]  # 52 x 56 x 44
    les = np.zeros(vol.shape, np.uint8)
    les[20:25, 20:25, 18:24] = 1
    les[30:33, 34:37, 20:23] = 1
    vol = vol.copy()
    vol[les > 0] *= 1.6
    (root / "hr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(vol * 1000, np.eye(4)), root / "hr" / "x_FLAIR.nii.gz")
    nib.save(nib.Nifti1Image(les, np.eye(4)), root / "hr" / "x_lesions.nii.gz")
    return vol


def test_lesion_benchmark_cli(tmp_path, tiny_weights):
    import json

    from prettier_bids.cli.evaluate import main

    _write_case(tmp_path / "data")
    out = tmp_path / "out"
    args = ["lesions", "--data-root", str(tmp_path / "data"), "--case", "hr/x_FLAIR.nii.gz:hr/x_lesions.nii.gz",
            "--models", str(tiny_weights), "--axes", "1,2", "--settings", "6:5", "--out-dir", str(out)]
    assert main(args) == 0
    res = json.loads((out / "lesions.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    methods = [r["method"] for r in res["summary"]]
    assert methods == ["truth (1 mm)", "cubic", "tiny", "tiny (thickness hidden)"]  # --thickness both, the default
    assert res["thickness"] == "both"
    assert {r["axis"] for r in res["rows"]} == {"coronal", "axial"}
    cubic = res["summary"][1]
    assert 5 < cubic["lesion_psnr"] < 60 and 0 < cubic["contrast_kept_median"] < 1.2
    assert res["summary"][0]["sensitivity"] == 1.0  # the bright cubes are found on the truth
    assert "| cubic |" in (out / "lesions.md").read_text()
    assert res["precision"] in ("fp32", "bf16") and "network arithmetic" in (out / "lesions.md").read_text()
    assert main(args[:2] + [str(tmp_path / "nowhere")] + args[3:]) == 66


def test_real_scan_benchmark_script(tmp_path, tiny_weights):
    import json
    import runpy

    import nibabel as nib

    rng = np.random.default_rng(0)
    (tmp_path / "thick").mkdir()
    from scipy import ndimage

    head = ndimage.gaussian_filter(rng.random((48, 44, 14)), (2, 2, 0.6)).astype(np.float32)
    head[:4] = head[-4:] = 0
    nib.save(nib.Nifti1Image(head * 1000, np.diag([0.9, 0.9, 3.0, 1])), tmp_path / "thick" / "y_FLAIR.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "thick" / "y_lesionchange.nii.gz")
    mod = runpy.run_path(str(__import__("pathlib").Path(__file__).parents[1] / "benchmarks" / "real.py"), run_name="t")
    rc = mod["main"](["--data-root", str(tmp_path), "--models", str(tiny_weights), "--out-dir", str(tmp_path / "o"),
                      "--precision", "fp32"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "real.json").read_text())
    assert res["precision"] == "fp32" and "network arithmetic fp32;" in (tmp_path / "o" / "real.md").read_text()
    assert [r["scan"] for r in res["rows"]] == ["y_FLAIR.nii.gz"]  # the lesion-change mask is skipped
    r = res["rows"][0]
    assert r["factor"] == 6 and r["merged_spacing"] == 6.0 and r["n_slices_compared"] >= 12
    assert r["tiny"]["gain_psnr"] == pytest.approx(r["tiny"]["psnr"] - r["cubic"]["psnr"])
    assert 10 < r["cubic"]["psnr"] < 80


def test_two_weights_files_of_one_name_are_told_apart_not_replaced(tmp_path, tiny_weights, capsys):
    import shutil

    import nibabel as nib

    from prettier_bids.sr.reconstruct import load_models

    for run in ("R", "C", "C/C"):
        (tmp_path / run).mkdir()
        shutil.copy(tiny_weights, tmp_path / run / "last.pt")
    a, b, cc = (str(tmp_path / r / "last.pt") for r in ("R", "C", "C/C"))
    assert list(load_models(f"{a},{b}")) == ["R/last", "C/last"]
    assert list(load_models(f"{a},{tiny_weights}")) == ["last", "tiny"]
    with pytest.raises(ValueError, match="more than once"):
        load_models(f"{a},{b},{tmp_path / 'C' / '..' / 'C' / 'last.pt'}")  # the same file, spelt otherwise
    with pytest.raises(ValueError, match="labelled 'C/last'"):
        load_models(f"{a},{b},{cc}")
    mod = __import__("runpy").run_path(str(__import__("pathlib").Path(__file__).parents[1] / "benchmarks" / "real.py"),
                                       run_name="t")
    (tmp_path / "thick").mkdir()
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.diag([1, 1, 3, 1])), tmp_path / "thick" / "y_FLAIR.nii.gz")
    capsys.readouterr()
    for models, code in ((f"{a},{a}", 64), (str(tmp_path / "none.pt"), 66)):
        assert mod["main"](["--data-root", str(tmp_path), "--models", models]) == code
        err = capsys.readouterr().err.strip()
        assert err.startswith("real.py: error:") and "\n" not in err and "Traceback" not in err, err
