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


def save_torch_atomic(obj, path):
    """``torch.save(obj)`` to a temporary file beside ``path``, then a rename: readers never see half a file."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
