"""Fifth adversarial pass (helper-21, 2026-12-07): values JSON allows but nothing downstream can hold, and option
values that hung a run. One odd sidecar stopped the whole run with exit 1 ``unexpected ...``; one odd number in an
output sidecar stopped the group level and every later participant run."""

from __future__ import annotations

import json
import struct

import pytest

from prettier_bids.sr.io import JSONReadError, read_json

from _bids_support import copy_dataset, run_here

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("text, sqlite, reason", [
    ('{"SliceThickness": 100000000000000000000}', True, "beyond 64 bits"),
    ('{"a": [-9223372036854775809]}', True, "beyond 64 bits"),
    ('{"a": 1%s}' % ("0" * 400), False, "beyond the range of numbers"),
    ('{"Notes": "\\ud800"}', False, "lone surrogate"),
    ('{"\\udfff": 1}', False, "lone surrogate"),
])
def test_the_json_reader_refuses_what_json_allows_but_no_index_or_file_can_hold(tmp_path, text, sqlite, reason):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(JSONReadError, match=reason):
        read_json(path, sqlite=sqlite)


def test_the_tools_own_sidecar_keeps_a_modification_time_beyond_64_bits_of_nanoseconds(tmp_path):
    """An input dated after 2262 (a bad clock, an odd archive) has st_mtime_ns beyond 2**63, which the sidecar
    records (MTimeNs): refused by the reader, the output was 'incomplete' on every run (helper-22)."""
    import os

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    image = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    late = 10413792000000000000  # 2300-01-01
    os.utime(image, ns=(late, late))
    if image.stat().st_mtime_ns != late:
        pytest.skip("this file system does not store such dates")
    done = run_here(*_args(bids, out, work, "--participant-label", "02"))
    assert done.returncode == 0, done.stderr
    again = run_here(*_args(bids, out, work, "--participant-label", "02"))
    assert again.returncode == 0 and "already done" in again.stderr, again.stderr


