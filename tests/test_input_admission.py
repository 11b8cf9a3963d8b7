"""Image admission (issue 24, third adversarial round): what is refused from the header alone, before any voxel
is read (degenerate affines, forged voxel counts, grids beyond the memory), weights files with bad content,
one-line read errors, broken links (git-annex / DataLad content not fetched), outlier voxels that must not move
the intensity scale, and the output grid of even factors and half-integer spacings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from prettier_bids import bids
from prettier_bids.cli.sr import main as sr_main
from prettier_bids.sr import preprocess
from prettier_bids.sr.consistency import CONSISTENCY_PSNR_FLOOR_DB
from prettier_bids.sr.degrade import upsampling_factor
from prettier_bids.sr.models import WeightsError, build_model, load_weights, save_weights
from prettier_bids.sr.reconstruct import LoadedModel, super_resolve

AFF = np.diag([1.0, 1.0, 5.0, 1.0])


def phantom(shape=(40, 36, 8)):
    """A smooth ellipsoid 'brain' (tissue ~700) on a zero background."""
    from scipy import ndimage

    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    c = [(n - 1) / 2 for n in shape]
    r = np.sqrt(((z - c[0]) / (0.4 * shape[0])) ** 2 + ((y - c[1]) / (0.4 * shape[1])) ** 2
                + ((x - c[2]) / (0.55 * shape[2])) ** 2)
    d = np.where(r < 1, 700 + 100 * np.sin(z / 3) * np.cos(y / 4), 0).astype(np.float32)
    return ndimage.gaussian_filter(d, (1, 1, 0.3)).astype(np.float32)


def save(path, data, affine=AFF):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return Path(path)


def raw_nifti(path, shape, dtype=np.float32, srows=None, data=b""):
    """A NIfTI-1 file written byte by byte: any header (a forged shape, a degenerate sform) and ``data``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_zooms((1.0,) * len(shape))
    hdr["vox_offset"] = 352
    if srows is not None:
        hdr["qform_code"], hdr["sform_code"] = 0, 1
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srows
    Path(path).write_bytes(hdr.binaryblock + b"\0" * 4 + data)
    return Path(path)


def run_sr(capsys, *args):
    rc = sr_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


