"""Volume reconstruction: the paper's sliding 3-plane window, in both in-plane directions.

For each in-plane axis, the window of planes (i-1, i, i+1) is fed to the 2D generator as 3
channels; the 3 predicted planes are merged so that each plane gets weight 0.5 from the
window centred on it and 0.25 from each neighbour's window. At the two edge planes the
missing windows' weights are dropped and the rest renormalised. The two sweeps are averaged.

:func:`super_resolve` is the one-call API on a NIfTI image (no BIDS, no Nipype).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from zlib import error as zlib_error
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch

from .adapt import AdaptSkipped, adapt_model
from .consistency import check_consistency, compare, head_mask, project_onto_input, qc_flags
from .degrade import apply_along_axis, cubic_upsample_matrix, redegrade, target_grid, upsampling_factor
from .io import gzip_problem
from .models import (CONTRAST_DEFAULTS, DEFAULT_MODEL, WeightsError, available_models, canonical_contrast, load_weights,
                     resolve_weights, sha256)
from .models.common import condition_features
from .precision import BATCH_SIZE, resolve_precision
from .preprocess import (
    DEFAULT_OUTPUT_GRID,
    SCALE_PERCENTILE,
    THICKNESS_RANGE,
    InputError,
    apply_scaling,
    check_geometry,
    check_output_grid,
    clip_outliers,
    describe_zooms,
    find_slice_axis,
    header_units,
    header_warnings,
    in_millimetres,
    intensity_scaling,
    output_plan,
    plausible_thickness,
    regrid_map,
    resample_inplane,
    restore_intensity,
    slice_spacing,
    voxel_sizes,
    working_grid,
)
from .thickness import estimate_thickness

LOGGER = logging.getLogger("prettier_bids.sr")

#: Weights of the window centred on the previous plane, the plane itself, the next plane.
MERGE_WEIGHTS = (0.25, 0.5, 0.25)
METHODS = ("model", "cubic")


def _autocast(device, precision):
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: Thickness / spacing ratios that training samples (``DegradationSpace``: t = max(0.6 s, s - gap)); a conditioned
#: model is told the input's ratio clamped to this range (overlapping or very thin slices were never seen).
CONDITION_RATIO_RANGE = (0.6, 1.0)


def inference_conditions(thickness_ratio):
    """What a conditioned model is told at inference: (channel-plane spacing, thickness / spacing). The planes
    of the working grid are ~1 mm apart by construction (in-plane voxels of 0.8-1.25 mm are kept, others
    resampled to 1 mm), i.e. the 1 mm planes of training's HR volumes, so the plane spacing is the nominal 1 mm;
    the ratio is clamped to :data:`CONDITION_RATIO_RANGE`."""
    lo, hi = CONDITION_RATIO_RANGE
    return 1.0, float(min(max(thickness_ratio, lo), hi))


def model_conditions(model, thickness_ratio):
    """The conditioning input (1, 2) of a conditioned generator (:func:`inference_conditions`), None for the
    others."""
    if not getattr(model, "conditioned", False):
        return None
    return torch.tensor([condition_features(*inference_conditions(thickness_ratio))], dtype=torch.float32)


def sweep(planes, model, factor, batch_size=BATCH_SIZE, device="cpu", precision="auto", progress=None, cond=None):
    """Super-resolve a stack ``planes`` (n, slices, in-plane) -> (n, slices * factor, in-plane).

    Windows centred on planes 1..n-2; plane ``i`` gets weight 0.5 from window ``i`` and 0.25
    from windows ``i - 1`` and ``i + 1`` (renormalised at the edges). ``cond``: the conditioning
    input of a conditioned model (:func:`model_conditions`); ``precision``: one of ``precision.PRECISIONS``.
    """
    n, s, p = planes.shape
    if n < 3:
        raise InputError(f"need at least 3 in-plane voxels along each in-plane axis (got {n})")
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))
    out = torch.zeros((n, s * factor, p), dtype=torch.float32)
    wsum = torch.zeros(n, dtype=torch.float32)
    w = torch.tensor(MERGE_WEIGHTS, dtype=torch.float32)
    centres = list(range(1, n - 1))
    with torch.inference_mode(), _autocast(device, precision):
        for start in range(0, len(centres), batch_size):
            batch = centres[start:start + batch_size]
            inp = torch.stack([x[c - 1:c + 2] for c in batch]).to(device).contiguous(
                memory_format=torch.channels_last)
            pred = (model(inp, factor) if cond is None else model(inp, factor, cond)).float().cpu()
            c0 = batch[0]
            for ch in range(3):
                # channel ch of the window centred on c is plane c - 1 + ch
                out[c0 - 1 + ch:c0 - 1 + ch + len(batch)] += w[ch] * pred[:, ch]
                wsum[c0 - 1 + ch:c0 - 1 + ch + len(batch)] += w[ch]
            if progress is not None:
                progress(min(1.0, (start + len(batch)) / len(centres)))
    out /= wsum[:, None, None]
    return out.numpy()


def super_resolve_array(volume, axis, factor, model, batch_size=BATCH_SIZE, device="cpu", precision="auto", progress=None,
                        thickness_ratio=1.0):
    """SR of a scaled volume along ``axis`` by ``factor``: the average of the two in-plane sweeps.

    ``thickness_ratio`` (slice thickness / spacing) is told to a conditioned model; others ignore it."""
    cond = model_conditions(model, thickness_ratio)
    # Arrange as (a, b, slices) with the slice axis last.
    arr = np.moveaxis(volume, axis, -1)
    stages = []
    for k, sweep_axis in enumerate((0, 1)):
        planes = np.moveaxis(arr, sweep_axis, 0)  # (n, other, slices)
        planes = np.swapaxes(planes, 1, 2)  # (n, slices, other)
        sub = None
        if progress is not None:
            sub = (lambda f, k=k: progress((k + f) / 2))
        hr = sweep(planes, model, factor, batch_size, device, precision, sub, cond)  # (n, slices*r, other)
        hr = np.swapaxes(hr, 1, 2)  # (n, other, slices*r)
        stages.append(np.moveaxis(hr, 0, sweep_axis))
    out = 0.5 * (stages[0] + stages[1])
    return np.moveaxis(out, -1, axis)


def cubic_array(volume, axis, factor):
    """Cubic-spline baseline on exactly the SR grid."""
    return apply_along_axis(cubic_upsample_matrix(volume.shape[axis], factor), volume, axis)


def onto_output_grid(hr_work, x_work, x_out, axis, factor, work_map, out_map):
    """The network's output ``hr_work`` on the working grid (input ``x_work``), brought onto the output grid
    (input ``x_out``): the cubic-spline interpolation of ``x_out`` along the slice axis, plus what the network
    changed on the working grid (``hr_work`` less the same interpolation of ``x_work``), resampled in-plane
    (``work_map``, ``out_map``: the grids' voxel-index maps to the input, ``preprocess.inplane_plan``). The
    in-plane detail of ``x_out`` stays as acquired; ``hr_work`` is consumed."""
    hr_work -= cubic_array(x_work, axis, factor)
    rows = list(x_out.shape)
    rows[axis] = hr_work.shape[axis]
    out = resample_inplane(hr_work, regrid_map(work_map, out_map), tuple(rows))
    out += cubic_array(x_out, axis, factor)
    return out


@dataclass
class LoadedModel:
    model: torch.nn.Module
    name: str
    path: str
    sha256: str
    meta: dict = field(default_factory=dict)


def prepare_for_inference(model, device="cpu"):
    """Eval mode on ``device`` with channels_last: ~25 % faster convolutions on CPU, identical results
    (bf16 was measured no faster here and 1 % off, so inference stays fp32 unless asked)."""
    return model.eval().to(device=device, memory_format=torch.channels_last)


def load_model(name=None, weights=None, device="cpu"):
    """Load a shipped model by name, or a weights file; raises WeightsError with a one-line message."""
    path = resolve_weights(name, weights)
    model, payload = load_weights(path)
    prepare_for_inference(model, device)
    label = name or (path.stem if weights else DEFAULT_MODEL)
    return LoadedModel(model, label, str(path), sha256(path), payload.get("meta", {}))


@dataclass
class ModelSet:
    """The model each contrast gets: its entry in ``by_contrast`` (keys spelled as in
    ``models.CONTRAST_DEFAULTS``; contrasts matched in any case), else ``default``."""
    default: LoadedModel
    by_contrast: dict = field(default_factory=dict)

    def for_contrast(self, contrast):
        return self.by_contrast.get(canonical_contrast(contrast), self.default)

    def describe(self):
        """``name (path, sha256 prefix)`` of the default, then ``contrast: name (...)`` of each exception."""
        return "; ".join([_described(self.default)] + [f"{c}: {_described(m)}"
                                                        for c, m in sorted(self.by_contrast.items())])


def _described(m):
    return f"{m.name} ({m.path}, sha256 {m.sha256[:12]}...)"


def load_model_set(name=None, weights=None, device="cpu", contrasts=None):
    """A named model or a weights file for every contrast; with neither, the default model and each
    contrast's own shipped default (``models.CONTRAST_DEFAULTS``; only those of ``contrasts`` when given).
    Raises WeightsError (one line)."""
    if name or weights:
        return ModelSet(load_model(name, weights, device))
    wanted = None if contrasts is None else {canonical_contrast(c) for c in contrasts}
    own = {c: n for c, n in CONTRAST_DEFAULTS.items() if wanted is None or c in wanted}
    return ModelSet(load_model(DEFAULT_MODEL, device=device),
                    {c: load_model(n, device=device) for c, n in own.items()})


def load_models(spec, device="cpu"):
    """``{label: LoadedModel}`` from a comma-separated list of shipped model names and weights files (``.pt``).

    Weights files that share a file name (``runA/last.pt``, ``runB/last.pt``) are all labelled by their folder
    too (``runA/last``, ``runB/last``); a model given twice (the same name, or the same file however spelt) is a
    ValueError, as is a label that still repeats (one model would silently replace the other in a table)."""
    items = [s for s in spec.split(",") if s]
    ids = [str(Path(i).resolve()) if i.endswith(".pt") else i for i in items]
    twice = sorted({i for i, k in zip(items, ids) if ids.count(k) > 1})
    if twice:
        raise ValueError(f"model(s) {', '.join(twice)} given more than once in --models: give each model once")
    stems = [Path(i).stem for i in items if i.endswith(".pt")]
    models = {}
    for item in items:
        try:
            m = load_model(weights=item, device=device) if item.endswith(".pt") else load_model(item, device=device)
        except WeightsError:  # the single-model hint (--weights FILE) is not this list's spelling
            if item.endswith(".pt"):
                raise
            shipped = ", ".join(available_models()) or "none"
            raise WeightsError(f"{item!r} is neither a shipped model (installed: {shipped}) nor a weights file "
                               "ending in .pt") from None
        key = m.name
        if item.endswith(".pt") and stems.count(Path(item).stem) > 1:
            key = f"{Path(item).resolve().parent.name}/{m.name}"
        if key in models:
            raise ValueError(f"two models in --models are labelled {key!r}: rename one weights file")
        models[key] = m
    return models


@dataclass
class SRResult:
    image: nib.Nifti1Image
    consistency_map: nib.Nifti1Image
    info: dict

    def sidecar(self):
        return dict(self.info)


#: NIfTI intents of images whose values are labels, not intensities (refused: interpolation would blend them).
LABEL_INTENTS = ("label", "neuroname")


def check_image(img):
    """The header-level admission of an image, before any voxel is read: returns its 3D shape and voxel sizes.

    NIfTI, a numeric voxel type, 3D (trailing singleton dimensions are dropped), at least 2 voxels on each axis,
    and the geometry of :func:`preprocess.check_geometry` (finite, non-singular affine; voxel sizes of at
    least ``MIN_VOXEL_MM``; at most ``MAX_INPUT_VOXELS`` voxels). Raises InputError (one line).
    """
    if not isinstance(img, nib.Nifti1Pair):  # NIfTI-1 and NIfTI-2, single file or pair, subclass it
        raise InputError(f"not a NIfTI image ({type(img).__name__})")
    dtype = img.get_data_dtype()
    if dtype.fields is not None or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise InputError(f"voxel type {dtype.str if dtype.fields is None else 'RGB/structured'} is not supported")
    shape = img.shape
    while len(shape) > 3 and shape[-1] == 1:  # (x, y, z, 1), (x, y, z, 1, 1): one 3D volume
        shape = shape[:-1]
    if len(shape) != 3:
        raise InputError(f"expected a 3D image, got {len(img.shape)}D with shape {tuple(img.shape)}")
    if min(shape) < 2:
        raise InputError(f"image shape {tuple(shape)} is too small")
    intent = img.header.get_intent()[0] if hasattr(img.header, "get_intent") else "none"
    if intent in LABEL_INTENTS:
        raise InputError(f"the header marks it a label map (NIfTI intent {intent!r}): super-resolution interpolates "
                         "intensities and would blend labels into values that are no label")
    if np.issubdtype(img.get_data_dtype(), np.complexfloating):
        raise InputError("complex-valued images are not supported")
    return tuple(int(n) for n in shape), check_geometry(shape, img.affine)


def one_line(exc):
    """``ExcType: message`` on one line (some readers' messages span several)."""
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"


def load_volume(img):
    """The image's 3D data as float32 (trailing singleton dimensions are dropped), after :func:`check_image`;
    InputError otherwise (also for values float32 cannot resolve: :func:`_check_float32_resolution`)."""
    shape, _ = check_image(img)
    wide = _wide_dtype(img.get_data_dtype())
    image_file = getattr(getattr(img, "file_map", {}).get("image"), "filename", None)
    try:
        with warnings.catch_warnings():  # values beyond float32 (float64 data, a huge scl_slope) overflow to inf:
            warnings.simplefilter("ignore", RuntimeWarning)  # said below, in the one line of the error
            if wide:  # read once as stored (the check needs the exact values), then cast
                raw = np.asanyarray(img.dataobj).reshape(shape)
                data = raw.astype(np.float32)
            else:
                data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except (OSError, EOFError, ValueError, zlib_error) as exc:
        raise InputError(f"cannot read image data ({one_line(exc)})") from None
    damaged = gzip_problem(image_file) if image_file else None  # nibabel stops at the last voxel: never at the
    if damaged:  # trailer with the CRC-32 that says whether the voxels are those that were written
        raise InputError(f"cannot read image data: {damaged}; the file is damaged")
    if not np.all(np.isfinite(data)):
        raise InputError("image contains NaN or infinite values (or values beyond the float32 range, "
                         f"±{np.finfo(np.float32).max:.1e}, after the header's scaling)")
    if wide:
        _check_float32_resolution(raw)
    stored = raw if wide and np.issubdtype(raw.dtype, np.floating) else data
    amax = float(np.max(np.abs(stored), initial=0.0))
    if amax < MIN_ABS_INTENSITY:  # the upper bound applies after the clip of corrupt voxels (super_resolve)
        check_intensity_magnitude(amax)
    return data


#: The largest intensity magnitude an image may keep (after the header's scaling and the clip of corrupt voxels,
#: :func:`~prettier_bids.sr.preprocess.clip_outliers`): the float32 sums of the slice profile stay finite.
MAX_ABS_INTENSITY = 1e36
#: ... and the smallest its largest magnitude may be (a non-zero image): below it float32 loses the values.
MIN_ABS_INTENSITY = 1e-30


def check_intensity_magnitude(amax):
    """InputError when an image's largest magnitude ``amax`` is not 0 and lies outside :data:`MIN_ABS_INTENSITY`
    to :data:`MAX_ABS_INTENSITY`."""
    if amax > MAX_ABS_INTENSITY or 0.0 < amax < MIN_ABS_INTENSITY:
        raise InputError(f"its largest value is {amax:.3g} in magnitude, outside the {MIN_ABS_INTENSITY:g} to "
                         f"{MAX_ABS_INTENSITY:g} this tool computes with in float32 (sums would overflow, or the "
                         "values vanish); rescale the image first")


#: The intensity levels an image's own range must keep in float32 (the arithmetic of the whole pipeline).
MIN_FLOAT32_LEVELS = 1000


def _wide_dtype(dtype):
    """Stored types whose values float32 may not resolve: 64-bit floats, 32/64-bit integers."""
    return dtype.itemsize >= 4 and dtype != np.float32 and (np.issubdtype(dtype, np.integer)
                                                            or np.issubdtype(dtype, np.floating))


def _check_float32_resolution(raw):
    """InputError when the values ``raw`` (as stored: 64-bit floats, 32/64-bit integers) sit so far from 0 for their
    range that float32 keeps fewer than :data:`MIN_FLOAT32_LEVELS` levels of it (1e9 + 0..120: 3 levels;
    2**60 + 0..119: one): the output would be a quantised or constant image."""
    lo, hi = raw.min(), raw.max()
    lo, hi = (int(lo), int(hi)) if np.issubdtype(raw.dtype, np.integer) else (float(lo), float(hi))
    step = max(abs(lo), abs(hi)) * 2.0 ** -23  # float32's spacing of values at that magnitude
    if hi > lo and step * MIN_FLOAT32_LEVELS > hi - lo:
        span = f"{lo}..{hi}" if isinstance(lo, int) else f"{lo:.10g}..{hi:.10g}"
        raise InputError(f"its values span {span}: a range of {hi - lo:.4g} that far from 0 keeps only "
                         f"about {max(1, int((hi - lo) / step))} distinct level(s) in float32, the arithmetic of this "
                         "tool; subtract the offset (e.g. the minimum) from the image first")


def _reference_dtype(img, data):
    """The dtype the output is stored in: the input's integer dtype only when its voxel values are that
    integer type's own values (no header scaling; nibabel keeps a loaded image's scaling on ``dataobj``, not
    on the header); float32 otherwise."""
    dtype = img.get_data_dtype()
    if not np.issubdtype(dtype, np.integer):
        return np.dtype(np.float32)
    slope = getattr(img.dataobj, "slope", None)
    inter = getattr(img.dataobj, "inter", None)
    if slope is None and inter is None:
        slope, inter = img.header.get_slope_inter()
    scaled = (slope is not None and slope != 1.0) or (inter is not None and inter != 0.0)
    info = np.iinfo(dtype)  # compared as Python floats: float32(2**31) > 2**31 - 1 is False in numpy's own rules
    if scaled or not np.array_equal(data, np.rint(data)) or float(data.min()) < info.min \
            or float(data.max()) > info.max:
        return np.dtype(np.float32)
    return dtype


def _with_geometry(dataobj, affine, header, qcode, scode):
    """The one header-conforming step: qform = sform = ``affine`` with the given codes, units mm/s. A sheared
    affine has no qform (a rotation, zooms and a flip cannot hold it): the qform is then unset (code 0), so
    that no reader falls back to a shear-free approximation of the geometry."""
    time_unit = header_units(header)[1] if header is not None else "unknown"
    out = nib.Nifti1Image(dataobj, affine, header)
    out.set_qform(affine, code=qcode)
    if not np.allclose(out.header.get_qform(), affine, atol=1e-4):
        out.set_qform(None, code=0)
    out.set_sform(affine, code=scode)
    out.header.set_xyzt_units("mm", time_unit if time_unit != "unknown" else "sec")
    return out


#: The ``descrip`` of a consistency map (at most 80 bytes): what its voxels are, not the input's description.
MAP_DESCRIPTION = "prettier consistency map: |re-degraded output - input| / IntensityScale"


def make_like(data, affine, reference, description=None):
    """A NIfTI image on ``affine`` with ``reference``'s header fields (codes, units, description, display range).
    ``description``: for an image of other quantities than the reference's intensities (the consistency map), its
    own ``descrip``, and none of the reference's display range (``cal_min``/``cal_max``: viewers would show a map of
    fractions in a window of the input's intensities, all black) or lookup table (``aux_file``)."""
    hdr = reference.header.copy()
    if type(hdr) is not nib.Nifti1Header:  # NIfTI-2 (or a pair's) header: the same fields in NIfTI-1's layout
        hdr = nib.Nifti1Header.from_header(hdr, check=False)
        hdr["sizeof_hdr"], hdr["magic"] = 348, b"n+1"
    hdr.set_data_dtype(data.dtype)
    hdr.set_slope_inter(1.0, 0.0) if np.issubdtype(data.dtype, np.integer) else hdr.set_slope_inter(np.nan, np.nan)
    # an interpolated intensity image: no intent (statistic, label map), no slice timing of the input's slices
    hdr.set_intent("none", (), "")
    hdr["slice_code"], hdr["slice_start"], hdr["slice_end"], hdr["slice_duration"] = 0, 0, 0, 0
    freq, phase, _ = hdr.get_dim_info()
    hdr.set_dim_info(freq, phase, None)
    if description is not None:
        hdr["descrip"] = description.encode("ascii", "replace")[:79]
        hdr["cal_min"], hdr["cal_max"], hdr["aux_file"] = 0.0, 0.0, b""
    qcode, scode = int(reference.header["qform_code"]), int(reference.header["sform_code"])
    if qcode or scode:  # the input's codes (one of them for the other); both 0 (orientation unknown) stay so
        qcode, scode = qcode or scode, scode or qcode
    return _with_geometry(data, affine, hdr, qcode, scode)


def conform_header(img):
    """A copy of ``img`` with qform = sform = its affine (codes kept; one of them for the other; both 0, the
    orientation unknown, stay 0) and spatial units mm; data untouched.

    Used by the derivatives writer on images that :func:`make_like` made (then a no-op on the bytes)
    and on any other image it stores.
    """
    qcode = int(img.header["qform_code"]) or int(img.header["sform_code"])
    scode = int(img.header["sform_code"]) or qcode
    return _with_geometry(img.dataobj, img.affine, img.header.copy(), qcode, scode)


#: ``SliceThicknessSource`` of a thickness estimated from the image, and of one assumed equal to the spacing.
ESTIMATED_SOURCE = "estimated"
ASSUMED_SOURCE = "assumed: equal to spacing"
#: What a conditioned model is told for thickness / spacing when the thickness is only assumed (neither given nor
#: estimated confidently): the ratio whose worst loss against the true ratio, over issue 25's five settings
#: (3/3, 5/6, 4/5, 3/4, 2/4 mm), was smallest on the training head p07 FLAIR and the validation head MASS t08
#: (docs/research/slice-profile-estimation.md, section 5). The recorded ``SliceThickness`` stays the assumed one.
ASSUMED_CONDITIONING_RATIO = 0.7
#: ``ProjectionSkipped``: why a requested projection onto the input did not run.
SKIPPED_UNKNOWN_THICKNESS = "slice thickness unknown and not estimated confidently"


def estimated_thickness(est, spacing):
    """The thickness used for a confident estimate ``est``: rounded to 0.01 mm and clamped into the plausible
    range (:data:`preprocess.THICKNESS_RANGE` times the ``spacing``)."""
    lo, hi = (f * spacing for f in THICKNESS_RANGE)
    return float(min(max(round(float(est.thickness), 2), lo), hi))


def thickness_note(source, est=None):
    """How the log names where a slice thickness came from: ``estimated +/- 0.3``, ``assumed equal to the
    spacing; not estimated confidently``, ``given: option`` (``given`` when the caller did not say where from)."""
    if source == ESTIMATED_SOURCE:
        return f"estimated +/- {est.uncertainty:.2g}"
    if source == ASSUMED_SOURCE:
        return "assumed equal to the spacing; not estimated confidently"
    return "given" if source == "given" else f"given: {source}"


def super_resolve(img, model=None, method="model", slice_thickness=None, profile="boxcar", force=False,
                  device="cpu", batch_size=BATCH_SIZE, precision="auto", progress=None, project=True,
                  output_grid=DEFAULT_OUTPUT_GRID, thickness_source="given", adapt=None):
    """Super-resolve a thick-slice NIfTI image: ~1 mm rows along the slice axis, the same field of view.

    ``output_grid`` (``preprocess.OUTPUT_GRIDS``): ``native`` (the default) keeps the input's in-plane voxels
    (0.4-1.25 mm; others are resampled to 1 mm), ``1mm`` stores the network's ~1 mm working grid. The network
    always works on that ~1 mm grid (``preprocess.working_grid``); on a finer native grid the output is the
    cubic-spline interpolation of the input along the slice axis on the native grid plus what the network
    changed (its output less the same interpolation on the working grid), resampled in-plane: the in-plane
    detail the scanner acquired stays, the network adds the through-plane detail
    (``benchmarks/results/native-grid.md``).

    ``model`` is a :class:`LoadedModel` (see :func:`load_model`); ``method="cubic"`` writes the
    cubic-spline baseline on the same grid instead. With ``project`` (the default), the network's output
    is then projected onto the input on the output grid (:func:`consistency.project_onto_input`), so that it
    reproduces the input slices under the slice profile. ``ConsistencyPSNR`` is that of the stored output, put
    back through the acquisition (slice profile, then the input's in-plane grid) and compared with the input
    as stored; ``NetworkConsistencyPSNR``, the consistency map and the QC flags describe the output before the
    projection, the same way. ``precision`` (``precision.PRECISIONS``; ``auto``: bf16 where the hardware
    computes it natively) is the network's arithmetic; the sidecar's ``Precision`` says which one ran (fp32 for
    the cubic baseline). Returns an :class:`SRResult` whose ``info`` describes geometry, intensity scaling,
    consistency and timing (for JSON sidecars).

    ``slice_thickness`` (mm) is a given thickness (``thickness_source`` names where it came from, e.g.
    ``option`` or ``sidecar``: the sidecar's ``SliceThicknessSource``). ``None`` (the default): the thickness is
    estimated from the image (:func:`thickness.estimate_thickness`, recorded as ``SliceThicknessEstimate``);
    a confident estimate is used (source ``estimated``); otherwise the thickness is assumed equal to the spacing
    (source ``assumed: equal to spacing``) and the projection onto the input is skipped (``ProjectionSkipped``),
    since the output would be made to reproduce the input under a profile nobody knows.

    ``adapt`` (an :class:`adapt.AdaptSettings`; default None: off) first fine-tunes a copy of the network on
    pairs made from the scan's own in-plane axes with its slice profile (:func:`adapt.adapt_model`; the
    sidecar's ``Adaptation`` records how); ``model`` itself is not changed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if method == "model" and model is None:
        raise ValueError("method='model' needs a model (see load_model)")
    ran = resolve_precision(precision, device) if method == "model" else "fp32"
    t0 = time.time()
    warned = header_warnings(img)
    img = in_millimetres(img)  # a header in meters or microns: the geometry in mm from here on
    shape, zooms = check_image(img)  # the header alone: nothing is read before the grid is known to fit
    axis = find_slice_axis(zooms, force=force)
    spacing = slice_spacing(img.affine, axis)  # between the slice planes: what a thickness is measured against
    given = slice_thickness is not None
    thickness = float(slice_thickness) if given else spacing
    if given and not plausible_thickness(thickness, spacing):
        lo, hi = (f * spacing for f in THICKNESS_RANGE)
        raise InputError(f"slice thickness {thickness} mm does not fit slice spacing {spacing:.2f} mm (a thickness "
                         f"of {lo:.2f}-{hi:.2f} mm, {THICKNESS_RANGE[0]:g}-{THICKNESS_RANGE[1]:g} x the spacing, is "
                         "taken)")
    factor = upsampling_factor(float(zooms[axis]))  # the output rows follow the voxel axis (sheared or not)
    check_output_grid(shape, zooms, axis, factor, output_grid)
    data = load_volume(img)
    ref_dtype = _reference_dtype(img, data)
    data, n_outliers = clip_outliers(data)
    if n_outliers:
        LOGGER.warning("%d voxel(s) far beyond the image's intensity range clipped to %.4g..%.4g (corrupt voxels?)",
                       n_outliers, float(data.min()), float(data.max()))
    check_intensity_magnitude(float(np.max(np.abs(data), initial=0.0)))
    est, est_seconds, source, adaptation = None, None, str(thickness_source), None
    if not given:  # auto: the thickness read from the image, used only when the estimate is confident
        t_est = time.time()
        est = estimate_thickness(data, zooms, axis)
        est_seconds = time.time() - t_est
        source = ESTIMATED_SOURCE if est.confident else ASSUMED_SOURCE
        thickness = estimated_thickness(est, spacing) if est.confident else spacing
    # a conditioned model is told the thickness used, or a typical ratio where it is only assumed
    told_ratio = ASSUMED_CONDITIONING_RATIO if source == ASSUMED_SOURCE else thickness / spacing

    work, imap = working_grid(data, zooms, axis)
    oshape, omap = output_plan(data.shape, zooms, axis, output_grid)
    offset, scale = intensity_scaling(work)
    x = apply_scaling(work, offset, scale)
    # the input as the user gave it (absurd outliers clipped); the working grid itself when it is the input's
    stored = x if work is data else apply_scaling(data, offset, scale)
    on_work = oshape == work.shape and np.allclose(omap, imap)  # the output grid is the working grid
    native = oshape == data.shape and np.allclose(omap, np.eye(4))  # ... is the input's own grid
    xo = x if on_work else stored if native else apply_scaling(resample_inplane(data, omap, oshape), offset, scale)
    LOGGER.info("input %s voxels of %s mm; slice axis %d, spacing %.2f mm, thickness %.2f mm (%s); factor %d; "
                "output grid %s (%s)", "x".join(map(str, data.shape)), describe_zooms(zooms), axis, spacing,
                thickness, thickness_note(source, est), factor, output_grid,
                "the input's in-plane voxels" if native else "in-plane resampled to %s mm" % describe_zooms(voxel_sizes(np.asarray(img.affine) @ omap)))

    if method == "cubic":
        hr = cubic_array(xo, axis, factor)
    else:
        model.model.eval()
        LOGGER.info("network arithmetic: %s%s", ran, " (auto)" if precision == "auto" else "")
        net = model.model
        if adapt is not None:
            try:
                net, adaptation = adapt_model(net, x, axis, factor, spacing, told_ratio, profile, adapt, device,
                                              window_conditions=inference_conditions(told_ratio))
            except AdaptSkipped as exc:
                LOGGER.warning("adaptation skipped: %s; the model is used as shipped", exc)
                adaptation = {"Skipped": str(exc)}
        hr = super_resolve_array(x, axis, factor, net, batch_size, device, ran, progress,
                                 thickness_ratio=told_ratio)
        if not bool(np.isfinite(hr).all()):  # never stored: a NaN output scored 100 dB and no QC flag
            raise WeightsError(f"model {model.name}: the network's output has NaN or infinite values (damaged "
                               "weights?); nothing was written")
        if not on_work:
            hr = onto_output_grid(hr, x, xo, axis, factor, imap, omap)
    hr_shape, hr_affine = target_grid(xo.shape, np.asarray(img.affine, dtype=np.float64) @ omap, axis, factor)
    assert hr.shape[axis] == xo.shape[axis] * factor, (hr.shape, xo.shape, factor)
    if hr.shape != hr_shape:  # even factor: the row centred on the last slab's outer face is not stored
        hr = np.ascontiguousarray(np.take(hr, np.arange(hr_shape[axis]), axis=axis))  # (degrade.output_rows)

    def to_input(slices):  # re-degraded slices on the output's in-plane grid -> the input's grid
        if native:
            return slices
        return resample_inplane(slices, regrid_map(omap, np.eye(4)), stored.shape)

    mask = head_mask(stored, axis)  # where both consistency figures are measured
    net_cons = check_consistency(hr, stored, axis, factor, spacing, thickness, profile, to_input, mask)
    requested = bool(project and method == "model")
    projected = requested and source != ASSUMED_SOURCE  # never onto a profile that is only assumed
    if requested and not projected:
        LOGGER.info("projection onto the input skipped: %s (give the slice thickness to project)",
                    SKIPPED_UNKNOWN_THICKNESS)
    if projected:
        limits = [(float(v) - offset) / scale for v in (np.min(data), np.max(data))]  # restore_intensity's clip
        hr = project_onto_input(hr, xo, axis, factor, spacing, thickness, profile, limits)
    out = restore_intensity(hr, scale, data, ref_dtype, offset)
    del hr
    again = redegrade(out.astype(np.float32, copy=False), axis, factor, spacing, thickness, profile)
    cons = compare(to_input(apply_scaling(again, offset, scale)), stored, axis, mask)
    image = make_like(out, hr_affine, img)
    cmap = make_like(net_cons.error_map.astype(np.float32), img.affine, img, MAP_DESCRIPTION)
    info = {
        "Method": method,
        "Model": model.name if method == "model" else None,
        "ModelWeightsSHA256": model.sha256 if method == "model" else None,
        "SliceAxis": int(axis),
        "InputVoxelSize": [round(float(z), 4) for z in zooms],
        "InputShape": [int(n) for n in data.shape],
        "SliceSpacing": round(spacing, 4),
        "SliceThickness": round(thickness, 4),
        "SliceThicknessSource": source,
        "SliceGap": round(spacing - thickness, 4) + 0.0,  # never -0.0
        "SliceProfile": profile,
        "UpsamplingFactor": int(factor),
        "OutputVoxelSize": [round(float(z), 4) for z in voxel_sizes(hr_affine)],
        "OutputShape": [int(n) for n in hr_shape],
        "OutputGrid": output_grid,
        "InplaneResampled": not native,
        "WorkingVoxelSize": [round(float(z), 4) for z in voxel_sizes(np.asarray(img.affine, dtype=np.float64) @ imap)],
        "IntensityScale": {"Percentile": SCALE_PERCENTILE, "Value": float(scale), "Offset": float(offset),
                           "Clip": [float(np.min(data)), float(np.max(data))]},
        "OutliersClipped": int(n_outliers),
        "ConsistencyPSNR": round(cons.psnr_db, 3),
        "NetworkConsistencyPSNR": round(net_cons.psnr_db, 3),
        "ProjectedOntoInput": projected,
        **({"ProjectionSkipped": SKIPPED_UNKNOWN_THICKNESS} if requested and not projected else {}),
        "QCFlags": qc_flags(net_cons.psnr_db, method=method),
        "HeaderWarnings": warned,
        "ConsistencyFractionAbove10pct": round(net_cons.frac_above_10pct, 5),
        "Device": str(device),
        "Precision": ran,
        "RuntimeSeconds": round(time.time() - t0, 2),
    }
    if est is not None:
        info["SliceThicknessEstimate"] = est.as_info()
        info["ThicknessEstimationSeconds"] = round(est_seconds, 3)
    if adaptation is not None:
        info["Adaptation"] = adaptation
    if method == "model" and getattr(model.model, "conditioned", False):
        plane, ratio = inference_conditions(told_ratio)
        info["Conditioning"] = {"PlaneSpacing": plane, "ThicknessRatio": round(ratio, 4),
                                **({"Assumed": True} if source == ASSUMED_SOURCE else {})}
    return SRResult(image, cmap, info)
