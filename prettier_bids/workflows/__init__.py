"""Nipype workflows of the BIDS-App: one per participant, one per image (see :mod:`.base`)."""

from .base import init_main_wf, init_prettier_wf
from .sr import init_sr_derivatives_wf, init_sr_reports_wf, init_sr_wf

__all__ = ["init_main_wf", "init_prettier_wf", "init_sr_derivatives_wf", "init_sr_reports_wf", "init_sr_wf"]
