"""The 11-layer CNN of Between-Class learning (Tokozume et al. 2018), the AutoMix paper's MNIST backbone.

2 conv 64, pool, 2 conv 128, pool, 4 conv 256, pool, 3 FC (1024, 1024, classes). Convs are 3x3 + BN + ReLU;
dropout 0.5 before each hidden FC as in the BC code. Works for 28x28 and 32x32 inputs with any channel count.
``width`` scales every channel count (1.0 = the paper; smaller for the CPU quick protocols).
"""
from __future__ import annotations

from torch import nn

from .staged import StagedNet


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class CNN11(StagedNet):
    gap_linear_head = False
    mix_stages = (0, 1, 2)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: float = 1.0,
                 fc_dim: int = 1024, dropout: float = 0.5):
        super().__init__()
        c1, c2, c3 = (max(4, int(round(c * width))) for c in (64, 128, 256))
        f = max(16, int(round(fc_dim * width)))
        self.stages = nn.ModuleList([
            nn.Sequential(*conv_bn_relu(in_channels, c1), *conv_bn_relu(c1, c1), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(c1, c2), *conv_bn_relu(c2, c2), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(c2, c3), *conv_bn_relu(c3, c3), *conv_bn_relu(c3, c3),
                          *conv_bn_relu(c3, c3), nn.MaxPool2d(2)),
        ])
        side = image_size // 8
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * side * side, f), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(f, f), nn.ReLU(inplace=True))
        self.head = nn.Linear(f, num_classes)
        self.image_size = image_size

    def pool(self, fmap):
        if fmap.shape[-1] != self.image_size // 8:
            raise ValueError(f"cnn11 was built for {self.image_size}px inputs (feature map "
                             f"{self.image_size // 8}x{self.image_size // 8}), got a {fmap.shape[-1]}px map; "
                             f"pass image_size=")
        return self.fc(fmap)
