"""Nipype's MultiProc with workers that die with their parent.

``kill -9`` of the main process (the OOM killer, a scheduler) would otherwise leave the pool's
workers orphaned (re-parented to PID 1, blocked on their queue, holding hundreds of MB each). Each
worker here asks the kernel for SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)
and also runs a watchdog thread that exits when its parent PID changes (other systems, and the
race where the parent dies before ``prctl``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer

PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 1.0


def _set_pdeathsig():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def _watchdog(parent_pid):
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(WATCHDOG_PERIOD_S)


def worker_initializer(cwd, parent_pid):
    """Nipype's initializer plus: die with the parent (see the module docstring)."""
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watchdog, args=(parent_pid,), name="parent-watchdog", daemon=True).start()
    process_initializer(cwd)


class WatchedMultiProcPlugin(MultiProcPlugin):
    """MultiProc whose pool workers exit when the process that runs the workflow dies."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # no worker has started yet (they start on the first submit)
        self.pool = ProcessPoolExecutor(max_workers=self.processors, initializer=worker_initializer,
                                        initargs=(self._cwd, os.getpid()),
                                        mp_context=mp.get_context(self.plugin_args.get("mp_context")))
