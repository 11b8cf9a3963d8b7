"""Issue 12 levers: thickness/spacing conditioning (FiLM) and in-plane pairs from thick scans (SMORE-style)."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from prettier_bids import exitcodes
from prettier_bids.sr.degrade import centre_row, profile_matrix
from prettier_bids.sr.models import WeightsError, build_model, load_init_state, load_weights, save_weights
from prettier_bids.sr.models.common import condition_features
from prettier_bids.training.patches import PatchSampler, TrainVolume, fixed_batches, load_inplane_volume
from prettier_bids.sr.reconstruct import LoadedModel, super_resolve
from prettier_bids.training.train import Trainer, batch_conditions, load_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(n_blocks=1, n_feats=8, tail_feats=8)


def _perturbed_film(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.film.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def _thick_image(shape=(40, 36, 8), zooms=(0.7, 0.7, 4.0), seed=1):
    rng = np.random.default_rng(seed)
    data = ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32) * 1000
    return nib.Nifti1Image(data, np.diag(list(zooms) + [1.0]))


def test_conditioned_model_starts_as_the_unconditioned_one():
    """FiLM starts as the identity: a conditioned model from unconditioned weights computes exactly what
    they computed, whatever the conditions; the extra tensors are reported; other archs are refused."""
    plain = build_model("edsr-compact", **TINY)[0].eval()
    cond_model = build_model("edsr-compact", conditioning=True, **TINY)[0].eval()
    fresh = load_init_state(cond_model, plain.state_dict())
    assert fresh and all(k.startswith("film.") for k in fresh)
    x = torch.rand(2, 3, 8, 24)
    cond = torch.tensor([condition_features(4.0, 0.8), condition_features(1.0, 1.0)])
    with torch.no_grad():
        assert torch.equal(plain(x, 6), cond_model(x, 6, cond))
        assert torch.equal(plain(x, 6), plain(x, 6, cond))  # unconditioned models ignore cond
    with pytest.raises(WeightsError, match="do not fit"):
        load_init_state(build_model("edsr-compact", n_blocks=2, n_feats=8, tail_feats=8)[0], plain.state_dict())
    assert condition_features(1.0, 1.0) == [0.0, 0.0]


def test_conditioning_changes_output_and_survives_the_weights_file(tmp_path):
    model = _perturbed_film(build_model("edsr-compact", conditioning=True, **TINY)[0].eval())
    x = torch.rand(1, 3, 8, 24)
    with torch.no_grad():
        a = model(x, 6, torch.tensor([condition_features(1.0, 1.0)]))
        b = model(x, 6, torch.tensor([condition_features(1.0, 5 / 6)]))
        c = model(x, 6, torch.tensor([condition_features(4.0, 1.0)]))
        assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4
        assert torch.equal(model(x, 6), a)  # no cond: 1 mm planes, contiguous slices
    save_weights(tmp_path / "w.pt", model, "edsr", {**TINY, "conditioning": True})
    loaded, payload = load_weights(tmp_path / "w.pt")
    assert loaded.conditioned and payload["config"]["conditioning"] is True
    with torch.no_grad():
        assert torch.equal(loaded(x, 6, torch.tensor([condition_features(1.0, 5 / 6)])), b)


def test_slice_thickness_reaches_a_conditioned_model_only():
    """--slice-thickness changes a conditioned model's output (and its sidecar says what it was told);
    an unconditioned model's output stays byte-identical. (The network's output: the projection onto the
    input, which uses the thickness for every model, is off here.)"""
    img = _thick_image(shape=(24, 20, 8), zooms=(1.0, 1.0, 6.0))
    cond_model = _perturbed_film(build_model("edsr-compact", conditioning=True, **TINY)[0])
    plain = build_model("edsr-compact", **TINY)[0]
    out = {}
    for label, m in (("cond", cond_model), ("plain", plain)):
        lm = LoadedModel(m.eval(), label, "", "")
        for t in (6.0, 5.0):
            out[label, t] = super_resolve(img, model=lm, slice_thickness=t, batch_size=4, project=False)
    assert np.abs(out["cond", 6.0].image.get_fdata() - out["cond", 5.0].image.get_fdata()).max() > 1e-3
    np.testing.assert_array_equal(out["plain", 6.0].image.get_fdata(), out["plain", 5.0].image.get_fdata())
    assert out["cond", 5.0].info["Conditioning"] == {"PlaneSpacing": 1.0, "ThicknessRatio": 0.8333}
    assert "Conditioning" not in out["plain", 5.0].info
    # ratios outside the trained range (t = 0.6 s .. s) are clamped to it: 2 mm at 6 mm is told 0.6
    lm = LoadedModel(cond_model, "cond", "", "")
    thin = super_resolve(img, model=lm, slice_thickness=2.0, batch_size=4, project=False)
    edge = super_resolve(img, model=lm, slice_thickness=3.6, batch_size=4, project=False)
    assert thin.info["Conditioning"]["ThicknessRatio"] == 0.6 and thin.info["SliceThickness"] == 2.0
    np.testing.assert_array_equal(thin.image.get_fdata(), edge.image.get_fdata())


def test_inplane_volume_keeps_the_thick_axis(tmp_path):
    """In-plane pairs come from the in-plane grid inference uses (anti-aliased resampling to ~1 mm)."""
    from prettier_bids.sr.preprocess import inplane_plan, resample_inplane

    img = _thick_image()
    path = tmp_path / "flair.nii.gz"
    nib.save(img, path)
    tv = load_inplane_volume(path, name="thick/flair")
    assert tv.thick_axis == 2 and tv.plane_spacing == pytest.approx(4.0)
    assert tv.data.shape == (28, 25, 8)  # 40 x 0.7 mm -> 28 mm, 36 x 0.7 -> 25 mm; 8 thick slices kept
    shape, imap = inplane_plan(img.shape, (0.7, 0.7, 4.0), 2)
    ref = resample_inplane(img.get_fdata(dtype=np.float32), imap, shape)
    np.testing.assert_allclose(tv.data * (ref.max() / tv.data.max()), np.clip(ref, 0, None), rtol=1e-4, atol=1e-3)
    fg = tv.data[tv.data > 0.05]
    assert np.percentile(fg, 99.5) == pytest.approx(1.0, rel=0.05)


def _thick_volume(n_planes=7, size=80):
    """A thick 'scan' whose planes along axis 2 carry their own index: plane k is a smooth pattern + k."""
    rng = np.random.default_rng(2)
    base = ndimage.gaussian_filter(rng.random((size, size)), 3).astype(np.float32)
    data = np.stack([base + k for k in range(n_planes)], axis=2)
    return TrainVolume("thick/x", data, thick_axis=2, plane_spacing=4.0)


def _hr_volume(shape=(64, 64, 64)):
    rng = np.random.default_rng(0)
    v = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 2.5)
    return TrainVolume("gen0", (v - v.min()) / (v.max() - v.min()))


def test_inplane_pairs_simulate_along_the_plane_and_stack_real_slices():
    thick = _thick_volume()
    s = PatchSampler([_hr_volume(), thick], seed=3, lr_rows=8, width=32, augment=False, min_foreground=0.0,
                     inplane={"prob": 1.0})
    b = s.batch(6, spacing=4, thickness=4.0)
    assert b.lr.shape == (6, 3, 8, 32) and b.hr.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(b.plane_spacing, 4.0)
    for lr, hr in zip(b.lr, b.hr):
        # the 3 channel planes are 3 neighbouring real slices: the plane index steps by one
        k = [np.median(hr[c] - hr[0]) for c in range(3)]
        np.testing.assert_allclose(k, [0, 1, 2], atol=1e-4)
        # each LR row is the slice profile (4 mm boxcar) over 1 mm in-plane rows of the same plane
        w = profile_matrix(32, 1.0, centre_row(4) + 4 * np.arange(8), 4.0, "boxcar")
        np.testing.assert_allclose(lr[1, 2:6], (w @ hr[1])[2:6], atol=1e-5)
    cond = batch_conditions(b)
    np.testing.assert_allclose(cond[:, 0], np.log(4.0), rtol=1e-6)
    np.testing.assert_allclose(cond[:, 1], 0.0)
    # mixed batches: about ``prob`` of the pairs come from the thick scan
    mixed = PatchSampler([_hr_volume(), thick], seed=4, lr_rows=8, width=32, min_foreground=0.0,
                         inplane={"prob": 0.5}).batch(40, spacing=4, thickness=3.0)
    assert 10 <= int((mixed.plane_spacing == 4.0).sum()) <= 30
    assert set(mixed.plane_spacing.tolist()) == {1.0, 4.0}
    assert mixed.conditions()[:, 1] == pytest.approx(0.75)


def test_inplane_option_errors_and_validation_ignores_it():
    thick, hr = _thick_volume(), _hr_volume()
    with pytest.raises(ValueError, match="in-plane pairs need both"):
        PatchSampler([hr, thick], lr_rows=8, width=32)
    with pytest.raises(ValueError, match="in-plane pairs need both"):
        PatchSampler([hr], lr_rows=8, width=32, inplane={"prob": 0.3})
    with pytest.raises(ValueError, match="unknown inplane option"):
        PatchSampler([hr, thick], lr_rows=8, width=32, inplane={"probability": 0.3})
    with pytest.raises(ValueError, match="no 1 mm training volumes"):
        PatchSampler([thick], lr_rows=8, width=32, inplane={"prob": 1.0})
    vb = fixed_batches([hr], 1, 2, seed=1, spacing=4, thickness=4.0, lr_rows=8, width=32, inplane={"prob": 1.0})
    np.testing.assert_array_equal(vb[0].plane_spacing, 1.0)
    with pytest.raises(Exception, match="conditioning must be true or false"):
        load_config(None, {"model": {"conditioning": "yes"}})


def test_conditioned_training_with_inplane_pairs_from_unconditioned_weights(tmp_path):
    """Arm E's recipe end to end on tiny data: a conditioned model starts from unconditioned weights (same
    validation loss before any step), trains on mixed 1 mm / in-plane batches, and its FiLM learns."""
    base = {"model": {"preset": "edsr-compact", **TINY}, "batch_size": 4, "steps": 12, "lr": 2e-3,
            "scheduler": {"name": "constant"}, "degradation": {"spacing_probs": {"4": 1.0}},
            "patch": {"lr_rows": 8, "width": 32, "min_foreground": 0.0},
            "val": {"every": 12, "batches": 1, "batch_size": 4, "seed": 5, "spacing": 4, "thickness": 4.0},
            "log_every": 6}
    vols = [_hr_volume(), _hr_volume()]
    plain_dir = tmp_path / "plain"
    plain = Trainer(load_config(None, base), vols[:1], vols[1:], plain_dir, device="cpu")
    plain.save_weights("init.pt")
    cfg = load_config(None, base).merged({"model": {"conditioning": True}, "init_weights": str(plain_dir / "init.pt"),
                                          "patch": {"inplane": {"prob": 0.5}}})
    tr = Trainer(cfg, vols[:1] + [_thick_volume()], vols[1:], tmp_path / "cond", device="cpu")
    assert tr.model.conditioned
    assert tr.validate()[0] == pytest.approx(plain.validate()[0], abs=1e-7)
    res = tr.fit()
    assert res.step == 12
    assert float(tr.model.film.net[2].weight.detach().abs().sum()) > 0
    model, payload = load_weights(tmp_path / "cond" / "best.pt")
    assert model.conditioned and payload["meta"]["config"]["patch"]["inplane"] == {"prob": 0.5}


def test_cli_refuses_inplane_config_without_thick_scans(tmp_path, capsys):
    from prettier_bids.cli.train import main

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"patch": {"inplane": {"prob": 0.2}}}))
    split = tmp_path / "split.json"
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "a_T1w.nii.gz").write_bytes(b"")  # a split needs a training volume (checked first)
    split.write_text(json.dumps({"train": ["hr/a_T1w.nii.gz"], "validation": ["hr/a_T1w.nii.gz"]}))
    rc = main(["--config", str(cfg), "--data-root", str(tmp_path), "--split", str(split), "--out",
               str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == exitcodes.NOINPUT and len(err) == 1 and "train_inplane" in err[0]
    cfg.write_text(json.dumps({"patch": {"inplane": {"prob": 1.5}}}))
    rc = main(["--config", str(cfg), "--data-root", str(tmp_path), "--split", str(split), "--out",
               str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == exitcodes.NOINPUT and len(err) == 1 and "must be a number from 0 to 1" in err[0]
    cfg.write_text(json.dumps({"patch": {"inplane": None}}))  # an empty (corrupt) volume was a traceback
    rc = main(["--config", str(cfg), "--data-root", str(tmp_path), "--split", str(split), "--out",
               str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == exitcodes.NOINPUT and len(err) == 1 and "Empty file" in err[0] and "a_T1w.nii.gz" in err[0]


def test_patch_evaluation_runs_plain_and_conditioned_models():
    """evaluate_patches (prettier-eval's Table 2) tells a conditioned model the simulated thickness."""
    from prettier_bids.evaluation.benchmark import evaluate_patches

    vol = TrainVolume("gen", _hr_volume((100, 100, 100)).data)  # patches of 16 x 4 rows x 96
    for conditioning in (False, True):
        model = build_model("edsr-compact", conditioning=conditioning, **TINY)[0].eval()
        res = evaluate_patches({"FLAIR": [vol]}, LoadedModel(model, "m", "", ""), n_per_volume=2, spacing=4,
                               thickness=3.0)
        assert res["FLAIR"]["n"] == 2 and np.isfinite(res["FLAIR"]["model"]["PSNR"])
