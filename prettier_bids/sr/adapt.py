"""Per-scan self-supervised adaptation (``--adapt``): fine-tune a copy of the network on the scan itself.

The in-plane axes of a 2D scan are high-resolution views of the same anatomy, contrast and noise as its
thick axis. Thick slices simulated along one in-plane axis with the scan's own slice profile (its
thickness / spacing ratio and profile, the spacing being the upsampling factor in working-grid voxels),
set against the in-plane rows themselves, make LR/HR pairs of this very scan (SMORE's idea; here a
bounded number of steps from the shipped weights instead of hours from scratch). The pairs are laid out
as the training's in-plane pairs (:func:`prettier_bids.sr.degrade.extract_pair`): the 3 channel planes are
neighbouring real slices, a conditioned model is told their spacing. A fixed number of Adam steps of the
L1 loss (fp32) adapts a deep copy of the model; the shipped weights and the loaded model are never
changed. Deterministic given the seed: the pairs come from a seeded generator and the steps run in a fixed
order.

Experimental: on the validation head (simulated 6/5 mm axial) every setting tried lowered PSNR, by 0.06 dB (30
steps, 5e-6) to 0.29 dB (``benchmarks/results/adapt.md``): the shipped model's knowledge of the through-plane
direction is worth more than what in-plane pairs of one scan teach it. prettier-sr offers it, off by default.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from .degrade import centre_row, extract_pair

LOGGER = logging.getLogger("prettier_bids.sr")

#: Default number of fine-tuning steps and Adam's learning rate of ``--adapt``: the setting that lost least on the
#: validation head (``benchmarks/results/adapt.md``: no setting tried there improved on the shipped model).
DEFAULT_STEPS = 30
DEFAULT_LEARNING_RATE = 5e-6
#: Pairs per step, LR rows and columns of each pair (the HR target has ``LR_ROWS * factor`` rows).
BATCH = 4
LR_ROWS = 12
WIDTH = 64
#: A candidate pair whose HR target is mostly background (mean below this, on the scaled intensities) is
#: drawn again, up to ``_TRIES`` times.
_FOREGROUND = 0.1
_TRIES = 20


@dataclass(frozen=True)
class AdaptSettings:
    """How to adapt: ``steps`` Adam steps at ``learning_rate`` on batches of ``batch`` pairs; ``seed``."""

    steps: int = DEFAULT_STEPS
    learning_rate: float = DEFAULT_LEARNING_RATE
    batch: int = BATCH
    seed: int = 0
    #: the 3 channel planes: ``slices`` (neighbouring real slices, the training's in-plane pairs) or ``inplane``
    #: (neighbouring in-plane rows ~1 mm apart, as at inference; the columns then run along the thick axis)
    planes: str = "slices"
    #: weight of a distillation term: L1 between the adapted and the shipped model's outputs on windows of the
    #: scan itself laid out as at inference (through-plane rows), so that the in-plane pairs do not make the
    #: network forget the through-plane direction (0: off)
    distill: float = 0.0
    #: which parameters are tuned: ``all``, or ``tail`` (the through-plane upsampler only)
    params: str = "all"

    def __post_init__(self):
        if self.planes not in ("slices", "inplane"):
            raise ValueError("planes must be 'slices' or 'inplane'")
        if self.params not in ("all", "tail") or not float(self.distill) >= 0:
            raise ValueError("params must be 'all' or 'tail', distill >= 0")
        if int(self.steps) < 1 or int(self.batch) < 1 or not float(self.learning_rate) > 0:
            raise ValueError("adaptation needs steps >= 1, batch >= 1 and a positive learning rate")


class AdaptSkipped(Exception):
    """The scan cannot give adaptation pairs (too small): the shipped model is used unchanged."""


def _pair_size(shape, axis, factor, planes="slices"):
    """(LR rows, columns) that fit the scan's in-plane axes, or AdaptSkipped."""
    inplane = [n for a, n in enumerate(shape) if a != axis]
    rows = min(LR_ROWS, min(inplane) // factor - 1)
    width = min(WIDTH, min(inplane) if planes == "slices" else shape[axis])
    if shape[axis] < 3 or rows < 2 or width < 8:
        raise AdaptSkipped(f"the scan is too small for adaptation pairs ({'x'.join(map(str, shape))} voxels)")
    return rows, width


def inplane_pairs(x, axis, factor, thickness_ratio, profile, rng, n, planes="slices"):
    """``n`` LR/HR pairs from the scaled working-grid volume ``x`` whose thick axis is ``axis``: thick slices
    of ``factor`` voxels' spacing and ``thickness_ratio * factor`` voxels' thickness simulated along a random
    in-plane axis, the other in-plane axis giving the columns and the thick axis the 3 channel planes.
    Returns float32 arrays (n, 3, rows, width) and (n, 3, rows * factor, width)."""
    rows, width = _pair_size(x.shape, axis, factor, planes)
    inplane = [a for a in range(3) if a != axis]
    c = centre_row(factor)
    thickness = float(thickness_ratio) * factor
    lrs, hrs = [], []
    for _ in range(n):
        for _ in range(_TRIES):
            sim = inplane[int(rng.integers(2))]
            other = inplane[0] if sim == inplane[1] else inplane[1]
            sweep, col = (axis, other) if planes == "slices" else (other, axis)
            plane = int(rng.integers(1, x.shape[sweep] - 1))
            first = int(rng.integers(c, x.shape[sim] - (rows - 1) * factor - (factor - c) + 1))
            col0 = int(rng.integers(0, x.shape[col] - width + 1))
            lr, hr = extract_pair(x, sim, sweep, plane, col0, first, factor, thickness, profile, rows, width)
            if hr.mean() > _FOREGROUND:
                break
        lrs.append(lr)
        hrs.append(hr)
    return np.stack(lrs), np.stack(hrs)


def scan_windows(x, axis, rng, n, rows=LR_ROWS, width=WIDTH):
    """``n`` inference windows of the scaled working-grid volume ``x`` (thick along ``axis``): 3 neighbouring
    in-plane planes as channels, rows along the thick axis, columns along the other in-plane axis, as
    :func:`prettier_bids.sr.reconstruct.sweep` feeds the network. Returns float32 (n, 3, rows, width)."""
    inplane = [a for a in range(3) if a != axis]
    out = []
    for _ in range(n):
        k = int(rng.integers(2))
        sw, other = inplane[k], inplane[1 - k]
        arr = np.moveaxis(x, (sw, axis, other), (0, 1, 2))
        r = min(rows, arr.shape[1])
        w = min(width, arr.shape[2])
        c = int(rng.integers(1, arr.shape[0] - 1))
        r0 = int(rng.integers(0, arr.shape[1] - r + 1))
        w0 = int(rng.integers(0, arr.shape[2] - w + 1))
        out.append(arr[c - 1:c + 2, r0:r0 + r, w0:w0 + w])
    return np.stack(out).astype(np.float32)


def adapt_model(model, x, axis, factor, spacing, thickness_ratio, profile="boxcar", settings=None, device="cpu",
                window_conditions=None):
    """A copy of ``model`` (an ``nn.Module``) fine-tuned on :func:`inplane_pairs` of ``x`` (the scaled working
    grid of one scan, thick along ``axis``; ``spacing``: its slice spacing in mm, the channel planes' spacing
    told to a conditioned model). With ``settings.distill``, each step also pulls the copy's output on
    :func:`scan_windows` towards the shipped model's (told ``window_conditions``, what inference tells it).
    Returns (the adapted copy in eval mode, a dict for the sidecar)."""
    import torch  # the settings and pairs need no torch: the CLIs parse their options without it

    from .models.common import condition_features

    settings = settings or AdaptSettings()
    t0 = time.time()
    rng = np.random.default_rng(settings.seed)
    tuned = copy.deepcopy(model).float().to(device)
    tuned.train()
    for p in tuned.parameters():
        p.requires_grad_(settings.params == "all")
    if settings.params == "tail":
        for p in tuned.upsample.parameters():
            p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=settings.learning_rate)
    teacher = None
    if settings.distill > 0:
        teacher = copy.deepcopy(model).float().to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        # what a conditioned model is told at inference (reconstruct.inference_conditions: ~1 mm planes)
        wcond = torch.tensor([condition_features(*(window_conditions or (1.0, thickness_ratio)))] * settings.batch,
                             dtype=torch.float32, device=device)
    conditioned = getattr(tuned, "conditioned", False)
    plane_mm = spacing if settings.planes == "slices" else spacing / factor  # working-grid rows are ~spacing / factor
    cond = torch.tensor([condition_features(plane_mm, thickness_ratio)] * settings.batch, dtype=torch.float32,
                        device=device)
    losses = []
    for _ in range(settings.steps):
        lr, hr = inplane_pairs(x, axis, factor, thickness_ratio, profile, rng, settings.batch, settings.planes)
        lr_t, hr_t = torch.from_numpy(lr).to(device), torch.from_numpy(hr).to(device)
        opt.zero_grad(set_to_none=True)
        pred = tuned(lr_t, factor, cond) if conditioned else tuned(lr_t, factor)
        loss = torch.nn.functional.l1_loss(pred, hr_t)
        if teacher is not None:
            win = torch.from_numpy(scan_windows(x, axis, rng, settings.batch)).to(device)
            with torch.no_grad():
                target = teacher(win, factor, wcond) if conditioned else teacher(win, factor)
            out = tuned(win, factor, wcond) if conditioned else tuned(win, factor)
            loss = loss + settings.distill * torch.nn.functional.l1_loss(out, target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tuned.eval()
    for p in tuned.parameters():
        p.requires_grad_(False)
    k = max(1, len(losses) // 5)
    info = {"Steps": int(settings.steps), "LearningRate": float(settings.learning_rate),
            "BatchPairs": int(settings.batch), "Seed": int(settings.seed), "Planes": settings.planes,
            **({"Distill": float(settings.distill)} if settings.distill else {}),
            **({"Parameters": settings.params} if settings.params != "all" else {}),
            "Pairs": "in-plane rows of the scan, thick slices simulated with its slice profile",
            "ThicknessRatio": round(float(thickness_ratio), 4), "SliceProfile": profile,
            "L1First": round(float(np.mean(losses[:k])), 5), "L1Last": round(float(np.mean(losses[-k:])), 5),
            "Seconds": round(time.time() - t0, 2)}
    LOGGER.info("adapted the model to the scan: %d steps in %.0f s (L1 %.4f -> %.4f)", settings.steps,
                info["Seconds"], info["L1First"], info["L1Last"])
    return tuned, info
