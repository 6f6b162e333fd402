"""Shifted convolutions (PixelCNN++, Salimans et al. 2017): causal by padding, not by masks.

Two streams read the past without a blind spot. The *down-shifted* stream ``u`` sees the rows above
the current pixel; the *down-right-shifted* stream ``ul`` sees those and the pixels to its left.
Every conv here keeps its input's kind of past:

* :class:`DownShiftedConv2d`, kernel ``kh x kw`` (``kw`` odd), is padded ``kh - 1`` rows on top and
  ``kw // 2`` columns on each side: output ``(i, j)`` reads input rows ``i - kh + 1 .. i``, columns
  ``j - kw // 2 .. j + kw // 2`` (this row and the ones above, centred);
* :class:`DownRightShiftedConv2d`, kernel ``kh x kw``, is padded ``kh - 1`` rows on top and
  ``kw - 1`` columns on the left: rows ``i - kh + 1 .. i``, columns ``j - kw + 1 .. j``.

With stride ``s`` output ``(i, j)`` reads the same window around input ``(s i, s j)`` (an ``H x W``
map becomes ``ceil(H / s) x ceil(W / s)``). The transposed convs undo a stride: input ``(i, j)``
reaches output rows ``s i .. s i + kh - 1``, and columns ``s j - kw // 2 .. s j + kw // 2``
(down-shifted) or ``s j .. s j + kw - 1`` (down-right-shifted): output row ``p`` reads input rows
``<= p / s`` only, and in the down-right-shifted one output column ``q`` input columns ``<= q / s``;
the extra rows and columns at the bottom and right are cut off.

A map computed from the image by these layers alone still reads the current pixel, so the first
layer's output is shifted once: :func:`down_shift` (row ``i`` takes row ``i - 1``) or
:func:`right_shift` (column ``j`` takes column ``j - 1``), zeros coming in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_int


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` moved one row down: row ``i`` holds row ``i - 1``, row 0 zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2]]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` moved one column right: column ``j`` holds column ``j - 1``, column 0 zeros."""
    return F.pad(x, (1, 0))[:, :, :, : x.shape[3]]


def _kernel(owner: str, kernel_size, odd_width: bool) -> tuple[int, int]:
    size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(size) != 2:
        raise ValueError(f"{owner}: kernel_size must be an int or (kh, kw), got {kernel_size!r}")
    kh, kw = (check_int(owner, "kernel_size", k, 1) for k in size)
    if odd_width and kw % 2 == 0:
        raise ValueError(f"{owner}: the kernel's width must be odd (centred on the column), got {kw}")
    return kh, kw


class DownShiftedConv2d(nn.Conv2d):
    """A conv reading this row and the rows above, centred on the column (see the module's doc).

    ``shift_down=True`` moves the output one row down, so it reads the rows above only: the first
    layer of the ``u`` stream, on the image itself.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size=(2, 3), stride: int = 1, shift_down: bool = False
    ) -> None:
        kh, kw = _kernel("DownShiftedConv2d", kernel_size, odd_width=True)
        stride = check_int("DownShiftedConv2d", "stride", stride, 1)
        super().__init__(in_channels, out_channels, (kh, kw), stride=stride)
        self.shift_down = shift_down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = super().forward(F.pad(x, (kw // 2, kw // 2, kh - 1, 0)))
        return down_shift(y) if self.shift_down else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", shift_down=True" if self.shift_down else "")


class DownRightShiftedConv2d(nn.Conv2d):
    """A conv reading this row and the rows above, this column and the columns to its left.

    ``shift_right=True`` moves the output one column right, so on row ``i`` it reads columns
    ``< j`` only: with a ``kh x 1`` kernel, the first layer of the ``ul`` stream on the image.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size=(2, 2), stride: int = 1, shift_right: bool = False
    ) -> None:
        kh, kw = _kernel("DownRightShiftedConv2d", kernel_size, odd_width=False)
        stride = check_int("DownRightShiftedConv2d", "stride", stride, 1)
        super().__init__(in_channels, out_channels, (kh, kw), stride=stride)
        self.shift_right = shift_right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = super().forward(F.pad(x, (kw - 1, 0, kh - 1, 0)))
        return right_shift(y) if self.shift_right else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", shift_right=True" if self.shift_right else "")


def _crop(y: torch.Tensor, size, owner: str) -> torch.Tensor:
    """The top-left ``size = (H, W)`` of ``y`` (None: all of it); cutting the bottom and right keeps
    every kept output's past as it was."""
    if size is None:
        return y
    height, width = size
    if height > y.shape[2] or width > y.shape[3]:
        raise ValueError(f"{owner}: cannot crop a {y.shape[2]}x{y.shape[3]} output to {height}x{width}")
    return y[:, :, :height, :width]


class DownShiftedConvTranspose2d(nn.ConvTranspose2d):
    """The down-shifted stream's upsampling: ``h x w -> s h x s w`` (``s = stride``), or cropped to
    ``size`` (the skip connection's size, for maps whose size was odd before the stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(2, 3), stride: int = 2) -> None:
        kh, kw = _kernel("DownShiftedConvTranspose2d", kernel_size, odd_width=True)
        stride = check_int("DownShiftedConvTranspose2d", "stride", stride, 1)
        super().__init__(in_channels, out_channels, (kh, kw), stride=stride, output_padding=stride - 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = super().forward(x)
        y = y[:, :, : y.shape[2] - (kh - 1), kw // 2 : y.shape[3] - kw // 2]
        return _crop(y, size, "DownShiftedConvTranspose2d")


class DownRightShiftedConvTranspose2d(nn.ConvTranspose2d):
    """The down-right-shifted stream's upsampling: ``h x w -> s h x s w``, or cropped to ``size``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(2, 2), stride: int = 2) -> None:
        kh, kw = _kernel("DownRightShiftedConvTranspose2d", kernel_size, odd_width=False)
        stride = check_int("DownRightShiftedConvTranspose2d", "stride", stride, 1)
        super().__init__(in_channels, out_channels, (kh, kw), stride=stride, output_padding=stride - 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = super().forward(x)
        y = y[:, :, : y.shape[2] - (kh - 1), : y.shape[3] - (kw - 1)]
        return _crop(y, size, "DownRightShiftedConvTranspose2d")
