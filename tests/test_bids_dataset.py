"""The bundled test dataset (data/test_bids): what the generator promises, size, BIDS validity."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from _bids_support import NO_VALIDATOR, TEST_BIDS, validator, validator_errors

#: relative path -> (shape, voxel sizes, orientation codes, slice thickness in the sidecar)
EXPECTED = {
    "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz": ((78, 97, 16), (1, 1, 5), ("R", "A", "S"), 4.0),
    "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": ((97, 80, 19), (1, 1, 4), ("P", "I", "R"), 4.0),
    "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz": ((78, 80, 16), (1, 1, 6), ("L", "S", "P"), 5.0),
    "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz": ((78, 97, 80), (1, 1, 1), ("R", "A", "S"), 1.0),
    "sub-02/anat/sub-02_FLAIR.nii.gz": ((78, 97, 16), (1, 1, 5), ("R", "A", "S"), 5.0),
    "sub-02/anat/sub-02_T1w.nii.gz": ((78, 97, 26), (1, 1, 3), ("R", "A", "S"), 3.0),
    "sub-03/anat/sub-03_FLAIR.nii.gz": ((13, 97, 80), (6, 1, 1), ("R", "A", "S"), 5.0),
    "sub-03/anat/sub-03_T1w.nii.gz": ((78, 97, 44), (1, 1, 1.8), ("R", "A", "S"), 1.8),
    "sub-03/anat/sub-03_T2w.nii.gz": ((78, 24, 80), (1, 4, 1), ("R", "A", "S"), 4.0),
}


def test_images_match_the_generator_description():
    found = sorted(p.relative_to(TEST_BIDS).as_posix() for p in TEST_BIDS.rglob("*.nii.gz"))
    assert found == sorted(EXPECTED)
    for rel, (shape, zooms, codes, thickness) in EXPECTED.items():
        img = nib.load(str(TEST_BIDS / rel))
        assert img.shape == shape, rel
        assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), zooms, atol=1e-4), rel
        assert nib.aff2axcodes(img.affine) == codes, rel
        assert img.get_data_dtype() == np.int16, rel
        assert np.allclose(img.header.get_qform(), img.header.get_sform()), rel
        meta = json.loads((TEST_BIDS / rel.replace(".nii.gz", ".json")).read_text())
        assert meta["SliceThickness"] == thickness, rel
        data = np.asarray(img.dataobj)
        assert data.max() > 500 and data.min() >= 0, rel


def test_oblique_image_is_oblique():
    aff = nib.load(str(TEST_BIDS / "sub-02/anat/sub-02_FLAIR.nii.gz")).affine
    cols = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
    assert np.abs(cols).max(axis=0).min() < 0.99  # no voxel axis is aligned with a world axis


def test_dataset_is_small():
    total = sum(p.stat().st_size for p in TEST_BIDS.rglob("*") if p.is_file())
    assert total < 4 * 2 ** 20


@pytest.mark.slow  # regenerates the dataset (~9 s)
def test_generator_is_deterministic(tmp_path):
    """The committed script regenerates the same images (from nilearn's template only).

    Tolerates off-by-one rounding from other numpy/scipy versions.
    """
    script = TEST_BIDS / "code" / "make_test_bids.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True, timeout=300)
    for rel in EXPECTED:
        new, old = nib.load(str(tmp_path / rel)), nib.load(str(TEST_BIDS / rel))
        diff = np.abs(np.asarray(new.dataobj, dtype=np.int32) - np.asarray(old.dataobj, dtype=np.int32))
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, rel
        assert np.allclose(new.affine, old.affine), rel
        sidecar = rel.replace(".nii.gz", ".json")
        assert (tmp_path / sidecar).read_text() == (TEST_BIDS / sidecar).read_text()


@pytest.mark.skipif(validator() is None, reason=NO_VALIDATOR)
def test_dataset_passes_the_bids_validator():
    assert validator_errors(TEST_BIDS) == []
