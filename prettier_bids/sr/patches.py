"""Training pairs as in the paper: 3 contiguous planes as channels, LR 16 x 96 -> HR (16 r) x 96.

Thick slices are simulated on the fly with :func:`prettier_bids.sr.degrade.profile_matrix`
(the same maths as evaluation and the consistency check) along any of the three axes, with
randomised slice spacing, thickness (gap), profile and phase, so that one model serves
2-8 mm inputs. Volumes are scaled with :func:`prettier_bids.sr.preprocess.intensity_scale`,
the function inference uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from .degrade import centre_row, cubic_matrix, profile_matrix
from .preprocess import intensity_scale, voxel_sizes

LOGGER = logging.getLogger("prettier_bids.train")


@dataclass
class TrainVolume:
    name: str
    data: np.ndarray  # ~1 mm isotropic, scaled so that the foreground's 99.5th percentile is 1


def load_training_volume(path, name=None, target_vox=1.0):
    """Load a 3D volume, resample it to ``target_vox`` mm isotropic (cubic) if needed, and scale it."""
    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    zooms = voxel_sizes(img.affine)
    for ax in range(3):
        if abs(zooms[ax] - target_vox) > 0.05 * target_vox:
            n_new = int(round(data.shape[ax] * zooms[ax] / target_vox))
            positions = (np.arange(n_new) + 0.5) * (target_vox / zooms[ax]) - 0.5
            w = cubic_matrix(data.shape[ax], positions)
            data = np.moveaxis(np.tensordot(w, np.moveaxis(data, ax, 0), axes=(1, 0)), 0, ax)
    data = np.clip(data, 0, None).astype(np.float32)
    data /= np.float32(intensity_scale(data))
    return TrainVolume(name or str(path), np.ascontiguousarray(data))


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


def extract_pair(vol, slice_axis, sweep_axis, plane, col0, first_centre, spacing, thickness, profile,
                 lr_rows=16, width=96):
    """One LR/HR pair from a 1 mm volume.

    ``slice_axis``: the simulated thick-slice axis; ``sweep_axis``: the axis along which the 3
    contiguous planes ``plane - 1 .. plane + 1`` are taken; the remaining axis gives ``width``
    columns from ``col0``. LR slice ``k`` is centred on HR row ``first_centre + k * spacing``;
    HR target rows start ``centre_row(spacing)`` rows before the first centre.
    """
    col_axis = 3 - slice_axis - sweep_axis
    arr = np.transpose(vol, (sweep_axis, slice_axis, col_axis))
    r = int(spacing)
    c = centre_row(r)
    half = int(np.ceil(thickness * 1.5)) + 1  # Gaussian tails included
    lo = max(0, first_centre - half)
    hi = min(arr.shape[1], first_centre + (lr_rows - 1) * r + half + 1)
    block = arr[plane - 1:plane + 2, lo:hi, col0:col0 + width]
    centres = first_centre - lo + r * np.arange(lr_rows)
    w = profile_matrix(hi - lo, 1.0, centres, thickness, profile)
    lr = np.einsum("ks,csw->ckw", w, block)
    t0 = first_centre - c
    hr = arr[plane - 1:plane + 2, t0:t0 + lr_rows * r, col0:col0 + width]
    return lr.astype(np.float32), np.ascontiguousarray(hr, dtype=np.float32)


class PatchSampler:
    """Random training pairs from a list of :class:`TrainVolume`."""

    def __init__(self, volumes, space=None, lr_rows=16, width=96, min_foreground=0.3, augment=True, seed=0):
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes = volumes
        self.space = space or DegradationSpace()
        self.lr_rows, self.width = lr_rows, width
        self.min_foreground = min_foreground
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def _one(self, s, t, profile, max_tries=50):
        rng = self.rng
        for _ in range(max_tries):
            vol = self.volumes[rng.integers(len(self.volumes))].data
            slice_axis = int(rng.integers(3))
            sweep_axis = int(rng.choice([a for a in range(3) if a != slice_axis]))
            col_axis = 3 - slice_axis - sweep_axis
            n_rows = vol.shape[slice_axis]
            c = centre_row(s)
            need = self.lr_rows * s
            if n_rows < need + 2 or vol.shape[col_axis] < self.width or vol.shape[sweep_axis] < 3:
                continue
            first = int(rng.integers(c, n_rows - need + c + 1))
            plane = int(rng.integers(1, vol.shape[sweep_axis] - 1))
            col0 = int(rng.integers(0, vol.shape[col_axis] - self.width + 1))
            lr, hr = extract_pair(vol, slice_axis, sweep_axis, plane, col0, first, s, t, profile,
                                  self.lr_rows, self.width)
            if np.mean(hr[1] > 0.05) < self.min_foreground:
                continue
            if self.augment:
                if rng.random() < 0.5:  # mirror the columns
                    lr, hr = lr[..., ::-1], hr[..., ::-1]
                if rng.random() < 0.5:  # reverse the plane order
                    lr, hr = lr[::-1], hr[::-1]
                gain = np.float32(rng.uniform(0.9, 1.1))
                lr, hr = lr * gain, hr * gain
            return np.ascontiguousarray(lr), np.ascontiguousarray(hr)
        raise RuntimeError("could not find a patch with enough foreground; check the training volumes")

    def batch(self, batch_size, spacing=None, thickness=None, profile=None):
        s, t, prof = self.space.sample(self.rng)
        s = spacing or s
        t = thickness or (t if spacing is None else float(s))
        prof = profile or prof
        pairs = [self._one(s, t, prof) for _ in range(batch_size)]
        return PatchBatch(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), s, t, prof)


def fixed_batches(volumes, n_batches, batch_size, seed, spacing=6, thickness=5.0, profile="boxcar", **patch):
    """Deterministic evaluation/validation batches (paper setting by default), no augmentation."""
    sampler = PatchSampler(volumes, augment=False, seed=seed, **patch)
    return [sampler.batch(batch_size, spacing, thickness, profile) for _ in range(n_batches)]
