"""Pre- and post-processing shared by training and inference: slice axis, in-plane grid, intensities.

One place for each: :func:`intensity_scale` is what training patches and inference divide by,
:func:`find_slice_axis` is how every caller finds the through-plane axis.
"""

from __future__ import annotations

import os

import numpy as np
from nibabel.affines import voxel_sizes  # noqa: F401  (re-exported: the one way voxel sizes are computed)
from scipy import ndimage

from .degrade import apply_along_axis, axis_index_map, cubic_matrix, output_rows, upsampling_factor

#: A voxel axis at most this size (mm) counts as high resolution.
ISOTROPIC_MAX_MM = 1.5
#: The thickest slices (and widest slice spacing) the SR core takes: beyond it the header's voxel size is wrong.
MAX_SLICE_MM = 30.0
#: In-plane voxel sizes inside this range are kept on the network's working grid; others are resampled to
#: ``INPLANE_TARGET_MM`` (the ~1 mm planes the networks were trained on).
INPLANE_KEEP_RANGE = (0.8, 1.25)
INPLANE_TARGET_MM = 1.0
#: The output grids (``--output-grid``): ``native`` keeps the input's in-plane voxels where they are
#: :data:`NATIVE_INPLANE_RANGE` mm (others as ``1mm``); ``1mm`` is the working grid (the outputs of earlier versions).
OUTPUT_GRIDS = ("native", "1mm")
DEFAULT_OUTPUT_GRID = "native"
NATIVE_INPLANE_RANGE = (0.4, 1.25)
#: Percentile of the foreground that maps to 1.0.
SCALE_PERCENTILE = 99.5
#: A slice thickness is plausible between these multiples of the slice spacing (gaps and overlaps included).
THICKNESS_RANGE = (0.2, 2.5)
#: Robust minimum of the volume (percentile) used as the intensity offset when one is needed.
OFFSET_PERCENTILE = 0.5

# Image admission (:func:`check_geometry`, :func:`check_output_grid`): what the header alone must satisfy
# before any voxel is read.
#: The finest voxel size (mm) the SR core takes: finer is a wrong header (1e-30 mm), not an MRI.
MIN_VOXEL_MM = 0.05
#: The most voxels an input image may have (2**27, 134 million: 512 MB as float32; a 0.25 mm 1024x1024
#: in-plane matrix with 128 slices). A larger claim is a damaged or malicious header (a 2 MB gzip bomb
#: claiming 2048x2048x256).
MAX_INPUT_VOXELS = 2 ** 27
#: The most voxels of the ~1 mm output grid (2**27: a 512 mm cube at 1 mm).
MAX_OUTPUT_VOXELS = 2 ** 27
#: The most voxels along one axis of a NIfTI-1 file (its ``dim`` is int16): the outputs are NIfTI-1, also for a
#: NIfTI-2 input.
NIFTI1_MAX_DIM = 32767
#: Peak memory of one super-resolution, per voxel of the output grid (float32, about twelve copies) and per
#: input voxel (the data, its working and scaled copies): the estimate the BIDS-App's scheduler uses too.
PEAK_BYTES_PER_OUTPUT_VOXEL = 48
PEAK_BYTES_PER_INPUT_VOXEL = 16
#: A voxel beyond this many times the volume's robust range (0.1th to 99.9th percentile) from that range is an
#: absurd outlier (a corrupt voxel at 1e9 or 1e30): it is clipped to that bound before scaling (and counted).
OUTLIER_SPAN = 10.0
OUTLIER_PERCENTILES = (0.1, 99.9)


class InputError(ValueError):
    """An input image that the SR core cannot or should not process (message is one line)."""


class AlreadyHighResolution(InputError):
    """Every voxel axis is <= ``ISOTROPIC_MAX_MM``: there are no thick slices to super-resolve."""


