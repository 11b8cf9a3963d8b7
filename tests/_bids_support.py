"""Shared helpers of the BIDS-App tests (imported by tests/test_bids_*.py; not a test module).

The ``tiny_weights`` fixture (random-init 1-block EDSR, session scope) comes from tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_BIDS = REPO / "data" / "test_bids"


def copy_dataset(dest, read_only=False):
    shutil.copytree(TEST_BIDS, dest)
    if read_only:
        set_read_only(dest, True)
    return dest


def set_read_only(root, on=True):
    """chmod -R a-w (or u+w back). Root ignores these bits: tests also compare snapshots."""
    for path in sorted(Path(root).rglob("*"), reverse=True) + [Path(root)]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) if on else mode | stat.S_IWUSR)


def snapshot(root):
    """{relative path: (sha256, mtime_ns, mode)} of every file and folder under ``root``."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[path.relative_to(root).as_posix()] = (digest, st.st_mtime_ns, st.st_mode)
    return out


@contextlib.contextmanager
def app_environment(**env):
    """Run the app in-process without leaking its global settings into other tests."""
    import logging

    import torch

    threads = torch.get_num_threads()
    loggers = [logging.getLogger(n) for n in ("prettier_bids", "prettier_bids.sr")]
    saved = [(lg, list(lg.handlers), lg.propagate, lg.level) for lg in loggers]
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            for key in ("OMP_NUM_THREADS", "NIPYPE_NO_ET"):  # the app sets these; restore them afterwards
                mp.setenv(key, os.environ.get(key, "1"))
            yield mp
    finally:
        torch.set_num_threads(threads)
        for lg, handlers, propagate, level in saved:
            lg.handlers[:] = handlers
            lg.propagate, lg.level = propagate, level


def run_app(*args, **kwargs):
    """``python -m prettier_bids.cli.run ARGS`` in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "prettier_bids.cli.run", *map(str, args)], capture_output=True,
                          text=True, cwd=kwargs.pop("cwd", REPO), timeout=kwargs.pop("timeout", 300), **kwargs)


def _main_here(args):
    """``prettier-bids ARGS`` in this process: its exit code, returned or raised (argparse)."""
    from prettier_bids.cli import run as cli

    try:
        return cli.main(args)
    except SystemExit as exc:
        return exc.code


def run_here(*args, cwd=None):
    """:func:`run_app` in this process (CompletedProcess with the exit code, stdout and stderr; never a
    traceback): no interpreter start-up and no imports per run (about 4 s each), for tests of what a run does
    to the files rather than of the process (signals, exit at import time: :func:`run_app`)."""
    import io

    args = [str(a) for a in args]
    assert "participant" not in args or "--reports-only" in args or "--nprocs" in args, \
        "run_here: a participant run needs --nprocs 1 (MultiProc would fork the test process)"
    out, err = io.StringIO(), io.StringIO()
    with app_environment() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if cwd is not None:
            mp.chdir(cwd)
        code = _main_here(args)
    assert "Traceback" not in err.getvalue(), err.getvalue()[-3000:]
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


NO_VALIDATOR = "bids-validator-deno is not installed (pip install bids-validator-deno)"


def validator():
    """The bids-validator-deno executable, or None."""
    return shutil.which("bids-validator-deno")


def validator_errors(path):
    import json

    exe = validator()
    proc = subprocess.run([exe, str(path), "--format", "json"], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    return [i for i in report["issues"]["issues"] if i["severity"] == "error"]


def read_tsv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def run_in_process(capsys, *args):
    """Exit code (returned or raised by argparse) and the non-empty stderr lines of an in-process
    ``prettier-bids`` run; never a traceback."""
    with app_environment():
        code = _main_here([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [ln for ln in err.splitlines() if ln.strip()]
