"""Helpers of the fault tests (test_sr_bad_inputs, test_sr_output_safety, test_sr_options_and_qc, test_bids_faults):
small NIfTI files, prettier-sr in-process or as a subprocess, the one-error-line check."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from _bids_support import REPO
from prettier_bids.cli.sr import main as sr_main

AFF = np.diag([1.0, 1.0, 5.0, 1.0])


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temporaries(folder):
    return sorted(p.name for p in Path(folder).rglob(".*.tmp*"))


def make(path, data, affine=AFF, **header):
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return Path(path)


def brain(shape=(24, 20, 6), seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.random(shape), (2, 2, 0.5)) * 1000).astype(np.float32)


def run_sr(capsys, *args):
    """prettier-sr in-process: (exit code, stderr lines)."""
    rc = sr_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


def one_error(lines, code_text=None):
    errors = [ln for ln in lines if ": error:" in ln]
    assert len(errors) == 1, lines
    assert len(lines) == 1, lines  # nothing else printed with -q
    if code_text:
        assert code_text in errors[0], errors[0]
    return errors[0]


def sr_subprocess(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "prettier_bids.cli.sr", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, **kwargs)
