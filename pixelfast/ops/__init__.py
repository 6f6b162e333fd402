"""The custom ops: thin Python faces over the compiled kernels, each beside its plain-PyTorch twin."""

from pixelfast.ops._library import LOADED, WITH_CUDA, require_library
from pixelfast.ops.masked_conv import (
    centre_prefix,
    masked_conv2d,
    masked_conv2d_ref,
    make_mask,
)

__all__ = [
    "LOADED",
    "WITH_CUDA",
    "require_library",
    "masked_conv2d",
    "masked_conv2d_ref",
    "make_mask",
    "centre_prefix",
]
