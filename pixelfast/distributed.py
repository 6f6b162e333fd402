"""Running ``pixelfast train`` and ``pixelfast sample`` over several processes (``torchrun``).

``torchrun`` starts one process per rank and tells each its place through the environment
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``). :func:`launched` joins
the process group those variables describe (gloo for CPU work, nccl for CUDA) and leaves it
afterwards; without them it does nothing, so a plain ``python -m pixelfast`` is one process as before.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device without an index becomes this process's GPU (``LOCAL_RANK``)."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def launched(device: torch.device):
    """Join torchrun's process group for work on ``device`` for the duration (nothing when not
    launched by torchrun, or when the caller already joined one)."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if not dist.is_available():
        raise RuntimeError("torchrun: this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if active():
        dist.barrier()


def share(start: int, stop: int, parts: int, index: int) -> tuple[int, int]:
    """Part ``index`` of ``parts`` contiguous, nearly equal parts of ``start .. stop``."""
    total = stop - start
    return start + total * index // parts, start + total * (index + 1) // parts


def all_true(flag: bool) -> bool:
    """``flag`` and-ed over the ranks (every rank must call it), so that all of them stop together."""
    if not active():
        return flag
    value = _for_backend(torch.tensor([1 if flag else 0], dtype=torch.int32))
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over the ranks (every rank must call it)."""
    if not active():
        return list(values)
    tensor = _for_backend(torch.tensor(values, dtype=torch.float64))
    dist.all_reduce(tensor)
    return tensor.tolist()


def _for_backend(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` where the group's backend reduces it: nccl only reduces CUDA tensors."""
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def from_rank_zero(value):
    """Rank 0's ``value`` on every rank (a picklable object; every rank must call it)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank_zero(tensor: torch.Tensor) -> torch.Tensor | None:
    """The ranks' tensors concatenated in rank order (dim 0) on rank 0, on the CPU; None elsewhere."""
    if not active():
        return tensor.cpu()
    parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(tensor.cpu(), parts, dst=0)
    return torch.cat(parts) if parts is not None else None
