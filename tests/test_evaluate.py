"""evaluation/benchmark.py (the source of the model-card numbers) on tiny generated volumes with known answers."""

import numpy as np
import pytest
import torch

from prettier_bids.evaluation.benchmark import VolumeScore, brain_mask, evaluate_volume, headline, summarise
from prettier_bids.sr.metrics import psnr, psnr_from_mse
from prettier_bids.sr.models.common import CubicBase
from prettier_bids.sr.reconstruct import LoadedModel

EPS = 0.02


class ScaledCubic(torch.nn.Module):
    """A 'generator' whose output is the cubic base times (1 + EPS): its error is known in closed form."""

    def __init__(self, eps):
        super().__init__()
        self.cubic, self.eps = CubicBase(), eps

    def forward(self, x, factor):
        return self.cubic(x, factor) * (1 + self.eps)


def _ramp():
    """A linear ramp along the slice axis (z): boxcar slices of it are samples of the same line, and
    cubic interpolation reproduces a line away from the edges, so cubic is (nearly) exact there."""
    z = np.arange(60, dtype=np.float32)
    vol = np.broadcast_to(0.1 + 0.015 * z, (24, 20, 60)).copy()
    mask = np.zeros(vol.shape, bool)
    mask[:, :, 12:40] = True  # away from the edges, and below the clip at the input's maximum
    return vol, mask


@pytest.mark.parametrize("eps", [EPS, 2 * EPS])
def test_evaluate_volume_scores_a_known_error(eps):
    vol, mask = _ramp()
    model = LoadedModel(ScaledCubic(eps).eval(), "scaled-cubic", "", "")
    # the network's output as it is, in exact arithmetic (the error is known in closed form)
    scores, _ = evaluate_volume(vol, mask, "ramp", "T1w", model, settings=((6, 5.0), (4, 4.0)), axes=(2,),
                                project=False, precision="fp32", thickness_modes=("known",))
    assert [(s.method, s.spacing) for s in scores] == [("cubic", 6), ("model", 6), ("cubic", 4), ("model", 4)]
    assert all(s.thickness_given for s in scores)
    # the model's output is (1 + eps) x truth inside the mask: PSNR = -10 log10(eps^2 mean(truth^2))
    expected = psnr_from_mse(eps ** 2 * np.mean(vol[mask].astype(np.float64) ** 2))
    for s in scores:
        if s.method == "model":
            assert s.psnr == pytest.approx(expected, abs=0.01), s
            assert s.ssim < 1.0
        else:
            assert s.psnr > 60 and s.ssim > 0.9999, s  # cubic reproduces the line
        assert s.name == "ramp" and s.contrast == "T1w" and s.axis == 2
    # doubling the error costs 20 log10(2) = 6.02 dB
    if eps == 2 * EPS:
        assert expected == pytest.approx(psnr_from_mse(EPS ** 2 * np.mean(vol[mask] ** 2.0)) - 6.0206, abs=1e-3)
    # by default (as in production) the output is projected onto the input: the slab means of the scale
    # error are taken out, only the 1 mm gap rows at 6/5 mm keep theirs
    projected, _ = evaluate_volume(vol, mask, "ramp", "T1w", model, settings=((6, 5.0), (4, 4.0)), axes=(2,),
                                   precision="fp32", thickness_modes=("known",))
    for s, p in zip(scores, projected):
        if s.method == "model":
            assert p.psnr > s.psnr + 6 and p.consistency == s.consistency, (s, p)
        else:
            assert p.psnr == s.psnr


