"""What another user, or a second run, can do to a prettier-bids run through the folders it uses (issue 24, third
adversarial round): the work directory (cases 2 and 19), the output folders and the raw dataset (cases 4 and 22).

* a work directory that is not the running user's own, or that others can write, is refused (exit 64): Nipype
  unpickles the ``result_*.pklz`` it finds there, and their names depend only on the dataset and the options;
* one run at a time per work directory: a second one exits 75 at once, naming the first one's PID; the lock goes
  with the process (exit, Ctrl-C, SIGTERM, kill -9);
* every folder a run writes resolves below OUTPUT_DIR/prettier and out of BIDS_DIR, or the run is refused (64)
  before anything is written; a raw file with a ``desc`` entity is never an input.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _bids_support import TEST_BIDS, copy_dataset, run_in_process, snapshot
from prettier_bids.workflows.base import main_wf_name


REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "docker" / "slurm" / "prettier_array.sbatch"
LOCK_NAME = ".prettier-bids.lock"  # paths.LOCK_NAME, in the work directory
# one participant, one image, no network: the cheapest real selection
COMMON = ("participant", "--method", "cubic", "--participant-label", "02", "--contrast", "T1w",
          "--skip-bids-validation")


_run = run_in_process


def _lock(folder):
    from prettier_bids.paths import FolderLock  # imported here: each test fails on its own without it

    return FolderLock(folder)


def _error(lines):
    errors = [ln for ln in lines if ln.startswith("prettier-bids: error: ")]
    assert len(errors) == 1, lines
    return errors[0]


@pytest.fixture
def no_work(monkeypatch):
    """The run stops where the work would start (after the work directory is made and locked, OUTPUT_DIR made):
    ``calls`` records the runs that got there."""
    import prettier_bids.cli.runner as runner

    calls = []

    def participant(config, models, subjects, cands):
        calls.append(config)
        return 0

    monkeypatch.setattr(runner, "participant", participant)
    return calls


# ------------------------------------------------------------------ case 2: the work directory is another user's

@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757], ids=["0777", "1777", "0757"])
def test_work_dir_writable_by_others_is_refused_before_anything_is_written(tmp_path, capsys, mode):
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(mode)
    out = tmp_path / "out"
    code, lines = _run(capsys, TEST_BIDS, out, *COMMON, "-w", work)
    assert code == 64, lines
    msg = _error(lines)
    assert f"the work directory {work} is writable by other users (mode {mode:04o})" in msg
    assert "use -w with a new folder" in msg
    assert not out.exists() and not list(work.iterdir())
    # the group level never reads the work directory: a shared one does not stop it
    code, lines = _run(capsys, TEST_BIDS, out, "group", "-w", work)
    assert code == 66 and "no participant-level outputs" in _error(lines)


def test_work_dir_owned_by_another_user_is_refused(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    other = work.stat().st_uid + 4242
    monkeypatch.setattr(os, "geteuid", lambda: other)  # the run is someone else than the folder's owner
    out = tmp_path / "out"
    code, lines = _run(capsys, TEST_BIDS, out, *COMMON, "-w", work)
    assert code == 64, lines
    assert f"the work directory {work} belongs to " in _error(lines)
    assert f"not to uid {other}" in _error(lines) or f"(uid {other})" in _error(lines)
    assert not out.exists()


def test_work_dir_holding_a_folder_others_can_write_is_refused(tmp_path, capsys):
    """The work directory is private, but a folder in it (where Nipype keeps a node's result) is not."""
    work = tmp_path / "work"
    node = work / main_wf_name() / "sub_02_wf"
    node.mkdir(parents=True)
    node.chmod(0o777)
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    assert code == 64, lines
    assert f"holds {node.relative_to(work)}, which is writable by other users" in _error(lines)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_planted_result_file_of_another_user_is_refused(tmp_path, capsys):
    work = tmp_path / "work"
    node = work / main_wf_name() / "sub_02_wf" / "sr"
    node.mkdir(parents=True)
    planted = node / "result_sr.pklz"
    planted.write_bytes(b"not loaded")
    os.chown(planted, 65534, 65534)
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    assert code == 64, lines
    assert f"holds {planted.relative_to(work)}, which belongs to " in _error(lines)
    assert not (tmp_path / "out").exists()


def test_work_dir_the_run_creates_is_not_writable_by_others_even_with_umask_0(tmp_path, capsys, no_work):
    """A new work directory passes, is made without o+w whatever the umask, and a rerun accepts it."""
    work = tmp_path / "work"
    old = os.umask(0)
    try:
        code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    finally:
        os.umask(old)
    assert code == 0, lines
    assert not work.stat().st_mode & stat.S_IWOTH
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    assert code == 0, lines
    assert len(no_work) == 2


# ------------------------------------------------------------------ case 19: two runs on one work directory

HOLD = textwrap.dedent("""
    import sys, time
    from prettier_bids.paths import FolderLock
    FolderLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_second_run_on_a_busy_work_dir_exits_75_naming_the_other_pid(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = tmp_path / "out"
        code, lines = _run(capsys, TEST_BIDS, out, *COMMON, "-w", work)
        assert code == 75, lines
        assert _error(lines) == (f"prettier-bids: error: the work directory {work} is in use by another run "
                                 f"(PID {holder.pid}): wait for it to finish, or use another -w (one work directory "
                                 "per run)")
        assert not out.exists()  # nothing of the second run
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_dead_run_does_not_block(tmp_path, capsys, no_work):
    work = tmp_path / "work"
    work.mkdir()
    (work / LOCK_NAME).write_text("999999999 somewhere\n")  # left by a run killed with -9
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    assert code == 0, lines
    assert len(no_work) == 1
    assert (work / LOCK_NAME).read_text().split()[0] == str(os.getpid())  # this run took the lock


def test_lock_is_released_when_the_run_ends_or_is_interrupted(tmp_path, capsys, monkeypatch, no_work):
    work = tmp_path / "work"
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    assert code == 0 and (work / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock = _lock(work)
    assert lock.acquire()  # released at the end of the run
    lock.release()

    import prettier_bids.cli.runner as runner

    def interrupted(*args):
        with pytest.raises(Exception) as busy:
            _lock(work).acquire()
        assert getattr(busy.value, "code", None) == 75  # held while the run works
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "participant", interrupted)
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", work)
    assert code == 130, lines
    assert lock.acquire()  # released on Ctrl-C
    lock.release()


SLOW_RUN = textwrap.dedent("""
    import sys, time
    import prettier_bids.cli.runner as runner
    runner.participant = lambda *args: time.sleep(120)
    from prettier_bids.cli.run import main
    sys.exit(main(sys.argv[1:]))
""")


def test_lock_is_released_on_sigterm(tmp_path):
    work = tmp_path / "work"
    args = [str(TEST_BIDS), str(tmp_path / "out"), *COMMON, "-w", str(work)]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            lock_file = work / LOCK_NAME
            if lock_file.exists() and lock_file.read_text().split()[:1] == [str(proc.pid)]:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the run never locked its work directory: {proc.stderr.read()[-2000:]}")
        lock = _lock(work)
        with pytest.raises(Exception) as busy:
            lock.acquire()
        assert busy.value.code == 75 and f"PID {proc.pid}" in str(busy.value)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        assert lock.acquire()  # the kernel dropped the lock with the process
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_array_task_never_uses_a_predictable_folder_in_a_shared_tmp(tmp_path):
    """docker/slurm/prettier_array.sbatch without PRETTIER_WORK_ROOT: a new private folder (mktemp -d) in the job's
    scratch ($SLURM_TMPDIR, else $TMPDIR), a new one for every task, never $TMPDIR/prettier_work/job<id>_sub-<label>
    (which another user could make first in a shared /tmp)."""
    fake = tmp_path / "fake-prettier-bids"
    fake.write_text('#!/usr/bin/env bash\nwhile [[ $# -gt 0 ]]; do [[ $1 == -w ]] && w=$2; shift; done\n'
                    'stat -c "%n %a %u" "$w" >>"$RECORD"\nexit 1\n')  # exit 1: the task keeps its work dir
    fake.chmod(0o755)
    (tmp_path / "list.txt").write_text("01\n")
    shared, scratch = tmp_path / "shared_tmp", tmp_path / "job_scratch"
    shared.mkdir()
    scratch.mkdir()
    shared.chmod(0o1777)
    record = tmp_path / "record.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "PRETTIER"))}
    env.update(PRETTIER_BIDS=str(TEST_BIDS), PRETTIER_OUT=str(tmp_path / "out"), PRETTIER_LIST=str(tmp_path /
               "list.txt"), PRETTIER_CMD=str(fake), SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_JOB_ID="77",
               TMPDIR=str(shared), RECORD=str(record))
    for extra in ({}, {}, {"SLURM_TMPDIR": str(scratch)}):
        proc = subprocess.run(["bash", str(SBATCH)], env={**env, **extra}, capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
    rows = [line.split() for line in record.read_text().splitlines()]
    assert len(rows) == 3 and len({r[0] for r in rows}) == 3, rows  # a new folder every time
    for (path, mode, uid), parent in zip(rows, (shared, shared, scratch)):
        assert Path(path).parent == parent and Path(path).name.startswith("prettier_job77_sub-01.")
        assert mode == "700" and int(uid) == os.geteuid()
    assert not (shared / "prettier_work").exists()


# ------------------------------------------------------------------ cases 4 and 22: output folders and BIDS_DIR

def test_subject_folder_symlinked_into_bids_dir_is_refused_before_anything_is_written(tmp_path, capsys):
    bids = copy_dataset(tmp_path / "bids")
    root = bids / "derivatives" / "prettier"
    root.mkdir(parents=True)
    (root / "sub-02").symlink_to("../../sub-02", target_is_directory=True)
    before = snapshot(bids / "sub-02")
    code, lines = _run(capsys, bids, bids / "derivatives", *COMMON, "-w", tmp_path / "work")
    assert code == 64, lines
    msg = _error(lines)
    assert f"the output folder {root / 'sub-02'} resolves to {(bids / 'sub-02').resolve()}, inside BIDS_DIR" in msg
    assert f"{root / 'sub-02'} -> ../../sub-02" in msg
    assert snapshot(bids / "sub-02") == before
    assert sorted(p.name for p in root.iterdir()) == ["sub-02"] and not (tmp_path / "work").exists()


@pytest.mark.parametrize("link", ["sub-02", "sub-02/anat", "logs"])
def test_output_folder_symlinked_out_of_the_output_dir_is_refused(tmp_path, capsys, link):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "out" / "prettier"
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(elsewhere, target_is_directory=True)
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *COMMON, "-w", tmp_path / "work")
    assert code == 64, lines
    assert f"resolves to {elsewhere.resolve()}, outside {root}" in _error(lines)
    assert not list(elsewhere.iterdir()) and not (tmp_path / "work").exists()


def test_output_dir_link_into_bids_dir_suggests_a_fix_other_than_the_given_output_dir(tmp_path, capsys):
    """OUTPUT_DIR = BIDS_DIR/derivatives with OUTPUT_DIR/prettier -> BIDS_DIR: the refusal names the symlink and
    does not tell the user to use the OUTPUT_DIR they gave."""
    bids = copy_dataset(tmp_path / "bids")
    out = bids / "derivatives"
    out.mkdir()
    (out / "prettier").symlink_to("..", target_is_directory=True)
    code, lines = _run(capsys, bids, out, *COMMON, "-w", tmp_path / "work")
    assert code == 64, lines
    msg = _error(lines)
    assert f"OUTPUT_DIR/prettier {out / 'prettier'} is a symlink to .. ({bids.resolve()}), inside BIDS_DIR" in msg
    assert "remove that symlink" in msg and f"use {out} " not in msg and f"use {out}," not in msg


def test_derivatives_folder_linked_into_the_raw_data_is_no_place_for_outputs(tmp_path, capsys):
    """BIDS_DIR/derivatives itself a symlink to BIDS_DIR/sub-01: the outputs would land in raw data."""
    bids = copy_dataset(tmp_path / "bids")
    (bids / "derivatives").symlink_to("sub-01", target_is_directory=True)
    code, lines = _run(capsys, bids, bids / "derivatives", *COMMON, "-w", tmp_path / "work")
    assert code == 64, lines
    msg = _error(lines)
    assert "inside BIDS_DIR but not under BIDS_DIR/derivatives/" in msg and f"use {bids / 'derivatives'}" not in msg
    assert not (bids / "sub-01" / "prettier").exists()


def test_raw_file_with_a_desc_entity_is_skipped_not_taken_as_input(tmp_path):
    """A derivative left in the raw dataset (``sub-02_desc-cubic_T1w.nii.gz``, e.g. by a run on main through a
    symlinked subject folder) is never an input: skipped, with the reason; the raw image is still selected."""
    from prettier_bids.bids import get_layout, select, summarize

    bids = copy_dataset(tmp_path / "bids")
    anat = bids / "sub-02" / "anat"
    shutil.copy(anat / "sub-02_T1w.nii.gz", anat / "sub-02_desc-cubic_T1w.nii.gz")
    (anat / "sub-02_desc-cubic_T1w.json").write_text("{}")
    cands = select(get_layout(bids, participants=["02"]), ["02"], contrasts=["T1w"])
    by_name = {c.relpath: c for c in cands}
    derived = by_name["sub-02/anat/sub-02_desc-cubic_T1w.nii.gz"]
    assert derived.status == "skipped"
    assert derived.reason.startswith("has a desc entity (desc-cubic): a derivative, not a raw image")
    assert by_name["sub-02/anat/sub-02_T1w.nii.gz"].status == "selected"
    assert "skipped  sub-02/anat/sub-02_desc-cubic_T1w.nii.gz: has a desc entity" in summarize(cands)


@pytest.mark.slow  # Nipype's import: seconds on a busy machine
def test_sink_refuses_a_folder_symlinked_out_of_the_output_root_after_the_checks(tmp_path, thick_nifti,
                                                                                 monkeypatch):
    """A symlink made after the run's checks (while it runs): the derivatives sink checks again before writing,
    so that image fails and nothing is written through the link."""
    from prettier_bids import exitcodes
    from prettier_bids.interfaces.derivatives import DerivativesSink
    from prettier_bids.paths import OutputPathError

    root = tmp_path / "out" / "prettier"
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "sub-02").symlink_to(elsewhere, target_is_directory=True)
    source = tmp_path / "bids" / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    source.parent.mkdir(parents=True)
    shutil.copy(thick_nifti, source)
    sink = DerivativesSink(base_directory=str(root), source_file=str(source), in_file=str(thick_nifti),
                           entities={"subject": "02", "suffix": "T1w", "datatype": "anat"}, desc="cubic")
    cwd = tmp_path / "node"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(OutputPathError, match="outside") as err:
        sink.run(cwd=str(cwd))
    assert err.value.code == exitcodes.USAGE
    assert not list(elsewhere.rglob("*"))
