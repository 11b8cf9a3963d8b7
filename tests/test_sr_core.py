"""SR core: forward model, grids, sliding-window merge, consistency, models."""

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from prettier_bids.sr import degrade
from prettier_bids.sr.consistency import check_consistency, project_onto_input
from prettier_bids.sr.models import PRESETS, UNetDiscriminatorSN, build_model, count_parameters
from prettier_bids.sr.preprocess import InputError, find_slice_axis, intensity_scale, restore_intensity
from prettier_bids.sr.reconstruct import LoadedModel, super_resolve, sweep


def smooth_phantom(shape=(40, 44, 96), seed=0):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), sigma=6)
    return (x - x.min()) / (x.max() - x.min())


def test_profile_matrix_boxcar_and_gaussian_rows():
    w = degrade.profile_matrix(30, 1.0, [10.0], 5.0, "boxcar")
    assert w.shape == (1, 30)
    np.testing.assert_allclose(w[0, 8:13], 0.2, atol=1e-6)  # 5 voxels of 1 mm fully inside
    assert w[0, :8].sum() == 0 and w[0, 13:].sum() == 0
    # A slice centred between voxels takes half voxels at its edges.
    w = degrade.profile_matrix(30, 1.0, [10.5], 5.0, "boxcar")
    np.testing.assert_allclose(w[0, 7:15], [0, 0.1, 0.2, 0.2, 0.2, 0.2, 0.1, 0], atol=1e-6)
    g = degrade.profile_matrix(60, 1.0, [30.0], 5.0, "gaussian")[0]
    assert abs(g.sum() - 1) < 1e-5 and g.argmax() == 30
    fwhm = (g >= g.max() / 2).sum()
    assert 4 <= fwhm <= 6


def test_degrade_then_cubic_recovers_smooth_phantom():
    hr = smooth_phantom()
    r = 3
    c = degrade.centre_row(r)
    d = degrade.simulate_thick_slices(hr, np.eye(4), axis=2, thickness=1.0, spacing=3.0, first_centre_mm=c)
    rec = degrade.apply_along_axis(degrade.cubic_upsample_matrix(d.data.shape[2], r), d.data, 2)
    n = rec.shape[2]
    err = np.abs(rec[..., 2:n - 3] - hr[..., 2:n - 3]).max()
    assert err < 0.03, err


def test_mni_template_degradation_shape_and_affine():
    from nilearn.datasets import load_mni152_template

    tpl = load_mni152_template(resolution=1)
    data = tpl.get_fdata(dtype=np.float32)
    for axis in range(3):
        d = degrade.simulate_thick_slices(data, tpl.affine, axis=axis, thickness=5.0, spacing=6.0)
        n_expected = int(np.floor((data.shape[axis] - 5.0) / 6.0)) + 1
        expected_shape = list(data.shape)
        expected_shape[axis] = n_expected
        assert d.data.shape == tuple(expected_shape)
        zooms = np.sqrt((d.affine[:3, :3] ** 2).sum(0))
        assert zooms[axis] == pytest.approx(6.0)
        # Slice k's world centre is the mean world position of the HR voxels it integrates.
        k = n_expected // 2
        centre_mm = d.first_centre_mm + 6.0 * k
        idx = np.zeros(4)
        idx[axis], idx[3] = k, 1
        hr_idx = np.zeros(4)
        hr_idx[axis], hr_idx[3] = centre_mm, 1
        np.testing.assert_allclose(d.affine @ idx, tpl.affine @ hr_idx, atol=1e-6)
        # The stack is centred in the field of view.
        first, last = d.first_centre_mm - 2.5, d.first_centre_mm + 6.0 * (n_expected - 1) + 2.5
        assert abs((first + 0.5) - (data.shape[axis] - 0.5 - last)) <= 1.0 + 1e-6


def _lr_image(axis, affine_rot=None, shape=(48, 52, 40), spacing=5.0):
    rng = np.random.default_rng(1)
    data = ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32) * 1000
    zooms = [1.0, 1.0, 1.0]
    zooms[axis] = spacing
    aff = np.diag(zooms + [1.0])
    if affine_rot is not None:
        aff[:3, :3] = affine_rot @ aff[:3, :3]
    aff[:3, 3] = [-20.0, 15.0, 7.5]
    return nib.Nifti1Image(data, aff)


