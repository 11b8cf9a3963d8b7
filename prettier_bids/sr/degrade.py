"""Multi-slice acquisition model y = D·B·R(x) and the grids that go with it.

This module is the single source of truth for the slice-profile maths: training pairs
(:mod:`prettier_bids.training.patches`), evaluation (:mod:`prettier_bids.evaluation.benchmark`), the
reconstruction grid (:mod:`prettier_bids.sr.reconstruct`) and the consistency check
(:mod:`prettier_bids.sr.consistency`) all call the functions below.

Coordinates along one array axis are given in millimetres from the centre of voxel 0 of
the finely sampled ("HR") signal, whose voxels have size ``hr_vox``: voxel ``j`` covers
``[(j - 0.5) * hr_vox, (j + 0.5) * hr_vox]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import erf

PROFILES = ("boxcar", "gaussian")


def profile_matrix(n_hr, hr_vox, centres_mm, thickness, profile="boxcar"):
    """Matrix ``W`` (n_slices x n_hr) such that ``W @ x`` integrates ``x`` over each slice profile.

    ``boxcar``: each slice averages the signal over ``[c - t/2, c + t/2]`` (exact overlap of
    piecewise-constant voxels). ``gaussian``: a Gaussian profile of FWHM ``t``. Rows are
    normalised to sum to 1, so slices at the edge of the field of view average what exists.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown slice profile {profile!r}; choose one of {PROFILES}")
    if thickness <= 0:
        raise ValueError("slice thickness must be positive")
    centres = np.asarray(centres_mm, dtype=np.float64)[:, None]
    lo = (np.arange(n_hr) - 0.5)[None, :] * hr_vox
    hi = lo + hr_vox
    if profile == "boxcar":
        w = np.clip(np.minimum(hi, centres + thickness / 2) - np.maximum(lo, centres - thickness / 2), 0, None)
    else:
        sigma = thickness / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        scale = 1.0 / (sigma * math.sqrt(2.0))
        w = 0.5 * (erf((hi - centres) * scale) - erf((lo - centres) * scale))
        w[w < 1e-6] = 0.0
    total = w.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("a slice lies entirely outside the field of view")
    return (w / total).astype(np.float32)


def n_slices_in_fov(n_hr, hr_vox, thickness, spacing):
    """How many slices of thickness t every s mm fit entirely inside ``n_hr`` voxels."""
    return int(math.floor((n_hr * hr_vox - thickness) / spacing + 1e-6)) + 1


def centred_first_slice(n_hr, hr_vox, thickness, spacing):
    """Position (mm) of the first slice centre for a slice stack centred in the field of view."""
    n = n_slices_in_fov(n_hr, hr_vox, thickness, spacing)
    extent = (n - 1) * spacing + thickness
    return -hr_vox / 2 + (n_hr * hr_vox - extent) / 2 + thickness / 2


def apply_along_axis(matrix, volume, axis):
    """Apply ``matrix`` (n_out x n_in) to ``volume`` along ``axis``."""
    out = np.tensordot(matrix, np.moveaxis(volume, axis, 0), axes=(1, 0))
    return np.moveaxis(out, 0, axis)


def axis_index_map(ndim, axis, scale, offset):
    """4x4 voxel-to-voxel map: new index ``i`` along ``axis`` is old index ``offset + scale * i``."""
    m = np.eye(ndim + 1)
    m[axis, axis] = scale
    m[axis, ndim] = offset
    return m


@dataclass
class Degraded:
    data: np.ndarray
    affine: np.ndarray
    axis: int
    thickness: float
    spacing: float
    first_centre_mm: float


