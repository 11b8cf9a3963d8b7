"""Atomic file writes: a temporary file beside the target, then a rename (no half-written outputs)."""

from __future__ import annotations

import os
from pathlib import Path


def _tmp_for(path, suffix=""):
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def save_nifti_atomic(img, path):
    import nibabel as nib

    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = _tmp_for(path, suffix)
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(text, path):
    path = Path(path)
    tmp = _tmp_for(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
