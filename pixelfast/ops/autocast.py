"""Mixed precision: under ``torch.autocast`` the ops compute in float32.

The kernels are float32/float64 (their accumulations and LSTM state want the range), so an op
called inside an autocast region casts its bf16/fp16 inputs to float32 first and returns float32,
as PyTorch's own precision-sensitive ops do; the next autocast op casts down again. The
dispatcher does it (``register``), for the Python faces and direct ``torch.ops.pixelfast`` calls
alike, before the op's own argument checks: they see what the kernel will.
"""

from __future__ import annotations

import torch

DEVICE_TYPES = ("cpu", "cuda")


def register(op: str) -> None:
    """Autocast on every device type the kernels run on: floating inputs cast to float32."""
    for device in DEVICE_TYPES:
        torch.library.register_autocast(op, device, torch.float32)
