"""prettier-bids, fourth adversarial round (2026-12-06): reruns that restore what was removed and notice what
another run rewrote (the consistency map of another --method, figures of an output redone without them), a
subject folder that is a symlink out of BIDS_DIR, Ctrl-C / SIGTERM sent to the whole process group, a NaN in an
output sidecar at the group level, and filter files that would change a contrast's query."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _bids_support import REPO, copy_dataset, run_app, run_in_process, snapshot
from _fault_support import temporaries
from prettier_bids import exitcodes


def _args(bids, out, work, *extra):
    return [bids, out, "participant", "--participant-label", "02", "--skip-bids-validation", "-w", work,
            "--nprocs", "1", *extra]


def _figures(out):
    return sorted(p.name for p in (out / "prettier" / "sub-02" / "figures").glob("*FLAIR.svg"))


@pytest.mark.slow
def test_reruns_restore_removed_outputs_and_notice_what_another_run_rewrote(tmp_path):
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    flair = _args(bids, out, work, "--contrast", "FLAIR", "--method", "cubic")
    assert run_app(*flair).returncode == 0
    made = _figures(out)
    assert made == ["sub-02_desc-consistency_FLAIR.svg", "sub-02_desc-flickerinput_FLAIR.svg"]

    # the outputs removed, the work directory kept: the rerun stores every file again (the figures were never
    # stored again: Nipype took their sinks from its cache, and every later run failed "incomplete outputs")
    import shutil

    shutil.rmtree(out / "prettier")
    again = run_app(*flair)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _figures(out) == made

    # redone with another option and --no-reportlets: the old figures go (they showed the old output), and a
    # later run that wants figures redoes the output instead of taking those figures as its own
    nofig = run_app(*flair, "--no-reportlets", "--slice-profile", "gaussian")
    assert nofig.returncode == 0 and "removed 2 figure(s) of the earlier output" in nofig.stderr, nofig.stderr[-2000:]
    assert _figures(out) == []
    figs = run_app(*flair, "--slice-profile", "gaussian")
    assert figs.returncode == 0 and "redoing sub-02/anat/sub-02_FLAIR.nii.gz: missing" in figs.stderr
    assert _figures(out) == made
    assert "already done, skipping" in run_app(*flair, "--slice-profile", "gaussian").stderr

    # a changed SkullStripped in the input's sidecar redoes the image (the output's sidecar copies it)
    side = bids / "sub-02" / "anat" / "sub-02_FLAIR.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "SkullStripped": not meta.get("SkullStripped", False)}))
    skull = run_app(*flair, "--slice-profile", "gaussian")
    assert "redoing sub-02/anat/sub-02_FLAIR.nii.gz: SkullStripped changed" in skull.stderr, skull.stderr[-2000:]


@pytest.mark.slow
def test_another_method_rewriting_the_consistency_map_is_noticed(tmp_path, tiny_weights):
    """model, cubic, model: the third run said "already done" and kept the cubic run's consistency map beside the
    model's output (its Sources named desc-cubic)."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w", "--no-reportlets")
    model = [*base, "--weights", tiny_weights]
    assert run_app(*model).returncode == 0
    assert run_app(*base, "--method", "cubic").returncode == 0
    third = run_app(*model)
    assert third.returncode == 0
    assert ("redoing sub-02/anat/sub-02_T1w.nii.gz: sub-02_desc-consistency_T1w.nii.gz changed since "
            "sub-02_desc-prettier_T1w.json was written") in third.stderr, third.stderr[-2000:]
    sources = json.loads((out / "prettier/sub-02/anat/sub-02_desc-consistency_T1w.json").read_text())["Sources"]
    assert "bids::sub-02/anat/sub-02_desc-prettier_T1w.nii.gz" in sources
    assert "already done, skipping" in run_app(*model).stderr


def test_outputs_and_work_never_go_into_a_symlinked_subject_folder(tmp_path):
    """BIDS_DIR/sub-02 -> elsewhere: OUTPUT_DIR or -w inside that target put derivatives and Nipype's files into
    the input dataset, which the next run indexed as inputs."""
    bids = copy_dataset(tmp_path / "bids")
    (bids / "sub-02").rename(tmp_path / "ext02")
    (bids / "sub-02").symlink_to(tmp_path / "ext02")
    before = snapshot(tmp_path / "ext02")
    out_in = run_app(bids, tmp_path / "ext02" / "derivatives", "participant", "--skip-bids-validation", "-w",
                     tmp_path / "work", "--method", "cubic")
    assert out_in.returncode == exitcodes.USAGE and "inside BIDS_DIR" in out_in.stderr
    work_in = run_app(bids, tmp_path / "out", "participant", "--skip-bids-validation", "-w",
                      tmp_path / "ext02" / "work", "--method", "cubic")
    assert work_in.returncode == exitcodes.USAGE and "the work directory" in work_in.stderr
    assert snapshot(tmp_path / "ext02") == before and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "scancel"])
