"""Parts shared by the generators: through-plane (anisotropic) upsampling and the cubic residual base.

Tensors are laid out ``(batch, channels, slices, in-plane)``: axis 2 is the thick-slice axis
that gets upsampled, axis 3 stays on its grid. The three channels are three contiguous
planes (the paper's "RGB" trick), and every generator predicts all three.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..degrade import cubic_upsample_matrix

#: Through-plane factors every generator supports (2-8 mm slice spacing to ~1 mm).
FACTORS = tuple(range(2, 9))


def conv3x3(cin, cout, bias=True):
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class CubicBase(nn.Module):
    """Cubic-spline interpolation along the slice axis, the residual base of every generator."""

    def __init__(self):
        super().__init__()
        self._cache: dict = {}

    def forward(self, x, factor):
        key = (x.shape[2], factor, x.device, x.dtype)
        w = self._cache.get(key)
        if w is None:
            w = torch.from_numpy(cubic_upsample_matrix(x.shape[2], factor)).to(device=x.device, dtype=x.dtype)
            self._cache[key] = w
        return torch.einsum("os,bcsp->bcop", w, x)


class ThroughPlaneUpsampler(nn.Module):
    """One sub-pixel conv per factor (``r`` rows per LR row along the slice axis), then a shared tail.

    The tail runs on the fine grid, so it is kept small; the body before it runs on the LR grid.
    """

    def __init__(self, n_feats, tail_feats=24, out_channels=3, factors=FACTORS, act=None):
        super().__init__()
        self.factors = tuple(factors)
        self.tail_feats = tail_feats
        self.expand = nn.ModuleDict({str(r): conv3x3(n_feats, tail_feats * r) for r in self.factors})
        act = act or nn.ReLU(inplace=True)
        self.tail = nn.Sequential(act, conv3x3(tail_feats, tail_feats), nn.ReLU(inplace=True),
                                  conv3x3(tail_feats, out_channels))

    def forward(self, feats, factor):
        if str(factor) not in self.expand:
            raise ValueError(f"factor {factor} not supported (model serves {self.factors})")
        b, _, s, p = feats.shape
        y = self.expand[str(factor)](feats)
        # (b, tail*r, s, p) -> (b, tail, s*r, p): row k*r + m comes from channel block m.
        y = y.view(b, self.tail_feats, factor, s, p).permute(0, 1, 3, 2, 4).reshape(b, self.tail_feats, s * factor, p)
        return self.tail(y)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


#: What a conditioned generator is told about its input, and the values unconditioned training assumed.
CONDITION_KEYS = ("plane_spacing", "thickness_ratio")
CONDITION_DEFAULTS = (1.0, 1.0)


def condition_features(plane_spacing, thickness_ratio):
    """The conditioning vector of one input: channel-plane spacing (mm) and slice thickness / spacing,
    as ``(log(plane_spacing), thickness_ratio - 1)`` so that 1 mm planes and contiguous slices give 0."""
    return [math.log(max(float(plane_spacing), 1e-3)), float(thickness_ratio) - 1.0]


class FiLM(nn.Module):
    """Per-feature scale and shift of the head features from the conditioning vector (FiLM, Perez et al.
    2018). The last layer starts at zero: an untrained FiLM is the identity, so a conditioned model
    initialised from unconditioned weights starts out computing exactly what they computed."""

    def __init__(self, n_feats, n_cond=len(CONDITION_KEYS), hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_cond, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * n_feats))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, feats, cond):
        gamma, beta = self.net(cond).to(feats.dtype)[:, :, None, None].chunk(2, dim=1)
        return feats * (1 + gamma) + beta


class LRGridGenerator(nn.Module):
    """Shared skeleton: ``head`` and ``body`` on the LR grid (global skip), the through-plane
    ``upsample``, and the result added to cubic interpolation of the input (residual learning).

    ``conditioning=True`` adds a :class:`FiLM` after the head, fed by ``cond`` (B, 2) rows of
    :func:`condition_features`; ``cond=None`` means 1 mm planes and contiguous slices. Unconditioned
    generators ignore ``cond``, so callers may always pass it.
    """

    def __init__(self, head, body, upsample, factors=FACTORS, n_feats=None, conditioning=False):
        super().__init__()
        self.head, self.body, self.upsample = head, body, upsample
        self.cubic = CubicBase()
        self.factors = tuple(factors)
        self.conditioned = bool(conditioning)
        if self.conditioned:
            self.film = FiLM(n_feats)

    def forward(self, x, factor, cond=None):
        f = self.head(x)
        if self.conditioned:
            if cond is None:
                cond = torch.tensor([condition_features(*CONDITION_DEFAULTS)], dtype=x.dtype, device=x.device)
            f = self.film(f, cond.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1))
        f = f + self.body(f)
        residual = self.upsample(f, factor)
        # The cubic base carries most of the signal: under bf16 autocast it stays in (at least) fp32, so reduced
        # precision touches only the network's residual; outside autocast this is the plain sum in x's dtype.
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            return self.cubic(x.to(dtype), factor) + residual.to(dtype)
