"""Realistic degradations of training pairs (issue 28, item 3), BasicSR-style: what a real clinical scan has
and a thick stack simulated from a clean 1 mm volume lacks.

The ``realistic`` patch option (config ``"patch": {"realistic": {...}}``, keys of :data:`REALISTIC_DEFAULTS`)
applies, to a share ``prob`` of the pairs, after the slice simulation and before the usual augmentation:

- **noise** on the input only: Rician (magnitude of a complex Gaussian), its sigma drawn uniformly from
  ``noise`` on the scaled intensities (1.0 = the foreground's 99.5th percentile). The target keeps the 1 mm
  volume's own noise, so the network learns not to pass the added noise through. The default range comes from
  the real thick scans: ``training/realistic/noise_levels.py`` measures them and the simulated stacks with
  :func:`noise_sigma` (numbers in ``training/realistic/noise-levels.md``).
- **in-plane blur** on the input only: a Gaussian of sigma drawn from ``inplane_blur`` (voxels) along the
  columns and across the 3 channel planes (clinical in-plane resolution is often coarser than its voxels).
- **bias field** on both: a smooth multiplicative gain, linear across the patch, of relative amplitude up to
  ``bias`` at the patch corners (input and target get the same field, taken at their row positions).
- **contrast** on both: intensities raised to a power drawn log-uniformly within ``1 ± contrast``.
- **slice-profile variation**: the thickness the stack is simulated with differs from the one the batch
  records (and a conditioned network is told) by a factor drawn per pair within ``1 ± thickness_jitter``
  (:meth:`prettier_bids.training.patches.PatchSampler.batch`), as a scanner's nominal thickness differs
  from its real profile.

Validation batches (:func:`prettier_bids.training.patches.fixed_batches`) never get these, so checkpoints stay
comparable with every earlier run. Pure numpy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Defaults of the ``realistic`` option of :class:`prettier_bids.training.patches.PatchSampler`.
REALISTIC_DEFAULTS = {
    "prob": 0.5,  # share of pairs that get the degradations below (each drawn independently within its range)
    "noise": [0.0, 0.02],  # Rician sigma added to the input, scaled intensities (noise-levels.md: 90th pct 0.017)
    "inplane_blur": [0.0, 0.6],  # Gaussian sigma (voxels) on the input's columns and channel planes
    "bias": 0.1,  # relative gain at the patch corners, input and target alike
    "contrast": 0.15,  # power law x ** g, log g uniform in log(1 -/+ contrast), input and target alike
    "thickness_jitter": 0.0,  # simulated thickness = recorded thickness x U(1 - j, 1 + j), per pair
}

#: The Laplacian-difference mask of Immerkær's noise estimator: flat and linear images give 0, white noise of
#: sigma gives a response of standard deviation 6 sigma.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def realistic_option(value):
    """The option with its defaults, checked: ranges are [low, high] with 0 <= low <= high."""
    unknown = set(value) - set(REALISTIC_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown realistic option(s) {sorted(unknown)}; known: {sorted(REALISTIC_DEFAULTS)}")
    cfg = {**REALISTIC_DEFAULTS, **value}
    for key in ("noise", "inplane_blur"):
        lo_hi = cfg[key]
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"realistic.{key} must be [low, high] with 0 <= low <= high, got {lo_hi!r}")
    for key in ("prob", "bias", "contrast", "thickness_jitter"):
        if not 0 <= cfg[key] < (1.0 if key != "prob" else 1.0 + 1e-9):
            raise ValueError(f"realistic.{key} must be in [0, 1), got {cfg[key]!r}")
    return cfg


def noise_sigma(slices, mask=None):
    """Robust noise sigma of 2D images (Immerkær's Laplacian difference, median instead of mean so that edges
    count little): ``slices`` (n, rows, cols), ``mask`` the same shape (None: everywhere); 3x3 neighbourhoods
    entirely inside the mask are used. NaN when there are none."""
    slices = np.asarray(slices, dtype=np.float32)
    resp = np.abs(np.stack([ndimage.convolve(s, _IMMERKAER, mode="nearest") for s in slices]))
    if mask is not None:
        inside = np.stack([ndimage.binary_erosion(m, np.ones((3, 3), bool)) for m in np.asarray(mask, bool)])
        resp = resp[inside]
    if resp.size == 0:
        return float("nan")
    return float(np.median(resp) / (0.6745 * 6.0))


def rician(image, sigma, rng):
    """``image`` with Rician noise of ``sigma`` (a magnitude image of a complex Gaussian signal)."""
    if sigma <= 0:
        return image
    re = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    im = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def linear_field(rows, cols, slopes):
    """A gain of 1 at the centre, ``1 + a * row + b * col`` at the row and column positions (``rows``, ``cols``
    in [-1, 1]; ``slopes`` = (a, b))."""
    a, b = slopes
    return (1.0 + a * rows[:, None] + b * cols[None, :]).astype(np.float32)


def degrade_pair(lr, hr, cfg, rng, factor):
    """The realistic degradations of one pair (``lr`` (3, rows, cols), ``hr`` (3, rows x factor, cols), scaled),
    with probability ``cfg["prob"]``; the arrays unchanged otherwise. ``cfg``: :func:`realistic_option`."""
    if rng.random() >= cfg["prob"]:
        return lr, hr
    lr, hr = lr.astype(np.float32, copy=True), hr.astype(np.float32, copy=True)
    if cfg["contrast"] > 0:
        g = np.float32(np.exp(rng.uniform(np.log(1 - cfg["contrast"]), np.log(1 + cfg["contrast"]))))
        lr, hr = np.clip(lr, 0, None) ** g, np.clip(hr, 0, None) ** g
    if cfg["bias"] > 0:
        n_hr, cols = hr.shape[1], hr.shape[2]
        col_pos = np.linspace(-1.0, 1.0, cols)
        hr_pos = np.linspace(-1.0, 1.0, n_hr)
        # the input's row i is centred on the target's rows i * factor ... (i + 1) * factor - 1
        lr_pos = np.interp(np.arange(lr.shape[1]) * factor + (factor - 1) / 2.0, np.arange(n_hr), hr_pos)
        slopes = rng.uniform(-1.0, 1.0, 2) * cfg["bias"] / 2.0  # |a| + |b| <= bias: the corners
        hr *= linear_field(hr_pos, col_pos, slopes)
        lr *= linear_field(lr_pos, col_pos, slopes)  # the same field, at the input's row centres
    blur = rng.uniform(*cfg["inplane_blur"])
    if blur > 0.05:
        lr = ndimage.gaussian_filter(lr, (min(blur, 1.0), 0.0, blur), mode="nearest").astype(np.float32)
    sigma = rng.uniform(*cfg["noise"])
    lr = rician(lr, sigma, rng)
    return lr, hr
