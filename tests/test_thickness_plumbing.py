"""Issue 25, the plumbing: a slice thickness that is not given is estimated from the image by the SR core
(``sr.thickness.estimate_thickness``); a confident estimate is used, otherwise the thickness is assumed equal to
the spacing and the output is not projected onto the input. The sidecar, the log, the BIDS side (reruns,
summary, methods text) and prettier-eval say which; never as if measured. The estimator's algorithm is tested
elsewhere: here it is the stub (never confident) or a monkeypatched stand-in."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from prettier_bids.sr import reconstruct
from prettier_bids.sr.models import build_model
from prettier_bids.sr.reconstruct import LoadedModel, super_resolve
from prettier_bids.sr.thickness import ThicknessEstimate

ASSUMED = "assumed: equal to spacing"


def _image(spacing=6.0, shape=(24, 20, 8)):
    rng = np.random.default_rng(1)
    data = ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32) * 1000
    return nib.Nifti1Image(data, np.diag([1.0, 1.0, spacing, 1.0]))


@pytest.fixture(scope="module")
def model():
    import torch

    torch.manual_seed(0)
    return LoadedModel(build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)[0].eval(), "random", "", "")


def _confident(thickness, uncertainty=0.3, calls=None):
    def fake(data, zooms, axis):
        if calls is not None:
            calls.append((data.shape, tuple(float(z) for z in zooms), axis))
        return ThicknessEstimate(thickness=thickness, uncertainty=uncertainty, spacing=float(zooms[axis]),
                                 n_features=12, method="stand-in")
    return fake


def test_unknown_thickness_with_an_unconfident_estimate_is_assumed_and_not_projected(model, caplog):
    img = _image()
    with caplog.at_level(logging.INFO, logger="prettier_bids.sr"):
        res = super_resolve(img, model=model, batch_size=4, precision="fp32")
    info = res.info
    assert info["SliceThicknessSource"] == ASSUMED and info["SliceThickness"] == 6.0 and info["SliceGap"] == 0.0
    assert info["ProjectedOntoInput"] is False
    assert info["ProjectionSkipped"] == "slice thickness unknown and not estimated confidently"
    assert info["SliceThicknessEstimate"] == {"Method": "none", "Thickness": None, "Uncertainty": None, "Gap": None,
                                              "Features": 0, "Confident": False}  # no estimator is shipped
    assert info["ThicknessEstimationSeconds"] >= 0
    json.dumps(info, allow_nan=False)  # the estimate is valid JSON (no inf)
    log = caplog.text
    assert "thickness 6.00 mm (assumed equal to the spacing; not estimated confidently)" in log
    assert "projection onto the input skipped" in log
    # the output is the network's as it is: the same as with the projection turned off
    raw = super_resolve(img, model=model, batch_size=4, precision="fp32", project=False)
    np.testing.assert_array_equal(res.image.get_fdata(), raw.image.get_fdata())
    assert "ProjectionSkipped" not in raw.info  # not asked for, so not skipped
    # deterministic: the same input gives the same estimate
    again = super_resolve(img, model=model, batch_size=4, precision="fp32")
    assert again.info["SliceThicknessEstimate"] == info["SliceThicknessEstimate"]
    # the cubic baseline is never projected: nothing is skipped
    cubic = super_resolve(img, method="cubic").info
    assert cubic["SliceThicknessSource"] == ASSUMED and "ProjectionSkipped" not in cubic


def test_a_confident_estimate_is_used_and_projected_onto(model, monkeypatch, caplog):
    img = _image()
    calls, seen = [], []
    monkeypatch.setattr(reconstruct, "estimate_thickness", _confident(4.987, calls=calls))
    real = reconstruct.super_resolve_array

    def spy(*args, **kwargs):
        seen.append(kwargs["thickness_ratio"])
        return real(*args, **kwargs)

    monkeypatch.setattr(reconstruct, "super_resolve_array", spy)
    with caplog.at_level(logging.INFO, logger="prettier_bids.sr"):
        res = super_resolve(img, model=model, batch_size=4, precision="fp32")
    assert len(calls) == 1 and calls[0] == ((24, 20, 8), (1.0, 1.0, 6.0), 2)  # once, on the loaded input
    info = res.info
    assert (info["SliceThickness"], info["SliceThicknessSource"], info["SliceGap"]) == (4.99, "estimated", 1.01)
    assert info["ProjectedOntoInput"] is True and "ProjectionSkipped" not in info
    assert info["SliceThicknessEstimate"] == {"Method": "stand-in", "Thickness": 4.987, "Uncertainty": 0.3,
                                              "Gap": 1.013, "Features": 12, "Confident": True}
    assert "thickness 4.99 mm (estimated +/- 0.3)" in caplog.text
    assert seen == [pytest.approx(4.99 / 6.0)]  # a conditioned model is told the thickness that is used
    # the same output as with that thickness given: the projection ran on the estimated profile
    monkeypatch.setattr(reconstruct, "estimate_thickness", None)  # a given thickness never calls it
    given = super_resolve(img, model=model, batch_size=4, precision="fp32", slice_thickness=4.99,
                          thickness_source="option")
    np.testing.assert_array_equal(res.image.get_fdata(), given.image.get_fdata())
    assert given.info["SliceThicknessSource"] == "option" and "SliceThicknessEstimate" not in given.info
    assert "ThicknessEstimationSeconds" not in given.info


def test_a_confident_estimate_is_clamped_to_the_plausible_range(monkeypatch):
    img = _image()
    monkeypatch.setattr(reconstruct, "estimate_thickness", _confident(40.0))
    info = super_resolve(img, method="cubic").info
    assert info["SliceThickness"] == 15.0 and info["SliceThicknessEstimate"]["Thickness"] == 40.0  # 2.5 x 6 mm
    monkeypatch.setattr(reconstruct, "estimate_thickness", _confident(0.1))
    assert super_resolve(img, method="cubic").info["SliceThickness"] == 1.2  # 0.2 x 6 mm


def test_a_given_thickness_wins_and_the_estimator_is_not_called(model, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise AssertionError("the estimator ran for a given thickness")

    monkeypatch.setattr(reconstruct, "estimate_thickness", refuse)
    with caplog.at_level(logging.INFO, logger="prettier_bids.sr"):
        res = super_resolve(_image(), model=model, batch_size=4, precision="fp32", slice_thickness=5.0,
                            thickness_source="sidecar")
    assert (res.info["SliceThickness"], res.info["SliceThicknessSource"]) == (5.0, "sidecar")
    assert res.info["ProjectedOntoInput"] is True and "ProjectionSkipped" not in res.info
    assert "thickness 5.00 mm (given: sidecar)" in caplog.text


def test_prettier_sr_slice_thickness_auto_or_a_number(thick_nifti, tmp_path, capsys, caplog):
    from prettier_bids.cli.sr import main

    meta = tmp_path / "o.json"
    for extra in ([], ["--slice-thickness", "auto"]):
        assert main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method", "cubic", "--json", str(meta)]
                    + extra) == 0
        info = json.loads(meta.read_text())
        assert info["SliceThicknessSource"] == ASSUMED and info["SliceThickness"] == 5.0
        assert "(assumed equal to the spacing; not estimated confidently)" in caplog.text
        caplog.clear()
    assert main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method", "cubic", "--json", str(meta),
                 "--slice-thickness", "4"]) == 0
    info = json.loads(meta.read_text())
    assert (info["SliceThickness"], info["SliceThicknessSource"], info["SliceGap"]) == (4.0, "option", 1.0)
    assert "(given: option)" in caplog.text
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(thick_nifti), str(tmp_path / "x.nii.gz"), "--slice-thickness", "autox"])
    assert exc.value.code == 64 and "argument --slice-thickness" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# BIDS side: selection, reruns, methods text
# --------------------------------------------------------------------------------------------

def _inspected(tmp_path, sidecar):
    from prettier_bids.bids import Candidate, inspect_candidate

    rel = "sub-01/anat/sub-01_FLAIR.nii.gz"
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    nib.save(_image(5.0, (24, 20, 8)), tmp_path / rel)
    cand = Candidate(path=tmp_path / rel, relpath=rel, contrast="FLAIR",
                     entities={"subject": "01", "suffix": "FLAIR", "datatype": "anat", "extension": ".nii.gz"},
                     metadata=sidecar)
    return inspect_candidate(cand)


def test_selection_gives_only_a_plausible_sidecar_thickness(tmp_path):
    from prettier_bids.bids import summarize

    given = _inspected(tmp_path, {"SliceThickness": 4})
    assert (given.thickness, given.thickness_source) == (4.0, "sidecar")
    assert "thickness 4 mm (sidecar)]" in summarize([given])
    for sidecar, warned in (({}, False), ({"SliceThickness": "5 mm"}, True), ({"SliceThickness": 40}, True)):
        cand = _inspected(tmp_path, sidecar)
        assert cand.status == "selected" and cand.thickness is None and cand.thickness_source == ""
        assert bool(cand.warnings) == warned
        line = summarize([cand])
        assert "thickness unknown: estimated from the image, else assumed equal to the spacing]" in line
        assert "thickness 5 mm" not in line


def _marker(tmp_path, **meta):
    import prettier_bids.outputs as po

    cand = _inspected(tmp_path, {})
    exp = po.expected_outputs(cand, tmp_path / "out", "cubic", reportlets=False)
    for path in exp.all_files():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    exp.marker.write_text(json.dumps({"Sources": [cand.source_uri], **meta}))
    return exp, cand


@pytest.mark.parametrize("stored, given, done", [
    ({"SliceThickness": 5.0, "SliceThicknessSource": ASSUMED}, None, True),
    ({"SliceThickness": 4.6, "SliceThicknessSource": "estimated"}, None, True),
    ({"SliceThickness": 4.6, "SliceThicknessSource": "estimated"}, 4.6, False),  # a sidecar value added
    ({"SliceThickness": 5.0, "SliceThicknessSource": ASSUMED}, 4.0, False),
    ({"SliceThickness": 4.0, "SliceThicknessSource": "sidecar"}, 4.0, True),
    ({"SliceThickness": 4.0, "SliceThicknessSource": "sidecar SliceThickness"}, 4.0, True),  # older name
    ({"SliceThickness": 4.0, "SliceThicknessSource": "sidecar"}, 3.0, False),
    ({"SliceThickness": 4.0, "SliceThicknessSource": "sidecar"}, None, False),  # the sidecar value removed
    # older outputs projected onto an assumed profile
    ({"SliceThickness": 5.0, "SliceThicknessSource": "header (no SliceThickness in the sidecar)"}, None, False),
])
def test_reruns_follow_where_the_thickness_came_from(tmp_path, stored, given, done):
    import prettier_bids.outputs as po

    exp, cand = _marker(tmp_path, **stored)
    if given is not None:
        cand.thickness, cand.thickness_source = given, "sidecar"
    ok, why = po.completion(exp, cand.source_uri, cand=cand)
    assert ok is done, why
    assert done or "SliceThickness" in why


def test_a_skipped_projection_counts_as_made_with_the_projection_on(tmp_path):
    import prettier_bids.outputs as po

    exp, cand = _marker(tmp_path, SliceThickness=5.0, SliceThicknessSource=ASSUMED, ProjectedOntoInput=False,
                        ProjectionSkipped="slice thickness unknown and not estimated confidently")
    assert po.completion(exp, cand.source_uri, projected=True, cand=cand) == (True, "")
    assert po.completion(exp, cand.source_uri, projected=False, cand=cand)[0] is False


def _output(root, sub, contrast, **meta):
    folder = root / f"sub-{sub}" / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"sub-{sub}_desc-prettier_{contrast}.nii.gz").write_bytes(b"")
    base = {"Sources": [f"bids:raw:sub-{sub}/anat/sub-{sub}_{contrast}.nii.gz"], "Method": "model",
            "Model": "tiny", "ModelWeightsSHA256": "ab" * 32, "SliceProfile": "boxcar", "OutputGrid": "native",
            "Precision": "fp32"}
    (folder / f"sub-{sub}_desc-prettier_{contrast}.json").write_text(json.dumps({**base, **meta}))


def test_methods_text_says_where_each_thickness_came_from(tmp_path):
    from prettier_bids.outputs import dataset_methods

    _output(tmp_path, "01", "FLAIR", SliceThickness=4.0, SliceThicknessSource="sidecar", ProjectedOntoInput=True)
    _output(tmp_path, "02", "FLAIR", SliceThickness=4.95, SliceThicknessSource="estimated", ProjectedOntoInput=True,
            SliceThicknessEstimate={"Method": "stand-in", "Thickness": 4.951, "Uncertainty": 0.3, "Gap": 1.049,
                                    "Features": 9,
                                    "Confident": True})
    _output(tmp_path, "03", "FLAIR", SliceThickness=6.0, SliceThicknessSource=ASSUMED, ProjectedOntoInput=False,
            ProjectionSkipped="slice thickness unknown and not estimated confidently",
            SliceThicknessEstimate={"Method": "none", "Thickness": None, "Uncertainty": None, "Gap": None,
                                    "Features": 0,
                                    "Confident": False})
    text = dataset_methods(tmp_path)
    assert "measured" not in text.replace("the scanner\nmeasured", "")  # never phrased as measured
    assert "The slice thickness was the one given by the BIDS sidecar's SliceThickness." in text
    assert "estimated from the image itself (4.95 ± 0.30 mm;" in text
    assert ("assumed equal to the slice spacing and the projection onto the input was skipped, since the slice "
            "profile was unknown.") in text
    assert text.count("One FLAIR image was super-resolved") == 3  # three groups: one per thickness origin


def test_the_workflow_boilerplate_states_the_rule():
    from prettier_bids.outputs import thickness_sentence

    rule = thickness_sentence("rule", skipped=True)
    assert "BIDS sidecar (SliceThickness) where given" in rule and "estimated from the image" in rule
    assert "the projection onto the input was skipped" in rule
    assert "skipped" not in thickness_sentence("rule", skipped=False)


# --------------------------------------------------------------------------------------------
# prettier-eval: the thickness known to the pipeline, or hidden from it
# --------------------------------------------------------------------------------------------

def test_prettier_eval_scores_known_and_hidden_thickness(model):
    from prettier_bids.evaluation.benchmark import SETTINGS, evaluate_volume, markdown_volume_table, summarise

    assert SETTINGS == ((3, 3.0), (6, 5.0), (5, 4.0), (4, 3.0), (4, 2.0))
    z = np.arange(60, dtype=np.float32)
    vol = np.broadcast_to(0.1 + 0.015 * z, (24, 20, 60)).copy()
    mask = np.zeros(vol.shape, bool)
    mask[:, :, 12:40] = True
    scores, _ = evaluate_volume(vol, mask, "ramp", "T1w", model, settings=((6, 5.0),), axes=(2,), batch_size=8,
                                precision="fp32")
    assert [(s.method, s.thickness_given) for s in scores] == [("cubic", True), ("model", True), ("cubic", False),
                                                                ("model", False)]
    assert scores[0].psnr == scores[2].psnr  # the cubic baseline ran once
    known, hidden = scores[1], scores[3]
    assert known.projected is True and known.estimated_thickness is None
    assert hidden.projected is False and hidden.estimated_thickness is None  # no estimator is shipped
    table = summarise(scores)
    assert [r["thickness_given"] for r in table] == [True, False]
    assert table[1]["projected_fraction"] == 0.0 and table[1]["estimated_thickness"] is None
    md = markdown_volume_table(table)
    assert "| 6 / 5 | known |" in md and "| 6 / 5 | hidden |" in md and "| n/a | 0% |" in md
    only, _ = evaluate_volume(vol, mask, "ramp", "T1w", model, settings=((6, 5.0),), axes=(2,), batch_size=8,
                              precision="fp32", thickness_modes=("hidden",))
    assert [(s.method, s.thickness_given) for s in only] == [("cubic", False), ("model", False)]


def test_prettier_eval_default_settings_are_the_evaluations():
    from prettier_bids.cli.eval_options import DEFAULT_SETTINGS, settings_list
    from prettier_bids.cli.evaluate import build_parser
    from prettier_bids.evaluation.benchmark import SETTINGS

    assert settings_list(DEFAULT_SETTINGS) == tuple((float(s), t) for s, t in SETTINGS)
    args = build_parser().parse_args(["--data-root", "x"])
    assert args.thickness == "both" and args.settings == settings_list(DEFAULT_SETTINGS)
    assert build_parser().parse_args(["--data-root", "x", "--thickness", "hidden"]).thickness == "hidden"


def test_interface_passes_the_source_and_the_workflow_leaves_it_to_the_core(tmp_path):
    from nipype.interfaces.base import isdefined

    from prettier_bids.config import Config
    from prettier_bids.workflows.base import init_image_wf

    cand = _inspected(tmp_path, {})
    config = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", run_id="r", method="cubic")
    wf = init_image_wf(cand, config)
    node = wf.get_node("cubic")
    assert not isdefined(node.inputs.slice_thickness)
    assert "SliceThicknessSource" not in wf.get_node("sr_derivatives_wf.ds_cubic").inputs.meta_dict
    given = _inspected(tmp_path, {"SliceThickness": 4})
    node = init_image_wf(given, config).get_node("cubic")
    assert (node.inputs.slice_thickness, node.inputs.thickness_source) == (4.0, "sidecar")


def test_prettier_eval_lesions_runs_each_model_known_and_hidden(model):
    from prettier_bids.cli.eval_lesions import HIDDEN_LABEL, build_parser, evaluate_case

    rng = np.random.default_rng(3)
    vol = ndimage.gaussian_filter(rng.random((24, 20, 48)), 2).astype(np.float32)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    lesions = np.zeros(vol.shape, bool)
    lesions[10:14, 8:12, 20:26] = True
    vol[lesions] = 1.0
    brain = np.ones(vol.shape, bool)
    rows = evaluate_case(vol, lesions, brain, {"tiny": model}, (2,), ((6, 5.0),), 8, name="blob", precision="fp32",
                         thickness_modes=("known", "hidden"))
    assert [r["method"] for r in rows] == ["truth (1 mm)", "cubic", "tiny", HIDDEN_LABEL.format("tiny")]
    assert HIDDEN_LABEL.format("tiny") == "tiny (thickness hidden)"
    assert build_parser().parse_args(["--data-root", "d"]).thickness == "both"


def test_the_estimate_is_confident_only_when_measured_and_precise():
    from prettier_bids.sr.thickness import CONFIDENT_UNCERTAINTY_MM, NO_ESTIMATOR, estimate_thickness

    none = estimate_thickness(np.ones((20, 20, 8), np.float32), (1.0, 1.0, 5.0), 2)
    assert none.method == NO_ESTIMATOR == "none" and not none.confident and none.spacing == 5.0
    assert json.loads(json.dumps(none.as_info(), allow_nan=False))["Thickness"] is None
    edge = ThicknessEstimate(4.0, CONFIDENT_UNCERTAINTY_MM, 5.0, 100, "stand-in")
    assert edge.confident and edge.gap == 1.0 and edge.as_info()["Gap"] == 1.0
    assert not ThicknessEstimate(4.0, CONFIDENT_UNCERTAINTY_MM + 0.01, 5.0, 100, "stand-in").confident
    assert not ThicknessEstimate(float("nan"), 0.1, 5.0, 100, "stand-in").confident  # no thickness, no confidence


def test_a_conditioned_model_is_told_the_typical_ratio_when_the_thickness_is_assumed(monkeypatch):
    import torch

    torch.manual_seed(0)
    net = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8, conditioning=True)[0].eval()
    cond = LoadedModel(net, "conditioned", "", "")
    seen = []
    real = reconstruct.super_resolve_array

    def spy(*args, **kwargs):
        seen.append(kwargs["thickness_ratio"])
        return real(*args, **kwargs)

    monkeypatch.setattr(reconstruct, "super_resolve_array", spy)
    img = _image()
    assumed = super_resolve(img, model=cond, batch_size=4, precision="fp32").info
    given = super_resolve(img, model=cond, batch_size=4, precision="fp32", slice_thickness=6.0).info
    assert seen == [reconstruct.ASSUMED_CONDITIONING_RATIO, 1.0] and reconstruct.ASSUMED_CONDITIONING_RATIO == 0.7
    assert assumed["SliceThickness"] == 6.0 and assumed["SliceThicknessSource"] == ASSUMED
    assert assumed["Conditioning"] == {"PlaneSpacing": 1.0, "ThicknessRatio": 0.7, "Assumed": True}
    assert given["Conditioning"] == {"PlaneSpacing": 1.0, "ThicknessRatio": 1.0}
