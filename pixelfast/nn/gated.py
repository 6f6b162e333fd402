"""Gated PixelCNN layers (van den Oord et al. 2016): the two causal convs, the gate, and one block.

Notation: ``k = kernel_size`` (odd, >= 3), ``p = k // 2``; output position ``(i, j)`` = (row, column).
Inputs outside the image read as zero. Both convs are ``F.conv2d`` on a *cropped* kernel over a padded
input, so no masked-out half of a square kernel is ever stored or computed.

The vertical stack only ever sees rows strictly above the current one, so it needs no colour mask and
can feed the horizontal stack at the same row. The horizontal stack sees the current row up to and
including the current pixel, where colour groups (contiguous R, G, B channel blocks, as in
:class:`~pixelfast.nn.MaskedConv2d`) keep R -> G -> B order. Together they cover everything above and
to the left, so there is no blind spot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_color_groups, check_divisible, check_mask_type, check_odd
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.ops.gate import gated_activation
from pixelfast.ops.masked_conv import make_mask


def _init_(weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None) -> None:
    # Same scheme as MaskedConv2d: uniform(+-1/sqrt(fan_in)), fan_in counting only the usable taps.
    used = weight[0].numel() if mask is None else float(mask.sum()) / weight.shape[0]
    bound = 1.0 / math.sqrt(max(1.0, used))
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if mask is not None:
            weight.mul_(mask)
        if bias is not None:
            bias.uniform_(-bound, bound)


class VerticalConv2d(nn.Module):
    """The vertical stack's conv: its output at row ``i`` depends only on rows above ``i``.

    Output ``(i, j)`` reads input columns ``j - p .. j + p`` of rows

    * ``i - p .. i - 1`` when ``include_current_row=False`` (weight ``[out, in, p, k]``; the first
      layer, which reads the image itself), or
    * ``i - p .. i`` when ``include_current_row=True`` (weight ``[out, in, p + 1, k]``; later layers,
      whose input, the previous vertical features, at row ``i`` already depends only on rows < i).

    Weight row ``r`` multiplies input row ``i - p + r``, weight column ``s`` input column ``j - p + s``.
    No mask: every tap is used.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        include_current_row: bool,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_odd("VerticalConv2d", "kernel_size", kernel_size, 3)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.include_current_row = include_current_row
        height = kernel_size // 2 + (1 if include_current_row else 0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, height, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_(self.weight, self.bias, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size // 2
        if not self.include_current_row:
            x = x[:, :, :-1]  # row i's window ends at row i - 1: the last row is never read
        # Pad p rows on top (rows above the image) and p columns each side; no padding below.
        return F.conv2d(F.pad(x, (p, p, p, 0)), self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"include_current_row={self.include_current_row}, bias={self.bias is not None}"
        )


