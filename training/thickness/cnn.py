"""Research code (issue 25), not part of the package: a patch CNN that reads t / s from thick-slice images.

Planes that contain the slice axis show the slice profile: an edge oblique to the slices is smeared within each
slice over ``t·tan(angle)`` and moves between two slices by ``s·tan(angle)``. ``ThicknessNet`` reads ``t / s`` from
patches of 8 slices × 48 in-plane voxels of such planes on the SR network's ~1 mm working grid (its intensity
scaling); the estimate is the median over 1024 patches drawn with a fixed seed. Trained by ``train_estimator.py``
on thick stacks simulated from the split's training heads. Result (2026-12-05, docs/research/slice-profile-
estimation.md): it regresses to the mean (validation RMS 18 % of the spacing; 3/3 mm read as 2.7, 2/4 mm as
3.1-3.3), so it is not shipped; ``prettier_bids.sr.thickness`` says "no estimate" instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: An estimate is used (and the output projected onto it) only when its uncertainty is at most this (mm).
CONFIDENT_UNCERTAINTY_MM = 0.5
#: Patch size: slices × in-plane voxels (~1 mm) of a plane that contains the slice axis.
PATCH_SLICES, PATCH_WIDTH = 8, 48
#: Patches per estimate, and the fixed seed that draws them.
N_PATCHES, SEED = 1024, 20261204
#: A patch counts when it has at least this standard deviation (intensity scaled to ~1 at the 99.5th percentile)
#: and this fraction of voxels above 0.1: flat background and empty field of view say nothing of the profile.
MIN_PATCH_STD, MIN_PATCH_FOREGROUND = 0.05, 0.5
#: Fewer informative patches than this: no estimate (uncertainty infinite).
MIN_PATCHES = 64
#: The ratio t / s the network was trained over (gaps and overlaps); estimates are clipped to it.
RATIO_RANGE = (0.3, 1.3)
FORMAT = "prettier-thickness-estimator"


@dataclass(frozen=True)
class ThicknessEstimate:
    """The slice thickness read from the image: ``thickness`` (mm), its ``uncertainty`` (mm, one standard
    error; ``inf`` when nothing could be measured), the header's slice ``spacing``, how many patches it rests on
    (``n_features``) and whether it is ``confident`` enough to use."""

    thickness: float
    uncertainty: float
    spacing: float
    n_features: int = 0

    @property
    def gap(self) -> float:
        """Spacing less thickness (mm); negative for overlapping slices."""
        return self.spacing - self.thickness

    @property
    def confident(self) -> bool:
        return bool(math.isfinite(self.uncertainty) and self.uncertainty <= CONFIDENT_UNCERTAINTY_MM)

    def as_info(self) -> dict:
        """The sidecar's ``SliceThicknessEstimate``."""
        return {"Thickness": round(float(self.thickness), 3),
                "Uncertainty": round(float(self.uncertainty), 3) if math.isfinite(self.uncertainty) else None,
                "Gap": round(float(self.gap), 3), "Features": int(self.n_features), "Confident": self.confident}


def _torch():
    import torch  # noqa: PLC0415 (torch only when an estimate is made)
    from torch import nn  # noqa: PLC0415

    return torch, nn


def build_net():
    """:class:`ThicknessNet`: input ``(B, 2, PATCH_SLICES, PATCH_WIDTH)`` (the patch; the spacing as
    ``(s - 5) / 2`` in every voxel), output ``(B,)``: ``t / s``."""
    torch, nn = _torch()

    class ThicknessNet(nn.Module):
        def __init__(self, width=32):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(2, width, (3, 5), padding=(1, 2)), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, (3, 5), padding=(1, 2)), nn.ReLU(inplace=True),
                nn.Conv2d(width, 2 * width, (3, 3), padding=1, stride=(1, 2)), nn.ReLU(inplace=True),
                nn.Conv2d(2 * width, 2 * width, (3, 3), padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(2 * width, 2 * width, (3, 3), padding=1, stride=(2, 2)), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(1))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width, 32), nn.ReLU(inplace=True),
                                      nn.Linear(32, 1))

        def forward(self, x):
            return 0.8 + self.head(self.body(x))[:, 0]

    return ThicknessNet()


def spacing_channel(spacing, shape):
    return np.full(shape, (float(spacing) - 5.0) / 2.0, dtype=np.float32)


def informative(patch):
    return bool(patch.std() >= MIN_PATCH_STD and np.mean(patch > 0.1) >= MIN_PATCH_FOREGROUND)


