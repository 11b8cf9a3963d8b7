"""Realistic degradations of training pairs (issue 28, item 3), BasicSR-style: what a real clinical scan has
and a thick stack simulated from a clean 1 mm volume lacks.

The ``realistic`` patch option (config ``"patch": {"realistic": {...}}``, keys of :data:`REALISTIC_DEFAULTS`)
applies to a share ``prob`` of the pairs (:func:`draw_plan`, one :class:`PairPlan` per pair): the contrast
change before the slice simulation, the rest after it and before the usual augmentation (:func:`degrade_pair`):

- **noise** on the input only: Rician (magnitude of a complex Gaussian), its sigma drawn uniformly from
  ``noise`` on the scaled intensities (1.0 = the foreground's 99.5th percentile). The target keeps the 1 mm
  volume's own noise, so the network learns not to pass the added noise through. The default range comes from
  the real thick scans: ``training/realistic/noise_levels.py`` measures them and the simulated stacks with
  :func:`noise_sigma` (numbers in ``training/realistic/noise-levels.md``).
- **in-plane blur** on the input only: a Gaussian of sigma drawn from ``inplane_blur`` (mm) along the
  columns and across the 3 channel planes (sigma / their spacing in planes: 1 mm apart in a 1 mm volume, a
  slice spacing apart in an in-plane pair); clinical in-plane resolution is often coarser than its voxels.
- **bias field** on both: a smooth multiplicative gain, linear across the patch, of relative amplitude up to
  ``bias`` at the patch corners (input and target get the same field, taken at their row positions).
- **contrast** on both: the 1 mm intensities raised to a power drawn log-uniformly within ``1 ± contrast``
  before the slices are simulated from them (a power does not commute with the slice averaging).
- **slice-profile variation**: the thickness the stack is simulated with differs from the one the batch
  records (and a conditioned network is told) by a factor drawn per pair within ``1 ± thickness_jitter``
  (:meth:`prettier_bids.training.patches.PatchSampler.batch`), as a scanner's nominal thickness differs
  from its real profile.

Validation batches (:func:`prettier_bids.training.patches.fixed_batches`) never get these, so checkpoints stay
comparable with every earlier run. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..sr.degrade import centre_row

#: Defaults of the ``realistic`` option of :class:`prettier_bids.training.patches.PatchSampler`.
REALISTIC_DEFAULTS = {
    "prob": 0.5,  # share of pairs that get the degradations below (each drawn independently within its range)
    "noise": [0.0, 0.012],  # Rician sigma added to the input, scaled (noise-levels.md: 90th pct 0.010-0.012)
    "inplane_blur": [0.0, 0.6],  # Gaussian sigma (mm) on the input's columns and across its channel planes
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
        if (not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2
                or not all(isinstance(x, (int, float)) for x in lo_hi) or not 0 <= lo_hi[0] <= lo_hi[1]):
            raise ValueError(f"realistic.{key} must be [low, high] with 0 <= low <= high, got {lo_hi!r}")
    for key in ("prob", "bias", "contrast", "thickness_jitter"):
        top = "]" if key == "prob" else ")"
        if not isinstance(cfg[key], (int, float)) or not (0 <= cfg[key] <= 1 if key == "prob" else 0 <= cfg[key] < 1):
            raise ValueError(f"realistic.{key} must be a number in [0, 1{top}, got {cfg[key]!r}")
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


@dataclass(frozen=True)
class PairPlan:
    """The realistic degradations drawn for one pair (:func:`draw_plan`)."""

    gamma: float  # contrast power (1: none)
    slopes: tuple  # bias field (a, b) of :func:`linear_field` ((0, 0): none)
    blur: float  # in-plane Gaussian sigma in mm (0: none)
    sigma: float  # Rician noise sigma (0: none)

    def contrast(self, block):
        """The contrast change, on 1 mm intensities before the slice simulation (a power does not commute with
        the slice averaging, so it must act on what the slices are averaged from, as a scanner's contrast does)."""
        return np.clip(block, 0, None) ** np.float32(self.gamma) if self.gamma != 1.0 else block


def draw_plan(cfg, rng):
    """With probability ``cfg["prob"]`` (:func:`realistic_option`), the degradations of one pair; else None (and
    None, drawing nothing, when ``cfg`` is None: the option is off)."""
    if cfg is None or rng.random() >= cfg["prob"]:
        return None
    gamma = float(np.exp(rng.uniform(np.log(1 - cfg["contrast"]), np.log(1 + cfg["contrast"])))) \
        if cfg["contrast"] > 0 else 1.0
    slopes = tuple(rng.uniform(-1.0, 1.0, 2) * cfg["bias"] / 2.0) if cfg["bias"] > 0 else (0.0, 0.0)
    return PairPlan(gamma, slopes, float(rng.uniform(*cfg["inplane_blur"])), float(rng.uniform(*cfg["noise"])))


def degrade_pair(lr, hr, plan, rng, factor, plane_spacing=1.0):
    """Bias field, in-plane blur and noise of ``plan`` on one pair (``lr`` (3, rows, cols), ``hr`` (3, rows x
    factor, cols), scaled; the contrast was applied before the slice simulation: :meth:`PairPlan.contrast`).
    ``plane_spacing``: mm between the 3 channel planes (the blur across them is ``plan.blur`` mm)."""
    if plan is None:
        return lr, hr
    lr, hr = lr.astype(np.float32, copy=True), hr.astype(np.float32, copy=True)
    if plan.slopes != (0.0, 0.0):
        n_hr, cols = hr.shape[1], hr.shape[2]
        col_pos = np.linspace(-1.0, 1.0, cols)
        hr_pos = np.linspace(-1.0, 1.0, n_hr)
        # the input's slice i is centred on the target's row i * factor + centre_row(factor) (extract_pair)
        lr_pos = hr_pos[np.arange(lr.shape[1]) * factor + centre_row(factor)]
        hr *= linear_field(hr_pos, col_pos, plan.slopes)
        lr *= linear_field(lr_pos, col_pos, plan.slopes)  # the same field, at the input's slice centres
    if plan.blur > 0.05:
        lr = ndimage.gaussian_filter(lr, (plan.blur / plane_spacing, 0.0, plan.blur), mode="nearest")
        lr = lr.astype(np.float32)
    return rician(lr, plan.sigma, rng), hr
