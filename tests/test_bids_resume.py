"""Bad input and interrupted runs, through the real command line (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from _bids_support import REPO, copy_dataset, read_tsv, run_app, validator, validator_errors

pytestmark = pytest.mark.slow  # end-to-end runs (~20 s each)

SUB01 = ["sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
         "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz"]


def _marker(rel):
    folder, name = rel.rsplit("/", 1)
    stem, suffix = name[:-7].rsplit("_", 1)
    return f"{folder}/{stem}_desc-prettier_{suffix}.json"


def _assert_whole_files(root):
    """Every visible NIfTI reads completely and every JSON parses: nothing half-written."""
    for path in root.rglob("*.nii.gz"):
        assert not path.name.startswith("."), path
        assert np.all(np.isfinite(nib.load(str(path)).get_fdata())), path
    for path in root.rglob("*.json"):
        json.loads(path.read_text())


def test_corrupt_file_fails_only_that_input(tmp_path, tiny_weights):
    bids = copy_dataset(tmp_path / "bids")
    bad = bids / "sub-02/anat/sub-02_FLAIR.nii.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated gzip: header fine, data not
    out = tmp_path / "out"
    proc = run_app(bids, out, "participant", "--participant-label", "02", "sub-03", "--weights", tiny_weights,
                   "-w", tmp_path / "work", "--nprocs", "2", "--skip-bids-validation")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prettier-bids: error: 1 of 4 input(s) failed (participant(s) sub-02); see ")
    root = out / "prettier"
    (summary,) = (root / "logs").glob("summary_*.tsv")
    rows = {r["input"]: r for r in read_tsv(summary)}
    failed = rows["sub-02/anat/sub-02_FLAIR.nii.gz"]
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("validate failed: InputError: cannot read image data")
    assert rows["sub-02/anat/sub-02_T1w.nii.gz"]["status"] == "done"
    assert rows["sub-03/anat/sub-03_FLAIR.nii.gz"]["status"] == "done"
    assert (root / "sub-03/anat/sub-03_desc-prettier_FLAIR.nii.gz").is_file()
    assert not (root / "sub-02/anat/sub-02_desc-prettier_FLAIR.nii.gz").exists()
    (crash,) = (root / "sub-02" / "log").glob("*/crash-*.txt")  # readable crash file
    text = crash.read_text()
    assert text.startswith("Node: ") and "sub_02_wf.sr_FLAIR_wf.validate" in text
    assert str(crash.relative_to(root)) in failed["reason"]
    page = (root / "sub-02.html").read_text()
    assert "failed: validate failed: InputError: cannot read image data" in page
    assert "One or more execution steps failed (1)" in page  # nireports' errors reportlet: the crash file
    _assert_whole_files(root)
    if validator():  # crash files and reports are covered by .bidsignore
        assert validator_errors(root) == []


def test_killed_run_leaves_no_partial_files_and_rerun_completes(tmp_path, tiny_weights):
    bids = copy_dataset(tmp_path / "bids")
    out, root = tmp_path / "out", tmp_path / "out" / "prettier"
    args = [bids, out, "participant", "--participant-label", "01", "--weights", tiny_weights, "-w", tmp_path / "work",
            "--nprocs", "1", "--skip-bids-validation"]
    proc = subprocess.Popen([sys.executable, "-m", "prettier_bids.cli.run", *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if root.is_dir() and any(root.rglob("*_desc-prettier_*.json")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the first output was complete"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    finished = [rel for rel in SUB01 if (root / _marker(rel)).is_file()]
    assert 1 <= len(finished) < len(SUB01)
    assert not list((root / "logs").glob("summary_*.tsv"))  # the run really was cut short
    # whatever was left is whole: temporaries are hidden and removed on the next run
    for path in root.rglob("*.nii.gz"):
        if not path.name.startswith("."):
            nib.load(str(path)).get_fdata()
    for path in root.rglob("*.json"):
        json.loads(path.read_text())

    again = run_app(*args)
    assert again.returncode == 0, again.stderr
    (summary,) = (root / "logs").glob("summary_*.tsv")
    rows = {r["input"]: r for r in read_tsv(summary)}
    for rel in SUB01:
        assert rows[rel]["status"] == "done"
        expected = "outputs already complete (earlier run)" if rel in finished else "processed in this run"
        assert rows[rel]["reason"] == expected, rel
        assert (root / _marker(rel)).is_file()
    assert not list(root.rglob(".*.tmp*"))
    _assert_whole_files(root)


def test_default_models_follow_the_contrast_and_reruns_compare_each_contrasts_weights(tmp_path):
    """No --model: FLAIR inputs get prettier-edsr-v3-flair, the others prettier-edsr-v3 (sidecars, log).
    A rerun with --model prettier-edsr-v3 redoes only the FLAIRs (made with other weights); T1w is kept."""
    from prettier_bids.naming import suffix_of
    from prettier_bids.sr.models import default_model, resolve_weights, sha256

    bids = copy_dataset(tmp_path / "bids")
    out, root = tmp_path / "out", tmp_path / "out" / "prettier"
    args = [bids, out, "participant", "--participant-label", "01", "--session-label", "1", "-w", tmp_path / "work",
            "--nprocs", "1", "--skip-bids-validation"]
    first = run_app(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    for rel, model in ((SUB01[0], "prettier-edsr-v3-flair"), (SUB01[1], "prettier-edsr-v3")):
        assert default_model(suffix_of(rel)) == model
        meta = json.loads((root / _marker(rel)).read_text())
        assert meta["Model"] == model and meta["ModelWeightsSHA256"] == sha256(resolve_weights(model))
    log = "\n".join(p.read_text() for p in (root / "logs").glob("prettier-bids_*.log"))
    assert "model prettier-edsr-v3 (" in log and "FLAIR: prettier-edsr-v3-flair (" in log
    t1w_before = (root / _marker(SUB01[1])).stat().st_mtime_ns
    again = run_app(*args, "--model", "prettier-edsr-v3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((root / _marker(SUB01[0])).read_text())["Model"] == "prettier-edsr-v3"
    assert (root / _marker(SUB01[1])).stat().st_mtime_ns == t1w_before
    reasons = {r["contrast"]: r["reason"] for r in read_tsv(max((root / "logs").glob("summary_*.tsv")))}
    assert reasons == {"FLAIR": "processed in this run", "T1w": "outputs already complete (earlier run)"}
