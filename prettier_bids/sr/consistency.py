"""Data-consistency check: re-degrade the SR output with the input's slice profile and compare.

An SR volume that is faithful to its input reproduces the input's slices when put back
through the forward model of :mod:`prettier_bids.sr.degrade`. Structure that the network
invented (or erased) shows up as a drop of the PSNR and as bright voxels of the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scipy import ndimage

from .degrade import apply_along_axis, redegrade, redegrade_matrix
from .metrics import psnr_from_mse

MAX_PSNR_DB = 100.0
#: QC floor (dB): an output whose network consistency PSNR (``NetworkConsistencyPSNR``: before the projection onto
#: the input) is below this is flagged (``QCFlags`` in its sidecar,
#: a warning, ``--strict`` exits 19). Chosen from measurements on real clinical scans (docs/errors.md):
#: normal outputs of the default model lie far above it; the all-negative failure this guards against
#: gave -31 dB.
CONSISTENCY_PSNR_FLOOR_DB = 20.0
#: Eigenvalues of ``W Wᵀ`` below this fraction of the largest are left out of the projection onto the input:
#: it is then exact for every profile of slices that overlap by less than half a spacing (boxcar up to t = 1.5 s,
#: gaussian FWHM up to t = s), and strongly overlapping slices (t = 2 s) get a bounded correction (at most
#: ~7x the residual) instead of an unstable one (~100x). Measured on p19 FLAIR with 2 % noise:
#: ``git show a96efad:benchmarks/results/projection/README.md`` (archived, training/ARCHIVE.md).
PROJECTION_RCOND = 0.1
#: Alternations of the projection with the clip to the input's intensity range (``project_onto_input(limits=)``):
#: the stored output is clipped to that range, which undoes the projection in slabs where the network's rows
#: went below the background or above the brightest voxel (97 % of the remaining error on a clinical FLAIR,
#: ``benchmarks/results/native-grid.md``); alternating the two converges to an output that satisfies both.
PROJECTION_CLIP_ITERATIONS = 4
#: Head mask (:func:`head_mask`): scaled intensity above this (1.0: the foreground's 99.5th percentile).
HEAD_THRESHOLD = 0.1


def qc_flags(psnr_db, floor_db=None, method="model"):
    """The QC flags of an output (empty when it passes); ``method``: how it was made (``model``: the figure is the
    network's; ``cubic``: no network ran, the figure is the interpolation's)."""
    floor_db = CONSISTENCY_PSNR_FLOOR_DB if floor_db is None else floor_db
    if psnr_db is None or not psnr_db >= floor_db:  # NaN fails too
        figure = "network consistency PSNR" if method == "model" else "consistency PSNR"
        return [f"{figure} {psnr_db:.1f} dB is below the QC floor of {floor_db:g} dB: the output "
                "before any projection does not reproduce its input (check the image and its intensities)"]
    return []


@dataclass
class Consistency:
    psnr_db: float
    #: |re-degraded SR - input| on the input's (slice) grid, in units of the intensity scale.
    error_map: np.ndarray
    #: fraction of the input's head-mask voxels whose error exceeds 10 % of the intensity scale.
    frac_above_10pct: float


def check_consistency(sr_scaled, lr_scaled, axis, factor, spacing, thickness, profile="boxcar", to_input=None,
                      mask=None):
    """Compare ``redegrade(sr)`` with the input, both scaled so that 1.0 is the 99.5th percentile.

    ``to_input`` takes the re-degraded slices from the output's in-plane grid onto the input's (None: the same
    grid), so that the comparison is always with the input as stored (:func:`compare`, with ``mask``)."""
    again = redegrade(sr_scaled, axis, factor, spacing, thickness, profile)
    return compare(again if to_input is None else to_input(again), lr_scaled, axis, mask)


def head_mask(scaled, axis):
    """Where consistency is measured: scaled intensity above :data:`HEAD_THRESHOLD`, holes filled in each slice
    along ``axis``, the largest 3D component (the head, with its dark ventricles and skull; not the air). The
    real-scan benchmarks use the same mask (``benchmarks/real.py``, ``benchmarks/native_grid.py``)."""
    m = np.moveaxis(scaled > HEAD_THRESHOLD, axis, 0)
    m = np.stack([ndimage.binary_fill_holes(s) for s in m])
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    return np.moveaxis(m, 0, axis)


def compare(again_scaled, lr_scaled, axis, mask=None):
    """The :class:`Consistency` of slices ``again_scaled`` (an output put back through the acquisition) with the
    input slices ``lr_scaled`` on the input's grid (slice axis ``axis``): PSNR (peak 1.0) and the fraction above
    10 % inside the :func:`head_mask` of the input (``mask``: that mask, when the caller already has it), and the
    error map."""
    err = np.abs(again_scaled - lr_scaled).astype(np.float32)
    mask = head_mask(lr_scaled, axis) if mask is None else mask
    if not mask.any():
        mask = np.ones_like(lr_scaled, dtype=bool)
    mse = float(np.mean(err[mask].astype(np.float64) ** 2))
    return Consistency(psnr_db=psnr_from_mse(mse, 1.0, max_db=MAX_PSNR_DB), error_map=err,
                       frac_above_10pct=float(np.mean(err[mask] > 0.1)))


def project_onto_input(hr_scaled, lr_scaled, axis, factor, spacing, thickness, profile="boxcar", limits=None):
    """The closest volume to ``hr_scaled`` (least squares) that reproduces the input exactly under the
    forward model: ``x + Wᵀ (W Wᵀ)⁺ (y - W x)`` along the slice axis, ``W`` = :func:`redegrade_matrix`
    (pseudo-inverse without the eigenvalues below :data:`PROJECTION_RCOND` of the largest).

    For boxcar slices that do not overlap (thickness <= spacing) each slice's residual is spread over the rows
    it covers, in proportion to how much of each row it covers (evenly when it covers whole rows), and rows
    in the gaps between slices are unchanged: only each slice's mean changes, to the mean the scanner
    measured. Intensity that the network took from a slice (a dimmed
    lesion) or added to it is given back or taken away evenly over the slice's rows; structure within a
    slice that keeps its mean is left as the network made it. On p19 FLAIR the steps this adds between
    slices are ~1 % of the row-to-row differences (``git show a96efad:benchmarks/results/projection/README.md``).

    ``limits`` (low, high): the range the output will be clipped to; the projection and that clip then
    alternate :data:`PROJECTION_CLIP_ITERATIONS` times (projections onto two convex sets), ending with the
    projection.
    """
    if hr_scaled.shape[axis] < factor or lr_scaled.shape[axis] != -(-hr_scaled.shape[axis] // factor):
        raise ValueError(f"{hr_scaled.shape[axis]} output rows at factor {factor} do not match "
                         f"{lr_scaled.shape[axis]} input slices")
    w = redegrade_matrix(hr_scaled.shape[axis], factor, spacing, thickness, profile).astype(np.float64)
    w32 = w.astype(np.float32)
    residual = lr_scaled - apply_along_axis(w32, hr_scaled, axis)
    back = (w.T @ np.linalg.pinv(w @ w.T, rcond=PROJECTION_RCOND, hermitian=True)).astype(np.float32)
    out = (hr_scaled + apply_along_axis(back, residual, axis)).astype(np.float32)
    for _ in range(PROJECTION_CLIP_ITERATIONS if limits is not None else 0):
        np.clip(out, np.float32(limits[0]), np.float32(limits[1]), out=out)
        out += apply_along_axis(back, lr_scaled - apply_along_axis(w32, out, axis), axis)
    return out


def projection_note(projected):
    """How benchmark tables say whether the model's outputs were projected onto the input."""
    return ("model outputs projected onto the input slices (the default)" if projected
            else "model outputs as the network gave them (no projection onto the input)")
