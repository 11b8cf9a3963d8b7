"""The lesion benchmark's metrics, and the statistics of real lesions that synthetic ones copy (numpy/scipy only).

Metrics (``prettier-eval lesions``; real consensus masks only, never synthetic lesions):

- :func:`lesion_psnr`: PSNR inside the lesion mask dilated by one voxel (6-connectivity).
- :func:`contrast_kept`: per lesion (26-connected component of the consensus mask with at least
  ``min_voxels`` voxels), ``(mean inside - mean in a ring) / (same in the 1 mm truth)``. The ring is
  the lesion dilated by 2 voxels, minus the lesion, restricted to the brain mask, with every
  voxel of every lesion (dilated by one voxel) excluded.
- :func:`simple_segmentation`: a fixed, model-free lesion map applied identically to the truth and
  to every reconstruction: FLAIR z-scored with the mean and standard deviation of the brain mask,
  ``z > SEG_Z``, inside the brain mask eroded by ``SEG_ERODE`` voxels (drops the bright cortical
  rim of skull-stripped FLAIR), 26-connected components of at least ``SEG_MIN_VOXELS`` voxels.
- :func:`segmentation_scores`: voxel Dice, lesion-wise sensitivity (fraction of consensus lesions
  touched by the map, as the paper's Table 4) and precision (fraction of map components touching
  a consensus lesion).
- :func:`invented_ml`: volume (ml) the map marks in a reconstruction more than one voxel away
  from anything it marks in the truth.

:func:`estimate_lesion_stats` measures real lesions (``training/lesion_stats.py`` writes
``prettier_bids/data/lesion_stats.json`` with it); :mod:`prettier_bids.training.lesions` paints synthetic ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..training.lesions import placement_maps, white_matter_mask

#: 26-connectivity for lesion components.
CONN26 = np.ones((3, 3, 3), dtype=bool)
#: Simple segmentation: threshold on the brain z-score, erosion of the brain mask, minimum size.
SEG_Z = 1.6
SEG_ERODE = 3
SEG_MIN_VOXELS = 10
#: Lesions smaller than this are left out of the contrast statistic.
CONTRAST_MIN_VOXELS = 10


def label_lesions(mask):
    """26-connected components of a binary mask: (labels, n)."""
    return ndimage.label(np.asarray(mask, dtype=bool), structure=CONN26)


def lesion_psnr(pred, ref, lesion_mask, data_range=1.0):
    """PSNR inside ``lesion_mask`` dilated by one voxel (face connectivity)."""
    region = ndimage.binary_dilation(np.asarray(lesion_mask, dtype=bool), iterations=1)
    diff = np.asarray(pred, np.float64)[region] - np.asarray(ref, np.float64)[region]
    if diff.size == 0:
        return float("nan")
    from ..sr.metrics import psnr_from_mse  # torch comes with it: import when used

    return psnr_from_mse(np.mean(diff ** 2), data_range)


@dataclass
class LesionContrast:
    label: int
    voxels: int
    truth: float  # mean inside - mean in the ring, in the 1 mm truth
    pred: float  # same in the reconstruction

    @property
    def kept(self):
        return self.pred / self.truth if self.truth != 0 else float("nan")


def lesion_rings(lesion_mask, brain, min_voxels=CONTRAST_MIN_VOXELS, ring=2):
    """Per lesion of at least ``min_voxels`` voxels: (label, lesion voxels index, ring voxels index)."""
    labels, n = label_lesions(lesion_mask)
    others = ndimage.binary_dilation(labels > 0, iterations=1)
    brain = np.asarray(brain, dtype=bool)
    out = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        # a box around the lesion large enough for its ring
        box = tuple(slice(max(0, s.start - ring - 1), s.stop + ring + 1) for s in sl)
        les = labels[box] == lab
        nvox = int(les.sum())
        if nvox < min_voxels:
            continue
        grown = ndimage.binary_dilation(les, iterations=ring)
        rng = grown & ~others[box] & brain[box]
        if not rng.any():
            continue
        offs = np.array([b.start for b in box])
        out.append((lab, np.argwhere(les) + offs, np.argwhere(rng) + offs))
    return out


def contrast_kept(pred, ref, lesion_mask, brain, min_voxels=CONTRAST_MIN_VOXELS, rings=None):
    """List of :class:`LesionContrast`, one per lesion of at least ``min_voxels`` voxels."""
    rings = rings if rings is not None else lesion_rings(lesion_mask, brain, min_voxels)
    res = []
    for lab, les, rng in rings:
        li, ri = tuple(les.T), tuple(rng.T)
        t = float(np.mean(ref[li]) - np.mean(ref[ri]))
        p = float(np.mean(pred[li]) - np.mean(pred[ri]))
        res.append(LesionContrast(int(lab), len(les), t, p))
    return res


def median_kept(contrasts):
    vals = [c.kept for c in contrasts if np.isfinite(c.kept) and c.truth > 0]
    return float(np.median(vals)) if vals else float("nan")


def zscore_in_brain(vol, brain):
    v = np.asarray(vol, dtype=np.float64)
    b = np.asarray(brain, dtype=bool)
    mu, sd = float(v[b].mean()), float(v[b].std())
    return (v - mu) / (sd if sd > 0 else 1.0)


def remove_small(mask, min_voxels):
    labels, _ = label_lesions(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def simple_segmentation(vol, brain, z=SEG_Z, erode=SEG_ERODE, min_voxels=SEG_MIN_VOXELS):
    """The benchmark's fixed hyperintensity map (see the module docstring)."""
    brain = np.asarray(brain, dtype=bool)
    inner = ndimage.binary_erosion(brain, iterations=erode) if erode else brain
    return remove_small((zscore_in_brain(vol, brain) > z) & inner, min_voxels)