def find_slice_axis(zooms, force=False):
    """Voxel axis of the thick slices (works for axial, sagittal, coronal and oblique stacks).

    Raises :class:`InputError` when every axis is <= 1.5 mm (already high resolution) unless
    ``force``, when two axes tie for the largest spacing, and when the slice spacing exceeds
    :data:`MAX_SLICE_MM` (whatever ``force`` says).
    """
    zooms = np.asarray(zooms, dtype=float)[:3]
    order = np.argsort(zooms)[::-1]
    axis = int(order[0])
    if zooms[axis] <= ISOTROPIC_MAX_MM and not force:
        raise AlreadyHighResolution(
            "already high resolution (%s mm, every axis <= %.1f mm); nothing to do"
            % (describe_zooms(zooms), ISOTROPIC_MAX_MM))
    check_slice_spacing(zooms)
    if zooms[order[1]] > 0.8 * zooms[axis] and not force:
        raise InputError("cannot tell the slice axis: voxel size %s mm has two similar large axes"
                         % describe_zooms(zooms))
    return axis


def slice_spacing(affine, axis):
    """The distance (mm) between neighbouring slice planes: the voxel size along the slice ``axis``, or for a sheared
    affine (slices stacked askew to their planes, as with a gantry tilt) its part perpendicular to the planes, the
    distance a slice thickness and DICOM's ``SpacingBetweenSlices`` are measured along. The slice profile (thickness
    / spacing) is in these units; the output rows (the upsampling factor) follow the voxel axis (:func:`voxel_sizes`)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    along = float(np.linalg.norm(cols[:, axis]))
    normal = np.cross(*(cols[:, k] for k in range(3) if k != axis))
    size = float(np.linalg.norm(normal))
    if not size > 0:
        return along
    across = abs(float(cols[:, axis] @ normal)) / size
    return along if abs(across - along) <= 1e-6 * along else across


def check_slice_spacing(zooms):
    """InputError when the largest voxel size (the slice spacing) is beyond :data:`MAX_SLICE_MM`: a wrong header
    (500 mm, 1e30 mm), not a slice stack. Part of the header admission (:func:`check_geometry`), so that the
    BIDS-App fails such an image as it does other damaged headers, and of :func:`find_slice_axis`."""
    spacing = float(np.max(np.asarray(zooms, dtype=float)[:3]))
    if spacing > MAX_SLICE_MM:
        shown = "%.4g" % spacing
        if float(shown) <= MAX_SLICE_MM:  # rounded onto the limit: enough digits to show why
            shown = repr(spacing)
        raise InputError("slice spacing %s mm is beyond the %g mm this tool takes: check the header's voxel "
                         "sizes" % (shown, MAX_SLICE_MM))


def plausible_thickness(thickness, spacing):
    """Whether a slice ``thickness`` fits the slice ``spacing`` (within :data:`THICKNESS_RANGE` times it).

    The one rule for every caller: the SR core refuses other thicknesses, the BIDS side ignores such a
    sidecar ``SliceThickness`` and assumes thickness = spacing.
    """
    lo, hi = THICKNESS_RANGE
    return bool(thickness > 0 and lo * spacing <= thickness <= hi * spacing)


def outlier_limits(data):
    """``(low, high)``: values beyond them are absurd outliers (:data:`OUTLIER_SPAN` times the robust range of the
    non-zero voxels, :data:`OUTLIER_PERCENTILES`, widened to include 0, beyond it). One corrupt voxel cannot move
    these limits (percentiles)."""
    values = data[np.isfinite(data) & (data != 0)]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(values, OUTLIER_PERCENTILES))
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero (the background) is never an outlier
    span = hi - lo
    return lo - OUTLIER_SPAN * span, hi + OUTLIER_SPAN * span


def clip_outliers(data):
    """``(data, n)``: ``data`` with its absurd outliers (:func:`outlier_limits`) clipped to the limits, and how
    many voxels that changed (0: ``data`` itself is returned, unchanged)."""
    lo, hi = outlier_limits(data)
    n = int(np.count_nonzero((data < lo) | (data > hi)))
    if n == 0:
        return data, 0
    return np.clip(data, np.float32(lo), np.float32(hi)).astype(data.dtype, copy=False), n


def foreground_threshold(data):
    """Foreground threshold: half the mean of the positive voxels (robust to air and skull-stripping), absurd
    outliers (:func:`outlier_limits`) counted at the upper limit, so that one corrupt voxel cannot raise it above
    the tissue (identical to the plain mean when there are none)."""
    finite = data[np.isfinite(data)]
    nz = finite[finite > 0]
    if nz.size == 0:
        return 0.0
    hi = outlier_limits(finite)[1]
    if float(nz.max()) > hi:
        nz = np.minimum(nz, np.float32(hi))
    return float(0.5 * np.mean(nz, dtype=np.float64))  # a float32 sum of large values overflows to inf


def intensity_scale(data):
    """Scale s so that ``data / s`` has its foreground's :data:`SCALE_PERCENTILE` (99.5th) percentile at 1."""
    thr = foreground_threshold(data)
    fg = data[data > thr]
    if fg.size == 0:
        return 1.0
    s = float(np.percentile(fg, SCALE_PERCENTILE))
    return s if s > 0 else 1.0


