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
