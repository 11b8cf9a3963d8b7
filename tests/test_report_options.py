"""--no-reportlets (no per-output figures; the group level unchanged) and --reports-only (rebuild the reports
from the outputs on disk, fMRIPrep's convention)."""

import pytest
from _bids_support import TEST_BIDS, run_here


@pytest.mark.slow
def test_no_reportlets_then_reports_only(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    base = [TEST_BIDS, out, "participant", "--participant-label", "02", "--method", "cubic", "--skip-bids-validation",
            "--nprocs", "1"]
    proc = run_here(*base, "-w", work, "--no-reportlets")
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = out / "prettier"
    assert sorted(p.name for p in (root / "sub-02" / "anat").glob("*.nii.gz")) == [
        "sub-02_desc-consistency_FLAIR.nii.gz", "sub-02_desc-consistency_T1w.nii.gz", "sub-02_desc-cubic_FLAIR.nii.gz",
        "sub-02_desc-cubic_T1w.nii.gz"]
    assert not list(root.rglob("*.svg"))  # no figures
    page = (root / "sub-02.html").read_text()
    assert "Consistency PSNR" in page and "svg-reportlet" not in page
    group = run_here(TEST_BIDS, out, "group", "--skip-bids-validation")
    assert group.returncode == 0 and (root / "group_qc.tsv").is_file(), group.stderr[-2000:]
    # the same outputs count as complete for a --no-reportlets rerun
    again = run_here(*base, "-w", work, "--no-reportlets")
    assert again.stderr.count("already done, skipping") == 2, again.stderr[-2000:]

    # --reports-only: the report and the methods text come back; nothing is processed, no work directory
    (root / "sub-02.html").unlink()
    (root / "logs" / "CITATION.md").unlink()
    fresh_work = tmp_path / "never"
    only = run_here(*base, "-w", fresh_work, "--reports-only")
    assert only.returncode == 0, only.stderr[-2000:]
    assert "reports rebuilt for 1 participant(s)" in only.stderr and "running" not in only.stderr
    assert (root / "sub-02.html").is_file() and "interpolated with cubic splines" in (
        root / "logs" / "CITATION.md").read_text()
    assert "outputs complete (earlier run)" in (root / "sub-02.html").read_text()
    assert not fresh_work.exists()
