"""Provenance and reproducibility of the dataset files, the reports and the group level (helper-32's round):
a rerun that has nothing new to say leaves the files as they were, modification times included; the group
page links only to subject reports that exist; what the docs say of provenance is what the code does.

The derivatives are made here (tiny images, hand-written sidecars, as in tests/test_report_safety.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_report_safety import VERSIONS, _model_meta, _output, _root

OLD_NS = 1_000_000_000 * 10**9  # 2001-09-09: a time no file written here has


def _age(paths):
    """Set every file of ``paths`` to :data:`OLD_NS`; return them."""
    for path in paths:
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return list(paths)


def test_a_rerun_with_nothing_new_leaves_dataset_files_citation_qc_tables_and_group_tables_untouched(tmp_path):
    from prettier_bids.outputs import write_citation, write_dataset_files
    from prettier_bids.reports.group import run_group
    from prettier_bids.reports.subject import write_qc_reportlets

    root = _root(tmp_path)
    bids = tmp_path / "bids"
    bids.mkdir()
    for sub in ("01", "02"):
        _output(root, sub, "prettier", "FLAIR", _model_meta(sub))
    raw = {"Name": "archive", "BIDSVersion": "1.10.0"}

    def everything():
        write_dataset_files(root, bids, raw)
        write_citation(root, versions=VERSIONS, subjects=["01"])
        write_qc_reportlets(root, "01")
        run_group(root)

    everything()
    files = _age([root / n for n in ("dataset_description.json", ".bidsignore", "descriptions.tsv",
                                     "logs/CITATION.md", "group_qc.tsv", "group_qc.html")]
                 + sorted((root / "sub-01" / "figures").glob("*_desc-qc_*.html")))
    assert len(files) == 7
    before = {p: p.read_bytes() for p in files}
    everything()  # the same outputs, the same dataset: nothing to say that is not said
    assert {p: p.stat().st_mtime_ns for p in files} == {p: OLD_NS for p in files}  # was: every one rewritten
    assert {p: p.read_bytes() for p in files} == before

    # what changed is written
    write_dataset_files(root, bids, {**raw, "Name": "archive 2"})
    assert "archive 2" in (root / "dataset_description.json").read_text()
    assert (root / "dataset_description.json").stat().st_mtime_ns != OLD_NS
    meta = json.loads((root / "sub-02" / "anat" / "sub-02_desc-prettier_FLAIR.json").read_text())
    meta["ConsistencyPSNR"] = 31.5
    (root / "sub-02" / "anat" / "sub-02_desc-prettier_FLAIR.json").write_text(json.dumps(meta))
    run_group(root)
    assert "31.5" in (root / "group_qc.tsv").read_text()
    assert {(root / n).stat().st_mtime_ns != OLD_NS for n in ("group_qc.tsv", "group_qc.html")} == {True}


def test_holds_text_is_false_for_a_link_or_a_fifo_so_they_are_replaced_as_before(tmp_path):
    from prettier_bids.sr.io import holds_text, update_text_atomic

    target = tmp_path / "elsewhere.txt"
    target.write_text("same\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert not holds_text(link, "same\n")
    assert update_text_atomic("same\n", link) and not link.is_symlink() and target.read_text() == "same\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not holds_text(fifo, "x")  # never opened: no blocking read
    assert not holds_text(tmp_path / "missing", "")
    plain = tmp_path / "plain.txt"
    assert update_text_atomic("a\n", plain) and not update_text_atomic("a\n", plain)
    assert update_text_atomic("a\nb\n", plain) and Path(plain).read_text() == "a\nb\n"


def test_the_group_page_links_only_to_subject_reports_that_exist(tmp_path):
    """A participant job stopped (SLURM time limit, SIGTERM) after its images were stored but before its report:
    the group page names it without a link that leads nowhere."""
    import re

    from prettier_bids.reports.group import run_group

    root = _root(tmp_path)
    for sub in ("01", "02"):
        _output(root, sub, "prettier", "FLAIR", _model_meta(sub))
    (root / "sub-01.html").write_text("<html></html>")
    _, page, _ = run_group(root)
    hrefs = re.findall(r"href='([^']*)'", page.read_text())
    assert hrefs == ["sub-01.html"]  # was: sub-02.html too, a dead link
    assert all((root / h).is_file() for h in hrefs)
    assert "<td>sub-02</td>" in page.read_text()


def test_group_table_cells_with_no_value_are_n_a(tmp_path):
    """A sidecar value that is JSON ``null`` (``Model`` of an older cubic output), empty, or only a tab is ``n/a``
    in ``group_qc.tsv`` (BIDS: missing values are ``n/a``; a blank cell is not valid), never an empty cell."""
    from _bids_support import read_tsv
    from test_report_safety import _cubic_meta

    from prettier_bids.reports.group import COLUMNS, run_group

    root = _root(tmp_path)
    _output(root, "01", "cubic", "T1w", _cubic_meta("01", ProjectionSkipped=""))
    _output(root, "02", "prettier", "FLAIR", _model_meta("02", SlicePlane="\t"))
    tsv, _, _ = run_group(root)
    lines = tsv.read_text().splitlines()
    assert all(len(line.split("\t")) == len(COLUMNS) for line in lines)
    assert all(cell.strip() for line in lines for cell in line.split("\t"))  # was: '' for null, ' ' for a tab
    cubic, model = read_tsv(tsv)
    assert (cubic["Model"], cubic["ModelWeightsSHA256"], cubic["ProjectionSkipped"]) == ("n/a", "n/a", "n/a")
    assert model["SlicePlane"] == "n/a" and model["Model"] == "prettier-edsr-v2"


def test_a_cubic_output_is_never_said_to_have_a_network_consistency_psnr(tmp_path):
    """``--method cubic`` runs no network: its QC flag, its QC table and the group plot do not speak of one (was:
    ``network consistency PSNR 14.4 dB is below the QC floor`` in the sidecar of a cubic output, and a
    ``Network consistency PSNR`` row in its QC table)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.reports.subject import _qc_table
    from prettier_bids.sr import super_resolve

    rng = np.random.default_rng(0)
    img = nib.Nifti1Image((rng.random((32, 32, 8)) * 1000).astype(np.float32), np.diag([1.0, 1.0, 5.0, 1.0]))
    info = super_resolve(img, method="cubic", slice_thickness=12.0).info  # noise, wide slices: below the floor
    assert info["QCFlags"] and info["QCFlags"][0].startswith("consistency PSNR 14.4 dB is below the QC floor")
    assert not any("network" in flag for flag in info["QCFlags"])
    table = _qc_table({**info, "Sources": ["bids:raw:x"]})
    assert "etwork" not in table and "Consistency PSNR before the clip and rounding (dB)" in table
    model_table = _qc_table({"Method": "model", "NetworkConsistencyPSNR": 30.0, "ConsistencyPSNR": 40.0})
    assert "Network consistency PSNR (dB)" in model_table


