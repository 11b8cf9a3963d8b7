"""The console scripts (``setup.cfg``): each imports its command's module only inside a guard.

Importing a command pulls in numpy, torch, nibabel (and for ``prettier-bids`` pybids and Nipype): seconds in
which a Ctrl-C used to print a long traceback from the middle of an import. Here it is one line and exit 130,
as everywhere else (:func:`prettier_bids.cli.options.guarded_main` takes over once the command runs). This
module imports nothing of the package at import time.
"""

from __future__ import annotations

import importlib
import sys

#: exitcodes.INTERRUPTED (not imported: this module must stay import-free)
INTERRUPTED = 130


def _run(prog, module):
    try:
        return importlib.import_module(module).main()
    except KeyboardInterrupt:  # while importing, or parsing before the command's own guard
        print(f"{prog}: error: interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED


def prettier_bids():
    return _run("prettier-bids", "prettier_bids.cli.run")


def prettier_sr():
    return _run("prettier-sr", "prettier_bids.cli.sr")


def prettier_train():
    return _run("prettier-train", "prettier_bids.cli.train")


def prettier_eval():
    return _run("prettier-eval", "prettier_bids.cli.evaluate")