def simulate_thick_slices(volume, affine=None, axis=2, thickness=5.0, spacing=6.0, profile="boxcar",
                          first_centre_mm=None, hr_vox=None):
    """Simulate a multi-slice acquisition of a (near) 1 mm volume along ``axis``.

    Returns the LR array (slices of thickness ``thickness`` every ``spacing`` mm, in-plane
    untouched) and its exact affine (slice centres in world coordinates, voxel size
    ``spacing`` along ``axis``).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if affine is None:
        affine = np.eye(4)
    affine = np.asarray(affine, dtype=np.float64)
    if hr_vox is None:
        hr_vox = float(np.linalg.norm(affine[:3, axis]))
    n_hr = volume.shape[axis]
    if first_centre_mm is None:
        first_centre_mm = centred_first_slice(n_hr, hr_vox, thickness, spacing)
    last = n_hr * hr_vox - hr_vox / 2 - thickness / 2
    n = int(math.floor((last - first_centre_mm) / spacing + 1e-6)) + 1
    if n < 1:
        raise ValueError("the volume is too small for one slice of that thickness")
    centres = first_centre_mm + spacing * np.arange(n)
    w = profile_matrix(n_hr, hr_vox, centres, thickness, profile)
    lr = apply_along_axis(w, volume, axis)
    lr_affine = affine @ axis_index_map(3, axis, spacing / hr_vox, first_centre_mm / hr_vox)
    return Degraded(lr.astype(np.float32), lr_affine, axis, float(thickness), float(spacing), float(first_centre_mm))


def upsampling_factor(spacing, target=1.0, factors=range(2, 9)):
    """Integer through-plane factor ``r`` whose output spacing ``spacing / r`` is closest to ``target`` mm.

    Deliberately not ``round(spacing / target)``: Python rounds halves to even (``round(2.5) == 2``: 1.25 mm
    rows), and the closest output spacing is not the nearest integer anyway. Between ``k`` and ``k + 1`` the
    closer one changes at ``spacing = 2 k (k + 1) / (2 k + 1)`` (2.4, 3.43, 4.44, 5.45 mm), so half-integer
    spacings (2.5, 3.5, 4.5 mm) get the finer grid ``k + 1``; a tie goes to the finer grid too. Measured in
    ``benchmarks/results/factor-rule.md`` (2.5 mm: factor 3 against 2).
    """
    factors = sorted(factors)
    ratio = spacing / target
    r = min(factors, key=lambda k: (abs(ratio / k - 1.0), -k))
    return min(max(r, factors[0]), factors[-1])


def centre_row(factor):
    """Index (within the ``factor`` output rows of one LR slice) of the row at the slice centre."""
    return (factor - 1) // 2


def hr_rows_lr_coordinate(n_lr, factor):
    """LR index coordinate of every output row: row ``j`` lies at ``(j - c) / r``.

    ``n_lr * r`` rows, so they cover the input field of view (to within half an
    output voxel) and every input slice centre falls exactly on an output row (the stored output keeps
    :func:`output_rows` of them).
    """
    c = centre_row(factor)
    return (np.arange(n_lr * factor) - c) / factor


def slice_rows(n_lr, factor):
    """Output row index of each input slice centre."""
    return np.arange(n_lr) * factor + centre_row(factor)


def output_rows(n_lr, factor):
    """Rows of the stored SR output along the slice axis: the ``n_lr * factor`` rows the network and the cubic
    baseline make (:func:`hr_rows_lr_coordinate`), less the last one for an even factor.

    The extent rule: every input slice centre is an output row centre, and the output spans the input's slabs
    symmetrically. For odd ``factor`` its first and last voxels end exactly on the outer faces of the first and
    last slabs. For even ``factor`` the rows cannot do both: the full ``n_lr * factor`` rows run from half an
    output voxel inside the first slab to half an output voxel beyond the last one (a 4 mm stack from -52 to
    48 mm gave -51.5 to 48.5 mm); the last row, centred on the last slab's outer face, is dropped, so the output
    stops half an output voxel inside both faces (-51.5 to 47.5 mm)."""
    return n_lr * factor - (1 if factor % 2 == 0 else 0)


def target_grid(lr_shape, lr_affine, axis, factor):
    """Shape and affine of the stored SR output of an LR image (through-plane factor ``factor``; the rows of
    :func:`output_rows`)."""
    shape = list(lr_shape)
    shape[axis] = output_rows(lr_shape[axis], factor)
    m = axis_index_map(3, axis, 1.0 / factor, -centre_row(factor) / factor)
    return tuple(shape), np.asarray(lr_affine, dtype=np.float64) @ m


def redegrade_matrix(n_rows, factor, spacing, thickness, profile="boxcar"):
    """Forward model on the output grid: matrix (n_lr x n_rows) taking the ``n_rows`` SR rows (``spacing /
    factor`` mm apart) to the input's ``n_lr`` slices, whose centres lie on :func:`slice_rows`. ``n_rows`` is
    ``n_lr * factor`` (the network's grid) or :func:`output_rows` (the stored grid: one row less for an even
    factor; the last slab then averages the rows that exist, as the first one always does)."""
    n_lr = -(-n_rows // factor)
    h = spacing / factor
    return profile_matrix(n_rows, h, slice_rows(n_lr, factor) * h, thickness, profile)


def redegrade(hr_volume, axis, factor, spacing, thickness, profile="boxcar"):
    """Degrade an SR volume back onto its input's slices (the forward model on the output grid)."""
    w = redegrade_matrix(hr_volume.shape[axis], factor, spacing, thickness, profile)
    return apply_along_axis(w, hr_volume, axis)


