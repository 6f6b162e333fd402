"""Argument rules of the layers, models and training, each written once.

Every message starts with the name of the caller (``owner``) and says what was expected and what
was given. The compiled ops' arguments are checked by the ops themselves, in C++
(``csrc/common/checks.h`` and each op's checks): their Python faces only refuse, below, what
never reaches C++ as such (:func:`check_op_types`), and their fake kernels repeat the shape rules
tracing needs (:func:`check_one_device` among them).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

COLOR_GROUPS = (1, 3)  # grey, or R -> G -> B channel groups
MASK_TYPES = ("A", "B")  # the centre tap without (first layer) or with a colour group's own inputs


def check_int(owner: str, name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``minimum..maximum``, or a clear error (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{owner}: {name} must be in {minimum}..{maximum}, got {value}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_odd(owner: str, name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an odd ``int`` in ``minimum..maximum`` (a kernel size), or a clear error."""
    value = check_int(owner, name, value, minimum, maximum)
    if value % 2 == 0:
        raise ValueError(f"{owner}: {name} must be odd, got {value}")
    return value


def check_color_groups(owner: str, value, name: str = "color_groups") -> int:
    """1 (grey) or 3 (R, G, B groups), for colour groups and image channels alike; bools are
    refused, not read as 1."""
    if isinstance(value, bool) or value not in COLOR_GROUPS:
        raise ValueError(f"{owner}: {name} must be 1 or 3, got {value!r}")
    return int(value)


def check_mask_type(owner: str, mask_type) -> str:
    """``"A"`` or ``"B"``."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"{owner}: mask_type must be 'A' or 'B', got {mask_type!r}")
    return mask_type


def check_divisible(owner: str, color_groups: int, **channels: int) -> None:
    """Each channel count splits into ``color_groups`` equal colour blocks."""
    if any(value % color_groups for value in channels.values()):
        counts = [f"{name} ({value})" for name, value in channels.items()]
        listed = counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + " and " + counts[-1]
        raise ValueError(f"{owner}: with color_groups={color_groups}, {listed} must be divisible by {color_groups}")


# --- the compiled ops: what only Python sees ---------------------------------------------------


def check_op_types(op: str, tensors: dict, color_groups, optional: tuple[str, ...] = ("bias",)) -> None:
    """Before an op call, what C++ never sees as such; the op checks everything else itself.

    A non-tensor would meet the schema's RuntimeError ("Expected a value of type 'Tensor' ...");
    this names the argument in a TypeError instead (the ``optional`` ones may be None). A bool
    ``color_groups`` would reach C++ as 1 or 0: refused here by the colour-group rule.
    """
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor) and not (name in optional and value is None):
            allowed = "a torch.Tensor or None" if name in optional else "a torch.Tensor"
            raise TypeError(f"{op}: {name} must be {allowed}, got {type(value).__name__}")
    if isinstance(color_groups, bool):
        check_color_groups(op, color_groups)


def check_one_device(op: str, tensors: dict) -> None:
    """For the fake kernels: the tensors (``None``: an absent bias) on one device, in the words of
    the op's own check (``csrc/common/checks.h``)."""
    given = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in given.values()}
    names = list(tensors)
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    torch._check_value(
        len(devices) == 1,
        lambda: (
            f"{op}: {listed} must be on one device, got "
            + ", ".join(f"{name} on {t.device}" for name, t in given.items())
        ),
    )


def check_temperature(owner: str, temperature) -> float:
    """``temperature`` as a float, finite and > 0 (it divides logits or scales a latent)."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"{owner}: temperature must be a number, got {type(temperature).__name__}")
    temperature = float(temperature)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"{owner}: temperature must be a finite number > 0, got {temperature}")
    return temperature


def check_guidance(owner: str, weight) -> float:
    """A classifier-free guidance ``weight`` as a float, finite and >= 0 (0: no guidance)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"{owner}: guidance must be a number >= 0, got {type(weight).__name__} {weight!r}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{owner}: guidance must be a finite number >= 0, got {weight!r}")
    return float(weight)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` lives: its first parameter's (or buffer's) device; the CPU for an empty one."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
