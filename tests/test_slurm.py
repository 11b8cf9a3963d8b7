"""Archive batch mode (docker/slurm/): the summary merger, the local engine, and a real SLURM run.

The SLURM tests run in CI (docker/ci.sh sets PRETTIER_TEST_SLURM=1 after installing SLURM) and need root: they start a single-node
cluster on localhost with docker/slurm/local_cluster.sh (munge, slurmctld, slurmd; install the
Debian packages first with `bash docker/slurm/local_cluster.sh install`, or let docker/ci.sh do it).

    PRETTIER_TEST_SLURM=1 python -m pytest -q tests/test_slurm.py
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_BIDS = REPO / "data" / "test_bids"
SLURM = REPO / "docker" / "slurm"
OPT_IN = "PRETTIER_TEST_SLURM"
PARTICIPANTS = [line.split("\t")[0][4:] for line in
                (TEST_BIDS / "participants.tsv").read_text().splitlines()[1:] if line.strip()]


def method_args():
    """Cubic when no weights are shipped (for runs that cannot see a host weights file)."""
    if list((REPO / "prettier_bids" / "data" / "weights").glob("*.pt")):
        return []
    return ["--method", "cubic"]


@pytest.fixture(scope="module")
def model_args(tmp_path_factory):
    """The shipped model, else a tiny randomly initialised network (--weights): the network runs."""
    if list((REPO / "prettier_bids" / "data" / "weights").glob("*.pt")):
        return []
    import torch

    from prettier_bids.sr.models import build_model, save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.manual_seed(0)
    net, arch, cfg = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)
    save_weights(path, net, arch, cfg, meta={"note": "random init, tests only"})
    return ["--weights", str(path)]


def app_env(**extra):
    env = dict(os.environ)
    env["PRETTIER_CMD"] = f"{sys.executable} -m prettier_bids.cli.run"  # this checkout's package
    env.update(extra)
    return env


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def check_batch(out, participants):
    """Every participant has rows, none failed, every listed output exists."""
    rows = read_tsv(out / "prettier" / "logs" / "batch_summary.tsv")
    assert {r["participant_id"] for r in rows} == {f"sub-{p}" for p in participants}
    assert all(r["status"] in ("done", "skipped") for r in rows), rows
    done = [r for r in rows if r["status"] == "done"]
    assert done
    for r in done:
        for rel in r["outputs"].split(","):
            assert (out / "prettier" / rel).is_file(), rel
    return rows


#: Two runs of the same image with different thread counts (a SLURM job has 1 CPU, the reference run all of
#: them) agree only up to float rounding: torch's convolutions and BLAS sum in an order that depends on the
#: threads. So the stored images may differ by one unit where a float value sat on a rounding edge (integer
#: outputs; CI saw it in a few voxels) and float maps (the consistency map) by rounding error.
MAX_INT_DIFF, MAX_INT_SHARE, FLOAT_RTOL = 1, 1e-3, 1e-5


def same_niftis(a, b):
    """Same files, affines, shapes and dtypes; the voxels equal up to the thread-count rounding above."""
    import nibabel as nib

    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.nii.gz"))
    for rel in files:
        ia, ib = nib.load(a / rel), nib.load(b / rel)
        assert np.allclose(ia.affine, ib.affine)
        da, db = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
        assert da.shape == db.shape and da.dtype == db.dtype, rel
        diff = np.abs(da.astype(np.float64) - db)
        if np.issubdtype(da.dtype, np.integer):
            assert diff.max() <= MAX_INT_DIFF and np.mean(diff > 0) <= MAX_INT_SHARE, (rel, diff.max(),
                                                                                       np.mean(diff > 0))
        else:
            assert diff.max() <= FLOAT_RTOL * max(float(np.abs(da).max()), 1e-12), (rel, diff.max())


# ------------------------------------------------------------------------------ batch_summary.py

SUMMARY_HEADER = "participant_id\tsession\tcontrast\tinput\tstatus\treason\toutputs\n"


def _summary(root, run_id, rows):
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "logs" / f"summary_{run_id}.tsv").write_text(
        SUMMARY_HEADER + "".join("\t".join(r) + "\n" for r in rows))


def test_batch_summary_keeps_the_latest_row_and_explains_missing(tmp_path):
    root = tmp_path / "out" / "prettier"
    _summary(root, "20240101-100000_aaaa", [
        ("sub-01", "n/a", "FLAIR", "sub-01/anat/sub-01_FLAIR.nii.gz", "failed", "sr failed: boom", "n/a"),
        ("sub-02", "n/a", "FLAIR", "sub-02/anat/sub-02_FLAIR.nii.gz", "done", "processed in this run", "x.nii.gz")])
    _summary(root, "20240102-100000_bbbb", [
        ("sub-01", "n/a", "FLAIR", "sub-01/anat/sub-01_FLAIR.nii.gz", "done", "processed in this run", "y.nii.gz")])
    (tmp_path / "all.txt").write_text("01\nsub-02\n03\n04\n05\n")
    status = tmp_path / "status"
    status.mkdir()
    (status / "task_2.status").write_text("sub-03\t66\t12\t77\n")
    (status / "task_3.status").write_text("sub-04\t18\t3\t78\n")
    script = [sys.executable, str(SLURM / "batch_summary.py"), str(tmp_path / "out")]
    proc = subprocess.run(script + ["--participants", str(tmp_path / "all.txt"), "--status-dir", str(status)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {r["participant_id"]: r for r in read_tsv(root / "logs" / "batch_summary.tsv")}
    assert rows["sub-01"]["status"] == "done" and rows["sub-01"]["run_id"] == "20240102-100000_bbbb"
    assert rows["sub-02"]["status"] == "done"
    assert rows["sub-03"]["status"] == "failed" and "exit 66" in rows["sub-03"]["reason"]
    assert "weights" in rows["sub-03"]["reason"]
    assert rows["sub-04"]["status"] == "skipped"
    assert rows["sub-05"]["status"] == "failed" and "never finished" in rows["sub-05"]["reason"]
    assert "5 participant(s)" in proc.stderr
    # --check fails while anything failed; --todo lists what a resumed batch must submit
    assert subprocess.run(script + ["--participants", str(tmp_path / "all.txt"), "--check"],
                          capture_output=True).returncode == 1
    todo = subprocess.run(script + ["--participants", str(tmp_path / "all.txt"), "--todo"],
                          capture_output=True, text=True).stdout.split()
    assert todo == ["03", "04", "05"]


def test_batch_summary_skips_hand_edited_rows_without_a_traceback(tmp_path):
    """A summary row cut short (``sub-05`` alone) or saved as Latin-1 was a TypeError / UnicodeDecodeError
    traceback (helper-24)."""
    root = tmp_path / "out" / "prettier"
    _summary(root, "20240101-100000_aaaa", [
        ("sub-01", "n/a", "FLAIR", "sub-01/anat/sub-01_FLAIR.nii.gz", "done", "processed in this run", "x.nii.gz")])
    with open(root / "logs" / "summary_20240101-100000_aaaa.tsv", "ab") as fh:
        fh.write(b"sub-05\n" + "sub-06\tn/a\tFLAIR\tsub-06/anat/caf\u00e9.nii.gz\tdone\tok\tn/a\n".encode("latin-1"))
    proc = subprocess.run([sys.executable, str(SLURM / "batch_summary.py"), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 row(s) without participant_id, input or status skipped" in proc.stderr
    rows = {r["participant_id"] for r in read_tsv(root / "logs" / "batch_summary.tsv")}
    assert rows == {"sub-01", "sub-06"}


def _fake_app(tmp_path):
    """A stand-in for prettier-bids that records its arguments and, on SIGTERM, exits 143 as prettier-bids does."""
    fake = tmp_path / "fake.sh"
    fake.write_text("#!/usr/bin/env bash\necho \"$@\" > \"$FAKE_ARGS\"\ntrap 'exit 143' TERM\nsleep 30 & wait\n")
    fake.chmod(0o755)
    (tmp_path / "parts.txt").write_text("02\n")
    return dict(os.environ, SLURM_ARRAY_TASK_ID="0", PRETTIER_BIDS=str(TEST_BIDS), PRETTIER_OUT=str(tmp_path / "out"),
                PRETTIER_LIST=str(tmp_path / "parts.txt"), PRETTIER_STATUS_DIR=str(tmp_path / "status"),
                PRETTIER_CMD=str(fake), FAKE_ARGS=str(tmp_path / "args.txt"))


def test_an_array_task_stopped_by_sigterm_records_143_and_all_node_memory_passes_no_limit(tmp_path):
    """--mem=0 (all of the node's memory) gave --mem-gb 0.0: every task exit 64; scancel's SIGTERM killed the
    script before its status file (the summary said 'never finished') (helper-24)."""
    import signal

    env = _fake_app(tmp_path)
    env["SLURM_MEM_PER_NODE"] = "0"
    proc = subprocess.Popen(["bash", str(SLURM / "prettier_array.sbatch"), "--method", "cubic"], env=env,
                            start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "args.txt").exists() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert (tmp_path / "status" / "task_0.status").read_text().split("\t")[:2] == ["sub-02", "143"]
    assert "--mem-gb" not in (tmp_path / "args.txt").read_text()


def test_a_dry_run_writes_nothing_and_output_dir_in_bids_dir_is_refused(tmp_path):
    """--dry-run wrote the batch folder (into BIDS_DIR when OUTPUT_DIR was BIDS_DIR), and a real run wrote its task
    logs and status there before every task failed with 64 (helper-24)."""
    bids = tmp_path / "bids"
    shutil.copytree(TEST_BIDS, bids)
    before = sorted(p.relative_to(bids) for p in bids.rglob("*"))
    batch = ["bash", str(SLURM / "prettier_batch.sh")]
    for out, extra in ((bids, ["--dry-run"]), (bids, []), (bids / "foo", [])):
        proc = subprocess.run(batch + [str(bids), str(out), "--engine", "local", *extra, "--", "--method", "cubic"],
                              capture_output=True, text=True, env=app_env())
        assert proc.returncode == 64, proc.stderr
    proc = subprocess.run(batch + [str(bids), str(tmp_path / "out"), "--engine", "local", "--dry-run"],
                          capture_output=True, text=True, env=app_env(TMPDIR=str(tmp_path)))
    assert proc.returncode == 0 and "dry run" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("prettier_batch_dry.*"))
    link = tmp_path / "link"  # BIDS_DIR through a symlink: the same dataset (helper-27)
    link.symlink_to(bids)
    proc = subprocess.run(batch + [str(link), str(bids), "--engine", "local"], capture_output=True, text=True,
                          env=app_env())
    assert proc.returncode == 64, proc.stderr
    proc = subprocess.run(batch + [str(link), str(bids / "derivatives"), "--engine", "local", "--dry-run"],
                          capture_output=True, text=True, env=app_env(TMPDIR=str(tmp_path)))
    assert proc.returncode == 0 and f"{len(PARTICIPANTS)} of {len(PARTICIPANTS)} participant(s)" in proc.stderr, \
        proc.stderr
    assert sorted(p.relative_to(bids) for p in bids.rglob("*")) == before


def test_the_nipype_slurm_wrapper_cancels_its_jobs_on_sigterm(tmp_path):
    """It exited 143 and left its submitted jobs running: they wrote into the work directory after its lock was
    gone (helper-24). sbatch, squeue and scancel are stand-ins here: jobs stay queued until cancelled."""
    import signal

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sbatch": 'n=$(( $(cat "$FAKE/count" 2>/dev/null || echo 100) + 1 )); echo $n > "$FAKE/count"\n'
                         'echo "Submitted batch job $n"\n',
               "squeue": 'echo JOBID; echo "$2"\n',
               "scancel": 'echo "$@" >> "$FAKE/scancel.log"\n'}
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    env = app_env(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(SLURM / "prettier_bids_slurm.py"), str(TEST_BIDS), str(tmp_path / "out"),
                             "participant", "--participant-label", "02", "--method", "cubic", "--skip-bids-validation",
                             "-w", str(tmp_path / "w"), "--poll-seconds", "0.5"], env=env, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "count").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.kill(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    submitted = int((tmp_path / "count").read_text())
    cancelled = (tmp_path / "scancel.log").read_text().split()
    assert cancelled and set(cancelled) <= {str(i) for i in range(101, submitted + 1)}
    assert f"cancelled {len(cancelled)} job(s) still queued or running" in err  # said, though stderr was closed
    bad = subprocess.run([sys.executable, str(SLURM / "prettier_bids_slurm.py"), "a", "b", "participant",
                          "--max-jobs", "abc"], capture_output=True, text=True)
    assert bad.returncode == 64 and bad.stderr.strip() == ("prettier_bids_slurm: error: --max-jobs must be a number "
                                                          "from 1 to 1000000, not 'abc'")


def test_batch_summary_todo_sees_new_input_files(tmp_path):
    root = tmp_path / "out" / "prettier"
    _summary(root, "20240101-100000_aaaa", [
        ("sub-01", "n/a", "FLAIR", "sub-01/anat/sub-01_FLAIR.nii.gz", "done", "processed", "y.nii.gz")])
    bids = tmp_path / "bids"
    (bids / "sub-01" / "ses-2" / "anat").mkdir(parents=True)
    new = bids / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_FLAIR.nii.gz"
    new.write_bytes(b"")
    (tmp_path / "all.txt").write_text("01\n")
    script = [sys.executable, str(SLURM / "batch_summary.py"), str(tmp_path / "out"), "--todo",
              "--participants", str(tmp_path / "all.txt")]
    summary = root / "logs" / "summary_20240101-100000_aaaa.tsv"
    os.utime(new, (summary.stat().st_mtime + 60,) * 2)
    assert subprocess.run(script + ["--bids", str(bids)], capture_output=True, text=True).stdout.split() == ["01"]
    os.utime(new, (summary.stat().st_mtime - 60,) * 2)
    assert subprocess.run(script + ["--bids", str(bids)], capture_output=True, text=True).stdout.split() == []


# ------------------------------------------------------------------------------ local engine (no scheduler)

@pytest.mark.slow
def test_local_batch_processes_everyone_and_resumes(model_args, tmp_path):
    out = tmp_path / "out"
    cmd = ["bash", str(SLURM / "prettier_batch.sh"), str(TEST_BIDS), str(out), "--engine", "local",
           "--max-parallel", "1", "--cpus", "2", "--work-root", str(tmp_path / "work"), "--", *model_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=app_env(), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{len(PARTICIPANTS)} of {len(PARTICIPANTS)} participant(s) to process" in proc.stderr
    check_batch(out, PARTICIPANTS)
    assert not list((tmp_path / "work").rglob("*.pklz")), "work dirs of successful tasks are removed"
    # resumed: nothing left to do
    proc = subprocess.run(cmd, capture_output=True, text=True, env=app_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"0 of {len(PARTICIPANTS)} participant(s) to process" in proc.stderr


# ------------------------------------------------------------------------------ real SLURM on localhost

@pytest.fixture(scope="module")
def slurm_cluster():
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"opt-in: set {OPT_IN}=1 (starts a single-node SLURM cluster on localhost; needs root)")
    if os.geteuid() != 0:
        pytest.skip("starting munged/slurmctld/slurmd needs root")
    if not all(shutil.which(x) for x in ("slurmctld", "slurmd", "sbatch", "munged")):
        pytest.skip("SLURM not installed (bash docker/slurm/local_cluster.sh install)")
    script = SLURM / "local_cluster.sh"
    was_running = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    proc = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        why = f"could not start SLURM: {proc.stderr.strip()[-500:]}"
        if os.environ.get("PRETTIER_TEST_SLURM_REQUIRED") == "1":  # docker/ci.sh installed it: a real failure
            pytest.fail(why)
        pytest.skip(why)
    yield
    if not was_running:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_args):
    """One local run over the whole test dataset, for comparison."""
    out = tmp_path_factory.mktemp("ref")
    proc = subprocess.run([sys.executable, "-m", "prettier_bids.cli.run", str(TEST_BIDS), str(out), "participant",
                           "-w", str(tmp_path_factory.mktemp("refwork")), *model_args],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out / "prettier"


@pytest.mark.slow
def test_slurm_array_processes_every_participant(slurm_cluster, reference, model_args, tmp_path):
    out = tmp_path / "out"
    t0 = time.time()
    cmd = ["bash", str(SLURM / "prettier_batch.sh"), str(TEST_BIDS), str(out), "--engine", "slurm",
           "--cpus", "1", "--mem", "2G", "--time", "00:30:00", "--max-parallel", "2", "--wait",
           "--work-root", str(tmp_path / "work"), "--", *model_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=app_env(), timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    sys.stderr.write(f"SLURM array over {len(PARTICIPANTS)} participants: {time.time() - t0:.0f} s\n")
    check_batch(out, PARTICIPANTS)
    # the batch folder (batch_<date>_<pid>/), not batch_summary.tsv beside it: which of the two a bare
    # glob("batch_*") returned first depended on directory order
    batches = [p for p in (out / "prettier" / "logs").glob("batch_*") if p.is_dir()]
    assert len(batches) == 1, batches
    batch = batches[0]
    logs = sorted(batch.glob("slurm_*_*.log"))
    assert len(logs) == len(PARTICIPANTS)  # one array task per participant
    for log in logs:
        assert "finished with exit code 0" in log.read_text(), log.read_text()[-2000:]
    statuses = [p.read_text().split("\t") for p in (batch / "status").glob("task_*.status")]
    assert sorted(s[0] for s in statuses) == [f"sub-{p}" for p in PARTICIPANTS]
    assert all(s[1] == "0" for s in statuses)
    same_niftis(reference, out / "prettier")
    # resumed batch: nothing to submit
    proc = subprocess.run(cmd, capture_output=True, text=True, env=app_env(), timeout=600)
    assert proc.returncode == 0 and f"0 of {len(PARTICIPANTS)} participant(s)" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_nipype_slurm_plugin_runs_images_as_jobs(slurm_cluster, reference, model_args, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    label = PARTICIPANTS[0]
    proc = subprocess.run([sys.executable, str(SLURM / "prettier_bids_slurm.py"), str(TEST_BIDS), str(out),
                           "participant", "--participant-label", label, "-w", str(work), *model_args,
                           "--sbatch-args", "--cpus-per-task=1 --mem=2G", "--poll-seconds", "1"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "with SLURM" in proc.stderr
    scripts = list(work.rglob("batch/batchscript_*.sh"))
    assert scripts, "Nipype submitted no SLURM job"
    ref = reference / f"sub-{label}"
    same_niftis(ref, out / "prettier" / f"sub-{label}")


@pytest.mark.slow
@pytest.mark.docker
def test_slurm_array_with_the_docker_image(slurm_cluster, tmp_path):
    if os.environ.get("PRETTIER_TEST_DOCKER") != "1":
        pytest.skip("also needs PRETTIER_TEST_DOCKER=1 and a built image")
    image = os.environ.get("PRETTIER_TEST_IMAGE", "prettier:latest")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.skip(f"no image {image} (bash docker/build.sh)")
    out = tmp_path / "out"
    (tmp_path / "list.txt").write_text(PARTICIPANTS[-1] + "\n")
    proc = subprocess.run(["bash", str(SLURM / "prettier_batch.sh"), str(TEST_BIDS), str(out), "--engine", "slurm",
                           "--runner", "docker", "--image", image, "--participants", str(tmp_path / "list.txt"),
                           "--cpus", "2", "--mem", "2G", "--wait", "--work-root", str(tmp_path / "work"),
                           "--", *method_args()], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_batch(out, PARTICIPANTS[-1:])
