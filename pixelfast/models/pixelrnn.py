"""``PixelRNN``: the Row LSTM and Diagonal BiLSTM models of "Pixel Recurrent Neural Networks"."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pixelfast._checks import check_odd
from pixelfast.models.base import PixelModel
from pixelfast.models.config import SAVED, ModelConfig
from pixelfast.nn.head import OutputHead
from pixelfast.nn.lstm import DiagonalBiLSTM, RowLSTM
from pixelfast.nn.masked_conv import MaskedConv2d

KINDS = ("row", "diagonal")


class PixelRNNBlock(nn.Module):
    """One residual LSTM layer: ``x + proj(lstm(x))`` on ``2h`` features.

    * ``lstm``: ``RowLSTM(2h, h, kernel_size)`` or ``DiagonalBiLSTM(2h, h)``
    * ``proj``: ``MaskedConv2d(h, 2h, 1, "B")``, back to ``2h`` features

    both with the block's ``color_groups``; with ``num_classes`` the LSTM adds per-class gate
    offsets (so ``forward`` needs ``labels``).
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        hidden_channels: int,
        color_groups: int = 1,
        kernel_size: int = 3,
        num_classes: int | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if kind == "row":
            self.lstm = RowLSTM(channels, hidden_channels, kernel_size, color_groups, num_classes, fused)
        elif kind == "diagonal":
            self.lstm = DiagonalBiLSTM(channels, hidden_channels, color_groups, num_classes, fused)
        else:
            raise ValueError(f"PixelRNNBlock: kind must be one of {KINDS}, got {kind!r}")
        self.proj = MaskedConv2d(hidden_channels, channels, 1, "B", color_groups)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.proj(self.lstm(x, labels))


@dataclasses.dataclass(frozen=True)
class PixelRNNConfig(ModelConfig):
    """:class:`PixelRNN`'s options, its constructor's arguments in order."""

    kind: str = "diagonal"  # "row" or "diagonal"
    in_channels: int = 1
    levels: int = 256
    hidden_channels: int = 48
    num_layers: int = 7
    kernel_size: int = 3  # the Row LSTM's k; the diagonal kind ignores it
    head_channels: int | None = None  # None: 2 * hidden_channels
    num_classes: int | None = None  # None: unconditional
    image_size: tuple[int, int] | None = None  # the size sampled by default
    # the fused scan ops or their plain-PyTorch loop twins: the same outputs, so not saved
    fused: bool = dataclasses.field(default=True, metadata={SAVED: False})

    def __post_init__(self) -> None:
        self._check_data_options()
        if self.kind not in KINDS:
            raise ValueError(f"{self.owner}: kind must be 'row' or 'diagonal', got {self.kind!r}")
        self._check_widths(min_layers=0)
        self._set(kernel_size=check_odd(self.owner, "kernel_size", self.kernel_size, 3), fused=bool(self.fused))


class PixelRNN(PixelModel):
    """7x7 mask-A conv -> ``num_layers`` residual LSTM layers -> output head; logits ``[B, levels, C, H, W]``.

    * ``input_conv``: ``MaskedConv2d(in_channels, 2h, 7, "A")`` on the scaled image
    * ``blocks[l]``:  :class:`PixelRNNBlock` (``kind="row"``: :class:`~pixelfast.nn.RowLSTM` with
      ``kernel_size``; ``kind="diagonal"``: :class:`~pixelfast.nn.DiagonalBiLSTM`), 2h -> h -> 2h,
      added to its input
    * ``head``:       ``OutputHead(2h, head_channels, in_channels, levels)`` (ReLU + 1x1 mask B, twice)

    ``h = hidden_channels``; for RGB every layer is colour grouped (``h`` and ``head_channels``
    divisible by 3). ``head_channels=None`` means ``2h``. ``kernel_size`` is the Row LSTM's ``k``
    (its input-to-state and state-to-state convs); the diagonal kind ignores it. With
    ``num_classes`` set every LSTM adds a learned per-class offset to its gates and ``forward``
    needs ``labels``.

    ``fused`` (not part of ``config``: the architecture and outputs are the same) picks the fused
    scan ops or their plain-PyTorch loop twins; it can be changed later through ``model.fused``.

    Receptive field. A Row LSTM layer sees a triangle above each pixel. A Diagonal BiLSTM layer sees
    its input at every earlier position, so the ``kind="diagonal"`` model sees every earlier
    sub-pixel but one: for a pixel ``(i, j)`` with ``j < W - 4``, the last colour of pixel
    ``(i - 1, W - 1)``. The 7x7 mask-A input conv is what puts a sub-pixel into the features, and it
    puts that one only into features at ``(i, W - 4 .. W - 1)`` and below, all after ``(i, j)`` (the
    paper's architecture has the same gap; tests pin the exact receptive field).
    """

    name = "PixelRNN"
    Config = PixelRNNConfig

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`PixelRNNConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked PixelRNNConfig

        h, g = self.hidden_channels, self.color_groups
        self.input_conv = MaskedConv2d(self.in_channels, 2 * h, 7, "A", g)
        self.blocks = nn.ModuleList(
            PixelRNNBlock(self.kind, 2 * h, h, g, self.kernel_size, self.num_classes, self.options.fused)
            for _ in range(self.num_layers)
        )
        self.head = OutputHead(2 * h, self.head_channels, self.in_channels, self.levels)
        self._fused = self.options.fused  # the initial setting; `fused` below changes it later

    @property
    def fused(self) -> bool:
        """Whether the LSTM layers run the fused scan ops (else the plain-PyTorch loops)."""
        return self._fused

    @fused.setter
    def fused(self, value: bool) -> None:
        self._fused = bool(value)
        for block in self.blocks:
            block.lstm.fused = self._fused

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: levels ``[B, C, H, W]`` (integers, or floats holding whole numbers); ``labels``: ``[B]``."""
        x, labels = self.prepare(x, labels)
        features = self.input_conv(x)
        for block in self.blocks:
            features = block(features, labels)
        return self.head(features)
