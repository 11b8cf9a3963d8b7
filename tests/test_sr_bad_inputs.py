"""prettier-sr on bad or unusual inputs: one error line and its exit code, or a correct output; the input's sha256
unchanged, no output or temporary left where none should be."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from _fault_support import AFF, brain, make, one_error, run_sr, sha, sr_subprocess, temporaries
from prettier_bids import exitcodes


# --------------------------------------------------------------------------------------------
# Bad inputs: one line and its exit code, or a correct output
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
    assert one_error(lines, text).startswith("prettier-sr: error:")
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
    # without a qform code the output's qform takes the sform's (the same affine; was 1, "scanner", whatever it was)
    assert int(out.header["qform_code"]) == (0 if sheared else int(src_hdr["qform_code"]) or int(src_hdr["sform_code"]))
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


# --------------------------------------------------------------------------------------------
# Header warnings are shown (prettier-bids: test_bids_faults.py)
# --------------------------------------------------------------------------------------------

def test_qform_sform_disagree(tmp_path, capsys):
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


def test_the_memory_check_counts_an_address_space_limit(tmp_path):
    """Under `ulimit -v` (SGE's h_vmem) a large input was read and computed, then 'unexpected MemoryError', exit 1;
    the check before reading looked at MemAvailable and cgroups only (helper-26)."""
    import resource
    import subprocess
    import sys

    import nibabel as nib
    import numpy as np

    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((384, 384, 48), np.float32), np.diag([0.6, 0.6, 6, 1])), str(path))

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1400 << 20, 1400 << 20))

    proc = subprocess.run([sys.executable, "-m", "prettier_bids.cli.sr", str(path), str(tmp_path / "o.nii.gz"),
                           "--method", "cubic"], capture_output=True, text=True, preexec_fn=limit, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 65 and len(lines) == 1, proc.stderr[-1500:]
    assert "GB of memory" in lines[0] and "available; nothing was read" in lines[0]
