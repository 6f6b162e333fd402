"""Loads the compiled extension (``pixelfast._C``) once, and explains how to rebuild it when it can't.

``import pixelfast`` never fails because of the extension: the error is kept and raised by the first
op call, with the command that rebuilds the library for the torch that is installed now.
"""

from __future__ import annotations

import importlib

import torch

REBUILD_HINT = (
    "Rebuild it for the installed torch from the project's folder with:\n"
    "    pip install --no-build-isolation -e .\n"
    "(--no-build-isolation makes pip compile against the torch you have, not a fresh copy.)"
)

# Every op csrc/pixelfast.cpp declares; a library built from older sources lacks some.
OPS = (
    "masked_conv2d",
    "masked_conv2d_backward",
    "row_lstm",
    "row_lstm_backward",
    "diagonal_lstm",
    "diagonal_lstm_backward",
    "sample_cached",
    "sampler_solo_runs",
    "sampler_solo_after",
    "sampler_image_split_runs",
    "sampler_split_images_below",
    "sampler_gemm_kernel",
    "sampler_plan_format",
)

_load_error: str | None = None
build_info = None

try:
    build_info = importlib.import_module("pixelfast._build_info")
except ImportError:  # a source checkout that was never built
    _load_error = "pixelfast's compiled library was never built."

if build_info is not None:
    if build_info.TORCH_VERSION != torch.__version__:
        _load_error = (
            f"pixelfast's compiled library was built for torch {build_info.TORCH_VERSION}, "
            f"but torch {torch.__version__} is installed."
        )
    else:
        try:
            importlib.import_module("pixelfast._C")
        except (ImportError, OSError) as error:  # missing file, or an ABI mismatch (undefined symbol)
            _load_error = f"pixelfast's compiled library could not be loaded: {error}"
        else:
            missing = [op for op in OPS if not hasattr(torch.ops.pixelfast, op)]
            if missing:
                _load_error = f"pixelfast's compiled library is out of date: it lacks the ops {missing}."

LOADED = _load_error is None
WITH_CUDA = bool(LOADED and build_info.WITH_CUDA)


def require_library() -> None:
    """Raise a clear error when the compiled ops are not usable."""
    if _load_error is not None:
        raise RuntimeError(f"{_load_error}\n{REBUILD_HINT}")
