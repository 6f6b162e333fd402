"""PixelRNN's recurrent layers (van den Oord et al. 2016): ``RowLSTM`` and ``DiagonalBiLSTM``.

Each layer computes its input-to-state gates for the whole map with one masked convolution, then
runs the recurrence as one fused op (:func:`pixelfast.ops.row_lstm`,
:func:`pixelfast.ops.diagonal_lstm`); ``fused=False`` runs the plain-PyTorch loop twins instead
(same parameters, same outputs: for tests and benchmarks).

Gate channels (``4h``) follow the ops' layout: ``color_groups`` contiguous blocks, each
``[i, f, o, g] x (h / color_groups)``. A masked convolution's output colour group ``g`` is its
``g``-th contiguous channel block, so the gates of hidden channel ``c`` (colour group
``c // (h / color_groups)``) read, at the current pixel, only input colour groups ``<= g`` (mask
B). The state-to-state path reads only states of pixels that come earlier in raster order (the
previous row; the pixels above and to the left), every colour of which is already known, so it is
unmasked. The cell update is pointwise per hidden channel, so colour groups never mix at the
current pixel: R -> G -> B autoregression survives the layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_color_groups, check_divisible, check_int, check_odd
from pixelfast.nn.gated import HorizontalConv2d
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.ops.lstm import diagonal_lstm, diagonal_lstm_ref, gate_index, row_lstm, row_lstm_ref


def _keep_shape(layer: nn.Module, in_channels: int, hidden_channels: int, color_groups: int) -> None:
    """Check a layer's widths and colour groups, then keep them as attributes of the same names."""
    owner = type(layer).__name__
    check_color_groups(owner, color_groups)
    check_int(owner, "in_channels", in_channels, 1)
    check_int(owner, "hidden_channels", hidden_channels, 1)
    check_divisible(owner, color_groups, in_channels=in_channels, hidden_channels=hidden_channels)
    layer.in_channels, layer.hidden_channels, layer.color_groups = in_channels, hidden_channels, color_groups


def _state_params(hidden: int, taps: int, color_groups: int) -> tuple[nn.Parameter, nn.Parameter]:
    """State-to-state weight ``[4h, h, taps]`` (uniform +-1/sqrt(fan_in)) and the gate bias ``[4h]``
    (zeros, forget gates 1 so the cell starts out remembering)."""
    bound = 1.0 / math.sqrt(hidden * taps)
    weight = nn.Parameter(torch.empty(4 * hidden, hidden, taps).uniform_(-bound, bound))
    bias = torch.zeros(4 * hidden)
    bias[[gate_index(1, c, hidden, color_groups) for c in range(hidden)]] = 1.0
    return weight, nn.Parameter(bias)


class _ClassGates(nn.Module):
    """A learned per-class offset of the gates (zeros at start: the unconditional layer)."""

    def __init__(self, num_classes: int | None, channels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, channels) if num_classes else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)

    def forward(self, gates: torch.Tensor, labels: torch.Tensor | None, owner: str) -> torch.Tensor:
        if self.embedding is None:
            return gates
        if labels is None:
            raise ValueError(f"{owner}: this layer is class-conditional; pass labels")
        return gates + self.embedding(labels)[:, :, None, None]


