"""fMRIPrep-style SVG reportlets of one output.

* :func:`before_after_svg`: two images in three orthogonal planes (axial, sagittal, coronal rows, a few cuts
  each) in one SVG whose foreground flickers over the background while the mouse is over it (the
  ``foreground-svg`` / ``background-svg`` groups and the ``flickerAnimation`` CSS of the nipreps reports,
  as nireports' ``compose_view`` writes them). Both images are shown on the grid of the second one (the SR
  output): the thick-slice input by nearest-neighbour lookup, so its slices look as thick as they are. Both
  use one intensity window.
* :func:`map_svg`: the consistency map in the same three planes (static, ``hot`` colour map, a colour bar).

The planes are cut at the same world positions (equally spaced inside the bounding box of the head of the SR
image, as nireports' ``cuts_from_bbox``), so the flicker compares like with like. Orientation as nilearn
shows it: the left hemisphere on the left, anterior and superior up.

Cost (issue 27: reports at a fraction of the SR cost): the planes are drawn here, directly from the voxels,
as PNG mosaics in a hand-written SVG: no matplotlib figure and no resampling. nilearn's ``plot_anat``
resampled every oblique image before each plane it drew and built a matplotlib figure per plane (clinical
scan 320x320x36: the three reportlets took 114 s; data/test_bids: about 1 s each, as long as the SR itself).
The SR image is shown on its own grid, reoriented to the closest RAS axes by flips and transposes only
(:func:`display_image`: no interpolation, the planes of the acquisition; an oblique grid is drawn
de-obliqued, with its voxel sizes), and the other images are looked up on that grid axis by axis
(:func:`_on_grid`: nearest neighbour, exact when the two grids share their axes, as an input and its output
do).
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import nibabel as nib
import numpy as np

from ..sr.preprocess import SCALE_PERCENTILE, in_millimetres

#: Cuts per plane: fMRIPrep shows 7; 4 keep the figures readable and the reportlets cheap.
N_CUTS = 4
#: Rows of each reportlet: axial, sagittal, coronal (world axis of the cut: z, x, y).
ORDER = ("z", "x", "y")
AXIS_OF = {"x": 0, "y": 1, "z": 2}
#: Width of the composed SVG (user units) and the gap between panels (fraction of a panel's width).
WIDTH = 1000.0
GAP = 0.04

FLICKER_CSS = """<style type="text/css">
@keyframes flickerAnimation{uid} {{ 0% {{opacity: 1;}} 100% {{ opacity: 0; }}}}
.foreground-svg {{ animation: 1s ease-in-out 0s alternate none infinite paused flickerAnimation{uid};}}
.foreground-svg:hover {{ animation-play-state: running;}}
</style>"""


def _as_nifti(path_or_img):
    """The image as float32 NIfTI-1, its geometry in mm (``sr.preprocess.in_millimetres``: an input whose header is
    in meters or microns is drawn on the grid of its output, which is in mm)."""
    img = nib.load(str(path_or_img)) if isinstance(path_or_img, (str, Path)) else path_or_img
    img = in_millimetres(img)
    data = np.asarray(img.dataobj, dtype=np.float32)
    return nib.Nifti1Image(data, img.affine)


def display_image(img):
    """``img`` with its voxel axes flipped and transposed to the closest RAS axes and a diagonal affine (the
    voxel sizes; the origin kept): nilearn draws it without resampling. For an axis-aligned image this is
    the same image; an oblique one is shown in its acquisition planes (de-obliqued, no interpolation)."""
    ornt = nib.orientations.io_orientation(img.affine)
    data = nib.orientations.apply_orientation(np.asarray(img.dataobj), ornt)
    affine = np.asarray(img.affine, dtype=np.float64) @ nib.orientations.inv_ornt_aff(ornt, img.shape[:3])
    diag = np.diag(list(nib.affines.voxel_sizes(affine)) + [1.0])
    diag[:3, 3] = affine[:3, 3]
    out = nib.Nifti1Image(data, diag)
    out.prettier_true_affine = affine  # where the displayed voxels really are (for _on_grid)
    return out


def _axis_lookup(img_affine, ref_affine, img_shape, ref_shape):
    """Per-axis nearest indices of ``img`` for every voxel of ``ref`` when the voxel-to-voxel map is a scaling
    and shift of each axis (the grids share their axes); None otherwise."""
    vox = np.linalg.solve(img_affine, ref_affine)  # ref voxel -> img voxel
    lin = vox[:3, :3]
    if np.abs(lin - np.diag(np.diag(lin))).max() > 1e-3 * np.abs(np.diag(lin)).max():
        return None
    return [np.clip(np.rint(vox[a, a] * np.arange(ref_shape[a]) + vox[a, 3]), 0, img_shape[a] - 1).astype(int)
            for a in range(3)]


def _on_grid(img, ref):
    """``img`` on the grid of ``ref`` (nearest neighbour: thick slices stay visibly thick). ``ref`` from
    :func:`display_image`: looked up axis by axis where the grids share their axes (an input and its output),
    else by nilearn's ``resample_to_img``."""
    true_ref = getattr(ref, "prettier_true_affine", ref.affine)
    idx = _axis_lookup(np.asarray(img.affine, dtype=np.float64), true_ref, img.shape[:3], ref.shape[:3])
    if idx is not None:
        data = np.asarray(img.dataobj)
        return nib.Nifti1Image(data[np.ix_(*idx)], ref.affine)
    from nilearn.image import resample_to_img

    resampled = resample_to_img(img, nib.Nifti1Image(np.zeros(ref.shape[:3], np.uint8), true_ref),
                                interpolation="nearest", force_resample=True, copy_header=True)
    return nib.Nifti1Image(np.asarray(resampled.dataobj), ref.affine)


