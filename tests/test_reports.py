"""The derivatives sink; niworkflows/nireports in use: the flicker reportlets, the report spec, the boilerplate."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from reports_support import assert_flicker_svg

from prettier_bids.bids import Candidate, load_io_spec


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _source(tmp_path, name="sub-01_ses-1_FLAIR.nii.gz"):
    src = tmp_path / "bids" / "sub-01" / "ses-1" / "anat" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"")  # the input the sink must never write over
    return src


def _image(path, shape=(24, 20, 6), zooms=(1.0, 1.0, 5.0), qcode=0, dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 1000).astype(dtype)
    aff = np.diag([*zooms, 1.0])
    aff[:3, 3] = [-10, -12, -15]
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff if qcode else None, code=qcode)  # qform unset: the sink must conform it
    nib.save(img, path)
    return path


ENTITIES = {"subject": "01", "session": "1", "suffix": "FLAIR", "datatype": "anat", "extension": ".nii.gz"}


def _sink(tmp_path, in_file, **inputs):
    from prettier_bids.interfaces.derivatives import DerivativesSink

    return DerivativesSink(base_directory=str(tmp_path / "out"), source_file=str(_source(tmp_path)),
                           entities=ENTITIES, in_file=str(in_file), **inputs)


def test_sink_writes_our_bytes_once_and_the_sidecar_last(tmp_path, monkeypatch):
    import prettier_bids.sr.io as sr_io
    from prettier_bids.sr.io import save_nifti_atomic
    from prettier_bids.sr.reconstruct import conform_header

    work = tmp_path / "work"
    work.mkdir()
    in_file = _image(work / "sub-01_ses-1_FLAIR_model.nii.gz")
    plain = tmp_path / "plain.nii.gz"  # what our writer always wrote
    save_nifti_atomic(conform_header(nib.load(in_file)), plain)
    writes = []
    for name in ("_write_nifti", "_write_text", "_copy_file"):  # every file the sink writes goes through these
        real = getattr(sr_io, name)
        monkeypatch.setattr(sr_io, name, lambda obj, tmp, _real=real, _name=name: (writes.append(_name),
                                                                                   _real(obj, tmp))[1])

    meta = {"Description": "d", "Sources": ["bids:raw:x"], "B": 1, "A": 2}
    sink = _sink(tmp_path, in_file, desc="prettier", meta_dict=meta, info={"Z": None, "Y": 3})
    sink = pickle.loads(pickle.dumps(sink))  # as Nipype runs nodes
    inputs_before = sink.inputs.get()
    res = sink.run(cwd=str(work))
    out = tmp_path / "out/sub-01/ses-1/anat/sub-01_ses-1_desc-prettier_FLAIR.nii.gz"
    assert res.outputs.out_file == str(out)
    assert writes == ["_write_nifti", "_write_text"]  # the image once, then its sidecar: no staging copy
    assert _sha(out) == _sha(plain)
    hdr = nib.load(out).header
    assert int(hdr["qform_code"]) == int(hdr["sform_code"]) > 0 and np.allclose(hdr.get_qform(), hdr.get_sform())
    sidecar = out.with_name("sub-01_ses-1_desc-prettier_FLAIR.json")
    assert res.outputs.out_meta == str(sidecar)
    assert sidecar.read_text() == json.dumps({**meta, "Y": 3}, indent=2) + "\n"  # our key order, None dropped
    assert os.stat(sidecar).st_mtime_ns >= os.stat(out).st_mtime_ns  # image first, sidecar last
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(["sub-01", "ses-1", "anat", out.name,
                                                                           sidecar.name])
    assert sorted(p.name for p in work.iterdir()) == [in_file.name]  # nothing staged in the node's folder
    assert sink.inputs.get() == inputs_before  # its inputs are never changed while it runs


def test_sink_keeps_only_the_named_info_keys_in_their_order(tmp_path):
    from prettier_bids.interfaces.derivatives import sidecar_entries

    assert list(sidecar_entries({"D": 1}, {"C": 3, "A": None, "B": 2}, ["B", "A", "C", "X"])) == ["D", "B", "C"]
    assert sidecar_entries(None, {"Sources": ["x"]}) == {"Sources": ["x"]}


def test_sink_figures_have_no_sidecar(tmp_path):
    svg = tmp_path / "report.svg"
    svg.write_text("<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    res = _sink(tmp_path, svg, desc="flickerinput", datatype="figures", write_sidecar=False).run(cwd=str(tmp_path))
    out = tmp_path / "out/sub-01/figures/sub-01_ses-1_desc-flickerinput_FLAIR.svg"
    assert res.outputs.out_file == str(out) and out.read_bytes() == svg.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_sink_names_outputs_as_the_completion_check_expects(tmp_path):
    from prettier_bids.outputs import expected_outputs

    cand = Candidate(path=_source(tmp_path), relpath="sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", contrast="FLAIR",
                     entities=ENTITIES)
    expected = expected_outputs(cand, tmp_path / "out", write_cubic=True)
    in_file = _image(tmp_path / "x.nii.gz")
    for kind, path in expected.niftis.items():
        desc = load_io_spec()["outputs"][kind]["desc"]
        assert _sink(tmp_path, in_file, desc=desc, write_sidecar=False).run().outputs.out_file == str(path)


@pytest.mark.slow
def test_flicker_and_map_reportlets(tmp_path):
    from prettier_bids.reports.reportlets import before_after_svg, map_svg

    thick = _image(tmp_path / "thick.nii.gz", shape=(24, 20, 6), zooms=(1.0, 1.0, 5.0))
    fine = _image(tmp_path / "fine.nii.gz", shape=(24, 20, 30), zooms=(1.0, 1.0, 1.0), seed=1)
    cmap = _image(tmp_path / "cmap.nii.gz", shape=(24, 20, 6), zooms=(1.0, 1.0, 5.0), dtype=np.float32, seed=2)
    outs = before_after_svg([thick, fine], fine, [tmp_path / "a.svg", tmp_path / "b.svg"], ["thick", "cubic"],
                            "SR")
    for out in outs:
        assert_flicker_svg(Path(out).read_text(), flicker=True)
    a, b = (Path(o).read_text().split('class="foreground-svg"') for o in outs)
    assert a[1] != b[1]  # different foregrounds over one background
    assert_flicker_svg(Path(map_svg(cmap, fine, tmp_path / "c.svg")).read_text(), flicker=False)


def test_report_spec_uses_the_io_spec_labels():
    from prettier_bids.reports.subject import REPORT_SPEC

    spec = yaml.safe_load(REPORT_SPEC.read_text())
    descs = {r["bids"]["desc"] for s in spec["sections"] for r in s["reportlets"] if "bids" in r}
    assert descs == {r["desc"] for r in load_io_spec()["reportlets"].values()}
    own = {r["settings"]["id"] for s in spec["sections"] for r in s["reportlets"] if "metadata" in r}
    assert {"methods", "errors"} <= own  # rendered (escaped) by reports/subject.py, not nireports' "custom" ones
    from prettier_bids.reports.subject import OWN_REPORTLETS

    assert {f"meta-{i}" for i in ("methods", "errors")} == set(OWN_REPORTLETS)


def _cand(tmp_path, contrast, spacing):
    rel = f"sub-01/anat/sub-01_{contrast}.nii.gz"
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_bytes(b"")
    return Candidate(path=tmp_path / rel, relpath=rel, contrast=contrast,
                     entities={"subject": "01", "suffix": contrast, "datatype": "anat", "extension": ".nii.gz"},
                     shape=(40, 36, 8), slice_axis=2, spacing=spacing, thickness=spacing, plane="axial")


def test_boilerplate_comes_from_the_workflow_descriptions(tmp_path, tiny_weights):
    from niworkflows.engine.workflows import LiterateWorkflow

    from prettier_bids.config import Config
    from prettier_bids.outputs import citation_text
    from prettier_bids.sr.reconstruct import LoadedModel, ModelSet
    from prettier_bids.workflows import init_main_wf
    from prettier_bids.workflows.base import boilerplate
    from prettier_bids.workflows.base import sr_description

    config = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", run_id="r", slice_profile="gaussian",
                    software_versions={"prettier_bids": "9.9.9", "nipype": "1.2.3"})
    model = LoadedModel(None, "tiny", str(tiny_weights), "0123456789abcdef")
    cands = {"01": [_cand(tmp_path, "FLAIR", 5.0), _cand(tmp_path, "T1w", 4.0)]}
    wf = init_main_wf(cands, config, ModelSet(model))
    assert isinstance(wf, LiterateWorkflow)
    subs = [n for n in wf._graph.nodes()]
    assert all(isinstance(s, LiterateWorkflow) for s in subs)
    text = boilerplate(cands, config, ModelSet(model))
    assert text.startswith(wf.__desc__)
    assert "*prettier_bids*\n9.9.9" in text and "*Nipype* 1.2.3" in text
    assert "(1 FLAIR, 1 T1w)" in text
    # the two images share one description (deduplicated by visit_desc)
    assert text.count(sr_description(config, model)) == 1 and "tiny, weights SHA-256 0123456789ab..." in text
    assert "slice profile (gaussian)" in text
    assert "from the network's output" in text and "projected onto the input" in text
    exact = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", run_id="r", precision="fp32")
    low = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", run_id="r", precision="bf16")
    assert "the network computing in 32-bit floating point," in boilerplate(cands, exact, ModelSet(model))
    assert "the network computing in bfloat16 (the cubic-spline base" in boilerplate(cands, low, ModelSet(model))
    raw = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", run_id="r", consistency_projection=False)
    assert "projected onto the input" not in boilerplate(cands, raw, ModelSet(model))
    # a model per contrast: each image's description names the weights of its own contrast
    flair = LoadedModel(None, "tiny-flair", str(tiny_weights), "fedcba9876543210")
    both = boilerplate({**cands, "02": [_cand(tmp_path, "FLAIR", 5.0)]}, config, ModelSet(model, {"FLAIR": flair}))
    assert both.count("Each FLAIR image was") == 1  # once, though two participants have FLAIRs
    assert "Each FLAIR image was super-resolved" in both and "tiny-flair, weights SHA-256 fedcba987654..." in both
    assert "Each image of a contrast other than FLAIR was super-resolved" in both
    assert "tiny, weights SHA-256 0123456789ab..." in both and "Each image was" not in both
    cubic = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", run_id="r", method="cubic")
    assert "interpolated with cubic splines" in boilerplate(cands, cubic)
    assert "PRETTIER approach" not in boilerplate(cands, cubic)
    assert "projected onto the input" not in boilerplate(cands, cubic)
    doc = citation_text(text)
    assert text.strip() in doc and "### References" in doc and "Lim B, Son S" in doc
