"""``ResidualBlock``: the PixelCNN residual block of the PixelRNN paper (figure 5)."""

from __future__ import annotations

import torch
from torch import nn

from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.ops.residual_block import residual_block


class ResidualBlock(nn.Module):
    """``x + conv_out(relu(conv(relu(conv_in(relu(x))))))`` on ``channels = 2h`` features.

    * ``conv_in``:  ``MaskedConv2d(channels, hidden_channels, 1, "B")`` (2h -> h)
    * ``conv``:     ``MaskedConv2d(hidden_channels, hidden_channels, kernel_size, "B")`` (h -> h)
    * ``conv_out``: ``MaskedConv2d(hidden_channels, channels, 1, "B")`` (h -> 2h)

    all with the block's ``color_groups``. The paper puts a ReLU before each conv, and none after the
    sum, so the residual stream stays linear. With ``num_classes`` set, ``class_bias``
    (an ``nn.Embedding(num_classes, hidden_channels)``) is added to ``conv``'s output, before its
    ReLU: a per-image constant, so it cannot break causality.

    Position ``(i, j)`` reads, through ``conv``, its ``kernel_size`` mask-B window: rows
    ``i - k//2 .. i - 1`` (all columns ``j - k//2 .. j + k//2``) and row ``i``, columns ``< j``,
    plus the centre for colour groups ``<= g``. The 1x1 convs and the sum read only ``(i, j)``.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        color_groups: int = 1,
        kernel_size: int = 3,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels
        self.color_groups = color_groups
        self.conv_in = MaskedConv2d(channels, hidden_channels, 1, "B", color_groups)
        self.conv = MaskedConv2d(hidden_channels, hidden_channels, kernel_size, "B", color_groups)
        self.conv_out = MaskedConv2d(hidden_channels, channels, 1, "B", color_groups)
        self.class_bias = nn.Embedding(num_classes, hidden_channels) if num_classes else None
        if self.class_bias is not None:
            nn.init.zeros_(self.class_bias.weight)  # start as the unconditional block

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        image_bias = None
        if self.class_bias is not None:
            if labels is None:
                raise ValueError("ResidualBlock: this block is class-conditional; pass labels")
            image_bias = self.class_bias(labels)
        # One fused op (pixelfast.ops.residual_block): the three convolutions, ReLUs, class bias
        # and sum above as one autograd node.
        return residual_block(
            x,
            self.conv_in.weight,
            self.conv_in.bias,
            self.conv.weight,
            self.conv.bias,
            self.conv_out.weight,
            self.conv_out.bias,
            image_bias,
            self.color_groups,
        )
