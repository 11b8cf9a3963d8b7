"""The repository's scripts (training/*.py, benchmarks/*.py: not package modules), loaded as modules by tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[1]


def load_script(relpath):
    """The script at ``ROOT/relpath``, loaded as a module."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
