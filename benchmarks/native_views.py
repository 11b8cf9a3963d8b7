"""Axial, coronal and sagittal views of one scan: input, cubic, output on the native grid, output on the 1 mm grid.

    python benchmarks/native_views.py ../shared/data/thick/openms_p03_study1_FLAIR.nii.gz /tmp/views.png

The figure is made from the user's scan: keep it out of the repository (real data, ../shared/data/README.md).
Rows: the view through the middle of the head along each world axis of the voxel grid (the slice plane first);
columns: the input (its thick slices repeated along the slice axis, nearest neighbour, at the output's rows),
cubic on the native grid, the default output (``--output-grid native``) and ``--output-grid 1mm``; the right
half of each row zooms into the centre (a 40 mm square) to show in-plane detail. One intensity window for all
(0 to the input's 99.5th foreground percentile).
"""

from __future__ import annotations

import argparse
import sys

import nibabel as nib
import numpy as np


def _views(data, axis, zooms, centre):
    """The three orthogonal planes through ``centre`` (voxel indices), slice plane first, each with its pixel
    aspect (row mm / column mm)."""
    out = []
    for plane_axis in [axis] + [a for a in range(3) if a != axis]:
        img = np.take(data, int(centre[plane_axis]), axis=plane_axis)
        rest = [a for a in range(3) if a != plane_axis]
        # after rot90, rows run along rest[1] and columns along rest[0]
        out.append((np.rot90(img), zooms[rest[1]] / zooms[rest[0]], (zooms[rest[1]], zooms[rest[0]])))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scan")
    p.add_argument("out_png")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from prettier_bids.naming import suffix_of
    from prettier_bids.sr.degrade import upsampling_factor
    from prettier_bids.sr.preprocess import find_slice_axis, intensity_scale, voxel_sizes
    from prettier_bids.sr.reconstruct import load_model_set, super_resolve

    torch.set_num_threads(args.threads)
    img = nib.load(args.scan)
    contrast = suffix_of(args.scan)
    model = load_model_set(contrasts=[contrast]).for_contrast(contrast)
    outs = {"cubic (native grid)": super_resolve(img, method="cubic").image,
            f"{model.name} (native grid, default)": super_resolve(img, model).image,
            f"{model.name} (--output-grid 1mm)": super_resolve(img, model, output_grid="1mm").image}
    zin = voxel_sizes(img.affine)
    axis = find_slice_axis(zin)
    factor = upsampling_factor(float(zin[axis]))
    data = np.asarray(img.dataobj, dtype=np.float32)
    rows = next(iter(outs.values())).shape[axis]
    src = np.take(data, np.minimum(np.arange(rows) // factor, data.shape[axis] - 1), axis=axis)  # nearest slabs
    zsrc = np.array(zin, dtype=float)
    zsrc[axis] /= factor
    panels = {"input (thick slices)": (src, zsrc)}
    panels.update({k: (np.asarray(v.dataobj, dtype=np.float32), voxel_sizes(v.affine)) for k, v in outs.items()})
    vmax = intensity_scale(data)
    fig = Figure(figsize=(4 * len(panels), 6 * 2), dpi=110)
    FigureCanvasAgg(fig)
    for col, (title, (vol, z)) in enumerate(panels.items()):
        centre = [n // 2 for n in vol.shape]
        for row, (view, aspect, (zr, zc)) in enumerate(_views(vol, axis, z, centre)):
            for zoom in (0, 1):
                ax = fig.add_subplot(6, len(panels), (2 * row + zoom) * len(panels) + col + 1)
                shown = view
                if zoom:  # the central 40 mm square
                    hy, hx = int(20 / zr), int(20 / zc)
                    cy, cx = view.shape[0] // 2, view.shape[1] // 2
                    shown = view[max(0, cy - hy):cy + hy, max(0, cx - hx):cx + hx]
                ax.imshow(shown, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0 and zoom == 0:
                    ax.set_title(title, fontsize=9)
                if col == 0:
                    ax.set_ylabel(["slice plane", "orthogonal 1", "orthogonal 2"][row] + (" (zoom)" if zoom else ""),
                                  fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out_png)
    print(args.out_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
