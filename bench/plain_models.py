"""PixelCNN and Gated PixelCNN written the usual plain-PyTorch way: the training benchmark's baseline.

What most PixelCNN code does (bench code, not library code): square kernels multiplied by a fixed
0/1 mask at every call, ``F.conv2d`` with 'same' padding, the gate as ``torch.tanh(a) *
torch.sigmoid(b)`` on ``chunk(2, dim=1)``, ``F.relu``, default (contiguous) layout. Grey images
only (one colour group), which is what the benchmark trains on.

The networks are the same as :class:`pixelfast.models.GatedPixelCNN` and
:class:`pixelfast.models.PixelCNN` of the same options, tap for tap: :func:`plain_copy` builds one
from a pixelfast model with the same weights, and ``tests/test_bench_plain_models.py`` checks that
the two give the same logits and gradients, so both sides of the benchmark do the same job.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.models import GatedPixelCNN, PixelCNN


def _mask(out_channels: int, in_channels: int, height: int, width: int, rows: int, centre_row_cols: int):
    """1 on the first ``rows`` kernel rows and the first ``centre_row_cols`` columns of the next row."""
    mask = torch.zeros(out_channels, in_channels, height, width)
    mask[:, :, :rows] = 1
    if rows < height:
        mask[:, :, rows, :centre_row_cols] = 1
    return mask


class MaskedConv(nn.Conv2d):
    """A square masked convolution, ``F.conv2d(x, weight * mask)``: rows above the centre, and the
    centre row left of the centre (mask A) or up to it (mask B)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        c = kernel_size // 2
        cols = c + (mask_type == "B")
        self.register_buffer("mask", _mask(out_channels, in_channels, kernel_size, kernel_size, c, cols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PlainGatedBlock(nn.Module):
    """One Gated PixelCNN layer: the vertical stack a k x k conv masked to the rows above (first
    layer) or up to the current row (later layers, whose input is already shifted), the horizontal
    stack a 1 x k conv masked to the left part of the row and the centre (mask A/B)."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool) -> None:
        super().__init__()
        k, c, n = kernel_size, kernel_size // 2, channels
        self.first, self.padding = first, c
        self.v_conv = nn.Conv2d(in_channels, 2 * n, k, padding=c)
        self.register_buffer("v_mask", _mask(2 * n, in_channels, k, k, c if first else c + 1, 0))
        self.h_conv = nn.Conv2d(in_channels, 2 * n, (1, k), padding=(0, c))
        self.register_buffer("h_mask", _mask(2 * n, in_channels, 1, k, 0, c + (not first)))
        self.v_to_h = nn.Conv2d(2 * n, 2 * n, 1)
        self.h_res = nn.Conv2d(n, n, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.padding
        v_pre = F.conv2d(v, self.v_conv.weight * self.v_mask, self.v_conv.bias, padding=c)
        h_pre = F.conv2d(h, self.h_conv.weight * self.h_mask, self.h_conv.bias, padding=(0, c)) + self.v_to_h(v_pre)
        h_out = self.h_res(gate(h_pre))
        if not self.first:
            h_out = h_out + h
        return gate(v_pre), h_out


class PlainHead(nn.Module):
    def __init__(self, in_channels: int, hidden_channels: int, levels: int) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(in_channels, hidden_channels, 1)
        self.out = nn.Conv2d(hidden_channels, levels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.relu(x)))).unsqueeze(2)  # [B, levels, 1, H, W]


def scaled(x: torch.Tensor, levels: int, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.dtype) * (2.0 / (levels - 1)) - 1.0


class PlainGatedPixelCNN(nn.Module):
    def __init__(self, levels: int, channels: int, num_layers: int, kernel_size: int, first_kernel_size: int) -> None:
        super().__init__()
        self.levels = levels
        self.blocks = nn.ModuleList(
            [PlainGatedBlock(1, channels, first_kernel_size, first=True)]
            + [PlainGatedBlock(channels, channels, kernel_size, first=False) for _ in range(num_layers - 1)]
        )
        self.head = PlainHead(channels, 2 * channels, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = h = scaled(x, self.levels, self.head.out.weight)
        for block in self.blocks:
            v, h = block(v, h)
        return self.head(h)


class PlainResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, hidden_channels, 1)
        self.conv = MaskedConv(hidden_channels, hidden_channels, 3, "B")
        self.conv_out = nn.Conv2d(hidden_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(F.relu(self.conv(F.relu(self.conv_in(F.relu(x))))))


class PlainPixelCNN(nn.Module):
    def __init__(self, levels: int, hidden_channels: int, num_layers: int) -> None:
        super().__init__()
        self.levels = levels
        self.input_conv = MaskedConv(1, 2 * hidden_channels, 7, "A")
        blocks = [PlainResidualBlock(2 * hidden_channels, hidden_channels) for _ in range(num_layers)]
        self.blocks = nn.Sequential(*blocks)
        self.head = PlainHead(2 * hidden_channels, 2 * hidden_channels, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.input_conv(scaled(x, self.levels, self.head.out.weight))))


def plain_copy(model: GatedPixelCNN | PixelCNN) -> nn.Module:
    """The plain twin of an unconditional grey pixelfast model (default head width), with its
    weights, dtype and device."""
    if model.in_channels != 1 or model.num_classes is not None or model.head_channels != 2 * model.hidden_channels:
        raise ValueError("plain_copy: only unconditional grey models with the default head")
    like = next(model.parameters())
    if isinstance(model, GatedPixelCNN):
        plain = PlainGatedPixelCNN(
            model.levels, model.hidden_channels, model.num_layers, model.kernel_size, model.first_kernel_size
        ).to(like)
        with torch.no_grad():
            for ours, theirs in zip(model.blocks, plain.blocks, strict=True):
                rows = ours.v_conv.weight.shape[2]
                theirs.v_conv.weight.zero_()[:, :, :rows].copy_(ours.v_conv.weight)
                theirs.h_conv.weight.zero_()[:, :, :, : ours.h_conv.weight.shape[3]].copy_(
                    ours.h_conv.weight * ours.h_conv.mask
                )
                for name in ("v_conv", "h_conv", "v_to_h", "h_res"):
                    getattr(theirs, name).bias.copy_(getattr(ours, name).bias)
                theirs.v_to_h.weight.copy_(ours.v_to_h.weight)
                theirs.h_res.weight.copy_(ours.h_res.weight)
    elif isinstance(model, PixelCNN):
        plain = PlainPixelCNN(model.levels, model.hidden_channels, model.num_layers).to(like)
        with torch.no_grad():
            plain.input_conv.load_state_dict(model.input_conv.state_dict(), strict=False)
            for ours, theirs in zip(model.blocks, plain.blocks, strict=True):
                for name in ("conv_in", "conv", "conv_out"):
                    getattr(theirs, name).load_state_dict(getattr(ours, name).state_dict(), strict=False)
    else:
        raise ValueError(f"plain_copy: no plain twin of {type(model).__name__}")
    with torch.no_grad():
        plain.head.load_state_dict(model.head.state_dict(), strict=False)
        for conv in plain.modules():
            if isinstance(conv, MaskedConv):
                conv.weight.mul_(conv.mask)
    return plain
