"""Full fp32 for the duration of a sampling call: TF32 off for cuBLAS and cuDNN (and reduced
precision off for oneDNN on the CPU), the user's settings
restored afterwards (also when the call raises).

The cached engine computes in full fp32 (or fp64). The naive sampler and ``model(x)`` run cuDNN
convolutions and cuBLAS matmuls, which on Ampere and later GPUs use TF32 (10-bit mantissa) when the
user allowed it; then ``cached == naive`` and ``incremental_logits == model(x)`` cannot hold. So
:func:`pixelfast.sample` and :func:`pixelfast.incremental_logits` run inside :func:`full_fp32`.

torch keeps TF32 in two sets of flags: the legacy ones (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``, ``torch.set_float32_matmul_precision``) and, since torch 2.9,
the ``fp32_precision`` tree (``torch.backends.fp32_precision``, ``...cuda.matmul``, ``...cudnn``,
``...cudnn.conv``, ``...cudnn.rnn``); cuDNN convolutions read ``cudnn.conv.fp32_precision``, and the
legacy getters raise when the two sets disagree. Turning TF32 off therefore goes through the legacy
setters (which keep both sets consistent) and then sets the cuDNN leaves to ``"ieee"`` (a legacy
``False`` leaves them ``"none"``, which inherits a parent's ``"tf32"``). Restoring writes back every
saved value, legacy first, then the tree from the root down, so the user's state comes back exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

B = torch.backends
# The fp32_precision tree, root first (a parent's setter may reset its children). The oneDNN (CPU)
# nodes are only saved and restored: torch.set_float32_matmul_precision, used to restore the legacy
# matmul setting, writes mkldnn.matmul too.
_TREE = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _node(path: str):
    node = B
    for part in filter(None, path.split(".")):
        node = getattr(node, part)
    return node


def has_precision_tree() -> bool:
    """Whether this torch has the ``fp32_precision`` settings (torch >= 2.9)."""
    try:
        return all(isinstance(_node(path).fp32_precision, str) for path in _TREE)
    except (AttributeError, RuntimeError):
        return False


def save() -> list[tuple[Callable[[object], None], object]]:
    """The current settings as (setter, value) pairs, in the order that restores them."""
    restore: list[tuple[Callable[[object], None], object]] = []
    try:
        restore.append((torch.set_float32_matmul_precision, torch.get_float32_matmul_precision()))
    except RuntimeError:  # the user mixed the two APIs; the tree below still restores cuda.matmul
        pass
    try:
        cudnn_legacy = B.cudnn.allow_tf32
    except RuntimeError:  # the user mixed the two APIs; the tree below still restores conv/rnn
        cudnn_legacy = None
    if cudnn_legacy is not None:
        restore.append((lambda value: setattr(B.cudnn, "allow_tf32", value), cudnn_legacy))
    if has_precision_tree():
        for path in _TREE:
            node = _node(path)
            restore.append((lambda value, node=node: setattr(node, "fp32_precision", value), node.fp32_precision))
    return restore


def disable_tf32() -> None:
    # "highest" sets the legacy matmul flag and both matmul leaves (cuBLAS and oneDNN) to full fp32,
    # consistently; B.cuda.matmul.allow_tf32 = False would leave a oneDNN "tf32"/"bf16" that the
    # legacy getter then reports as a mix of the two APIs.
    torch.set_float32_matmul_precision("highest")
    B.cudnn.allow_tf32 = False
    if has_precision_tree():
        for path in ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn"):
            _node(path).fp32_precision = "ieee"


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for cuBLAS and cuDNN inside the block; the previous settings restored after it."""
    saved = save()
    try:
        disable_tf32()
        yield
    finally:
        for setter, value in saved:
            setter(value)