def sample_patches(x, axis, n, rng, max_tries=20):
    """Up to ``n`` informative patches ``(n, PATCH_SLICES, PATCH_WIDTH)`` of the scaled working-grid volume
    ``x`` (slice axis ``axis``), from planes that contain the slice axis, both in-plane directions, drawn by
    ``rng``. Fewer when the volume has too few slices or too little content."""
    y = np.moveaxis(np.asarray(x, dtype=np.float32), axis, 0)  # (slices, a, b)
    k = y.shape[0]
    out = []
    if k < PATCH_SLICES:
        return np.zeros((0, PATCH_SLICES, PATCH_WIDTH), np.float32)
    dims = [d for d in (1, 2) if y.shape[d] >= PATCH_WIDTH]
    if not dims:
        return np.zeros((0, PATCH_SLICES, PATCH_WIDTH), np.float32)
    for _ in range(n * max_tries):
        d = dims[int(rng.integers(len(dims)))]
        other = 3 - d
        z0 = int(rng.integers(0, k - PATCH_SLICES + 1))
        u0 = int(rng.integers(0, y.shape[d] - PATCH_WIDTH + 1))
        v = int(rng.integers(0, y.shape[other]))
        if d == 1:
            p = y[z0:z0 + PATCH_SLICES, u0:u0 + PATCH_WIDTH, v]
        else:
            p = y[z0:z0 + PATCH_SLICES, v, u0:u0 + PATCH_WIDTH]
        if informative(p):
            out.append(p if rng.integers(2) else p[:, ::-1])
            if len(out) == n:
                break
    return np.asarray(out, dtype=np.float32).reshape(-1, PATCH_SLICES, PATCH_WIDTH)


def predict_ratios(net, patches, spacing, batch=512):
    """The network's ``t / s`` for each patch (numpy ``(n,)``)."""
    torch, _ = _torch()
    if len(patches) == 0:
        return np.zeros(0, np.float32)
    inp = np.stack([patches, spacing_channel(spacing, patches.shape)], axis=1)
    outs = []
    with torch.no_grad():
        for i in range(0, len(inp), batch):
            outs.append(net(torch.from_numpy(np.ascontiguousarray(inp[i:i + batch]))).float().numpy())
    return np.concatenate(outs)


def load_estimator(path):
    """(network in eval mode, metadata) of the estimator file ``path``."""
    torch, _ = _torch()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a slice thickness estimator file")
    net = build_net()
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return net, dict(payload.get("meta", {}))


def scaled_working_volume(data, zooms, axis):
    """The volume as the SR network sees it: its ~1 mm in-plane working grid, the network's intensity scaling."""
    from prettier_bids.sr.preprocess import apply_scaling, intensity_scaling, working_grid  # noqa: PLC0415

    work, _ = working_grid(np.asarray(data, dtype=np.float32), zooms, axis)
    offset, scale = intensity_scaling(work)
    return apply_scaling(work, offset, scale)


def estimate_from_ratios(ratios, spacing, calibration_error, seed=SEED):
    """The estimate from per-patch ratios: median (clipped to :data:`RATIO_RANGE`) times the spacing; the
    uncertainty is the bootstrap standard error of that median and the held-out ``calibration_error`` (a
    fraction of the spacing) added in quadrature."""
    n = len(ratios)
    if n < MIN_PATCHES:
        return ThicknessEstimate(float(spacing), float("inf"), float(spacing), n)
    med = float(np.clip(np.median(ratios), *RATIO_RANGE))
    rng = np.random.default_rng(seed)
    boots = np.median(ratios[rng.integers(0, n, size=(200, n))], axis=1)
    se = float(np.std(boots)) * spacing
    unc = math.hypot(se, float(calibration_error) * spacing)
    return ThicknessEstimate(round(med * spacing, 2), unc, float(spacing), n)


def estimate_thickness(data, zooms, axis, estimator) -> ThicknessEstimate:
    """Estimate the slice thickness of the thick-slice volume ``data`` (3D array; ``zooms``: voxel sizes in
    mm; ``axis``: the slice axis). Deterministic: the same input gives the same estimate. ``estimator``:
    ``(net, meta)`` (:func:`load_estimator`)."""
    spacing = float(zooms[axis])
    net, meta = estimator
    x = scaled_working_volume(data, zooms, axis)
    patches = sample_patches(x, axis, N_PATCHES, np.random.default_rng(SEED))
    ratios = predict_ratios(net, patches, spacing)
    return estimate_from_ratios(ratios, spacing, meta.get("CalibrationRatioError", 1.0))
