"""fMRIPrep-style SVG reportlets of one output, drawn with nireports.

* :func:`before_after_svg`: two images in three orthogonal planes (axial, sagittal, coronal rows,
  a few cuts each), composed by :func:`nireports.reportlets.utils.compose_view` into one SVG whose
  foreground flickers over the background while the mouse is over it (the ``foreground-svg`` /
  ``background-svg`` classes and the ``flickerAnimation`` CSS of the nipreps reports). Both images
  are shown on the grid of the second one (the SR output): the thick-slice input by
  nearest-neighbour lookup, so its slices look as thick as they are. Both use one intensity window.
* :func:`map_svg`: the consistency map in the same three planes (static, ``hot`` colour map).

The planes are cut at the same world positions (:func:`nireports.reportlets.utils.cuts_from_bbox`
over the head of the SR image), so the flicker compares like with like.

Cost: nilearn resamples every image whose affine is not diagonal (an oblique acquisition) before each plane
it draws, and ``resample_to_img`` put the thick input on the SR grid with a full 3D lookup: on a clinical
scan (320x320x36 at 0.72x0.72x4 mm) the three reportlets took 114 s, most of it in ``scipy.ndimage``.
Here the SR image is shown on its own voxel grid, reoriented to the closest RAS axes by flips and
transposes only (:func:`display_image`: no interpolation, the planes of the acquisition; an oblique grid
is drawn de-obliqued, with its voxel sizes), and the other images are looked up on that grid axis by axis
(:func:`_on_grid`: nearest neighbour, exact when the two grids share their axes, as an input and its
output do); nilearn then draws without resampling.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..sr.preprocess import SCALE_PERCENTILE

#: Cuts per plane: fMRIPrep shows 7; 4 keep the figures readable and the reportlets cheap.
N_CUTS = 4
#: Rows of each reportlet (nilearn display modes): axial, sagittal, coronal.
ORDER = ("z", "x", "y")
#: Resolution of the rendered planes (the SVGs embed PNG bitmaps).
DPI = 120


def _as_nifti(path_or_img):
    img = nib.load(str(path_or_img)) if isinstance(path_or_img, (str, Path)) else path_or_img
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
    from nireports.reportlets.utils import cuts_from_bbox

    return cuts_from_bbox(_head_mask(img), cuts=n_cuts)


def _planes(img, div_id, label, cuts, plot_params, dpi=DPI):
    """One SVG string per plane (nilearn ``plot_anat`` + nireports' ``extract_svg``), as in
    :func:`nireports.reportlets.mosaic.plot_registration` but at ``dpi`` (nireports uses 300:
    four times the pixels, and most of the time of a reportlet)."""
    from uuid import uuid4

    from nilearn.plotting import plot_anat
    from nireports.reportlets.utils import extract_svg

    out = []
    for i, mode in enumerate(ORDER):
        display = plot_anat(img, display_mode=mode, cut_coords=cuts[mode], title=label if i == 0 else None,
                            **{"colorbar": False, **plot_params})
        svg = extract_svg(display, dpi=dpi, compress=False)
        display.close()
        out.append(svg.replace("figure_1", f"{div_id}-{mode}-{uuid4()}", 1))
    return out


def _figures(svgs):
    from nireports._vendored.svgutils.transform import fromstring

    return [fromstring(svg) for svg in svgs]


def before_after_svg(befores, after, out_files, before_labels, after_label="after", n_cuts=N_CUTS):
    """Flickering SVGs: each of ``befores`` (foreground, on ``after``'s grid) over ``after`` (background).

    ``befores``, ``out_files`` and ``before_labels`` are lists (or single items); the background
    planes are rendered once and shared.
    """
    from nireports.reportlets.utils import compose_view

    single = isinstance(out_files, (str, Path))
    if single:
        befores, out_files, before_labels = [befores], [out_files], [before_labels]
    after_img = display_image(_as_nifti(after))
    cuts = cuts_for(after_img, n_cuts)
    params = {**_window(after_img), "interpolation": "nearest"}
    background = _planes(after_img, "after", after_label, cuts, params)
    outs = []
    for before, out_file, label in zip(befores, out_files, before_labels):
        before_img = _on_grid(_as_nifti(before), after_img)
        outs.append(compose_view(_figures(background), _figures(_planes(before_img, "before", label, cuts, params)),
                                 out_file=str(out_file)))
    return outs[0] if single else outs


def map_svg(map_file, reference, out_file, label="consistency map", n_cuts=N_CUTS):
    """The consistency map in three planes, cut where the flickers of ``reference`` are cut."""
    from nireports.reportlets.utils import compose_view

    ref_img = display_image(_as_nifti(reference))
    map_img = _on_grid(_as_nifti(map_file), ref_img)
    data = np.asarray(map_img.dataobj)
    vmax = max(0.1, float(np.percentile(data, 99.9))) if data.size else 0.1
    params = {"cmap": "hot", "vmin": 0.0, "vmax": vmax, "interpolation": "nearest", "black_bg": True,
              "colorbar": True}
    return compose_view(_figures(_planes(map_img, "map", label, cuts_for(ref_img, n_cuts), params)), [],
                        out_file=str(out_file))
