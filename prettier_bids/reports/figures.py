"""Orthogonal-view figure of one input: thick-slice input, cubic baseline, SR output, consistency map.

Everything is shown on the output grid (the input and the consistency map by nearest-neighbour
lookup, so the thick slices look as thick as they are), reoriented to the closest RAS axes, and
cut through the same world point. Matplotlib's Agg canvas is used directly (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

VIEWS = ("sagittal", "coronal", "axial")


def _on_grid(img, ref_shape, ref_affine, order=0):
    """``img`` resampled onto the reference grid (nearest by default)."""
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    vox = np.linalg.inv(img.affine) @ ref_affine  # ref voxel -> img voxel
    return ndimage.affine_transform(data, vox[:3, :3], offset=vox[:3, 3], output_shape=ref_shape,
                                    order=order, mode="constant", cval=0.0)


def _canonical(volumes, affine):
    """Reorder/flip arrays (all on one grid) to the closest RAS voxel axes."""
    ornt = nib.orientations.io_orientation(affine)
    out = [nib.orientations.apply_orientation(v, ornt) for v in volumes]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[ornt[:, 0].astype(int)]
    return out, zooms


def _cuts(vol, zooms, centre):
    """The three orthogonal planes through ``centre`` (voxel index) and their pixel aspect (height/width)."""
    i, j, k = centre
    return [(vol[i, :, :].T, zooms[2] / zooms[1]),
            (vol[:, j, :].T, zooms[2] / zooms[0]),
            (vol[:, :, k].T, zooms[1] / zooms[0])]


def _window(vols):
    vals = np.concatenate([v[v > 0].ravel() for v in vols if np.any(v > 0)] or [np.ones(1)])
    return 0.0, float(np.percentile(vals, 99.5)) or 1.0


def ortho_figure(source, outputs, consistency, out_file, title="", dpi=100):
    """Write a PNG with one row per image (``outputs``: list of (label, path)) plus the consistency map.

    ``source`` is the thick-slice input; the last output defines the display grid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    outputs = [(label, nib.load(str(p))) for label, p in outputs]
    ref = outputs[-1][1]
    shape, affine = ref.shape[:3], ref.affine
    src = _on_grid(nib.load(str(source)), shape, affine)
    rows = [("Input (thick slices)", src)] + [(label, np.asarray(img.get_fdata(dtype=np.float32)))
                                                 for label, img in outputs]
    cmap = _on_grid(nib.load(str(consistency)), shape, affine) if consistency else None
    vols, zooms = _canonical([v for _, v in rows] + ([cmap] if cmap is not None else []), affine)
    mask = vols[0] > 0
    centre = (np.round(ndimage.center_of_mass(mask)).astype(int) if mask.any()
              else np.asarray(vols[0].shape) // 2)
    lo, hi = _window(vols[1:len(rows)])

    n_rows = len(rows) + (1 if cmap is not None else 0)
    fig = Figure(figsize=(12, 3.6 * n_rows), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("black")
    axes = fig.subplots(n_rows, 3, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.01, top=0.95, wspace=0.02, hspace=0.06)
    for r in range(n_rows):
        is_map = cmap is not None and r == n_rows - 1
        label = "Consistency |re-degraded - input|" if is_map else rows[r][0]
        for c, (plane, aspect) in enumerate(_cuts(vols[r], zooms, centre)):
            ax = axes[r, c]
            kwargs = dict(cmap="hot", vmin=0.0, vmax=max(0.1, float(np.percentile(vols[r], 99.9)))) if is_map else \
                dict(cmap="gray", vmin=lo, vmax=hi)
            im = ax.imshow(plane, origin="lower", interpolation="nearest", aspect=aspect, **kwargs)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(VIEWS[c], color="white", fontsize=10)
            if c == 0:
                ax.text(0.02, 0.98, label, transform=ax.transAxes, color="yellow", fontsize=9, va="top")
            if is_map and c == 2:
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                cb.ax.tick_params(colors="white", labelsize=7)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out_file), facecolor=fig.get_facecolor(), format="png")
    return str(out_file)
