"""Lesion-focused reportlet of a FLAIR output: its largest hyperintense regions, zoomed, thick input /
cubic / super-resolution side by side.

Why: lesions are what MS users look at first, and they are small; the whole-head flickers show them
at a few millimetres per pixel. Each row of this figure is one region, cut through its centre in the
plane that contains the slice axis (where the super-resolution adds detail and where an invented or
erased lesion would show), the three images on the output's grid with one intensity window.

How the regions are found (a display aid, not a segmentation): the output divided by its local mean
(Gaussian, :data:`LOCAL_MM`, over tissue brighter than CSF; removes the bias field), voxels more than :data:`Z_THRESHOLD` robust standard deviations (1.4826 x MAD) above the median of the head (a threshold mask eroded
by :data:`ERODE_MM`: scalp, skull and most of the cortex do not count; MS lesions are mostly deep), connected regions of at least
:data:`MIN_VOXELS` voxels, the :data:`N_REGIONS` largest. The same crop is shown for all three
images; a region found in the output is also outlined on the input and cubic panels so that the
reader can judge whether it is in the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_REGIONS = 3
Z_THRESHOLD = 3.0
ERODE_MM = 25.0
#: Width (mm, Gaussian sigma) of the local mean each voxel is divided by before thresholding.
LOCAL_MM = 10.0
MIN_VOXELS = 10
#: Side of the zoomed window (mm).
WINDOW_MM = 48.0


def _load(path_or_img):
    import nibabel as nib

    img = nib.load(str(path_or_img)) if isinstance(path_or_img, (str, Path)) else path_or_img
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)


def hyperintense_regions(data, zooms, n_regions=N_REGIONS, z=Z_THRESHOLD, erode_mm=ERODE_MM,
                         min_voxels=MIN_VOXELS):
    """``[(label mask, centre voxel (i, j, k), n voxels)]`` of the largest hyperintense regions of ``data``."""
    from scipy import ndimage

    data = np.asarray(data, dtype=np.float32)
    positive = data[data > 0]
    if positive.size == 0:
        return []
    head = data > 0.1 * float(np.percentile(positive, 99))
    head = ndimage.binary_fill_holes(head)
    iterations = max(1, int(round(erode_mm / max(min(zooms), 1e-3))))
    inner = ndimage.binary_erosion(head, iterations=iterations)
    if inner.sum() < min_voxels:
        return []
    # divide by a smooth local mean (bias field and tissue context): lesions stand out locally
    sigma = LOCAL_MM / np.asarray(zooms, dtype=float)
    tissue = inner & (data > 0.7 * float(np.median(data[inner])))  # dark CSF would lift its rim
    local = ndimage.gaussian_filter(data * tissue, sigma) / np.maximum(
        ndimage.gaussian_filter(tissue.astype(np.float32), sigma), 1e-3)
    data = np.where(inner, data / np.maximum(local, 1e-6), 0).astype(np.float32)
    vals = data[inner]
    median = float(np.median(vals))
    spread = 1.4826 * float(np.median(np.abs(vals - median)))  # robust standard deviation
    if spread <= 0:
        return []
    bright = inner & (data > median + z * spread)
    labels, n = ndimage.label(bright)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = [i + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= min_voxels][:n_regions]
    out = []
    for lab in order:
        mask = labels == lab
        centre = tuple(int(round(c)) for c in ndimage.center_of_mass(mask))
        out.append((mask, centre, int(sizes[lab - 1])))
    return out


def _crop(vol, centre, slice_axis, half):
    """The 2D plane through ``centre`` that contains ``slice_axis``, ``2 * half + 1`` voxels a side (padded)."""
    inplane = [a for a in range(3) if a != slice_axis]
    cut_axis = inplane[1]  # cut across the second in-plane axis: the plane holds the slice axis and the first
    plane = np.take(vol, centre[cut_axis], axis=cut_axis)
    rows_axis, cols_axis = (inplane[0], slice_axis)
    c_rows, c_cols = centre[rows_axis], centre[cols_axis]
    h_rows, h_cols = half[rows_axis], half[cols_axis]
    padded = np.pad(plane, ((h_rows, h_rows), (h_cols, h_cols)))
    crop = padded[c_rows:c_rows + 2 * h_rows + 1, c_cols:c_cols + 2 * h_cols + 1]
    return np.rot90(crop)  # the slice axis vertical


def lesion_view_svg(thick, cubic, sr, out_file, slice_axis=None, n_regions=N_REGIONS):
    """Write the lesion view of ``sr`` (with ``thick`` and ``cubic`` on its grid) to ``out_file`` (SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nibabel.affines import voxel_sizes

    from ..sr.preprocess import InputError, find_slice_axis
    from .reportlets import _on_grid  # the reportlets' nearest lookup (per axis when the grids share their axes)

    sr_img = _load(sr)
    zooms = voxel_sizes(sr_img.affine)
    thick_img = _load(thick)
    if slice_axis is None:
        try:
            slice_axis = find_slice_axis(voxel_sizes(thick_img.affine))
        except InputError:  # no distinct slice axis (e.g. --force on a fine image): the coarsest one
            slice_axis = int(np.argmax(voxel_sizes(thick_img.affine)))
    on_grid = [_on_grid(img, sr_img) for img in (thick_img, _load(cubic))]
    vols = [np.asarray(i.dataobj, dtype=np.float32) for i in on_grid] + [np.asarray(sr_img.dataobj)]
    regions = hyperintense_regions(vols[2], zooms, n_regions=n_regions)
    titles = ["thick-slice input", "cubic interpolation", "PRETTIER super-resolution"]
    rows = max(1, len(regions))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
    fig.patch.set_facecolor("black")
    for c, ax in enumerate(axes[0]):
        ax.set_title(titles[c], color="white", fontsize=9)
    if not regions:
        for ax in axes[0]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
        axes[0][1].text(0.5, 0.5, "no hyperintense region found", color="white", ha="center", va="center",
                        transform=axes[0][1].transAxes)
    half = [max(1, int(round(WINDOW_MM / 2 / z))) for z in zooms]
    for r, (mask, centre, size) in enumerate(regions):
        window = _crop(vols[2], centre, slice_axis, half)
        vmin, vmax = (float(v) for v in np.percentile(window, [1, 99.5]))
        vmax = vmax if vmax > vmin else vmin + 1.0
        outline = _crop(mask.astype(np.float32), centre, slice_axis, half)
        for c, vol in enumerate(vols):
            ax = axes[r][c]
            ax.imshow(_crop(vol, centre, slice_axis, half), cmap="gray", vmin=vmin, vmax=vmax,
                      interpolation="nearest", aspect=float(zooms[slice_axis] / zooms[[a for a in range(3)
                                                                                       if a != slice_axis][0]]))
            ax.contour(outline, levels=[0.5], colors=["#ff4040"], linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"region {r + 1}: {size * float(np.prod(zooms)) / 1000:.2f} ml", color="white",
                              fontsize=8)
    fig.tight_layout()
    fmt = Path(out_file).suffix[1:] or "svg"
    with plt.rc_context({"svg.hashsalt": "prettier_bids"}):  # no random ids, no date: a rerun's figure is the same
        fig.savefig(str(out_file), format=fmt, facecolor="black", dpi=100,
                    metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return str(out_file)
