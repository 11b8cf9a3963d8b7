"""Training pairs as in the paper: 3 contiguous planes as channels, LR 16 x 96 -> HR (16 r) x 96.

Thick slices are simulated on the fly with :func:`prettier_bids.sr.degrade.profile_matrix`
(the same maths as evaluation and the consistency check) along any of the three axes, with
randomised slice spacing, thickness (gap), profile and phase, so that one model serves
2-8 mm inputs. Volumes are scaled with :func:`prettier_bids.sr.preprocess.intensity_scale`,
the function inference uses.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np
from nibabel.filebasedimages import ImageFileError

from ..sr.degrade import centre_row, cubic_matrix, extract_pair
from .degradations import REALISTIC_DEFAULTS, degrade_pair, draw_plan, realistic_option
from ..sr.preprocess import check_geometry, find_slice_axis, intensity_scale, load_nifti, working_grid

LOGGER = logging.getLogger("prettier_bids.train")


@dataclass
class TrainVolume:
    name: str
    data: np.ndarray  # ~1 mm isotropic, scaled so that the foreground's 99.5th percentile is 1
    source: str | None = None  # file it was read from
    lesions: np.ndarray | None = None  # real lesion mask on the same grid, loaded on demand from ``lesion_source``
    #: its consensus lesion mask (the split's ``lesion_masks`` manifest), or None
    lesion_source: str | None = None
    #: a thick-slice scan for in-plane pairs (:func:`load_inplane_volume`): its thick axis, else None
    thick_axis: int | None = None
    plane_spacing: float = 1.0  # mm between neighbouring planes along ``thick_axis`` (1 for 1 mm volumes)


def _resample_to(data, zooms, target_vox, axes):
    for ax in axes:
        if abs(zooms[ax] - target_vox) > 0.05 * target_vox:
            n_new = int(round(data.shape[ax] * zooms[ax] / target_vox))
            positions = (np.arange(n_new) + 0.5) * (target_vox / zooms[ax]) - 0.5
            w = cubic_matrix(data.shape[ax], positions)
            data = np.moveaxis(np.tensordot(w, np.moveaxis(data, ax, 0), axes=(1, 0)), 0, ax)
    return _scaled(data)


def _scaled(data):
    """Negative values clipped, the foreground's 99.5th percentile mapped to 1."""
    data = np.clip(data, 0, None).astype(np.float32)
    data /= np.float32(intensity_scale(data))
    return np.ascontiguousarray(data)


def _load_3d(path):
    """The first volume of an image and its voxel sizes; the header is admitted first (``check_geometry``:
    finite, non-singular affine, voxel sizes, voxel count), so a forged header is refused before any read."""
    img = load_nifti(path)
    zooms = check_geometry(img.shape, img.affine)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got {data.ndim}D {tuple(data.shape)}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: image contains NaN or infinite values: not a training volume")
    return data, zooms


class PatchError(RuntimeError):
    """No training pair can be cut from the volumes (too small for a patch, or too little foreground)."""


#: What reading a volume file raises when it is empty, truncated, corrupt or not an image (callers turn these into
#: one line and an exit code).
READ_ERRORS = (OSError, ValueError, EOFError, zlib.error, ImageFileError)


def load_training_volume(path, name=None, target_vox=1.0):
    """Load a 3D volume, resample it to ``target_vox`` mm isotropic (cubic) if needed, and scale it."""
    data, zooms = _load_3d(path)
    return TrainVolume(name or str(path), _resample_to(data, zooms, target_vox, range(3)), source=str(path))


def load_inplane_volume(path, name=None):
    """A real thick-slice scan as a source of in-plane pairs (SMORE-style self-supervision): on the in-plane
    grid inference uses (:func:`prettier_bids.sr.preprocess.inplane_plan`: ~1 mm, anti-aliased when
    shrinking), the thick axis kept, scaled. Thick slices are then simulated along an in-plane axis, and the
    3 channel planes are 3 neighbouring real slices ``plane_spacing`` mm apart."""
    data, zooms = _load_3d(path)
    thick = find_slice_axis(zooms)
    data, _ = working_grid(data, zooms, thick)
    return TrainVolume(name or str(path), _scaled(data), source=str(path),
                       thick_axis=int(thick), plane_spacing=float(zooms[thick]))


