"""``OutputHead``: the PixelRNN output layers (ReLU + 1x1 mask-B conv, twice) and the logits layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_color_groups, check_int
from pixelfast.nn.masked_conv import MaskedConv2d


class OutputHead(nn.Module):
    """Turns per-position features into logits ``[B, levels, C, H, W]``.

    ``relu -> hidden = MaskedConv2d(in_channels, hidden_channels, 1, "B")``
    ``-> relu -> out = MaskedConv2d(hidden_channels, image_channels * levels, 1, "B")``, both with
    ``color_groups = 3`` for RGB images (else 1). Being 1x1, the head reads only its own position,
    and with mask B colour group ``g`` of the output reads colour groups ``<= g`` of its input.
    The last conv's channels are colour-contiguous blocks of ``levels`` (R, then G, then B), so they
    reshape to ``[B, C, levels, H, W]`` and are permuted to ``[B, levels, C, H, W]``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, image_channels: int, levels: int) -> None:
        super().__init__()
        check_color_groups("OutputHead", image_channels, "image_channels")  # one colour group per channel
        check_int("OutputHead", "levels", levels, 2)
        self.image_channels = image_channels
        self.levels = levels
        self.color_groups = 3 if image_channels == 3 else 1
        self.hidden = MaskedConv2d(in_channels, hidden_channels, 1, "B", self.color_groups)
        self.out = MaskedConv2d(hidden_channels, image_channels * levels, 1, "B", self.color_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(F.relu(self.hidden(F.relu(x))))
        b, _, h, w = y.shape
        return y.view(b, self.image_channels, self.levels, h, w).permute(0, 2, 1, 3, 4)
