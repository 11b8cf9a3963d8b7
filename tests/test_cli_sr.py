"""prettier-sr: outputs, metadata, and one-line errors on bad input with no partial output."""

import json

import nibabel as nib
import numpy as np
import pytest

from prettier_bids.cli.sr import main


def test_model_output_geometry_and_json(thick_nifti, tiny_weights, tmp_path):
    out = tmp_path / "sr.nii.gz"
    meta = tmp_path / "sr.json"
    cmap = tmp_path / "cons.nii.gz"
    rc = main([str(thick_nifti), str(out), "--weights", str(tiny_weights), "--json", str(meta),
               "--consistency-map", str(cmap), "-q", "--slice-thickness", "5"])
    assert rc == 0
    img, src = nib.load(out), nib.load(thick_nifti)
    assert img.shape == (40, 36, 40)
    np.testing.assert_allclose(img.header.get_zooms(), (0.9, 0.9, 1.0), atol=1e-5)
    assert img.get_data_dtype() == np.int16  # integer input -> same integer dtype
    # Input slice 0 centre lies on output row 2 (factor 5, centre row 2).
    np.testing.assert_allclose(img.affine @ [0, 0, 2, 1], src.affine @ [0, 0, 0, 1], atol=1e-4)
    info = json.loads(meta.read_text())
    assert info["UpsamplingFactor"] == 5 and info["SliceAxis"] == 2 and info["Model"] == "tiny"
    assert len(info["ModelWeightsSHA256"]) == 64
    assert nib.load(cmap).shape == src.shape
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert info["ProjectedOntoInput"] is True and "ProjectionSkipped" not in info
    assert (info["SliceThickness"], info["SliceThicknessSource"], info["SliceGap"]) == (5.0, "option", 0.0)
    assert "SliceThicknessEstimate" not in info  # a given thickness: the estimator does not run
    raw = tmp_path / "raw.nii.gz"
    assert main([str(thick_nifti), str(raw), "--weights", str(tiny_weights), "--json", str(meta), "-q",
                 "--no-consistency-projection", "--slice-thickness", "5"]) == 0
    assert json.loads(meta.read_text())["ProjectedOntoInput"] is False
    assert np.abs(nib.load(raw).get_fdata() - img.get_fdata()).max() > 0
    assert info["Precision"] in ("fp32", "bf16")  # --precision auto: what this machine computes natively
    assert main([str(thick_nifti), str(raw), "--weights", str(tiny_weights), "--json", str(meta), "-q",
                 "--precision", "fp32"]) == 0
    assert json.loads(meta.read_text())["Precision"] == "fp32"


def test_unknown_precision_is_a_usage_error(thick_nifti, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--precision", "fp16"])
    assert exc.value.code == 64 and "--precision" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


def test_cubic_method_needs_no_weights(thick_nifti, tmp_path):
    out = tmp_path / "cubic.nii.gz"
    assert main([str(thick_nifti), str(out), "--method", "cubic", "-q"]) == 0
    got = nib.load(out).get_fdata()
    src = nib.load(thick_nifti).get_fdata()
    np.testing.assert_allclose(got[..., 2::5], src, atol=1.0)  # passes through the input samples


def test_unwritable_output_and_missing_weights(thick_nifti, tmp_path, capsys, monkeypatch):
    assert main([str(thick_nifti), str(tmp_path / "no" / "dir" / "o.nii.gz"), "-q"]) == 73
    assert main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--weights", str(tmp_path / "none.pt"), "-q"]) == 66
    import prettier_bids.sr.models as models

    monkeypatch.setattr(models, "weights_dir", lambda: tmp_path / "empty")
    assert main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--model", "nonexistent", "-q"]) == 66
    err = capsys.readouterr().err
    assert "no trained weights installed" in err
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("name, model", [("sub-01_FLAIR.nii.gz", "prettier-edsr-v3-flair"),
                                         ("sub-01_acq-2d_T1w.nii.gz", "prettier-edsr-v3"),
                                         ("thick.nii.gz", "prettier-edsr-v3")])
def test_default_model_follows_the_contrast_in_the_file_name(thick_nifti, tmp_path, name, model):
    """No --model/--weights: FLAIR inputs get the FLAIR model, any other (or unknown) contrast the default;
    a named model wins for every contrast."""
    from prettier_bids.sr.models import resolve_weights, sha256

    src = tmp_path / name
    src.write_bytes(thick_nifti.read_bytes())
    meta = tmp_path / "sr.json"
    assert main([str(src), str(tmp_path / "sr.nii.gz"), "--json", str(meta), "-q"]) == 0
    info = json.loads(meta.read_text())
    assert info["Model"] == model and info["ModelWeightsSHA256"] == sha256(resolve_weights(model))
    if "FLAIR" in name:
        assert main([str(src), str(tmp_path / "v3.nii.gz"), "--model", "prettier-edsr-v3", "--json", str(meta),
                     "-q"]) == 0
        assert json.loads(meta.read_text())["Model"] == "prettier-edsr-v3"
