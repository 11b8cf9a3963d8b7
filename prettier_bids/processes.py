"""Child processes that die with their parent (stdlib only; any layer above ``sr/`` may use it).

``kill -9`` of ``prettier-bids`` (the OOM killer, a scheduler) leaves its children orphaned, re-parented to PID 1:
the MultiProc pool's workers (``workflows/multiproc.py``, which adds a watchdog thread) and the BIDS validator
(``cli/validator.py``, minutes and gigabytes on a large archive). :func:`die_with_parent` asks the kernel for
SIGKILL when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``; kept across ``exec``).
"""

from __future__ import annotations

import signal

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In a child process: SIGKILL when its parent dies. True where the kernel took it (Linux), else False."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False
