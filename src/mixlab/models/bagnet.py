"""A small staged network for bags of instances given as ``(B, 1, n_instances, n_features)`` (MIML: 9 x 15).

Stages apply the same MLP to every instance (``1 x n_features`` convolutions, i.e. per-instance linear layers
with BN and ReLU), keeping the feature map ``(B, width, n_instances, 1)``; ``pool`` is the mean over instances
(global average pooling) and ``head`` one linear layer, so mixing at any stage and exact CAMs work as for images.
Our choice: the AutoMix paper trains a ResNet-18 on MIML images, which are not available; this is a
permutation-invariant stand-in for the 9 x 15 feature bags.
"""
from __future__ import annotations

from torch import nn

from .staged import StagedNet


class BagNet(StagedNet):
    gap_linear_head = True
    mix_stages = (0, 1, 2)

    def __init__(self, num_classes: int = 5, in_channels: int = 1, image_size: int = 15, width: int = 128,
                 depth: int = 3, dropout: float = 0.0):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(in_channels, width, (1, image_size), bias=False), nn.BatchNorm2d(width),
                                nn.ReLU(inplace=True))]
        for _ in range(depth - 1):
            layers.append(nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                                        nn.ReLU(inplace=True), nn.Dropout(dropout) if dropout else nn.Identity()))
        self.stages = nn.ModuleList(layers)
        self.head = nn.Linear(width, num_classes)
