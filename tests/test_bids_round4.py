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

from _bids_support import REPO, copy_dataset, run_here, run_in_process, snapshot
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
    assert run_here(*flair).returncode == 0
    made = _figures(out)
    assert made == ["sub-02_desc-consistency_FLAIR.svg", "sub-02_desc-flickerinput_FLAIR.svg"]

    # the outputs removed, the work directory kept: the rerun stores every file again (the figures were never
    # stored again: Nipype took their sinks from its cache, and every later run failed "incomplete outputs")
    import shutil

    shutil.rmtree(out / "prettier")
    again = run_here(*flair)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _figures(out) == made

    # redone with another option and --no-reportlets: the old figures go (they showed the old output), and a
    # later run that wants figures redoes the output instead of taking those figures as its own
    nofig = run_here(*flair, "--no-reportlets", "--slice-profile", "gaussian")
    assert nofig.returncode == 0 and "removed 2 figure(s) of an earlier output" in nofig.stderr, nofig.stderr[-2000:]
    assert _figures(out) == []
    figs = run_here(*flair, "--slice-profile", "gaussian")
    assert figs.returncode == 0 and "redoing sub-02/anat/sub-02_FLAIR.nii.gz: missing" in figs.stderr
    assert _figures(out) == made
    assert "already done, skipping" in run_here(*flair, "--slice-profile", "gaussian").stderr

    # a changed SkullStripped in the input's sidecar redoes the image (the output's sidecar copies it)
    side = bids / "sub-02" / "anat" / "sub-02_FLAIR.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "SkullStripped": not meta.get("SkullStripped", False)}))
    skull = run_here(*flair, "--slice-profile", "gaussian")
    assert "redoing sub-02/anat/sub-02_FLAIR.nii.gz: SkullStripped changed" in skull.stderr, skull.stderr[-2000:]


