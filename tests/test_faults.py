"""The fault matrix of issue 11: bad inputs, bad options, unsafe output paths and killed/concurrent runs.

Every case asserts the exit code, a one-line message, no traceback, the input's sha256 unchanged and no
output or temporary left where none should be. ``CASE n`` names the numbered faults of the issue.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _bids_support import REPO, copy_dataset, read_tsv
from prettier_bids import exitcodes
from prettier_bids.cli import run as bids_cli
from prettier_bids.cli import validator
from prettier_bids.cli.sr import main as sr_main

AFF = np.diag([1.0, 1.0, 5.0, 1.0])


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temporaries(folder):
    return sorted(p.name for p in Path(folder).rglob(".*.tmp*"))


def make(path, data, affine=AFF, **header):
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return Path(path)


def brain(shape=(24, 20, 6), seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.random(shape), (2, 2, 0.5)) * 1000).astype(np.float32)


def run_sr(capsys, *args):
    """prettier-sr in-process: (exit code, stderr lines)."""
    rc = sr_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


def one_error(lines, code_text=None):
    errors = [ln for ln in lines if ": error:" in ln]
    assert len(errors) == 1, lines
    assert len(lines) == 1, lines  # nothing else printed with -q
    if code_text:
        assert code_text in errors[0], errors[0]
    return errors[0]


def sr_subprocess(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "prettier_bids.cli.sr", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, **kwargs)


# --------------------------------------------------------------------------------------------
# Bad inputs already handled before issue 11 (kept as regression tests)
# --------------------------------------------------------------------------------------------

def _input(tmp_path, case, thick_nifti):
    p = tmp_path / "in.nii.gz"
    if case == "missing":
        return tmp_path / "nope.nii.gz"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        raw = thick_nifti.read_bytes()
        p.write_bytes(raw[: len(raw) // 2])
    elif case == "text":
        p.write_text("this is not an image\n")
    elif case == "4d":
        make(p, np.ones((8, 8, 6, 3), np.float32))
    elif case == "2d":
        make(p, np.ones((16, 16), np.float32))
    elif case in ("nan", "inf"):
        d = brain()
        d[3, 3, 3] = np.nan if case == "nan" else np.inf
        make(p, d)
    elif case == "one_slice":
        make(p, brain((16, 16, 1)))
    elif case in ("isotropic", "isotropic_force"):
        make(p, brain((16, 16, 16)), np.diag([1.0, 1.0, 1.2, 1.0]))
    return p


@pytest.mark.parametrize("case, code, text", [
    ("missing", 66, "not found"),
    ("empty", 65, "cannot read"),
    ("truncated", 65, "cannot read"),
    ("text", 65, "cannot read"),
    ("4d", 65, "3D"),
    ("2d", 65, "3D"),
    ("nan", 65, "NaN"),
    ("inf", 65, "NaN or infinite"),
    ("one_slice", 65, "too small"),
    ("isotropic", 65, "already high resolution"),
])
def test_bad_input(tmp_path, capsys, thick_nifti, case, code, text):
    src = _input(tmp_path, case, thick_nifti)
    before = sha(src) if src.exists() else None
    out = tmp_path / "out.nii.gz"
    rc, lines = run_sr(capsys, src, out, "--method", "cubic", "-q", "--json", tmp_path / "o.json")
    assert rc == code
    one_error(lines, text)
    assert not out.exists() and not (tmp_path / "o.json").exists() and temporaries(tmp_path) == []
    assert (sha(src) if src.exists() else None) == before


@pytest.mark.parametrize("case, value", [("all_zero", 0.0), ("constant", 7.0)])
def test_constant_input_gives_constant_output(tmp_path, capsys, case, value):
    src = make(tmp_path / "in.nii.gz", np.full((12, 12, 5), value, np.float32))
    before = sha(src)
    rc, lines = run_sr(capsys, src, tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 0 and lines == []
    np.testing.assert_allclose(nib.load(tmp_path / "o.nii.gz").get_fdata(), value)
    assert sha(src) == before and temporaries(tmp_path) == []


def test_isotropic_with_force(tmp_path, capsys, thick_nifti):
    src = _input(tmp_path, "isotropic_force", thick_nifti)
    rc, lines = run_sr(capsys, src, tmp_path / "o.nii.gz", "--method", "cubic", "-q", "--force")
    assert rc == 0 and lines == [] and (tmp_path / "o.nii.gz").is_file()


@pytest.mark.parametrize("kind", ["sheared", "flipped"])
def test_sheared_and_flipped_affines(tmp_path, capsys, kind):
    aff = AFF.copy()
    if kind == "sheared":
        aff[0, 1] = 0.3
    else:
        aff[0, 0] = -1.0
        aff[2, 2] = -5.0
    src = make(tmp_path / "in.nii.gz", brain(), aff)
    rc, lines = run_sr(capsys, src, tmp_path / "o.nii.gz", "--method", "cubic", "-q", "--json", tmp_path / "o.json")
    assert rc == 0
    info = json.loads((tmp_path / "o.json").read_text())
    out = nib.load(tmp_path / "o.nii.gz")
    # the output covers the same field of view: input slice centre 0 is output voxel (0, 0, 2)
    np.testing.assert_allclose(out.affine @ [0, 0, 2, 1], aff @ [0, 0, 0, 1], atol=1e-4)
    sheared = any("sheared" in w for w in info["HeaderWarnings"])
    assert sheared == (kind == "sheared")
    # a qform cannot hold a shear: it is unset rather than a shear-free approximation (wrong by centimetres)
    src_hdr = nib.load(src).header
    assert int(out.header["sform_code"]) == int(src_hdr["sform_code"]) > 0
    assert int(out.header["qform_code"]) == (0 if sheared else int(src_hdr["qform_code"]) or 1)
    if not sheared:
        np.testing.assert_allclose(out.header.get_qform(), out.affine, atol=1e-4)
    assert [ln for ln in lines if "warning" in ln] == (
        [f"prettier-sr: warning: {src}: the affine is sheared (voxel axes are not orthogonal)"] if sheared else [])


def test_read_only_output_folder(tmp_path, capsys, thick_nifti):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permission bits are not enforced")
        rc, lines = run_sr(capsys, thick_nifti, ro / "o.nii.gz", "--method", "cubic", "-q")
        assert rc == 73
        one_error(lines, "not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------------------------
# CASE 1: an output that is the input (or another output) -> 64, nothing written
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same_path", "symlink", "hardlink", "cmap_is_input", "json_is_input",
                                 "cmap_is_output", "relative_dots"])
def test_case1_output_is_an_input(tmp_path, capsys, thick_nifti, how):
    before = sha(thick_nifti)
    out = tmp_path / "o.nii.gz"
    extra = []
    if how == "same_path":
        out = thick_nifti
    elif how == "symlink":
        out.symlink_to(thick_nifti)
    elif how == "hardlink":
        os.link(thick_nifti, out)
    elif how == "cmap_is_input":
        extra = ["--consistency-map", thick_nifti]
    elif how == "json_is_input":
        extra = ["--json", thick_nifti]
    elif how == "cmap_is_output":
        extra = ["--consistency-map", out]
    else:
        out = thick_nifti.parent / "." / ".." / thick_nifti.parent.name / thick_nifti.name
    names = sorted(p.name for p in tmp_path.iterdir())
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", *extra)
    assert rc == 64
    msg = one_error(lines)
    assert "same file" in msg or "is the input file" in msg
    assert sha(thick_nifti) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing written


def test_case1_bids_sink_never_writes_over_its_source(tmp_path):
    """prettier-bids' writer refuses a derivatives path that resolves to the input file."""
    from prettier_bids.interfaces.derivatives import AtomicDerivativesSink
    from prettier_bids.paths import OutputPathError

    src = make(tmp_path / "sub-01_FLAIR.nii.gz", brain())
    before = sha(src)
    dest = tmp_path / "deriv" / "sub-01" / "anat"
    dest.mkdir(parents=True)
    (dest / "sub-01_desc-prettier_FLAIR.nii.gz").symlink_to(src)
    work = tmp_path / "work"
    work.mkdir()
    sink = AtomicDerivativesSink(base_directory=str(tmp_path / "deriv"), source_file=str(src), in_file=str(src),
                                 desc="prettier")
    with pytest.raises(OutputPathError, match="is the input file"):
        sink._run_interface(type("R", (), {"cwd": str(work)})())
    assert sha(src) == before


