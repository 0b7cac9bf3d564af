"""A small convnet whose block outputs are known: the paper's grid rules are checked on it."""

from __future__ import annotations

import torch
from torch import nn

from splitting.registry import BlockList

NAME = "gridnet"


class GridNet(nn.Module):
    """Outputs per sample (input 3x32x32 = 3072 elements): 16384, 2048, 4096, 128, 256, 10."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())  # 16x32x32
        self.down = nn.Sequential(nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU())  # 8x16x16
        self.grow = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())  # 16x16x16
        self.squeeze = nn.Sequential(nn.Conv2d(16, 2, 3, stride=2, padding=1), nn.ReLU())  # 2x8x8
        self.expand = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU())  # 4x8x8
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.expand(self.squeeze(self.grow(self.down(self.wide(x))))))
        return out


def grid_blocks(model: nn.Module) -> BlockList:
    net: GridNet = model  # type: ignore[assignment]
    names = ("wide", "down", "grow", "squeeze", "expand", "head")
    return [(name, getattr(net, name)) for name in names]