def _rotation(deg_x, deg_y):
    ax, ay = np.deg2rad(deg_x), np.deg2rad(deg_y)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return rx @ ry


@pytest.mark.parametrize("axis,rot", [(2, None), (0, None), (1, None), (2, "oblique")])
def test_reconstruction_grid_covers_input_fov(axis, rot):
    rot_m = _rotation(17, -9) if rot else None
    img = _lr_image(axis, rot_m)
    res = super_resolve(img, method="cubic")
    out = res.image
    zooms = np.sqrt((out.affine[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(zooms, 1.0, atol=1e-6)  # 5 mm -> factor 5 -> 1 mm
    assert res.info["SliceAxis"] == axis and res.info["UpsamplingFactor"] == 5
    assert out.shape[axis] == img.shape[axis] * 5
    # Every input slice centre lands exactly on an output voxel centre.
    for k in range(img.shape[axis]):
        ijk = np.zeros(4)
        ijk[3] = 1
        ijk[axis] = k
        world = img.affine @ ijk
        out_idx = np.linalg.solve(out.affine, world)
        assert out_idx[axis] == pytest.approx(k * 5 + 2, abs=1e-4)
    # Field of view: output extent equals the input extent along the slice axis.
    in_extent = img.shape[axis] * 5.0
    out_extent = out.shape[axis] * zooms[axis]
    assert out_extent == pytest.approx(in_extent)
    # qform and sform agree with the affine.
    np.testing.assert_allclose(out.get_qform(), out.affine, atol=1e-4)
    np.testing.assert_allclose(out.get_sform(), out.affine, atol=1e-6)
    # Cubic output reproduces the input at slice centres (interpolation passes through samples).
    centre_rows = np.take(out.get_fdata(), np.arange(img.shape[axis]) * 5 + 2, axis=axis)
    np.testing.assert_allclose(centre_rows, img.get_fdata(), rtol=1e-3, atol=0.5)


def test_inplane_resampling_to_1mm():
    data = np.random.default_rng(0).random((64, 60, 20)).astype(np.float32) * 100
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 4.0, 1.0]))
    res = super_resolve(img, method="cubic", output_grid="1mm")
    zooms = np.sqrt((res.image.affine[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(zooms, [1.0, 1.0, 1.0], atol=1e-6)
    assert res.image.shape == (32, 30, 79)  # 20 slices x 4, less the row beyond the last slab (degrade.output_rows)
    # Same in-plane field of view: the first voxel's outer edge stays put.
    edge_in = img.affine @ [-0.5, -0.5, 0, 1]
    edge_out = res.image.affine @ [-0.5, -0.5, 0, 1]
    np.testing.assert_allclose(edge_in[:2], edge_out[:2], atol=1e-6)


class PlaneTagModel(torch.nn.Module):
    """Predicts for channel ch of window centred on c the constant (c * 10 + ch), on the SR grid."""

    def forward(self, x, factor):
        b, c, s, p = x.shape
        centre = x[:, 1, 0, 0]  # the test feeds plane index as intensity
        ch = torch.arange(3, dtype=x.dtype).view(1, 3, 1, 1)
        return (centre.view(b, 1, 1, 1) * 10 + ch).expand(b, 3, s * factor, p).clone()


def test_merge_weights_match_hand_computation():
    n = 5
    planes = np.stack([np.full((2, 3), i, np.float32) for i in range(n)])
    out = sweep(planes, PlaneTagModel(), factor=2, batch_size=2)
    # Windows centred on 1, 2, 3. Plane i collects (10*c + ch) from window c with channel ch = i - c + 1.
    expect = []
    for i in range(n):
        num = den = 0.0
        for c in (1, 2, 3):
            ch = i - c + 1
            if 0 <= ch <= 2:
                w = (0.25, 0.5, 0.25)[ch]
                num += w * (10 * c + ch)
                den += w
        expect.append(num / den)
    # plane 0: only window 1 channel 0 -> 10; plane 2: .25*(10+2) + .5*(20+1) + .25*(30+0) = 21.0
    assert expect[0] == 10 and expect[2] == pytest.approx(21.0)
    np.testing.assert_allclose(out[:, 0, 0], expect, rtol=1e-6)
    assert out.shape == (n, 4, 3)


def test_consistency_high_for_truth_and_low_for_wrong():
    hr = smooth_phantom((30, 30, 60))
    r, s, t = 6, 6.0, 5.0
    d = degrade.simulate_thick_slices(hr, axis=2, thickness=t, spacing=s, first_centre_mm=degrade.centre_row(r))
    truth = hr[..., : d.data.shape[2] * r]
    good = check_consistency(truth, d.data, 2, r, s, t)
    assert good.psnr_db > 60
    wrong = truth.copy()
    wrong[10:20, 10:20, 20:30] += 0.5  # an invented blob
    bad = check_consistency(wrong, d.data, 2, r, s, t)
    assert bad.psnr_db < good.psnr_db - 30 and bad.psnr_db < 35
    assert bad.error_map[10:20, 10:20, 3:5].mean() > 0.1
    assert bad.error_map[:5, :5].max() < 1e-5


@pytest.mark.parametrize("t, s, profile", [(5.0, 6.0, "boxcar"), (6.0, 6.0, "boxcar"), (7.5, 6.0, "boxcar"),
                                            (5.0, 6.0, "gaussian"), (3.0, 3.0, "boxcar")])
def test_projection_reproduces_the_input_with_the_least_change(t, s, profile):
    r = int(s)
    rng = np.random.default_rng(3)
    hr = smooth_phantom((12, 10, 9 * r))
    lr = degrade.redegrade(hr, 2, r, s, t, profile) + rng.normal(0, 0.05, (12, 10, 9)).astype(np.float32)
    p = project_onto_input(hr, lr, 2, r, s, t, profile)
    w = degrade.redegrade_matrix(9 * r, r, s, t, profile)
    np.testing.assert_allclose(degrade.apply_along_axis(w, p, 2), lr, atol=1e-5)  # consistent
    np.testing.assert_allclose(project_onto_input(p, lr, 2, r, s, t, profile), p, atol=1e-5)  # idempotent
    # least change: the part of the change that W does not see is zero (adding any of it to p would give
    # another volume that reproduces the input but lies farther from hr); a smoother back-projection fails this
    change = p - hr
    unseen = change - degrade.apply_along_axis(np.linalg.pinv(w), degrade.apply_along_axis(w, change, 2), 2)
    assert np.abs(unseen).max() < 1e-4 * max(np.abs(change).max(), 1e-3)
    if t < s and profile == "boxcar":  # rows in the gaps between slices are untouched
        gaps = np.flatnonzero(w.sum(axis=0) == 0)
        assert len(gaps) == 9 and np.array_equal(p[..., gaps], hr[..., gaps])


def test_projection_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        project_onto_input(np.zeros((4, 4, 30), np.float32), np.zeros((4, 4, 4), np.float32), 2, 6, 6.0, 5.0)
    with pytest.raises(ValueError, match="do not match"):
        project_onto_input(np.zeros((4, 4, 5), np.float32), np.zeros((4, 4, 1), np.float32), 2, 6, 6.0, 5.0)


def test_projection_stays_bounded_for_strongly_overlapping_slices():
    """t = 2 s: W Wᵀ is nearly singular; the exact pseudo-inverse would multiply an alternating residual
    (noise) by ~100. A smooth residual is still taken out."""
    r, s, t = 6, 6.0, 12.0
    hr = np.full((4, 4, 40 * r), 0.5, np.float32)
    noisy = np.full((4, 4, 40), 0.5, np.float32)
    noisy[..., ::2] += 0.01
    assert np.abs(project_onto_input(hr, noisy, 2, r, s, t) - hr).max() < 0.1  # exact pinv: > 0.5
    offset = degrade.redegrade(smooth_phantom((4, 4, 40 * r)), 2, r, s, t)
    p = project_onto_input(hr, offset, 2, r, s, t)
    before, after = (np.abs(degrade.redegrade(v, 2, r, s, t) - offset).mean() for v in (hr, p))
    assert after < 0.2 * before


def test_super_resolve_projects_the_network_output_onto_the_input():
    import torch

    img = _lr_image(2, shape=(24, 20, 8), spacing=6.0)
    torch.manual_seed(0)  # random weights, the same ones every run (some draws clip most rows to the input's range)
    model = LoadedModel(build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval(), "random", "", "")
    raw = super_resolve(img, model=model, batch_size=4, slice_thickness=5.0, project=False)
    out = super_resolve(img, model=model, batch_size=4, slice_thickness=5.0)
    assert out.info["ProjectedOntoInput"] is True and raw.info["ProjectedOntoInput"] is False
    # the QC figures describe the network's output, before the projection; ConsistencyPSNR the stored output
    assert out.info["NetworkConsistencyPSNR"] == raw.info["NetworkConsistencyPSNR"] < 60
    assert abs(raw.info["ConsistencyPSNR"] - raw.info["NetworkConsistencyPSNR"]) < 0.5  # clipped to the input's range
    assert out.info["ConsistencyPSNR"] > raw.info["ConsistencyPSNR"] + 20
    np.testing.assert_array_equal(out.consistency_map.get_fdata(), raw.consistency_map.get_fdata())
    x, o = img.get_fdata(dtype=np.float32), out.image.get_fdata(dtype=np.float32)
    again = degrade.redegrade(o, 2, 6, 6.0, 5.0)
    before = degrade.redegrade(raw.image.get_fdata(dtype=np.float32), 2, 6, 6.0, 5.0)
    # slices none of whose output rows were clipped to the input's intensity range reproduce the input
    clipped = degrade.redegrade(((o <= x.min()) | (o >= x.max())).astype(np.float32), 2, 6, 6.0, 5.0) > 0
    assert (~clipped).mean() > 0.5
    err, err_raw = (np.abs(a - x)[~clipped].max() / x.max() for a in (again, before))
    assert err < 1e-5 and err_raw > 1e-3
    assert super_resolve(img, method="cubic").info["ProjectedOntoInput"] is False  # the baseline stays plain


def test_projection_on_a_resampled_grid_with_negative_intensities():
    """0.5 mm in-plane voxels resampled to 1 mm (``output_grid="1mm"``) and intensities around zero (offset
    scaling): the projection works on the working grid, so the output still reproduces the working-grid input."""
    from prettier_bids.sr.preprocess import voxel_sizes, working_grid

    rng = np.random.default_rng(2)
    data = (ndimage.gaussian_filter(rng.random((48, 40, 6)), 2).astype(np.float32) - 0.5) * 800
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 6.0, 1.0]))
    model = LoadedModel(build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval(), "random", "", "")
    out = super_resolve(img, model=model, batch_size=4, output_grid="1mm", slice_thickness=6.0)
    raw = super_resolve(img, model=model, batch_size=4, project=False, output_grid="1mm", slice_thickness=6.0)
    assert out.info["InplaneResampled"] and out.info["IntensityScale"]["Offset"] < 0
    work, _ = working_grid(data, voxel_sizes(img.affine), 2)
    o = out.image.get_fdata(dtype=np.float32)
    assert o.shape[:2] == work.shape[:2]
    clipped = degrade.redegrade(((o <= data.min()) | (o >= data.max())).astype(np.float32), 2, 6, 6.0, 6.0) > 0
    errs = [np.abs(degrade.redegrade(v.image.get_fdata(dtype=np.float32), 2, 6, 6.0, 6.0) - work)[~clipped].max()
            for v in (out, raw)]
    assert (~clipped).mean() > 0.5 and errs[0] < 1e-3 < errs[1]