class HorizontalConv2d(nn.Module):
    """The horizontal stack's conv: a ``1 x (p + 1)`` conv over the current row, left part and centre.

    Output ``(i, j)`` reads input row ``i``, columns ``j - p .. j`` (weight ``[out, in, 1, p + 1]``,
    weight column ``s`` multiplies input column ``j - p + s``; column ``p`` is the centre).
    Columns ``< j`` use every channel. The centre column is colour masked with MaskedConv2d's rule:
    output colour group ``g`` reads input groups ``< g`` (mask "A", first layer: a colour never sees
    itself) or ``<= g`` (mask "B"), groups being contiguous channel blocks; with ``color_groups=1``
    mask A drops the centre entirely and mask B keeps it. Masked weight entries are ignored (the
    weight is multiplied by the fixed ``mask`` buffer, ``[out, in, 1, p + 1]``), so they get zero
    gradient.
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
        owner = "HorizontalConv2d"
        check_odd(owner, "kernel_size", kernel_size, 3)
        check_mask_type(owner, mask_type)
        check_color_groups(owner, color_groups)
        check_divisible(owner, color_groups, in_channels=in_channels, out_channels=out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.mask_type = mask_type
        self.color_groups = color_groups
        width = kernel_size // 2 + 1
        mask = torch.ones(out_channels, in_channels, 1, width)
        mask[:, :, 0, -1] = make_mask(in_channels, out_channels, 1, mask_type, color_groups)[:, :, 0, 0]
        self.register_buffer("mask", mask, persistent=False)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, width))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_(self.weight, self.bias, mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size // 2
        return F.conv2d(F.pad(x, (p, 0, 0, 0)), self.weight * self.mask, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"mask_type={self.mask_type!r}, color_groups={self.color_groups}, bias={self.bias is not None}"
        )


class GatedActivation(nn.Module):
    """``tanh(a) * sigmoid(b)``, halving the channels, colour group by colour group.

    Input channels ``2n`` are ``color_groups`` contiguous blocks of ``2m`` (``m = n / groups``), and
    each block is ``[a (m channels), b (m channels)]``. Output channel ``g*m + t`` is
    ``tanh(x[g*2m + t]) * sigmoid(x[g*2m + m + t])``: group ``g`` of the output reads only group
    ``g`` of the input, so colour order survives the gate. Pointwise: reads only its own position.
    """

    def __init__(self, color_groups: int = 1) -> None:
        super().__init__()
        check_color_groups("GatedActivation", color_groups)
        self.color_groups = color_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One pass each way (pixelfast.ops.gate); the op checks the channels against the groups.
        return gated_activation(x, self.color_groups)

    def extra_repr(self) -> str:
        return f"color_groups={self.color_groups}"


class GatedBlock(nn.Module):
    """One layer of both stacks (figure 2 of the Conditional PixelCNN paper).

    With ``n = channels`` and ``first`` meaning this block reads the image (``in_channels = C``)::

        v_pre  = v_conv(v)                          # VerticalConv2d(in, 2n, k, include_current_row=not first)
        v_pre += v_class(labels)[:, :, None, None]  # nn.Embedding(num_classes, 2n), if num_classes
        v_pre += v_row[i] + v_col[j] at (i, j)      # learned [H, 2n] and [W, 2n], if size = (H, W)
        h_pre  = h_conv(h) + v_to_h(v_pre)          # HorizontalConv2d(in, 2n, k, "A" if first else "B")
                                                    # + MaskedConv2d(2n, 2n, 1, "B", color_groups=1), a full 1x1
        h_pre += h_class(labels)[:, :, None, None]  # nn.Embedding(num_classes, 2n), if num_classes
        h_pre += h_row[i] + h_col[j]                # learned [H, 2n] and [W, 2n], if size = (H, W)
        (v_pre and h_pre, with class_position_bias: also + *_class_row[label, i] + *_class_col[label, j])
        v_out  = v_gate(v_pre)                      # GatedActivation(color_groups)
        h_out  = h_res(h_gate(h_pre))               # MaskedConv2d(n, n, 1, "B", color_groups)
        h_out += h                                  # residual, except in the first block

    The vertical class bias goes in before the link, so it reaches the horizontal stack (and trains)
    even in the last block, whose vertical output nothing reads. ``v_to_h`` needs no colour mask
    because ``v_pre`` at row ``i`` depends only on rows above ``i``; every other conv on the
    horizontal path is colour masked. ``v_gate`` uses the same channel layout as ``h_gate``
    (harmless: the vertical stack has no colour constraint). With ``size = (H, W)`` set, both stacks
    add a learned bias per image row and one per column (zero at the start, so a block gaining them
    computes what it did), after the class biases (the vertical one before the link); the input
    must then be ``H x W``. ``class_position_bias`` (which needs both) adds a further such pair per
    label (``[num_classes, H, 2n]`` and ``[num_classes, W, 2n]``, zero at the start).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int,
        color_groups: int = 1,
        first: bool = False,
        num_classes: int | None = None,
        size: tuple[int, int] | None = None,
        class_position_bias: bool = False,
    ) -> None:
        super().__init__()
        if class_position_bias and not (num_classes and size is not None):
            raise ValueError("GatedBlock: class_position_bias needs num_classes and size")
        if not first and in_channels != channels:
            raise ValueError(
                f"GatedBlock: a non-first block needs in_channels == channels for its residual, "
                f"got {in_channels} and {channels}"
            )
        self.in_channels = in_channels
        self.channels = channels
        self.kernel_size = kernel_size
        self.color_groups = color_groups
        self.first = first
        self.v_conv = VerticalConv2d(in_channels, 2 * channels, kernel_size, include_current_row=not first)
        self.h_conv = HorizontalConv2d(in_channels, 2 * channels, kernel_size, "A" if first else "B", color_groups)
        self.v_to_h = MaskedConv2d(2 * channels, 2 * channels, 1, "B", color_groups=1)
        self.v_gate = GatedActivation(color_groups)
        self.h_gate = GatedActivation(color_groups)
        self.h_res = MaskedConv2d(channels, channels, 1, "B", color_groups)
        if num_classes:
            self.v_class = nn.Embedding(num_classes, 2 * channels)
            self.h_class = nn.Embedding(num_classes, 2 * channels)
            nn.init.zeros_(self.v_class.weight)  # start as the unconditional block
            nn.init.zeros_(self.h_class.weight)
        else:
            self.v_class = self.h_class = None
        if size is not None:
            self.v_row, self.h_row = (nn.Parameter(torch.zeros(size[0], 2 * channels)) for _ in range(2))
            self.v_col, self.h_col = (nn.Parameter(torch.zeros(size[1], 2 * channels)) for _ in range(2))
        else:
            self.v_row = self.h_row = self.v_col = self.h_col = None
        if class_position_bias:
            self.v_class_row, self.h_class_row = (
                nn.Parameter(torch.zeros(num_classes, size[0], 2 * channels)) for _ in range(2)
            )
            self.v_class_col, self.h_class_col = (
                nn.Parameter(torch.zeros(num_classes, size[1], 2 * channels)) for _ in range(2)
            )
        else:
            self.v_class_row = self.h_class_row = self.v_class_col = self.h_class_col = None

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Channels-last throughout: oneDNN's and cuDNN's convolutions are fastest there (above all
        # backward), the masked 1x1 convolutions and the gate compute in it without conversions.
        # Only the first block's convolutions of the image itself (one channel) need converting.
        v_pre = self.v_conv(v).contiguous(memory_format=torch.channels_last)
        if self.v_class is not None:
            if labels is None:
                raise ValueError("GatedBlock: this block is class-conditional; pass labels")
            v_pre = v_pre + self.v_class(labels)[:, :, None, None]
        if self.v_row is not None:
            v_pre = v_pre + self._position_bias("v", v_pre, labels)
        h_pre = self.h_conv(h).contiguous(memory_format=torch.channels_last) + self.v_to_h(v_pre)
        if self.h_class is not None:
            h_pre = h_pre + self.h_class(labels)[:, :, None, None]
        if self.h_row is not None:
            h_pre = h_pre + self._position_bias("h", h_pre, labels)
        h_out = self.h_res(self.h_gate(h_pre))
        if not self.first:
            h_out = h_out + h
        return self.v_gate(v_pre), h_out

    def _position_bias(self, stack: str, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The position biases as ``[1 or B, 2n, H, W]`` (channels last), checked against ``x``'s size."""
        rows, cols = self._rows_and_columns(stack, labels)  # each image's label's own
        if tuple(x.shape[2:]) != (rows.shape[1], cols.shape[1]):
            raise ValueError(
                f"GatedBlock: this block has biases per row and column of {rows.shape[1]}x{cols.shape[1]} "
                f"images; got an input of {x.shape[2]}x{x.shape[3]}"
            )
        return (rows[:, :, None, :] + cols[:, None, :, :]).permute(0, 3, 1, 2)

    def position_table(self, stack: str) -> torch.Tensor:
        """Stack ``stack``'s (``"v"`` or ``"h"``) biases per position: ``[H, W, 2n]``, or with
        ``class_position_bias`` ``[labels, H, W, 2n]`` (label ``c``'s at ``[c]``)."""
        rows, cols = self._rows_and_columns(stack, slice(None))  # every label's
        table = rows[:, :, None, :] + cols[:, None, :, :]
        return table if self.v_class_row is not None else table[0]

    def _rows_and_columns(self, stack: str, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack ``stack``'s biases per row ``[L, H, 2n]`` and per column ``[L, W, 2n]``: with
        ``class_position_bias``, the shared ones plus those of ``labels`` (an index into the
        labels), else the shared ones alone (``L = 1``)."""
        rows, cols = getattr(self, f"{stack}_row"), getattr(self, f"{stack}_col")
        class_rows, class_cols = getattr(self, f"{stack}_class_row"), getattr(self, f"{stack}_class_col")
        if class_rows is None:
            return rows[None], cols[None]
        return rows + class_rows[labels], cols + class_cols[labels]
