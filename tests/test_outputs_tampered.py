"""Outputs changed by hand between runs (helper-24). Figures (SVG reportlets) that are not what this tool wrote: nireports rewrote every figure in place on every
report, through symbolic links and not atomically (helper-24): a link to a file outside OUTPUT_DIR had that file
rewritten, a pipe hung the run, a figure cut short by a kill stayed for ever."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from _bids_support import copy_dataset, run_app, run_here


def _args(bids, out, work, *extra):
    return [bids, out, "participant", "--skip-bids-validation", "-w", work, "--nprocs", "1", "--method", "cubic",
            "--participant-label", "02", *extra]


def _first_run(tmp_path):
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    figures = out / "prettier" / "sub-02" / "figures"
    return bids, out, work, figures


def test_figures_are_left_alone_by_the_report_and_a_linked_figure_never_writes_through(tmp_path):
    bids, out, work, figures = _first_run(tmp_path)
    figure = sorted(figures.glob("*flicker*_T1w.svg"))[0]
    text = figure.read_text()
    assert text.startswith("<!-- prettier_bids figure --><svg") and text.rstrip().endswith("</svg>")
    stamp = figure.stat().st_mtime_ns
    outside = bids / "code" / "qa.svg"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text('<?xml version="1.0"?>\n<svg width="10" height="10" xmlns="http://www.w3.org/2000/svg"/>\n')
    before = hashlib.sha256(outside.read_bytes()).hexdigest()
    other = sorted(figures.glob("*flicker*_FLAIR.svg"))[0]
    other.unlink()
    other.symlink_to(outside)
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(outside.read_bytes()).hexdigest() == before  # the input is never written
    assert not other.is_symlink() and other.read_text().rstrip().endswith("</svg>")  # made again
    assert figure.stat().st_mtime_ns == stamp  # a figure made right is not rewritten by the report


def test_a_pipe_or_a_figure_cut_short_is_made_again_and_never_read(tmp_path):
    bids, out, work, figures = _first_run(tmp_path)
    cut = sorted(figures.glob("*consistency_T1w.svg"))[0]
    cut.write_bytes(cut.read_bytes()[:100])
    pipe = sorted(figures.glob("*flicker*_FLAIR.svg"))[0]
    pipe.unlink()
    os.mkfifo(pipe)
    done = run_app(*_args(bids, out, work), timeout=120)  # a subprocess: a hang fails the test, not the suite
    assert done.returncode == 0, done.stderr
    assert "cut short" in done.stderr and "redoing" in done.stderr
    for path in (cut, pipe):
        assert path.is_file() and not path.is_symlink() and path.read_text().rstrip().endswith("</svg>")


def test_the_group_level_skips_an_output_whose_image_or_sidecar_links_out_of_the_dataset(tmp_path):
    """A main image moved out of OUTPUT_DIR and linked back (then truncated) was listed with its old PSNR."""
    bids, out, work, figures = _first_run(tmp_path)
    anat = out / "prettier" / "sub-02" / "anat"
    image = sorted(anat.glob("*desc-cubic_T1w.nii.gz"))[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / image.name).write_bytes(image.read_bytes()[:1000])
    image.unlink()
    image.symlink_to(outside / image.name)
    sidecar = sorted(anat.glob("*desc-cubic_FLAIR.json"))[0]
    (outside / sidecar.name).write_bytes(sidecar.read_bytes())
    sidecar.unlink()
    sidecar.symlink_to(outside / sidecar.name)
    done = run_here(bids, out, "group")
    assert done.returncode == 0, done.stderr
    assert "link out of this derivatives dataset" in done.stderr and "outside this derivatives dataset" in done.stderr
    assert "sub-02" not in (out / "prettier" / "group_qc.tsv").read_text()  # the tables say what stands: nothing


def test_a_group_level_with_no_participant_outputs_exits_66_and_keeps_the_tables(tmp_path):
    """'--participant-label 03' (no outputs) replaced the full table by an empty one, exit 0; docs say 66."""
    bids, out, work, figures = _first_run(tmp_path)
    assert run_here(bids, out, "group").returncode == 0
    table = (out / "prettier" / "group_qc.tsv").read_text()
    done = run_here(bids, out, "group", "--participant-label", "03")
    assert done.returncode == 66, done.stderr
    assert "no participant-level outputs of sub-03" in done.stderr.strip().splitlines()[-1]
    assert (out / "prettier" / "group_qc.tsv").read_text() == table
    shutil.rmtree(out / "prettier" / "sub-02")  # the subject report sub-02.html stays: no subject folder for all that
    assert run_here(bids, out, "group").returncode == 66
    assert (out / "prettier" / "group_qc.tsv").read_text() == table


def test_the_report_forgets_an_output_whose_files_were_deleted(tmp_path):
    """Its QC table and figures were still shown, while the methods text and the group table had dropped it."""
    bids, out, work, figures = _first_run(tmp_path)
    anat = out / "prettier" / "sub-02" / "anat"
    for path in anat.glob("sub-02_desc-cubic_T1w.*"):
        path.unlink()
    done = run_here(*_args(bids, out, work, "--contrast", "FLAIR", "--reports-only"))
    assert done.returncode == 0, done.stderr
    page = (out / "prettier" / "sub-02.html").read_text()
    assert "sub-02_desc-cubic_T1w.nii.gz" not in page and "sub-02_desc-cubic_FLAIR.nii.gz" in page
    assert not list(figures.glob("*_T1w.*")) and list(figures.glob("*_FLAIR.svg"))


def test_a_redo_that_fails_is_reported_failed_not_done(tmp_path, monkeypatch):
    """After a failed redo on another --output-grid, the earlier (native-grid) outputs passed the check after the
    work, which did not compare grids: summary and report said 'done, processed in this run' (helper-26)."""
    import csv

    from prettier_bids.sr import reconstruct

    bids, out, work, figures = _first_run(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("a redo that fails")

    monkeypatch.setattr(reconstruct, "super_resolve", broken)
    done = run_here(*_args(bids, out, work, "--output-grid", "1mm"))
    assert done.returncode == 1, done.stderr
    summaries = sorted((out / "prettier" / "logs").glob("summary_*.tsv"))
    with open(summaries[-1], newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows and all(r["status"] == "failed" for r in rows), rows


def test_qc_tables_that_are_pipes_or_links_are_removed_before_the_report(tmp_path):
    """A pipe named like a QC table hung --reports-only; a link had its target pasted into the page (helper-27)."""
    bids, out, work, figures = _first_run(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT")
    os.mkfifo(figures / "sub-02_desc-qc_T2w.html")
    (figures / "sub-02_acq-x_desc-qc_T2w.html").symlink_to(secret)
    done = run_app(*_args(bids, out, work, "--reports-only"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "SECRET-CONTENT" not in (out / "prettier" / "sub-02.html").read_text()
    assert secret.read_text() == "SECRET-CONTENT" and not list(figures.glob("*_T2w.html"))


def test_an_output_whose_image_links_out_of_the_dataset_is_redone(tmp_path):
    """It was 'already done' while the same run's report dropped it (helper-27)."""
    bids, out, work, figures = _first_run(tmp_path)
    image = sorted((out / "prettier" / "sub-02" / "anat").glob("*desc-cubic_T1w.nii.gz"))[0]
    moved = tmp_path / image.name
    image.rename(moved)
    image.symlink_to(moved)
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    assert "is a link out of this derivatives dataset" in done.stderr and "redoing" in done.stderr
    assert not image.is_symlink() and image.is_file()


