"""Reruns that notice changes: an output is complete only for the inputs that determine it (the input file, the
sidecar values used, model and weights, options); when one differs, that image is redone and the log says why.
Before, adding SliceThickness to a sidecar logged "thickness 3 mm", then "already done, skipping", and the
output kept 3.3 mm and "no SliceThickness in the sidecar"."""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from _bids_support import TEST_BIDS, run_here


def _sidecar(out, name):
    return json.loads((out / "prettier" / "sub-02" / "anat" / name).read_text())


@pytest.mark.slow
def test_changed_sidecar_thickness_or_input_file_redoes_exactly_that_image(tmp_path):
    bids, out, work = tmp_path / "bids", tmp_path / "out", tmp_path / "work"
    shutil.copytree(TEST_BIDS, bids)
    args = [bids, out, "participant", "--participant-label", "02", "--method", "cubic", "--skip-bids-validation",
            "-w", work, "--nprocs", "1"]
    first = run_here(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    flair0 = _sidecar(out, "sub-02_desc-cubic_FLAIR.json")
    t1w0 = _sidecar(out, "sub-02_desc-cubic_T1w.json")
    assert flair0["SourceFile"]["Size"] == os.path.getsize(bids / "sub-02/anat/sub-02_FLAIR.nii.gz")
    assert len(flair0["SourceFile"]["SHA256"]) == 64
    assert flair0["GeneratedByRun"]["RunId"] and "participant" in flair0["GeneratedByRun"]["Command"]

    # nothing changed: both skipped
    again = run_here(*args)
    assert again.returncode == 0 and again.stderr.count("already done, skipping") == 2, again.stderr[-2000:]

    # the FLAIR sidecar now gives another thickness: that image only is redone, with the reason
    meta = json.loads((bids / "sub-02/anat/sub-02_FLAIR.json").read_text())
    meta["SliceThickness"] = 3.0
    (bids / "sub-02/anat/sub-02_FLAIR.json").write_text(json.dumps(meta))
    third = run_here(*args)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "redoing sub-02/anat/sub-02_FLAIR.nii.gz: SliceThickness changed: 5 -> 3 mm" in third.stderr
    assert "already done, skipping: sub-02/anat/sub-02_T1w.nii.gz" in third.stderr
    flair1 = _sidecar(out, "sub-02_desc-cubic_FLAIR.json")
    assert flair1["SliceThickness"] == 3.0 and flair1["SliceThicknessSource"] == "sidecar"
    assert flair1["GeneratedByRun"]["RunId"] != flair0["GeneratedByRun"]["RunId"]
    assert _sidecar(out, "sub-02_desc-cubic_T1w.json") == t1w0  # untouched

    # the T1w image itself changes (same size, other voxels): redone; touched without a change: skipped
    path = bids / "sub-02/anat/sub-02_T1w.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[data.shape[0] // 2, data.shape[1] // 2, :] += 1
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    fourth = run_here(*args)
    assert fourth.returncode == 0, fourth.stderr[-2000:]
    assert "redoing sub-02/anat/sub-02_T1w.nii.gz: the input file changed" in fourth.stderr
    assert "already done, skipping: sub-02/anat/sub-02_FLAIR.nii.gz" in fourth.stderr
    os.utime(bids / "sub-02/anat/sub-02_FLAIR.nii.gz")  # new time, same bytes
    fifth = run_here(*args)
    assert fifth.stderr.count("already done, skipping") == 2, fifth.stderr[-2000:]


@pytest.mark.slow
def test_a_sidecar_without_slice_thickness_leaves_it_to_the_core_and_adding_one_redoes_the_image(tmp_path):
    """No SliceThickness in the sidecar: the SR core estimates it (or assumes it equal to the spacing) and the
    output sidecar records the core's value and source; a rerun with nothing changed skips it, one with a
    SliceThickness added redoes it (the given thickness wins)."""
    bids, out, work = tmp_path / "bids", tmp_path / "out", tmp_path / "work"
    shutil.copytree(TEST_BIDS, bids)
    side = bids / "sub-02/anat/sub-02_FLAIR.json"
    meta = json.loads(side.read_text())
    del meta["SliceThickness"]
    side.write_text(json.dumps(meta))
    args = [bids, out, "participant", "--participant-label", "02", "--method", "cubic", "--skip-bids-validation",
            "-w", work, "--nprocs", "1"]
    first = run_here(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert ("sub-02_FLAIR.nii.gz [slice axis 2, spacing 5 mm, thickness unknown: estimated from the image, else "
            "assumed equal to the spacing]") in first.stderr
    flair0 = _sidecar(out, "sub-02_desc-cubic_FLAIR.json")
    assert flair0["SliceThicknessSource"] in ("estimated", "assumed: equal to spacing")
    assert "Confident" in flair0["SliceThicknessEstimate"] and flair0["ProjectedOntoInput"] is False
    assert "ProjectionSkipped" not in flair0  # the cubic output is never projected: nothing was skipped
    if flair0["SliceThicknessSource"] == "assumed: equal to spacing":
        assert flair0["SliceThickness"] == 5.0 and flair0["SliceGap"] == 0.0
    cons = json.loads((out / "prettier/sub-02/anat/sub-02_desc-consistency_FLAIR.json").read_text())
    assert cons["SliceThicknessSource"] == flair0["SliceThicknessSource"]
    assert _sidecar(out, "sub-02_desc-cubic_T1w.json")["SliceThicknessSource"] == "sidecar"

    again = run_here(*args)
    assert again.returncode == 0 and again.stderr.count("already done, skipping") == 2, again.stderr[-2000:]

    meta["SliceThickness"] = 4.0
    side.write_text(json.dumps(meta))
    third = run_here(*args)
    assert third.returncode == 0, third.stderr[-2000:]
    assert ("redoing sub-02/anat/sub-02_FLAIR.nii.gz: SliceThickness" in third.stderr), third.stderr[-2000:]
    flair1 = _sidecar(out, "sub-02_desc-cubic_FLAIR.json")
    assert (flair1["SliceThickness"], flair1["SliceThicknessSource"]) == (4.0, "sidecar")
    assert "SliceThicknessEstimate" not in flair1 and flair1["SliceGap"] == 1.0