@pytest.mark.slow
def test_another_method_rewriting_the_consistency_map_is_noticed(tmp_path, tiny_weights):
    """model, cubic, model: the third run said "already done" and kept the cubic run's consistency map beside the
    model's output (its Sources named desc-cubic)."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w", "--no-reportlets")
    model = [*base, "--weights", tiny_weights]
    assert run_here(*model).returncode == 0
    assert run_here(*base, "--method", "cubic").returncode == 0
    third = run_here(*model)
    assert third.returncode == 0
    assert ("redoing sub-02/anat/sub-02_T1w.nii.gz: sub-02_desc-consistency_T1w.nii.gz changed since "
            "sub-02_desc-prettier_T1w.json was written") in third.stderr, third.stderr[-2000:]
    sources = json.loads((out / "prettier/sub-02/anat/sub-02_desc-consistency_T1w.json").read_text())["Sources"]
    assert "bids::sub-02/anat/sub-02_desc-prettier_T1w.nii.gz" in sources
    assert "already done, skipping" in run_here(*model).stderr


def test_outputs_and_work_never_go_into_a_symlinked_subject_folder(tmp_path):
    """BIDS_DIR/sub-02 -> elsewhere: OUTPUT_DIR or -w inside that target put derivatives and Nipype's files into
    the input dataset, which the next run indexed as inputs."""
    bids = copy_dataset(tmp_path / "bids")
    (bids / "sub-02").rename(tmp_path / "ext02")
    (bids / "sub-02").symlink_to(tmp_path / "ext02")
    before = snapshot(tmp_path / "ext02")
    out_in = run_here(bids, tmp_path / "ext02" / "derivatives", "participant", "--skip-bids-validation", "-w",
                      tmp_path / "work", "--method", "cubic", "--nprocs", "1")
    assert out_in.returncode == exitcodes.USAGE and "inside BIDS_DIR" in out_in.stderr
    work_in = run_here(bids, tmp_path / "out", "participant", "--skip-bids-validation", "-w",
                       tmp_path / "ext02" / "work", "--method", "cubic", "--nprocs", "1")
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
    assert run_here(copy_dataset(tmp_path / "bids"), out, "participant", "--method", "cubic", "--contrast", "FLAIR",
                    "--skip-bids-validation", "-w", tmp_path / "work", "--no-reportlets",
                    "--nprocs", "1").returncode == 0
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
    assert run_here(bids, bids / "derivatives", "participant", "--participant-label", "02", "--method", "cubic",
                    "--skip-bids-validation", "-w", tmp_path / "work", "--no-reportlets",
                    "--nprocs", "1").returncode == 0
    group = run_here(".", "derivatives", "group", cwd=bids)
    assert group.returncode == 0, group.stderr[-2000:]
    reports = run_here(".", "derivatives", "participant", "--reports-only", "--skip-bids-validation", cwd=bids)
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
    p = run_here(bids, tmp_path / "out", "participant", "--session-label", "1", "--bids-filter-file",
                 tmp_path / "f.json", "--method", "cubic", "--skip-bids-validation", "-w", tmp_path / "work",
                 "--nprocs", "1")
    assert p.returncode == exitcodes.USAGE and text in p.stderr, p.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_a_participant_without_the_session_says_so(tmp_path):
    bids = copy_dataset(tmp_path / "bids")
    p = run_here(bids, tmp_path / "out", "participant", "--participant-label", "01", "02", "--session-label", "1",
                 "--method", "cubic", "--skip-bids-validation", "-w", tmp_path / "work", "--no-reportlets",
                 "--nprocs", "1")
    assert p.returncode == 0 and "participant sub-02: no image matched in session(s) 1" in p.stderr


# ---------------------------------------------------------------- reruns after another method (adversarial test 14)

def _group_rows(bids, out):
    proc = run_here(bids, out, "group", "--skip-bids-validation")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (out / "prettier" / "group_qc.tsv").read_text().splitlines()
    return proc, lines[1:]


@pytest.mark.slow
def test_a_damaged_main_image_is_redone_and_not_listed(tmp_path):
    """A truncated desc-cubic image was "already done" and listed by the group level: its sidecar now records it."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, "--contrast", "FLAIR", "--method", "cubic", "--no-reportlets")
    assert run_here(*args).returncode == 0
    image = out / "prettier/sub-02/anat/sub-02_desc-cubic_FLAIR.nii.gz"
    meta = json.loads(image.with_name("sub-02_desc-cubic_FLAIR.json").read_text())
    assert meta["CompanionFiles"]["sub-02/anat/sub-02_desc-cubic_FLAIR.nii.gz"]["Size"] == image.stat().st_size
    image.write_bytes(image.read_bytes()[:1000])  # truncated (a full disk, a killed copy)

    group, rows = _group_rows(bids, out)
    assert not any("desc-cubic_FLAIR" in r for r in rows), rows
    assert "its image changed since the sidecar was written (size" in group.stderr, group.stderr[-2000:]

    again = run_here(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert ("redoing sub-02/anat/sub-02_FLAIR.nii.gz: sub-02_desc-cubic_FLAIR.nii.gz changed since "
            "sub-02_desc-cubic_FLAIR.json was written (size") in again.stderr, again.stderr[-2000:]
    import nibabel as nib

    assert nib.load(image).get_fdata().shape[2] > 16  # whole again
    assert any("desc-cubic_FLAIR" in r for r in _group_rows(bids, out)[1])


@pytest.mark.slow
def test_figures_of_the_other_method_go_and_reports_show_the_current_output(tmp_path, tiny_weights):
    """cubic (figures) then model --no-reportlets kept the cubic run's figures beside the model's output; model then
    cubic left the model's flicker view and its output shown in the report and the group table."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w")
    model = [*base, "--weights", tiny_weights]
    figures = out / "prettier/sub-02/figures"

    assert run_here(*base, "--method", "cubic").returncode == 0
    assert sorted(p.name for p in figures.glob("*T1w.svg")) == ["sub-02_desc-consistency_T1w.svg",
                                                                "sub-02_desc-flickerinput_T1w.svg"]
    nofig = run_here(*model, "--no-reportlets")
    assert nofig.returncode == 0, nofig.stderr[-2000:]
    assert "removed 2 figure(s) of an earlier output of sub-02_T1w.nii.gz that this run does not make" in nofig.stderr
    assert list(figures.glob("*T1w.svg")) == []

    assert run_here(*model).returncode == 0
    assert (figures / "sub-02_desc-flickercubic_T1w.svg").is_file()
    cubic = run_here(*base, "--method", "cubic")
    assert cubic.returncode == 0, cubic.stderr[-2000:]
    assert sorted(p.name for p in figures.glob("*T1w.svg")) == ["sub-02_desc-consistency_T1w.svg",
                                                                "sub-02_desc-flickerinput_T1w.svg"]
    report = (out / "prettier" / "sub-02.html").read_text()
    assert "sub-02_desc-cubic_T1w.nii.gz" in report and "sub-02_desc-prettier_T1w.nii.gz" not in report
    group, rows = _group_rows(bids, out)
    t1w = [r for r in rows if "T1w" in r]
    assert len(t1w) == 1 and "desc-cubic_T1w" in t1w[0], t1w
    assert "sub-02_desc-consistency_T1w.nii.gz changed since the sidecar was written" in group.stderr


@pytest.mark.slow
def test_a_baseline_of_a_model_run_is_not_a_cubic_run(tmp_path, tiny_weights):
    """--method cubic took the --write-cubic baseline (beside the model's output, with the model's consistency map)
    as its own complete output."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w", "--no-reportlets")
    assert run_here(*base, "--weights", tiny_weights, "--write-cubic").returncode == 0
    cubic = run_here(*base, "--method", "cubic")
    assert cubic.returncode == 0, cubic.stderr[-2000:]
    assert ("redoing sub-02/anat/sub-02_T1w.nii.gz: sub-02_desc-cubic_T1w.json is the cubic baseline of "
            "sub-02_desc-prettier_T1w.nii.gz") in cubic.stderr, cubic.stderr[-2000:]
    sources = json.loads((out / "prettier/sub-02/anat/sub-02_desc-consistency_T1w.json").read_text())["Sources"]
    assert "bids::sub-02/anat/sub-02_desc-cubic_T1w.nii.gz" in sources
    assert "already done, skipping" in run_here(*base, "--method", "cubic").stderr

    # a baseline written before BaselineOf existed: told by the consistency map, which names the model's output
    assert run_here(*base, "--weights", tiny_weights, "--write-cubic").returncode == 0
    side = out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.json"
    side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "BaselineOf"}))
    legacy = run_here(*base, "--method", "cubic")
    assert ("redoing sub-02/anat/sub-02_T1w.nii.gz: sub-02_desc-consistency_T1w.nii.gz was made for another output "
            "(sub-02/anat/sub-02_desc-prettier_T1w.nii.gz)") in legacy.stderr, legacy.stderr[-2000:]


