"""prettier-sr's option values are checked while parsing (64, one line); intensities of any sign; the QC floor,
QCFlags and --strict; an unexpected error is one line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from _bids_support import REPO
from _fault_support import brain, make, run_sr, sr_subprocess
from prettier_bids import exitcodes
from prettier_bids.cli import run as bids_cli
from prettier_bids.cli.sr import main as sr_main


# --------------------------------------------------------------------------------------------
# intensities of any sign; QC floor, QCFlags, --strict
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["cubic", "model"])
def test_all_negative_input(tmp_path, capsys, tiny_weights, method):
    d = brain((24, 20, 6)) + 50
    src = make(tmp_path / "neg.nii.gz", -d - 1)
    ref = make(tmp_path / "pos.nii.gz", d)
    weights = ["--weights", tiny_weights] if method == "model" else []
    infos = {}
    for name, path in (("neg", src), ("pos", ref)):
        rc, lines = run_sr(capsys, path, tmp_path / f"{name}_o.nii.gz", "--method", method, "-q", *weights,
                           "--json", tmp_path / f"{name}.json", "--strict")
        assert rc == 0 and lines == []
        infos[name] = json.loads((tmp_path / f"{name}.json").read_text())
    # main gave -27 dB here (scale fell back to 1.0); now as consistent as the positive image
    assert infos["neg"]["ConsistencyPSNR"] > 25 and infos["neg"]["QCFlags"] == []
    assert infos["neg"]["IntensityScale"]["Offset"] < 0 and infos["pos"]["IntensityScale"]["Offset"] == 0
    out = nib.load(tmp_path / "neg_o.nii.gz").get_fdata()
    assert out.max() <= -1 and out.min() >= float((-d - 1).min())  # mapped back to the input's range
    if method == "cubic":  # linear: the negated image's output is the negated output
        pos = nib.load(tmp_path / "pos_o.nii.gz").get_fdata()
        np.testing.assert_allclose(out, -pos - 1, atol=0.05)


def test_qc_floor_flags_and_strict(tmp_path, capsys, thick_nifti, monkeypatch):
    import prettier_bids.sr.consistency as consistency

    monkeypatch.setattr(consistency, "CONSISTENCY_PSNR_FLOOR_DB", 200.0)  # every output is below it
    out, meta = tmp_path / "o.nii.gz", tmp_path / "o.json"
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", "--json", meta)
    assert rc == 0 and len(lines) == 1 and lines[0].startswith(f"prettier-sr: warning: QC: {out}: consistency PSNR")  # cubic: no network
    assert "below the QC floor of 200 dB" in json.loads(meta.read_text())["QCFlags"][0]
    out.unlink()
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", "--strict")
    assert rc == exitcodes.QC_FLAGGED == 19 and out.is_file()  # written, and the exit code says why


def test_floor_is_below_normal_outputs():
    from prettier_bids.sr.consistency import CONSISTENCY_PSNR_FLOOR_DB, qc_flags

    assert -31 < CONSISTENCY_PSNR_FLOOR_DB <= 22  # measured normal outputs: docs/errors.md
    assert qc_flags(-31.0) and qc_flags(float("nan")) and not qc_flags(27.5)  # lowest normal: 1 mm grid, 0.6 mm T2w


# --------------------------------------------------------------------------------------------
# option values are checked while parsing -> 64, one line
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [
    ("--slice-thickness", "nan"), ("--slice-thickness", "inf"), ("--slice-thickness", "0"),
    ("--slice-thickness", "-3"), ("--slice-thickness", "abc"), ("--threads", "-1"), ("--threads", "0"),
    ("--batch-size", "0"), ("--device", "tpu"), ("--device", "cuda:x"),
])
def test_bad_option_values(tmp_path, capsys, thick_nifti, option, value):
    with pytest.raises(SystemExit) as exc:
        sr_main([str(thick_nifti), str(tmp_path / "o.nii.gz"), option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 64
    assert len(err) == 1 and err[0].startswith(f"prettier-sr: error: argument {option}")
    assert list(tmp_path.iterdir()) == [] or not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("option, value", [("--device", "tpu"), ("--min-slice-spacing", "nan"),
                                           ("--mem-gb", "-1"), ("--omp-nthreads", "-2")])
def test_bad_option_values_bids(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        bids_cli.main([str(REPO / "data/test_bids"), str(tmp_path / "out"), "participant", option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 64 and len(err) == 1 and f"argument {option}" in err[0]
    assert not (tmp_path / "out").exists()


def test_device_tpu_subprocess_has_no_traceback(tmp_path, thick_nifti):
    proc = sr_subprocess(thick_nifti, tmp_path / "o.nii.gz", "--device", "tpu")
    assert proc.returncode == 64 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "prettier-sr: error: argument --device: unknown device 'tpu' (choose cpu, cuda or cuda:N) "
        "(see prettier-sr --help)"]


def test_unexpected_error_is_one_line(tmp_path, capsys, thick_nifti, monkeypatch):
    import prettier_bids.sr.reconstruct as reconstruct

    def boom(*a, **k):
        raise RuntimeError("something internal\nwith a second line")

    monkeypatch.setattr(reconstruct, "super_resolve", boom)
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 1
    assert lines == ["prettier-sr: error: unexpected RuntimeError: something internal (rerun with -v for details)"]
