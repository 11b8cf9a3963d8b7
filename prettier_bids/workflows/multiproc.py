"""Nipype's MultiProc with workers that die with their parent, finishing one image before starting the next.

``kill -9`` of the main process (the OOM killer, a scheduler) would otherwise leave the pool's
workers orphaned (re-parented to PID 1, blocked on their queue, holding hundreds of MB each). Each
worker here asks the kernel for SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)
and also runs a watchdog thread that exits when its parent PID changes (other systems, and the
race where the parent dies before ``prctl``).

Order: Nipype submits the ready jobs in the order of its flat graph, which runs every image's SR node before
any image's reportlets, so every output was stored in the last minutes of a run (a run killed then left none).
Here ready jobs are taken image by image (the image workflows in the order they were added): the free
processors go to the nodes of the earliest unfinished image first, and each image's outputs are stored as
soon as it is complete.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer

from ..processes import die_with_parent

WATCHDOG_PERIOD_S = 1.0


def _watchdog(parent_pid):
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(WATCHDOG_PERIOD_S)


def worker_initializer(cwd, parent_pid):
    """Nipype's initializer plus: die with the parent (see the module docstring), and leave Ctrl-C and SIGTERM to
    it: a terminal's Ctrl-C or SLURM's ``scancel`` signals the whole process group, and a worker that took it
    printed a traceback (its own KeyboardInterrupt, or the parent's BrokenProcessPool) above the one-line message;
    the parent stops its workers itself (``cli.runner.abandon_run``: SIGKILL) and they die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watchdog, args=(parent_pid,), name="parent-watchdog", daemon=True).start()
    process_initializer(cwd)


#: Where an image's workflow sits in a node's full name: ``<run>.<participant>.<image>[.<sub-workflow>].<node>``
#: (``workflows/base.py``: ``init_main_wf`` > ``init_prettier_wf`` > ``init_sr_wf``).
IMAGE_DEPTH = 3


def image_rank(fullnames):
    """``{node full name: rank}``: the rank of the node's image workflow (the first :data:`IMAGE_DEPTH` parts of
    its full name: the nodes of its sub-workflows, which store the outputs and draw the reportlets, count as the
    image's) in order of first appearance, so all nodes of one image share a rank and earlier images rank first."""
    order = {}
    ranks = {}
    for name in fullnames:
        wf = ".".join(name.split(".")[:IMAGE_DEPTH])
        ranks[name] = order.setdefault(wf, len(order))
    return ranks


class WatchedMultiProcPlugin(MultiProcPlugin):
    """MultiProc whose pool workers exit when the process that runs the workflow dies, and that runs the
    images one after another (each using the free processors), not stage by stage."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # no worker has started yet (they start on the first submit)
        self.pool = ProcessPoolExecutor(max_workers=self.processors, initializer=worker_initializer,
                                        initargs=(self._cwd, os.getpid()),
                                        mp_context=mp.get_context(self.plugin_args.get("mp_context")))
        self._ranks = None

    def _sort_jobs(self, jobids, scheduler="tsort"):
        if self._ranks is None or len(self._ranks) != len(self.procs):
            self._ranks = image_rank([proc.fullname for proc in self.procs])
        ranks = [self._ranks[self.procs[j].fullname] for j in jobids]
        return [j for _, _, j in sorted(zip(ranks, range(len(jobids)), jobids))]
