"""The output keeps the input's in-plane grid (issue 26): voxel sizes, field of view, slice centres, the
consistency measured against the input as stored, and the ``1mm`` option that reproduces the outputs of earlier versions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from prettier_bids.sr import consistency, degrade
from prettier_bids.sr.models import build_model
from prettier_bids.sr.preprocess import (
    apply_scaling,
    intensity_scaling,
    output_grid_shape,
    restore_intensity,
    voxel_sizes,
    working_grid,
)
from prettier_bids.sr.reconstruct import LoadedModel, cubic_array, super_resolve, super_resolve_array

INPLANE = (0.45, 0.57, 0.72, 0.9)


@pytest.fixture(scope="module")
def tiny_model(one_torch_thread):
    torch.manual_seed(0)
    return LoadedModel(build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval(), "tiny", "", "")


def rotation(deg_x, deg_y):
    ax, ay = np.deg2rad(deg_x), np.deg2rad(deg_y)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return rx @ ry


def head(inplane, axis, spacing=3.0, n_inplane=(44, 40), n_slices=8, rot=None, seed=0):
    """A head-like blob with fine texture: ``inplane`` mm voxels, slices of ``spacing`` mm along ``axis``."""
    shape, zooms = [0, 0, 0], [0.0, 0.0, 0.0]
    others = [a for a in range(3) if a != axis]
    for a, n in zip(others, n_inplane):
        shape[a], zooms[a] = n, inplane
    shape[axis], zooms[axis] = n_slices, spacing
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = (sum(g ** 2 for g in grids) < 0.8).astype(np.float32)
    data = (blob * (600 + 300 * ndimage.gaussian_filter(rng.random(shape), 1.0))).astype(np.int16)
    aff = np.diag(zooms + [1.0])
    if rot is not None:
        aff[:3, :3] = rot @ aff[:3, :3]
    aff[:3, 3] = [-11.0, 7.5, 3.25]
    return nib.Nifti1Image(data, aff)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("inplane", INPLANE)
@pytest.mark.parametrize("oblique", [False, True])
def test_the_output_keeps_the_input_inplane_voxels_field_of_view_and_slice_centres(inplane, axis, oblique):
    img = head(inplane, axis, rot=rotation(12, -20) if oblique else None)
    res = super_resolve(img, method="cubic")
    out = res.image
    factor = degrade.upsampling_factor(3.0)
    zin, zout = voxel_sizes(img.affine), voxel_sizes(out.affine)
    for a in range(3):
        if a != axis:  # in-plane: the input's voxel size and number of voxels
            assert zout[a] == pytest.approx(zin[a], abs=1e-6) and out.shape[a] == img.shape[a]
    assert zout[axis] == pytest.approx(3.0 / factor, abs=1e-6)
    assert out.shape == output_grid_shape(img.shape, zin, axis)
    # every input slice centre is an output voxel centre, at the same world position
    idx = np.zeros((4, img.shape[axis]))
    idx[axis], idx[3] = np.arange(img.shape[axis]), 1
    rows = np.zeros_like(idx)
    rows[axis], rows[3] = degrade.slice_rows(img.shape[axis], factor), 1
    np.testing.assert_allclose(out.affine @ rows, img.affine @ idx, atol=1e-6)
    # the in-plane field of view: the first voxel's outer corner stays put
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    corner[axis] = 0.0
    out_corner = corner.copy()
    out_corner[axis] = degrade.centre_row(factor)
    np.testing.assert_allclose(out.affine @ out_corner, img.affine @ corner, atol=1e-6)
    # the cubic output passes through the input at the slice centres
    centres = np.take(out.get_fdata(), degrade.slice_rows(img.shape[axis], factor), axis=axis)
    np.testing.assert_allclose(centres, img.get_fdata(), atol=0.51)
    assert res.info["OutputGrid"] == "native" and res.info["InplaneResampled"] is False


@pytest.mark.parametrize("inplane", INPLANE)
def test_the_stored_output_reproduces_the_input_as_stored_and_the_sidecar_says_so(inplane, tiny_model):
    """Slab-average the stored output (3 mm slices, factor 3: each slab is 3 whole rows) and compare with the
    input file in the head mask: >= 40 dB, the sidecar's ConsistencyPSNR within 1 dB of it."""
    img = head(inplane, 2)
    res = super_resolve(img, model=tiny_model, precision="fp32", slice_thickness=3.0)  # given: projected onto it
    out = res.image.get_fdata()
    assert out.shape[:2] == img.shape[:2]
    again = out.reshape(out.shape[0], out.shape[1], -1, 3).mean(axis=-1)
    data = img.get_fdata()
    scale = res.info["IntensityScale"]["Value"]
    mask = consistency.head_mask(data / scale, 2)
    measured = 10 * np.log10(1.0 / np.mean(((again - data)[mask] / scale) ** 2))
    assert measured >= 40
    assert abs(res.info["ConsistencyPSNR"] - measured) < 1.0
    # the network's own figure (before the projection) is measured the same way, and is lower
    assert res.info["NetworkConsistencyPSNR"] < res.info["ConsistencyPSNR"]
    assert res.consistency_map.shape == img.shape and np.allclose(res.consistency_map.affine, img.affine)