_CUBIC_CACHE: dict = {}


def extract_pair(vol, slice_axis, sweep_axis, plane, col0, first_centre, spacing, thickness, profile,
                 lr_rows=16, width=96, transform=None):
    """One LR/HR pair of 3-plane windows from a volume (training: a 1 mm volume; adaptation: a scan's working grid).

    ``slice_axis``: the simulated thick-slice axis; ``sweep_axis``: the axis along which the 3
    contiguous planes ``plane - 1 .. plane + 1`` are taken; the remaining axis gives ``width``
    columns from ``col0``. LR slice ``k`` is centred on HR row ``first_centre + k * spacing``;
    HR target rows start ``centre_row(spacing)`` rows before the first centre. ``transform`` (an
    elementwise function, e.g. a contrast change) acts on the 1 mm rows before the slices are simulated from
    them, and on the target alike.
    """
    col_axis = 3 - slice_axis - sweep_axis
    arr = np.transpose(vol, (sweep_axis, slice_axis, col_axis))
    r = int(spacing)
    c = centre_row(r)
    half = int(np.ceil(thickness * 1.5)) + 1  # Gaussian tails included
    lo = max(0, first_centre - half)
    hi = min(arr.shape[1], first_centre + (lr_rows - 1) * r + half + 1)
    block = arr[plane - 1:plane + 2, lo:hi, col0:col0 + width]
    if transform is not None:
        block = transform(block)
    centres = first_centre - lo + r * np.arange(lr_rows)
    w = profile_matrix(hi - lo, 1.0, centres, thickness, profile)
    lr = np.einsum("ks,csw->ckw", w, block)
    t0 = first_centre - c
    hr = arr[plane - 1:plane + 2, t0:t0 + lr_rows * r, col0:col0 + width]
    if transform is not None:
        hr = transform(hr)
    return lr.astype(np.float32), np.ascontiguousarray(hr, dtype=np.float32)


def cubic_matrix(n_in, positions):
    """Matrix (len(positions) x n_in) of cubic-spline interpolation along one axis.

    Column ``i`` is the interpolation of the unit impulse at ``i``: the result is exactly
    ``scipy.ndimage.map_coordinates(order=3, mode='nearest')`` along that axis, so the cubic
    baseline and the network's residual base are one computation.
    """
    positions = np.asarray(positions, dtype=np.float64)
    key = (n_in, positions.tobytes())
    if key not in _CUBIC_CACHE:
        eye = np.eye(n_in, dtype=np.float64)
        rows = [ndimage.map_coordinates(eye[:, col], positions[None, :], order=3, mode="nearest")
                for col in range(n_in)]
        _CUBIC_CACHE[key] = np.stack(rows, axis=1).astype(np.float32)
        if len(_CUBIC_CACHE) > 256:
            _CUBIC_CACHE.pop(next(iter(_CUBIC_CACHE)))
    return _CUBIC_CACHE[key]


def cubic_upsample_matrix(n_lr, factor):
    """Cubic interpolation from ``n_lr`` slices onto the ``n_lr * factor`` rows of the SR grid."""
    return cubic_matrix(n_lr, hr_rows_lr_coordinate(n_lr, factor))