def test_the_methods_text_says_the_cubic_baseline_interpolates_the_input_not_the_super_resolved_image(tmp_path):
    """``--write-cubic``: the baseline is the input interpolated with cubic splines; the methods text said "A
    cubic-spline interpolation of each super-resolved image", i.e. of the network's output."""
    from test_report_safety import _cubic_meta

    from prettier_bids.outputs import dataset_methods

    root = _root(tmp_path)
    _output(root, "01", "prettier", "FLAIR", _model_meta("01"))
    _output(root, "01", "cubic", "FLAIR", _cubic_meta("01", "FLAIR",
                                                      BaselineOf="bids::sub-01/anat/sub-01_desc-prettier_FLAIR.nii.gz"))
    text = " ".join(dataset_methods(root, VERSIONS).split())
    assert "interpolation of each super-resolved image" not in text
    assert "A cubic-spline interpolation of the input of each super-resolved image, on the same grid (desc-cubic)" \
        in text


def test_the_same_figures_are_the_same_bytes_on_a_rerun(tmp_path):
    """Two runs on the same input make byte-identical figures, so that the sidecars, whose ``CompanionFiles``
    record each figure's SHA-256, are equal apart from their time fields (was: a random animation name in each
    flicker and the time of day in the lesion view: every figure and every main sidecar differed)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.reports.lesionview import lesion_view_svg
    from prettier_bids.reports.reportlets import before_after_svg

    rng = np.random.default_rng(0)
    fine_data = np.zeros((30, 30, 30), np.float32)
    fine_data[5:25, 5:25, 5:25] = 100 + rng.normal(0, 3, (20, 20, 20))
    fine_data[12:16, 12:16, 12:16] += 80  # a bright blob: a lesion view with a region
    fine, thick = tmp_path / "fine.nii.gz", tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(fine_data, np.eye(4)), fine)
    nib.save(nib.Nifti1Image(fine_data[:, :, 2::5].copy(), np.diag([1.0, 1.0, 5.0, 1.0])), thick)
    made = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        made.append([Path(p).read_bytes() for p in before_after_svg([thick, fine], fine, [
            folder / "input.svg", folder / "cubic.svg"], ["input", "cubic"], "SR")]
            + [Path(lesion_view_svg(thick, fine, fine, folder / "lesions.svg")).read_bytes()])
    assert made[0] == made[1]
    assert made[0][0] != made[0][1]  # each figure its own animation name: two on one page do not share it
    assert b"<dc:date>" not in made[0][2]


def test_the_consistency_map_caption_says_which_output_it_shows():
    """The map shows the output before the projection onto the input (the stored, projected output reproduces the
    input): the subject report's caption said "The output put back through the acquisition model", as if the
    stored image had those errors."""
    import yaml

    from prettier_bids.reports.subject import REPORT_SPEC

    spec = yaml.safe_load(REPORT_SPEC.read_text())
    caption = next(r["caption"] for sec in spec["sections"] for r in sec["reportlets"]
                   if r.get("bids", {}).get("desc") == "consistency")
    assert caption.startswith("The output before any projection onto the input")
    assert "ProjectedOntoInput" in caption and "absolute value" in caption


def test_the_group_page_lists_the_outputs_it_leaves_out_and_why(tmp_path):
    """An output left out of the group tables (a malformed sidecar, a damaged image) was named only in the
    console's warnings: the page said "1 output(s)" under "All outputs" and nothing of the other."""
    from prettier_bids.reports.group import run_group

    root = _root(tmp_path)
    _output(root, "01", "prettier", "FLAIR", _model_meta("01"))
    _output(root, "02", "prettier", "FLAIR", _model_meta("02", ConsistencyPSNR="35.2"))  # wrong type: left out
    _, page, rows = run_group(root)
    text = page.read_text()
    assert len(rows) == 1
    assert "Left out (1)" in text
    assert "sub-02/anat/sub-02_desc-prettier_FLAIR.json: its JSON sidecar is malformed" in text


