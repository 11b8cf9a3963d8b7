"""Command-line entry points."""

from .entry import drop_invalid_openmp_settings

drop_invalid_openmp_settings()  # before any command imports torch (``python -m prettier_bids.cli.sr`` too)
