"""Two models that are not in the package, built from pixelfast's layers and the usual torch ops, as a
user would write them: the cached engine runs them through a trace of their forward
(pixelfast/sampling/plan_fx.py). Shared by test_user_models.py and the CUDA emulation tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.models.base import PixelModel
from pixelfast.models.pixelcnn import PixelCNNConfig
from pixelfast.nn import GatedBlock, MaskedConv2d, OutputHead, ResidualBlock


class EluHeadPixelCNN(PixelModel):
    """A PixelCNN (a PixelModel: ``forward`` calls ``prepare``) with its own head: two 1x1 masked
    convs with elu between, the logits laid out by hand; a multiplicative skip in between and
    dropout (a module and the functional form)."""

    Config = PixelCNNConfig

    def __init__(self, *args, dropout: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        h, g = self.hidden_channels, self.color_groups
        self.input_conv = MaskedConv2d(self.in_channels, 2 * h, 5, "A", g)
        self.blocks = nn.ModuleList(
            ResidualBlock(2 * h, h, g, kernel_size=3, num_classes=self.num_classes) for _ in range(self.num_layers)
        )
        self.gate_conv = MaskedConv2d(2 * h, 2 * h, 1, "B", g)
        self.dropout = nn.Dropout(dropout)
        self.p = dropout
        self.hidden = MaskedConv2d(2 * h, self.head_channels or 2 * h, 1, "B", g)
        self.out = MaskedConv2d(self.head_channels or 2 * h, self.in_channels * self.levels, 1, "B", g)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x, labels = self.prepare(x, labels)
        features = self.dropout(self.input_conv(x))
        for block in self.blocks:
            features = block(features, labels)
        features = features * F.elu(self.gate_conv(features)) + features  # mul, then add
        features = F.dropout(features, self.p, self.training)
        y = self.out(F.elu(self.hidden(F.elu(features))))
        b, _, height, width = y.shape
        return y.view(b, self.in_channels, self.levels, height, width).permute(0, 2, 1, 3, 4)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=1))


class ConcatEluGated(nn.Module):
    """A Gated PixelCNN that is a plain nn.Module (it scales its input itself) with concat_elu between
    its blocks, on both stacks (each followed by a 1x1 masked conv back to ``n`` channels), its own
    class embedding added to the horizontal stack, and the first block's output concatenated to the
    last one's before an OutputHead. ``vertical_concat_elu_only``: concat_elu on the vertical stack
    alone (which an RGB model may have: the vertical stack has no colour order)."""

    def __init__(
        self,
        in_channels: int = 1,
        levels: int = 6,
        n: int = 6,
        num_layers: int = 3,
        num_classes: int | None = None,
        image_size=(5, 6),
        vertical_concat_elu_only: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.levels, self.num_classes, self.image_size = in_channels, levels, num_classes, image_size
        self.vertical_only = vertical_concat_elu_only
        g = 3 if in_channels == 3 else 1
        self.blocks = nn.ModuleList(
            [GatedBlock(in_channels, n, 5, g, first=True, num_classes=num_classes)]
            + [GatedBlock(n, n, 3, g, num_classes=num_classes) for _ in range(num_layers - 1)]
        )
        self.v_mix = nn.ModuleList(MaskedConv2d(2 * n, n, 1, "B") for _ in range(num_layers - 1))
        self.h_mix = nn.ModuleList(MaskedConv2d(2 * n, n, 1, "B", g) for _ in range(num_layers - 1))
        self.embedding = nn.Embedding(num_classes, n) if num_classes else None
        self.dropout = nn.Dropout(0.3)
        head_in = n if vertical_concat_elu_only else 2 * n
        self.head = OutputHead(head_in, 2 * n, in_channels, levels)

    def forward(self, x, labels=None):
        x = x.to(next(self.parameters()).dtype) / (self.levels - 1) * 2 - 1
        v, h = self.blocks[0](x, x, labels)
        first = h
        for block, v_mix, h_mix in zip(self.blocks[1:], self.v_mix, self.h_mix):
            v = v_mix(concat_elu(v))
            if not self.vertical_only:
                h = h_mix(concat_elu(self.dropout(h)))
            v, h = block(v, h, labels)
        if self.embedding is not None:
            h = h + self.embedding(labels)[:, :, None, None]
        if not self.vertical_only:
            h = torch.cat([h, first], dim=1)
        return self.head(h)
