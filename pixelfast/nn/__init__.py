"""Trainable layers built on pixelfast's ops."""

from pixelfast.nn.gated import GatedActivation, GatedBlock, HorizontalConv2d, VerticalConv2d
from pixelfast.nn.gated_resnet import GatedResNet, concat_elu
from pixelfast.nn.head import OutputHead
from pixelfast.nn.logistic_mixture import DiscretizedLogisticMixture, logistic_mixture_logits, logistic_mixture_nll
from pixelfast.nn.lstm import DiagonalBiLSTM, DiagonalLSTM, RowLSTM
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.nn.residual import ResidualBlock
from pixelfast.nn.shifted_conv import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
)

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
    "DownShiftedConv2d",
    "DownRightShiftedConv2d",
    "DownShiftedConvTranspose2d",
    "DownRightShiftedConvTranspose2d",
    "GatedResNet",
    "concat_elu",
    "DiscretizedLogisticMixture",
    "logistic_mixture_logits",
    "logistic_mixture_nll",
]
