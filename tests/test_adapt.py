"""Per-scan adaptation (``--adapt``): pairs from the scan's own in-plane axes, a bounded fine-tuning of a copy of
the model, deterministic given the seed, recorded in the sidecar; the loaded model is never changed."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from prettier_bids.cli.sr import main as sr_main
from prettier_bids.sr.adapt import AdaptSettings, AdaptSkipped, adapt_model, inplane_pairs
from prettier_bids.sr.degrade import profile_matrix
from prettier_bids.sr.reconstruct import load_model, super_resolve


def test_pairs_are_the_scans_rows_under_its_slice_profile():
    rng = np.random.default_rng(0)
    x = rng.random((30, 28, 6)).astype(np.float32) + 0.5
    lr, hr = inplane_pairs(x, axis=2, factor=5, thickness_ratio=0.8, profile="boxcar", rng=rng, n=3)
    assert lr.shape[:2] == (3, 3) and hr.shape[2] == lr.shape[2] * 5 and hr.shape[3] == lr.shape[3]
    # every HR window is 3 neighbouring real slices (thick axis), rows/columns of the in-plane grid
    w = profile_matrix(hr.shape[2], 1.0, 2 + 5 * np.arange(lr.shape[2]), 4.0, "boxcar")
    np.testing.assert_allclose(np.einsum("ks,bcsw->bckw", w, hr), lr, rtol=1e-4, atol=1e-4)


def test_too_small_a_scan_is_skipped():
    with pytest.raises(AdaptSkipped):
        inplane_pairs(np.ones((6, 6, 4), np.float32), 2, 5, 1.0, "boxcar", np.random.default_rng(0), 1)


def test_bad_settings_are_refused():
    for kw in ({"steps": 0}, {"batch": 0}, {"learning_rate": 0.0}, {"distill": -1.0}, {"params": "head"}):
        with pytest.raises(ValueError):
            AdaptSettings(**kw)


def test_adaptation_is_deterministic_and_leaves_the_model_alone(thick_nifti, tiny_weights, one_torch_thread):
    model = load_model(weights=tiny_weights)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    img = nib.load(thick_nifti)
    settings = AdaptSettings(steps=3, learning_rate=1e-3, batch=2, seed=5)
    a = super_resolve(img, model=model, slice_thickness=4.0, adapt=settings)
    b = super_resolve(img, model=model, slice_thickness=4.0, adapt=settings)
    plain = super_resolve(img, model=model, slice_thickness=4.0)
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    assert np.array_equal(a.image.get_fdata(), b.image.get_fdata())
    assert not np.array_equal(a.image.get_fdata(), plain.image.get_fdata())
    info = a.info["Adaptation"]
    assert info["Steps"] == 3 and info["Seed"] == 5 and info["LearningRate"] == 1e-3 and info["BatchPairs"] == 2
    assert info["ThicknessRatio"] == 0.8 and info["Seconds"] >= 0
    assert "Adaptation" not in plain.info
    c = super_resolve(img, model=model, slice_thickness=4.0, adapt=AdaptSettings(steps=3, learning_rate=1e-3,
                                                                                  batch=2, seed=6))
    assert not np.array_equal(a.image.get_fdata(), c.image.get_fdata())


def test_adaptation_lowers_the_loss_on_the_scans_pairs(tiny_weights, one_torch_thread):
    rng = np.random.default_rng(1)
    from scipy import ndimage

    x = ndimage.gaussian_filter(rng.random((48, 48, 8)), (2, 2, 0.5)).astype(np.float32) * 4
    model = load_model(weights=tiny_weights).model
    tuned, info = adapt_model(model, x, 2, 4, 4.0, 1.0, settings=AdaptSettings(steps=40, learning_rate=3e-3))
    assert info["L1Last"] < info["L1First"]


def test_distillation_keeps_the_copy_near_the_shipped_model_on_the_scans_windows(tiny_weights, one_torch_thread):
    """``distill`` (research setting of benchmarks/adapt.py): the same steps and learning rate move the copy's
    output on the scan's own inference windows less than without it; ``params="tail"`` tunes the upsampler only."""
    from scipy import ndimage

    from prettier_bids.sr.adapt import scan_windows

    rng = np.random.default_rng(1)
    x = ndimage.gaussian_filter(rng.random((48, 48, 8)), (2, 2, 0.5)).astype(np.float32) * 4
    model = load_model(weights=tiny_weights).model
    win = torch.from_numpy(scan_windows(x, 2, np.random.default_rng(9), 8))
    with torch.no_grad():
        ref = model(win, 4)

    def drift(**kw):
        tuned, info = adapt_model(model, x, 2, 4, 4.0, 1.0, settings=AdaptSettings(steps=40, learning_rate=3e-3, **kw))
        with torch.no_grad():
            return float((tuned(win, 4) - ref).abs().mean()), tuned, info

    free, _, _ = drift()
    held, _, info = drift(distill=10.0)
    assert held < free and info["Distill"] == 10.0
    _, tail, info = drift(params="tail")
    changed = {k for k, v in tail.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.startswith("upsample.") for k in changed) and info["Parameters"] == "tail"


def test_prettier_sr_adapt_option_records_it(thick_nifti, tiny_weights, tmp_path, one_torch_thread):
    out, meta = tmp_path / "o.nii.gz", tmp_path / "o.json"
    rc = sr_main([str(thick_nifti), str(out), "--weights", str(tiny_weights), "--slice-thickness", "4",
                  "--adapt", "--adapt-steps", "2", "--adapt-seed", "3", "-q", "--json", str(meta)])
    assert rc == 0
    info = json.loads(meta.read_text())
    assert info["Adaptation"]["Steps"] == 2 and info["Adaptation"]["Seed"] == 3
    rc = sr_main([str(thick_nifti), str(tmp_path / "p.nii.gz"), "--weights", str(tiny_weights), "-q",
                  "--json", str(tmp_path / "p.json")])
    assert rc == 0 and "Adaptation" not in json.loads((tmp_path / "p.json").read_text())


def test_adapt_steps_without_adapt_is_a_usage_error(thick_nifti, tmp_path, capsys):
    rc = sr_main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method", "cubic", "--adapt", "-q"])
    assert rc == 64 and "--adapt" in capsys.readouterr().err
