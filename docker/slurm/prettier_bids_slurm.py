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


def main(argv=None):
    import os

    own, rest = split_args(list(sys.argv[1:] if argv is None else argv))
    if "-h" in rest or "--help" in rest:
        print(__doc__)
    sbatch_args = own["--sbatch-args"] or os.environ.get("PRETTIER_SBATCH_ARGS", "--cpus-per-task=2 --mem=8G")
    plugin_args = {"sbatch_args": sbatch_args, "max_jobs": int(own["--max-jobs"])}

    import getpass

    from nipype import config

    os.environ.setdefault("LOGNAME", getpass.getuser())  # Nipype's SLURM plugin names jobs after it
    config.set("execution", "poll_sleep_duration", str(float(own["--poll-seconds"])))
    from prettier_bids.cli import execution

    def slurm_plugin(config):
        """Replaces prettier-bids' Linear/MultiProc choice (``cli.execution.plugin_settings``)."""
        return "SLURM", dict(plugin_args)

    execution.plugin_settings = slurm_plugin
    from prettier_bids.cli.run import main as run_main

    return run_main(rest)


if __name__ == "__main__":
    sys.exit(main())