def test_the_1mm_grid_reproduces_the_earlier_outputs(tiny_model, monkeypatch):
    """``output_grid="1mm"``: the earlier pipeline, step by step (working grid, network, extent, projection without
    the clip alternation, restore); with the alternation (the default) only slabs that the clip had moved off
    the input change."""
    img = head(0.57, 2)
    data = img.get_fdata(dtype=np.float32)
    work, _ = working_grid(data, voxel_sizes(img.affine), 2)
    offset, scale = intensity_scaling(work)
    x = apply_scaling(work, offset, scale)
    for method in ("cubic", "model"):
        hr = cubic_array(x, 2, 3) if method == "cubic" else super_resolve_array(x, 2, 3, tiny_model.model,
                                                                               precision="fp32")
        if method == "model":
            hr = consistency.project_onto_input(hr, x, 2, 3, 3.0, 3.0)
        expected = restore_intensity(hr, scale, data, np.int16, offset)
        with monkeypatch.context() as m:
            m.setattr(consistency, "PROJECTION_CLIP_ITERATIONS", 0)
            res = super_resolve(img, model=tiny_model, method=method, precision="fp32", output_grid="1mm",
                                slice_thickness=3.0)
        np.testing.assert_array_equal(np.asanyarray(res.image.dataobj), expected)
        assert res.info["OutputGrid"] == "1mm" and res.info["InplaneResampled"] is True
        assert res.image.shape[:2] == work.shape[:2]
    default = np.asanyarray(super_resolve(img, model=tiny_model, precision="fp32", output_grid="1mm",
                                          slice_thickness=3.0).image.dataobj)
    at_limit = (expected <= data.min()) | (expected >= data.max())  # rows the clip had moved
    slab_moved = np.repeat(at_limit.reshape(*at_limit.shape[:2], -1, 3).any(axis=-1), 3, axis=-1)
    assert slab_moved.any() and np.mean(default[~slab_moved] != expected[~slab_moved]) < 0.01


def test_the_1mm_grid_consistency_is_measured_on_the_input_as_stored(tiny_model):
    """On a 0.57 mm scan the 1 mm output cannot give back the in-plane detail: the sidecar says so (earlier versions said
    ~45 dB, measured against its own resampled input)."""
    img = head(0.57, 2)
    fine = super_resolve(img, model=tiny_model, precision="fp32", slice_thickness=3.0)
    coarse = super_resolve(img, model=tiny_model, precision="fp32", output_grid="1mm", slice_thickness=3.0)
    assert coarse.info["ConsistencyPSNR"] < fine.info["ConsistencyPSNR"] - 10
    assert coarse.consistency_map.shape == img.shape  # the map is on the input's grid either way


def test_coarse_inplane_voxels_are_resampled_as_before():
    """In-plane voxels beyond 1.25 mm are resampled to 1 mm on either grid (the native grid is for 0.4-1.25 mm)."""
    img = head(1.5, 2, n_inplane=(30, 28))
    for grid in ("native", "1mm"):
        res = super_resolve(img, method="cubic", output_grid=grid)
        assert voxel_sizes(res.image.affine)[:2] == pytest.approx([1.0, 1.0], abs=0.02)
        assert res.info["InplaneResampled"] is True


def test_methods_text_and_group_qc_name_the_grid_and_compare_the_networks_figure(tmp_path):
    """The methods text says which grid each group of outputs is on (outputs without OutputGrid: 1 mm, as made
    before it existed); the group level flags outliers of NetworkConsistencyPSNR, not of the projected output's
    ConsistencyPSNR (high for every output by construction)."""
    import json

    from prettier_bids.outputs import dataset_methods
    from prettier_bids.reports.group import collect_rows

    root = tmp_path / "prettier"
    for i, (sub, grid, net) in enumerate([("01", "native", 41.0), ("02", "native", 40.5), ("03", "native", 41.5),
                                          ("04", "native", 18.0), ("05", None, None)]):
        anat = root / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)), anat / f"sub-{sub}_desc-prettier_FLAIR.nii.gz")
        meta = {"Sources": [f"bids:raw:sub-{sub}/anat/sub-{sub}_FLAIR.nii.gz"], "Method": "model", "Model": "m",
                "ModelWeightsSHA256": "ab" * 32, "SliceProfile": "boxcar", "ProjectedOntoInput": True,
                "Precision": "fp32", "ConsistencyPSNR": 60.0 + i, "QCFlags": []}
        if grid:
            meta.update(OutputGrid=grid, NetworkConsistencyPSNR=net)
        (anat / f"sub-{sub}_desc-prettier_FLAIR.json").write_text(json.dumps(meta))
    text = dataset_methods(root)
    assert "Each of 4 images (4 FLAIR) was super-resolved" in text and "keeps the input's in-plane voxels" in text
    assert "One FLAIR image was super-resolved" in text and "about 1 mm isotropic voxels" in text
    rows = {r["participant_id"]: r for r in collect_rows(root)}
    assert rows["sub-04"]["flag"] == "low consistency PSNR"
    assert all(rows[s]["flag"] == "n/a" for s in ("sub-01", "sub-02", "sub-03", "sub-05"))


def test_prettier_sr_output_grid_option(tmp_path, capsys):
    import json

    from prettier_bids.cli.sr import main

    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(head(0.57, 2), src)
    for grid, inplane in (("native", 0.57), ("1mm", 1.0)):
        out, meta = tmp_path / f"{grid}.nii.gz", tmp_path / f"{grid}.json"
        assert main([str(src), str(out), "--method", "cubic", "--output-grid", grid, "--json", str(meta), "-q"]) == 0
        assert voxel_sizes(nib.load(out).affine)[:2] == pytest.approx([inplane, inplane], abs=0.03)
        assert json.loads(meta.read_text())["OutputGrid"] == grid
    with pytest.raises(SystemExit) as exc:
        main([str(src), str(tmp_path / "x.nii.gz"), "--output-grid", "0.5mm"])
    assert exc.value.code == 64 and "--output-grid" in capsys.readouterr().err