def test_slice_axis_detection_and_bad_inputs():
    assert find_slice_axis([0.9, 0.9, 6.0]) == 2
    assert find_slice_axis([4.0, 0.7, 0.7]) == 0
    with pytest.raises(InputError, match="already high resolution"):
        find_slice_axis([1.0, 1.0, 1.2])
    assert find_slice_axis([1.0, 1.0, 1.2], force=True) == 2
    with pytest.raises(InputError):
        super_resolve(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.diag([1, 1, 5, 1])), method="cubic")
    nan = np.ones((8, 8, 8), np.float32)
    nan[2, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        super_resolve(nib.Nifti1Image(nan, np.diag([1, 1, 5, 1])), method="cubic")


def test_intensity_scaling_roundtrip_and_dtype():
    rng = np.random.default_rng(0)
    data = (rng.random((20, 20, 10)) * 800).astype(np.int16)
    scale = intensity_scale(data.astype(np.float32))
    back = restore_intensity(data / scale, scale, data.astype(np.float32), np.int16)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, data)


def test_models_shapes_presets_and_residual_base():
    assert count_parameters(build_model("edsr-paper")[0]) > 40e6
    x = torch.rand(2, 3, 8, 24)
    for name in PRESETS:
        if name in ("edsr-paper", "rrdbnet-realesrgan"):
            continue
        model = build_model(name)[0].eval()
        for r in (2, 5, 6, 8):
            assert model(x, r).shape == (2, 3, 8 * r, 24)
    # With the upsampler's last conv zeroed, the generator is exactly cubic interpolation.
    model = build_model("edsr-compact")[0].eval()
    torch.nn.init.zeros_(model.upsample.tail[-1].weight)
    torch.nn.init.zeros_(model.upsample.tail[-1].bias)
    cub = degrade.apply_along_axis(degrade.cubic_upsample_matrix(8, 6), x.numpy(), 2)
    np.testing.assert_allclose(model(x, 6).detach().numpy(), cub, atol=1e-5)
    d = UNetDiscriminatorSN(n_feats=8)
    assert d(torch.rand(2, 3, 48, 48)).shape == (2, 1, 48, 48)


