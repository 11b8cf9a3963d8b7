"""Synthetic lesions for training (numpy/scipy only; see :class:`LesionInserter`): irregular blobs (thresholded
smoothed noise inside an ellipsoid), placed periventricularly or juxtacortically, intensity changed
multiplicatively with soft edges, with sizes and contrasts drawn from the statistics of the training subject's
real lesions (``prettier_bids/data/lesion_stats.json``, numbers only, measured by
:func:`prettier_bids.evaluation.lesions.estimate_lesion_stats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy import ndimage

from ..sr.io import read_json, suffix_of

STATS_FILE = "lesion_stats.json"


def contrast_of(name):
    """Contrast of a training volume from its file name's BIDS suffix (FLAIR, T2w, T1w; ``..._ce-gd_T1w`` is
    T1w), or None."""
    suffix = suffix_of(name)
    return suffix if suffix in ("FLAIR", "T2w", "T1w") else None


def white_matter_mask(vol, brain, contrast="FLAIR"):
    """Rough normal-appearing WM: brain voxels between the 40th and 80th percentile (FLAIR, T2w:
    WM is mid-grey) or above the 60th (T1w: WM is the brightest tissue), eroded once."""
    v = vol[brain]
    if contrast == "T1w":
        lo, hi = np.percentile(v, [60, 99.5])
    else:
        lo, hi = np.percentile(v, [40, 80])
    wm = brain & (vol >= lo) & (vol <= hi)
    return ndimage.binary_erosion(wm, iterations=1)




def load_lesion_stats(path=None):
    if path is None:
        path = resources.files("prettier_bids") / "data" / STATS_FILE
    return read_json(path)


def blob(rng, diameter_mm, irregularity=0.6):
    """An irregular soft blob in a cube: values in [0, 1], ~1 inside, soft 1-2 voxel edge.

    Thresholded Gaussian-smoothed noise inside a random ellipsoid whose mean diameter is
    ``diameter_mm`` (1 mm voxels); the edge is softened with a small Gaussian blur.
    """
    d = max(2.0, float(diameter_mm))
    axes = d / 2 * rng.uniform(0.7, 1.4, size=3)
    axes *= (d / 2) / np.cbrt(np.prod(axes))  # keep the volume of a sphere of diameter d
    half = int(math.ceil(axes.max())) + 3
    grid = np.mgrid[-half:half + 1, -half:half + 1, -half:half + 1].astype(np.float32)
    rot = _random_rotation(rng)
    coords = np.tensordot(rot, grid, axes=(1, 0))
    ell = sum((coords[i] / axes[i]) ** 2 for i in range(3))
    noise = ndimage.gaussian_filter(rng.standard_normal(ell.shape).astype(np.float32), max(1.0, d / 6))
    noise /= noise.std() + 1e-6
    field = 1.0 - ell + irregularity * 0.35 * noise  # ellipsoid perturbed by smooth noise
    hard = field > 0
    if not hard.any():
        hard[half, half, half] = True
    lab, n = ndimage.label(hard)
    if n > 1:  # keep the component at (or nearest) the centre: one lesion per blob
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        hard = lab == (lab[half, half, half] or int(np.argmax(sizes)))
    soft = ndimage.gaussian_filter(hard.astype(np.float32), 0.7)
    return np.clip(soft / max(soft.max(), 1e-6), 0, 1)


def _random_rotation(rng):
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]], dtype=np.float32)


@dataclass
class PlacementMaps:
    """Where synthetic lesions may be centred in one volume (voxel index arrays)."""

    periventricular: np.ndarray  # (n, 3)
    juxtacortical: np.ndarray  # (n, 3)
    ring_mean: float  # mean of normal WM, the reference for the intensity ratio
    ventricle_distance: np.ndarray = None  # mm from the ventricles (statistics only)


def placement_maps(vol, contrast="FLAIR", brain_threshold=0.02, keep_distance=False):
    """Candidate centres from intensity heuristics on a scaled, skull-stripped 1 mm volume.

    Brain: foreground filled. CSF: the darkest 12 % of the brain on FLAIR/T1w, the brightest 8 %
    on T2w. Ventricles: CSF deeper than 8 mm from the brain edge. Periventricular: WM within
    1-6 mm of the ventricles. Juxtacortical: WM 1-4 mm from the cortical grey matter band, read
    as 3-8 mm from the brain edge.
    """
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(vol > brain_threshold, iterations=2))
    if brain.sum() < 1000:
        return None
    v = vol[brain]
    if contrast == "T2w":
        csf = brain & (vol > np.percentile(v, 92))
    else:
        csf = brain & (vol < np.percentile(v, 12))
    depth = ndimage.distance_transform_edt(brain)
    ventricles = csf & (depth > 8)
    wm = white_matter_mask(vol, brain, contrast)
    d_vent = ndimage.distance_transform_edt(~ventricles) if ventricles.any() else np.full(vol.shape, np.inf)
    peri = wm & (d_vent >= 1) & (d_vent <= 6)
    juxta = wm & (depth >= 3) & (depth <= 8)
    ring_mean = float(vol[wm].mean()) if wm.any() else float(v.mean())
    return PlacementMaps(np.argwhere(peri).astype(np.int32), np.argwhere(juxta).astype(np.int32), ring_mean,
                         d_vent if keep_distance else None)


class LesionInserter:
    """Paint synthetic lesions into (a block of) a 1 mm training volume.

    ``config`` keys (all optional): ``per_patch`` (mean number of lesions per patch, Poisson),
    ``periventricular_prob`` (else juxtacortical), ``diameter_mm`` ([min, max], clipped to 2-20 mm),
    ``stats`` (path of a stats JSON; default the shipped ``lesion_stats.json``). Sizes are drawn from
    the real lesions' equivalent diameters (x U(0.8, 1.25)), intensity ratios to the surrounding WM
    uniformly between the real lesions' 10th and 90th percentiles of that contrast. The change is
    multiplicative (texture kept) and weighted by the blob's soft edge: ``x * (1 + w * (ratio - 1))``.
    """

    def __init__(self, config=None):
        cfg = dict(config or {})
        self.per_patch = float(cfg.get("per_patch", 2.0))
        self.peri_prob = float(cfg.get("periventricular_prob", 0.6))
        dmin, dmax = cfg.get("diameter_mm", (2.0, 20.0))
        self.dmin, self.dmax = max(2.0, float(dmin)), min(20.0, float(dmax))
        self.stats = load_lesion_stats(cfg.get("stats"))
        self._maps = {}

    def sample_diameter(self, rng):
        vals = np.asarray(self.stats["diameter_mm"]["values"], dtype=float)
        d = float(rng.choice(vals)) * rng.uniform(0.8, 1.25) if vals.size else rng.uniform(self.dmin, self.dmax)
        return float(np.clip(d, self.dmin, self.dmax))

    def sample_ratio(self, rng, contrast):
        r = self.stats["intensity_ratio"].get(contrast or "FLAIR")
        if r is None:
            return None
        lo, hi = sorted((r["p10"], r["p90"]))
        return float(rng.uniform(lo, hi))

    def maps(self, key, vol, contrast):
        if key not in self._maps:
            self._maps[key] = placement_maps(vol, contrast)
        return self._maps[key]

    def insert(self, vol, rng, contrast="FLAIR", key=None, region=None, n=None):
        """(copy of ``vol[region]`` with lesions painted in, soft lesion mask of that block).

        ``region``: tuple of 3 slices with explicit bounds (default: the whole volume); lesion centres
        are drawn from the volume's placement maps inside it; ``n`` lesions (default Poisson(per_patch)).
        Contrasts without statistics (or volumes without a brain) get no lesions.
        """
        if region is None:
            region = tuple(slice(0, n_) for n_ in vol.shape)
        block = np.array(vol[region], dtype=np.float32, copy=True)
        mask = np.zeros(block.shape, dtype=np.float32)
        if contrast not in self.stats["intensity_ratio"]:
            return block, mask
        maps = self.maps(key if key is not None else id(vol), vol, contrast)
        if maps is None:
            return block, mask
        n = int(rng.poisson(self.per_patch)) if n is None else int(n)
        origin = np.array([r.start for r in region])
        stop = np.array([r.stop for r in region])
        for _ in range(n):
            cands = maps.periventricular if rng.random() < self.peri_prob else maps.juxtacortical
            cands = cands[np.all((cands >= origin) & (cands < stop), axis=1)] if len(cands) else cands
            if not len(cands):
                continue
            centre = cands[rng.integers(len(cands))] - origin
            b = blob(rng, self.sample_diameter(rng))
            ratio = self.sample_ratio(rng, contrast)
            h = b.shape[0] // 2
            lo = centre - h
            src = tuple(slice(max(0, -lo[a]), b.shape[a] - max(0, lo[a] + b.shape[a] - block.shape[a]))
                        for a in range(3))
            dst = tuple(slice(max(0, lo[a]), min(block.shape[a], lo[a] + b.shape[a])) for a in range(3))
            w = b[src] * (block[dst] > 0.02)  # brain only
            block[dst] *= 1.0 + w * np.float32(ratio - 1.0)
            mask[dst] = np.maximum(mask[dst], w)
        return block, mask
