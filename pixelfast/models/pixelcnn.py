"""``PixelCNN``: the residual PixelCNN of "Pixel Recurrent Neural Networks" (van den Oord et al. 2016)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pixelfast.models.base import PixelModel
from pixelfast.models.config import ModelConfig
from pixelfast.nn.head import OutputHead
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.nn.residual import ResidualBlock


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig(ModelConfig):
    """:class:`PixelCNN`'s options, its constructor's arguments in order."""

    in_channels: int = 1
    levels: int = 256
    hidden_channels: int = 48
    num_layers: int = 15
    head_channels: int | None = None  # None: 2 * hidden_channels
    num_classes: int | None = None  # None: unconditional
    image_size: tuple[int, int] | None = None  # the size sampled by default

    def __post_init__(self) -> None:
        self._check_data_options()
        self._check_widths(min_layers=0)


class PixelCNN(PixelModel):
    """7x7 mask-A conv -> ``num_layers`` residual blocks -> output head; logits ``[B, levels, C, H, W]``.

    * ``input_conv``: ``MaskedConv2d(in_channels, 2h, 7, "A")`` on the scaled image
    * ``blocks[l]``:  ``ResidualBlock(2h, h, kernel_size=3)`` (1x1 -> 3x3 mask B -> 1x1, ReLU before
      each conv, added to its input)
    * ``head``:       ``OutputHead(2h, head_channels, in_channels, levels)`` (ReLU + 1x1 mask B, twice)

    ``h = hidden_channels``; every conv uses ``color_groups = 3`` for RGB (so ``h`` and
    ``head_channels`` must be divisible by 3), else 1. ``head_channels=None`` means ``2h``.
    With ``num_classes`` set, each residual block adds a learned per-class bias (see
    :class:`~pixelfast.nn.ResidualBlock`) and ``forward`` needs ``labels``.

    Like every PixelCNN built from masked convs, it has a blind spot: some pixels above and to the
    right of the current one are never seen, however deep it is. :class:`GatedPixelCNN` has none.
    """

    name = "PixelCNN"
    Config = PixelCNNConfig

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`PixelCNNConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked PixelCNNConfig

        h, g = self.hidden_channels, self.color_groups
        self.input_conv = MaskedConv2d(self.in_channels, 2 * h, 7, "A", g)
        self.blocks = nn.ModuleList(
            ResidualBlock(2 * h, h, g, kernel_size=3, num_classes=self.num_classes) for _ in range(self.num_layers)
        )
        self.head = OutputHead(2 * h, self.head_channels, self.in_channels, self.levels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: levels ``[B, C, H, W]`` (integers, or floats holding whole numbers); ``labels``: ``[B]``."""
        x, labels = self.prepare(x, labels)
        features = self.input_conv(x)
        for block in self.blocks:
            features = block(features, labels)
        return self.head(features)