def test_an_output_file_that_is_a_folder_is_refused_before_the_run(tmp_path, capsys):
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, "--contrast", "FLAIR", "--method", "cubic")
    for rel in ("sub-02/anat/sub-02_desc-consistency_FLAIR.json", "sub-02/figures/sub-02_desc-qc_FLAIR.html",
                "static/bootstrap-5.2.3.min.css"):
        folder = out / "prettier" / rel
        folder.mkdir(parents=True)
        code, lines = run_in_process(capsys, *args)
        assert code == exitcodes.CANTCREAT, lines
        assert f"cannot write {folder}: it is a folder; remove it" in lines[-1], lines
        assert not (out / "prettier/sub-02/anat/sub-02_desc-consistency_FLAIR.nii.gz").exists()
        folder.rmdir()
    # --reports-only writes no image output: a folder there is not its business
    (out / "prettier/sub-02/figures/sub-02_desc-flickerinput_FLAIR.svg").mkdir(parents=True)
    code, lines = run_in_process(capsys, *args, "--reports-only")
    assert code == 0, lines


def test_companion_records_must_stay_in_the_dataset():
    from prettier_bids.outputs import sidecar_problem

    record = {"Size": 1, "MTimeNs": 1, "SHA256": "0" * 64}
    assert sidecar_problem({"CompanionFiles": {"sub-01/anat/x.nii.gz": record}}) is None
    for key in ("../../etc/passwd", "/dev/zero", "sub-01/../../x", ""):
        why = sidecar_problem({"CompanionFiles": {key: record}})
        assert why and why.startswith("'CompanionFiles' must be an object of file records by relative path"), key


# ---------------------------------------------------------------- second adversarial pass over the above (test 15)

def _record(size):
    return {"Size": size, "MTimeNs": 1, "SHA256": "0" * 64}


