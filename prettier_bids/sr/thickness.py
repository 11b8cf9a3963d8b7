"""Slice thickness read from the image (issue 25): the one owner of that concept.

When a scan's slice thickness is not given (no plausible sidecar ``SliceThickness``, no ``--slice-thickness``),
``reconstruct.super_resolve`` asks :func:`estimate_thickness`. A :attr:`ThicknessEstimate.confident` estimate is
used and the output projected onto it; anything else leaves the thickness assumed equal to the spacing and the
projection onto the input skipped (a wrong profile costs up to 0.7 dB and adds hyperintensity; issue 25).

No estimator is shipped yet: none reached the issue's accuracy on held-out heads (+/-0.5 mm for boxcar profiles
of 2-5 mm slices at 3-6 mm spacing). Measured in ``docs/research/slice-profile-estimation.md``: second-order
statistics (through-plane against in-plane) are biased 2-4 mm by the anatomy's anisotropy; a patch CNN trained on
thick stacks simulated from the training heads regresses to the mean (RMS error 18 % of the spacing on the
validation head; ``training/thickness/``). So :func:`estimate_thickness` answers "no estimate" (``method``
``none``, never confident) and records that it did; an estimator that passes ``benchmarks/thickness.py`` replaces
its body, with its weights file and model card in ``data/weights/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: An estimate is used (and the output projected onto it) only when its uncertainty is at most this (mm).
CONFIDENT_UNCERTAINTY_MM = 0.5
#: ``SliceThicknessEstimate.Method`` when nothing was estimated (no estimator is shipped).
NO_ESTIMATOR = "none"


@dataclass(frozen=True)
class ThicknessEstimate:
    """The slice thickness read from the image: ``thickness`` (mm; ``nan`` when there is none), its
    ``uncertainty`` (mm, one standard error; ``inf`` when nothing could be measured), the header's slice
    ``spacing``, how many measurements it rests on (``n_features``) and the ``method`` that made it."""

    thickness: float
    uncertainty: float
    spacing: float
    n_features: int = 0
    method: str = NO_ESTIMATOR

    @property
    def gap(self) -> float:
        """Spacing less thickness (mm); negative for overlapping slices."""
        return self.spacing - self.thickness

    @property
    def confident(self) -> bool:
        return bool(math.isfinite(self.thickness) and math.isfinite(self.uncertainty)
                    and self.uncertainty <= CONFIDENT_UNCERTAINTY_MM)

    def as_info(self) -> dict:
        """The sidecar's ``SliceThicknessEstimate`` (``null`` for what was not measured: valid JSON)."""
        known = math.isfinite(self.thickness)
        return {"Method": self.method,
                "Thickness": round(float(self.thickness), 3) if known else None,
                "Uncertainty": round(float(self.uncertainty), 3) if math.isfinite(self.uncertainty) else None,
                "Gap": round(float(self.gap), 3) if known else None,
                "Features": int(self.n_features), "Confident": self.confident}


def estimate_thickness(data, zooms, axis) -> ThicknessEstimate:
    """The slice thickness of the thick-slice volume ``data`` (3D array; ``zooms``: voxel sizes in mm; ``axis``:
    the slice axis), read from the image. No validated estimator is shipped: the answer is "no estimate"
    (``nan`` ± ``inf``, method :data:`NO_ESTIMATOR`), the same for every input."""
    del data
    return ThicknessEstimate(float("nan"), float("inf"), float(zooms[axis]), 0, NO_ESTIMATOR)