def intensity_offset(data):
    """Offset subtracted before scaling: 0 for non-negative images (unchanged behaviour); the robust
    minimum (0.5th percentile) when that is negative (all-negative, inverted or signed data), so the
    foreground scaling works for any sign and offset."""
    finite = data[np.isfinite(data)]
    if finite.size == 0 or float(finite.min()) >= 0:
        return 0.0
    return min(0.0, float(np.percentile(finite, OFFSET_PERCENTILE)))


def intensity_scaling(data):
    """``(offset, scale)``: the network sees ``(data - offset) / scale``, its foreground's 99.5th
    percentile at 1. For non-negative inputs the offset is 0 and the scale is
    :func:`intensity_scale` (exactly as before offsets existed)."""
    offset = intensity_offset(data)
    if offset == 0.0:
        return 0.0, intensity_scale(data)
    shifted = data - np.float32(offset)
    scale = intensity_scale(shifted)
    if scale == 1.0 and float(np.max(shifted)) > 0:  # no foreground found: fall back to the robust range
        scale = float(np.percentile(shifted, SCALE_PERCENTILE)) or float(np.max(shifted))
    return offset, scale


def apply_scaling(data, offset, scale):
    """``(data - offset) / scale`` as float32 (bit-identical to ``data / scale`` when offset is 0)."""
    if offset == 0.0:
        return data / np.float32(scale)
    return (data - np.float32(offset)) / np.float32(scale)


def restore_intensity(scaled, scale, reference, reference_dtype=None, offset=0.0):
    """Exact inverse of the scaling, clipped to the input's range, cast to the output dtype policy.

    Integer inputs come back in their own dtype (rounded);
    floating (or scaled-integer) inputs as float32.
    """
    out = scaled.astype(np.float32) * np.float32(scale)
    if offset != 0.0:
        out += np.float32(offset)
    lo, hi = float(np.min(reference)), float(np.max(reference))
    np.clip(out, lo, hi, out=out)
    dtype = output_dtype(reference.dtype if reference_dtype is None else reference_dtype)
    if np.issubdtype(dtype, np.integer):  # within the type's own range, so that no value wraps round
        info = np.iinfo(dtype)
        wide = np.clip(np.rint(out.astype(np.float64)), info.min, info.max)
        with np.errstate(invalid="ignore"):
            cast = wide.astype(dtype)
        cast[wide >= float(info.max)] = info.max  # 2**63 - 1 is 2**63 as a float
        return cast
    return out.astype(dtype)


#: Millimetres per spatial unit of a NIfTI header (``xyzt_units``) that is not mm; unknown units are read as mm.
MM_PER_UNIT = {"meter": 1000.0, "micron": 0.001}