def test_summary_and_headline_are_means_of_the_scores():
    def score(method, p, s, spacing=6, axis=2, name="a"):
        return VolumeScore(name, "T1w", axis, spacing, 5.0, method, p, s, 40.0, 1.0)

    scores = [score("cubic", 30.0, 0.90), score("model", 33.0, 0.94),
              score("cubic", 28.0, 0.80, name="b"), score("model", 29.0, 0.84, name="b"),
              score("cubic", 35.0, 0.95, spacing=4), score("model", 36.5, 0.96, spacing=4)]
    table = summarise(scores)
    six = [r for r in table if r["spacing"] == 6]
    assert len(table) == 2 and len(six) == 1 and six[0]["n"] == 2
    assert six[0]["cubic_psnr"] == pytest.approx(29.0) and six[0]["model_psnr"] == pytest.approx(31.0)
    assert six[0]["gain_psnr"] == pytest.approx(2.0) and six[0]["gain_ssim"] == pytest.approx(0.04)
    head = headline(scores, spacing=6)
    assert head["T1w"]["gain_psnr"] == pytest.approx(2.0) and head["T1w"]["n"] == 2
    assert headline(scores, spacing=4)["T1w"]["gain_psnr"] == pytest.approx(1.5)
    assert headline(scores, spacing=3) == {}


def test_psnr_known_values_and_mask():
    ref = np.zeros((4, 4))
    pred = ref + 0.1  # mse 0.01 -> 20 dB
    assert psnr(pred, ref) == pytest.approx(20.0)
    pred[0, 0] = 1.0
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    assert psnr(pred, ref, mask) == pytest.approx(20.0)
    assert psnr(ref, ref) == float("inf") and psnr_from_mse(0.0, max_db=100.0) == 100.0
    assert psnr(pred * 255, ref, mask, data_range=255.0) == pytest.approx(20.0)


def test_brain_mask_of_a_skull_stripped_volume_fills_holes():
    x, y, z = np.mgrid[:32, :32, :32]
    ball = ((x - 16) ** 2 + (y - 16) ** 2 + (z - 16) ** 2) < 10 ** 2
    vol = ball * 0.8
    vol[14:18, 14:18, 14:18] = 0.0  # a dark 'ventricle' inside stays in the mask
    m = brain_mask(vol.astype(np.float32), skull_stripped=True)
    assert m[16, 16, 16] and m[ball].all() and not m[0, 0, 0]
    assert m.sum() == pytest.approx(ball.sum(), rel=0.02)