@pytest.mark.slow
def test_hostile_or_unreadable_records_leave_one_output_out(tmp_path):
    """A 300-character record name aborted the group level, every participant run and --reports-only (exit 1,
    'File name too long'); a record through a symlink out of the dataset was hashed."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, "--method", "cubic", "--no-reportlets")
    assert run_here(*args).returncode == 0
    anat = out / "prettier/sub-02/anat"
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 1000)
    (anat / "outside").symlink_to(outside)
    flair, t1w = anat / "sub-02_desc-cubic_FLAIR.json", anat / "sub-02_desc-cubic_T1w.json"
    meta = json.loads(flair.read_text())
    meta["CompanionFiles"]["sub-02/" + "a" * 300] = _record(1)
    flair.write_text(json.dumps(meta))
    meta = json.loads(t1w.read_text())
    meta["CompanionFiles"]["sub-02/anat/outside"] = _record(1000)  # same size, other hash: read only if followed
    t1w.write_text(json.dumps(meta))

    group, rows = _group_rows(bids, out)
    assert "skipped sub-02/anat/sub-02_desc-cubic_FLAIR.json: " + "a" * 300 + " cannot be read (File name too long)" \
        in group.stderr, group.stderr[-2000:]
    assert [r for r in rows if "T1w" in r], rows  # the record out of the dataset is not read
    again = run_here(*args, "--reports-only")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]


@pytest.mark.slow
def test_a_damaged_model_output_is_not_replaced_by_its_baseline(tmp_path, tiny_weights):
    """The model output truncated: its --write-cubic baseline was shown as the image's output, beside the model's
    figures, and the methods text said the images were interpolated with cubic splines."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w", "--weights", tiny_weights)
    assert run_here(*base, "--write-cubic").returncode == 0
    root = out / "prettier"
    image = root / "sub-02/anat/sub-02_desc-prettier_T1w.nii.gz"
    image.write_bytes(image.read_bytes()[:5000])
    rebuilt = run_here(*base, "--write-cubic", "--reports-only")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert ("skipped sub-02/anat/sub-02_desc-cubic_T1w.json: the cubic baseline of sub-02_desc-prettier_T1w.nii.gz, "
            "which has no usable output") in rebuilt.stderr, rebuilt.stderr[-3000:]
    assert list((root / "sub-02/figures").glob("*T1w*")) == []  # the figures of the damaged output went
    report = (root / "sub-02.html").read_text()
    assert "desc-cubic_T1w" not in report and "<h3>sub-02_desc-prettier_T1w" not in report  # no QC table either
    assert "cubic splines" not in (root / "logs/CITATION.md").read_text()
    assert not [r for r in _group_rows(bids, out)[1] if "T1w" in r]


@pytest.mark.slow
def test_a_superseded_cubic_output_is_neither_a_baseline_nor_a_warning(tmp_path, tiny_weights):
    """model, cubic, model: the methods text called the cubic run's outdated output a baseline, and the group level
    warned about it on every run."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w", "--no-reportlets")
    model = [*base, "--weights", tiny_weights]
    for args in (model, [*base, "--method", "cubic"], model):
        assert run_here(*args).returncode == 0
    assert (out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.nii.gz").is_file()
    assert "baseline" not in (out / "prettier/logs/CITATION.md").read_text()
    group, rows = _group_rows(bids, out)
    assert "desc-cubic_T1w" not in group.stderr, group.stderr[-2000:]
    t1w = [r for r in rows if "T1w" in r]
    assert len(t1w) == 1 and "desc-prettier_T1w" in t1w[0]


def test_a_relative_weights_path_is_found(tmp_path, tiny_weights):
    """--weights tiny.pt from the current folder: every input failed 'weights file not found' (the image nodes run
    in their own folders)."""
    import shutil

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    shutil.copy(tiny_weights, tmp_path / "tiny.pt")
    proc = run_here(*_args(bids, out, work, "--contrast", "T1w", "--no-reportlets", "--weights", "tiny.pt"),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "prettier/sub-02/anat/sub-02_desc-prettier_T1w.nii.gz").is_file()


def test_sinks_remove_stale_figures_only_inside_the_dataset(tmp_path):
    """Stale figures go when the image's first sink runs (after its image is computed), not before the run."""
    from prettier_bids.interfaces.derivatives import _remove_stale
    from prettier_bids.paths import OutputPathError

    base = tmp_path / "prettier"
    figs = base / "sub-02/figures"
    figs.mkdir(parents=True)
    (figs / "a.svg").write_text("a")
    (figs / "c.svg").mkdir()
    _remove_stale(base, ["sub-02/figures/a.svg", "sub-02/figures/b.svg", "sub-02/figures/c.svg"], "x.nii.gz")
    assert sorted(p.name for p in figs.iterdir()) == ["c.svg"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/a.svg").write_text("a")
    (base / "sub-03").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputPathError):
        _remove_stale(base, ["sub-03/a.svg"], "x.nii.gz")
    assert (tmp_path / "elsewhere/a.svg").is_file()