def header_units(header):
    """``(spatial, time)`` units of a NIfTI header's ``xyzt_units``, each read on its own: ``unknown`` for a code
    NIfTI does not define (nibabel's ``get_xyzt_units`` raises KeyError when either is undefined, e.g. spatial
    code 4-7 or bit 64 set) and for headers without the field."""
    from nibabel.nifti1 import unit_codes

    try:
        code = int(header["xyzt_units"])
    except (KeyError, TypeError, ValueError, IndexError):
        return "unknown", "unknown"
    labels = []
    for part in (code % 8, code - code % 8):
        try:
            labels.append(unit_codes.label[part] or "unknown")
        except KeyError:
            labels.append("unknown")
    return tuple(labels)


def spatial_unit(img):
    """The header's spatial unit (``mm``, ``meter``, ``micron`` or ``unknown``); ``unknown`` for other images."""
    header = getattr(img, "header", None)
    return "unknown" if header is None else header_units(header)[0]


def in_millimetres(img):
    """``img`` with its geometry in mm: an image whose header says meter or micron gets its affine (and zooms)
    scaled to mm, the voxel data untouched (a proxy, not read); any other image is returned as it is."""
    from nibabel.spatialimages import HeaderDataError

    factor = MM_PER_UNIT.get(spatial_unit(img))
    if factor is None:
        return img
    hdr = img.header.copy()
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3] *= factor
    try:
        with np.errstate(all="ignore"):
            out = type(img)(img.dataobj, affine, hdr)
            out.set_qform(affine, code=int(hdr["qform_code"]))
            out.set_sform(affine, code=int(hdr["sform_code"]))
            out.header.set_zooms(tuple(float(z) * factor for z in hdr.get_zooms()[:3]) + tuple(hdr.get_zooms()[3:]))
    except (HeaderDataError, ValueError, np.linalg.LinAlgError):  # a degenerate affine: the image is left as it is,
        return img  # for the header admission to refuse with its own message
    out.header.set_xyzt_units("mm", header_units(hdr)[1])
    return out


def header_warnings(img):
    """Header problems worth showing to the user (the core uses the sform, as nibabel does)."""
    hdr = img.header
    out = []
    unit = spatial_unit(img)
    if unit in MM_PER_UNIT:
        out.append(f"the header's spatial unit is {unit}: its voxel sizes and affine were converted to mm")
    try:
        code = int(hdr["xyzt_units"])
    except (KeyError, TypeError, ValueError, IndexError):
        code = 0
    if code % 8 > 3:  # 4-7: no NIfTI unit
        out.append(f"the header's spatial unit code {code % 8} (xyzt_units {code}) is none NIfTI defines: read as mm")
    try:
        qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    except (KeyError, TypeError, ValueError):  # not a NIfTI header
        return out
    if qcode == 0 and scode == 0:
        out.append("neither qform nor sform is set: orientation is unknown")
    elif qcode > 0 and scode > 0:
        try:
            qform = hdr.get_qform()
        except ValueError:  # a quaternion with b^2 + c^2 + d^2 > 1: nibabel reads none (niftilib a 180-degree turn)
            out.append("qform and sform disagree (the qform's quaternion is invalid): the sform is used")
        else:  # compared in mm (1e-3 mm), whatever the header's unit: in meters, 1e-3 let them be 1 mm apart unsaid
            factor = MM_PER_UNIT.get(unit, 1.0)
            if not np.allclose(np.asarray(qform)[:3] * factor, np.asarray(hdr.get_sform())[:3] * factor, atol=1e-3):
                out.append("qform and sform disagree: the sform is used")
    aff = np.asarray(img.affine, dtype=float)[:3, :3]
    cols = aff / np.maximum(np.linalg.norm(aff, axis=0), 1e-12)
    if np.abs(cols.T @ cols - np.eye(3)).max() > 1e-3:
        out.append("the affine is sheared (voxel axes are not orthogonal)")
    return out