# --------------------------------------------------------------------------------------------
# CASE 2: intensities of any sign; QC floor, QCFlags, --strict
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["cubic", "model"])
def test_case2_all_negative_input(tmp_path, capsys, tiny_weights, method):
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


def test_case2_qc_floor_flags_and_strict(tmp_path, capsys, thick_nifti, monkeypatch):
    import prettier_bids.sr.consistency as consistency

    monkeypatch.setattr(consistency, "CONSISTENCY_PSNR_FLOOR_DB", 200.0)  # every output is below it
    out, meta = tmp_path / "o.nii.gz", tmp_path / "o.json"
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", "--json", meta)
    assert rc == 0 and len(lines) == 1 and lines[0].startswith(f"prettier-sr: warning: QC: {out}: network consistency PSNR")
    assert "below the QC floor of 200 dB" in json.loads(meta.read_text())["QCFlags"][0]
    out.unlink()
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", "--strict")
    assert rc == exitcodes.QC_FLAGGED == 19 and out.is_file()  # written, and the exit code says why


def test_case2_floor_is_below_normal_outputs():
    from prettier_bids.sr.consistency import CONSISTENCY_PSNR_FLOOR_DB, qc_flags

    assert -31 < CONSISTENCY_PSNR_FLOOR_DB <= 22  # measured normal outputs: docs/errors.md
    assert qc_flags(-31.0) and qc_flags(float("nan")) and not qc_flags(27.5)  # lowest normal: 1 mm grid, 0.6 mm T2w


