"""EDSR (Lim et al. 2017) with its body on the LR grid and through-plane upsampling."""

from __future__ import annotations

from torch import nn

from .common import FACTORS, LRGridGenerator, ThroughPlaneUpsampler, conv3x3


class ResBlock(nn.Module):
    def __init__(self, n_feats, res_scale=1.0):
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class EDSR(LRGridGenerator):
    """EDSR generator: head, ``n_blocks`` residual blocks without batch norm, global skip,
    through-plane sub-pixel upsampler, and a residual over cubic-spline interpolation."""

    def __init__(self, n_blocks=6, n_feats=48, res_scale=1.0, tail_feats=24, channels=3, factors=FACTORS,
                 conditioning=False):
        super().__init__(
            conv3x3(channels, n_feats),
            nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_blocks)], conv3x3(n_feats, n_feats)),
            ThroughPlaneUpsampler(n_feats, tail_feats, channels, factors), factors, n_feats=n_feats,
            conditioning=conditioning)