def test_a_signal_to_the_whole_process_group_is_one_line(tmp_path, tiny_weights, sig):
    """A terminal's Ctrl-C or SLURM's scancel signals every process of the job: the pool's workers printed a
    KeyboardInterrupt traceback, or the parent a BrokenProcessPool one, above the one-line message."""
    bids = copy_dataset(tmp_path / "bids")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prettier_bids.cli.run", str(bids), str(out), "participant", "--participant-label",
           "01", "--weights", str(tiny_weights), "--nprocs", "2", "-w", str(tmp_path / "work"),
           "--skip-bids-validation"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for line in proc.stderr:
            if "workflow(s) with MultiProc" in line:
                break
        time.sleep(2.0)
        os.killpg(proc.pid, sig)
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    code = exitcodes.INTERRUPTED if sig == signal.SIGINT else exitcodes.TERMINATED
    assert proc.returncode == code, rest
    assert "Traceback" not in rest and "BrokenProcessPool" not in rest, rest
    assert rest.strip().splitlines()[-1].startswith("prettier-bids: error: "), rest
    assert temporaries(out) == []


def test_group_level_skips_a_nan_value_and_keeps_flagging_the_others(tmp_path, capsys):
    """One NaN NetworkConsistencyPSNR made the group median NaN, and no output was flagged any more."""
    out = tmp_path / "out"
    assert run_app(copy_dataset(tmp_path / "bids"), out, "participant", "--method", "cubic", "--contrast", "FLAIR",
                   "--skip-bids-validation", "-w", tmp_path / "work", "--no-reportlets").returncode == 0
    sidecars = sorted((out / "prettier").glob("sub-*/**/*_desc-cubic_FLAIR.json"))
    assert len(sidecars) >= 3
    low, nan = sidecars[0], sidecars[1]
    for path, value in ((low, 5.0), (nan, float("nan"))):
        meta = json.loads(path.read_text())
        meta["NetworkConsistencyPSNR"] = value
        path.write_text(json.dumps(meta))
    code, lines = run_in_process(capsys, tmp_path / "bids", out, "group")
    err = "\n".join(lines)
    assert code == 0
    assert f"skipped {nan.relative_to(out / 'prettier').as_posix()}" in err and "must be a number" in err
    tsv = (out / "prettier" / "group_qc.tsv").read_text()
    assert "nan" not in tsv.lower()
    row = next(line for line in tsv.splitlines() if low.name.replace(".json", "") in line)
    assert "low consistency PSNR" in row


def test_group_level_and_reports_only_ignore_the_unused_default_work_dir(tmp_path):
    """Started inside BIDS_DIR, the group level and --reports-only refused the default ./work (inside BIDS_DIR),
    which neither uses."""
    bids = copy_dataset(tmp_path / "bids")
    assert run_app(bids, bids / "derivatives", "participant", "--participant-label", "02", "--method", "cubic",
                   "--skip-bids-validation", "-w", tmp_path / "work", "--no-reportlets").returncode == 0
    group = run_app(".", "derivatives", "group", cwd=bids)
    assert group.returncode == 0, group.stderr[-2000:]
    reports = run_app(".", "derivatives", "participant", "--reports-only", "--skip-bids-validation", cwd=bids)
    assert reports.returncode == 0, reports.stderr[-2000:]
    assert not (bids / "work").exists()


@pytest.mark.parametrize("filters, text", [
    ({"flair": {"suffix": "T1w"}}, "flair.suffix must be 'FLAIR'"),
    ({"flair": {"extension": ".json"}}, "flair.extension must be"),
    ({"flair": {"subject": "03"}}, "participants are chosen with --participant-label"),
    ({"flair": {"session": "1"}}, "flair.session and --session-label both choose sessions"),
])
def test_filter_files_may_not_change_what_a_query_fixes(tmp_path, filters, text):
    bids = copy_dataset(tmp_path / "bids")
    (tmp_path / "f.json").write_text(json.dumps(filters))
    p = run_app(bids, tmp_path / "out", "participant", "--session-label", "1", "--bids-filter-file",
                tmp_path / "f.json", "--method", "cubic", "--skip-bids-validation", "-w", tmp_path / "work")
    assert p.returncode == exitcodes.USAGE and text in p.stderr, p.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_a_participant_without_the_session_says_so(tmp_path):
    bids = copy_dataset(tmp_path / "bids")
    p = run_app(bids, tmp_path / "out", "participant", "--participant-label", "01", "02", "--session-label", "1",
                "--method", "cubic", "--skip-bids-validation", "-w", tmp_path / "work", "--no-reportlets")
    assert p.returncode == 0 and "participant sub-02: no image matched in session(s) 1" in p.stderr
