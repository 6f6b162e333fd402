"""Mixed precision: under ``torch.autocast`` the ops compute in float32.

The kernels are float32/float64 (their accumulations and LSTM state want the range), so an op
called inside an autocast region casts its bf16/fp16 inputs to float32 first and returns float32,
as PyTorch's own precision-sensitive ops do; the next autocast op casts down again. The
dispatcher does it for direct ``torch.ops.pixelfast`` calls (``register``), the Python faces before
their argument checks (``float32_inputs``), so that the checks see what the kernel will.
"""

from __future__ import annotations

import torch

DEVICE_TYPES = ("cpu", "cuda")


def float32_inputs(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The inputs as the op computes them: bf16/fp16 tensors as float32 when autocast is on for
    their device (float64 and non-floating tensors unchanged), else as they are."""
    device = next(t.device.type for t in tensors if isinstance(t, torch.Tensor))
    if device not in DEVICE_TYPES or not torch.is_autocast_enabled(device):
        return tensors
    return tuple(
        t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors
    )


def register(op: str) -> None:
    """Autocast on every device type the kernels run on: floating inputs cast to float32."""
    for device in DEVICE_TYPES:
        torch.library.register_autocast(op, device, torch.float32)
