"""Thin Nipype interfaces over the SR core, the derivatives sink and the reportlets (nireports)."""

from .derivatives import DerivativesSink
from .reportlets import ConsistencyMapRPT, LesionViewRPT, SRBeforeAfterRPT
from .sr import SuperResolve, ValidateImage

__all__ = ["ConsistencyMapRPT", "DerivativesSink", "LesionViewRPT", "SRBeforeAfterRPT", "SuperResolve", "ValidateImage"]