def output_dtype(input_dtype):
    input_dtype = np.dtype(input_dtype)
    if np.issubdtype(input_dtype, np.integer):
        return input_dtype  # values are clipped to the input's range, so they fit
    return np.dtype(np.float32)


def inplane_plan(shape, zooms, slice_axis, keep_range=INPLANE_KEEP_RANGE):
    """New shape and voxel-index map for resampling the in-plane axes to ~1 mm when outside ``keep_range``
    (default: the network's working grid, :data:`INPLANE_KEEP_RANGE`)."""
    new_shape = list(shape)
    index_map = np.eye(4)
    for ax in range(3):
        if ax == slice_axis:
            continue
        v = float(zooms[ax])
        if keep_range[0] <= v <= keep_range[1]:
            continue
        n_new = max(1, int(round(shape[ax] * v / INPLANE_TARGET_MM)))
        step = shape[ax] / n_new  # in old voxels: the new grid spans the same field of view
        new_shape[ax] = n_new
        index_map = index_map @ axis_index_map(3, ax, step, -0.5 + step / 2)
    return tuple(new_shape), index_map


def output_plan(shape, zooms, slice_axis, grid=DEFAULT_OUTPUT_GRID):
    """The output's in-plane grid (:data:`OUTPUT_GRIDS`): new shape and voxel-index map to the input grid, as
    :func:`inplane_plan` gives them (``native``: in-plane axes of :data:`NATIVE_INPLANE_RANGE` mm kept)."""
    if grid not in OUTPUT_GRIDS:
        raise ValueError(f"unknown output grid {grid!r}; choose one of {OUTPUT_GRIDS}")
    return inplane_plan(shape, zooms, slice_axis, NATIVE_INPLANE_RANGE if grid == "native" else INPLANE_KEEP_RANGE)


def resample_inplane(data, index_map, new_shape):
    """Cubic-spline resampling onto the grid of :func:`inplane_plan` (anti-aliased when shrinking).

    ``index_map`` takes a voxel index of the new grid to one of ``data``'s (diagonal: axis-aligned scalings and
    shifts); an axis whose map is the identity is left as it is."""
    out = data.astype(np.float32)
    for ax in range(3):
        step = index_map[ax, ax]
        if new_shape[ax] == data.shape[ax] and abs(step - 1.0) < 1e-9 and abs(index_map[ax, 3]) < 1e-9:
            continue
        if step > 1.0:  # shrinking: Gaussian pre-filter against aliasing
            out = ndimage.gaussian_filter1d(out, sigma=0.4 * step, axis=ax, mode="nearest")
        positions = index_map[ax, 3] + step * np.arange(new_shape[ax])
        out = apply_along_axis(cubic_matrix(data.shape[ax], positions), out, ax)
    return out


def regrid_map(from_map, to_map):
    """Voxel-index map from a grid whose map to the input is ``to_map`` onto one whose map is ``from_map``
    (both from :func:`inplane_plan`): what :func:`resample_inplane` takes to move data between them."""
    return np.linalg.inv(from_map) @ to_map


def working_grid(data, zooms, slice_axis):
    """The image on the in-plane grid the network works on (:func:`inplane_plan`, then :func:`resample_inplane`
    when needed): returns (data on that grid, the voxel-index map from it to the input grid)."""
    new_shape, index_map = inplane_plan(data.shape, zooms, slice_axis)
    if new_shape != tuple(data.shape):
        data = resample_inplane(data, index_map, new_shape)
    return data, index_map


#: The most bytes of NIfTI header extensions an input may carry (nibabel reads them whole into memory, and outputs
#: keep them): a dcm2niix DICOM extension is kilobytes; a 1.6 GB extension gzipped to 1.6 MB is a bomb.
MAX_HEADER_EXTENSION_BYTES = 32 << 20