def test_batch_summary_writes_and_reads_tsv_without_quoting(tmp_path):
    """``docker/slurm/batch_summary.py`` merged the run summaries with the csv module's quoting: an input whose name
    holds a double quote came out as ``"sub-01/anat/sub-01_acq-""x_FLAIR.nii.gz"`` (another file name for every
    TSV reader but the csv module's), and a reason that starts with one was read as a quoted cell."""
    import subprocess
    import sys

    from _bids_support import REPO

    logs = tmp_path / "out" / "prettier" / "logs"
    logs.mkdir(parents=True)
    head = "participant_id\tsession\tcontrast\tinput\tstatus\treason\toutputs\n"
    quoted = 'sub-01/anat/sub-01_acq-"x_FLAIR.nii.gz'
    (logs / "summary_20261207-000000_aaaaaaaa.tsv").write_text(
        head + f'sub-01\tn/a\tFLAIR\t{quoted}\tskipped\tnot a BIDS name: "x\tn/a\n'
        + 'sub-02\tn/a\tFLAIR\tsub-02/anat/sub-02_FLAIR.nii.gz\tfailed\t"unclosed quote\tn/a\n'
        + 'sub-03\tn/a\tFLAIR\tsub-03/anat/sub-03_FLAIR.nii.gz\tdone\tprocessed in this run\tn/a\n')
    proc = subprocess.run([sys.executable, str(REPO / "docker" / "slurm" / "batch_summary.py"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = (logs / "batch_summary.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines]
    assert len(rows) == 4 and {len(r) for r in rows} == {8}
    assert [r[3] for r in rows[1:]] == [quoted, "sub-02/anat/sub-02_FLAIR.nii.gz", "sub-03/anat/sub-03_FLAIR.nii.gz"]
    assert [r[5] for r in rows[1:]] == ['not a BIDS name: "x', '"unclosed quote', "processed in this run"]


def test_the_consistency_map_does_not_carry_the_inputs_display_range_or_description():
    """The map's voxels are fractions of the intensity scale (0-0.1 here): it kept the input's ``cal_max`` 600, so
    viewers that honour the header's display range (MRIcroGL, Mango) showed it all black, and the input's
    ``descrip`` (``FLAIR 5mm scanner XYZ``) and ``aux_file``. The output keeps them: same intensities, same range."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.sr import super_resolve

    rng = np.random.default_rng(0)
    data = np.zeros((40, 40, 8), np.int16)
    data[5:35, 5:35, 1:7] = (500 + rng.normal(0, 20, (30, 30, 6))).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 5.0, 1.0]))
    img.header["cal_min"], img.header["cal_max"] = 0, 600
    img.header["descrip"], img.header["aux_file"] = b"FLAIR 5mm scanner XYZ", b"lut.txt"
    res = super_resolve(img, method="cubic", slice_thickness=5.0)
    cmap = res.consistency_map.header
    assert (float(cmap["cal_min"]), float(cmap["cal_max"]), cmap["aux_file"].item()) == (0.0, 0.0, b"")
    assert cmap["descrip"].item().startswith(b"prettier consistency map")
    out = res.image.header
    assert (float(out["cal_min"]), float(out["cal_max"]), out["descrip"].item()) == \
        (0.0, 600.0, b"FLAIR 5mm scanner XYZ")
