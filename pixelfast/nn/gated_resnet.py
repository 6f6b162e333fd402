"""``GatedResNet``: PixelCNN++'s gated residual block (Salimans et al. 2017), on one shifted stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.nn.shifted_conv import DownRightShiftedConv2d, DownShiftedConv2d

SHIFTS = ("down", "down_right")


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, -x])`` along channels: ``C -> 2C`` maps, an ELU that keeps both signs."""
    return F.elu(torch.cat([x, -x], dim=1))


class GatedResNet(nn.Module):
    """``x + a * sigmoid(b)`` with ``[a, b] = conv_out(dropout(concat_elu(c))) (+ class bias)`` and
    ``c = conv_in(concat_elu(x)) (+ skip(concat_elu(aux)))``.

    * ``conv_in``: ``2n -> n``, ``conv_out``: ``2n -> 2n``, both shifted as the stream is: ``"down"``
      (:class:`~pixelfast.nn.shifted_conv.DownShiftedConv2d`, 2x3, the ``u`` stream) or
      ``"down_right"`` (:class:`~pixelfast.nn.shifted_conv.DownRightShiftedConv2d`, 2x2, ``ul``)
    * ``skip`` (with ``aux_channels``): a 1x1 conv ``2 aux_channels -> n`` of the auxiliary input, the
      ``u`` stream for a ``ul`` block, the down pass's skip connection from the up pass (and ``u``)
    * ``dropout``: on ``concat_elu(c)``, in training only
    * ``class_bias`` (with ``num_classes``): a learned vector of ``2n`` per class, added to
      ``conv_out``'s output before the gate: a per-image constant, so it cannot break causality

    ``n = channels``. The block reads, at ``(i, j)``, its stream's past through the two shifted convs
    and ``aux`` at ``(i, j)`` alone; ``aux`` must be of a past no larger than the stream's.
    ``conv_out`` starts scaled by 0.1, so each block starts close to the identity (the paper's
    ``init_scale=0.1``).
    """

    def __init__(
        self,
        channels: int,
        shift: str,
        aux_channels: int = 0,
        dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if shift not in SHIFTS:
            raise ValueError(f"GatedResNet: shift must be one of {SHIFTS}, got {shift!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GatedResNet: dropout must be in [0, 1), got {dropout!r}")
        self.channels = channels
        self.shift = shift
        self.aux_channels = aux_channels
        conv = DownShiftedConv2d if shift == "down" else DownRightShiftedConv2d
        self.conv_in = conv(2 * channels, channels)
        self.skip = nn.Conv2d(2 * aux_channels, channels, 1) if aux_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * channels, 2 * channels)
        with torch.no_grad():
            self.conv_out.weight.mul_(0.1)
            self.conv_out.bias.mul_(0.1)
        self.class_bias = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        if self.class_bias is not None:
            nn.init.zeros_(self.class_bias.weight)  # start as the unconditional block

    def forward(
        self, x: torch.Tensor, aux: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        c = self.conv_in(concat_elu(x))
        if self.skip is not None:
            if aux is None:
                raise ValueError("GatedResNet: this block reads an auxiliary input; pass aux")
            c = c + self.skip(concat_elu(aux))
        y = self.conv_out(self.dropout(concat_elu(c)))
        if self.class_bias is not None:
            if labels is None:
                raise ValueError("GatedResNet: this block is class-conditional; pass labels")
            y = y + self.class_bias(labels)[:, :, None, None]
        a, b = y.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

    def extra_repr(self) -> str:
        extra = f", aux_channels={self.aux_channels}" if self.aux_channels else ""
        return f"{self.channels}, shift={self.shift!r}{extra}"
