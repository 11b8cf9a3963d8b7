"""The reports, the methods text and the group level are safe with hostile or odd derivatives (issue 24, third
adversarial round: cases 3, 7, 16 and the first half of 21).

* every HTML page and reportlet escapes text from paths, file names, sidecars, crash files, weights names and
  the methods text (case 3);
* logs/CITATION.md and the report's methods describe every output in the derivatives dataset, not only the
  last run's selection (case 7);
* an output whose sidecar has values of the wrong type is skipped with a warning, never a crash (case 16);
* group_qc.tsv and group_qc.html are written all-or-nothing, also under Ctrl-C (case 21, first half).

The derivatives are made here (tiny images, hand-written sidecars); one slow test runs the app end to end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _bids_support import TEST_BIDS, app_environment, read_tsv

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
PAYLOADS = (IMG, SCRIPT)
VERSIONS = {"prettier_bids": "0.1.0", "nipype": "1.11.0", "pybids": "0.22.0", "niworkflows": "1.14.5",
            "nireports": "26.0.0", "torch": "2.13.0", "nibabel": "5.4.2"}


def _model_meta(sub, contrast="FLAIR", model="prettier-edsr-v2", sha="ab" * 32, **extra):
    return {"Sources": [f"bids:raw:sub-{sub}/anat/sub-{sub}_{contrast}.nii.gz"], "SlicePlane": "axial",
            "ProcessingSoftwareVersions": VERSIONS, "Method": "model", "Model": model, "ModelWeightsSHA256": sha,
            "SliceAxis": 2, "InputVoxelSize": [1.0, 1.0, 5.0], "SliceSpacing": 5.0, "SliceThickness": 5.0,
            "SliceProfile": "boxcar", "UpsamplingFactor": 5, "OutputVoxelSize": [1.0, 1.0, 1.0],
            "ConsistencyPSNR": 35.0, "ProjectedOntoInput": True, "QCFlags": [], "HeaderWarnings": [],
            "ConsistencyFractionAbove10pct": 0.0, "Precision": "fp32", "RuntimeSeconds": 1.5, **extra}


def _cubic_meta(sub, contrast="T1w", **extra):
    meta = _model_meta(sub, contrast, model=None, sha=None, **extra)
    meta.update(Method="cubic", ProjectedOntoInput=False)
    return meta


def _output(root, sub, desc, contrast, meta):
    """A tiny main output (image and sidecar) under ``root``; ``meta`` is written as given (any JSON)."""
    anat = Path(root) / f"sub-{sub}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(sub))
    nib.save(nib.Nifti1Image((rng.random((6, 5, 4)) * 100).astype(np.float32), np.eye(4)),
             anat / f"sub-{sub}_desc-{desc}_{contrast}.nii.gz")
    sidecar = anat / f"sub-{sub}_desc-{desc}_{contrast}.json"
    sidecar.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return sidecar


def _root(tmp_path, name="prettier"):
    root = tmp_path / name
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0",
                                                               "DatasetType": "derivative"}))
    return root


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def warnings(self):
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]


@pytest.fixture
def records():
    handler = _Records()
    logger = logging.getLogger("prettier_bids")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _assert_no_markup(root):
    """No payload reaches any HTML file under ``root`` as markup; returns the pages read."""
    pages = {p: p.read_text() for p in Path(root).rglob("*.html")}
    assert pages
    for path, text in pages.items():
        for payload in PAYLOADS:
            assert payload not in text, f"unescaped {payload!r} in {path}"
    return pages


# --------------------------------------------------------------------------------------------
# Case 3: one escaping rule for every HTML page
# --------------------------------------------------------------------------------------------

def _crash_file(root, sub, run_id, bids_dir):
    """A Nipype text crash file whose inputs and traceback carry hostile paths."""
    crash = root / f"sub-{sub}" / "log" / run_id / "crash-20261204-101010-root-validate-0f0f.txt"
    crash.parent.mkdir(parents=True)
    crash.write_text(
        f"Node: prettier_0_1_0_wf.sub_{sub}_wf.sr_T1w_wf.validate\n"
        f"Working directory: /work/{IMG}/validate\n\n"
        "Node inputs:\n\n"
        f"in_file = {bids_dir}/sub-{sub}/anat/sub-{sub}_T1w.nii.gz\n"
        f"note = {SCRIPT}\n\n"
        "Traceback (most recent call last):\n"
        f'  File "{bids_dir}/x.py", line 1, in <module>\n'
        f"ValueError: cannot read {bids_dir}/sub-{sub}/anat/sub-{sub}_T1w.nii.gz as NIfTI {SCRIPT}\n")
    return crash


def test_no_text_from_paths_sidecars_crash_files_or_methods_reaches_any_html_as_markup(tmp_path):
    """A BIDS_DIR / OUTPUT_DIR named <img src=x onerror=alert(1)>, a weights file named <script>...</script>, a
    crash file quoting both, sidecar values with markup, an input path and a command with markup: the subject
    report, its QC reportlets and the group page show all of it as text."""
    from prettier_bids.reports.group import run_group
    from prettier_bids.reports.subject import write_subject_report

    bids_dir = tmp_path / IMG
    root = _root(tmp_path / IMG / "derivatives")
    _output(root, "01", "prettier", "FLAIR",
            _model_meta("01", model=SCRIPT, Sources=[f"bids:raw:{IMG}.nii.gz"], QCFlags=[f"low {IMG}"],
                        HeaderWarnings=[SCRIPT], Warnings=[IMG], SlicePlane=SCRIPT))
    _output(root, "01", "cubic", "T1w", _cubic_meta("01", Sources=[SCRIPT]))
    (root / "logs").mkdir()
    (root / "logs" / "CITATION.md").write_text(f"# Methods\n\nEach image was super-resolved ({SCRIPT}, {IMG}).\n")
    _crash_file(root, "01", "run1", bids_dir)

    class Cand:
        subject, relpath, status, reason = "01", f"sub-01/anat/sub-01_acq-{IMG}_T1w.nii.gz", "failed", SCRIPT

    page = write_subject_report(root, "01", [Cand()], "run1", f"prettier-bids {bids_dir} out participant {SCRIPT}")
    run_group(root)
    pages = _assert_no_markup(root)
    text = pages[page]
    assert "One or more execution steps failed (1)" in text  # the crash file is shown ...
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;script&gt;alert(2)&lt;/script&gt;" in text  # as text
    assert "Each image was super-resolved (&lt;script&gt;" in text  # the methods text, escaped
    qc = [p for p in pages if p.name.endswith("_desc-qc_FLAIR.html")]
    assert qc and "&lt;script&gt;alert(2)&lt;/script&gt;" in pages[qc[0]]


def test_subject_report_under_an_output_dir_with_quotes_shows_methods_and_errors(tmp_path):
    """OUTPUT_DIR named it's "here": the report is written (nireports interpolated the path into its YAML spec, so a
    quote broke it), with the methods text and the crash file, escaped."""
    from prettier_bids.reports.subject import write_subject_report

    root = _root(tmp_path / "it's \"here\"")
    _output(root, "01", "prettier", "FLAIR", _model_meta("01"))
    (root / "logs").mkdir()
    (root / "logs" / "CITATION.md").write_text("# Methods\n\nEach image was super-resolved.\n")
    _crash_file(root, "01", "run1", root)
    text = write_subject_report(root, "01", (), "run1", "prettier-bids").read_text()
    assert "Each image was super-resolved." in text and "One or more execution steps failed (1)" in text
    assert "it&#x27;s &quot;here&quot;" in text and "it's \"here\"" not in text


# --------------------------------------------------------------------------------------------
# Case 7: the methods text describes the whole derivatives dataset
# --------------------------------------------------------------------------------------------

def test_methods_text_describes_every_output_on_disk_not_only_the_last_runs(tmp_path):
    """Six network outputs from an earlier run and a later one-participant --method cubic run: logs/CITATION.md
    names both methods, each with the images it made; a cubic output beside a network output of the same image is
    a baseline, not a second description of that image."""
    from prettier_bids.outputs import write_citation

    root = _root(tmp_path)
    for sub in ("01", "02", "03"):
        _output(root, sub, "prettier", "FLAIR", _model_meta(sub, "FLAIR", model="v3-flair", sha="cd" * 32))
        _output(root, sub, "prettier", "T1w", _model_meta(sub, "T1w"))
    _output(root, "04", "cubic", "T1w", _cubic_meta("04"))  # the later --method cubic run
    text = write_citation(root, versions=VERSIONS)
    assert (root / "logs" / "CITATION.md").read_text() == text
    assert "Thick-slice images (3 FLAIR, 4 T1w)" in text
    assert "Each of 3 images (3 FLAIR) was super-resolved with the PRETTIER approach" in text
    assert "v3-flair, weights SHA-256 cdcdcdcdcdcd..." in text
    assert "Each of 3 images (3 T1w) was super-resolved" in text and "prettier-edsr-v2, weights SHA-256 abab" in text
    assert "One T1w image was interpolated with cubic splines" in text
    assert "Each image was" not in text
    # the same participants rerun with --method cubic: their network outputs stay what the text describes
    for sub in ("01", "02", "03"):
        _output(root, sub, "cubic", "T1w", _cubic_meta(sub))
    text = write_citation(root, versions=VERSIONS)
    assert "Each of 3 images (3 T1w) was super-resolved" in text and "One T1w image was interpolated" in text
    assert "A cubic-spline interpolation of the input of 3 super-resolved image(s), on the same grid (desc-cubic)" \
        in text


def test_methods_text_names_every_software_version_of_the_outputs(tmp_path):
    """Outputs made by two versions of prettier_bids: the methods text names both, not only the last run's."""
    from prettier_bids.outputs import write_citation

    root = _root(tmp_path)
    _output(root, "01", "prettier", "FLAIR", _model_meta("01"))
    _output(root, "02", "prettier", "FLAIR", _model_meta("02", ProcessingSoftwareVersions={**VERSIONS,
                                                                                           "prettier_bids": "0.2.0"}))
    text = write_citation(root, versions={**VERSIONS, "prettier_bids": "0.3.0"})
    assert "*prettier_bids*\n0.1.0 and 0.2.0 [1]" in text and "0.3.0 [1]" not in text
    assert "Each image was super-resolved" in text  # one recipe for both