def test_the_json_reader_keeps_64_bit_integers_and_real_unicode_and_refuses_a_bom_only_when_asked(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(BOM + json.dumps({"a": [2**63 - 1, -2**63], "b": "caf\u00e9 \U0001F600"}).encode())
    assert read_json(path) == {"a": [2**63 - 1, -2**63], "b": "caf\u00e9 \U0001F600"}
    with pytest.raises(JSONReadError, match="byte-order mark"):
        read_json(path, allow_bom=False)


def _args(bids, out, work, *extra):
    return [bids, out, "participant", "--skip-bids-validation", "-w", work, "--nprocs", "1", "--method", "cubic",
            "--contrast", "T1w", *extra]


@pytest.mark.parametrize("damage", ["bom", "surrogate", "huge int", "a folder"])
def test_one_odd_sidecar_fails_its_own_image_and_the_others_are_processed(tmp_path, damage):
    """A folder in the sidecar's place was ignored: the image processed as if it had no metadata."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    sidecar = bids / "sub-02" / "anat" / "sub-02_T1w.json"
    meta = json.loads(sidecar.read_text())
    if damage == "a folder":
        sidecar.unlink()
        sidecar.mkdir()
        (sidecar / "x.json").write_text("{}")
    elif damage == "bom":
        sidecar.write_bytes(BOM + sidecar.read_bytes())
    else:
        text = json.dumps(meta)[:-1] + (', "Notes": "\\ud800"}' if damage == "surrogate" else
                                        ', "SliceThickness": 100000000000000000000}')
        sidecar.write_text(text)
    (bids / "participants.json").write_bytes(BOM + b'{"age": {"Description": "age"}}')  # not an image's sidecar
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 1, done.stderr  # some inputs failed (docs/errors.md), not "unexpected"
    assert "unexpected" not in done.stderr
    assert "FAILED sub-02: sub-02/anat/sub-02_T1w.nii.gz: malformed JSON sidecar" in done.stderr
    assert list((out / "prettier" / "sub-01").rglob("*desc-cubic*_T1w.nii.gz"))  # the other subject's image


@pytest.mark.parametrize("value", ["99999999999999999999", '"\\ud800"'])
def test_a_filter_value_no_index_can_hold_is_a_usage_error(tmp_path, value):
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    filt = tmp_path / "f.json"
    filt.write_text('{"t1w": {"run": %s}}' % value)
    done = run_here(*_args(bids, out, work, "--participant-label", "02", "--bids-filter-file", filt))
    assert done.returncode == 64, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"prettier-bids: error: --bids-filter-file {filt} is "
                                                          "not valid JSON (")


@pytest.mark.parametrize("value, reason", [("1" + "0" * 400, "beyond the range of numbers"),
                                           ('"\\ud800"', "lone surrogate")])
def test_an_odd_value_in_an_output_sidecar_leaves_that_output_out_of_the_group_level(tmp_path, value, reason):
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    assert run_here(*_args(bids, out, work)).returncode == 0
    sidecar = out / "prettier" / "sub-02" / "anat" / "sub-02_desc-cubic_T1w.json"
    sidecar.write_text(sidecar.read_text().rstrip()[:-1] + ', "Extra": %s}' % value)
    group = run_here(bids, out, "group")
    assert group.returncode == 0, group.stderr  # sub-01's outputs summarised
    assert "sub-01" in (out / "prettier" / "group_qc.tsv").read_text()
    assert ("group level: skipped sub-02/anat/sub-02_desc-cubic_T1w.json: its JSON sidecar is malformed (not "
            "valid JSON (") in group.stderr and reason in group.stderr
    other = run_here(*_args(bids, out, work, "--participant-label", "01"))
    assert other.returncode == 0 and (out / "prettier" / "sub-01.html").is_file(), other.stderr


def test_a_memory_limit_below_what_multiproc_can_schedule_is_a_usage_error(tmp_path):
    done = run_here(tmp_path / "bids", tmp_path / "out", "participant", "--mem-gb", "0.005", "--nprocs", "2")
    assert done.returncode == 64
    assert done.stderr.strip().endswith("argument --mem-gb/--mem/--mem_gb: 0.005 must be >= 0.1 (see prettier-bids "
                                        "--help)")


def _nifti(path, pixdim=(1.0, 1.0, 5.0), extension_bytes=0, sform=False):
    """A small thick-slice NIfTI-1 (40x40x8) with its geometry from the qform (or the sform)."""
    import nibabel as nib
    import numpy as np

    img = nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32), np.diag([*pixdim, 1]))
    img.set_qform(np.diag([*pixdim, 1]), code=1)
    img.set_sform(np.diag([*pixdim, 1]), code=1 if sform else 0)
    if extension_bytes:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(0, b"A" * extension_bytes))
    nib.save(img, str(path))
    return path


def _patch_pixdim(path, axis, value):
    """pixdim[axis] of an uncompressed NIfTI-1 set to ``value`` in the file's bytes (nibabel would not write it)."""
    import struct

    raw = bytearray(path.read_bytes())
    raw[76 + 4 * axis: 80 + 4 * axis] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


def test_a_header_extension_bomb_is_refused_before_nibabel_reads_it(tmp_path):
    """1.6 GB of extension gzipped to 1.6 MB passed the voxel-count admission (1.8 GB RSS, exit 0, and the output
    kept it); here 40 MB, above the 32 MB an input may carry."""
    from prettier_bids.cli.sr import main
    from prettier_bids.sr.preprocess import MAX_HEADER_EXTENSION_BYTES

    bomb = _nifti(tmp_path / "bomb.nii.gz", extension_bytes=40 << 20)
    assert bomb.stat().st_size < 1 << 20  # small on disk
    assert 40 << 20 > MAX_HEADER_EXTENSION_BYTES
    assert main([str(bomb), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"]) == 65
    assert not (tmp_path / "out.nii.gz").exists()
    fine = _nifti(tmp_path / "fine.nii.gz", extension_bytes=4096)  # a dcm2niix-sized extension is read
    assert main([str(fine), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"]) == 0


@pytest.mark.parametrize("sform", [False, True])
def test_a_zero_voxel_size_in_pixdim_is_refused_where_the_geometry_comes_from_it(tmp_path, capsys, sform):
    """nibabel reads pixdim 0 as 1 mm ("setting 0 dims to 1"): exit 0 with a guessed geometry. With an sform the
    geometry comes from the sform, and pixdim is not used."""
    from prettier_bids.cli.sr import main

    path = _nifti(tmp_path / "zero.nii", pixdim=(1.0, 0.5, 5.0), sform=sform)
    _patch_pixdim(path, 1, 0.0)
    code = main([str(path), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err
    if sform:
        assert code == 0, err
    else:
        assert code == 65 and err.strip().endswith("voxel size 0 mm in the header (pixdim[1]), which readers take "
                                                   "as 1 mm: check the header's voxel sizes"), err


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_voxel_size_in_pixdim_is_one_error_line(tmp_path, capsys, value):
    """It printed 'warning: RuntimeWarning: invalid value encountered in dot' (numpy, inside nibabel) before the
    error line."""
    from prettier_bids.cli.sr import main

    path = _nifti(tmp_path / "inf.nii")
    _patch_pixdim(path, 1, value)
    code = main([str(path), str(tmp_path / "out.nii.gz"), "--method", "cubic"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "affine (sform/qform) has NaN or infinite values" in err[0], err


def test_nibabel_header_notes_and_warnings_are_never_bare_lines(tmp_path):
    """A negative pixdim made nibabel print 'pixdim[1,2,3] should be positive; setting to abs' through its own
    handler (unprefixed, and again through the command's); warnings printed their source line."""
    import subprocess
    import sys

    path = _nifti(tmp_path / "neg.nii", pixdim=(1.0, 1.0, 5.0))
    _patch_pixdim(path, 1, -1.0)
    code = ("import sys, warnings; from prettier_bids.cli.sr import main; rc = main(sys.argv[1:]); "
            "warnings.warn('a library warning', UserWarning); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "o.nii.gz"), "--method", "cubic",
                           "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "setting to abs" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("prettier-sr: ") for line in lines), proc.stderr
    assert lines[-1] == "prettier-sr: warning: UserWarning: a library warning"


@pytest.mark.parametrize("which", ["BIDS_DIR", "OUTPUT_DIR", "--work-dir"])
def test_a_folder_name_that_is_not_utf8_is_a_usage_error_before_any_work(tmp_path, which):
    """OUTPUT_DIR or -w named b'out\\xe9': the images were processed, then exit 1 `unexpected UnicodeEncodeError`
    and no report (a rerun said 'already done' and failed again); BIDS_DIR so named was exit 1 at once."""
    import os

    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    bids, out, work = tmp_path / "bids", tmp_path / "out", tmp_path / "work"
    if which == "BIDS_DIR":
        bids = copy_dataset(odd)
    else:
        copy_dataset(bids)
        out, work = (odd, work) if which == "OUTPUT_DIR" else (out, odd)
    done = run_here(bids, out, "participant", "--participant-label", "02", "-w", work, "--nprocs", "1",
                    "--method", "cubic")
    assert done.returncode == 64, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"prettier-bids: error: {which} {tmp_path}/caf\\xe9 is not a "
                                                    "UTF-8 name, which the BIDS index and the reports cannot hold: "
                                                    "rename it")
    assert not os.path.exists(out) or which == "BIDS_DIR"


def test_a_file_or_folder_whose_name_is_not_utf8_is_left_out_of_the_index_and_the_others_are_processed(tmp_path):
    """One stray b'anat_x\\xff.txt' made every participant's run exit 1 (pybids' SQLite index)."""
    import os

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    open(os.fsdecode(bytes(bids) + b"/sub-01/anat_x\xff.txt"), "w").close()
    os.mkdir(os.fsdecode(bytes(bids) + b"/sub-02/anat/\xe9t\xe9"))
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    assert ("2 file(s) or folder(s) whose names are not UTF-8 left out of the index (rename them to process them): "
            "sub-01/anat_x\\xff.txt, sub-02/anat/\\xe9t\\xe9") in done.stderr
    assert len(list((out / "prettier").rglob("*desc-cubic*_T1w.nii.gz"))) == 2


def test_an_empty_list_in_the_filter_file_is_a_usage_error_not_every_image(tmp_path):
    """pybids read {"acquisition": []} as no filter: every T1w image was selected."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    filt = tmp_path / "f.json"
    filt.write_text('{"t1w": {"acquisition": []}}')
    done = run_here(*_args(bids, out, work, "--bids-filter-file", filt))
    assert done.returncode == 64 and done.stderr.strip().splitlines()[-1] == (
        "prettier-bids: error: --bids-filter-file: t1w.acquisition is an empty list, which would match every image: "
        "give the values to keep, or leave the entity out"), done.stderr


def test_an_image_with_no_voxels_fails_at_selection_not_in_its_node(tmp_path):
    import nibabel as nib
    import numpy as np

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    target = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 8, 0), np.float32), np.diag([1, 1, 5, 1])), str(target))
    done = run_here(*_args(bids, out, work, "--participant-label", "02"))
    assert done.returncode == 1, done.stderr
    assert "failed   sub-02/anat/sub-02_T1w.nii.gz" in done.stderr or "FAILED sub-02" in done.stderr
    assert "holds no voxels" in done.stderr and "running 1 image workflow" not in done.stderr


@pytest.mark.parametrize("make", ["pair.img.gz", "pair2.img", "single2.nii.gz"])
def test_extension_bombs_in_pairs_gzipped_or_not_and_in_nifti2_are_refused(tmp_path, make):
    """A gzipped .hdr was assumed to hold no extensions: a 40 MB one passed (helper-22)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.sr.preprocess import InputError, load_nifti

    kind = {"pair.img.gz": nib.Nifti1Pair, "pair2.img": nib.Nifti2Pair, "single2.nii.gz": nib.Nifti2Image}[make]
    img = kind(np.ones((16, 16, 4), np.float32), np.diag([1.0, 1, 5, 1]))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"A" * (40 << 20)))
    nib.save(img, str(tmp_path / make))
    with pytest.raises(InputError, match="of header extensions, beyond the 32 MB"):
        load_nifti(tmp_path / make)
    img.header.extensions.clear()
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"A" * 4096))
    nib.save(img, str(tmp_path / make))
    assert load_nifti(tmp_path / make).shape == (16, 16, 4)


def test_padding_before_the_data_without_extensions_is_not_an_extension(tmp_path):
    import nibabel as nib
    import numpy as np

    from prettier_bids.sr.preprocess import load_nifti

    img = nib.Nifti1Image(np.ones((16, 16, 4), np.float32), np.diag([1.0, 1, 5, 1]))
    img.header["vox_offset"] = 40 << 20
    nib.save(img, str(tmp_path / "pad.nii"))
    assert load_nifti(tmp_path / "pad.nii").shape == (16, 16, 4)


def test_a_broken_torch_install_is_one_line_and_the_group_level_does_not_need_it(tmp_path):
    """The guard imported torch before its try: a torch that fails to import (a missing libcudnn) was a 30-line
    traceback in every command, the group level included, which never uses it (helper-22)."""
    import subprocess
    import sys

    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise OSError("libcudnn.so.9: cannot open shared object file")\n')
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "fake")}
    code = "import sys; from prettier_bids.cli.entry import {} as m; sys.exit(m())"
    src = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "test_bids" / "sub-02" / "anat" /
              "sub-02_T1w.nii.gz")
    sr = subprocess.run([sys.executable, "-c", code.format("prettier_sr"), src, str(tmp_path / "o.nii.gz"),
                         "--method", "cubic"], capture_output=True, text=True, timeout=120, env=env)
    assert sr.returncode == 1 and sr.stderr == ("prettier-sr: error: unexpected OSError: libcudnn.so.9: cannot open "
                                                "shared object file (rerun with -v for details)\n"), sr.stderr
    group = subprocess.run([sys.executable, "-c", code.format("prettier_bids"), str(tmp_path / "bids"),
                            str(tmp_path / "out"), "group"], capture_output=True, text=True, timeout=120, env=env,
                           cwd=tmp_path)
    assert "Traceback" not in group.stderr and "libcudnn" not in group.stderr, group.stderr


def test_a_stray_copy_outside_its_bids_folder_is_skipped_and_the_real_image_is_processed(tmp_path):
    """With the validation skipped, sub-02/anat/old/sub-02_T1w.nii.gz made the real sub-02 image fail, and
    extra/sub-04/anat/sub-04_T1w.nii.gz was processed as a participant sub-04 (helper-21)."""
    import shutil

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    (bids / "sub-02" / "anat" / "old").mkdir()
    (bids / "extra" / "sub-04" / "anat").mkdir(parents=True)
    for ext in (".nii.gz", ".json"):
        shutil.copy(bids / "sub-02" / "anat" / f"sub-02_T1w{ext}", bids / "sub-02" / "anat" / "old")
        shutil.copy(bids / "sub-02" / "anat" / f"sub-02_T1w{ext}", bids / "extra" / "sub-04" / "anat" /
                    f"sub-04_T1w{ext}")
    done = run_here(*_args(bids, out, work))
    assert done.returncode == 0, done.stderr
    for stray, folder in (("sub-02/anat/old/sub-02_T1w.nii.gz", "sub-02/anat"),
                          ("extra/sub-04/anat/sub-04_T1w.nii.gz", "sub-04/anat")):
        assert (f"skipped  {stray}: not in its BIDS folder {folder}/ (a stray copy?); move it there to process it"
                in done.stderr), done.stderr
    assert (out / "prettier" / "sub-02" / "anat" / "sub-02_desc-prettier_T1w.nii.gz").is_file() or \
        (out / "prettier" / "sub-02" / "anat" / "sub-02_desc-cubic_T1w.nii.gz").is_file()
    assert not (out / "prettier" / "sub-04").exists()


def test_trailing_singleton_dimensions_are_one_volume_and_other_5d_images_are_skipped_at_selection(tmp_path):
    """(x, y, z, 1) was taken and (x, y, z, 1, 1) refused; a 5D image with several volumes was selected, then
    failed in its node (helper-21)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    five = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 6, 1, 1)).astype(np.float32),
                             np.diag([1.0, 1, 5, 1])), str(five))
    assert main([str(five), str(tmp_path / "o.nii.gz"), "--method", "cubic", "-q"]) == 0
    assert nib.load(str(tmp_path / "o.nii.gz")).shape == (32, 32, 30)
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    nib.save(nib.Nifti1Image(np.ones((32, 32, 6, 1, 3), np.float32), np.diag([1.0, 1, 5, 1])),
             str(bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"))
    done = run_here(*_args(bids, out, work, "--participant-label", "02"))
    assert "skipped  sub-02/anat/sub-02_T1w.nii.gz: 5D image of shape (32, 32, 6, 1, 3) (expected 3D)" in done.stderr


def _altered_weights(src, dest, change):
    import torch

    payload = torch.load(src, map_location="cpu", weights_only=True)
    change(payload["state_dict"])
    torch.save(payload, dest)
    return dest


@pytest.mark.parametrize("change, code, text", [
    (lambda sd: sd.__setitem__("head.weight", sd["head.weight"].to(__import__("torch").complex64) * float("nan")),
     66, "head.weight is a complex64 tensor, not a dense real one"),
    (lambda sd: sd.__setitem__("head.weight", sd["head.weight"].to_sparse()), 66,
     "head.weight is a sparse float32 tensor, not a dense real one"),
    (lambda sd: [v.mul_(1e30) for v in sd.values() if v.is_floating_point()], 66,
     "the network's output has NaN or infinite values (damaged weights?); nothing was written"),
])
def test_weights_that_make_a_nan_output_are_refused_and_nothing_is_written(tmp_path, tiny_weights, thick_nifti,
                                                                            change, code, text, capsys):
    """A complex tensor of NaN passed the NaN check (only run on floating tensors): exit 0, an all-NaN output
    scored ConsistencyPSNR 100 with no QC flag; a sparse tensor was exit 1 `unexpected NotImplementedError`
    (helper-23)."""
    from prettier_bids.cli.sr import main

    bad = _altered_weights(tiny_weights, tmp_path / "bad.pt", change)
    out = tmp_path / "o.nii.gz"
    assert main([str(thick_nifti), str(out), "--weights", str(bad), "--threads", "1", "-q"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err, err
    assert not out.exists()


def test_a_weights_file_that_unpacks_beyond_the_largest_model_is_refused_before_torch_reads_it(tmp_path,
                                                                                               tiny_weights,
                                                                                               monkeypatch):
    """torch.load decompresses every tensor before any check: a 1.1 MB file took 1.3 GB (helper-23). The bound is
    lowered here, so that the test needs no large file."""
    from prettier_bids.sr import models

    monkeypatch.setattr(models, "MAX_WEIGHTS_UNPACKED_BYTES", 1000)
    monkeypatch.setattr(models.torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    with pytest.raises(models.WeightsError, match="it unpacks to .* MB, beyond the"):
        models.load_weights(tiny_weights)


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prettier_eval_and_train_never_write_their_results_over_the_files_they_read(tmp_path, tiny_weights):
    """prettier-eval wrote results.json over its split and tables.md over its weights, exit 0; prettier-train
    its best.pt over its split and log lines into its config (helper-23)."""
    import shutil

    from prettier_bids.cli.evaluate import main as evaluate
    from prettier_bids.cli.train import main as train

    split = {"train": ["a.nii.gz"], "validation": ["b.nii.gz"],
             "test": {"FLAIR": [{"file": "c.nii.gz", "skull_stripped": True}]}}
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps(split))
    shutil.copy(tiny_weights, ev / "tables.md")
    before = {p: _sha(p) for p in ev.iterdir()}
    assert evaluate(["--data-root", str(tmp_path), "--split", str(ev / "results.json"), "--weights",
                     str(ev / "tables.md"), "--no-patches", "--out-dir", str(ev)]) == 64
    assert {p: _sha(p) for p in ev.iterdir()} == before
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.tsv").write_text('{"steps": 2}')
    (run / "best.pt").write_text(json.dumps(split))
    before = {p: _sha(p) for p in run.iterdir()}
    assert train(["--config", str(run / "log.tsv"), "--data-root", str(tmp_path), "--split", str(run / "best.pt"),
                  "--out", str(run)]) == 64
    assert {p: _sha(p) for p in run.iterdir()} == before


def test_prettier_eval_lesions_checks_its_out_dir_before_any_work(tmp_path):
    """--out-dir an existing file was exit 1 `unexpected FileExistsError`, after the whole benchmark."""
    from prettier_bids.cli.evaluate import main as evaluate

    (tmp_path / "afile").write_text("x")
    assert evaluate(["lesions", "--data-root", str(tmp_path), "--case", "a.nii.gz:a_les.nii.gz",
                     "--out-dir", str(tmp_path / "afile")]) == 64


@pytest.mark.parametrize("config, text", [
    ({"seed": 4294967296}, "config.seed must be from 0 to 4294967295, got 4294967296"),
    ({"val": {"spacing": -6}}, "config.val.spacing must be from 2 to 8, got -6"),
    ({"val": {"spacing": 0}}, "config.val.spacing must be from 2 to 8, got 0"),
    ({"val": {"thickness": 1000}}, "config.val.thickness must be from 0.1 to 30.0, got 1000.0"),
])
def test_training_config_values_that_failed_or_misled_later_are_refused_when_read(tmp_path, config, text):
    """A seed of 2**32 was exit 1 `unexpected ValueError` after loading; a validation spacing of -6 exit 1, of 0
    (or a 1000 mm slice) exit 0 with best.pt chosen on a meaningless simulation (helper-23)."""
    from prettier_bids.training.config import ConfigError, load_config

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=__import__("re").escape(text)):
        load_config(path)


@pytest.mark.parametrize("given, gone", [("a.hdr", "a.img"), ("a.img", "a.hdr")])
def test_one_half_of_a_nifti_pair_is_a_missing_input(tmp_path, capsys, given, gone):
    """A .hdr whose .img is missing was exit 65 'cannot read image data (FileNotFoundError ...)': the input is
    missing (66), and the line names the missing file."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    nib.save(nib.Nifti1Pair(np.ones((32, 32, 6), np.float32), np.diag([1.0, 1, 5, 1])), str(tmp_path / "a.img"))
    (tmp_path / gone).unlink()
    code = main([str(tmp_path / given), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 66 and len(err) == 1 and f"input file not found: {gone} or {gone}.gz beside" in err[0], err
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("given, present, read", [("a.hdr", "a.img.gz", "a.img"), ("a.img.gz", "a.hdr", "a.hdr.gz")])
def test_a_nifti_pair_gzipped_in_half_names_the_file_that_is_read(tmp_path, capsys, given, present, read):
    """x.hdr beside x.img.gz (the .img gzipped alone; FSL reads such a pair, nibabel does not): exit 65 'cannot read
    image data (FileNotFoundError: ... a.img)' or 'cannot read a.img.gz as NIfTI (ImageFileError)', with the other
    file right there; now the missing input (66) with the reason."""
    import gzip

    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    nib.save(nib.Nifti1Pair(np.ones((32, 32, 6), np.float32), np.diag([1.0, 1, 5, 1])), str(tmp_path / "a.img"))
    for name in {"a.img", "a.hdr"} - {given, present}:  # the half gzipped alone
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress((tmp_path / name).read_bytes()))
        (tmp_path / name).unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([given, present])
    code = main([str(tmp_path / given), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 66 and len(err) == 1, err
    assert f"input file not found: {read} ({present} is there, but the two files of a pair are read only" in err[0]
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_dataset_description_with_a_byte_order_mark_is_read_and_not_called_malformed(tmp_path):
    """It was logged as 'malformed JSON file left out of the index' although the run read it and went on."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    desc = bids / "dataset_description.json"
    desc.write_bytes(BOM + desc.read_bytes())
    done = run_here(*_args(bids, out, work, "--participant-label", "02"))
    assert done.returncode == 0, done.stderr
    assert "malformed JSON" not in done.stderr and "dataset_description.json" not in done.stderr


def _brain(dtype, top):
    import numpy as np

    zz, yy, xx = np.mgrid[:48, :48, :8]
    b = np.clip(1 - ((zz - 24) ** 2 + (yy - 24) ** 2 + ((xx - 4) * 5) ** 2) / 500, 0, 1)
    b = b + np.random.default_rng(0).random(b.shape) * 0.01
    return (b / b.max() * top).astype(dtype)


@pytest.mark.parametrize("dtype, top", [("int32", 2 ** 31 - 1), ("uint32", 2 ** 32 - 1), ("int32", 20_000_000)])
def test_full_range_integer_images_never_wrap_round(tmp_path, capsys, dtype, top):
    """The brightest voxels of a full-range int32 image came back as -2147483648 (uint32: 0), exit 0: the clip to
    the input's maximum as a float32 (2**31) was cast back to int32 (helper-25)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    data = _brain(dtype, top)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1, 5, 1]), dtype=data.dtype), str(tmp_path / "in.nii.gz"))
    code = main([str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    assert code == 0 and capsys.readouterr().err == ""
    out = np.asanyarray(nib.load(str(tmp_path / "out.nii.gz")).dataobj).astype(np.float64)
    assert out.min() >= float(data.min()) - 1 and out.max() >= 0.999 * float(data.max())
    assert out.max() <= float(data.max()) * (1 + 2 ** -23)


def test_restore_intensity_keeps_int64_values_within_the_type():
    import numpy as np

    from prettier_bids.sr.preprocess import restore_intensity

    ref = np.array([0.0, 2.0 ** 63], np.float32)
    out = restore_intensity(np.array([0.0, 1.0, 1.5], np.float32), 2.0 ** 63, ref, np.dtype(np.int64))
    assert out.dtype == np.int64 and out.tolist() == [0, 2 ** 63 - 1, 2 ** 63 - 1]


@pytest.mark.parametrize("dtype, top", [("float64", 1e-50), ("float64", 1e-46), ("float32", 1e37)])
def test_intensities_float32_cannot_carry_are_refused(tmp_path, capsys, dtype, top):
    """1e-50 (float64) became an all-zero output with ConsistencyPSNR 100 (helper-25); near float32's largest
    values the slice profile's sums overflow."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    data = _brain(dtype, top)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1, 5, 1]), dtype=data.dtype), str(tmp_path / "in.nii.gz"))
    code = main([str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "outside the 1e-30 to 1e+36 this tool computes with" in err[0], err
    assert not (tmp_path / "out.nii.gz").exists()


def test_large_float32_intensities_get_their_own_scale_and_a_true_consistency(tmp_path):
    """1e32 (float32) overflowed a float32 mean: the scale fell back to 1, ConsistencyPSNR -668 dB, a false QC flag
    and, with a model, unscaled data fed to the network (helper-25)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    for top, name in ((1e32, "big"), (1.0, "one")):
        data = _brain("float32", top)
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1, 5, 1])), str(tmp_path / f"{name}.nii.gz"))
        assert main([str(tmp_path / f"{name}.nii.gz"), str(tmp_path / f"{name}_out.nii.gz"), "--method", "cubic", "-q",
                     "--json", str(tmp_path / f"{name}.json"), "--strict"]) == 0
    big, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("big", "one"))
    assert abs(big["ConsistencyPSNR"] - one["ConsistencyPSNR"]) < 0.5 and not big.get("QCFlags")
    out_big, out_one = (nib.load(str(tmp_path / f"{n}_out.nii.gz")).get_fdata() for n in ("big", "one"))
    assert np.allclose(out_big / 1e32, out_one, atol=1e-3)


def test_the_foreground_threshold_of_large_float32_values_is_finite():
    """A float32 mean of many values near 1e35 overflowed to inf: no foreground, the scale fell back to 1."""
    import numpy as np

    from prettier_bids.sr.preprocess import foreground_threshold

    big, one = foreground_threshold(_brain("float32", 1e35)), foreground_threshold(_brain("float32", 1.0))
    assert np.isfinite(big) and abs(big / one / 1e35 - 1) < 1e-3


def test_a_repeated_contrast_processes_each_image_once(tmp_path):
    """--contrast FLAIR flair selected each FLAIR twice, and each copy failed as a duplicate of itself (helper-25)."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    args = [bids, out, "participant", "--skip-bids-validation", "-w", work, "--nprocs", "1", "--method", "cubic",
            "--participant-label", "02", "--contrast", "FLAIR", "flair", "Flair"]
    done = run_here(*args)
    assert done.returncode == 0, done.stderr
    assert "1 selected" in done.stderr and "failed" not in done.stderr


def test_filter_keys_that_differ_only_in_case_are_a_usage_error(tmp_path):
    """{"flair": {"acquisition": "ax"}, "FLAIR": {}}: the second silently replaced the first (helper-25)."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    filt = tmp_path / "f.json"
    filt.write_text('{"flair": {"acquisition": "ax"}, "FLAIR": {}}')
    done = run_here(*_args(bids, out, work, "--participant-label", "02", "--bids-filter-file", filt))
    assert done.returncode == 64, done.stderr
    assert "names the query 'flair' a second time" in done.stderr.strip().splitlines()[-1]


def test_a_filter_key_given_twice_is_a_usage_error(tmp_path):
    """{"flair": {"acquisition": "ax"}, "flair": {"acquisition": "sag"}}: JSON kept the last one, silently."""
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    filt = tmp_path / "f.json"
    filt.write_text('{"flair": {"acquisition": "ax"}, "flair": {"acquisition": "sag"}}')
    done = run_here(*_args(bids, out, work, "--participant-label", "02", "--bids-filter-file", filt))
    assert done.returncode == 64, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"prettier-bids: error: --bids-filter-file {filt} is not usable: the key 'flair' is given twice in one "
        "object (JSON keeps only the last); give it once")
    assert not out.exists()


def test_slice_thickness_range_as_documented(tmp_path, capsys):
    """0.1 mm (the documented lower end) was refused as 'must be > 0.1'; a thickness that does not fit the spacing
    did not say which would (helper-25)."""
    from prettier_bids.cli.sr import main

    path = _nifti(tmp_path / "in.nii")
    assert main([str(path), str(tmp_path / "a.nii.gz"), "--method", "cubic", "-q", "--slice-thickness", "0.1"]) == 65
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a thickness of 1.00-12.50 mm, 0.2-2.5 x the spacing, is taken" in err[0], err
    assert main([str(path), str(tmp_path / "b.nii.gz"), "--method", "cubic", "-q", "--slice-thickness", "12.5"]) == 0


def test_an_input_whose_output_names_would_be_too_long_fails_at_selection(tmp_path):
    """An acq label of 215 characters failed its image with 'OSError: File name too long' in the work dir, after
    the work had begun (helper-24)."""
    import shutil

    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    anat = bids / "sub-02" / "anat"
    label = "a" * 200
    for ext in (".nii.gz", ".json"):
        shutil.move(anat / f"sub-02_T1w{ext}", anat / f"sub-02_acq-{label}_T1w{ext}")
    done = run_here(*_args(bids, out, work, "--participant-label", "02"))
    assert done.returncode == 1, done.stderr
    assert "bytes long, beyond the 226 this tool can write" in done.stderr and "running" not in done.stderr


def test_a_model_option_with_method_cubic_is_a_usage_error(tmp_path, capsys):
    """--method cubic with a missing --weights or an unknown --model was ignored without a word (helper-28)."""
    from prettier_bids.cli.sr import main

    path = _nifti(tmp_path / "in.nii")
    assert main([str(path), str(tmp_path / "o.nii.gz"), "--method", "cubic", "--weights", "/nonexistent.pt"]) == 64
    assert "do not apply to --method cubic" in capsys.readouterr().err
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    done = run_here(*_args(bids, out, work, "--model", "bogus"))
    assert done.returncode == 64 and "do not apply to --method cubic" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("make", ["single.nii", "single.nii.gz", "single2.nii", "pairmagic.nii"])
def test_a_single_file_whose_vox_offset_points_inside_its_header_is_refused(tmp_path, capsys, make):
    """vox_offset 0 in a .nii: nibabel reads the voxels from byte 0 (it takes 0 as Analyze's "no offset"), so the
    header's 352 bytes became the first 88 voxels and every voxel was shifted: exit 0 with a wrong image."""
    import gzip

    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    kind = nib.Nifti2Image if make.startswith("single2") else nib.Nifti1Image
    img = kind(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32), np.diag([1.0, 1, 5, 1]))
    nib.save(img, str(tmp_path / "ok.nii"))
    raw = bytearray((tmp_path / "ok.nii").read_bytes())
    at, fmt = (168, "<q") if kind is nib.Nifti2Image else (108, "<f")
    raw[at: at + struct.calcsize(fmt)] = struct.pack(fmt, 0)
    if make.startswith("pairmagic"):  # a .nii whose magic says "pair" (ni1), where vox_offset 0 is valid
        raw[344:348] = b"ni1\0"
    path = tmp_path / make
    path.write_bytes(gzip.compress(bytes(raw)) if make.endswith(".gz") else bytes(raw))
    assert np.asarray(nib.load(str(path)).dataobj).ravel(order="F")[0] != img.get_fdata().ravel(order="F")[0]
    code = main([str(path), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "vox_offset 0 in the header points inside the" in err[0], err
    assert not (tmp_path / "out.nii.gz").exists()
    assert main([str(tmp_path / "ok.nii"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"]) == 0


@pytest.mark.parametrize("code, pixdim, warned", [(4, 1.0, True), (2 + 64, 1.0, False), (1 + 64, 0.001, False),
                                                  (255, 1.0, True)])
def test_xyzt_units_codes_nifti_does_not_define_are_read_as_unknown(tmp_path, capsys, code, pixdim, warned):
    """A spatial unit code 4-7 or a time code with bit 64 set: nibabel's get_xyzt_units raised KeyError, so the run
    computed everything and then failed with exit 1, `unexpected KeyError: np.uint8(4)`; a meter header with such a
    time code was read as mm and refused as 0.001 mm voxels."""
    import json

    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    path = _nifti(tmp_path / "units.nii", pixdim=(pixdim, pixdim, 5 * pixdim))
    raw = bytearray(path.read_bytes())
    raw[123] = code  # xyzt_units
    path.write_bytes(bytes(raw))
    out, side = tmp_path / "out.nii.gz", tmp_path / "out.json"
    rc = main([str(path), str(out), "--method", "cubic", "-q", "--json", str(side)])
    err = capsys.readouterr().err
    assert rc == 0, err
    img = nib.load(str(out))
    assert img.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(nib.affines.voxel_sizes(img.affine), [1.0, 1.0, 1.0])
    notes = json.loads(side.read_text())["HeaderWarnings"]
    assert any("is none NIfTI defines: read as mm" in n for n in notes) == warned, notes


@pytest.mark.parametrize("field, code, refused", [("sform_code", 255, True), ("qform_code", 6, True),
                                                  ("sform_code", 5, False), ("sform_code", -1, False)])
def test_an_xform_code_above_those_nifti_defines_is_refused(tmp_path, capsys, field, code, refused):
    """sform_code 255 with a valid qform: nibabel resets the code to 0 and places the image by its qform (60 mm away
    here) where FSL/AFNI/ITK use the sform; the output was written at nibabel's place without a word (its note went
    to the -v log)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    qform, sform = np.diag([1.0, 1, 5, 1]), np.diag([1.0, 1, 5, 1])
    sform[:3, 3] = [30, 40, 20]
    img = nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32), None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=1)
    nib.save(img, str(tmp_path / "in.nii"))
    raw = bytearray((tmp_path / "in.nii").read_bytes())
    struct.pack_into("<h", raw, 254 if field == "sform_code" else 252, code)
    (tmp_path / "in.nii").write_bytes(bytes(raw))
    rc = main([str(tmp_path / "in.nii"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    if refused:
        assert rc == 65 and len(err) == 1 and f"{field} {code} in the header is none NIfTI defines" in err[0], err
        assert not (tmp_path / "out.nii.gz").exists()
    else:
        assert rc == 0, err


@pytest.mark.parametrize("damage", ["crc", "length", "stored payload", "trailer missing"])
def test_a_gzip_file_whose_checksum_fails_is_refused(tmp_path, capsys, damage):
    """nibabel reads a .nii.gz up to its last voxel and never reaches the gzip trailer: a file whose data were
    changed after writing (a flipped byte that still inflates; `gzip -t`: crc error) was super-resolved, exit 0."""
    import gzip

    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32) * 100,
                             np.diag([1.0, 1, 5, 1])), str(tmp_path / "ok.nii"))
    raw = (tmp_path / "ok.nii").read_bytes()
    packed = bytearray(gzip.compress(raw, compresslevel=0 if damage == "stored payload" else 6))
    if damage == "crc":
        packed[-8] ^= 0xFF
    elif damage == "length":
        packed[-1] ^= 0x01
    elif damage == "stored payload":  # one voxel's byte in a stored (level 0) block: inflates without error
        packed[len(packed) // 2] ^= 0xFF
    else:
        del packed[-8:]
    path = tmp_path / "in.nii.gz"
    path.write_bytes(bytes(packed))
    code = main([str(path), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "cannot read image data: the gzip " in err[0], err
    assert "the file is damaged" in err[0] or "truncated" in err[0], err
    assert not (tmp_path / "out.nii.gz").exists()
    whole = tmp_path / "whole.nii.gz"  # several members and trailing zeros, as gzip tools leave them: read
    whole.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + b"\0" * 64)
    assert main([str(whole), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"]) == 0


@pytest.mark.parametrize("unit, per_mm", [("mm", 1.0), ("meter", 1e-3), ("micron", 1e3)])
def test_qform_and_sform_half_a_millimetre_apart_are_warned_about_in_any_unit(tmp_path, unit, per_mm):
    """The comparison (atol 1e-3) was made in the header's unit: in meters the two could be 1 mm apart unsaid."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.sr.preprocess import header_warnings

    qform = np.diag([0.9, 0.9, 5.0, 1.0])
    qform[:3, 3] = [-90.0, -120.0, -60.0]
    qform[:3] *= per_mm
    sform = qform.copy()
    sform[0, 3] += 0.5 * per_mm  # 0.5 mm
    for apart, affine in ((False, qform), (True, sform)):
        img = nib.Nifti1Image(np.ones((8, 8, 4), np.float32), None)
        img.set_qform(qform, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units(unit)
        nib.save(img, str(tmp_path / "in.nii"))
        notes = header_warnings(nib.load(str(tmp_path / "in.nii")))
        assert ("qform and sform disagree: the sform is used" in notes) == apart, (unit, apart, notes)


def test_a_sheared_stack_measures_its_slice_spacing_across_the_slice_planes(tmp_path):
    """Slices 5 mm apart stacked askew (a gantry tilt: each slice shifted 2.5 mm in-plane) have a voxel axis 5.59 mm
    long; that length was taken for the slice spacing, so a contiguous 5 mm thickness read as 0.59 mm of gap
    (`SliceGap`, the slice profile), and a sidecar's `SpacingBetweenSlices` 5 was called wrong. The output rows still
    follow the voxel axis (factor 6: 0.93 mm along it, as before)."""
    import json

    import nibabel as nib
    import numpy as np

    from prettier_bids import bids
    from prettier_bids.cli.sr import main

    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    affine[1, 2] = 2.5
    data = np.random.default_rng(0).random((40, 40, 8)).astype(np.float32) * 100
    src = tmp_path / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz"
    src.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, affine), str(src))
    side = tmp_path / "out.json"
    assert main([str(src), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q", "--slice-thickness", "5",
                 "--json", str(side)]) == 0
    info = json.loads(side.read_text())
    assert info["SliceSpacing"] == 5.0 and info["SliceGap"] == 0.0, info
    assert info["UpsamplingFactor"] == 6 and info["OutputShape"] == [40, 40, 47]  # as before: 5.59 / 6 mm rows
    assert np.isclose(info["OutputVoxelSize"][2], np.hypot(2.5, 5.0) / 6, atol=1e-3)
    cand = bids.Candidate(path=src, relpath="sub-01/anat/sub-01_FLAIR.nii.gz", contrast="FLAIR",
                          entities={"subject": "01", "suffix": "FLAIR"},
                          metadata={"SliceThickness": 5.0, "SpacingBetweenSlices": 5.0})
    cand = bids.inspect_candidate(cand)
    assert cand.status == "selected" and cand.spacing == 5.0 and cand.thickness == 5.0, cand
    assert not [w for w in cand.warnings if "SpacingBetweenSlices" in w], cand.warnings


@pytest.mark.parametrize("stack, plane", [("tilted planes, stacked along z", "axial (oblique)"),
                                          ("axial planes, stacked askew", "axial"),
                                          ("plain", "axial")])
def test_the_slice_plane_of_a_sheared_stack_is_that_of_its_slices(stack, plane):
    """SlicePlane named the direction of the slice axis: axial planes stacked askew (each shifted 2.5 mm in-plane)
    were 'axial (oblique)', and planes tilted 27 degrees but stacked along z (CT's gantry tilt) were 'axial'."""
    import numpy as np

    from prettier_bids.bids import slice_plane

    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    if stack.startswith("tilted"):
        affine[2, 1] = 0.45  # the in-plane y axis rises: planes tilted about x
    elif stack.startswith("axial planes"):
        affine[1, 2] = 2.5
    assert slice_plane(affine, 2) == plane


@pytest.mark.parametrize("qform_code", [1, 0])
def test_an_invalid_quaternion_beside_a_valid_sform_is_a_warning_not_an_internal_error(tmp_path, capsys, qform_code):
    """quatern_b 3 (b^2 + c^2 + d^2 > 1) with an sform that places the image: the header warnings asked nibabel for
    the qform, which raised `ValueError: w2 should be positive`: exit 1, `unexpected ValueError` (found by fuzzing
    the header's fields)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    img = nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32), np.diag([1.0, 1, 5, 1]))
    img.set_qform(img.affine, code=qform_code)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(tmp_path / "in.nii"))
    raw = bytearray((tmp_path / "in.nii").read_bytes())
    struct.pack_into("<f", raw, 256, 3.0)  # quatern_b
    (tmp_path / "in.nii").write_bytes(bytes(raw))
    code = main([str(tmp_path / "in.nii"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0, err
    warned = ["qform and sform disagree (the qform's quaternion is invalid)" in line for line in err]
    assert any(warned) == bool(qform_code), err  # a qform that is not set is not compared
    assert np.allclose(nib.load(str(tmp_path / "out.nii.gz")).affine[:3, :3], np.diag([1.0, 1, 1]))


@pytest.mark.parametrize("offset", [1e30, float("nan")])
def test_a_vox_offset_beyond_any_file_is_one_line(tmp_path, capsys, offset):
    """vox_offset 1e30: nibabel's reader overflowed (exit 1, `unexpected OverflowError: Python int too large to
    convert to C long`); NaN was `cannot read X as NIfTI (ValueError)`."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    nib.save(nib.Nifti1Image(np.ones((40, 40, 8), np.float32), np.diag([1.0, 1, 5, 1])), str(tmp_path / "in.nii"))
    raw = bytearray((tmp_path / "in.nii").read_bytes())
    struct.pack_into("<f", raw, 108, offset)
    (tmp_path / "in.nii").write_bytes(bytes(raw))
    code = main([str(tmp_path / "in.nii"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "in the header is beyond any file" in err[0], err


@pytest.mark.parametrize("given", ["A.HDR", "A.IMG"])
def test_an_upper_case_nifti_pair_is_read_and_its_header_checked(tmp_path, capsys, given):
    """A pair named in upper case (old archives): its .HDR, whose vox_offset 0 is valid for a pair, was taken for a
    single file by its name and refused (helper-31's own vox_offset check, case-sensitive); given as .IMG, the header
    checks read the .IMG's bytes, not the header's."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    nib.save(nib.Nifti1Pair(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32), np.diag([1.0, 1, 5, 1])),
             str(tmp_path / "a.hdr"))
    (tmp_path / "a.hdr").rename(tmp_path / "A.HDR")
    (tmp_path / "a.img").rename(tmp_path / "A.IMG")
    assert main([str(tmp_path / given), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"]) == 0
    raw = bytearray((tmp_path / "A.HDR").read_bytes())
    struct.pack_into("<h", raw, 254, 255)  # sform_code 255: refused from the header, whichever file is named
    (tmp_path / "A.HDR").write_bytes(bytes(raw))
    code = main([str(tmp_path / given), str(tmp_path / "out2.nii.gz"), "--method", "cubic", "-q"])
    err = capsys.readouterr().err
    assert code == 65 and "sform_code 255 in the header" in err, err


def test_the_other_file_of_an_upper_case_pair_is_an_input_no_output_replaces(tmp_path, capsys):
    """`prettier-sr A.HDR out.nii.gz --json A.IMG` replaced the pair's voxels with the JSON sidecar, exit 0: the pair's
    companions were found by lower-case names only (`a.img`, `a.img.gz`)."""
    import hashlib

    import nibabel as nib
    import numpy as np

    from prettier_bids.cli.sr import main

    nib.save(nib.Nifti1Pair(np.random.default_rng(0).random((40, 40, 8)).astype(np.float32), np.diag([1.0, 1, 5, 1])),
             str(tmp_path / "a.hdr"))
    (tmp_path / "a.hdr").rename(tmp_path / "A.HDR")
    (tmp_path / "a.img").rename(tmp_path / "A.IMG")
    before = hashlib.sha256((tmp_path / "A.IMG").read_bytes()).hexdigest()
    code = main([str(tmp_path / "A.HDR"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q",
                 "--json", str(tmp_path / "A.IMG")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 64 and len(err) == 1 and "is the input file" in err[0], err
    assert hashlib.sha256((tmp_path / "A.IMG").read_bytes()).hexdigest() == before
    (tmp_path / "A.IMG").unlink()
    assert main([str(tmp_path / "A.HDR"), str(tmp_path / "out.nii.gz"), "--method", "cubic", "-q"]) == 66
    assert "input file not found: A.IMG or A.IMG.GZ beside" in capsys.readouterr().err
