"""``MaskedConv2d``: the trainable layer over the fused masked-convolution op."""

from __future__ import annotations

import math

import torch
from torch import nn

from pixelfast._checks import check_color_groups, check_divisible, check_mask_type, check_odd
from pixelfast.ops.masked_conv import MAX_KERNEL_SIZE, make_mask, masked_conv2d


class MaskedConv2d(nn.Module):
    """A PixelCNN masked convolution: stride 1, 'same' zero padding, odd square kernel 1..11.

    ``mask_type="A"`` (first layer) stops a colour group from seeing itself at the centre tap,
    ``"B"`` lets it. ``color_groups=3`` splits channels into contiguous R, G, B blocks.
    ``weight`` is a plain dense parameter; the op ignores its masked entries and gives them a zero
    gradient, so any optimizer can train it without re-masking.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: str = "B",
        color_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        owner = "MaskedConv2d"
        check_mask_type(owner, mask_type)
        check_color_groups(owner, color_groups)
        check_odd(owner, "kernel_size", kernel_size, 1, MAX_KERNEL_SIZE)
        check_divisible(owner, color_groups, in_channels=in_channels, out_channels=out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.mask_type = mask_type
        self.color_groups = color_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Scale by the number of taps the mask lets through, not the dense fan-in.
        mask = self.mask()
        fan_in = max(1.0, float(mask.sum()) / self.out_channels)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound).mul_(mask)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def mask(self) -> torch.Tensor:
        """The dense 0/1 mask of this layer, ``[out, in, k, k]``."""
        return make_mask(self.in_channels, self.out_channels, self.kernel_size, self.mask_type, self.color_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_conv2d(x, self.weight, self.bias, self.mask_type, self.color_groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"mask_type={self.mask_type!r}, color_groups={self.color_groups}, bias={self.bias is not None}"
        )
