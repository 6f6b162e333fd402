"""``check_device``: a device argument as a ``torch.device`` that can hold data here, or a clear error."""

from __future__ import annotations

import torch


def check_device(device, owner: str) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``) as a ``torch.device``;
    a ``ValueError`` naming ``owner`` for a name torch does not know, ``meta`` (it holds no data),
    or a CUDA device this machine does not have."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{owner}: device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if device.type == "meta":
        raise ValueError(f"{owner}: device 'meta' holds no data; use 'cpu' or 'cuda'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{owner}: device {str(device)!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{owner}: device {str(device)!r} asked for, but there are {torch.cuda.device_count()} CUDA devices"
            )
    elif device.type != "cpu":
        raise ValueError(f"{owner}: device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    return device