def one_error(lines, *texts):
    assert len(lines) == 1 and ": error:" in lines[0], lines
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_voxel_reads(monkeypatch):
    """Fail the test if any image's voxel data is read (admission must decide from the header alone)."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("voxel data was read")

    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", refuse)
    monkeypatch.setattr(nib.Nifti1Pair, "get_fdata", refuse)


def candidate(path):
    return bids.Candidate(path=Path(path), relpath=f"sub-01/anat/{Path(path).name}", contrast="FLAIR",
                          entities={"subject": "01", "suffix": "FLAIR"})


DEGENERATE = {
    # 1e-30 mm voxels: 64 columns collapsed into one (was exit 0)
    "tiny_voxel": ([[1e-30, 0, 0, 0], [0, 1, 0, 0], [0, 0, 5, 0]], "below the 0.05 mm"),
    # NaN in the affine (was a misleading thickness message)
    "nan_affine": ([[1, 0, 0, 0], [0, np.nan, 0, 0], [0, 0, 5, 0]], "NaN or infinite"),
    # an all-zero row (was "unexpected HeaderDataError", exit 1)
    "zero_row": ([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 5, 0]], "singular"),
}


# --------------------------------------------------------------------------------------------
# Case 11: degenerate affines are refused from the header (65)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_affine_is_refused_with_a_header_message(tmp_path, capsys, case, no_voxel_reads):
    srows, text = DEGENERATE[case]
    src = raw_nifti(tmp_path / "in.nii", (16, 16, 6), srows=srows, data=phantom((16, 16, 6)).tobytes("F"))
    out = tmp_path / "out.nii.gz"
    rc, lines = run_sr(capsys, src, out, "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, text, "header")
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_affine_fails_that_image_in_bids_selection(tmp_path, case):
    srows, text = DEGENERATE[case]
    src = raw_nifti(tmp_path / "sub-01_FLAIR.nii", (16, 16, 6), srows=srows, data=phantom((16, 16, 6)).tobytes("F"))
    cand = bids.inspect_candidate(candidate(src))
    assert cand.status == "failed" and text in cand.reason, cand.reason


# --------------------------------------------------------------------------------------------
# Case 12: voxel counts and memory checked from the header, before any read (65)
# --------------------------------------------------------------------------------------------

def test_forged_voxel_count_is_refused_before_reading(tmp_path, capsys, no_voxel_reads):
    src = raw_nifti(tmp_path / "huge.nii", (1024, 1024, 1024), data=b"\0" * 1000)  # 1.3 kB claiming 4 GB
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, "1024x1024x1024", "claims", "nothing was read")


def test_gzip_bomb_header_is_refused_before_decompressing(tmp_path, capsys, no_voxel_reads):
    src = tmp_path / "bomb.nii.gz"
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((2048, 2048, 256))
    hdr.set_zooms((0.1, 0.1, 5.0))
    hdr["vox_offset"] = 352
    import gzip

    src.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * (4 + 1 << 16)))
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, "2048x2048x256", "claims")


def test_output_grid_beyond_the_limit_is_refused_before_reading(tmp_path, capsys, no_voxel_reads):
    # 1e8 input voxels (below the input limit) of 8 mm slices: 8x as many output rows
    src = raw_nifti(tmp_path / "wide.nii", (500, 500, 400), data=b"\0" * 1000,
                    srows=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 8, 0]])
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, "output grid", "nothing was read")


def test_image_needing_more_memory_than_available_is_refused(tmp_path, capsys, monkeypatch, no_voxel_reads):
    monkeypatch.setattr(preprocess, "available_memory_bytes", lambda: 10_000, raising=False)
    src = save(tmp_path / "in.nii.gz", phantom())
    out = tmp_path / "out.nii.gz"
    rc, lines = run_sr(capsys, src, out, "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, "GB of memory", "available")
    assert not out.exists()


def test_bids_selection_fails_oversized_images_and_keeps_the_others(tmp_path, monkeypatch, no_voxel_reads):
    big = raw_nifti(tmp_path / "sub-01_FLAIR.nii", (1024, 1024, 1024), data=b"\0" * 1000)
    cand = bids.inspect_candidate(candidate(big))
    assert cand.status == "failed" and "claims" in cand.reason, cand.reason
    ok = save(tmp_path / "sub-02_FLAIR.nii.gz", phantom())
    assert bids.inspect_candidate(candidate(ok)).status == "selected"
    monkeypatch.setattr(preprocess, "available_memory_bytes", lambda: 10_000, raising=False)
    cand = bids.inspect_candidate(candidate(ok))
    assert cand.status == "failed" and "GB of memory" in cand.reason, cand.reason


# --------------------------------------------------------------------------------------------
# Case 17: weights files with the right tag and bad content: 66, "cannot read weights file"
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_payload(tmp_path_factory):
    torch.manual_seed(0)
    model, arch, cfg = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)
    path = tmp_path_factory.mktemp("w") / "good.pt"
    save_weights(path, model, arch, cfg)
    return torch.load(path, weights_only=True)


BAD_WEIGHTS = {
    "no_arch": (lambda p: {k: v for k, v in p.items() if k != "arch"}, "no 'arch'"),
    "unknown_config_key": (lambda p: {**p, "config": {**p["config"], "bogus": 1}}, "unknown edsr config key"),
    "empty_state_dict": (lambda p: {**p, "state_dict": {}}, "empty"),
    "mismatched_state_dict": (lambda p: {**p, "config": {**p["config"], "n_feats": 16}}, "shape"),
    "unknown_arch": (lambda p: {**p, "arch": "unet"}, "unknown arch"),
    "config_string": (lambda p: {**p, "config": "n_feats=8"}, "not a mapping"),
    "absurd_n_feats": (lambda p: {**p, "config": {**p["config"], "n_feats": 600}}, "out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_weights_with_bad_content_exit_66_in_one_line(tmp_path, capsys, good_payload, case):
    forge, text = BAD_WEIGHTS[case]
    weights = tmp_path / "w.pt"
    torch.save(forge(good_payload), weights)
    src = save(tmp_path / "in.nii.gz", phantom())
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--weights", weights, "-q")
    assert rc == 66
    one_error(lines, f"cannot read weights file {weights}", text)


def test_weights_describing_too_large_a_model_are_refused_before_building(tmp_path, good_payload, monkeypatch):
    from prettier_bids.sr import models

    monkeypatch.setattr(models, "MAX_PARAMETERS", 1000, raising=False)
    weights = tmp_path / "w.pt"
    torch.save(good_payload, weights)
    with pytest.raises(WeightsError, match="parameters"):
        load_weights(weights)


# --------------------------------------------------------------------------------------------
# Cases 23 and 24: one-line read errors; broken links say that the content is not present
# --------------------------------------------------------------------------------------------

def test_truncated_uncompressed_data_is_one_line(tmp_path, capsys):
    full = save(tmp_path / "full.nii", phantom())
    src = tmp_path / "in.nii"
    src.write_bytes(full.read_bytes()[:20000])
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, "cannot read image data", "damaged")


def annexed_link(folder, name):
    link = Path(folder) / name
    os.symlink(".git/annex/objects/Xx/Yy/SHA256E-s1234--abc.nii.gz/SHA256E-s1234--abc.nii.gz", link)
    return link


def test_broken_link_input_says_its_content_is_not_present(tmp_path, capsys):
    src = annexed_link(tmp_path, "sub-01_FLAIR.nii.gz")
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 66
    one_error(lines, "broken link", "content is not present", "datalad get")


def annex_pointer(folder, name):
    """An unlocked git-annex file whose content is absent (``git annex unlock``, DataLad's adjusted branches)."""
    path = Path(folder) / name
    path.write_text("/annex/objects/MD5E-s12345--0123456789abcdef0123456789abcdef.nii.gz\n")
    return path


def test_annex_pointer_input_says_its_content_is_not_present(tmp_path, capsys):
    # was exit 65 `cannot read X as NIfTI (ImageFileError)`: nothing said the content was simply not fetched
    src = annex_pointer(tmp_path, "sub-01_FLAIR.nii.gz")
    rc, lines = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 66
    one_error(lines, "git-annex pointer", "content is not present", "datalad get")
    cand = bids.inspect_candidate(candidate(src))
    assert cand.status == "failed" and "datalad get" in cand.reason, cand.reason
    assert "ImageFileError" not in cand.reason


def test_annexed_half_of_a_nifti_pair_not_fetched_says_its_content_is_not_present(tmp_path, capsys):
    # was 66 `input file not found: x.img or x.img.gz beside x.hdr` (a broken link), or 65 `cannot read image data
    # (... could the file be damaged?)` (a pointer file)
    import nibabel as nib

    nib.save(nib.Nifti1Pair(phantom(), AFF), str(tmp_path / "x.hdr"))
    (tmp_path / "x.img").unlink()
    for make in (lambda: annexed_link(tmp_path, "x.img"), lambda: annex_pointer(tmp_path, "x.img")):
        make()
        rc, lines = run_sr(capsys, tmp_path / "x.hdr", tmp_path / "out.nii.gz", "--method", "cubic", "-q")
        assert rc == 66
        one_error(lines, "x.img is a ", "content is not present", "datalad get")
        (tmp_path / "x.img").unlink()


def test_broken_link_fails_that_image_in_bids_selection_with_the_reason(tmp_path):
    cand = bids.inspect_candidate(candidate(annexed_link(tmp_path, "sub-01_FLAIR.nii.gz")))
    assert cand.status == "failed"
    assert "broken link" in cand.reason and "datalad get" in cand.reason, cand.reason
    assert "FileNotFoundError" not in cand.reason


# --------------------------------------------------------------------------------------------
# Case 6: one outlier voxel cannot move the foreground, the intensity scale or the QC scale
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(one_torch_thread):
    torch.manual_seed(0)
    model = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval()
    return LoadedModel(model, "tiny", "", "")


@pytest.fixture(scope="module")
def clean_outputs(tiny_model):
    img = nib.Nifti1Image(phantom(), AFF)
    return {project: super_resolve(img, model=tiny_model, precision="fp32", project=project)
            for project in (True, False)}


@pytest.mark.parametrize("value", [1e9, 1e30])
def test_one_outlier_voxel_does_not_move_the_foreground_threshold_or_scale(value):
    clean = phantom()
    bad = clean.copy()
    bad[20, 18, 4] = value
    assert preprocess.foreground_threshold(bad) == pytest.approx(preprocess.foreground_threshold(clean), rel=0.02)
    assert preprocess.intensity_scale(bad) == pytest.approx(preprocess.intensity_scale(clean), rel=0.02)


@pytest.mark.parametrize("value", [1e9, 1e30])
@pytest.mark.parametrize("project", [True, False])
def test_one_outlier_voxel_leaves_the_output_and_its_qc_like_the_clean_images(value, project, tiny_model,
                                                                              clean_outputs):
    bad = phantom()
    bad[20, 18, 4] = value
    ref = clean_outputs[project]
    res = super_resolve(nib.Nifti1Image(bad, AFF), model=tiny_model, precision="fp32", project=project)
    brain = ref.image.get_fdata() > 350
    median, clean_median = np.median(res.image.get_fdata()[brain]), np.median(ref.image.get_fdata()[brain])
    assert median == pytest.approx(clean_median, rel=0.03)
    assert res.info["IntensityScale"]["Value"] == pytest.approx(ref.info["IntensityScale"]["Value"], rel=0.02)
    assert res.info["OutliersClipped"] == 1 and ref.info["OutliersClipped"] == 0
    # QC is measured on the clean scale: a faithful output passes, within a few dB of the clean image's
    assert res.info["QCFlags"] == [] and res.info["NetworkConsistencyPSNR"] > CONSISTENCY_PSNR_FLOOR_DB
    assert abs(res.info["NetworkConsistencyPSNR"] - ref.info["NetworkConsistencyPSNR"]) < 8
    # ...and still flags an output that lost the image (measured on the same, robust scale)
    from prettier_bids.sr.consistency import check_consistency, qc_flags

    x = preprocess.clip_outliers(bad)[0] / np.float32(preprocess.intensity_scale(bad))
    assert qc_flags(check_consistency(np.zeros((40, 36, 40), np.float32), x, 2, 5, 5.0, 5.0).psnr_db)


# --------------------------------------------------------------------------------------------
# Case 10: even factors span the input's slabs symmetrically; half-integer spacings get the finer grid
# --------------------------------------------------------------------------------------------

def test_output_spans_the_input_slabs_symmetrically_with_slice_centres_on_rows():
    for spacing, n in [(4.0, 10), (6.0, 7), (2.0, 12), (5.0, 8), (3.0, 9)]:  # even and odd factors
        aff = np.diag([1.0, 1.0, spacing, 1.0])
        aff[2, 3] = -52 + spacing / 2  # slabs from -52 mm
        img = nib.Nifti1Image(phantom((16, 14, n)), aff)
        res = super_resolve(img, method="cubic")
        out, r = res.image, res.info["UpsamplingFactor"]
        h = spacing / r
        low = (out.affine @ [0, 0, -0.5, 1])[2]
        high = (out.affine @ [0, 0, out.shape[2] - 0.5, 1])[2]
        slab_low, slab_high = -52.0, -52.0 + n * spacing
        assert low - slab_low == pytest.approx(slab_high - high, abs=1e-4), spacing  # symmetric
        assert 0 <= low - slab_low <= h / 2 + 1e-4, spacing  # inside the slabs, by at most half an output voxel
        ijk = np.linalg.inv(out.affine) @ img.affine @ np.c_[np.zeros((n, 2)), np.arange(n), np.ones(n)].T
        np.testing.assert_allclose(ijk[2], np.round(ijk[2]), atol=1e-4)  # every slice centre on a row centre
        assert ijk[2].min() >= 0 and ijk[2].max() <= out.shape[2] - 1
        assert res.info["OutputShape"][2] == out.shape[2] == n * r - (1 - r % 2)


def test_factor_gives_the_output_spacing_closest_to_1_mm_half_integers_to_the_finer_grid():
    expected = {2.5: 3, 3.5: 4, 4.5: 5, 5.5: 6, 6.5: 7, 7.5: 8,  # half-integers: not round()'s half-to-even
                2.0: 2, 3.0: 3, 3.3: 3, 4.0: 4, 6.0: 6, 2.3: 2, 9.0: 8, 1.8: 2}
    assert {s: upsampling_factor(s) for s in expected} == expected


def test_sidecar_of_a_2_5_mm_stack_records_factor_3(tmp_path, capsys):
    src = save(tmp_path / "in.nii.gz", phantom((24, 20, 8)), np.diag([1.0, 1.0, 2.5, 1.0]))
    rc, _ = run_sr(capsys, src, tmp_path / "out.nii.gz", "--method", "cubic", "-q", "--json", tmp_path / "o.json")
    assert rc == 0
    info = json.loads((tmp_path / "o.json").read_text())
    assert info["UpsamplingFactor"] == 3 and info["OutputVoxelSize"][2] == pytest.approx(2.5 / 3, abs=1e-3)


@pytest.mark.parametrize("spacing", [500.0, 1e30, 31.0])
def test_a_slice_spacing_beyond_30_mm_fails_that_image_in_bids_selection(tmp_path, spacing):
    """A damaged header (500 mm slices) was 'skipped' as if it were a routine 3D image, and the run exited 0; it is
    a damaged header like a 1e-30 mm voxel: 'failed' (exit 1), in prettier-sr exit 65 as before."""
    src = raw_nifti(tmp_path / "sub-01_FLAIR.nii", (16, 16, 6), srows=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, spacing, 0]],
                    data=phantom((16, 16, 6)).tobytes("F"))
    cand = bids.inspect_candidate(candidate(src))
    assert cand.status == "failed" and "is beyond the 30 mm this tool takes" in cand.reason, cand.reason