def _head_mask(img):
    data = np.asarray(img.dataobj)
    positive = data[data > 0]
    level = 0.1 * float(np.percentile(positive, 99)) if positive.size else 0.0
    return nib.Nifti1Image((data > level).astype(np.uint8), img.affine)


def _window(img):
    """One (vmin, vmax) for both images of a flicker: robust limits of the reference (its
    :data:`~prettier_bids.sr.preprocess.SCALE_PERCENTILE` percentile, as the intensity scaling)."""
    data = np.asarray(img.dataobj)
    positive = data[data > 0]
    if not positive.size:
        return {"vmin": 0.0, "vmax": 1.0}
    return {"vmin": 0.0, "vmax": float(np.percentile(positive, SCALE_PERCENTILE)) or 1.0}


def cuts_for(img, n_cuts=N_CUTS):
    """World positions of ``n_cuts`` cuts per axis (``{"x": [...], "y": [...], "z": [...]}``), equally spaced
    inside the bounding box of the head of ``img`` (a :func:`display_image`: diagonal affine)."""
    mask = np.asarray(_head_mask(img).dataobj) > 0
    if not mask.any():
        mask = np.ones(mask.shape, bool)
    affine = np.asarray(img.affine, dtype=np.float64)
    cuts = {}
    for name, axis in AXIS_OF.items():
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        voxels = np.linspace(present[0], present[-1], n_cuts + 2)[1:-1]
        cuts[name] = [float(affine[axis, axis] * v + affine[axis, 3]) for v in voxels]
    return cuts


def _plane(data, axis, index):
    """One plane through voxel ``index`` of ``axis`` of RAS-ordered ``data``, as shown: rows top to bottom
    (anterior or superior first), columns left to right (left hemisphere, or posterior, first)."""
    return np.rot90(np.take(data, index, axis=axis))