# --------------------------------------------------------------------------------------------
# Case 16: an output sidecar with wrong-typed values is skipped, never a crash
# --------------------------------------------------------------------------------------------

WRONG = {"01": {"Sources": [1]}, "02": {"ConsistencyPSNR": "35.2"}, "03": {"QCFlags": "low"},
         "04": {"OutputVoxelSize": ["1", "1", "1"]}, "05": {"ProjectedOntoInput": "yes"}}


def test_group_level_skips_outputs_whose_sidecar_values_have_the_wrong_type(tmp_path, capsys):
    """Sources: [1], a number as a string, a string for a list, ...: each such output is left out of group_qc with
    a WARNING naming the file and the value; the group level exits 0 with group_qc.tsv and .html."""
    from prettier_bids.cli import run as cli

    root = _root(tmp_path / "out")
    _output(root, "00", "prettier", "FLAIR", _model_meta("00"))
    for sub, bad in WRONG.items():
        _output(root, sub, "prettier", "FLAIR", _model_meta(sub, **bad))
    with app_environment():
        code = cli.main([str(TEST_BIDS), str(tmp_path / "out"), "group"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert [r["participant_id"] for r in read_tsv(root / "group_qc.tsv")] == ["sub-00"]
    assert "1 output(s) of 1 participant(s)" in (root / "group_qc.html").read_text()
    assert ("skipped sub-01/anat/sub-01_desc-prettier_FLAIR.json: its JSON sidecar is malformed ('Sources' must be "
            "a list of strings, not [1])") in err
    assert "'ConsistencyPSNR' must be a number, not \"35.2\"" in err
    assert sum("group level: skipped" in ln for ln in err.splitlines()) == len(WRONG)
    assert "unexpected" not in err


def test_subject_report_skips_outputs_whose_sidecar_values_have_the_wrong_type(tmp_path, records):
    """The participant level's report of a subject with such an output (from an earlier run) is written, without
    that output, and the skip is logged."""
    from prettier_bids.reports.subject import write_subject_report

    root = _root(tmp_path)
    _output(root, "01", "prettier", "FLAIR", _model_meta("01", Sources=[1]))
    _output(root, "01", "prettier", "T1w", _model_meta("01", "T1w"))
    page = write_subject_report(root, "01", (), "run1", "prettier-bids ...").read_text()
    assert page.count("Consistency PSNR") == 1
    assert not (root / "sub-01/figures/sub-01_desc-qc_FLAIR.html").exists()
    assert any("report: skipped sub-01/anat/sub-01_desc-prettier_FLAIR.json: its JSON sidecar is malformed "
               "('Sources' must be a list of strings" in w for w in records.warnings())


def test_completion_marker_with_wrong_types_is_not_complete(tmp_path):
    """A marker whose Sources is a string (which contains the source URI) or whose QCFlags is a number is not a
    complete output: the input is processed again (and the marker rewritten); qc_of never crashes on it."""
    from prettier_bids import outputs as po
    from prettier_bids.bids import Candidate

    rel = "sub-01/anat/sub-01_FLAIR.nii.gz"
    cand = Candidate(path=tmp_path / "bids" / rel, relpath=rel, contrast="FLAIR",
                     entities={"subject": "01", "suffix": "FLAIR", "datatype": "anat", "extension": ".nii.gz"},
                     shape=(40, 36, 8), slice_axis=2, spacing=5.0, thickness=5.0, plane="axial")
    exp = po.expected_outputs(cand, tmp_path / "out", "cubic")
    for path in exp.all_files():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    exp.marker.write_text(json.dumps({"Sources": cand.source_uri, "QCFlags": 5}))
    done, why = po.completion(exp, cand.source_uri)
    assert not done and "'Sources' must be a list of strings" in why
    assert po.qc_of(exp) == ([], [])


# --------------------------------------------------------------------------------------------
# Case 21 (first half): the group outputs are written all-or-nothing
# --------------------------------------------------------------------------------------------

def _old_pair(root):
    (root / "group_qc.tsv").write_text("old tsv\n")
    (root / "group_qc.html").write_text("old html\n")


def test_interrupt_while_the_group_page_is_made_leaves_the_old_pair(tmp_path, monkeypatch):
    """Ctrl-C while group_qc.html is being made: group_qc.tsv is not replaced either (no new table beside a stale
    page), and no temporary is left."""
    from prettier_bids.reports import group

    root = _root(tmp_path)
    _output(root, "01", "prettier", "FLAIR", _model_meta("01"))
    _old_pair(root)

    def interrupted(rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(group, "_psnr_plot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        group.run_group(root)
    assert (root / "group_qc.tsv").read_text() == "old tsv\n"
    assert (root / "group_qc.html").read_text() == "old html\n"
    assert not [p for p in root.iterdir() if ".tmp" in p.name]


def test_interrupt_between_the_renames_still_leaves_the_new_pair(tmp_path, monkeypatch):
    """SIGINT delivered right after group_qc.tsv is renamed: group_qc.html is renamed too, then the interrupt is
    raised (the pair is new, never a new table and an old page)."""
    from prettier_bids.reports import group
    from prettier_bids.sr import io as sio

    root = _root(tmp_path)
    _output(root, "01", "prettier", "FLAIR", _model_meta("01"))
    _old_pair(root)
    real_replace = os.replace

    def replace_then_sigint(src, dst):
        real_replace(src, dst)
        if Path(dst).name == "group_qc.tsv":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sio.os, "replace", replace_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        group.run_group(root)
    assert (root / "group_qc.tsv").read_text().startswith("participant_id\t")
    assert "prettier_bids group QC" in (root / "group_qc.html").read_text()
    assert not [p for p in root.iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_app_on_a_hostile_bids_dir_escapes_everything_and_describes_every_output(tmp_path, capsys):
    """prettier-bids on a BIDS_DIR named <img src=x onerror=alert(1)> with one good and one broken image
    (--method cubic), into a derivatives dataset that already holds network outputs of another participant (one
    of them with Sources: [1]): no markup in any page, the crash file is shown escaped, CITATION.md describes the
    network outputs and the cubic one, the group level skips the bad sidecar."""
    from prettier_bids.cli import run as cli

    bids = tmp_path / IMG
    bids.mkdir()
    for name in ("dataset_description.json", "participants.tsv", "participants.json", "README", "CHANGES"):
        shutil.copy(TEST_BIDS / name, bids / name)
    anat = bids / "sub-02" / "anat"
    anat.mkdir(parents=True)
    shutil.copy(TEST_BIDS / "sub-02/anat/sub-02_T1w.nii.gz", anat)
    shutil.copy(TEST_BIDS / "sub-02/anat/sub-02_T1w.json", anat)
    shutil.copy(TEST_BIDS / "sub-02/anat/sub-02_FLAIR.json", anat)
    flair = anat / "sub-02_FLAIR.nii"  # a whole header, truncated data: selected, then fails in the workflow
    nib.save(nib.load(TEST_BIDS / "sub-02/anat/sub-02_FLAIR.nii.gz"), flair)
    flair.write_bytes(flair.read_bytes()[:2000])
    out = tmp_path / "out"
    root = _root(out)
    _output(root, "09", "prettier", "FLAIR", _model_meta("09", model="v3-flair"))
    _output(root, "09", "prettier", "T1w", _model_meta("09", "T1w", Sources=[1]))
    with app_environment():
        code = cli.main([str(bids), str(out), "participant", "--method", "cubic", "--skip-bids-validation",
                         "-w", str(tmp_path / "work"), "--nprocs", "1"])
        assert cli.main([str(bids), str(out), "group"]) == 0
    err = capsys.readouterr().err
    assert code == 1, err  # the broken FLAIR failed
    pages = _assert_no_markup(root)
    page = pages[root / "sub-02.html"]
    assert "One or more execution steps failed" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    citation = (root / "logs" / "CITATION.md").read_text()
    assert "One FLAIR image was super-resolved with the PRETTIER approach" in citation and "v3-flair" in citation
    assert "One T1w image was interpolated with cubic splines" in citation
    assert "its JSON sidecar is malformed ('Sources' must be a list of strings, not [1])" in err
    assert [r["participant_id"] for r in read_tsv(root / "group_qc.tsv")] == ["sub-02", "sub-09"]


def test_bidirectional_controls_are_shown_by_their_code_in_html():
    """A U+202E (right-to-left override) in a stray folder name was escaped in the log but written raw into
    sub-XX.html, where it reverses the text after it (helper-24)."""
    from prettier_bids.reports.markup import text

    assert text("sub-02/x\u202egnp.exe<b>") == "sub-02/x\\u202egnp.exe&lt;b&gt;"
    assert text("\u2067a\u2069") == "\\u2067a\\u2069"
