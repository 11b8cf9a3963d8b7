"""Adversarial round 3: faults found by attacking the merged issue-24 guards from the user's side.

Each test names the behaviour it checks; each failed before its fix (see docs/errors.md for the rows).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _bids_support import TEST_BIDS


# --------------------------------------------------------------------------------------------
# The work directory's lock file (paths.FolderLock)
# --------------------------------------------------------------------------------------------

def test_lock_file_hard_linked_to_an_input_is_refused_and_the_input_is_not_truncated(tmp_path):
    from prettier_bids.paths import FolderLock, OutputPathError

    sidecar = tmp_path / "bids" / "sub-01_T1w.json"
    sidecar.parent.mkdir()
    sidecar.write_text('{"SliceThickness": 4}\n')
    work = tmp_path / "work"
    work.mkdir()
    os.link(sidecar, work / FolderLock.NAME)
    with pytest.raises(OutputPathError) as info:
        FolderLock(work).acquire()
    assert info.value.code == 73 and "hard links" in str(info.value)
    assert sidecar.read_text() == '{"SliceThickness": 4}\n'  # was truncated to "PID host"


def test_lock_file_planted_as_a_fifo_is_exit_73_not_an_unexpected_error(tmp_path):
    from prettier_bids.paths import FolderLock, OutputPathError

    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / FolderLock.NAME)
    with pytest.raises(OutputPathError) as info:  # was OSError EINVAL (ftruncate): exit 1, "unexpected OSError"
        FolderLock(work).acquire()
    assert info.value.code == 73 and "not a regular file" in str(info.value)


# --------------------------------------------------------------------------------------------
# Selection (bids.collect_candidates): file names pybids reads only in part
# --------------------------------------------------------------------------------------------

def _one_subject_dataset(tmp_path):
    ds = tmp_path / "bids"
    shutil.copytree(TEST_BIDS, ds, ignore=shutil.ignore_patterns("sub-01", "sub-03"))
    return ds


def test_image_whose_name_is_not_a_bids_name_is_skipped_alone_not_the_whole_run(tmp_path):
    from prettier_bids.bids import get_layout, select

    ds = _one_subject_dataset(tmp_path)
    anat = ds / "sub-02" / "anat"
    shutil.copy(anat / "sub-02_FLAIR.nii.gz", anat / "sub-02_foo_FLAIR.nii.gz")  # valid with a .bidsignore entry
    (ds / ".bidsignore").write_text("*_foo_*\n")
    cands = select(get_layout(ds), ["02"], contrasts=["FLAIR"])  # was BIDSError(65): "... would both be written to"
    by_name = {Path(c.relpath).name: c for c in cands}
    assert by_name["sub-02_FLAIR.nii.gz"].status == "selected"
    odd = by_name["sub-02_foo_FLAIR.nii.gz"]
    assert odd.status == "skipped" and "not a BIDS file name" in odd.reason and "sub-02_FLAIR.nii.gz" in odd.reason