class RowLSTM(nn.Module):
    """Row LSTM: rows are processed top to bottom; each row's states come from the row above.

    ``x [B, in_channels, H, W] -> h [B, hidden_channels, H, W]`` with ``k = kernel_size``:

    * ``input_to_state``: ``HorizontalConv2d(in, 4h, k, "B", color_groups, bias=False)``, the
      paper's masked ``k x 1`` conv along the row: pixel ``(i, j)`` reads row ``i``, columns
      ``j - k//2 .. j - 1`` and, colour masked, itself.
    * ``state_to_state [4h, h, k]``: an unmasked ``k x 1`` conv over the previous row's ``h``,
      ``a(i, j) += sum_s state_to_state[:, :, s] @ h(i - 1, j + s - k//2)``; ``bias [4h]``.
    * ``c(i, j) = f * c(i - 1, j) + i * g``, ``h(i, j) = o * tanh(c(i, j))``; row -1 is zero.

    Its receptive field is a triangle above the pixel (plus the current row's left part through
    ``input_to_state``). With ``num_classes``, ``class_gates`` adds a learned per-class offset to
    the gates and ``forward`` needs ``labels``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        color_groups: int = 1,
        num_classes: int | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        _keep_shape(self, in_channels, hidden_channels, color_groups)
        self.kernel_size = check_odd("RowLSTM", "kernel_size", kernel_size, 3)
        self.fused = fused
        self.input_to_state = HorizontalConv2d(
            in_channels, 4 * hidden_channels, kernel_size, "B", color_groups, bias=False
        )
        self.state_to_state, self.bias = _state_params(hidden_channels, kernel_size, color_groups)
        self.class_gates = _ClassGates(num_classes, 4 * hidden_channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # Channels-last: the conv runs about twice as fast and the scan then needs no transpose.
        x = x.contiguous(memory_format=torch.channels_last)
        gates = self.class_gates(self.input_to_state(x), labels, "RowLSTM")
        scan = row_lstm if self.fused else row_lstm_ref
        return scan(gates, self.state_to_state, self.bias, self.color_groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
            f"color_groups={self.color_groups}, fused={self.fused}"
        )


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM: the skewed map scanned left to right.

    ``x [B, in_channels, H, W] -> h [B, hidden_channels, H, W]``:

    * ``input_to_state``: ``MaskedConv2d(in, 4h, 1, "B", color_groups, bias=False)``.
    * ``state_to_state [4h, h, 2]``: the 2x1 column conv of the skewed map; at pixel ``(i, j)``,
      ``a(i, j) += state_to_state[:, :, 0] @ h(i - 1, j) + state_to_state[:, :, 1] @ h(i, j - 1)``
      (rows ``i - 1`` and ``i`` of the previous skewed column); ``bias [4h]``.
    * ``c(i, j) = f * c(i, j - 1) + i * g``, ``h(i, j) = o * tanh(c(i, j))``; zero outside the image.

    ``h(i, j)`` depends on every pixel ``(i', j')`` with ``i' <= i`` and ``j' <= j`` (and, colour
    masked, on ``(i, j)`` itself).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        color_groups: int = 1,
        num_classes: int | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        _keep_shape(self, in_channels, hidden_channels, color_groups)
        self.fused = fused
        self.input_to_state = MaskedConv2d(in_channels, 4 * hidden_channels, 1, "B", color_groups, bias=False)
        self.state_to_state, self.bias = _state_params(hidden_channels, 2, color_groups)
        self.class_gates = _ClassGates(num_classes, 4 * hidden_channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # The masked conv returns channels-last gates, the layout the scan works in: no transpose.
        gates = self.class_gates(self.input_to_state(x), labels, "DiagonalLSTM")
        scan = diagonal_lstm if self.fused else diagonal_lstm_ref
        return scan(gates, self.state_to_state, self.bias, self.color_groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, color_groups={self.color_groups}, fused={self.fused}"


class DiagonalBiLSTM(nn.Module):
    """Diagonal BiLSTM: two :class:`DiagonalLSTM` directions, the second on the mirrored image.

    ``x [B, in_channels, H, W] -> h [B, hidden_channels, H, W]``::

        left = left_to_right(x)                          # sees (i', j') with i' <= i, j' <= j
        right = right_to_left(x.flip(-1)).flip(-1)       # sees (i', j') with i' <= i, j' >= j
        h = left + shift_down(right)                     # shift_down(y)[:, :, i] = y[:, :, i - 1]

    The right-to-left state at ``(i, j)`` has read row ``i`` right of ``j`` (the future), so it
    is used one row later, at ``(i + 1, j)``; row 0 gets zeros. Together the two directions see
    every earlier pixel: all rows above, and the current row up to the pixel.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        color_groups: int = 1,
        num_classes: int | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        _keep_shape(self, in_channels, hidden_channels, color_groups)
        self.left_to_right = DiagonalLSTM(in_channels, hidden_channels, color_groups, num_classes, fused)
        self.right_to_left = DiagonalLSTM(in_channels, hidden_channels, color_groups, num_classes, fused)

    @property
    def fused(self) -> bool:
        return self.left_to_right.fused

    @fused.setter
    def fused(self, value: bool) -> None:
        self.left_to_right.fused = self.right_to_left.fused = value

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op after pixelfast's convs
        left = self.left_to_right(x, labels)
        right = self.right_to_left(x.flip(-1), labels).flip(-1)
        return left + F.pad(right, (0, 0, 1, 0))[:, :, :-1]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, color_groups={self.color_groups}"