def _rgb(plane, vmin, vmax, cmap=None):
    scaled = np.clip((plane.astype(np.float32) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    if cmap is None:
        gray = np.round(scaled * 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    from matplotlib import colormaps

    return np.round(colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def _png(rgb):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=3)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _text(x, y, size, text, anchor="start", fill="white", box=False):
    from .markup import text as esc

    out = ""
    if box:  # a title on a white box, as nilearn draws it
        width = size * 0.62 * len(text) + size * 0.4
        out += (f'<rect x="{x - size * 0.2:.1f}" y="{y - size * 1.05:.1f}" width="{width:.1f}" '
                f'height="{size * 1.35:.1f}" fill="white"/>')
        fill = "black"
    return out + (f'<text x="{x:.1f}" y="{y:.1f}" font-family="sans-serif" font-size="{size:.1f}" fill="{fill}" '
                  f'text-anchor="{anchor}">{esc(text)}</text>')


def _rows(img, cuts, window, label=None, cmap=None):
    """The three plane rows of one image as SVG fragments, each scaled to :data:`WIDTH`; and their heights."""
    data = np.asarray(img.dataobj)
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = np.abs(np.diag(affine)[:3])
    rows, heights = [], []
    for r, mode in enumerate(ORDER):
        axis = AXIS_OF[mode]
        shown = [a for a in range(3) if a != axis]  # columns: shown[0]; rows: shown[1] (after rot90)
        col_mm, row_mm = zooms[shown[0]], zooms[shown[1]]
        indices = [int(np.clip(np.rint((c - affine[axis, 3]) / affine[axis, axis]), 0, data.shape[axis] - 1))
                   for c in cuts[mode]]
        planes = [_plane(data, axis, i) for i in indices]
        n_rows, n_cols = planes[0].shape
        panel_w, panel_h = n_cols * col_mm, n_rows * row_mm
        gap = GAP * panel_w
        natural_w = len(planes) * panel_w + (len(planes) - 1) * gap
        scale = WIDTH / natural_w
        height = panel_h * scale
        parts = ['<g transform="translate(0, {y:.1f})">']
        size = 0.018 * WIDTH
        for k, (plane, cut) in enumerate(zip(planes, cuts[mode])):
            x = k * (panel_w + gap) * scale
            parts.append(f'<image x="{x:.1f}" y="0" width="{panel_w * scale:.1f}" height="{height:.1f}" '
                         f'preserveAspectRatio="none" style="image-rendering:pixelated" '
                         f'xlink:href="data:image/png;base64,{_png(_rgb(plane, *window, cmap=cmap))}"/>')
            parts.append(_text(x + 0.02 * panel_w * scale, height - 0.03 * height, size, f"{mode}={cut:.0f}"))
            if mode != "x":
                parts.append(_text(x + 0.04 * panel_w * scale, 1.1 * size, size, "L"))
                parts.append(_text(x + 0.96 * panel_w * scale, 1.1 * size, size, "R", anchor="end"))
        if label and r == 0:
            parts.append(_text(0.3 * size, 1.3 * size, 1.2 * size, label, box=True))
        parts.append("</g>")
        rows.append("".join(parts))
        heights.append(height)
    return rows, heights


def _place(rows, heights):
    out, y = [], 0.0
    for row, h in zip(rows, heights):
        out.append(row.replace("{y:.1f}", f"{y:.1f}"))
        y += h
    return out, y


def _svg(body, height, style=""):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" version="1.1" '
            f'viewBox="0 0 {WIDTH:.1f} {height:.1f}" preserveAspectRatio="xMidYMid meet">\n'
            f'<rect x="0" y="0" width="{WIDTH:.1f}" height="{height:.1f}" fill="black"/>\n{style}{body}\n</svg>\n')


def before_after_svg(befores, after, out_files, before_labels, after_label="after", n_cuts=N_CUTS):
    """Flickering SVGs: each of ``befores`` (foreground, on ``after``'s grid) over ``after`` (background).

    ``befores``, ``out_files`` and ``before_labels`` are lists (or single items); the background
    planes are drawn once and shared.
    """
    single = isinstance(out_files, (str, Path))
    if single:
        befores, out_files, before_labels = [befores], [out_files], [before_labels]
    after_img = display_image(_as_nifti(after))
    cuts = cuts_for(after_img, n_cuts)
    window = tuple(_window(after_img).values())
    background, height = _place(*_rows(after_img, cuts, window, after_label))
    outs = []
    for before, out_file, label in zip(befores, out_files, before_labels):
        before_img = _on_grid(_as_nifti(before), after_img)
        foreground, _ = _place(*_rows(before_img, cuts, window, label))
        body = ('<g class="background-svg">' + "".join(background) + '</g>\n<g class="foreground-svg">'
                + "".join(foreground) + "</g>")
        uid = hashlib.sha256(body.encode()).hexdigest()[:32]  # one per figure, the same for the same figure:
        Path(out_file).write_text(_svg(body, height, FLICKER_CSS.format(uid=uid) + "\n"))  # a rerun's bytes too
        outs.append(str(Path(out_file).absolute()))
    return outs[0] if single else outs


def map_svg(map_file, reference, out_file, label="consistency map", n_cuts=N_CUTS):
    """The consistency map in three planes, cut where the flickers of ``reference`` are cut, with a colour bar."""
    ref_img = display_image(_as_nifti(reference))
    map_img = _on_grid(_as_nifti(map_file), ref_img)
    data = np.asarray(map_img.dataobj)
    vmax = max(0.1, float(np.percentile(data, 99.9))) if data.size else 0.1
    rows, height = _place(*_rows(map_img, cuts_for(ref_img, n_cuts), (0.0, vmax), label, cmap="hot"))
    bar_h = 0.04 * WIDTH
    bar = _rgb(np.linspace(0.0, vmax, 256)[None, :].repeat(2, axis=0), 0.0, vmax, cmap="hot")
    size = 0.6 * bar_h
    legend = (f'<g transform="translate(0, {height:.1f})"><image x="{0.25 * WIDTH:.1f}" y="{0.15 * bar_h:.1f}" '
              f'width="{0.5 * WIDTH:.1f}" height="{0.7 * bar_h:.1f}" preserveAspectRatio="none" '
              f'xlink:href="data:image/png;base64,{_png(bar)}"/>'
              + _text(0.24 * WIDTH, 0.75 * bar_h, size, "0", anchor="end")
              + _text(0.76 * WIDTH, 0.75 * bar_h, size, f"{vmax:.2g}") + "</g>")
    Path(out_file).write_text(_svg("".join(rows) + legend, height + bar_h))
    return str(Path(out_file).absolute())
