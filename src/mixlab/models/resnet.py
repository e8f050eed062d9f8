"""CIFAR-style residual networks: PreActResNet-18, ResNet-18 and WRN-28-10, all staged.

PreActResNet-18 as in Manifold Mixup / PuzzleMix: 3x3 stem 64 (stride 1; 2 for 64 px), no max-pool,
pre-activation blocks [2, 2, 2, 2], widths 64/128/256/512, final BN-ReLU, global average pool, linear head.
``stem_bn=True`` adds BN+ReLU after the stem (the AlignMixup repository's variant).
Stages: ``[stem + group1, group2, group3, group4]``, so Manifold Mixup's {0, 1, 2} means input, after group 1,
after group 2; the last stage's output is the last feature map (512 x 4 x 4 on 32 px inputs).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .staged import StagedNet


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def make_group(block, c_in: int, c_out: int, n: int, stride: int, **kw) -> nn.Sequential:
    layers = [block(c_in, c_out, stride, **kw)] + [block(c_out, c_out, 1, **kw) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class PreActResNet18(StagedNet):
    parallel_cpu = True  # enough work per batch for every CPU thread (mixlab.config.default_threads)

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, stem_stride: int = 1,
                 stem_bn: bool = False, image_size: int | None = None):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        stem = [nn.Conv2d(in_channels, w[0], 3, stem_stride, 1, bias=False)]
        if stem_bn:
            stem += [nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True)]
        self.stages = nn.ModuleList([
            nn.Sequential(*stem, make_group(PreActBlock, w[0], w[0], 2, 1)),
            make_group(PreActBlock, w[0], w[1], 2, 2),
            make_group(PreActBlock, w[1], w[2], 2, 2),
            nn.Sequential(make_group(PreActBlock, w[2], w[3], 2, 2), nn.BatchNorm2d(w[3]), nn.ReLU(inplace=True)),
        ])
        self.head = nn.Linear(w[3], num_classes)


class ResNet18(StagedNet):
    """ResNet-18, CIFAR variant (3x3 stem with BN-ReLU, no max-pool), post-activation basic blocks."""

    parallel_cpu = True  # enough work per batch for every CPU thread (mixlab.config.default_threads)

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, stem_stride: int = 1,
                 image_size: int | None = None):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, w[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(w[0]),
                          nn.ReLU(inplace=True), make_group(BasicBlock, w[0], w[0], 2, 1)),
            make_group(BasicBlock, w[0], w[1], 2, 2),
            make_group(BasicBlock, w[1], w[2], 2, 2),
            make_group(BasicBlock, w[2], w[3], 2, 2),
        ])
        self.head = nn.Linear(w[3], num_classes)


class WideResNet(StagedNet):
    """WRN-d-k (Zagoruyko and Komodakis 2016), pre-activation wide blocks; WRN-28-10 by default."""

    parallel_cpu = True  # enough work per batch for every CPU thread (mixlab.config.default_threads)

    def __init__(self, num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen: int = 10,
                 dropout: float = 0.0, image_size: int | None = None):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False),
                          make_group(PreActBlock, w[0], w[1], n, 1, dropout=dropout)),
            make_group(PreActBlock, w[1], w[2], n, 2, dropout=dropout),
            nn.Sequential(make_group(PreActBlock, w[2], w[3], n, 2, dropout=dropout), nn.BatchNorm2d(w[3]),
                          nn.ReLU(inplace=True)),
        ])
        self.head = nn.Linear(w[3], num_classes)