def test_stale_temporaries_beside_the_dataset_files_are_removed(tmp_path):
    """Those of a killed run at the top of OUTPUT_DIR/prettier (.dataset_description.json...) stayed for ever,
    only the sub-XX folders were swept (helper-28)."""
    bids, out, work, figures = _first_run(tmp_path)
    root = out / "prettier"
    dead = 4194304 + 7  # beyond pid_max on Linux: never a live process
    stale = [root / f".dataset_description.json.{dead}.tmp", root / "logs" / f".CITATION.md.{dead}.tmp"]
    for path in stale:
        path.write_text("x")
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    assert not any(p.exists() for p in stale)


def test_a_legacy_model_output_whose_map_a_cubic_run_rewrote_is_left_out(tmp_path):
    """Outputs from before CompanionFiles: an older release's --method cubic run rewrote the shared consistency
    map, and the group level and reports still showed the model output with it (helper-28)."""
    import json

    from prettier_bids.outputs import outdated_output

    root = tmp_path / "prettier"
    anat = root / "sub-02" / "anat"
    anat.mkdir(parents=True)
    model = anat / "sub-02_desc-prettier_T1w.nii.gz"
    model.write_bytes(b"x")
    cons = anat / "sub-02_desc-consistency_T1w.json"
    for named, expected in (("cubic", "was made for another output (sub-02/anat/sub-02_desc-cubic_T1w.nii.gz)"),
                            ("prettier", None)):
        cons.write_text(json.dumps({"Sources": [f"bids::sub-02/anat/sub-02_desc-{named}_T1w.nii.gz"]}))
        why = outdated_output({"Sources": ["bids:raw:sub-02/anat/sub-02_T1w.nii.gz"]}, model, root)
        assert (why is None) if expected is None else (expected in why), why