@pytest.mark.slow
def test_a_damaged_baseline_does_not_take_the_model_output_with_it(tmp_path, tiny_weights):
    """A truncated --write-cubic baseline: the report left out the intact model output and removed its figures, while
    the same run said "already done" (adversarial test 16)."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    base = _args(bids, out, work, "--contrast", "T1w", "--weights", tiny_weights)
    assert run_here(*base, "--write-cubic").returncode == 0
    figures = sorted((out / "prettier/sub-02/figures").glob("*T1w*"))
    cubic = out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.nii.gz"
    cubic.write_bytes(cubic.read_bytes()[:1000])
    again = run_here(*base)
    assert again.returncode == 0 and "already done, skipping" in again.stderr, again.stderr[-2000:]
    assert "skipped sub-02/anat/sub-02_desc-prettier_T1w.json" not in again.stderr
    assert sorted((out / "prettier/sub-02/figures").glob("*T1w*")) == figures
    assert [r for r in _group_rows(bids, out)[1] if "desc-prettier_T1w" in r]


# ---------------------------------------------------------------- helper-16's leftovers (fixed 2026-12-06)

@pytest.mark.slow
def test_an_older_baseline_beside_a_damaged_model_output_is_left_out(tmp_path, tiny_weights):
    """A --write-cubic baseline written before BaselineOf existed, beside a truncated model output, was shown as the
    image's cubic output: the consistency map's Sources name the model output, so it is that output's baseline."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    assert run_here(*_args(bids, out, work, "--contrast", "T1w", "--weights", tiny_weights, "--write-cubic",
                          "--no-reportlets")).returncode == 0
    anat = out / "prettier/sub-02/anat"
    sidecar = anat / "sub-02_desc-cubic_T1w.json"
    meta = json.loads(sidecar.read_text())
    del meta["BaselineOf"]
    sidecar.write_text(json.dumps(meta))
    group, rows = _group_rows(bids, out)
    assert len([r for r in rows if "T1w" in r]) == 2  # the model output and its baseline
    image = anat / "sub-02_desc-prettier_T1w.nii.gz"
    image.write_bytes(image.read_bytes()[:5000])
    group, rows = _group_rows(bids, out)
    assert not [r for r in rows if "T1w" in r], rows
    assert ("sub-02_desc-cubic_T1w.json: the cubic baseline of sub-02_desc-prettier_T1w.nii.gz, which has no usable "
            "output") in group.stderr, group.stderr[-2000:]


def test_an_older_cubic_output_is_not_taken_for_another_runs_baseline(tmp_path, capsys):
    """The map's Sources mark an older baseline only when the map comes from the baseline's own run: a cubic output
    made before CompanionFiles, whose map a later model run rewrote, stays the image's output when that model
    output is unusable."""
    from prettier_bids.outputs import main_output_sidecars

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    code, lines = run_in_process(capsys, *_args(bids, out, work, "--contrast", "T1w", "--method", "cubic",
                                                "--no-reportlets"))
    assert code == 0, lines
    anat = out / "prettier/sub-02/anat"
    cubic = anat / "sub-02_desc-cubic_T1w.json"
    meta = json.loads(cubic.read_text())
    del meta["CompanionFiles"]
    cubic.write_text(json.dumps(meta))
    cons = anat / "sub-02_desc-consistency_T1w.json"
    made = json.loads(cons.read_text())
    made["Sources"] = ["bids::sub-02/anat/sub-02_desc-prettier_T1w.nii.gz"]
    made["GeneratedByRun"] = {"RunId": "20261206-000000_0000000a"}  # a later model run's map
    cons.write_text(json.dumps(made))
    (anat / "sub-02_desc-prettier_T1w.json").write_text(json.dumps({"ConsistencyPSNR": "n/a"}))  # malformed
    (anat / "sub-02_desc-prettier_T1w.nii.gz").write_bytes(b"x")
    found = {s.name: why for s, _, _, why in main_output_sidecars(out / "prettier", ["02"])}
    assert found["sub-02_desc-cubic_T1w.json"] is None, found
    made["GeneratedByRun"] = meta["GeneratedByRun"]  # the same run: a --write-cubic baseline
    cons.write_text(json.dumps(made))
    found = {s.name: why for s, _, _, why in main_output_sidecars(out / "prettier", ["02"])}
    assert found["sub-02_desc-cubic_T1w.json"].startswith("the cubic baseline of"), found
    (anat / "sub-02_desc-prettier_T1w.json").unlink()  # an interrupted model run: its sidecar never written
    found = {s.name: why for s, _, _, why in main_output_sidecars(out / "prettier", ["02"])}
    assert found["sub-02_desc-cubic_T1w.json"].startswith("the cubic baseline of"), found


