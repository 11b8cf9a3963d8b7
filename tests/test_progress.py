"""Archive-scale runs: a progress line per finished image, and each image's outputs stored when that image is
complete (Nipype ran every image's SR node before any image's reportlets, so every output landed in the last
minutes of a run)."""

import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_BIDS = REPO / "data" / "test_bids"


def test_image_rank_groups_nodes_by_image_in_order():
    from prettier_bids.workflows.multiproc import image_rank

    names = ["m.sub_01_wf.sr_a_wf.validate", "m.sub_02_wf.sr_b_wf.validate", "m.sub_01_wf.sr_a_wf.cubic",
             "m.sub_02_wf.sr_b_wf.cubic", "m.sub_01_wf.sr_c_wf.validate"]
    assert list(image_rank(names).values()) == [0, 1, 0, 1, 2]
    # the nodes of an image's sub-workflows (derivatives, reportlets) rank with the image
    nested = ["m.sub_01_wf.sr_a_wf.validate", "m.sub_02_wf.sr_b_wf.validate",
              "m.sub_01_wf.sr_a_wf.sr_derivatives_wf.ds_sr", "m.sub_01_wf.sr_a_wf.sr_reports_wf.rpt_input",
              "m.sub_02_wf.sr_b_wf.sr_derivatives_wf.ds_sr"]
    assert list(image_rank(nested).values()) == [0, 1, 0, 0, 1]


@pytest.mark.slow
def test_progress_lines_and_outputs_stored_as_each_image_finishes(tmp_path):
    from nipype.utils.filemanip import loadpkl

    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "prettier_bids.cli.run", str(TEST_BIDS), str(out), "participant",
                           "--method", "cubic", "--skip-bids-validation", "--nprocs", "2", "-w", str(work)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if re.search(r"\[\d+/6\] done ", ln)]
    assert [re.search(r"\[(\d+)/6\]", ln).group(1) for ln in lines] == ["1", "2", "3", "4", "5", "6"]
    assert all("elapsed" in ln for ln in lines) and all("left" in ln for ln in lines[:-1])
    done = sorted(re.search(r"done (\S+)", ln).group(1) for ln in lines)
    assert len(set(done)) == 6 and all(d.endswith(".nii.gz") for d in done)
    # the first image's completion marker was stored before the last image's SR node started
    markers = sorted((out / "prettier").rglob("*_desc-cubic_*.json"))
    assert len(markers) == 6
    first_stored = min(p.stat().st_mtime for p in markers)
    starts = [datetime.fromisoformat(loadpkl(p).runtime.startTime).timestamp()
              for p in work.rglob("cubic/result_cubic.pklz")]
    assert len(starts) == 6
    assert first_stored < max(starts)
