"""The lesion-focused reportlet finds the brightest focal regions and draws input / cubic / SR."""

import nibabel as nib
import numpy as np
from scipy import ndimage

from prettier_bids.reports.lesionview import hyperintense_regions, lesion_view_svg


def _head(shape=(90, 100, 90)):
    rng = np.random.default_rng(0)
    g = np.mgrid[tuple(slice(0, n) for n in shape)].astype(np.float32)
    r = np.sqrt(sum((g[i] - shape[i] / 2) ** 2 for i in range(3)))
    vol = np.where(r < 42, 100.0, 0.0).astype(np.float32)
    vol += (r < 42) * rng.normal(0, 3, shape).astype(np.float32)
    centres = {"big": (45, 50, 45), "small": (40, 60, 40)}
    for name, c, rad in (("big", centres["big"], 4), ("small", centres["small"], 2)):
        d = np.sqrt(sum((g[i] - c[i]) ** 2 for i in range(3)))
        vol[d <= rad] += 60
    return ndimage.gaussian_filter(vol, 0.5), centres


def test_regions_are_the_bright_blobs_largest_first():
    vol, centres = _head()
    regions = hyperintense_regions(vol, (1.0, 1.0, 1.0))
    assert len(regions) == 2  # noise alone gives no region of >= 10 voxels
    (m1, c1, n1), (m2, c2, n2) = regions
    assert n1 > n2 >= 10
    assert np.abs(np.subtract(c1, centres["big"])).max() <= 1 and np.abs(np.subtract(c2, centres["small"])).max() <= 1
    assert hyperintense_regions(np.zeros((20, 20, 20)), (1, 1, 1)) == []


def test_lesion_view_svg(tmp_path):
    vol, _ = _head()
    aff = np.eye(4)
    sr = tmp_path / "sr.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), sr)
    thick_aff = np.diag([1.0, 1.0, 5.0, 1.0])
    thick_aff[2, 3] = 2.0
    thick = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(vol[:, :, 2::5].copy(), thick_aff), thick)
    out = lesion_view_svg(thick, sr, sr, tmp_path / "view.svg")
    text = (tmp_path / "view.svg").read_text()
    assert out.endswith("view.svg") and text.lstrip().startswith("<?xml") and "<svg" in text
    assert "region 1" in text and "region 2" in text and "region 3" not in text
    assert "PRETTIER super-resolution" in text


def test_lesion_view_without_regions_still_labels_the_columns(tmp_path):
    sr = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((30, 30, 30), 50.0, np.float32), np.eye(4)), sr)
    lesion_view_svg(sr, sr, sr, tmp_path / "v.svg")
    text = (tmp_path / "v.svg").read_text()
    assert "no hyperintense region found" in text and "thick-slice input" in text and "region 1" not in text
