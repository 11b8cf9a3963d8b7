"""Command-line entry points."""

from .entry import check_current_folder, drop_invalid_openmp_settings

check_current_folder()  # before any command imports torch (``python -m prettier_bids.cli.sr`` too)
drop_invalid_openmp_settings()
