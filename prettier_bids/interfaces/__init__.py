"""Thin Nipype interfaces over the SR core, the derivatives writer (niworkflows) and the reportlets (nireports)."""

from .derivatives import AtomicDerivativesSink
from .reportlets import ConsistencyMapRPT, LesionViewRPT, SRBeforeAfterRPT
from .sr import SuperResolve, ValidateImage

__all__ = ["AtomicDerivativesSink", "ConsistencyMapRPT", "LesionViewRPT", "SRBeforeAfterRPT", "SuperResolve", "ValidateImage"]
