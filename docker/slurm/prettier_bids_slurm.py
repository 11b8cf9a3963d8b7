#!/usr/bin/env python3
"""``prettier-bids`` with Nipype's SLURM plugin: each image's workflow nodes become SLURM jobs.

Per-image parallelism for one large participant-level run (the array script gives one job per
participant instead). This process only builds the graph and submits/polls jobs, so run it on a
login node or in a small (1 CPU) job; the work directory (-w) must be on a file system that the
compute nodes share, and the installed package must be the same on every node (the jobs run
this Python: ``sys.executable``). Not for containers: the jobs run outside any image.

    python docker/slurm/prettier_bids_slurm.py BIDS_DIR OUTPUT_DIR participant \\
        -w /shared/scratch/prettier_work [prettier-bids options] \\
        --sbatch-args "--cpus-per-task=2 --mem=8G --time=01:00:00" --max-jobs 100

Options of this wrapper (every other argument goes to prettier-bids unchanged):
  --sbatch-args ARGS   sbatch options of every node's job (default: $PRETTIER_SBATCH_ARGS or
                       "--cpus-per-task=2 --mem=8G")
  --max-jobs N         jobs queued at once (default: 100)
  --poll-seconds S     how often squeue is asked (default: 5)
"""

from __future__ import annotations

import os
import sys


def split_args(argv):
    own = {"--sbatch-args": None, "--max-jobs": "100", "--poll-seconds": "5"}
    rest, i = [], 0
    while i < len(argv):
        arg = argv[i]
        key, eq, val = arg.partition("=")
        if key in own:
            if eq:
                own[key] = val
                i += 1
            elif i + 1 < len(argv):
                own[key] = argv[i + 1]
                i += 2
            else:
                sys.exit(f"prettier_bids_slurm: {key} needs a value")
            continue
        rest.append(arg)
        i += 1
    return own, rest


#: stderr as it was at the start: prettier-bids points fd 2 at /dev/null before its SIGTERM clean-up, which is when
#: the cancelled jobs (or those that could not be cancelled) must be named
_STDERR = os.dup(2)


def _say(text):
    try:
        os.write(_STDERR, text.encode(errors="replace"))
    except OSError:
        pass


def _number(key, text, kind, low, high=10 ** 6):
    try:
        value = kind(text)
        if not low <= value <= high:
            raise ValueError
    except ValueError:
        sys.stderr.write(f"prettier_bids_slurm: error: {key} must be a number from {low} to {high}, not {text!r}\n")
        sys.exit(64)
    return value


def cancel_pending(plugins):
    """``scancel`` the jobs the SLURM plugins still wait for (a run stopped by SIGTERM or Ctrl-C: its jobs would
    go on writing into the work directory after this process and its lock are gone). Returns their ids."""
    import subprocess

    ids = sorted({str(t) for plugin in plugins for t in getattr(plugin, "_pending", {})})
    if ids:
        try:
            subprocess.run(["scancel", *ids], check=False, timeout=60, capture_output=True)
            _say(f"prettier_bids_slurm: cancelled {len(ids)} job(s) still queued or running: {' '.join(ids)}\n")
        except (OSError, subprocess.SubprocessError) as exc:
            _say(f"prettier_bids_slurm: warning: could not cancel job(s) {' '.join(ids)} ({exc}): cancel them with "
                 "scancel before rerunning\n")
    return ids


def main(argv=None):
    own, rest = split_args(list(sys.argv[1:] if argv is None else argv))
    if "-h" in rest or "--help" in rest:
        print(__doc__)
    sbatch_args = own["--sbatch-args"] or os.environ.get("PRETTIER_SBATCH_ARGS", "--cpus-per-task=2 --mem=8G")
    plugin_args = {"sbatch_args": sbatch_args, "max_jobs": _number("--max-jobs", own["--max-jobs"], int, 1)}
    poll = _number("--poll-seconds", own["--poll-seconds"], float, 0.1)

    import getpass

    from nipype import config

    os.environ.setdefault("LOGNAME", getpass.getuser())  # Nipype's SLURM plugin names jobs after it
    config.set("execution", "poll_sleep_duration", str(poll))
    import nipype.pipeline.plugins as nipype_plugins
    from nipype.pipeline.plugins.slurm import SLURMPlugin

    from prettier_bids.cli import execution

    plugins = []

    class TrackedSLURMPlugin(SLURMPlugin):
        """Nipype's SLURM plugin, remembered so that its pending jobs can be cancelled when the run stops."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            plugins.append(self)

    nipype_plugins.SLURMPlugin = TrackedSLURMPlugin  # what Workflow.run(plugin="SLURM") instantiates

    def slurm_plugin(config):
        """Replaces prettier-bids' Linear/MultiProc choice (``cli.execution.plugin_settings``)."""
        return "SLURM", dict(plugin_args)

    execution.plugin_settings = slurm_plugin
    from prettier_bids.cli import runner
    from prettier_bids.cli.run import main as run_main

    plain_abandon = runner.abandon_run

    def abandon_and_cancel(root):
        """What prettier-bids does on SIGTERM or Ctrl-C (it then exits at once), with the queued jobs cancelled
        first: its own clean-up only stops local workers."""
        cancel_pending(plugins)
        plain_abandon(root)

    runner.abandon_run = abandon_and_cancel

    try:
        return run_main(rest)
    finally:
        cancel_pending(plugins)


if __name__ == "__main__":
    sys.exit(main())