#: The largest ``vox_offset`` (bytes) taken: 2**53, far beyond any image file, still exact as a float.
MAX_VOX_OFFSET = float(2 ** 53)
#: The ``qform_code``/``sform_code`` values NIfTI defines (unknown, scanner, aligned, Talairach, MNI, template).
XFORM_CODES = (0, 1, 2, 3, 4, 5)


def _header_fields(raw):
    """``(header size, single file, extension flag, vox_offset, pixdim, sform_code, qform_code)`` of a NIfTI-1 or
    NIfTI-2 header's first bytes, or None for anything else (Analyze, not a header: left to the reader)."""
    for e in "<>":
        size = int(np.frombuffer(raw[:4], e + "i4")[0]) if len(raw) >= 4 else 0
        if size in (348, 540) and len(raw) >= size:
            break
    else:
        return None
    flag = raw[size] if len(raw) > size else 0  # the extender: nonzero when extensions follow the header
    if size == 348:
        if raw[344:347] not in (b"n+1", b"ni1"):
            return None
        return (size, raw[344:347] == b"n+1", flag, float(np.frombuffer(raw[108:112], e + "f4")[0]),
                np.frombuffer(raw[76:108], e + "f4"), int(np.frombuffer(raw[254:256], e + "i2")[0]),
                int(np.frombuffer(raw[252:254], e + "i2")[0]))
    if raw[4:7] not in (b"n+2", b"ni2"):
        return None
    return (size, raw[4:7] == b"n+2", flag, float(np.frombuffer(raw[168:176], e + "i8")[0]),
            np.frombuffer(raw[104:168], e + "f8"), int(np.frombuffer(raw[348:352], e + "i4")[0]),
            int(np.frombuffer(raw[344:348], e + "i4")[0]))


def check_raw_header(path):
    """What nibabel would take from ``path``'s header without saying so, checked on the bytes before it reads
    them; raises :class:`InputError` (one line). Header extensions beyond :data:`MAX_HEADER_EXTENSION_BYTES`
    (nibabel reads them all, whatever their size: up to ``vox_offset`` in a single file, to the end of a pair's
    ``.hdr``, gzipped or not, counted as it is read); a voxel size of 0 in ``pixdim`` where the geometry comes
    from it (no sform), which nibabel reads as 1 mm; a single file's ``vox_offset`` inside its header (0, which
    nibabel reads as the data starting at byte 0); a ``qform_code``/``sform_code`` above those NIfTI defines,
    which nibabel resets to 0 where other readers use that transform. A file that is no NIfTI header is left to the reader."""
    from nibabel.openers import ImageOpener

    path = str(path)
    for img_suffix, hdr_suffix in ((".img", ".hdr"), (".img.gz", ".hdr.gz")):
        if path.lower().endswith(img_suffix):  # the header beside it, in the same case (as nibabel finds it)
            given = path[-len(img_suffix):]
            path = path[: -len(img_suffix)] + (hdr_suffix.upper() if given.isupper() else hdr_suffix)
    try:
        with ImageOpener(path, "rb") as f:
            raw = f.read(544)
            fields = _header_fields(raw)
            if fields is None:
                return
            size, single, flag, offset, pixdim, sform, qform = fields
            if not flag:
                extensions = 0
            elif single:
                extensions = offset - size - 4
            else:
                extensions = len(raw) - size - 4
                while extensions <= MAX_HEADER_EXTENSION_BYTES:
                    block = f.read(1 << 20)
                    if not block:
                        break
                    extensions += len(block)
    except Exception:  # noqa: BLE001 (missing, not gzip, ...: the reader says what is wrong)
        return
    one_file = single or not path.lower().endswith((".hdr", ".hdr.gz"))  # a .nii whose magic says "pair" (ni1) is read alike
    if one_file and offset < size + 4:  # nibabel reads a vox_offset of 0 as "the data start at byte 0": the header's
        # own bytes as voxels, every voxel shifted (other values below the header nibabel refuses by itself)
        raise InputError("vox_offset %g in the header points inside the %d-byte header of a single-file NIfTI (the "
                         "voxels start at byte %d or later): the voxels would be read shifted, with the header's "
                         "bytes among them; a damaged or non-conforming header, fix its vox_offset" % (offset, size,
                                                                                                       size + 4))
    if not offset <= MAX_VOX_OFFSET:  # 1e30, NaN: beyond any file (nibabel's reader overflows: OverflowError)
        raise InputError("vox_offset %g in the header is beyond any file (the voxels cannot start there): a damaged "
                         "header, fix its vox_offset" % offset)
    for name, code in (("sform_code", sform), ("qform_code", qform)):
        if code > max(XFORM_CODES):  # nibabel resets it to 0 and ignores that transform; niftilib (FSL, AFNI) and
            # ITK use any code above 0 (below 0: unset for all of them)
            raise InputError("%s %d in the header is none NIfTI defines (%d-%d): readers disagree on whether its "
                             "transform holds (nibabel ignores it, FSL/AFNI/ITK use it), so the image's position is "
                             "not known; fix the header" % (name, code, min(XFORM_CODES), max(XFORM_CODES)))
    if extensions > MAX_HEADER_EXTENSION_BYTES:
        amount = "%.3g MB" % (extensions / 1e6) if single else "more than %d MB" % (MAX_HEADER_EXTENSION_BYTES >> 20)
        raise InputError("the header carries %s of header extensions, beyond the %d MB this tool reads (a damaged "
                         "or forged header?); nothing was read" % (amount, MAX_HEADER_EXTENSION_BYTES >> 20))
    if sform <= 0 and np.any(pixdim[1:4] == 0):
        ax = int(np.flatnonzero(pixdim[1:4] == 0)[0])
        raise InputError("voxel size 0 mm in the header (pixdim[%d]), which readers take as 1 mm: check the header's "
                         "voxel sizes" % (ax + 1))