@dataclass
class DegradationSpace:
    """Distribution of simulated acquisitions (spacing in whole mm on the 1 mm grid)."""

    spacing_probs: dict = field(default_factory=lambda: {6: 0.45, 5: 0.15, 4: 0.12, 3: 0.12, 7: 0.06, 2: 0.05,
                                                         8: 0.05})
    gaps: tuple = (0.0, 0.5, 1.0, 1.5)
    gaussian_prob: float = 0.2
    paper_prob: float = 0.5  # with s = 6: t = 5 (1 mm gap) this often

    def sample(self, rng):
        sp = list(self.spacing_probs)
        p = np.asarray([self.spacing_probs[k] for k in sp], dtype=float)
        s = int(rng.choice(sp, p=p / p.sum()))
        if s == 6 and rng.random() < self.paper_prob:
            t = 5.0
        else:
            t = float(max(0.6 * s, s - rng.choice(self.gaps)))
        profile = "gaussian" if rng.random() < self.gaussian_prob else "boxcar"
        return s, t, profile


@dataclass
class PatchBatch:
    lr: np.ndarray  # (B, 3, lr_rows, width)
    hr: np.ndarray  # (B, 3, lr_rows * factor, width)
    factor: int
    thickness: float
    profile: str
    lesion: np.ndarray | None = None  # (B, 3, lr_rows * factor, width) in [0, 1], with the ``lesions`` option
    #: (B,) mm between the 3 channel planes: 1 for pairs from 1 mm volumes, the slice spacing for in-plane pairs
    plane_spacing: np.ndarray | None = None

    def conditions(self):
        """(B, 2): each pair's channel-plane spacing (mm) and the batch's thickness / spacing ratio, the
        raw values behind :func:`prettier_bids.sr.models.common.condition_features`."""
        n = len(self.lr)
        planes = np.ones(n) if self.plane_spacing is None else np.asarray(self.plane_spacing, float)
        return np.stack([planes, np.full(n, self.thickness / self.factor)], axis=1)


#: Defaults of the ``lesions`` option of :class:`PatchSampler` (config ``"patch": {"lesions": {...}}``).
LESION_DEFAULTS = {
    "insert_prob": 0.5,  # share of patches that get synthetic lesions (Poisson(per_patch) of them)
    "per_patch": 2.0,
    "periventricular_prob": 0.6,
    "diameter_mm": [2.0, 20.0],
    "stats": None,  # default: prettier_bids/data/lesion_stats.json (real lesions of p07)
    "volumes": None,  # name substrings of the (skull-stripped) volumes that may get synthetic lesions; None: all
    "real_prob": 0.25,  # share of patches centred on a real lesion voxel (volumes with a mask in the split)
}

#: Defaults of the ``inplane`` option of :class:`PatchSampler` (config ``"patch": {"inplane": {...}}``).
INPLANE_DEFAULTS = {
    "prob": 0.2,  # share of patches taken in-plane from the thick scans (volumes with a ``thick_axis``)
}

#: The dict-valued options of :class:`PatchSampler` and their keys.
PATCH_OPTIONS = {"lesions": LESION_DEFAULTS, "inplane": INPLANE_DEFAULTS, "realistic": REALISTIC_DEFAULTS}


def inplane_prob(inplane):
    """The share of in-plane pairs an ``inplane`` option asks for (0 when the option is off)."""
    return _option("inplane", inplane)["prob"] if inplane else 0.0


def _option(name, value):
    unknown = set(value) - set(PATCH_OPTIONS[name])
    if unknown:
        raise ValueError(f"unknown {name.rstrip('s')} option(s) {sorted(unknown)}; "
                         f"known: {sorted(PATCH_OPTIONS[name])}")
    return {**PATCH_OPTIONS[name], **value}


