#!/usr/bin/env python
"""Generate the small BIDS test dataset ``data/test_bids`` (run from anywhere; deterministic).

Source: nilearn's MNI152 1 mm template (``nilearn.datasets.load_mni152_template``, shipped
inside the nilearn package, so this works offline). Nothing else is read.

To keep the dataset a few MB and every image fast to super-resolve, the brain is shrunk to
half size (a "miniature head", 78 x 97 x 80 voxels) and then treated as a 1 mm volume.
Thick-slice acquisitions are simulated with the SR core's own forward model
(:func:`prettier_bids.sr.degrade.simulate_thick_slices`); contrasts other than T1w come from
an intensity transform of the T1-weighted template (FLAIR: dark CSF, grey matter brighter
than white matter, a few bright "lesions"; T2w: bright CSF).

Layout (``--min-slice-spacing`` defaults to 2 mm in the app)::

    sub-01/ses-1/anat/sub-01_ses-1_FLAIR   axial 5 mm (4 mm slices, 1 mm gap), RAS voxel order
    sub-01/ses-1/anat/sub-01_ses-1_T1w     sagittal 4 mm, stored P-I-R (slices along the 3rd array axis)
    sub-01/ses-2/anat/sub-01_ses-2_FLAIR   coronal 6 mm (5 mm slices), stored L-S-P
    sub-01/ses-2/anat/sub-01_ses-2_T1w     1 mm isotropic 3D: must be skipped
    sub-02/anat/sub-02_FLAIR               oblique axial 5 mm (rotated 15 deg about x, 8 deg about z)
    sub-02/anat/sub-02_T1w                 axial 3 mm
    sub-03/anat/sub-03_FLAIR               sagittal 6 mm (5 mm slices), RAS voxel order
    sub-03/anat/sub-03_T1w                 axial 1.8 mm: below the 2 mm minimum, skipped
    sub-03/anat/sub-03_T2w                 coronal 4 mm (only with --contrast T2w)

Usage: ``python data/test_bids/code/make_test_bids.py [OUT_DIR]`` (default: this dataset's root).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from prettier_bids.sr.degrade import simulate_thick_slices

SEED = 20240501
SCALE = 0.5  # anatomy shrink factor (keeps the dataset small)
BIDS_VERSION = "1.10.0"

#: name, subject, session, contrast, axis (RAS), spacing, thickness, orientation codes, rotation (deg about x, z)
ACQUISITIONS = [
    ("sub-01_ses-1_FLAIR", "01", "1", "FLAIR", 2, 5.0, 4.0, ("R", "A", "S"), None),
    ("sub-01_ses-1_T1w", "01", "1", "T1w", 0, 4.0, 4.0, ("P", "I", "R"), None),
    ("sub-01_ses-2_FLAIR", "01", "2", "FLAIR", 1, 6.0, 5.0, ("L", "S", "P"), None),
    ("sub-01_ses-2_T1w", "01", "2", "T1w", None, 1.0, 1.0, ("R", "A", "S"), None),
    ("sub-02_FLAIR", "02", None, "FLAIR", 2, 5.0, 5.0, ("R", "A", "S"), (15.0, 8.0)),
    ("sub-02_T1w", "02", None, "T1w", 2, 3.0, 3.0, ("R", "A", "S"), None),
    ("sub-03_FLAIR", "03", None, "FLAIR", 0, 6.0, 5.0, ("R", "A", "S"), None),
    ("sub-03_T1w", "03", None, "T1w", 2, 1.8, 1.8, ("R", "A", "S"), None),
    ("sub-03_T2w", "03", None, "T2w", 1, 4.0, 4.0, ("R", "A", "S"), None),
]

SEQUENCE = {
    "FLAIR": {"RepetitionTime": 9.0, "EchoTime": 0.09, "InversionTime": 2.5, "FlipAngle": 150,
              "SeriesDescription": "t2_tirm_dark-fluid"},
    "T1w": {"RepetitionTime": 0.55, "EchoTime": 0.0096, "FlipAngle": 90,
            "SeriesDescription": "t1_se"},
    "T2w": {"RepetitionTime": 5.0, "EchoTime": 0.1, "FlipAngle": 150, "SeriesDescription": "t2_tse"},
}
PLANE = {0: "sagittal", 1: "coronal", 2: "axial", None: "3D"}


def miniature_head():
    """The MNI T1 template shrunk to half size, cropped to the brain plus a margin, values 0..1."""
    from nilearn.datasets import load_mni152_template

    tpl = load_mni152_template(resolution=1)
    data = np.asarray(tpl.get_fdata(dtype=np.float32))
    small = ndimage.zoom(data, SCALE, order=1)
    idx = np.argwhere(small > 0.05)
    lo = np.maximum(idx.min(0) - 3, 0)
    hi = np.minimum(idx.max(0) + 4, small.shape)
    small = np.clip(small[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], 0, 1)
    affine = np.eye(4)
    affine[:3, 3] = -(np.asarray(small.shape) - 1) / 2.0  # centred at the world origin, 1 mm voxels
    return small, affine


def _smoothstep(x, a, b):
    u = np.clip((x - a) / (b - a), 0, 1)
    return u * u * (3 - 2 * u)


def lesion_mask(t1):
    """A few small ellipsoids in the white matter (what FLAIR must preserve)."""
    shape = np.asarray(t1.shape)
    rng = np.random.default_rng(SEED + 1)
    wm = ndimage.binary_erosion(t1 > 0.8, iterations=2)
    cand = np.argwhere(wm)
    centre = shape / 2
    cand = cand[np.linalg.norm((cand - centre) / shape, axis=1) < 0.25]
    grid = np.indices(t1.shape).astype(np.float32)
    mask = np.zeros(t1.shape, dtype=np.float32)
    for c in cand[rng.choice(len(cand), size=4, replace=False)]:
        radii = rng.uniform(1.5, 3.0, size=3)
        d2 = sum(((grid[i] - c[i]) / radii[i]) ** 2 for i in range(3))
        mask = np.maximum(mask, np.clip(1.5 - d2, 0, 1))
    return mask


def contrast(t1, kind, lesions):
    brain = _smoothstep(t1, 0.05, 0.25)
    if kind == "T1w":
        return t1
    if kind == "FLAIR":
        f = brain * (0.15 + 0.85 * np.exp(-((t1 - 0.62) / 0.25) ** 2) * _smoothstep(t1, 0.3, 0.5))
        return np.maximum(f, 0.95 * lesions * brain)
    if kind == "T2w":
        return brain * np.clip(1.15 - t1, 0, 1)
    raise ValueError(kind)


def rotation(deg_x, deg_z):
    ax, az = math.radians(deg_x), math.radians(deg_z)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx
    return m


def to_int16(volume, rng, noise=0.015):
    """Scanner-like storage: Rician-like noise, scaled to 0..~1000, int16."""
    noisy = np.hypot(volume + rng.normal(0, noise, volume.shape), rng.normal(0, noise, volume.shape))
    return np.clip(np.rint(noisy * 1000), 0, 32767).astype(np.int16)


def make_image(data, affine, codes):
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    cur = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(codes)
    img = img.as_reoriented(nib.orientations.ornt_transform(cur, target))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img


def write_json(obj, path):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def main(out_dir=None):
    out = Path(out_dir) if out_dir else Path(__file__).resolve().parents[1]
    t1, affine = miniature_head()
    lesions = lesion_mask(t1)
    rng = np.random.default_rng(SEED)
    for name, sub, ses, kind, axis, spacing, thickness, codes, rot in ACQUISITIONS:
        vol = contrast(t1, kind, lesions)
        base = affine if rot is None else rotation(*rot) @ affine
        if axis is None:
            lr, lr_affine = vol, base
        else:
            deg = simulate_thick_slices(vol, base, axis=axis, thickness=thickness, spacing=spacing)
            lr, lr_affine = deg.data, deg.affine
        img = make_image(to_int16(lr, rng), lr_affine, codes)
        folder = out / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(folder / f"{name}.nii.gz"))
        meta = {"Manufacturer": "Synthetic (prettier_bids test data)", "MagneticFieldStrength": 3,
                "MRAcquisitionType": "3D" if axis is None else "2D", "SliceThickness": thickness,
                **({} if axis is None else {"SpacingBetweenSlices": spacing}),
                **SEQUENCE[kind]}
        meta["SeriesDescription"] = f"{meta['SeriesDescription']} {PLANE[axis]}{' oblique' if rot else ''} (synthetic)"
        write_json(meta, folder / f"{name}.json")

    write_json({
        "Name": "prettier_bids test dataset (synthetic thick-slice FLAIR/T1w/T2w)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["prettier_bids developers"],
        "GeneratedBy": [{"Name": "make_test_bids.py", "Description": "code/make_test_bids.py in this dataset"}],
        "SourceDatasets": [{"URL": "nilearn.datasets.load_mni152_template (MNI152 ICBM 2009 1 mm template)"}],
    }, out / "dataset_description.json")
    (out / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t34\tF\nsub-02\t51\tM\nsub-03\t45\tF\n")
    write_json({"age": {"Description": "age of the participant", "Units": "year"},
                "sex": {"Description": "sex of the participant", "Levels": {"F": "female", "M": "male"}}},
               out / "participants.json")
    (out / "README").write_text(
        "Synthetic thick-slice brain MRI for testing prettier_bids (not real subjects).\n\n"
        "Made by code/make_test_bids.py from the MNI152 template that nilearn ships: the brain is shrunk\n"
        "to half size to keep files small, thick slices are simulated (2D FLAIR, T1w and T2w in axial,\n"
        "sagittal, coronal and oblique orientations), FLAIR and T2w contrasts come from an intensity\n"
        "transform, and noise is added. sub-01/ses-2 has a 1 mm isotropic T1w and sub-03 a 1.8 mm T1w that\n"
        "prettier-bids skips. Regenerate with: python data/test_bids/code/make_test_bids.py\n")
    (out / "CHANGES").write_text("1.0.0 2024-05-01\n  - Initial synthetic release.\n")
    return out


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else None))
