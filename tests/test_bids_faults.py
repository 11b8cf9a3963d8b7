"""prettier-bids on faulty datasets and runs: output inside the dataset, malformed sidecars, the validator, the
exit-code table, kill -9 and SIGTERM at any moment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest

from _bids_support import REPO, copy_dataset, read_tsv
from _fault_support import sha, temporaries
from prettier_bids import exitcodes
from prettier_bids.cli import run as bids_cli
from prettier_bids.cli import validator
from prettier_bids.cli.sr import main as sr_main


# --------------------------------------------------------------------------------------------
# prettier-bids: output location, malformed sidecars and --strict, the validator, exit codes, kill -9
# --------------------------------------------------------------------------------------------

def _bids(capsys, *args):
    from _bids_support import app_environment

    with app_environment():
        rc = bids_cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_output_inside_bids_not_derivatives(tmp_path, capsys):
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


def test_nothing_created_before_validation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(validator, "run_bids_validator", lambda d: ("the input is not a valid BIDS dataset (x)", "{}"))
    out = tmp_path / "out"
    rc, err = _bids(capsys, REPO / "data/test_bids", out, "participant", "--method", "cubic", "-w", tmp_path / "w")
    assert rc == 16 and "not a valid BIDS dataset" in err
    assert not out.exists() and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_malformed_sidecar_header_warning_and_strict(tmp_path, capsys, monkeypatch):
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


def test_validator_found_beside_python(tmp_path, monkeypatch):
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


def test_one_exit_code_table(capsys):
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
def test_kill_9_leaves_no_orphan_workers(tmp_path, tiny_weights):
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


@pytest.mark.parametrize("script", ['echo "Fatal process out of memory: Oilpan" >&2; exit 133', "echo not-json"])
def test_a_validator_that_crashes_stops_the_run_instead_of_skipping_validation(tmp_path, monkeypatch, script):
    """Under `ulimit -v` bids-validator-deno dies with no report; the run said 'validation skipped' and
    processed an invalid dataset with exit 0 (helper-26)."""
    exe = tmp_path / "bids-validator-deno"
    exe.write_text("#!/bin/sh\n" + script + "\n")
    exe.chmod(0o755)
    monkeypatch.setattr(validator, "find_validator", lambda: str(exe))
    problem, report = validator.run_bids_validator(tmp_path)
    assert report is None and problem.startswith("the BIDS validator bids-validator-deno could not check the dataset (")
    assert "--skip-bids-validation" in problem and "\n" not in problem
    if "Oilpan" in script:
        assert "exit 133: Fatal process out of memory: Oilpan" in problem
    monkeypatch.setattr(validator, "address_space_left", lambda: 1 << 30)  # ulimit -v: it never runs (helper-27)
    problem, _ = validator.run_bids_validator(tmp_path)
    assert "cannot run under this address-space limit (ulimit -v, SGE h_vmem;" in problem


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs (root with mount rights only; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount rights for a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_exit_73_in_one_line(tmp_path, tiny_disk):
    """A full OUTPUT_DIR was logging's 28-line traceback and 'unexpected OSError' (exit 1); a full work-dir disk
    left an empty lock file (helper-26)."""
    from _bids_support import copy_dataset

    bids = copy_dataset(tmp_path / "bids")
    (tiny_disk / "out").mkdir()
    fd = os.open(tiny_disk / "fill", os.O_WRONLY | os.O_CREAT)  # fill it to the last byte, unbuffered
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    run = [sys.executable, "-m", "prettier_bids.cli.run", str(bids)]
    opts = ["participant", "--participant-label", "02", "--method", "cubic", "--nprocs", "1", "--skip-bids-validation"]
    proc = subprocess.run(run + [str(tiny_disk / "out")] + opts + ["-w", str(tmp_path / "w")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 73, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("prettier-bids: error: no space left on the device")
    proc = subprocess.run(run + [str(tmp_path / "out")] + opts + ["-w", str(tiny_disk / "w")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 73 and "No space left on device" in proc.stderr, proc.stderr[-2000:]
    assert not (tiny_disk / "w" / ".prettier-bids.lock").exists()


@contextlib.contextmanager
def _read_only_folder(folder):
    """``folder`` read-only for this process: chmod a-w, or a read-only bind mount where this is root (which
    ignores the mode bits); skipped where neither can be done."""
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(mode & ~0o222)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("needs mount rights for a read-only bind mount (this runs as root)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("which", ["prettier", "prettier/sub-02/anat", "prettier/sub-02/figures"])
def test_an_unwritable_folder_below_output_dir_is_exit_73_before_any_work(tmp_path, which):
    """OUTPUT_DIR writable but OUTPUT_DIR/prettier, a subject's anat or figures folder read-only (another user's,
    a read-only share): exit 1 `unexpected PermissionError` after the checks, or an image `failed` with a crash
    file after the work, a log file and summary written (helper-29)."""
    from _bids_support import run_here

    bids, out = copy_dataset(tmp_path / "bids"), tmp_path / "out"
    opts = ["participant", "--participant-label", "02", "--contrast", "T1w", "--method", "cubic", "--nprocs", "1",
            "--skip-bids-validation", "-w", tmp_path / "w"]
    assert run_here(bids, out, *opts).returncode == 0
    (out / "prettier/sub-02/anat/sub-02_desc-cubic_T1w.json").unlink()  # to be redone
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with _read_only_folder(out / which):
        proc = run_here(bids, out, *opts)
    assert proc.returncode == exitcodes.CANTCREAT, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert lines == [f"prettier-bids: error: cannot write to the output folder {out / which}: {out / which} is not "
                     "writable"], proc.stderr[-2000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # nothing written, no log


_SLOW_RUN = """
import sys, time
import prettier_bids.cli.runner as runner
runner.participant = lambda *args: (print("working", flush=True), time.sleep(120))
from prettier_bids.cli.run import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_participant_in_use_by_another_run_is_exit_75_whatever_the_work_dir(tmp_path):
    """Two runs of one participant at once with their own work directories (a job resubmitted while the first still
    ran, overlapping --participant-label lists, --reports-only during a run): the first run's report dropped the
    second's output in progress ('changed since the sidecar was written') and removed its figures, the second run
    then exit 1 with it `failed` (helper-29). Now the second exits 75 at once, naming the first's PID; other
    participants, and other sessions of the participant, run beside it; the lock goes with the process."""
    from _bids_support import run_here

    bids, out = copy_dataset(tmp_path / "bids"), tmp_path / "out"
    opts = ["participant", "--method", "cubic", "--contrast", "FLAIR", "--nprocs", "1", "--skip-bids-validation"]
    holders = [subprocess.Popen(  # runs that are working on sub-02, and on sub-01's ses-1
        [sys.executable, "-c", _SLOW_RUN, str(bids), str(out), *opts, *labels, "-w", str(tmp_path / f"held{k}")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        for k, labels in enumerate((["--participant-label", "02"],
                                    ["--participant-label", "01", "--session-label", "1"]))]
    try:
        assert [h.stdout.readline().strip() for h in holders] == ["working", "working"]
        before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
        for extra, key, holder in ((["--participant-label", "02", "03"], "sub-02", holders[0]),
                                   (["--participant-label", "02", "--reports-only"], "sub-02", holders[0]),
                                   (["--participant-label", "01"], "sub-01_ses-1", holders[1])):
            proc = run_here(bids, out, *opts, *extra, "-w", tmp_path / "w")
            assert proc.returncode == exitcodes.TEMPFAIL, proc.stderr[-2000:]
            lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
            assert lines == [f"prettier-bids: error: {key} of {out / 'prettier'} is in use by another run (PID "
                             f"{holder.pid}): wait for it to finish, or leave it out of this run (one run per "
                             "participant and session at a time)"], proc.stderr[-2000:]
            assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before  # no work dir
        for extra in (["--participant-label", "03"], ["--participant-label", "01", "--session-label", "2"]):
            proc = run_here(bids, out, *opts, *extra, "-w", tmp_path / "w3")  # another participant, another session
            assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "prettier/sub-03/anat/sub-03_desc-cubic_FLAIR.json").is_file()
        assert (out / "prettier/sub-01/ses-2/anat/sub-01_ses-2_desc-cubic_FLAIR.json").is_file()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    proc = run_here(bids, out, *opts, "--participant-label", "02", "-w", tmp_path / "w")  # gone with its process
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_validator_dies_with_prettier_bids_on_kill_9(tmp_path):
    """kill -9 of prettier-bids (the OOM killer) while the BIDS validator ran left the validator orphaned, reading
    the dataset for as long as it takes (minutes and gigabytes on a large archive; the 600 s timeout died with its
    parent) (helper-29). Now it gets SIGKILL with its parent (processes.die_with_parent)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "validator.pid"
    fake = bin_dir / "bids-validator-deno"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    parent = subprocess.Popen([sys.executable, "-c", "import sys; from prettier_bids.cli.validator import "
                               "run_bids_validator; run_bids_validator(sys.argv[1])", str(tmp_path)], env=env)
    try:
        deadline = time.time() + 60
        while not (pid_file.is_file() and pid_file.read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the validator outlived prettier-bids killed with -9")