def load_nifti(path):
    """``nibabel.load(path)`` after :func:`check_raw_header`: how every input image is opened."""
    import nibabel as nib

    check_raw_header(path)
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite pixdim or quaternion: check_geometry says so
        return nib.load(str(path))


def check_geometry(shape, affine):
    """The header's geometry, checked before any voxel is read: returns the voxel sizes (mm).

    Raises :class:`InputError` (one line) when the affine is not finite, is singular (an all-zero row, voxel
    axes that are not independent), has a voxel size below :data:`MIN_VOXEL_MM` or above :data:`MAX_SLICE_MM`
    (:func:`check_slice_spacing`), or when ``shape`` has more than :data:`MAX_INPUT_VOXELS` voxels.
    """
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise InputError("the header's affine (sform/qform) has NaN or infinite values: check the header")
    zooms = voxel_sizes(aff)
    cols = aff[:3, :3]
    with np.errstate(all="ignore"):  # a voxel's volume over that of the box of its edges: 1 unsheared, 0 singular
        volume = abs(float(np.linalg.det(cols))) / max(float(np.prod(zooms)), 1e-300)
    if not np.all(zooms > 0) or not volume > 1e-4:
        zero = np.any(np.all(cols == 0, axis=0)) or np.any(np.all(cols == 0, axis=1))
        raise InputError("the header's affine is singular (%s; voxel axes not independent): check the header"
                         % ("a zero row or column" if zero else "determinant %.3g" % np.linalg.det(cols)))
    if float(zooms.min()) < MIN_VOXEL_MM:
        ax = int(np.argmin(zooms))
        raise InputError("voxel size %.4g mm (axis %d) is below the %g mm this tool takes: check the header's "
                         "voxel sizes" % (zooms[ax], ax, MIN_VOXEL_MM))
    check_slice_spacing(zooms)
    n = int(np.prod([int(k) for k in shape], dtype=object))
    if n > MAX_INPUT_VOXELS:
        raise InputError("the header claims %s = %.3g voxels, beyond the %.3g this tool takes (a damaged or "
                         "forged header?); nothing was read" % ("x".join(map(str, shape)), n, MAX_INPUT_VOXELS))
    return zooms


