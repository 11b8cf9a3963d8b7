"""RRDBNet generator of (Real)ESRGAN (Wang et al. 2018/2021), through-plane upsampling."""

from __future__ import annotations

import torch
from torch import nn

from .common import FACTORS, LRGridGenerator, ThroughPlaneUpsampler, conv3x3


class ResidualDenseBlock(nn.Module):
    def __init__(self, n_feats=64, growth=32):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(n_feats + i * growth, growth) for i in range(4))
        self.last = conv3x3(n_feats + 4 * growth, n_feats)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.last(torch.cat(feats, 1))


class RRDB(nn.Module):
    def __init__(self, n_feats, growth):
        super().__init__()
        self.rdbs = nn.Sequential(*[ResidualDenseBlock(n_feats, growth) for _ in range(3)])

    def forward(self, x):
        return x + 0.2 * self.rdbs(x)


class RRDBNet(LRGridGenerator):
    """Residual-in-residual dense blocks on the LR grid, then the shared through-plane upsampler."""

    def __init__(self, n_blocks=23, n_feats=64, growth=32, tail_feats=32, channels=3, factors=FACTORS,
                 conditioning=False):
        super().__init__(
            conv3x3(channels, n_feats),
            nn.Sequential(*[RRDB(n_feats, growth) for _ in range(n_blocks)], conv3x3(n_feats, n_feats)),
            ThroughPlaneUpsampler(n_feats, tail_feats, channels, factors, act=nn.LeakyReLU(0.2, inplace=True)),
            factors, n_feats=n_feats, conditioning=conditioning)
