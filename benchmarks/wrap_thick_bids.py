"""Wrap the real clinical thick-slice scans of ../shared/data/thick as a BIDS dataset (symlinks only).

    python benchmarks/wrap_thick_bids.py ../shared/data/thick /tmp/thick_bids
    prettier-bids /tmp/thick_bids /tmp/thick_out participant --participant-label p01

Nothing is copied: the images are linked (so nothing of them can end up in this repository); the
sidecars carry the slice thickness of the header (raw 2D acquisitions without gap information).
"""

import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

PATTERN = re.compile(r"openms_(p\d+)_study(\d)_(FLAIR|T1w|T2w)\.nii\.gz$")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    src, out = Path(argv[0]).resolve(), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "open_ms_data longitudinal (raw clinical 2D), wrapped for prettier_bids trials",
         "BIDSVersion": "1.10.0", "DatasetType": "raw",
         "License": "CC-BY (Lesjak et al., Neuroinformatics 2016/2017)"}, indent=2))
    subjects = set()
    for path in sorted(src.glob("openms_*_study*_*.nii.gz")):
        m = PATTERN.match(path.name)
        if not m:
            continue
        sub, ses, contrast = m.groups()
        subjects.add(sub)
        anat = out / f"sub-{sub}" / f"ses-{ses}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_ses-{ses}_{contrast}"
        link = anat / f"{stem}.nii.gz"
        if not link.exists():
            link.symlink_to(path)
        zooms = np.sqrt((nib.load(path).affine[:3, :3] ** 2).sum(0))
        (anat / f"{stem}.json").write_text(json.dumps(
            {"MRAcquisitionType": "2D", "SliceThickness": round(float(zooms.max()), 3)}, indent=2))
    (out / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{s}\n" for s in sorted(subjects)))
    print(f"wrapped {len(subjects)} participants into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
