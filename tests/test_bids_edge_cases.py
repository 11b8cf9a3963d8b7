"""prettier-bids at the edges: planted lock files, odd names and labels, odd derivatives entries, Ctrl-C in a
finalizer, values beyond float32. Each test names the behaviour it checks (docs/errors.md has the rows)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _bids_support import TEST_BIDS, run_in_process


_run = run_in_process


# --------------------------------------------------------------------------------------------
# The work directory's lock file (paths.FolderLock)
# --------------------------------------------------------------------------------------------

def test_lock_file_hard_linked_to_an_input_is_refused_and_the_input_is_not_truncated(tmp_path):
    from prettier_bids.paths import FolderLock, OutputPathError

    sidecar = tmp_path / "bids" / "sub-01_T1w.json"
    sidecar.parent.mkdir()
    sidecar.write_text('{"SliceThickness": 4}\n')
    work = tmp_path / "work"
    work.mkdir()
    os.link(sidecar, work / FolderLock.NAME)
    with pytest.raises(OutputPathError) as info:
        FolderLock(work).acquire()
    assert info.value.code == 73 and "hard links" in str(info.value)
    assert sidecar.read_text() == '{"SliceThickness": 4}\n'  # was truncated to "PID host"


def test_lock_file_planted_as_a_fifo_is_exit_73_not_an_unexpected_error(tmp_path):
    from prettier_bids.paths import FolderLock, OutputPathError

    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / FolderLock.NAME)
    with pytest.raises(OutputPathError) as info:  # was OSError EINVAL (ftruncate): exit 1, "unexpected OSError"
        FolderLock(work).acquire()
    assert info.value.code == 73 and "not a regular file" in str(info.value)


# --------------------------------------------------------------------------------------------
# Selection (bids.collect_candidates): file names pybids reads only in part
# --------------------------------------------------------------------------------------------

def _one_subject_dataset(tmp_path):
    ds = tmp_path / "bids"
    shutil.copytree(TEST_BIDS, ds, ignore=shutil.ignore_patterns("sub-01", "sub-03"))
    return ds


def test_image_whose_name_is_not_a_bids_name_is_skipped_alone_not_the_whole_run(tmp_path):
    from prettier_bids.bids import get_layout, select

    ds = _one_subject_dataset(tmp_path)
    anat = ds / "sub-02" / "anat"
    shutil.copy(anat / "sub-02_FLAIR.nii.gz", anat / "sub-02_foo_FLAIR.nii.gz")  # (listed in .bidsignore: not indexed)
    cands = select(get_layout(ds), ["02"], contrasts=["FLAIR"])  # was BIDSError(65): "... would both be written to"
    by_name = {Path(c.relpath).name: c for c in cands}
    assert by_name["sub-02_FLAIR.nii.gz"].status == "selected"
    odd = by_name["sub-02_foo_FLAIR.nii.gz"]
    assert odd.status == "skipped" and "not a BIDS file name" in odd.reason and "sub-02_FLAIR.nii.gz" in odd.reason


@pytest.mark.parametrize("label, says", [("", "names no session"), ("ses-", "names no session"),
                                         ("1|2", "is not a BIDS label"), ("../1", "is not a BIDS label")])
def test_session_label_that_names_no_session_is_a_usage_error_not_every_session(tmp_path, capsys, label, says):
    out, work = tmp_path / "out", tmp_path / "work"
    code, err = _run(capsys, TEST_BIDS, out, "participant", "--participant-label", "01", "--session-label", label,
                     "--contrast", "T1w", "--method", "cubic", "--skip-bids-validation", "-w", work)
    assert code == 64 and len(err) == 1 and says in err[0]  # '' and 'ses-' were exit 0 with every session
    assert not out.exists() and not work.exists()


# --------------------------------------------------------------------------------------------
# TSV files (outputs.tsv_text): a value from a file name or a sidecar never adds a column or a row
# --------------------------------------------------------------------------------------------

def test_group_qc_tsv_keeps_one_line_per_output_whatever_the_sidecar_values(tmp_path):
    from prettier_bids.reports.group import COLUMNS, tsv_text

    row = {c: "n/a" for c in COLUMNS}
    row.update({"participant_id": "sub-02", "Model": "evil\tcol\nsub-99\tinjected", "source": "bids:raw:a\tb",
                "SlicePlane": "ax\r\nial", "ConsistencyPSNR": 36.4, "ModelWeightsSHA256": None})
    lines = tsv_text([row]).splitlines()  # was csv quoting: a quoted field over three lines, tabs inside
    assert len(lines) == 2 and all(ln.count("\t") == len(COLUMNS) - 1 for ln in lines)
    cells = dict(zip(COLUMNS, lines[1].split("\t")))
    assert cells["Model"] == "evil col sub-99 injected" and '"' not in lines[1] and cells["ModelWeightsSHA256"] == "n/a"  # None: BIDS' n/a


def test_run_summary_tsv_has_no_carriage_return_or_quoting_from_a_file_name(tmp_path):
    from prettier_bids.outputs import SUMMARY_COLUMNS, RunSummary

    summary = RunSummary(tmp_path, "run1")
    summary.rows.append({"participant_id": "sub-02", "session": "n/a", "contrast": "FLAIR",
                         "input": "sub-02/anat/sub-02_acq-a\rb_FLAIR.nii.gz", "status": "skipped",
                         "reason": 'invalid sidecar value SliceThickness="5 mm"\x0bx', "outputs": "n/a"})
    text = summary.write().read_text()
    lines = text.split("\n")[:-1]  # "\r" was kept (csv quoted the cell): a line break for most readers
    assert len(lines) == 2 and "\r" not in text and "\x0b" not in text
    assert lines[1].split("\t")[SUMMARY_COLUMNS.index("reason")] == 'invalid sidecar value SliceThickness="5 mm" x'


# --------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM (cli/options.guarded_main)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, code", [("KeyboardInterrupt", 130), ("Terminated", 143)])
def test_interrupt_raised_inside_a_finalizer_still_stops_the_command(capsys, kind, code):
    """A Ctrl-C landing in a ``__del__`` or weakref callback (SQLAlchemy's InstanceState._cleanup while pybids
    indexes) was "ignored": a traceback fragment, then the run went on to exit 0."""
    import time

    from prettier_bids.cli import options

    exc_type = getattr(options, "Terminated") if kind == "Terminated" else KeyboardInterrupt
    reached = []

    class Finalized:
        def __del__(self):
            raise exc_type()

    def body():
        Finalized()  # collected at once: its exception is unraisable
        for _ in range(200):
            time.sleep(0.005)
        reached.append("end")
        return 0

    assert options.guarded_main("prog", body) == code
    assert not reached
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prog: error: ")


# --------------------------------------------------------------------------------------------
# The work directory and the derivatives dataset (cli/parser.py)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("inside", ["prettier", "prettier/sub-02/work"])
def test_work_dir_inside_the_derivatives_dataset_is_refused_before_anything_is_written(tmp_path, capsys, inside):
    out = tmp_path / "out"
    code, err = _run(capsys, TEST_BIDS, out, "participant", "--participant-label", "02", "--contrast", "T1w",
                     "--method", "cubic", "--skip-bids-validation", "-w", out / inside)
    assert code == 64 and len(err) == 1 and "inside the derivatives dataset" in err[0]  # was exit 0 with Nipype's
    assert not out.exists()  # prettier_0_1_0_wf folder (pickles, reports) inside OUTPUT_DIR/prettier


# --------------------------------------------------------------------------------------------
# Voxel values beyond float32 (sr/reconstruct.load_volume)
# --------------------------------------------------------------------------------------------

def test_float64_values_beyond_float32_are_one_line_that_says_so(tmp_path):
    import subprocess
    import sys

    import nibabel as nib
    import numpy as np

    data = np.full((40, 36, 8), 1e300)  # finite float64 values: inf once read as float32
    data[::2] *= 2
    src = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 5.0, 1.0]), dtype=np.float64), src)
    proc = subprocess.run([sys.executable, "-c", "import sys; from prettier_bids.cli.sr import main; sys.exit(main())",
                           str(src), str(tmp_path / "out.nii.gz"), "--method", "cubic"],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()  # was two lines: numpy's "RuntimeWarning: overflow encountered in cast"
    assert proc.returncode == 65 and len(err) == 1, proc.stderr  # and a message of NaN/Inf alone
    assert "beyond the float32 range" in err[0]
    assert not (tmp_path / "out.nii.gz").exists()


# --------------------------------------------------------------------------------------------
# A file where an output folder goes, a folder where an output file goes (paths.check_output_dirs/_files)
# --------------------------------------------------------------------------------------------

PARTICIPANT_02_T1W = ("participant", "--participant-label", "02", "--contrast", "T1w", "--method", "cubic",
                      "--skip-bids-validation")


@pytest.mark.parametrize("planted, kind", [("sub-02", "file"), ("sub-02/anat", "file"), ("static", "file"),
                                           ("dataset_description.json", "folder"), ("sub-02.html", "folder"),
                                           ("logs/CITATION.md", "folder")])
def test_odd_entry_in_the_derivatives_is_exit_73_before_any_work(tmp_path, capsys, planted, kind):
    out, work = tmp_path / "out", tmp_path / "work"
    path = out / "prettier" / planted
    if kind == "file":
        path.parent.mkdir(parents=True)
        path.write_text("")
    else:
        path.mkdir(parents=True)
    code, err = _run(capsys, TEST_BIDS, out, *PARTICIPANT_02_T1W, "-w", work)
    errors = [ln for ln in err if "error:" in ln]
    # was exit 1 ("unexpected NotADirectoryError", "IsADirectoryError", "FileExistsError"), for sub-02 after the work
    assert code == 73 and len(errors) == 1 and str(path) in errors[0], err
    assert not work.exists()


def test_group_output_that_is_a_folder_is_exit_73(tmp_path, capsys):
    root = tmp_path / "out" / "prettier"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    (root / "group_qc.tsv").mkdir()
    code, err = _run(capsys, TEST_BIDS, tmp_path / "out", "group")
    errors = [ln for ln in err if "error:" in ln]
    assert code == 73 and len(errors) == 1 and "group_qc.tsv: it is a folder" in errors[0]  # was exit 1, unexpected


def test_two_images_with_the_same_output_name_fail_alone_not_the_whole_run(tmp_path):
    import nibabel as nib

    from prettier_bids.bids import get_layout, select

    ds = _one_subject_dataset(tmp_path)
    anat = ds / "sub-02" / "anat"
    nib.save(nib.load(anat / "sub-02_T1w.nii.gz"), anat / "sub-02_T1w.nii")  # an uncompressed copy beside it
    cands = select(get_layout(ds), ["02"])  # was BIDSError(65) for the whole run: "... would both be written to"
    by_name = {Path(c.relpath).name: c for c in cands}
    assert by_name["sub-02_FLAIR.nii.gz"].status == "selected"
    for name, other in (("sub-02_T1w.nii", "sub-02_T1w.nii.gz"), ("sub-02_T1w.nii.gz", "sub-02_T1w.nii")):
        assert by_name[name].status == "failed" and other in by_name[name].reason


def test_raw_name_or_doi_that_is_not_a_string_is_not_copied_into_the_derivatives_description(tmp_path):
    from prettier_bids.outputs import dataset_description

    desc = dataset_description(tmp_path, {"Name": {"x": "<b>"}, "BIDSVersion": "1.10.0", "DatasetDOI": ["a", 1]})
    assert desc["Name"] == "prettier_bids: super-resolved thick-slice MRI"  # was "... of {'x': '<b>'}" (a repr)
    assert "DOI" not in desc["SourceDatasets"][0]  # was the list, where BIDS wants a string
    ok = dataset_description(tmp_path, {"Name": "Study", "BIDSVersion": "1.10.0", "DatasetDOI": "doi:10.1/x"})
    assert ok["Name"].endswith(" of Study") and ok["SourceDatasets"][0]["DOI"] == "doi:10.1/x"


# --------------------------------------------------------------------------------------------
# prettier-sr's stderr: its own lines only (cli/sr.py)
# --------------------------------------------------------------------------------------------

def test_prettier_sr_does_not_print_other_libraries_info_records(tmp_path):
    """torch logs its FakeTensor cache stats at INFO from an atexit hook: after a Ctrl-C at the wrong moment they
    followed the one-line error ("prettier-sr: FakeTensor cache stats:", "prettier-sr:   cache_hits: 0", ...)."""
    import subprocess
    import sys

    code = ("import atexit, logging, sys\n"
            "log = logging.getLogger('torch._subclasses.fake_tensor')\n"
            "atexit.register(lambda: log.info('FakeTensor cache stats:'))\n"
            "from prettier_bids.cli.sr import main\nsys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.nii.gz"), str(tmp_path / "o.nii.gz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 66
    missing = tmp_path / "missing.nii.gz"
    assert proc.stderr.strip().splitlines() == [f"prettier-sr: error: input file not found: {missing}"]


# ------------------------------------------------------------------ follow-ups of the fresh pass (fixed by the lead)

def test_group_level_skips_a_subject_folder_linked_out_of_the_derivatives(tmp_path, caplog):
    """A sub-* symlink to another dataset's outputs: the group level does not take them as this dataset's."""
    from prettier_bids.outputs import main_output_sidecars

    other = tmp_path / "other" / "sub-02" / "anat"
    other.mkdir(parents=True)
    (other / "sub-02_desc-cubic_T1w.json").write_text('{"Sources": ["bids:raw:x"]}')
    (other / "sub-02_desc-cubic_T1w.nii.gz").write_bytes(b"x")
    root = tmp_path / "out" / "prettier"
    root.mkdir(parents=True)
    (root / "sub-03").symlink_to(tmp_path / "other" / "sub-02")
    assert list(main_output_sidecars(root)) == []
    assert "a symlink to" in caplog.text


def test_a_newline_in_a_file_name_stays_on_one_log_line():
    from prettier_bids.bids import Candidate, summarize

    cand = Candidate(path=Path("x"), relpath="sub-01/anat/sub-01_FLAIR\nFAKE done.nii.gz", contrast="FLAIR",
                     entities={"subject": "01"}, status="skipped", reason="odd\rname")
    lines = summarize([cand]).splitlines()
    assert len(lines) == 2 and "\\n" in lines[1] and "\\r" in lines[1]


def test_a_session_label_that_no_participant_has_is_exit_18():
    from prettier_bids.bids import BIDSError, check_session_labels

    assert check_session_labels(["1", "ses-2"], TEST_BIDS) == ["1", "2"]
    with pytest.raises(BIDSError) as err:
        check_session_labels(["1", "9"], TEST_BIDS)
    assert err.value.code == 18 and "ses-9" in str(err.value)


# --------------------------------------------------------------------------------------------
# A header in meters (sr.preprocess.in_millimetres) through the BIDS-App and its reports
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_input_whose_header_is_in_meters_is_processed_and_drawn_in_mm(tmp_path, capsys):
    """prettier-sr converts a meter header to mm; prettier-bids selected it (in mm), then its validate node read it
    in meters and failed it (`voxel size 0.001 mm ... below the 0.05 mm`, exit 1); the report drew the input on the
    output's grid at 1000x its size (a few constant patches)."""
    import nibabel as nib
    import numpy as np

    from prettier_bids.reports.reportlets import _as_nifti, _on_grid, display_image

    bids = _one_subject_dataset(tmp_path)
    src = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    img = nib.load(src)
    meters = np.asarray(img.affine, dtype=float).copy()
    meters[:3] /= 1000.0
    inm = nib.Nifti1Image(np.asanyarray(img.dataobj), meters, img.header)
    inm.header.set_xyzt_units("meter", "sec")
    nib.save(inm, src)
    out = tmp_path / "out"
    code, err = _run(capsys, bids, out, *PARTICIPANT_02_T1W, "--nprocs", "1", "--omp-nthreads", "1",
                     "-w", tmp_path / "work")
    assert code == 0, err
    result = out / "prettier" / "sub-02" / "anat" / "sub-02_desc-cubic_T1w.nii.gz"
    sr = nib.load(result)
    assert sr.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(nib.affines.voxel_sizes(sr.affine), [*nib.affines.voxel_sizes(img.affine)[:2], 1.0], atol=1e-3)
    shown = display_image(_as_nifti(result))
    before = np.asarray(_on_grid(_as_nifti(src), shown).dataobj, dtype=float)
    assert np.corrcoef(before.ravel(), np.asarray(shown.dataobj, dtype=float).ravel())[0, 1] > 0.9
