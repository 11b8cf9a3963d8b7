"""prettier-sr never harms data: an output that is an input, a folder checked before computing, temporaries of
dead runs removed and of live ones kept, killed runs, full disks and concurrent runs leave whole files only."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _bids_support import REPO
from _fault_support import brain, make, one_error, run_sr, sha, temporaries
from prettier_bids import exitcodes


# --------------------------------------------------------------------------------------------
# an output that is the input (or another output) -> 64, nothing written
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same_path", "symlink", "hardlink", "cmap_is_input", "json_is_input",
                                 "cmap_is_output", "relative_dots"])
def test_output_is_an_input(tmp_path, capsys, thick_nifti, how):
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


@pytest.mark.parametrize("planted", ["image", "sidecar"])
def test_bids_sink_never_writes_over_its_source(tmp_path, planted):
    """prettier-bids' writer refuses a derivatives path (the image or its sidecar) that resolves to an input file
    (the source image, its sidecar), and writes nothing."""
    from prettier_bids.interfaces.derivatives import DerivativesSink
    from prettier_bids.paths import OutputPathError

    src = make(tmp_path / "sub-01_FLAIR.nii.gz", brain())
    src_json = tmp_path / "sub-01_FLAIR.json"
    src_json.write_text('{"SliceThickness": 5}')
    before = sha(src), sha(src_json)
    dest = tmp_path / "deriv" / "sub-01" / "anat"
    dest.mkdir(parents=True)
    if planted == "image":
        (dest / "sub-01_desc-prettier_FLAIR.nii.gz").symlink_to(src)
    else:
        (dest / "sub-01_desc-prettier_FLAIR.json").symlink_to(src_json)
    listing = sorted(p.name for p in dest.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    sink = DerivativesSink(base_directory=str(tmp_path / "deriv"), source_file=str(src), in_file=str(src),
                           entities={"subject": "01", "suffix": "FLAIR", "datatype": "anat"}, desc="prettier",
                           meta_dict={"Description": "x"})
    with pytest.raises(OutputPathError, match="is the input file") as err:
        sink.run(cwd=str(work))
    assert err.value.code == exitcodes.USAGE
    assert (sha(src), sha(src_json)) == before
    assert sorted(p.name for p in dest.iterdir()) == listing and not temporaries(tmp_path)


# --------------------------------------------------------------------------------------------
# every output location is checked before computing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--consistency-map", "--json"])
def test_missing_folder_fails_before_computing(tmp_path, capsys, thick_nifti, monkeypatch, option):
    import prettier_bids.sr.reconstruct as reconstruct

    monkeypatch.setattr(reconstruct, "super_resolve", lambda *a, **k: pytest.fail("computed before the check"))
    out = tmp_path / "o.nii.gz"
    name = "x.nii.gz" if option == "--consistency-map" else "x.json"  # (a map must have a NIfTI name: 64)
    rc, lines = run_sr(capsys, thick_nifti, out, "--method", "cubic", "-q", option, tmp_path / "no" / name)
    assert rc == 73
    one_error(lines, "does not exist")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# temporaries of dead processes are removed, those of live ones kept
# --------------------------------------------------------------------------------------------

def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_temporaries_survive_cleanup(tmp_path):
    from prettier_bids.outputs import clean_stale_temporaries

    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    live = anat / f".sub-01_desc-prettier_FLAIR.nii.gz.{os.getppid()}.tmp.nii.gz"  # a running job
    dead = anat / f".sub-01_desc-prettier_FLAIR.nii.gz.{_dead_pid()}.tmp.nii.gz"
    live.write_bytes(b"partial")
    dead.write_bytes(b"partial")
    assert clean_stale_temporaries(tmp_path, ["01"]) == 1
    assert live.exists() and not dead.exists()


def test_prettier_sr_removes_stale_temporaries_next_to_its_output(tmp_path, capsys, thick_nifti):
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
def test_kill_during_save_then_rerun(tmp_path, capsys, thick_nifti):
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
    one_error(lines, "its file name is 252 bytes long, at most 226 fit here")
    rc, lines = run_sr(capsys, thick_nifti, tmp_path / ".nii.gz", "--method", "cubic", "-q")
    assert rc == exitcodes.USAGE
    one_error(lines, "output must be a file name ending in .nii or .nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [thick_nifti.name]  # only the test's input
    monkeypatch.undo()
    fits = tmp_path / ("b" * 219 + ".nii.gz")  # 226 bytes: the longest that fits
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
# Special files, option names, a file where a folder should be
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


def test_temporaries_of_another_container_are_neither_shared_nor_removed(tmp_path):
    """Temporaries were named by PID alone, 1 in every container: two containers writing into one folder shared
    them (FileNotFoundError on rename, a mixed file), and one stopped by SIGTERM removed the other's (helper-26)."""
    import os
    import time

    from prettier_bids.sr import io as sr_io

    mine = sr_io.tmp_path_for(tmp_path / "o.nii.gz", ".nii.gz")
    assert mine.name == f".o.nii.gz.{os.getpid()}-{sr_io.writer_ident()}.tmp.nii.gz"
    other = "0" * 8 if sr_io.writer_ident() != "0" * 8 else "1" * 8
    theirs = tmp_path / f".p.nii.gz.1-{other}.tmp.nii.gz"  # PID 1 of another container, at work
    dead_theirs = tmp_path / f".q.nii.gz.{_dead_pid()}-{other}.tmp.nii.gz"
    old_theirs = tmp_path / f".r.nii.gz.{_dead_pid()}-{other}.tmp.nii.gz"
    for path in (mine, theirs, dead_theirs, old_theirs):
        path.write_bytes(b"x")
    past = time.time() - sr_io.FOREIGN_STALE_SECONDS - 60
    os.utime(old_theirs, (past, past))
    assert sr_io.remove_temporaries(tmp_path, {1, os.getpid()}) == 1  # this process's only
    assert not mine.exists() and theirs.exists()
    assert sr_io.clean_stale_temporaries(tmp_path) == [old_theirs]  # another's: only once long untouched
    assert theirs.exists() and dead_theirs.exists()