def test_precision_resolution(monkeypatch):
    from prettier_bids.sr import precision as rc

    assert rc.resolve_precision("fp32") == "fp32" and rc.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        rc.resolve_precision("fp16")
    assert isinstance(rc.native_bf16("cpu"), bool)
    assert rc.native_bf16("cuda:0") is (torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0))
    for native, ran in ((True, "bf16"), (False, "fp32")):  # auto: bf16 only where the hardware has it
        monkeypatch.setattr(rc, "native_bf16", lambda device="cpu", native=native: native)
        assert rc.resolve_precision("auto") == ran and rc.resolve_precision("fp32") == "fp32"
        assert rc.precision_note("auto") == f"network arithmetic {ran} (--precision auto on this machine)"


def test_bf16_touches_only_the_network_residual():
    """Under bf16 autocast the cubic base (most of the signal) stays fp32: with the residual zeroed, the bf16
    output equals the fp32 one bit for bit (a bf16 base would be off by ~0.4 %)."""
    model = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval()
    torch.nn.init.zeros_(model.upsample.tail[-1].weight)
    torch.nn.init.zeros_(model.upsample.tail[-1].bias)
    x = torch.rand(2, 3, 8, 24) + 0.5
    with torch.inference_mode():
        exact = model(x, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, 6)
    assert low.dtype == torch.float32
    np.testing.assert_array_equal(low.numpy(), exact.numpy())
    # a whole reconstruction in bf16 stays close to fp32, and the sidecar says which arithmetic ran
    img = _lr_image(2, shape=(24, 20, 8), spacing=6.0)
    model = LoadedModel(build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval(), "random", "", "")
    a, b = (super_resolve(img, model=model, batch_size=4, precision=p) for p in ("fp32", "bf16"))
    assert (a.info["Precision"], b.info["Precision"]) == ("fp32", "bf16")
    fa, fb = a.image.get_fdata(), b.image.get_fdata()
    assert 0 < np.abs(fa - fb).max() < 0.02 * np.abs(fa).max()
    assert super_resolve(img, method="cubic", precision="bf16").info["Precision"] == "fp32"  # no network ran


def test_model_reconstruction_runs_on_random_weights():
    img = _lr_image(2, shape=(24, 20, 8), spacing=6.0)
    model = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0]
    res = super_resolve(img, model=LoadedModel(model, "random", "", ""), batch_size=4)
    assert res.image.shape == (24, 20, 47)  # 8 slices x 6, less the row beyond the last slab (degrade.output_rows)
    assert res.image.get_data_dtype() == np.float32
    assert np.isfinite(res.image.get_fdata()).all()
    assert res.info["Model"] == "random" and res.info["ConsistencyPSNR"] > 0


def test_cubic_matrix_equals_scipy():
    rng = np.random.default_rng(3)
    sig = rng.random(12)
    pos = np.linspace(-1, 12, 40)
    ref = ndimage.map_coordinates(sig, pos[None], order=3, mode="nearest")
    np.testing.assert_allclose(degrade.cubic_matrix(12, pos) @ sig, ref, atol=1e-5)
