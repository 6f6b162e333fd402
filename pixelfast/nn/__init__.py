"""Trainable layers built on pixelfast's ops."""

from pixelfast.nn.gated import GatedActivation, GatedBlock, HorizontalConv2d, VerticalConv2d
from pixelfast.nn.head import OutputHead
from pixelfast.nn.lstm import DiagonalBiLSTM, DiagonalLSTM, RowLSTM
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.nn.residual import ResidualBlock

__all__ = [
    "MaskedConv2d",
    "ResidualBlock",
    "VerticalConv2d",
    "HorizontalConv2d",
    "GatedActivation",
    "GatedBlock",
    "OutputHead",
    "RowLSTM",
    "DiagonalLSTM",
    "DiagonalBiLSTM",
]