class PatchSampler:
    """Random training pairs from a list of :class:`TrainVolume`.

    ``lesions`` (default None: off, and batches are exactly those of a sampler without the option) is a
    dict over :data:`LESION_DEFAULTS`: synthetic lesions painted into the 1 mm volume before the
    degradation (:class:`prettier_bids.training.lesions.LesionInserter`), lesion-rich sampling around real
    lesions of volumes the split gives a consensus mask (``lesion_masks``), and a per-pixel lesion map of the HR
    target in :attr:`PatchBatch.lesion` (for :func:`prettier_bids.training.losses.lesion_weighted_l1`).

    ``inplane`` (default None: off) is a dict over :data:`INPLANE_DEFAULTS`: that share of the patches
    comes from the volumes given with a ``thick_axis`` (:func:`load_inplane_volume`), thick slices
    simulated along an in-plane axis, the channel planes being real slices (``PatchBatch.plane_spacing``).

    ``realistic`` (default None: off) is a dict over
    :data:`prettier_bids.training.degradations.REALISTIC_DEFAULTS`: noise, in-plane blur, bias field,
    contrast and slice-profile variation (:func:`prettier_bids.training.degradations.degrade_pair`).
    """

    def __init__(self, volumes, space=None, lr_rows=16, width=96, min_foreground=0.3, augment=True, seed=0,
                 lesions=None, inplane=None, realistic=None):
        self.volumes = [v for v in volumes if v.thick_axis is None]
        self.thick_volumes = [v for v in volumes if v.thick_axis is not None]
        if not self.volumes:
            raise ValueError("no 1 mm training volumes")
        self.inplane_cfg = _option("inplane", inplane) if inplane else None
        if bool(self.thick_volumes) != (inplane_prob(inplane) > 0):
            raise ValueError("in-plane pairs need both thick-slice volumes and the inplane option "
                             f"({len(self.thick_volumes)} thick volumes, inplane={inplane})")
        self.space = space or DegradationSpace()
        self.lr_rows, self.width = lr_rows, width
        self.min_foreground = min_foreground
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.realistic_cfg = realistic_option(realistic) if realistic is not None else None  # {}: the defaults
        self.lesion_cfg = None
        if lesions:
            from .lesions import LesionInserter

            self.lesion_cfg = _option("lesions", lesions)
            self.inserter = LesionInserter(self.lesion_cfg) if self.lesion_cfg["insert_prob"] > 0 else None
            self._real = [i for i, v in enumerate(self.volumes) if self._real_mask(v) is not None]
            self._real_idx = {i: np.flatnonzero(self.volumes[i].lesions) for i in self._real}

    @staticmethod
    def _real_mask(vol):
        if vol.lesions is None and vol.lesion_source:
            m = np.asarray(load_nifti(vol.lesion_source).dataobj) > 0
            if m.shape == vol.data.shape:
                vol.lesions = m
        return vol.lesions

    def _lesion_eligible(self, vol):
        wanted = self.lesion_cfg["volumes"]
        return wanted is None or any(k in vol.name for k in wanted)

    def _one(self, s, t, profile, max_tries=50):
        """One augmented pair: (lr, hr, lesion map or None, channel-plane spacing in mm)."""
        rng = self.rng
        cfg = self.lesion_cfg
        if self.thick_volumes and rng.random() < self.inplane_cfg["prob"]:
            return self._inplane_one(s, t, profile)
        plan = draw_plan(self.realistic_cfg, rng)
        transform = plan.contrast if plan is not None else None
        too_small = 0
        for _ in range(max_tries):
            centre = None
            if cfg is not None and self._real and rng.random() < cfg["real_prob"]:
                vi = self._real[rng.integers(len(self._real))]
                les = self._real_idx[vi]
                centre = np.unravel_index(les[rng.integers(len(les))], self.volumes[vi].data.shape) if len(les) else None
            else:
                vi = rng.integers(len(self.volumes))
            tv = self.volumes[vi]
            vol = tv.data
            slice_axis = int(rng.integers(3))
            sweep_axis = int(rng.choice([a for a in range(3) if a != slice_axis]))
            col_axis = 3 - slice_axis - sweep_axis
            n_rows = vol.shape[slice_axis]
            c = centre_row(s)
            need = self.lr_rows * s
            if n_rows < need + 2 or vol.shape[col_axis] < self.width or vol.shape[sweep_axis] < 3:
                too_small += 1
                continue
            if centre is None:
                first = int(rng.integers(c, n_rows - need + c + 1))
                plane = int(rng.integers(1, vol.shape[sweep_axis] - 1))
                col0 = int(rng.integers(0, vol.shape[col_axis] - self.width + 1))
            else:  # a patch that contains the chosen real lesion voxel
                first = int(np.clip(centre[slice_axis] - rng.integers(0, need) + c, c, n_rows - need + c))
                plane = int(np.clip(centre[sweep_axis], 1, vol.shape[sweep_axis] - 2))
                col0 = int(np.clip(centre[col_axis] - rng.integers(0, self.width), 0, vol.shape[col_axis] - self.width))
            if cfg is None:
                lr, hr = extract_pair(vol, slice_axis, sweep_axis, plane, col0, first, s, t, profile,
                                      self.lr_rows, self.width, transform)
                les = None
            else:
                lr, hr, les = self._lesion_pair(tv, vi, slice_axis, sweep_axis, plane, col0, first, s, t, profile,
                                                transform)
            if np.mean(hr[1] > 0.05) < self.min_foreground:
                continue
            return self._finish(lr, hr, les, 1.0, plan)
        if too_small == max_tries:
            raise PatchError(self._too_small(s, self.volumes))
        raise PatchError("could not find a patch with enough foreground; check the training volumes")

    def _too_small(self, s, volumes):
        shapes = ", ".join(sorted({"x".join(map(str, v.data.shape)) for v in volumes}))
        return (f"the training volumes ({shapes} voxels) are too small for a patch of {self.lr_rows} rows x "
                f"{self.width} columns at {s} mm spacing (at least {self.lr_rows * s + 2} and {self.width} voxels "
                "along two axes): use larger volumes or a smaller patch.lr_rows / patch.width")

    def _finish(self, lr, hr, les, plane_spacing, plan=None):
        """The rest of the pair's realistic degradations (``plan``: bias field, blur, noise), augmentation (column
        mirror, plane-order reversal, gain), contiguous arrays."""
        rng = self.rng
        lr, hr = degrade_pair(lr, hr, plan, rng, hr.shape[1] // lr.shape[1], plane_spacing)
        if self.augment:
            if rng.random() < 0.5:  # mirror the columns
                lr, hr = lr[..., ::-1], hr[..., ::-1]
                les = les[..., ::-1] if les is not None else None
            if rng.random() < 0.5:  # reverse the plane order
                lr, hr = lr[::-1], hr[::-1]
                les = les[::-1] if les is not None else None
            gain = np.float32(rng.uniform(0.9, 1.1))
            lr, hr = lr * gain, hr * gain
        les = np.ascontiguousarray(les) if les is not None else None
        return np.ascontiguousarray(lr), np.ascontiguousarray(hr), les, plane_spacing

    def _inplane_one(self, s, t, profile, max_tries=50):
        """A pair from a thick scan: thick slices simulated along an in-plane axis (1 mm rows), the 3
        channel planes 3 neighbouring real slices, columns along the other in-plane axis."""
        rng = self.rng
        plan = draw_plan(self.realistic_cfg, rng)
        too_small = 0
        for _ in range(max_tries):
            tv = self.thick_volumes[rng.integers(len(self.thick_volumes))]
            vol, sweep_axis = tv.data, tv.thick_axis
            slice_axis = int(rng.choice([a for a in range(3) if a != sweep_axis]))
            col_axis = 3 - slice_axis - sweep_axis
            n_rows, c, need = vol.shape[slice_axis], centre_row(s), self.lr_rows * s
            if n_rows < need + 2 or vol.shape[col_axis] < self.width or vol.shape[sweep_axis] < 3:
                too_small += 1
                continue
            first = int(rng.integers(c, n_rows - need + c + 1))
            plane = int(rng.integers(1, vol.shape[sweep_axis] - 1))
            col0 = int(rng.integers(0, vol.shape[col_axis] - self.width + 1))
            lr, hr = extract_pair(vol, slice_axis, sweep_axis, plane, col0, first, s, t, profile, self.lr_rows,
                                  self.width, plan.contrast if plan is not None else None)
            if np.mean(hr[1] > 0.05) < self.min_foreground:
                continue
            les = np.zeros_like(hr) if self.lesion_cfg is not None else None
            return self._finish(lr, hr, les, tv.plane_spacing, plan)
        if too_small == max_tries:
            raise PatchError(self._too_small(s, self.thick_volumes))
        raise PatchError("could not find an in-plane patch with enough foreground; check the thick volumes")

    def _lesion_pair(self, tv, vi, slice_axis, sweep_axis, plane, col0, first, s, t, profile, transform=None):
        """:func:`extract_pair` on a block of the volume that may get synthetic lesions first, plus the
        HR lesion map (synthetic soft mask, maximum with the real mask); ``transform``: as extract_pair's."""
        from .lesions import contrast_of

        rng, cfg, vol = self.rng, self.lesion_cfg, tv.data
        col_axis = 3 - slice_axis - sweep_axis
        half = int(np.ceil(t * 1.5)) + 1  # as extract_pair
        region = [None] * 3
        region[slice_axis] = slice(max(0, first - half),
                                   min(vol.shape[slice_axis], first + (self.lr_rows - 1) * s + half + 1))
        region[sweep_axis] = slice(max(0, plane - 9), min(vol.shape[sweep_axis], plane + 10))
        region[col_axis] = slice(col0, col0 + self.width)
        region = tuple(region)
        lesion = np.zeros(vol[region].shape, np.float32)
        block = vol[region]
        if (self.inserter is not None and self._lesion_eligible(tv) and rng.random() < cfg["insert_prob"]):
            block, lesion = self.inserter.insert(vol, rng, contrast_of(tv.name), key=vi, region=region)
        if tv.lesions is not None:
            lesion = np.maximum(lesion, tv.lesions[region].astype(np.float32))
        args = (slice_axis, sweep_axis, plane - region[sweep_axis].start, 0, first - region[slice_axis].start,
                s, t, profile, self.lr_rows, self.width)
        lr, hr = extract_pair(block, *args, transform)
        # the lesion map on the HR rows only (the rows extract_pair returns as ``hr``)
        arr = np.transpose(lesion, (sweep_axis, slice_axis, col_axis))
        p0, t0 = args[2], args[4] - centre_row(s)
        les = np.ascontiguousarray(arr[p0 - 1:p0 + 2, t0:t0 + self.lr_rows * s, :self.width], dtype=np.float32)
        return lr, hr, les

    def batch(self, batch_size, spacing=None, thickness=None, profile=None):
        s, t, prof = self.space.sample(self.rng)
        s = spacing or s
        t = thickness or (t if spacing is None else float(s))
        prof = profile or prof
        jitter = self.realistic_cfg["thickness_jitter"] if self.realistic_cfg is not None else 0.0
        # slice-profile variation: each pair simulated with its own thickness, the batch records the nominal one
        pairs = [self._one(s, t * self.rng.uniform(1 - jitter, 1 + jitter) if jitter else t, prof)
                 for _ in range(batch_size)]
        les = np.stack([p[2] for p in pairs]) if self.lesion_cfg is not None else None
        return PatchBatch(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), s, t, prof, les,
                          np.asarray([p[3] for p in pairs], dtype=np.float32))


def fixed_batches(volumes, n_batches, batch_size, seed, spacing=6, thickness=5.0, profile="boxcar", **patch):
    """Deterministic evaluation/validation batches (paper setting by default), no augmentation, no
    synthetic lesions, no in-plane pairs, no realistic degradations (the ``lesions``, ``inplane`` and
    ``realistic`` options in ``patch`` are ignored, so validation stays comparable)."""
    patch = {k: v for k, v in patch.items() if k not in PATCH_OPTIONS}
    sampler = PatchSampler(volumes, augment=False, seed=seed, **patch)
    return [sampler.batch(batch_size, spacing, thickness, profile) for _ in range(n_batches)]