def test_prettier_eval_gives_each_contrast_its_default_model(tmp_path):
    """prettier-eval without --model/--weights: FLAIR volumes are scored with the FLAIR default, T1w with the
    default; results.json names both (and --model names one for all)."""
    import json

    import nibabel as nib
    from scipy import ndimage

    from prettier_bids.cli.evaluate import main
    from prettier_bids.sr.models import resolve_weights, sha256

    rng = np.random.default_rng(3)
    (tmp_path / "hr").mkdir()
    for c in ("FLAIR", "T1w"):
        v = ndimage.gaussian_filter(rng.random((40, 44, 48)), 2.0).astype(np.float32)
        v[:4], v[-4:] = 0, 0  # a background for the brain mask
        nib.save(nib.Nifti1Image(v * 1000, np.eye(4)), tmp_path / "hr" / f"x_{c}.nii.gz")
    split = {"test": {c: [{"file": f"hr/x_{c}.nii.gz", "skull_stripped": True}] for c in ("FLAIR", "T1w")}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    args = ["--data-root", str(tmp_path), "--split", str(tmp_path / "split.json"), "--axes", "2", "--settings", "6:5",
            "--no-patches", "--threads", "1"]
    assert main(args + ["--out-dir", str(tmp_path / "a")]) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    used = results["models"]
    # --thickness both (the default): a known and a hidden row per setting, a headline for each
    assert sorted(r["thickness_given"] for r in results["summary"]) == [False, False, True, True]
    assert set(results["headline"]) == set(results["headline_hidden"]) == {"FLAIR", "T1w"}
    hidden = [r for r in results["summary"] if not r["thickness_given"]]
    assert all("estimated_thickness" in r and 0 <= r["projected_fraction"] <= 1 for r in hidden)
    assert "| known |" in (tmp_path / "a" / "tables.md").read_text()
    assert "| hidden |" in (tmp_path / "a" / "tables.md").read_text()
    for c, name in (("FLAIR", "prettier-edsr-v3-flair"), ("T1w", "prettier-edsr-v3")):
        assert used[c] == {"name": name, "sha256": sha256(resolve_weights(name))}
    assert main(args + ["--model", "prettier-edsr-v3", "--out-dir", str(tmp_path / "b"), "--thickness", "known"]) == 0
    used = json.loads((tmp_path / "b" / "results.json").read_text())["models"]
    assert {m["name"] for m in used.values()} == {"prettier-edsr-v3"}


def _cli(main, argv, capsys):
    """Exit code (returned, or raised by argparse) and the non-empty stderr lines of an in-process CLI call."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


@pytest.mark.parametrize("args, code, text", [
    (["--settings", "abc"], 64, "argument --settings: 'abc' is not a spacing:thickness pair"),
    (["--settings", "5:abc"], 64, "thickness in '5:abc': 'abc' is not a number"),
    (["--settings", "0:0"], 64, "spacing '0' in '0:0' must be a whole number of mm from 2 to 8"),
    (["--settings", "6:0"], 64, "thickness in '6:0': 0 must be > 0.1"),
    (["--settings", "6:nan"], 64, "is not a finite number"),
    (["--axes", "7"], 64, "argument --axes: '7' is not a comma-separated list of axes 0, 1, 2"),
    (["--axes", "2,2"], 64, "names an axis twice"),
    (["--batch-size", "0"], 64, "argument --batch-size: 0 must be >= 1"),
    (["--split", "LIST"], 64, "must hold a JSON object with 'test', not a list"),
    (["--split", "NOTEST"], 64, "has no 'test' section"),
    (["--split", "MISSING"], 66, "cannot read --split"),
    (["--contrasts", "PD"], 64, "argument --contrasts: 'PD': not in the split's test contrasts (FLAIR, T1w)"),
    (["--out-dir", "FILE"], 64, "--out-dir FILE exists and is not a folder"),
])
def test_prettier_eval_bad_option_values_are_one_line_usage_errors(tmp_path, capsys, args, code, text):
    """Checked before any model or volume is loaded: one line, no traceback, nothing created."""
    import json

    from prettier_bids.cli.evaluate import main

    (tmp_path / "LIST").write_text(json.dumps([1, 2]))
    (tmp_path / "NOTEST").write_text(json.dumps({"train": []}))
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / a) if a in ("LIST", "NOTEST", "MISSING", "FILE") else a for a in args]
    got, lines = _cli(main, ["--data-root", tmp_path / "nodata", *args], capsys)
    assert got == code, lines
    assert len(lines) == 1 and lines[0].startswith("prettier-eval: error: ")
    assert text.replace("FILE", str(tmp_path / "FILE")) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "LIST", "NOTEST"]


def test_prettier_eval_lesions_shares_the_checks(capsys):
    from prettier_bids.cli.evaluate import main

    code, lines = _cli(main, ["lesions", "--data-root", "x", "--settings", "0:0"], capsys)
    assert code == 64 and len(lines) == 1 and "spacing '0' in '0:0' must be a whole number" in lines[0]
    code, lines = _cli(main, ["lesions", "--data-root", "x", "--threads", "-1"], capsys)
    assert code == 64 and len(lines) == 1 and "argument --threads: -1 must be >= 1" in lines[0]


def test_prettier_eval_unreadable_or_empty_test_volumes(tmp_path, capsys):
    """An empty (corrupt) test volume was an ImageFileError traceback (exit 1), in both benchmarks; a split whose
    test section names no file wrote an empty report with exit 0."""
    import json

    from prettier_bids.cli.evaluate import main

    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "x_FLAIR.nii.gz").write_bytes(b"")
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"test": {"FLAIR": [{"file": "hr/x_FLAIR.nii.gz", "skull_stripped": True}]}}))
    code, lines = _cli(main, ["--data-root", tmp_path, "--split", split, "--settings", "6:5", "--no-patches",
                              "--model", "prettier-edsr-v2"], capsys)
    lines = [ln for ln in lines if "prettier-eval" in ln]  # the INFO log lines are timestamped
    assert code == 66 and len(lines) == 1 and "cannot read test volume" in lines[0] and "Empty file" in lines[0]
    code, lines = _cli(main, ["lesions", "--data-root", tmp_path, "--case", "hr/x_FLAIR.nii.gz:hr/x_FLAIR.nii.gz",
                              "--models", "prettier-edsr-v2"], capsys)
    lines = [ln for ln in lines if "prettier-eval" in ln]
    assert code == 66 and len(lines) == 1 and "Empty file" in lines[0]
    split.write_text(json.dumps({"test": {"FLAIR": []}}))
    code, lines = _cli(main, ["--data-root", tmp_path, "--split", split, "--out-dir", tmp_path / "out"], capsys)
    assert code == 64 and lines == [f"prettier-eval: error: --split {split}: the 'test' section names no file"]
    assert not (tmp_path / "out").exists()


def test_spent_subjects_are_named_by_model_and_role():
    """The shipped subjects file: p19 chose v3-flair and trained nothing; p07 trained v2; p19 is a clean test
    of v2; a file without a subject id and a model the file does not list give nothing."""
    from prettier_bids.evaluation import spent

    files = ["hr/openms_p19_FLAIR.nii.gz", "hr/openms_p19_T1w.nii.gz", "hr/openms_p07_FLAIR.nii.gz", "x.nii.gz"]
    assert spent.spent("prettier-edsr-v3-flair", files) == [("p19", "chose"), ("p07", "trained")]
    assert spent.spent("prettier-edsr-v2", files) == [("p07", "trained")]
    assert spent.spent("my-own-weights", files) == []
    assert spent.subject_of("thick/openms_p12_study1_FLAIR.nii.gz", spent.model_subjects()["subject_pattern"]) == "p12"
    roles = spent.model_subjects()["models"]
    assert all(not ({*r["trained"], *r["chose"]} & set(r["tested"])) for r in roles.values())


def test_prettier_eval_warns_once_when_a_subject_trained_or_chose_the_model(tmp_path, caplog):
    """prettier-eval on a small synthetic FLAIR named as p19's: one warning line naming the subject, its role
    and the model (v3-flair, the FLAIR default, was chosen with p19); a subject of no role gets none."""
    import json
    import logging

    import nibabel as nib
    from scipy import ndimage

    from prettier_bids.cli.evaluate import main

    rng = np.random.default_rng(5)
    (tmp_path / "hr").mkdir()
    v = ndimage.gaussian_filter(rng.random((24, 28, 30)), 2.0).astype(np.float32)
    v[:3], v[-3:] = 0, 0
    for subject in ("p19", "p99"):
        nib.save(nib.Nifti1Image(v * 1000, np.eye(4)), tmp_path / "hr" / f"openms_{subject}_FLAIR.nii.gz")
    split = {"test": {"FLAIR": [{"file": f"hr/openms_{s}_FLAIR.nii.gz", "skull_stripped": True}
                                for s in ("p19", "p99")]}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    with caplog.at_level(logging.WARNING, logger="prettier_bids.eval"):
        assert main(["--data-root", str(tmp_path), "--split", str(tmp_path / "split.json"), "--axes", "2",
                     "--settings", "6:5", "--thickness", "known", "--no-patches", "--threads", "1"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["p19 chose prettier-edsr-v3-flair: not a clean test"]


def test_iqm_benchmark_scores_every_model_on_the_same_patches(tmp_path, capsys):
    """benchmarks/iqm.py (issue 28's IQM table): one row per contrast, setting and model, all on the same patch
    pairs: cubic's row is the same whichever models are listed, a network's row differs from cubic's, 'default'
    resolves to the contrast's default and is marked, and the spent-subject flag follows model_subjects.json."""
    import json

    import nibabel as nib
    from scipy import ndimage

    from _repo_scripts import load_script
    from prettier_bids.sr.models import default_model

    iqm = load_script("benchmarks/iqm.py")
    rng = np.random.default_rng(5)
    (tmp_path / "hr").mkdir()
    v = ndimage.gaussian_filter(rng.random((100, 100, 100)), 2.0).astype(np.float32)  # 16 x 96 patches at 6 mm
    nib.save(nib.Nifti1Image(v * 1000, np.eye(4)), tmp_path / "hr" / "openms_p19_FLAIR.nii.gz")
    split = {"test": {"FLAIR": [{"file": "hr/openms_p19_FLAIR.nii.gz", "skull_stripped": True}]}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    common = ["--data-root", str(tmp_path), "--split", str(tmp_path / "split.json"), "--contrasts", "FLAIR",
              "--patches", "2", "--threads", "1"]
    assert iqm.main(common + ["--models", "cubic,default,prettier-edsr-v1", "--settings", "6:5,3:3",
                              "--out-dir", str(tmp_path / "a")]) == 0
    rows = json.loads((tmp_path / "a" / "iqm.json").read_text())["rows"]
    assert [(r["spacing"], r["model"]) for r in rows] == [
        (s, m) for s in (6.0, 3.0) for m in ("cubic", default_model("FLAIR"), "prettier-edsr-v1")]
    assert [r["default"] for r in rows[:3]] == [False, True, False] and all(r["n"] == 2 for r in rows)
    assert all(abs(r["PSNR"] - rows[0]["PSNR"]) > 0.01 for r in rows[1:3])
    text = (tmp_path / "a" / "iqm.md").read_text()
    assert f"| FLAIR | 6 / 5 | {default_model('FLAIR')} (default) ¹ |" in text  # p19 chose the FLAIR default
    assert "| FLAIR | 6 / 5 | prettier-edsr-v1 | 2 |" in text  # p19 is a clean test of v1
    assert iqm.main(common + ["--models", "cubic", "--settings", "6:5", "--out-dir", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "iqm.json").read_text())["rows"]
    assert again[0]["PSNR"] == rows[0]["PSNR"]


def test_prettier_eval_volumes_too_small_for_the_patch_table_fail_first(tmp_path, capsys):
    """Test volumes too small for a Table 2 patch were scored in full, then the run ended with exit 1
    'unexpected PatchError' and no results; now exit 66 with one line before any scoring, and nothing is written."""
    import json

    import nibabel as nib

    from prettier_bids.cli.evaluate import main

    (tmp_path / "hr").mkdir()
    data = np.zeros((40, 40, 40), np.float32)
    data[8:32, 8:32, 8:32] = 1.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "hr" / "x_FLAIR.nii.gz"))
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"test": {"FLAIR": [{"file": "hr/x_FLAIR.nii.gz", "skull_stripped": True}]}}))
    code, lines = _cli(main, ["--data-root", tmp_path, "--split", split, "--settings", "6:5", "--axes", "2",
                              "--model", "prettier-edsr-v2", "--out-dir", tmp_path / "out"], capsys)
    assert code == 66, lines
    errors = [ln for ln in lines if ln.startswith("prettier-eval: error")]
    assert len(errors) == 1 and "40x40x40" in errors[0] and "--no-patches" in errors[0]
    assert not any("PSNR" in ln for ln in lines)  # failed before the volume scoring
    assert not (tmp_path / "out").exists()


def test_prettier_eval_lesions_models_hint_names_its_own_option(tmp_path, capsys):
    """``prettier-eval lesions --models X.md`` said 'pass a weights file with --weights', an option that
    sub-command does not have; now the one line says what --models takes."""
    from prettier_bids.cli.evaluate import main

    code, lines = _cli(main, ["lesions", "--data-root", tmp_path, "--case", "a.nii.gz:b.nii.gz",
                              "--models", "X.md", "--out-dir", tmp_path / "out"], capsys)
    lines = [ln for ln in lines if "prettier-eval" in ln]
    assert code == 66 and len(lines) == 1, lines
    assert "'X.md' is neither a shipped model" in lines[0] and "--weights" not in lines[0]
