"""prettier_bids.bids and prettier_bids.outputs without running any workflow."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from _bids_support import TEST_BIDS, copy_dataset, read_tsv
from prettier_bids import __version__
from prettier_bids import bids as pb
from prettier_bids import outputs as po


@pytest.fixture(scope="module")
def layout():
    return pb.get_layout(TEST_BIDS)


def _by_rel(cands):
    return {c.relpath: c for c in cands}


def test_io_spec_is_data():
    spec = pb.load_io_spec()
    assert spec["default_contrasts"] == ["FLAIR", "T1w"]
    assert set(spec["queries"]) == {"FLAIR", "T1w", "T2w"}
    assert {o["desc"] for o in spec["outputs"].values()} == {"prettier", "cubic", "consistency"}
    assert {"subject", "session", "acquisition", "run", "desc"} <= pb.pattern_entities(spec)


def test_default_selection(layout):
    subjects = pb.resolve_participants(layout)
    assert subjects == ["01", "02", "03"]
    cands = _by_rel(pb.select(layout, subjects))
    assert len(cands) == 8  # FLAIR and T1w only: no T2w by default
    selected = {r for r, c in cands.items() if c.status == "selected"}
    assert selected == {"sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
                        "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz", "sub-02/anat/sub-02_FLAIR.nii.gz",
                        "sub-02/anat/sub-02_T1w.nii.gz", "sub-03/anat/sub-03_FLAIR.nii.gz"}
    iso = cands["sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"]
    assert iso.status == "skipped" and "already high resolution" in iso.reason
    thin = cands["sub-03/anat/sub-03_T1w.nii.gz"]
    assert thin.status == "skipped" and "below --min-slice-spacing 2 mm" in thin.reason
    # geometry from the header, thickness from the sidecar
    flair = cands["sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz"]
    assert (flair.slice_axis, flair.spacing, flair.thickness, flair.plane) == (2, 5.0, 4.0, "axial")
    assert flair.thickness_source == "sidecar"
    sag = cands["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"]
    assert (sag.slice_axis, sag.spacing, sag.plane) == (2, 4.0, "sagittal")
    assert cands["sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz"].plane == "coronal"
    assert cands["sub-02/anat/sub-02_FLAIR.nii.gz"].plane == "axial (oblique)"
    assert cands["sub-03/anat/sub-03_FLAIR.nii.gz"].plane == "sagittal"
    assert flair.source_uri == "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz"


def test_summary_lists_found_selected_skipped(layout):
    text = pb.summarize(pb.select(layout, ["01", "03"]))
    assert text.splitlines()[0] == "found 6 image(s) of 2 participant(s) (FLAIR: 3, T1w: 3); 4 selected, 2 skipped"
    assert "skipped  sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz: already high resolution" in text


def test_labels_sessions_contrasts_and_min_spacing(layout):
    assert pb.resolve_participants(layout, ["sub-02", "03", "sub-02"]) == ["02", "03"]
    with pytest.raises(pb.BIDSError) as exc:
        pb.resolve_participants(layout, ["01", "sub-07"])
    assert exc.value.code == 18 and "sub-07" in str(exc.value)
    cands = pb.select(layout, ["01"], sessions=["ses-2"])
    assert [c.relpath for c in cands] == ["sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz",
                                          "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"]
    t2 = pb.select(layout, ["03"], contrasts=["T2w"])
    assert [(c.relpath, c.status, c.slice_axis, c.spacing) for c in t2] == [
        ("sub-03/anat/sub-03_T2w.nii.gz", "selected", 1, 4.0)]
    relaxed = _by_rel(pb.select(layout, ["03"], min_slice_spacing=1.6))
    assert relaxed["sub-03/anat/sub-03_T1w.nii.gz"].status == "selected"
    strict = _by_rel(pb.select(layout, ["02"], min_slice_spacing=4))
    assert strict["sub-02/anat/sub-02_T1w.nii.gz"].status == "skipped"
    with pytest.raises(pb.BIDSError) as exc:
        pb.select(layout, ["02"], sessions=["9"])
    assert exc.value.code == 18


def test_bids_filter_file(tmp_path, layout):
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"flair": {"session": "2"}}))
    filters = pb.load_bids_filters(path)
    assert filters == {"FLAIR": {"session": "2"}}
    cands = pb.select(layout, ["01"], filters=filters)
    assert sorted(c.relpath for c in cands) == [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"]
    path.write_text(json.dumps({"t1w": {"session": None}}))  # null: entity must be absent
    cands = pb.select(layout, ["01", "02"], contrasts=["T1w"], filters=pb.load_bids_filters(path))
    assert [c.relpath for c in cands] == ["sub-02/anat/sub-02_T1w.nii.gz"]
    for bad, code in (("{not json", 64), ('{"bold": {}}', 64), ('{"flair": 3}', 64)):
        path.write_text(bad)
        with pytest.raises(pb.BIDSError) as exc:
            pb.load_bids_filters(path)
        assert exc.value.code == code


def test_check_bids_dir(tmp_path):
    with pytest.raises(pb.BIDSError) as exc:
        pb.check_bids_dir(tmp_path / "missing")
    assert exc.value.code == 66
    with pytest.raises(pb.BIDSError) as exc:
        pb.check_bids_dir(tmp_path)
    assert exc.value.code == 16 and "dataset_description.json is missing" in str(exc.value)
    (tmp_path / "dataset_description.json").write_text("{")
    with pytest.raises(pb.BIDSError) as exc:
        pb.check_bids_dir(tmp_path)
    assert exc.value.code == 16 and "\n" not in str(exc.value)
    assert pb.check_bids_dir(TEST_BIDS)["BIDSVersion"]


def test_output_and_work_dirs_inside_the_dataset_are_not_indexed(tmp_path):
    ds = copy_dataset(tmp_path / "ds")
    fake = ds / "out/prettier/sub-01/anat/sub-01_desc-prettier_FLAIR.nii.gz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes((ds / "sub-02/anat/sub-02_FLAIR.nii.gz").read_bytes())
    (ds / "work").mkdir()
    layout = pb.get_layout(ds, exclude=[ds / "out", ds / "work", tmp_path / "elsewhere"])
    assert all("out/" not in c.relpath for c in pb.select(layout, ["01"]))
    assert len(pb.select(layout, ["01"])) == 4


@pytest.mark.parametrize("pattern, path, hidden", [
    ("sub-02/anat/sub-02_FLAIR.nii.gz", "/sub-02/anat/sub-02_FLAIR.nii.gz", True),
    ("/sub-02/anat/sub-02_FLAIR.nii.gz", "sub-02/anat/sub-02_FLAIR.nii.gz", True),
    ("*_FLAIR.nii.gz", "/sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", True),
    ("*_FLAIR.nii.gz", "/sub-01/ses-1/anat/sub-01_ses-1_FLAIR.json", False),
    ("extra/", "/sub-01/extra/sub-01_T1w.nii.gz", True),
    ("extra/", "/sub-01/extras", False),
    ("/extra", "/sub-01/extra", False),  # anchored at the root
    ("sub-1", "/sub-10", False),  # a whole name, not a prefix (pybids' plain strings are prefixes)
    ("sub-0[!12]", "/sub-03/anat", True),
    ("sub-0[!12]", "/sub-01/anat", False),
    ("**/anat/*acq-old*", "/sub-01/ses-1/anat/sub-01_ses-1_acq-old_T1w.nii.gz", True),
    ("sub-*/ses-2/", "/sub-01/ses-21/anat", False),
    ("a?c", "/a/c", False),
    ("sub-0[1-3]", "/sub-02", True),
    ("sub-0[z-a]", "/sub-02", False),  # an empty range matches nothing (no error)
    ("sub-01/**/x", "/sub-01/x", True),
    ("*a*a*a*a*a*a*a*a*a*a*b", "/" + "a" * 250, False),  # no regular expression to backtrack for ever
    ("**/**/**/**/**/**/**/**/z", "/" + "/".join(["a"] * 200), False),
    ("**/" * 400 + "z", "/" + "/".join(["a"] * 200) + "/z", True),  # no recursion to overflow
    ("x/**/" * 300 + "z", "/" + "x/" * 300 + "z", True),
    ("[!]x]", "/]", False),  # a ']' first in a bracket is one of its characters
    ("[!]x]", "/a", True),
    (" zz", "/zz", False),  # leading blanks belong to the name
])
def test_bidsignore_patterns_follow_the_validators_syntax(pattern, path, hidden):
    assert bool(pb.GlobPattern(pattern).search(path)) is hidden


def test_bidsignored_images_are_not_processed(tmp_path, caplog):
    """BIDS_DIR/.bidsignore was not read (pybids does not): an image the validator ignores was processed."""
    import os

    ds = copy_dataset(tmp_path / "ds")
    (ds / ".bidsignore").write_text("# scans to leave out\n\nsub-02/anat/sub-02_FLAIR.*\n*_T2w.nii.gz\n"
                                    "!sub-01/anat/x_T2w.nii.gz\nsub-[z-a]\n")
    (ds / "sub-02/anat/sub-02_FLAIR.json").write_text("{not json")  # left out: not even a warning
    with caplog.at_level("INFO", logger="prettier_bids"):
        layout = pb.get_layout(ds)
    rels = {c.relpath for c in pb.select(layout, ["01", "02"], contrasts=["FLAIR", "T1w", "T2w"])}
    assert "sub-02/anat/sub-02_FLAIR.nii.gz" not in rels and "sub-02/anat/sub-02_T1w.nii.gz" in rels
    assert rels and not [r for r in rels if r.endswith("_T2w.nii.gz")]
    text = caplog.text
    assert ".bidsignore: 3 pattern(s) honoured" in text and "malformed" not in text
    assert ".bidsignore: 1 negated pattern(s) not supported" in text
    (ds / ".bidsignore").write_bytes(b"\xef\xbb\xbfsub-02/anat/sub-02_FLAIR.*\n")  # a BOM (Windows editors)
    rels = {c.relpath for c in pb.select(pb.get_layout(ds), ["02"], contrasts=["FLAIR", "T1w"])}
    assert rels == {"sub-02/anat/sub-02_T1w.nii.gz"}
    (ds / ".bidsignore").write_text("/\n//\n")  # names nothing, as for the validator (it hid the whole dataset)
    assert pb.bidsignore_patterns(ds) is None and len(pb.select(pb.get_layout(ds), ["02"])) == 2
    (ds / "sub-a+b/anat").mkdir(parents=True)
    (ds / ".bidsignore").write_text("sub-a+b/\nsub-03\n")
    caplog.clear()
    layout = pb.get_layout(ds)
    assert "sub-a+b" not in caplog.text  # no advice to rename a folder the user hid
    with pytest.raises(pb.BIDSError) as err:
        pb.resolve_participants(layout, ["03"])
    assert str(err.value).endswith("(BIDS_DIR/.bidsignore hides what its 2 pattern(s) match)")
    (ds / ".bidsignore").write_text("\n".join(f"sub-02/anat/x{k}.nii.gz" for k in range(40000)) + "\n*_T2w.nii.gz\n")
    hidden = pb.bidsignore_patterns(ds)  # literal paths are set lookups (45,000 patterns took 20 s to index)
    assert len(hidden.paths) == 40000 and len(hidden.globs) == 1 and hidden.count == 40001
    assert len(pb.select(pb.get_layout(ds), ["01", "02"], contrasts=["FLAIR", "T1w"])) == 4 + 2
    (ds / ".bidsignore").unlink()
    os.mkfifo(ds / ".bidsignore")  # never read (it would block)
    caplog.clear()
    layout = pb.get_layout(ds)
    assert ".bidsignore not honoured: not a regular file" in caplog.text


def test_sidecar_spacing_and_thickness_checks(tmp_path):
    ds = copy_dataset(tmp_path / "ds")
    side = ds / "sub-02/anat/sub-02_T1w.json"
    meta = json.loads(side.read_text())
    meta.update(SliceThickness=40, SpacingBetweenSlices=6)
    side.write_text(json.dumps(meta))
    (ds / "sub-02/anat/sub-02_FLAIR.json").write_text(json.dumps({"MRAcquisitionType": "2D"}))
    cands = _by_rel(pb.select(pb.get_layout(ds), ["02"]))
    t1 = cands["sub-02/anat/sub-02_T1w.nii.gz"]
    # an implausible sidecar value is ignored (warned): the SR core estimates the thickness
    assert t1.status == "selected" and t1.thickness is None and t1.thickness_source == ""
    assert any("SpacingBetweenSlices 6" in w for w in t1.warnings)
    assert any("SliceThickness 40" in w for w in t1.warnings)
    flair = cands["sub-02/anat/sub-02_FLAIR.nii.gz"]
    assert flair.thickness is None and flair.thickness_source == "" and not flair.warnings


def test_unreadable_header_and_4d_are_reported(tmp_path):
    ds = copy_dataset(tmp_path / "ds")
    (ds / "sub-02/anat/sub-02_FLAIR.nii.gz").write_bytes(b"not a nifti file")
    img = nib.load(str(ds / "sub-02/anat/sub-02_T1w.nii.gz"))
    data = np.stack([np.asarray(img.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(ds / "sub-02/anat/sub-02_T1w.nii.gz"))
    cands = _by_rel(pb.select(pb.get_layout(ds), ["02"]))
    assert cands["sub-02/anat/sub-02_FLAIR.nii.gz"].status == "failed"
    assert "cannot read the NIfTI header" in cands["sub-02/anat/sub-02_FLAIR.nii.gz"].reason
    assert cands["sub-02/anat/sub-02_T1w.nii.gz"].status == "skipped"
    assert "4D image with 2 volumes" in cands["sub-02/anat/sub-02_T1w.nii.gz"].reason


def test_output_names_keep_source_entities():
    ents = {"subject": "01", "session": "pre", "acquisition": "tra", "run": "02", "suffix": "FLAIR",
            "extension": ".nii.gz", "datatype": "anat"}
    folder = "sub-01/ses-pre/anat/sub-01_ses-pre_acq-tra_run-02"
    assert pb.derivative_relpath(ents, "prettier") == f"{folder}_desc-prettier_FLAIR.nii.gz"
    assert pb.derivative_relpath(ents, "cubic", ".json") == f"{folder}_desc-cubic_FLAIR.json"
    assert pb.derivative_relpath({"subject": "7", "suffix": "T1w"}, "prettier", ".png", "figures") == \
        "sub-7/figures/sub-7_desc-prettier_T1w.png"
    from bids.layout import parse_file_entities

    parsed = parse_file_entities("/data/sub-01/ses-1/anat/sub-01_ses-1_acq-ax_run-01_FLAIR.nii.gz")
    assert pb.derivative_relpath(parsed, "prettier").endswith("sub-01_ses-1_acq-ax_run-01_desc-prettier_FLAIR.nii.gz")


def _cand(relpath="sub-01/anat/sub-01_FLAIR.nii.gz"):
    return SimpleNamespace(entities={"subject": "01", "suffix": "FLAIR", "datatype": "anat", "extension": ".nii.gz"},
                           source_uri=pb.bids_uri(relpath), subject="01", session=None)


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_completion_marker_rules(tmp_path):
    cand = _cand()
    exp = po.expected_outputs(cand, tmp_path, "model", write_cubic=True)
    assert list(exp.niftis) == ["consistency", "cubic", "sr"] and exp.marker_kind == "sr"
    assert exp.marker == tmp_path / "sub-01/anat/sub-01_desc-prettier_FLAIR.json"
    assert exp.figures == [tmp_path / f"sub-01/figures/sub-01_desc-{d}_FLAIR.svg"
                           for d in ("flickerinput", "flickercubic", "consistency", "lesions")]  # FLAIR
    cubic_only = po.expected_outputs(cand, tmp_path, "cubic")
    assert [f.name for f in cubic_only.figures] == ["sub-01_desc-flickerinput_FLAIR.svg", "sub-01_desc-consistency_FLAIR.svg"]
    assert po.completion(exp, cand.source_uri, "abc") == (False, "no completion marker")
    for path in exp.all_files():
        _write(path)
    good = {"Sources": [cand.source_uri], "ModelWeightsSHA256": "abc"}
    _write(exp.marker, json.dumps(good))
    assert po.completion(exp, cand.source_uri, "abc") == (True, "")
    assert po.completion(exp, cand.source_uri, "other")[0] is False  # made with other weights
    assert po.completion(exp, "bids:raw:sub-01/anat/other.nii.gz", "abc")[0] is False
    # outputs made before the projection onto the input existed (no key) are redone when it is on, kept when off
    assert po.completion(exp, cand.source_uri, "abc", projected=True) == (
        False, "sub-01_desc-prettier_FLAIR.json was made without the projection onto the input")
    assert po.completion(exp, cand.source_uri, "abc", projected=False) == (True, "")
    _write(exp.marker, json.dumps({**good, "ProjectedOntoInput": True}))
    assert po.completion(exp, cand.source_uri, "abc", projected=True) == (True, "")
    assert po.completion(exp, cand.source_uri, "abc", projected=False)[0] is False
    # --precision auto (None) keeps outputs of either arithmetic; a named one redoes the other's
    _write(exp.marker, json.dumps({**good, "ProjectedOntoInput": True, "Precision": "bf16"}))
    assert po.completion(exp, cand.source_uri, "abc", True, None) == (True, "")
    assert po.completion(exp, cand.source_uri, "abc", True, "bf16") == (True, "")
    assert po.completion(exp, cand.source_uri, "abc", True, "fp32") == (
        False, "sub-01_desc-prettier_FLAIR.json was made in bf16 arithmetic, not fp32")
    # outputs made before the native grid (no OutputGrid) are on the 1 mm grid: redone for the native default
    assert po.completion(exp, cand.source_uri, "abc", output_grid="native") == (False, "OutputGrid changed: 1mm -> native")
    assert po.completion(exp, cand.source_uri, "abc", output_grid="1mm") == (True, "")
    _write(exp.marker, json.dumps({**good, "OutputGrid": "native"}))
    assert po.completion(exp, cand.source_uri, "abc", output_grid="native") == (True, "")
    assert po.completion(exp, cand.source_uri, "abc", output_grid="1mm") == (False, "OutputGrid changed: native -> 1mm")
    exp.niftis["cubic"].unlink()
    done, why = po.completion(exp, cand.source_uri, "abc")
    assert not done and "sub-01_desc-cubic_FLAIR.nii.gz" in why
    _write(exp.marker, '{"Sources": [')  # a torn marker never counts
    assert po.completion(po.expected_outputs(cand, tmp_path), cand.source_uri, "abc")[0] is False
    cubic_only = po.expected_outputs(cand, tmp_path, "cubic")
    assert cubic_only.marker_kind == "cubic" and "sr" not in cubic_only.niftis


def test_stale_temporaries_are_removed(tmp_path):
    stale = tmp_path / "sub-01/anat/.sub-01_desc-prettier_FLAIR.nii.gz.4242.tmp.nii.gz"
    keep = tmp_path / "sub-01/anat/sub-01_desc-prettier_FLAIR.nii.gz"
    other = tmp_path / "sub-02/anat/.sub-02_desc-prettier_FLAIR.nii.gz.4242.tmp.nii.gz"
    for p in (stale, keep, other):
        _write(p)
    assert po.clean_stale_temporaries(tmp_path, ["01"]) == 1
    assert not stale.exists() and keep.exists() and other.exists()  # only the subjects of this run


def test_dataset_files_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("PRETTIER_BIDS_CONTAINER_TYPE", "singularity")
    monkeypatch.setenv("PRETTIER_BIDS_CONTAINER_TAG", "prettier_bids-0.1.0.sif")
    po.write_dataset_files(tmp_path, TEST_BIDS, {"Name": "raw", "DatasetDOI": "doi:10.1/x"})
    desc = json.loads((tmp_path / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    gen = desc["GeneratedBy"][0]
    assert (gen["Name"], gen["Version"]) == ("prettier_bids", __version__)
    assert "CodeURL" not in gen  # no public repository yet: no invented URL
    assert gen["Container"] == {"Type": "singularity", "Tag": "prettier_bids-0.1.0.sif"}
    assert desc["SourceDatasets"] == [{"URL": TEST_BIDS.resolve().as_uri(), "DOI": "doi:10.1/x"}]
    assert desc["DatasetLinks"] == {"raw": TEST_BIDS.resolve().as_uri()}
    assert (tmp_path / ".bidsignore").read_text().split() == po.BIDSIGNORE
    assert read_tsv(tmp_path / "descriptions.tsv")[0]["desc_id"] == "desc-prettier"
    assert po.container_info({}) is None  # a pip install, even on a host that has /.dockerenv
    assert po.container_info({"APPTAINER_CONTAINER": "/img/x.sif", "APPTAINER_NAME": "x.sif"}) == \
        {"Type": "apptainer", "Tag": "x.sif"}
    assert po.container_info({"PRETTIER_BIDS_CONTAINER_TYPE": "docker", "PRETTIER_BIDS_CONTAINER_TAG": "prettier:0.1.0"}) \
        == {"Type": "docker", "Tag": "prettier:0.1.0"}
    # the Docker image's variables carried into an Apptainer image: Apptainer it is
    assert po.container_info({"PRETTIER_BIDS_CONTAINER_TYPE": "docker", "APPTAINER_CONTAINER": "/x.sif",
                              "APPTAINER_NAME": "x.sif"})["Type"] == "apptainer"

    summary = po.RunSummary(tmp_path, "20240101-000000_abcd")
    cand = SimpleNamespace(as_row=lambda: {"participant_id": "sub-01", "session": "n/a", "contrast": "FLAIR",
                                           "input": "sub-01/anat/sub-01_FLAIR.nii.gz", "status": "failed",
                                           "reason": "validate failed:\tbad\nfile"})
    summary.add(cand)
    rows = read_tsv(summary.write())
    assert summary.path == tmp_path / "logs" / "summary_20240101-000000_abcd.tsv"
    assert rows == [{"participant_id": "sub-01", "session": "n/a", "contrast": "FLAIR",
                     "input": "sub-01/anat/sub-01_FLAIR.nii.gz", "status": "failed",
                     "reason": "validate failed: bad file", "outputs": "n/a"}]


def test_layout_indexes_only_selected_participants():
    from prettier_bids.bids import get_layout

    layout = get_layout(TEST_BIDS, participants=["sub-02"])
    assert layout.get_subjects() == ["02"]
    assert {f.entities["subject"] for f in layout.get(extension=".nii.gz")} == {"02"}
