"""The fourth adversarial round (2026-12-06): inputs no output may replace (both files of a NIfTI pair, a weights
file, a run's starting weights), inputs named like temporaries, truthful headers (units, orientation codes,
intent, slice timing), training configs and data refused before any work, a diverged training run, and
prettier-eval writing nothing until it has succeeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _fault_support import brain, one_error, run_sr, sha
from prettier_bids.training.config import ConfigError, load_config

AFF = np.diag([0.9, 0.9, 5.0, 1.0])


def _pair(tmp_path):
    nib.Nifti1Pair(brain(), AFF).to_filename(str(tmp_path / "in.img"))
    return tmp_path / "in.hdr", tmp_path / "in.img"


def test_no_output_replaces_the_data_file_of_a_nifti_pair(tmp_path, capsys):
    """`prettier-sr in.hdr out.nii.gz --json in.img` replaced the pair's voxel data with JSON and exited 0."""
    hdr, img = _pair(tmp_path)
    before = sha(img), sha(hdr)
    rc, lines = run_sr(capsys, hdr, tmp_path / "o.nii.gz", "--method", "cubic", "-q", "--json", img)
    assert rc == 64 and f"--json {img} is the input file {img}" in one_error(lines)
    assert (sha(img), sha(hdr)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.hdr", "in.img"]


def test_consistency_map_must_be_a_nifti_name(tmp_path, capsys, thick_nifti):
    """`--consistency-map cmap` failed after the computation (exit 1); `c.img` left a header-less file."""
    for name in ("cmap", "c.img", "c.mgz"):
        rc, lines = run_sr(capsys, thick_nifti, tmp_path / "o.nii.gz", "--method", "cubic", "-q",
                           "--consistency-map", tmp_path / name)
        assert rc == 64 and "--consistency-map must be a file name ending in .nii or .nii.gz" in one_error(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thick.nii.gz"]


@pytest.mark.parametrize("option", ["--json", "output"])
def test_no_output_replaces_the_weights_file(tmp_path, capsys, thick_nifti, tiny_weights, option):
    weights = tmp_path / "w.pt"
    shutil.copyfile(tiny_weights, weights)
    before = sha(weights)
    out = tmp_path / "o.nii.gz"
    extra = ["--json", weights] if option == "--json" else []
    if option == "output":  # a weights file given a NIfTI name
        weights = weights.rename(tmp_path / "w.nii.gz")
        out = weights
    rc, lines = run_sr(capsys, thick_nifti, out, "--weights", weights, "-q", *extra)
    assert rc == 64 and "is the input file" in one_error(lines)
    assert sha(weights) == before


def test_an_input_named_like_a_temporary_is_never_removed(tmp_path, capsys, thick_nifti):
    """The stale-temporary cleaner deleted an input called `.out.nii.gz.999999.tmp.nii.gz` (a dead PID)."""
    inp = tmp_path / ".o.nii.gz.999999.tmp.nii.gz"
    shutil.copyfile(thick_nifti, inp)
    before = sha(inp)
    rc, _ = run_sr(capsys, inp, tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 0 and sha(inp) == before


def test_model_takes_a_shipped_name_never_a_path(tmp_path, capsys, thick_nifti, tiny_weights):
    shutil.copyfile(tiny_weights, tmp_path / "x.pt")
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / "o.nii.gz", "--model", tmp_path / "x", "-q")
    assert rc == 66 and "is not a shipped model name" in one_error(lines)
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_newline_in_a_file_name_stays_one_error_line(tmp_path, capsys):
    inp = tmp_path / "a\nb.nii.gz"
    rc, lines = run_sr(capsys, inp, tmp_path / "o.nii.gz", "-q")
    assert rc == 66 and "a\\nb.nii.gz" in one_error(lines)


def _save(tmp_path, name, data, affine, units=None, codes=None, **fields):
    img = nib.Nifti1Image(data, affine)
    if units:
        img.header.set_xyzt_units(*units)
    if codes:
        img.set_qform(affine, code=codes[0])
        img.set_sform(affine, code=codes[1])
    for key, value in fields.items():
        img.header[key] = value
    path = tmp_path / name
    nib.save(img, path)
    return path


def test_a_header_in_meters_is_read_in_millimetres(tmp_path, capsys):
    """A spec-valid input in meters was refused as 0.0009 mm voxels; one in microns was relabelled mm as it was."""
    aff = np.diag([0.0009, 0.0009, 0.005, 1.0])
    aff[:3, 3] = [-0.01, -0.02, 0.03]
    inp = _save(tmp_path, "m.nii.gz", brain(), aff, units=("meter", "sec"))
    rc, lines = run_sr(capsys, inp, tmp_path / "o.nii.gz", "--method", "cubic", "--json", tmp_path / "o.json")
    assert rc == 0
    out = nib.load(tmp_path / "o.nii.gz")
    assert out.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(out.header.get_zooms(), (0.9, 0.9, 1.0), atol=1e-4)
    inp_mm = np.diag([0.9, 0.9, 5.0, 1.0])
    inp_mm[:3, 3] = [-10, -20, 30]
    centre_in = (inp_mm @ [(24 - 1) / 2, (20 - 1) / 2, (6 - 1) / 2, 1])[:3]
    centre_out = (out.affine @ np.r_[(np.array(out.shape) - 1) / 2, 1])[:3]
    assert np.allclose(centre_in, centre_out, atol=1e-3)  # the same field of view, in mm
    side = json.loads((tmp_path / "o.json").read_text())
    assert any("spatial unit is meter" in w for w in side["HeaderWarnings"])
    # micron pixdims of 0.9 are 0.0009 mm: refused with the unit's reading, not relabelled as mm
    inp = _save(tmp_path, "u.nii.gz", brain(), AFF, units=("micron", "sec"))
    rc, lines = run_sr(capsys, inp, tmp_path / "u_o.nii.gz", "--method", "cubic", "-q")
    assert rc == 65 and "0.0009 mm" in one_error(lines)


def test_output_keeps_the_orientation_codes_and_drops_intent_and_slice_timing(tmp_path, capsys):
    inp = _save(tmp_path, "q.nii.gz", brain(), AFF, units=("mm", "msec"), codes=(2, 0), slice_code=1,
                slice_end=5, slice_duration=0.1)
    rc, _ = run_sr(capsys, inp, tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 0
    h = nib.load(tmp_path / "o.nii.gz").header
    assert (int(h["qform_code"]), int(h["sform_code"])) == (2, 2)  # aligned stays aligned, not "scanner"
    assert h.get_xyzt_units() == ("mm", "msec")
    assert int(h["slice_code"]) == 0 and int(h["slice_end"]) == 0 and float(h["slice_duration"]) == 0
    # orientation unknown (both codes 0): the output does not claim one
    img = nib.Nifti1Image(brain(), None)
    img.header.set_zooms((0.9, 0.9, 5.0))
    nib.save(img, tmp_path / "n.nii.gz")
    rc, _ = run_sr(capsys, tmp_path / "n.nii.gz", tmp_path / "n_o.nii.gz", "--method", "cubic", "-q")
    h = nib.load(tmp_path / "n_o.nii.gz").header
    assert rc == 0 and (int(h["qform_code"]), int(h["sform_code"])) == (0, 0)


def test_a_label_map_is_refused(tmp_path, capsys):
    img = nib.Nifti1Image(np.rint(brain() / 300).astype(np.int16), AFF)
    img.header.set_intent("label")
    nib.save(img, tmp_path / "l.nii.gz")
    rc, lines = run_sr(capsys, tmp_path / "l.nii.gz", tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 65 and "label map" in one_error(lines)
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("data, text", [
    ({"degradation": {"gaps": 5}}, "config.degradation.gaps must be a non-empty list"),
    ({"degradation": {"gaps": [40]}}, "config.degradation.gaps must be a non-empty list"),
    ({"degradation_stages": [{"from_step": None}]}, "from_step must be a whole number"),
    ({"scheduler": {"name": "bogus"}}, "config.scheduler.name 'bogus' is not one of"),
    ({"model": {"preset": "bogus"}}, "config.model.preset 'bogus' is not one of"),
    ({"degradation": {"spacing_probs": {"9": 1}}}, "slice spacing(s) [9] not supported"),
    ({"degradation": {"spacing_probs": {"6": 0}}}, "not all 0"),
    ({"degradation": {"spacing_probs": {"6": -1}}}, "0 or more"),
    ({"degradation": {"gaussian_prob": 5}}, "gaussian_prob must be a number from 0 to 1"),
    ({"precision": "fp16"}, "config.precision 'fp16' is not one of fp32, bf16"),
])
def test_config_values_are_checked_when_read(data, text):
    """These were exit 1 tracebacks after the data had loaded, or ran to exit 0 (fp16, a gap of 40 mm)."""
    with pytest.raises(ConfigError) as err:
        load_config(None, data)
    assert text in str(err.value)


def _train_case(tmp_path, nan=False):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for name in ("a", "v"):
        d = (ndimage.gaussian_filter(rng.random((40, 40, 40)), 2) * 1000).astype(np.float32)
        if nan and name == "a":
            d[5:9, 5:9, 5:9] = np.nan
        nib.save(nib.Nifti1Image(d, np.eye(4)), tmp_path / f"{name}.nii.gz")
    (tmp_path / "s.json").write_text(json.dumps({"train": ["a.nii.gz"], "validation": ["v.nii.gz"]}))
    cfg = {"model": {"preset": "edsr-compact", "n_blocks": 1, "n_feats": 8, "tail_feats": 8}, "batch_size": 2,
           "steps": 2, "patch": {"lr_rows": 4, "width": 16}, "val": {"every": 2, "batches": 1, "batch_size": 2},
           "log_every": 1}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    return ["--config", str(tmp_path / "c.json"), "--data-root", str(tmp_path), "--split", str(tmp_path / "s.json"),
            "--threads", "1"]


def _train(capsys, args):
    from prettier_bids.cli.train import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ": error:" in ln]
    assert "Traceback" not in captured.err
    return code, errors, captured.out


def test_training_refuses_nan_volumes_and_its_own_starting_weights(tmp_path, capsys):
    args = _train_case(tmp_path, nan=True)
    code, errors, _ = _train(capsys, args + ["--out", str(tmp_path / "run0")])
    assert code == 66 and "image contains NaN or infinite values" in errors[0]
    assert not (tmp_path / "run0" / "last.pt").exists()
    args = _train_case(tmp_path)
    code, _, out = _train(capsys, args + ["--out", str(tmp_path / "run")])
    assert code == 0 and json.loads(out)["step"] == 2
    before = sha(tmp_path / "run" / "best.pt")
    code, errors, _ = _train(capsys, args + ["--out", str(tmp_path / "run"), "--no-resume", "--init-weights",
                                             str(tmp_path / "run" / "best.pt")])
    assert code == 64 and "is the input file" in errors[0]
    assert sha(tmp_path / "run" / "best.pt") == before
    code, errors, _ = _train(capsys, args + ["--out", str(tmp_path / "r2"), "--device", "tpu"])
    assert code == 64 and "unknown device 'tpu'" in errors[0]


def test_a_diverged_run_stops_without_saving(tmp_path, capsys):
    """lr 1e30: the loss became NaN; the run exited 0 with NaN weights and `validation ... gain +104.50 dB`."""
    args = _train_case(tmp_path)
    cfg = json.loads((tmp_path / "c.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**cfg, "lr": 1e30}))
    code, errors, _ = _train(capsys, args + ["--out", str(tmp_path / "run")])
    assert code == 1 and "training diverged at step" in errors[0]
    assert not any((tmp_path / "run" / n).exists() for n in ("best.pt", "last.pt", "checkpoint.pt"))


def test_prettier_eval_writes_nothing_when_a_later_test_volume_is_bad(tmp_path, capsys, tiny_weights):
    from prettier_bids.cli.evaluate import main

    from scipy import ndimage

    d = (ndimage.gaussian_filter(np.random.default_rng(0).random((40, 40, 40)), 2) * 1000).astype(np.float32)
    nib.save(nib.Nifti1Image(d, np.eye(4)), tmp_path / "good.nii.gz")
    bad = d.copy()
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(d[:, :, 0], np.eye(4)), tmp_path / "flat.nii.gz")
    for second in ("nan.nii.gz", "flat.nii.gz"):
        split = {"test": {"T1w": [{"file": "good.nii.gz", "skull_stripped": True},
                                  {"file": second, "skull_stripped": True}]}}
        (tmp_path / "split.json").write_text(json.dumps(split))
        out = tmp_path / f"out_{second}"
        try:
            code = main(["--data-root", str(tmp_path), "--split", str(tmp_path / "split.json"), "--weights",
                         str(tiny_weights), "--settings", "6:5", "--axes", "2", "--no-patches", "--out-dir", str(out)])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert code == 66 and f"cannot read test volume {tmp_path / second}" in err
        assert not out.exists() or not any(Path(out).iterdir())


def test_json_dash_writes_the_sidecar_on_stdout(tmp_path, capsys, thick_nifti):
    from prettier_bids.cli.sr import main

    rc = main([str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method", "cubic", "-q", "--json", "-"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["Method"] == "cubic"
    assert not (Path.cwd() / "-").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["o.nii.gz",
                                                                                               "thick.nii.gz"]


def test_a_closed_stderr_pipe_does_not_stop_the_run(tmp_path, thick_nifti):
    """`prettier-sr ... 2>&1 | head -0`: a BrokenPipeError in a progress line aborted the run (exit 1, no output)."""
    import subprocess
    import sys

    code = "import sys; from prettier_bids.cli.entry import prettier_sr; sys.exit(prettier_sr())"
    p = subprocess.Popen([sys.executable, "-c", code, str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method",
                          "cubic"], stderr=subprocess.PIPE)
    p.stderr.close()  # the reader is gone before the first line
    assert p.wait(timeout=300) == 0
    assert nib.load(tmp_path / "o.nii.gz").shape[2] > 8


@pytest.mark.parametrize("value, warned, how", [
    ("0", True, "script"), ("-2", True, "script"), ("two", True, "script"), ("99999999999999999999", True, "script"),
    ("0", True, "module"), ("2", False, "script"), ("4,2", False, "module"), ("04", False, "script")])
def test_an_omp_thread_count_openmp_refuses_is_one_warning(tmp_path, thick_nifti, value, warned, how):
    """OMP_NUM_THREADS=0 (or a count that overflows) printed libgomp's own unprefixed "Invalid value for
    environment variable" line, from the console scripts and from ``python -m prettier_bids.cli.sr``."""
    import os
    import subprocess
    import sys

    code = "import sys; from prettier_bids.cli.entry import prettier_sr; sys.exit(prettier_sr())"
    start = [sys.executable, "-c", code] if how == "script" else [sys.executable, "-m", "prettier_bids.cli.sr"]
    proc = subprocess.run([*start, str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method", "cubic"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": value})
    assert proc.returncode == 0, proc.stderr
    assert "libgomp" not in proc.stderr
    line = f"warning: OMP_NUM_THREADS={value!r} is not a number of threads from 1 to 65536; ignored"
    assert (line in proc.stderr) is warned, proc.stderr
    assert proc.stderr.count("OMP_NUM_THREADS") == int(warned)


@pytest.mark.parametrize("name, value, warned", [
    ("GOMP_CPU_AFFINITY", "abc", True), ("OMP_PROC_BIND", "bogus", True), ("OMP_STACKSIZE", "1k", True),
    ("OMP_WAIT_POLICY", "x", True), ("OMP_PLACES", "x", True), ("GOMP_SPINCOUNT", "x", True),
    ("GOMP_CPU_AFFINITY", "0", False), ("OMP_PROC_BIND", "close", False), ("OMP_STACKSIZE", "2M", False),
    ("GOMP_CPU_AFFINITY", "4096", True), ("OMP_PROC_BIND", "true,close", True), ("OMP_STACKSIZE", "+64M", False)])
def test_other_openmp_settings_openmp_refuses_are_one_warning(tmp_path, thick_nifti, name, value, warned):
    """OMP_PROC_BIND=bogus and the like printed libgomp's unprefixed lines; GOMP_CPU_AFFINITY=abc made the import of
    torch spin for ever, deaf to SIGTERM (deferred during that import) (helper-26); a CPU this process may not use
    made libgomp fail with "Thread creation failed" (helper-27)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "prettier_bids.cli.sr", str(thick_nifti), str(tmp_path / "o.nii.gz"),
                           "--method", "cubic", "-q"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, name: value})
    assert proc.returncode == 0 and "libgomp" not in proc.stderr, proc.stderr
    assert (f"warning: {name}={value!r} is not " in proc.stderr) is warned, proc.stderr


@pytest.mark.parametrize("kind", ["float64", "int32", "uint64"])
def test_values_float32_cannot_resolve_are_refused(tmp_path, capsys, kind):
    """1e9 + 0..120 (float64) came out as 3 levels, 2**60 + 0..119 (uint64) as a constant image, exit 0."""
    rng = np.random.default_rng(0)
    small = np.rint(rng.random((24, 20, 6)) * 120)
    data = {"float64": 1e9 + small, "int32": (2 ** 25 + small).astype(np.int32),
            "uint64": np.uint64(2 ** 60) + small.astype(np.uint64)}[kind]
    nib.save(nib.Nifti1Image(data, AFF, dtype=data.dtype), tmp_path / "x.nii.gz")
    rc, lines = run_sr(capsys, tmp_path / "x.nii.gz", tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 65 and "distinct level(s) in float32" in one_error(lines)
    # the same values near 0 are fine
    nib.save(nib.Nifti1Image(small.astype(data.dtype), AFF, dtype=data.dtype), tmp_path / "y.nii.gz")
    rc, _ = run_sr(capsys, tmp_path / "y.nii.gz", tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 0


def test_overlapping_gaps_and_whole_float_steps_still_load():
    cfg = load_config(None, {"degradation": {"gaps": [-1.0, 0, 1]},
                             "degradation_stages": [{"from_step": 6000.0, "gaussian_prob": 0.5}]})
    assert cfg.degradation.gaps == (-1.0, 0.0, 1.0) and cfg.degradation_stages[0]["from_step"] == 6000


def test_a_degenerate_header_in_meters_is_the_usual_refusal(tmp_path, capsys):
    aff = np.diag([0.0009, 0.0009, 0.005, 1.0])
    aff[1] = 0  # a zero row: singular (an sform-only header; no qform can hold it)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(brain().shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(aff, code=2)
    hdr.set_xyzt_units("meter", "sec")
    img = nib.Nifti1Image(brain(), None, hdr)
    img.set_sform(aff, code=2)
    img.to_filename(tmp_path / "s.nii.gz")
    rc, lines = run_sr(capsys, tmp_path / "s.nii.gz", tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 65 and "singular" in one_error(lines)


def test_json_dash_with_stdout_closed_from_the_start_is_a_usage_error(tmp_path, thick_nifti):
    """`prettier-sr ... --json - >&-`: the sidecar was printed nowhere and the run exited 0."""
    import subprocess
    import sys

    code = "import sys; from prettier_bids.cli.entry import prettier_sr; sys.exit(prettier_sr())"
    p = subprocess.run(["bash", "-c", 'exec >&-; exec "$@"', "sh", sys.executable, "-c", code, str(thick_nifti),
                        str(tmp_path / "o.nii.gz"), "--method", "cubic", "-q", "--json", "-"],
                       stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 64, p.stderr
    assert p.stderr.strip().splitlines() == ["prettier-sr: error: --json -: standard output is closed, so the sidecar "
                                             "would be lost: give a file name, or run with stdout open"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["thick.nii.gz"]


def test_a_closed_stdout_after_json_dash_is_not_an_error(tmp_path, thick_nifti):
    import subprocess
    import sys

    code = "import sys; from prettier_bids.cli.entry import prettier_sr; sys.exit(prettier_sr())"
    p = subprocess.Popen([sys.executable, "-c", code, str(thick_nifti), str(tmp_path / "o.nii.gz"), "--method",
                          "cubic", "-q", "--json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 0, err
    assert "Traceback" not in err and nib.load(tmp_path / "o.nii.gz").shape[2] > 8