def test_an_unrelated_folder_named_like_a_qc_table_does_not_block_runs(tmp_path, capsys):
    """figures/old_desc-qc_backup (a user's folder) matched the glob of QC tables: every run stopped with exit 73."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    (out / "prettier/sub-02/figures/old_desc-qc_backup").mkdir(parents=True)
    (out / "prettier/sub-02/anat").mkdir(parents=True)
    (out / "prettier/sub-02/anat/notes-desc-cubic_T1w.json").write_text("{}")  # no sub-: not an output
    (out / "prettier/sub-02/anat/sub-02_desc-cubic_notes.json").write_text("{}")  # no contrast's suffix
    (out / "prettier/sub-02/anat/sub-02_desc-cubic_acq-x_T1w.json").write_text("{}")  # not an output's order
    code, lines = run_in_process(capsys, *_args(bids, out, work, "--contrast", "T1w", "--method", "cubic",
                                                "--no-reportlets"))
    assert code == 0, lines
    assert (out / "prettier/sub-02/figures/sub-02_desc-qc_T1w.html").is_file()
    assert (out / "prettier/sub-02/figures/old_desc-qc_backup").is_dir()
    code, lines = run_in_process(capsys, *_args(bids, out, work, "--contrast", "T1w", "--method", "cubic",
                                                "--reports-only"))
    assert code == 0 and not [line for line in lines if "notes" in line or "acq-x" in line], lines
    # a copy kept in another folder is not another output (it was a second row and "2 T1w" in the methods text)
    anat = out / "prettier/sub-02/anat"
    for name in ("sub-02_desc-cubic_T1w.nii.gz", "sub-02_desc-cubic_T1w.json"):
        for where in (anat / "old", out / "prettier/sub-02"):
            where.mkdir(exist_ok=True)
            (where / name).write_bytes((anat / name).read_bytes())
    group, rows = _group_rows(bids, out)
    assert len([r for r in rows if "T1w" in r]) == 1, rows
    assert "(1 T1w)" in (out / "prettier/logs/CITATION.md").read_text()
    # an anat folder linked out of the dataset: its records are never read, so its outputs cannot be checked
    (tmp_path / "elsewhere").mkdir()
    anat.rename(tmp_path / "elsewhere/anat")
    anat.symlink_to(tmp_path / "elsewhere/anat")
    group, rows = _group_rows(bids, out)
    assert not [r for r in rows if "T1w" in r], rows
    assert "skipped sub-02/anat: a symlink to" in group.stderr, group.stderr[-2000:]


def test_figures_that_cannot_be_removed_are_a_warning(tmp_path, monkeypatch, caplog):
    """A read-only figures folder: removing a stale figure was exit 1 (PermissionError) for the run or the report."""
    from pathlib import Path

    from prettier_bids.interfaces.derivatives import _remove_stale
    from prettier_bids.reports.subject import write_qc_reportlets

    root = tmp_path / "prettier"
    figs = root / "sub-02/figures"
    figs.mkdir(parents=True)
    stale = figs / "sub-02_desc-flickercubic_T1w.svg"
    stale.write_text("<svg/>")
    anat = root / "sub-02/anat"
    anat.mkdir(parents=True)
    (anat / "sub-02_desc-cubic_T1w.json").write_text(json.dumps({"Sources": ["bids:raw:sub-02/anat/sub-02_T1w.nii.gz"]}))

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    with caplog.at_level("WARNING", logger="prettier_bids"):
        _remove_stale(root, ["sub-02/figures/sub-02_desc-flickercubic_T1w.svg"], "sub-02_T1w.nii.gz")
        assert write_qc_reportlets(root, "02") == []  # the image is missing: its output is left out
    assert stale.is_file()
    warned = [r.getMessage() for r in caplog.records if "could not remove" in r.getMessage()]
    assert len(warned) == 2 and all("Permission denied" in w for w in warned), warned


def test_entities_come_from_below_the_dataset_root(tmp_path):
    """Datasets kept under folders named acq-foo, run-2023 or desc-old: pybids (and parse_entities) read entities from
    the absolute path, so every input was skipped as 'not a BIDS file name' and outputs were misread."""
    from prettier_bids.naming import parse_entities

    assert parse_entities("/d/desc-old/run-2023/sub-01/ses-1/anat/sub-01_ses-1_desc-cubic_T1w.nii.gz") == {
        "subject": "01", "session": "1", "desc": "cubic", "suffix": "T1w", "extension": ".nii.gz", "datatype": "anat"}
    assert parse_entities("/d/acq-x/sub-01/figures/sub-01_desc-qc_T1w.html") == {
        "subject": "01", "desc": "qc", "suffix": "T1w", "extension": ".html"}
    bids = copy_dataset(tmp_path / "acq-foo" / "run-2023" / "bids")
    out, work = tmp_path / "desc-old" / "out", tmp_path / "work"
    proc = run_here(*_args(bids, out, work, "--contrast", "T1w", "--method", "cubic", "--no-reportlets"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.nii.gz").is_file()
    group, rows = _group_rows(bids, out)
    assert len([r for r in rows if "sub-02_desc-cubic_T1w" in r]) == 1, (rows, group.stderr[-2000:])
    assert "<h3>sub-02_desc-cubic_T1w.nii.gz</h3>" in (out / "prettier/sub-02.html").read_text()  # nireports' index


@pytest.mark.parametrize("prog, option", [("prettier-sr", "--weights"), ("prettier-sr", "--model"),
                                           ("prettier-sr", "output"), ("prettier-bids", "--weights"),
                                           ("prettier-bids", "--model"), ("prettier-bids", "--bids-filter-file"),
                                           ("prettier-bids", "-w"), ("prettier-bids", "OUTPUT_DIR"),
                                           ("prettier-eval lesions", "--models"),
                                           ("prettier-eval lesions", "--out-dir"), ("prettier-eval", "--contrasts")])
def test_an_empty_name_is_a_usage_error(tmp_path, prog, option):
    """An empty value (an unset shell variable): --weights "" and --model "" used the shipped model, an empty
    --bids-filter-file was no filter, -w "" and OUTPUT_DIR "" were the current folder."""
    if prog == "prettier-sr":
        args = ["prettier_bids.cli.sr", tmp_path / "in.nii.gz", "" if option == "output" else tmp_path / "o.nii.gz"]
    elif prog.startswith("prettier-eval"):
        args = ["prettier_bids.cli.evaluate", *prog.split()[1:], "--data-root", tmp_path]
    else:
        args = ["prettier_bids.cli.run", copy_dataset(tmp_path / "bids"), "" if option == "OUTPUT_DIR" else
                tmp_path / "out", "participant"]
    if option.startswith("-"):
        args += [option, "," if option == "--models" else ""]
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == exitcodes.USAGE
    assert proc.stderr.strip().splitlines()[-1].endswith(f"empty (an unset shell variable?) (see {prog} --help)"), \
        proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bids"] if prog == "prettier-bids" else [])


@pytest.mark.slow
def test_the_methods_text_checks_this_runs_outputs_as_its_reports_do(tmp_path):
    """A same-size corruption: the report left the output out while the methods text (sizes only) still counted it.
    This run's subjects are now checked in full; other subjects by size, so that array jobs do not hash the archive."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = _args(bids, out, work, "--contrast", "T1w", "--method", "cubic", "--no-reportlets")
    assert run_here(*args).returncode == 0
    citation = out / "prettier/logs/CITATION.md"
    assert "cubic splines" in citation.read_text()
    image = out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.nii.gz"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    proc = run_here(*args, "--reports-only")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped sub-02/anat/sub-02_desc-cubic_T1w.json: its image changed" in proc.stderr, proc.stderr[-2000:]
    assert "cubic splines" not in citation.read_text()
