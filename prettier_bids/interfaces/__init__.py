"""Thin Nipype interfaces over the SR core, the derivatives writer and the report figures."""

from .bids import DerivativesDataSink
from .reports import SRFigure
from .sr import SuperResolve, ValidateImage

__all__ = ["DerivativesDataSink", "SRFigure", "SuperResolve", "ValidateImage"]