def output_grid_shape(shape, zooms, slice_axis, factor=None, grid=DEFAULT_OUTPUT_GRID):
    """Shape of the SR output grid (in-plane grid of :func:`output_plan`; along the slice axis
    ``degrade.output_rows``)."""
    factor = upsampling_factor(float(zooms[slice_axis])) if factor is None else factor
    grid = list(output_plan(tuple(shape[:3]), zooms, slice_axis, grid)[0])
    grid[slice_axis] = output_rows(grid[slice_axis], int(factor))
    return tuple(grid)


def peak_memory_bytes(shape, out_shape):
    """Estimated peak memory (bytes) of super-resolving an image of ``shape`` onto ``out_shape``."""
    n_in = int(np.prod([int(k) for k in shape[:3]], dtype=object))
    n_out = int(np.prod([int(k) for k in out_shape], dtype=object))
    return PEAK_BYTES_PER_OUTPUT_VOXEL * n_out + PEAK_BYTES_PER_INPUT_VOXEL * n_in


def available_memory_bytes():
    """Memory this process may still use (bytes): ``MemAvailable``, or the cgroup's limit when lower; None
    when unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            left = int(limit) - used
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    left = address_space_left()
    if left is not None:
        avail = left if avail is None else min(avail, left)
    return avail


def address_space_left():
    """What ``ulimit -v`` (RLIMIT_AS, as SGE's ``h_vmem`` sets) leaves of this process's address space (bytes): the
    limit less the virtual memory already mapped (``VmSize``); None without a limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        return max(0, soft - size)
    except (ImportError, OSError, ValueError, StopIteration):
        return None


def check_output_grid(shape, zooms, slice_axis, factor=None, grid=DEFAULT_OUTPUT_GRID):
    """The output grid of an image, checked from its header: returns ``(out_shape, peak_bytes)``.

    Raises :class:`InputError` when the grid (or the input's, that of the consistency map) has more than
    :data:`NIFTI1_MAX_DIM` voxels along an axis, more than :data:`MAX_OUTPUT_VOXELS` voxels or its estimated
    peak memory (:func:`peak_memory_bytes`) is above the memory available (:func:`available_memory_bytes`).
    """
    out_shape = output_grid_shape(shape, zooms, slice_axis, factor, grid)
    for what, grid_shape in (("the output grid would be", out_shape), ("the image (and its consistency map) is",
                                                                        tuple(shape[:3]))):
        if max(int(k) for k in grid_shape) > NIFTI1_MAX_DIM:
            raise InputError("%s %s voxels: more than the %d along an axis that a NIfTI-1 file (the outputs' format) "
                             "holds; nothing was read" % (what, "x".join(map(str, grid_shape)), NIFTI1_MAX_DIM))
    n_out = int(np.prod([int(k) for k in out_shape], dtype=object))
    if n_out > MAX_OUTPUT_VOXELS:
        raise InputError("the output grid would be %s = %.3g voxels, beyond the %.3g this tool takes; nothing was "
                         "read" % ("x".join(map(str, out_shape)), n_out, MAX_OUTPUT_VOXELS))
    peak = peak_memory_bytes(shape, out_shape)
    avail = available_memory_bytes()
    if avail is not None and peak > avail:
        raise InputError("super-resolving it needs about %.3g GB of memory (output grid %s), more than the %.3g GB "
                         "available; nothing was read" % (peak / 1e9, "x".join(map(str, out_shape)), avail / 1e9))
    return out_shape, peak


def describe_zooms(zooms):
    return "x".join(f"{z:.2f}" for z in zooms)

