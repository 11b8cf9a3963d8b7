"""Command-line entry points."""

from .entry import drop_invalid_omp_threads

drop_invalid_omp_threads()  # before any command imports torch (``python -m prettier_bids.cli.sr`` too)