# --------------------------------------------------------------------------------------------
# CASES 3 and 4: option values are checked while parsing -> 64, one line
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [
    ("--slice-thickness", "nan"), ("--slice-thickness", "inf"), ("--slice-thickness", "0"),
    ("--slice-thickness", "-3"), ("--slice-thickness", "abc"), ("--threads", "-1"), ("--threads", "0"),
    ("--batch-size", "0"), ("--device", "tpu"), ("--device", "cuda:x"),
])
def test_case3_4_bad_option_values(tmp_path, capsys, thick_nifti, option, value):
    with pytest.raises(SystemExit) as exc:
        sr_main([str(thick_nifti), str(tmp_path / "o.nii.gz"), option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 64
    assert len(err) == 1 and err[0].startswith(f"prettier-sr: error: argument {option}")
    assert list(tmp_path.iterdir()) == [] or not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("option, value", [("--device", "tpu"), ("--min-slice-spacing", "nan"),
                                           ("--mem-gb", "-1"), ("--omp-nthreads", "-2")])
def test_case3_4_bad_option_values_bids(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        bids_cli.main([str(REPO / "data/test_bids"), str(tmp_path / "out"), "participant", option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 64 and len(err) == 1 and f"argument {option}" in err[0]
    assert not (tmp_path / "out").exists()


def test_case4_device_tpu_subprocess_has_no_traceback(tmp_path, thick_nifti):
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


# --------------------------------------------------------------------------------------------
# CASE 8: every output location is checked before computing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--consistency-map", "--json"])
def test_case8_missing_folder_fails_before_computing(tmp_path, capsys, thick_nifti, monkeypatch, option):
    import prettier_bids.sr.reconstruct as reconstruct

    monkeypatch.setattr(reconstruct, "super_resolve", lambda *a, **k: pytest.fail("computed before the check"))
    out = tmp_path / "o.nii.gz"
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", option, tmp_path / "no" / "x.json")
    assert rc == 73
    one_error(lines, "does not exist")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# CASES 9 and 11: temporaries of dead processes are removed, those of live ones kept
# --------------------------------------------------------------------------------------------

def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_case9_live_temporaries_survive_cleanup(tmp_path):
    from prettier_bids.outputs import clean_stale_temporaries

    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    live = anat / f".sub-01_desc-prettier_FLAIR.nii.gz.{os.getppid()}.tmp.nii.gz"  # a running job
    dead = anat / f".sub-01_desc-prettier_FLAIR.nii.gz.{_dead_pid()}.tmp.nii.gz"
    live.write_bytes(b"partial")
    dead.write_bytes(b"partial")
    assert clean_stale_temporaries(tmp_path, ["01"]) == 1
    assert live.exists() and not dead.exists()


def test_case11_prettier_sr_removes_stale_temporaries_next_to_its_output(tmp_path, capsys, thick_nifti):
    out = tmp_path / "o.nii.gz"
    stale = tmp_path / f".o.nii.gz.{_dead_pid()}.tmp.nii.gz"
    live = tmp_path / f".o.nii.gz.{os.getppid()}.tmp.nii.gz"
    other = tmp_path / f".unrelated.nii.gz.{_dead_pid()}.tmp.nii.gz"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    rc, _ = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q")
    assert rc == 0 and out.is_file()
    assert not stale.exists() and live.exists() and other.exists()


_HANG_IN_SAVE = """
import sys, time
import prettier_bids.sr.io as io
def slow(img, tmp):
    open(tmp, "wb").write(b"half a file")
    print("SAVING", flush=True)
    time.sleep(600)
io._write_nifti = slow
from prettier_bids.cli.sr import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_case11_kill_during_save_then_rerun(tmp_path, capsys, thick_nifti):
    before = sha(thick_nifti)
    out = tmp_path / "o.nii.gz"
    proc = subprocess.Popen([sys.executable, "-c", _HANG_IN_SAVE, str(thick_nifti), str(out), "--method", "cubic",
                             "-q"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "SAVING"
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists() and len(temporaries(tmp_path)) == 1  # the killed writer's temporary
    rc, _ = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q")
    assert rc == 0 and nib.load(out).shape == (40, 36, 40)
    assert temporaries(tmp_path) == [] and sha(thick_nifti) == before


@pytest.mark.parametrize("where", ["saving", "computing"])
def test_sigterm_removes_temporaries_and_exits_143(tmp_path, thick_nifti, where):
    """SIGTERM (timeout, docker stop, scancel) unwinds like Ctrl-C: no temporary left, exit 143, one line."""
    before = sha(thick_nifti)
    out = tmp_path / "o.nii.gz"
    hang = _HANG_IN_SAVE if where == "saving" else _HANG_IN_SAVE.replace("io._write_nifti = slow", "").replace(
        "from prettier_bids.cli.sr import main",
        "import prettier_bids.sr.reconstruct as r\nr.super_resolve = lambda *a, **k: slow(None, '/dev/null')\n"
        "from prettier_bids.cli.sr import main")
    proc = subprocess.Popen([sys.executable, "-c", hang, str(thick_nifti), str(out), "--method", "cubic", "-q"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "SAVING"
        if where == "saving":
            assert len(temporaries(tmp_path)) == 1  # the half-written temporary exists while it hangs
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == exitcodes.TERMINATED == 143
    assert err.strip().splitlines() == ["prettier-sr: error: terminated (SIGTERM); rerun the same command to resume"]
    assert not out.exists() and temporaries(tmp_path) == [] and sha(thick_nifti) == before


def _scaled_int16(path, slope, inter):
    b = brain()
    data = np.rint((b - b.min()) / (b.max() - b.min()) * 1000).astype(np.int16)
    img = nib.Nifti1Image(data, AFF)
    img.set_data_dtype(np.int16)
    img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
    return nib.load(path).get_fdata()


@pytest.mark.parametrize("slope, inter", [(0.001, 0.0), (0.01, -100.0), (1.0, 0.0)])
def test_header_scaled_integers_come_back_as_float32(tmp_path, capsys, slope, inter):
    """int16 with scl_slope 0.001 came back int16 holding only {0, 1} (exit 0); unscaled int16 stays int16."""
    values = _scaled_int16(tmp_path / "in.nii.gz", slope, inter)
    rc, _ = run_sr(capsys, tmp_path / "in.nii.gz", tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    out = nib.load(tmp_path / "o.nii.gz")
    got = out.get_fdata()
    assert rc == 0
    assert out.get_data_dtype() == (np.int16 if slope == 1.0 else np.float32)
    span = values.max() - values.min()
    assert values.min() - 1e-5 * span <= got.min() and got.max() <= values.max() + 1e-5 * span
    # the input slices come back (cubic interpolates through the slice centres: row 2 of each 5)
    np.testing.assert_allclose(got[:, :, 2::5], values, atol=1e-4 * span + 0.5 * (slope == 1))
    assert len(np.unique(got)) > 500


@pytest.mark.parametrize("case, text", [
    ("mgh", "not a NIfTI image (MGHImage)"),
    ("analyze", "not a NIfTI image"),
    ("rgb", "voxel type RGB/structured is not supported"),
    ("spacing_500", "slice spacing 500 mm is beyond the 30 mm"),
    ("spacing_1e30", "slice spacing 1e+30 mm is beyond the 30 mm"),
    ("spacing_30.0001", "slice spacing 30.000099182128906 mm is beyond the 30 mm"),  # not "30 mm ... beyond 30"
])
def test_other_formats_and_absurd_spacing_are_bad_data(tmp_path, capsys, case, text):
    data = brain()
    if case == "mgh":
        src = tmp_path / "in.mgz"
        nib.save(nib.MGHImage(data, AFF), src)
    elif case == "analyze":
        src = tmp_path / "in.img"
        nib.save(nib.AnalyzeImage(data, AFF), src)
    elif case == "rgb":
        rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        src = make(tmp_path / "in.nii.gz", rgb)
    else:
        src = make(tmp_path / "in.nii.gz", data, np.diag([1.0, 1.0, float(case.split("_")[1]), 1.0]))  # float32
    rc, lines = run_sr(capsys, src, tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == exitcodes.DATAERR
    one_error(lines, text)
    assert not (tmp_path / "o.nii.gz").exists()


def test_nifti2_input_gives_a_clean_nifti1_output(tmp_path):
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti2Image(brain(), AFF), src)
    proc = sr_subprocess(src, tmp_path / "o.nii.gz", "--method", "cubic", "-q")
    out = nib.load(tmp_path / "o.nii.gz")
    assert proc.returncode == 0 and proc.stderr == ""  # no "sizeof_hdr should be 348" (NIfTI-2 header in NIfTI-1)
    assert isinstance(out, nib.Nifti1Image) and out.header["sizeof_hdr"] == 348
    np.testing.assert_allclose(out.affine @ [0, 0, 2, 1], AFF @ [0, 0, 0, 1], atol=1e-4)


def test_output_names_checked_before_computing(tmp_path, capsys, thick_nifti, monkeypatch):
    """A valid but long name left no room for the temporary (exit 73 after computing); `.nii.gz` alone was
    an unexpected error (exit 1)."""
    import prettier_bids.sr.reconstruct as r

    def never(*a, **k):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(r, "super_resolve", never)
    long_name = tmp_path / ("a" * 245 + ".nii.gz")  # 252 bytes: a valid name, its temporary is not
    rc, lines = run_sr(capsys, thick_nifti, long_name, "--method", "cubic", "-q")
    assert rc == exitcodes.CANTCREAT
    one_error(lines, "its file name is 252 bytes long, at most 235 fit here")
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / ".nii.gz", "--method", "cubic", "-q")
    assert rc == exitcodes.USAGE
    one_error(lines, "output must be a file name ending in .nii or .nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [thick_nifti.name]  # only the test's input
    monkeypatch.undo()
    fits = tmp_path / ("b" * 228 + ".nii.gz")  # 235 bytes: the longest that fits
    rc, _ = run_sr(capsys, thick_nifti, fits, "--method", "cubic", "-q")
    assert rc == 0 and fits.is_file() and temporaries(tmp_path) == []


@pytest.mark.slow
def test_kill_during_computation_leaves_nothing(tmp_path, thick_nifti):
    code = ("import sys, time\nimport prettier_bids.sr.reconstruct as r\n"
            "def slow(*a, **k):\n    print('COMPUTING', flush=True)\n    time.sleep(600)\n"
            "r.super_resolve = slow\nfrom prettier_bids.cli.sr import main\nsys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "o.nii.gz"
    proc = subprocess.Popen([sys.executable, "-c", code, str(thick_nifti), str(out), "--method", "cubic", "-q"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "COMPUTING"
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists() and temporaries(tmp_path) == []


def test_disk_full_leaves_no_partial_output_and_rerun_completes(tmp_path, capsys, thick_nifti, monkeypatch):
    import prettier_bids.sr.io as io

    real = io._write_text

    def full(text, tmp):
        Path(tmp).write_text(text[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(io, "_write_text", full)
    out, meta, cmap = tmp_path / "o.nii.gz", tmp_path / "o.json", tmp_path / "c.nii.gz"
    args = (thick_nifti, out, "--method", "cubic", "-q", "--json", meta, "--consistency-map", cmap)
    rc, lines = run_sr(capsys, *args)
    assert rc == 73
    assert "disk full" in one_error(lines) and "nothing was written" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thick.nii.gz"]  # no output, no temporary
    monkeypatch.setattr(io, "_write_text", real)
    rc, _ = run_sr(capsys, *args)
    assert rc == 0 and out.is_file() and cmap.is_file() and json.loads(meta.read_text())["Method"] == "cubic"


@pytest.mark.slow
def test_concurrent_runs_on_one_input(tmp_path, thick_nifti):
    before = sha(thick_nifti)
    procs = [subprocess.Popen([sys.executable, "-m", "prettier_bids.cli.sr", str(thick_nifti),
                               str(tmp_path / name), "--method", "cubic", "-q"], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for name in ("a.nii.gz", "a.nii.gz", "b.nii.gz")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 and "Traceback" not in err for rc, err in results), results
    a, b = nib.load(tmp_path / "a.nii.gz").get_fdata(), nib.load(tmp_path / "b.nii.gz").get_fdata()
    np.testing.assert_array_equal(a, b)
    assert temporaries(tmp_path) == [] and sha(thick_nifti) == before


# --------------------------------------------------------------------------------------------
# CASE 10: header warnings are shown (prettier-sr; prettier-bids in the BIDS run below)
# --------------------------------------------------------------------------------------------

def test_case10_qform_sform_disagree(tmp_path, capsys):
    img = nib.Nifti1Image(brain(), AFF)
    q = AFF.copy()
    q[:3, 3] = [10, 0, 0]
    img.set_qform(q, code=1)
    img.set_sform(AFF, code=1)
    src = tmp_path / "in.nii.gz"
    img.to_filename(src)
    rc, lines = run_sr(capsys, src, tmp_path / "o.nii.gz", "--method", "cubic", "-q", "--json", tmp_path / "o.json")
    assert rc == 0
    assert lines == [f"prettier-sr: warning: {src}: qform and sform disagree: the sform is used"]
    assert json.loads((tmp_path / "o.json").read_text())["HeaderWarnings"] == [
        "qform and sform disagree: the sform is used"]


# --------------------------------------------------------------------------------------------
# prettier-bids: CASES 5, 7, 10, 2 (--strict), 1 (the sink), 12, 13, 6
# --------------------------------------------------------------------------------------------

def _bids(capsys, *args):
    from _bids_support import app_environment

    with app_environment():
        rc = bids_cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_case7_output_inside_bids_not_derivatives(tmp_path, capsys):
    bids = copy_dataset(tmp_path / "bids")
    names = sorted(p.name for p in bids.iterdir())
    rc, err = _bids(capsys, bids, bids / "myout", "participant", "--method", "cubic", "-w", tmp_path / "work")
    assert rc == 64
    assert "inside BIDS_DIR but not under BIDS_DIR/derivatives/" in err and len(err.strip().splitlines()) == 1
    # OUTPUT_DIR/prettier would be BIDS_DIR itself
    named = copy_dataset(tmp_path / "p" / "prettier")
    rc, err = _bids(capsys, named, tmp_path / "p", "participant", "--method", "cubic", "-w", tmp_path / "work")
    assert rc == 64 and "inside BIDS_DIR" in err and not (tmp_path / "work").exists()
    assert sorted(p.name for p in bids.iterdir()) == names and not (tmp_path / "work").exists()


def test_case7_nothing_created_before_validation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(validator, "run_bids_validator", lambda d: ("the input is not a valid BIDS dataset (x)", "{}"))
    out = tmp_path / "out"
    rc, err = _bids(capsys, REPO / "data/test_bids", out, "participant", "--method", "cubic", "-w", tmp_path / "w")
    assert rc == 16 and "not a valid BIDS dataset" in err
    assert not out.exists() and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_case5_10_2_malformed_sidecar_header_warning_and_strict(tmp_path, capsys, monkeypatch):
    """One malformed sidecar: that image fails, the others go on (exit 1); a qform/sform mismatch is
    logged and stored; with a QC floor above every output, --strict exits 19 after writing them."""
    import prettier_bids.sr.consistency as consistency

    bids = copy_dataset(tmp_path / "bids")
    (bids / "sub-02/anat/sub-02_FLAIR.json").write_text('{"SliceThickness": 5,')
    t1 = bids / "sub-02/anat/sub-02_T1w.nii.gz"
    img = nib.load(t1)
    q = img.affine.copy()
    q[:3, 3] += 7
    img.set_qform(q, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, t1)
    before = {p: sha(p) for p in bids.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    common = ("participant", "--participant-label", "02", "--method", "cubic", "-w", tmp_path / "work",
              "--nprocs", "1", "--skip-bids-validation")
    rc, err = _bids(capsys, bids, out, *common)
    assert rc == 1 and "1 of 2 input(s) failed (participant(s) sub-02)" in err
    assert "header warning: sub-02/anat/sub-02_T1w.nii.gz: qform and sform disagree" in err
    (summary,) = (out / "prettier/logs").glob("summary_*.tsv")
    rows = {r["input"]: r for r in read_tsv(summary)}
    assert rows["sub-02/anat/sub-02_FLAIR.nii.gz"]["status"] == "failed"
    assert rows["sub-02/anat/sub-02_FLAIR.nii.gz"]["reason"] == "malformed JSON sidecar sub-02/anat/sub-02_FLAIR.json"
    assert rows["sub-02/anat/sub-02_T1w.nii.gz"]["status"] == "done"
    meta = json.loads((out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.json").read_text())
    assert meta["HeaderWarnings"] == ["qform and sform disagree: the sform is used"] and meta["QCFlags"] == []
    assert "Header warning" in (out / "prettier/sub-02.html").read_text()
    assert {p: sha(p) for p in bids.rglob("*") if p.is_file()} == before

    # --strict with every output below the floor: outputs written, flagged, exit 19
    (bids / "sub-02/anat/sub-02_FLAIR.json").write_text('{"SliceThickness": 5}')
    monkeypatch.setattr(consistency, "CONSISTENCY_PSNR_FLOOR_DB", 200.0)
    rc, err = _bids(capsys, bids, out, *common, "--strict")
    assert rc == 19 and "flagged by QC (--strict)" in err and "QC flag: sub-02/anat/sub-02_FLAIR.nii.gz" in err
    meta = json.loads((out / "prettier/sub-02/anat/sub-02_desc-cubic_FLAIR.json").read_text())
    assert "below the QC floor" in meta["QCFlags"][0]
    assert "QC flag" in (out / "prettier/sub-02.html").read_text()
    rc, err = _bids(capsys, bids, out, "group", "--strict")
    assert rc == 19
    group = read_tsv(out / "prettier/group_qc.tsv")
    assert any(r["flag"].startswith("QC floor:") for r in group)


def test_case12_validator_found_beside_python(tmp_path, monkeypatch):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert validator.find_validator() is None
    exe = venv_bin / "bids-validator-deno"
    exe.write_text('#!/bin/sh\necho \'{"issues": {"issues": []}}\'\n')
    exe.chmod(0o755)
    assert validator.find_validator() == str(exe)
    problem, report = validator.run_bids_validator(tmp_path)
    assert problem is None and json.loads(report) == {"issues": {"issues": []}}


def test_case13_one_exit_code_table(capsys):
    import prettier_bids.cli.sr as sr_cli

    codes = {e.name: e.code for e in exitcodes.TABLE}
    assert codes == {"OK": 0, "FAIL": 1, "BIDS_INVALID": 16, "BAD_LEVEL": 17, "NO_MATCH": 18, "QC_FLAGGED": 19,
                     "USAGE": 64, "DATAERR": 65, "NOINPUT": 66, "CANTCREAT": 73, "TEMPFAIL": 75, "INTERRUPTED": 130,
                     "TERMINATED": 143}
    for module in (sr_cli, bids_cli):  # no private copies of the codes
        assert not [n for n in vars(module) if n.startswith("EXIT_")]
    docs = (REPO / "docs/errors.md").read_text()
    for prog, main in (("prettier-sr", sr_main), ("prettier-bids", bids_cli.main)):
        with pytest.raises(SystemExit):
            main(["--help"])
        helptext = " ".join(capsys.readouterr().out.split())
        assert " ".join(exitcodes.epilog(prog).split()) in helptext
    for e in exitcodes.TABLE:
        assert f"| {e.code} | {e.name} |" in docs


@pytest.mark.slow
def test_case6_kill_9_leaves_no_orphan_workers(tmp_path, tiny_weights):
    bids = copy_dataset(tmp_path / "bids")
    cmd = [sys.executable, "-m", "prettier_bids.cli.run", str(bids), str(tmp_path / "out"), "participant",
           "--participant-label", "01", "--weights", str(tiny_weights), "-w", str(tmp_path / "work"),
           "--nprocs", "2", "--omp-nthreads", "1", "--skip-bids-validation"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def members():  # processes of the run's session, but the parent itself
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == proc.pid and int(stat.parent.name) != proc.pid and fields[0] != "Z":
                out.append(int(stat.parent.name))
        return out

    try:
        deadline = time.time() + 90
        while len(members()) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(members()) >= 2, "the workers never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while members() and time.time() < deadline:
            time.sleep(0.2)
        assert members() == []
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------
# Found by adversarial testing after the fixes: special files, option names, a file as folder
# --------------------------------------------------------------------------------------------

def test_output_that_is_a_fifo_is_refused_and_kept(tmp_path, capsys, thick_nifti):
    """The atomic rename would replace a FIFO (or a device such as /dev/full) by a regular file."""
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / "o.nii.gz", "--method", "cubic", "-q", "--json", fifo)
    assert rc == 73
    one_error(lines, "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not (tmp_path / "o.nii.gz").exists()


def test_same_file_message_names_both_options(tmp_path, capsys, thick_nifti):
    same = tmp_path / "same.nii.gz"
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / "o.nii.gz", "--method", "cubic", "-q",
                       "--json", same, "--consistency-map", same)
    assert rc == 64
    msg = one_error(lines, "are the same file")
    assert "--consistency-map" in msg and "--json" in msg


def test_output_folder_that_is_a_file(tmp_path, capsys, thick_nifti):
    (tmp_path / "f").write_text("x")
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / "f" / "o.nii.gz", "--method", "cubic", "-q")
    assert rc == 73
    one_error(lines, "is not a folder")


@pytest.mark.slow
def test_sigterm_of_prettier_bids_at_any_moment_is_143_and_whole_files(tmp_path):
    """A SIGTERM just after the workflow started was swallowed (exit 0, and later SIGTERMs ignored); one in the
    middle reached Nipype inside a node's `import torch`: every image `failed`, then a segfault (139)."""
    bids = copy_dataset(tmp_path / "bids")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prettier_bids.cli.run", str(bids), str(out), "participant", "--participant-label",
           "01", "--method", "cubic", "--nprocs", "2", "-w", str(tmp_path / "work"), "--skip-bids-validation"]
    for delay in (0.0, 0.3, 3.0):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:
                if "workflow(s) with MultiProc" in line:
                    break
            time.sleep(delay)
            proc.terminate()
            rest = proc.stderr.read()
            proc.wait(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == exitcodes.TERMINATED, (delay, rest)
        assert rest.strip().splitlines()[-1] == ("prettier-bids: error: terminated (SIGTERM); rerun the same "
                                                 "command to resume"), rest
        assert "failed" not in rest and "Fatal Python error" not in rest
        assert temporaries(out) == []
        assert not list((out / "prettier" / "logs").glob("summary_*.tsv"))  # no `failed` rows
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and temporaries(out) == []
    rows = read_tsv(next((out / "prettier" / "logs").glob("summary_*.tsv")))
    assert {r["status"] for r in rows} <= {"done", "skipped", "complete"}
