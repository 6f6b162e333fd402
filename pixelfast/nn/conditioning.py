"""``ConditioningNetwork``: super-resolution's ResNet on the low-resolution image, upsampled by
stride-2 transposed convolutions ("Pixel Recursive Super Resolution", Dahl et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvResidualBlock(nn.Module):
    """``x + conv(relu(conv(relu(x))))``, both convs 3x3 with "same" padding (unmasked: the
    conditioning network sees the whole low-resolution image)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(F.relu(self.conv_in(F.relu(x))))


class ConditioningNetwork(nn.Module):
    """Low-resolution image (scaled to [-1, 1]) -> ``out_channels`` maps ``scale`` times larger.

    * ``input_conv``: 3x3 conv ``in_channels -> channels``
    * ``blocks``: ``num_blocks`` :class:`ConvResidualBlock` at the low resolution
    * ``upsample[s]``, ``s = 1 .. log2(scale)``: ReLU, ``ConvTranspose2d(channels, channels, 3,
      stride=2, padding=1, output_padding=1)`` (output exactly twice the input: the "same" size,
      ``(n - 1) * 2 - 2 + 3 + 1 = 2n``), then a :class:`ConvResidualBlock` at the new size
    * ``output_conv``: ReLU, 1x1 conv ``channels -> out_channels``

    ``scale`` must be a power of two (one transposed convolution per doubling).
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int, channels: int, num_blocks: int) -> None:
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"ConditioningNetwork: scale must be a power of two (1, 2, 4, 8, ...), got {scale}")
        self.scale = scale
        self.input_conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ConvResidualBlock(channels) for _ in range(num_blocks))
        self.upsample = nn.ModuleList(
            nn.ModuleDict(
                {
                    "conv": nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1),
                    "block": ConvResidualBlock(channels),
                }
            )
            for _ in range(scale.bit_length() - 1)
        )
        self.output_conv = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.input_conv(x)
        for block in self.blocks:
            features = block(features)
        for stage in self.upsample:
            features = stage["block"](stage["conv"](F.relu(features)))
        return self.output_conv(F.relu(features))
