"""prettier-bids on datasets as they really come: DataLad/git-annex datasets with content not fetched, sidecars
inherited from the dataset's top level or a session, entities and labels of real archives, participants.tsv and
the selection at archive scale. Each test names the behaviour it checks (docs/errors.md has the rows)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np


def tiny_image(path, zooms=(1.0, 1.0, 4.0), shape=(16, 16, 6)):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, np.float32)
    data[2:-2, 2:-2, 1:-1] = 100
    nib.Nifti1Image(data, np.diag(list(zooms) + [1.0])).to_filename(str(path))
    return path


def write_json(path, value):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def dataset(root, subjects=("01",), contrasts=("FLAIR",)):
    """A BIDS dataset of one tiny thick-slice image per subject and contrast (no sidecars)."""
    write_json(Path(root) / "dataset_description.json", {"Name": "synthetic", "BIDSVersion": "1.9.0"})
    for sub in subjects:
        for contrast in contrasts:
            tiny_image(Path(root) / f"sub-{sub}/anat/sub-{sub}_{contrast}.nii.gz")
    return Path(root)


def by_subject(cands):
    return {c.subject: c for c in cands}


# --------------------------------------------------------------------------------------------
# DataLad / git-annex: sidecars whose content was not fetched
# --------------------------------------------------------------------------------------------

def test_annexed_sidecar_not_fetched_names_datalad_get_not_a_malformed_json(tmp_path):
    from prettier_bids.bids import get_layout, select

    ds = dataset(tmp_path / "bids", subjects=("01", "02"), contrasts=("FLAIR", "T1w"))
    # sub-01's own sidecar is annexed and absent (a broken link); the top-level T1w.json, inherited by every T1w,
    # is an unlocked annexed file whose content is absent (a pointer file)
    os.symlink("../../.git/annex/objects/Xx/Yy/MD5E-s9--abc.json/MD5E-s9--abc.json",
               ds / "sub-01/anat/sub-01_FLAIR.json")
    (ds / "T1w.json").write_text("/annex/objects/MD5E-s20--0123456789abcdef0123456789abcdef.json\n")
    cands = select(get_layout(ds), ["01", "02"], contrasts=["FLAIR", "T1w"])
    reasons = {c.relpath: (c.status, c.reason) for c in cands}
    status, reason = reasons["sub-01/anat/sub-01_FLAIR.nii.gz"]
    assert status == "failed" and "sub-01/anat/sub-01_FLAIR.json is a broken link" in reason, reason
    assert "datalad get sub-01/anat/sub-01_FLAIR.json" in reason and "malformed" not in reason  # was "malformed JSON"
    for sub in ("01", "02"):
        status, reason = reasons[f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz"]
        assert status == "failed" and "T1w.json is a git-annex pointer" in reason and "datalad get T1w.json" in reason
    assert reasons["sub-02/anat/sub-02_FLAIR.nii.gz"][0] == "selected"


def test_dataset_description_not_fetched_is_named_not_called_missing(tmp_path):
    """A DataLad dataset whose every file is annexed (no text2git), cloned without `datalad get`: the run said
    `not a BIDS dataset: .../dataset_description.json is missing` (or `not valid JSON` for a pointer file)."""
    from prettier_bids.bids import BIDSError, check_bids_dir

    desc = tmp_path / "dataset_description.json"
    for make in (lambda: os.symlink(".git/annex/objects/Xx/Yy/K/K", desc),
                 lambda: desc.write_text("/annex/objects/MD5E-s40--0123.json\n")):
        make()
        try:
            check_bids_dir(tmp_path)
        except BIDSError as exc:
            assert exc.code == 16 and str(exc).startswith(f"cannot read the dataset's description: {desc} is a ")
            assert "content is not present here" in str(exc) and "datalad get" in str(exc)
        else:
            raise AssertionError("no error")
        desc.unlink()


def test_validator_refusal_of_annexed_links_not_fetched_says_datalad_get(tmp_path, monkeypatch):
    """A DataLad dataset fetched in part: the validator's SYMLINK_BROKEN errors were reported as any invalid
    dataset ('run bids-validator-deno for details'); the refusal now says what they are and how to go on."""
    from prettier_bids.cli import validator

    report = {"issues": {"issues": [
        {"code": "NIFTI_HEADER_UNREADABLE", "location": "/sub-02/anat/sub-02_FLAIR.nii.gz", "severity": "error"},
        {"code": "SYMLINK_BROKEN", "location": "/sub-02/anat/sub-02_FLAIR.json", "severity": "error"},
        {"code": "NIFTI_HEADER_UNREADABLE", "location": "/sub-03/anat/sub-03_T1w.nii.gz", "severity": "error"}]}}
    (tmp_path / "sub-03/anat").mkdir(parents=True)  # an unlocked annexed file not fetched: the validator's unreadable
    (tmp_path / "sub-03/anat/sub-03_T1w.nii.gz").write_text("/annex/objects/MD5E-s9--0123.nii.gz\n")
    exe = tmp_path / "bids-validator-deno"
    exe.write_text("#!/bin/sh\ncat <<'END'\n" + json.dumps(report) + "\nEND\n")
    exe.chmod(0o755)
    monkeypatch.setattr(validator, "find_validator", lambda: str(exe))
    problem, _ = validator.run_bids_validator(tmp_path)
    assert problem.startswith("the input is not a valid BIDS dataset (3 error(s); first: NIFTI_HEADER_UNREADABLE")
    assert ("2 file(s) whose content is not present (broken links or git-annex pointers), e.g. "
            "/sub-02/anat/sub-02_FLAIR.json: DataLad/git-annex content not fetched?") in problem
    assert "datalad get" in problem and "--skip-bids-validation" in problem and "\n" not in problem


def test_group_level_names_outputs_whose_annexed_content_is_not_fetched(tmp_path, caplog):
    """A derivatives dataset cloned with DataLad, or whose outputs were `datalad drop`ped: the group level said
    `group level: 0 output(s)` and wrote empty tables, without a word of the outputs it left out."""
    from prettier_bids.reports.group import collect_rows

    root = tmp_path / "prettier"
    write_json(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
    anat = root / "sub-01/anat"
    anat.mkdir(parents=True)
    for name in ("sub-01_desc-cubic_FLAIR.json", "sub-01_desc-cubic_FLAIR.nii.gz"):
        os.symlink(f"../../.git/annex/objects/Xx/Yy/MD5E-s9--{name}/MD5E-s9--{name}", anat / name)
    tiny_image(root / "sub-02/anat/sub-02_desc-cubic_T1w.nii.gz")  # the sidecar here, the image a pointer file
    (root / "sub-02/anat/sub-02_desc-cubic_T1w.json").write_text("{}")
    (root / "sub-02/anat/sub-02_desc-cubic_T1w.nii.gz").write_text("/annex/objects/MD5E-s9--0123.nii.gz\n")
    caplog.set_level("WARNING", logger="prettier_bids")
    assert collect_rows(root) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("group level: skipped sub-01/anat/sub-01_desc-cubic_FLAIR.json: it is a broken link")
    assert lines[1].startswith("group level: skipped sub-02/anat/sub-02_desc-cubic_T1w.json: its image "
                               "sub-02_desc-cubic_T1w.nii.gz is a git-annex pointer")
    assert all("content is not present here" in ln and "datalad get" in ln for ln in lines)


# --------------------------------------------------------------------------------------------
# The BIDS inheritance principle: SliceThickness at the top level or a session's, conflicting values
# --------------------------------------------------------------------------------------------

def test_inherited_slice_thickness_is_the_nearest_and_its_sidecar_is_recorded(tmp_path):
    """SliceThickness given at several levels (dataset FLAIR.json, subject, session, the image's own without it):
    the nearest is used (as pybids merges them), and the output sidecar now names the file it came from
    (SliceThicknessSidecar, a BIDS URI); SliceThicknessSource only said `sidecar`."""
    from prettier_bids.bids import get_layout, select
    from prettier_bids.outputs import output_sidecars

    ds = dataset(tmp_path / "bids", subjects=("02",))
    write_json(ds / "FLAIR.json", {"SliceThickness": 3.0})
    write_json(ds / "sub-02/anat/sub-02_FLAIR.json", {"EchoTime": 0.1})  # its own sidecar, without the thickness
    for ses, where in (("1", "sub-01/ses-1/sub-01_ses-1_FLAIR.json"), ("2", "sub-01/sub-01_FLAIR.json")):
        tiny_image(ds / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_FLAIR.nii.gz")
    write_json(ds / "sub-01/ses-1/sub-01_ses-1_FLAIR.json", {"SliceThickness": 5.0})
    write_json(ds / "sub-01/sub-01_FLAIR.json", {"SliceThickness": 4.5})
    cands = {c.relpath: c for c in select(get_layout(ds), ["01", "02"], contrasts=["FLAIR"])}
    expected = {"sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz": (5.0, "sub-01/ses-1/sub-01_ses-1_FLAIR.json"),
                "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz": (4.5, "sub-01/sub-01_FLAIR.json"),
                "sub-02/anat/sub-02_FLAIR.nii.gz": (3.0, "FLAIR.json")}
    for relpath, (thickness, sidecar) in expected.items():
        cand = cands[relpath]
        assert (cand.thickness, cand.thickness_source, cand.thickness_file) == (thickness, "sidecar", sidecar)
        metas = output_sidecars(cand, "run1", "prettier-bids", {}, method="cubic")
        assert {m["SliceThicknessSidecar"] for m in metas.values()} == {f"bids:raw:{sidecar}"}


def test_group_level_on_a_derivatives_clone_whose_description_is_not_fetched(tmp_path, capsys):
    """A DataLad clone of the derivatives (every file annexed, none fetched): the group level said `no
    participant-level outputs in X (run the participant level first)`, exit 66; it now goes on and names each
    output whose content is absent."""
    from _bids_support import run_in_process

    ds = dataset(tmp_path / "bids")
    root = tmp_path / "out" / "prettier"
    anat = root / "sub-01/anat"
    anat.mkdir(parents=True)
    os.symlink(".git/annex/objects/Xx/Yy/K/K", root / "dataset_description.json")
    os.symlink("../../.git/annex/objects/Xx/Yy/K1/K1", anat / "sub-01_desc-cubic_FLAIR.json")
    os.symlink("../../.git/annex/objects/Xx/Yy/K2/K2", anat / "sub-01_desc-cubic_FLAIR.nii.gz")
    code, lines = run_in_process(capsys, ds, tmp_path / "out", "group", "--skip-bids-validation")
    assert code == 0, lines
    assert any("group level: skipped sub-01/anat/sub-01_desc-cubic_FLAIR.json: it is a broken link" in ln
               and "datalad get" in ln for ln in lines), lines


# --------------------------------------------------------------------------------------------
# Entities of real archives
# --------------------------------------------------------------------------------------------

def test_phase_real_and_imaginary_parts_are_skipped_and_the_magnitude_processed(tmp_path):
    """A complex-valued acquisition stored as parts (part-mag, part-phase, ...): the phase image was
    super-resolved like a magnitude image, exit 0 (cubic splines across +-pi wraps, a network trained on
    magnitudes); the derivative did not even pass the validator (PHASE_UNITS)."""
    from prettier_bids.bids import get_layout, select

    ds = dataset(tmp_path / "bids", contrasts=())
    for part in ("mag", "phase", "real", "imag"):
        tiny_image(ds / f"sub-01/anat/sub-01_part-{part}_T1w.nii.gz")
    tiny_image(ds / "sub-01/anat/sub-01_echo-2_T1w.nii.gz")
    cands = {c.entities.get("part") or "none": c for c in select(get_layout(ds), ["01"], contrasts=["T1w"])}
    assert cands["mag"].status == "selected" and cands["none"].status == "selected"
    for part in ("phase", "real", "imag"):
        assert cands[part].status == "skipped", part
        assert cands[part].reason.startswith(f"part-{part}: not a magnitude image"), cands[part].reason


def test_an_image_in_another_datatype_folder_is_a_logged_skip_not_left_out_without_a_word(tmp_path):
    """A T1w converted into func/, a FLAIR into dwi/ (the validator refuses them; with --skip-bids-validation they
    were not even listed: a hospital's data team saw no sign of them)."""
    from prettier_bids.bids import get_layout, select, summarize

    ds = dataset(tmp_path / "bids", subjects=("01", "02"))
    tiny_image(ds / "sub-01/func/sub-01_T1w.nii.gz")
    tiny_image(ds / "sub-02/ses-1/dwi/sub-02_ses-1_FLAIR.nii.gz")
    cands = {c.relpath: c for c in select(get_layout(ds), ["01", "02"], contrasts=["FLAIR", "T1w"])}
    assert cands["sub-01/anat/sub-01_FLAIR.nii.gz"].status == "selected"
    t1w, flair = cands["sub-01/func/sub-01_T1w.nii.gz"], cands["sub-02/ses-1/dwi/sub-02_ses-1_FLAIR.nii.gz"]
    assert t1w.status == flair.status == "skipped" and flair.session == "1"
    assert t1w.reason == ("in a func/ folder: T1w images belong in anat/ (a conversion's mistake?); move it there to "
                          "process it")
    assert "skipped  sub-02/ses-1/dwi/sub-02_ses-1_FLAIR.nii.gz: in a dwi/ folder" in summarize(list(cands.values()))


def test_filter_file_label_given_with_its_key_is_a_usage_error_naming_the_label(tmp_path):
    """`{"flair": {"session": "ses-pre"}}` (the folder's name) matched nothing: exit 18 `no FLAIR images found ...
    with the --bids-filter-file filters`, nothing said why; --session-label takes `ses-pre`."""
    from prettier_bids.bids import BIDSError, load_bids_filters

    for query, text in ((["pre", "ses-post"], '"ses-post" names the label with its key: give "post"'),
                        ("acq-ax", '"acq-ax" names the label with its key: give "ax"')):
        entity = "session" if isinstance(query, list) else "acquisition"
        path = write_json(tmp_path / "filter.json", {"flair": {entity: query}})
        try:
            load_bids_filters(path)
        except BIDSError as exc:
            assert exc.code == 64 and str(exc).startswith(f"--bids-filter-file: flair.{entity} {text} "), str(exc)
        else:
            raise AssertionError(f"{query}: no error")
    path = write_json(tmp_path / "filter.json", {"flair": {"session": "pre", "acquisition": ["ax", None]}})
    assert load_bids_filters(path) == {"FLAIR": {"session": "pre", "acquisition": ["ax", None]}}


# --------------------------------------------------------------------------------------------
# Participants: folders with nothing in them (DataLad subdatasets not installed)
# --------------------------------------------------------------------------------------------

def test_an_empty_participant_folder_is_named_not_reported_as_no_folders_at_all(tmp_path, caplog):
    """A DataLad superdataset whose subject subdatasets are not installed has empty sub-* folders. Asked for one,
    the run said `no participants (sub-* folders) found in BIDS_DIR` (the layout indexes the asked-for subjects
    only), or `not found (available: sub-01)`; without labels they were left out without a word."""
    from prettier_bids.bids import BIDSError, get_layout, resolve_participants

    ds = dataset(tmp_path / "bids", subjects=("01",))
    (ds / "sub-02").mkdir()
    (ds / "sub-03/anat").mkdir(parents=True)
    for labels in (["02"], ["01", "sub-02"]):
        try:
            resolve_participants(get_layout(ds, participants=labels), labels)
        except BIDSError as exc:
            assert exc.code == 18
            assert str(exc) == ("participant folder(s) sub-02 hold(s) no file (an uninstalled DataLad subdataset? "
                                "`datalad get -n sub-02` installs it, `datalad get sub-02` fetches its files too)")
        else:
            raise AssertionError(f"{labels}: no error")
    caplog.set_level("WARNING", logger="prettier_bids")
    assert resolve_participants(get_layout(ds)) == ["01"]
    assert "2 participant folder(s) hold no file, so they are not processed" in caplog.text
    assert caplog.text.rstrip().endswith(": sub-02, sub-03")


# --------------------------------------------------------------------------------------------
# Archive scale: what one participant's work costs does not grow with the dataset
# --------------------------------------------------------------------------------------------

def test_a_subject_report_indexes_its_own_subject_not_the_whole_derivatives_dataset(tmp_path, monkeypatch):
    """nireports indexed every file of OUTPUT_DIR/prettier for each subject report: 7 s a report beside 600
    participants' outputs (an hour of reports for a 600-participant run, quadratic in the participants; each
    array task of an archive paid the whole index). The report of sub-01 now indexes sub-01/ only, same page."""
    from nireports.assembler import report as assembler

    from prettier_bids.reports.subject import write_subject_report

    root = tmp_path / "prettier"
    write_json(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
    for sub in ("01", "02", "03"):
        out = tiny_image(root / f"sub-{sub}/anat/sub-{sub}_desc-cubic_FLAIR.nii.gz")
        write_json(out.with_name(out.name.replace(".nii.gz", ".json")), {
            "Sources": [f"bids:raw:sub-{sub}/anat/sub-{sub}_FLAIR.nii.gz"], "SlicePlane": "axial", "Method": "cubic",
            "SliceAxis": 2, "InputVoxelSize": [1.0, 1.0, 4.0], "SliceSpacing": 4.0, "SliceThickness": 4.0,
            "SliceProfile": "boxcar", "UpsamplingFactor": 4, "OutputVoxelSize": [1.0, 1.0, 1.0],
            "ConsistencyPSNR": 35.0, "ProjectedOntoInput": False, "QCFlags": [], "HeaderWarnings": [],
            "ConsistencyFractionAbove10pct": 0.0, "Precision": "fp32", "RuntimeSeconds": 1.5})
    indexed = []

    class Recording(assembler.BIDSLayout):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            indexed.extend(Path(f).relative_to(root).parts[0] for f in self.get(return_type="file"))

    monkeypatch.setattr(assembler, "BIDSLayout", Recording)
    page = write_subject_report(root, "01", (), "run1", "prettier-bids ...").read_text()
    assert "Consistency PSNR" in page  # sub-01's own QC table is shown
    assert indexed and set(indexed) == {"sub-01"}, sorted(set(indexed))  # was every sub-* folder and top-level file


def test_file_names_are_parsed_without_loading_pybids_configs_each_time(monkeypatch):
    """naming.parse_entities (8 calls per output for the methods text, the reports and the group level) had pybids
    build its configs anew on every call (6 ms each: 15-30 s of every participant run, even one with nothing to
    do, beside 600 participants' outputs). Same entities, configs loaded once."""
    from bids.layout import models, parse_file_entities

    from prettier_bids.naming import parse_entities

    name = "sub-01_ses-1_acq-ax_ce-gad_rec-x_run-2_echo-1_inv-1_mt-on_part-mag_chunk-3_desc-prettier_T1w.nii.gz"
    expected = {**parse_file_entities("/" + name), "datatype": "anat"}
    parse_entities("anat/sub-01_T1w.nii.gz")
    loads = []
    plain = models.Config.load
    monkeypatch.setattr(models.Config, "load", classmethod(lambda cls, *a, **k: loads.append(a) or plain(*a, **k)))
    assert parse_entities(f"/out/sub-01/ses-1/anat/{name}") == expected
    assert parse_entities("/out/sub-01/figures/sub-01_desc-qc_FLAIR.html") == {
        "subject": "01", "desc": "qc", "suffix": "FLAIR", "extension": ".html"}
    assert loads == []


def test_an_array_tasks_index_has_one_pattern_for_the_other_participants_not_one_each(tmp_path, monkeypatch):
    """get_layout(participants=...) (one participant per array task) passed pybids one ignore pattern per other
    participant, and every path was searched against all of them: 9 million regex searches, 4 s per task beside
    3,000 participants (quadratic in the archive); now one pattern, the same participants indexed."""
    from prettier_bids import bids

    ds = dataset(tmp_path / "bids", subjects=[f"{i:02d}" for i in range(30)] + ["010", "1"])
    patterns = []
    plain = bids.root_relative_indexer

    def recording(base):
        indexer = plain(base)

        class Recording(indexer):
            def __init__(self, *args, ignore=(), **kwargs):
                patterns.extend(ignore)
                super().__init__(*args, ignore=ignore, **kwargs)
        return Recording

    monkeypatch.setattr(bids, "root_relative_indexer", recording)
    layout = bids.get_layout(ds, participants=["sub-01", "10"])
    assert sorted(layout.get_subjects()) == ["01", "10"]  # not 010, nor 1
    few = len(patterns)
    patterns.clear()
    bids.get_layout(ds)
    assert few <= len(patterns) + 1, few  # was one more pattern per participant left out (30 here)