def segmentation_scores(seg, truth_mask):
    """Voxel Dice, lesion-wise sensitivity and precision of ``seg`` against ``truth_mask``."""
    seg, truth = np.asarray(seg, dtype=bool), np.asarray(truth_mask, dtype=bool)
    denom = seg.sum() + truth.sum()
    dice = float(2 * (seg & truth).sum() / denom) if denom else float("nan")
    tl, nt = label_lesions(truth)
    sl, ns = label_lesions(seg)
    hit_truth = np.unique(tl[seg & truth])
    hit_seg = np.unique(sl[seg & truth])
    sens = float(len(hit_truth[hit_truth > 0]) / nt) if nt else float("nan")
    prec = float(len(hit_seg[hit_seg > 0]) / ns) if ns else float("nan")
    return {"dice": dice, "sensitivity": sens, "precision": prec, "n_truth_lesions": int(nt),
            "n_found": int(ns), "volume_ml": float(seg.sum()) / 1000.0}


def invented_ml(seg, seg_truth, voxel_ml=0.001, tolerance=1):
    """Volume (ml) of ``seg`` more than ``tolerance`` voxels away from ``seg_truth``."""
    near = np.asarray(seg_truth, dtype=bool)
    if tolerance:
        near = ndimage.binary_dilation(near, iterations=tolerance)
    return float((np.asarray(seg, dtype=bool) & ~near).sum()) * voxel_ml


def lesion_report(pred, ref, lesion_mask, brain, seg_truth=None, rings=None):
    """All benchmark numbers of one reconstruction ``pred`` of the truth ``ref`` (same grid, 1 mm)."""
    seg = simple_segmentation(pred, brain)
    if seg_truth is None:
        seg_truth = simple_segmentation(ref, brain)
    cons = contrast_kept(pred, ref, lesion_mask, brain, rings=rings)
    out = {"lesion_psnr": lesion_psnr(pred, ref, lesion_mask), "contrast_kept_median": median_kept(cons),
           "n_contrast_lesions": len(cons)}
    out.update(segmentation_scores(seg, lesion_mask))
    out["invented_ml"] = invented_ml(seg, seg_truth)
    return out


def estimate_lesion_stats(volumes, lesion_mask, brain, min_voxels=3, reference="FLAIR"):
    """Statistics of real lesions (numbers only): equivalent diameters (mm), placement fractions and,
    per contrast, the ratio of the mean lesion intensity to the mean of its 2-voxel ring of normal
    white matter (:func:`white_matter_mask` of the ``reference`` contrast, other lesions excluded).

    ``volumes``: dict contrast -> scaled 1 mm array registered to ``lesion_mask``.
    """
    ref = volumes[reference]
    wm = white_matter_mask(ref, brain, reference) & ~np.asarray(lesion_mask, bool)
    rings = lesion_rings(lesion_mask, wm, min_voxels=min_voxels)
    diam = [float((6.0 * len(les) / math.pi) ** (1 / 3)) for _, les, _ in rings]
    ratios = {}
    for contrast, vol in volumes.items():
        r = []
        for _, les, rng in rings:
            ring_mean = float(np.mean(vol[tuple(rng.T)]))
            if ring_mean > 0:
                r.append(float(np.mean(vol[tuple(les.T)]) / ring_mean))
        ratios[contrast] = {"median": float(np.median(r)), "p10": float(np.percentile(r, 10)),
                            "p90": float(np.percentile(r, 90)), "n": len(r)}
    maps = placement_maps(ref, reference, keep_distance=True)
    depth = ndimage.distance_transform_edt(brain)
    d_vent = maps.ventricle_distance if maps is not None else np.full(ref.shape, np.inf)
    peri = juxta = 0
    for _, les, _ in rings:
        li = tuple(les.T)
        if float(d_vent[li].min()) <= 6:
            peri += 1
        elif float(depth[li].min()) <= 8:
            juxta += 1
    n = max(len(rings), 1)
    return {"n_lesions": len(rings), "min_voxels": int(min_voxels),
            "diameter_mm": {"median": float(np.median(diam)), "p10": float(np.percentile(diam, 10)),
                            "p90": float(np.percentile(diam, 90)), "values": sorted(round(d, 2) for d in diam)},
            "placement": {"periventricular": peri / n, "juxtacortical": juxta / n,
                          "deep_white_matter": (len(rings) - peri - juxta) / n},
            "intensity_ratio": ratios}
