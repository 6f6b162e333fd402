"""The custom ops: thin Python faces over the compiled kernels, each beside its plain-PyTorch twin."""

from pixelfast.ops._library import LOADED, WITH_CUDA, require_library
from pixelfast.ops.gate import gated_activation, gated_activation_ref
from pixelfast.ops.lstm import (
    diagonal_lstm,
    diagonal_lstm_ref,
    gate_index,
    row_lstm,
    row_lstm_ref,
)
from pixelfast.ops.masked_conv import (
    centre_prefix,
    make_mask,
    masked_conv2d,
    masked_conv2d_ref,
)
from pixelfast.ops.residual_block import residual_block, residual_block_ref

__all__ = [
    "LOADED",
    "WITH_CUDA",
    "require_library",
    "gated_activation",
    "gated_activation_ref",
    "masked_conv2d",
    "masked_conv2d_ref",
    "make_mask",
    "centre_prefix",
    "residual_block",
    "residual_block_ref",
    "row_lstm",
    "row_lstm_ref",
    "diagonal_lstm",
    "diagonal_lstm_ref",
    "gate_index",
]
