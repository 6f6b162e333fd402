"""Argument rules that layers, models, ops and training share, each written once.

Every message starts with the name of the caller (``owner``) and says what was expected and what
was given. The compiled ops check their own arguments again in C++ (``TORCH_CHECK``), for callers
that reach them without Python.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

COLOR_GROUPS = (1, 3)  # grey, or R -> G -> B channel groups


def check_int(owner: str, name: str, value, minimum: int) -> int:
    """``value`` as an ``int >= minimum``, or a clear error (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_odd(owner: str, name: str, value, minimum: int) -> int:
    """``value`` as an odd ``int >= minimum`` (a kernel size), or a clear error."""
    value = check_int(owner, name, value, minimum)
    if value % 2 == 0:
        raise ValueError(f"{owner}: {name} must be odd, got {value}")
    return value


def check_color_groups(owner: str, color_groups) -> int:
    """1 (grey) or 3 (R, G, B groups); bools are refused, not read as 1."""
    if isinstance(color_groups, bool) or color_groups not in COLOR_GROUPS:
        raise ValueError(f"{owner}: color_groups must be 1 or 3, got {color_groups!r}")
    return int(color_groups)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` lives: its first parameter's (or buffer's) device; the CPU for an empty one."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