def test_an_input_newer_than_outputs_that_recorded_no_source_file_is_redone(tmp_path):
    """Outputs from before SourceFile were kept whatever became of their input (helper-28)."""
    import os

    from prettier_bids.outputs import source_changed

    marker = tmp_path / "out.json"
    marker.write_text("{}")
    source = tmp_path / "in.nii.gz"
    source.write_bytes(b"x")
    os.utime(marker, (1_000_000_000, 1_000_000_000))
    assert "newer than its outputs" in source_changed(None, source, marker)
    os.utime(source, (900_000_000, 900_000_000))
    assert source_changed(None, source, marker) is None and source_changed(None, source) is None


def _annex(path, repo):
    """What `datalad save` does to a file it annexes: content moved into repo/.git/annex/objects, a link left."""
    key = hashlib.sha256(path.read_bytes()).hexdigest()
    store = repo / ".git" / "annex" / "objects" / key[:2] / key[2:4] / key
    store.mkdir(parents=True)
    shutil.move(str(path), store / key)
    path.symlink_to(os.path.relpath(store / key, path.parent))


@pytest.mark.parametrize("repo_at", ["OUTPUT_DIR", "OUTPUT_DIR/prettier"])
def test_outputs_annexed_by_datalad_in_the_derivatives_are_not_redone(tmp_path, repo_at):
    """`datalad save` in OUTPUT_DIR annexed the outputs (links into OUTPUT_DIR/.git/annex/objects): every rerun
    redid every image ('... is a symbolic link'), hours on an archive (helper-30). A link into another repository's
    store (the raw dataset's) is still no figure of this dataset: made again."""
    bids, out, work, figures = _first_run(tmp_path)
    svgs = sorted(figures.glob("*.svg"))
    raw = sorted(figures.glob("*flicker*_FLAIR.svg"))[0]
    for path in sorted(p for p in (out / "prettier" / "sub-02").rglob("*") if p.is_file()):  # all, as datalad does
        _annex(path, (out if repo_at == "OUTPUT_DIR" else out / "prettier") if path != raw else bids)
    images = {p: p.resolve() for p in (out / "prettier" / "sub-02" / "anat").glob("*.nii.gz")}
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    redone = [ln for ln in done.stderr.splitlines() if "redoing" in ln]
    assert len(redone) == 1 and raw.name in redone[0] and "symbolic link" in redone[0], done.stderr
    t1w = [svg for svg in svgs if svg.name.endswith("_T1w.svg")]
    assert t1w and all(svg.is_symlink() for svg in t1w)  # kept, not rewritten (the FLAIR's are made again)
    assert not raw.is_symlink() and raw.read_text().rstrip().endswith("</svg>")  # made again
    flair = [p for p in images if p.name.endswith("_FLAIR.nii.gz")]
    assert flair and all(p.resolve() == images[p] for p in images if p not in flair)  # T1w not redone: still links