@pytest.mark.parametrize("kind, shape, srows", [
    # 8000 slices of 5 mm: 40000 output rows (was exit 1 after the work, `unexpected HeaderDataError: shape (3, 3,
    # 40000) does not fit in dim datatype`)
    ("nifti1", (3, 3, 8000), [[0.9, 0, 0, 0], [0, 0.9, 0, 0], [0, 0, 5, 0]]),
    # a NIfTI-2 input 40000 voxels long: its outputs (and consistency map) are NIfTI-1
    ("nifti2", (40000, 4, 2), [[0.9, 0, 0, 0], [0, 0.9, 0, 0], [0, 0, 5, 0]]),
])
def test_a_grid_longer_than_a_nifti1_axis_is_refused_from_the_header(tmp_path, capsys, no_voxel_reads, kind, shape,
                                                                     srows):
    path = tmp_path / "long.nii"
    if kind == "nifti1":
        raw_nifti(path, shape, srows=srows, data=np.ones(shape, np.float32).tobytes("F"))
    else:
        nib.save(nib.Nifti2Image(np.ones(shape, np.float32), np.vstack([srows, [0, 0, 0, 1]])), str(path))
    rc, lines = run_sr(capsys, path, tmp_path / "out.nii.gz", "--method", "cubic", "-q")
    assert rc == 65
    one_error(lines, "voxels: more than the 32767 along an axis that a NIfTI-1 file", "nothing was read")
    assert not (tmp_path / "out.nii.gz").exists()
    cand = bids.inspect_candidate(candidate(path))
    assert cand.status == "failed" and "32767" in cand.reason, cand.reason
