"""``gated_activation``: the Gated PixelCNN's ``tanh(a) * sigmoid(b)`` in one pass, and its reference.

Input ``[B, 2n, H, W]``: ``color_groups`` contiguous blocks of ``2m`` channels (``m = n / groups``),
each ``[a (m channels), b (m channels)]``; output ``[B, n, H, W]``, channel ``g*m + t`` =
``tanh(x[g*2m + t]) * sigmoid(x[g*2m + m + t])``, so colour group ``g`` of the output reads only
group ``g`` of the input. The op reads the input once and writes the output once, and its backward
recomputes tanh and sigmoid in one more pass; plain PyTorch takes several passes each way (and a
zero-filled gradient per half when the halves are picked by indexing).
"""

from __future__ import annotations

import torch

from pixelfast._checks import check_color_groups, check_op_types
from pixelfast.ops import autocast
from pixelfast.ops._library import LOADED, require_library


def gated_activation(x: torch.Tensor, color_groups: int = 1) -> torch.Tensor:
    """``tanh(a) * sigmoid(b)`` group by group (see the module), equal to :func:`gated_activation_ref`.

    The output is channels-last when the input is (:func:`layout`), else contiguous. Under
    ``torch.autocast`` it computes in float32. The op checks its arguments itself
    (``csrc/gate/gate_cpu.cpp``).
    """
    check_op_types("gated_activation", {"input": x}, color_groups)
    require_library()
    return torch.ops.pixelfast.gated_activation(x, color_groups)


def gated_activation_ref(x: torch.Tensor, color_groups: int = 1) -> torch.Tensor:
    """The plain-PyTorch twin, written from the layout's definition (one output channel at a time),
    independent of the kernel's index arithmetic."""
    n = x.shape[1] // 2
    m = n // color_groups
    channels = []
    for c in range(n):
        g, t = divmod(c, m)
        a, b = x[:, 2 * m * g + t], x[:, 2 * m * g + m + t]
        channels.append(torch.tanh(a) * torch.sigmoid(b))
    return torch.stack(channels, dim=1)


def layout(x: torch.Tensor) -> torch.memory_format:
    """The op's layout, as the kernels choose it (``csrc/gate/gate_op.h``): channels-last for a
    dense channels-last tensor that is not also a contiguous one, else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _gate_gradient(grad_out: torch.Tensor, x: torch.Tensor, color_groups: int) -> torch.Tensor:
    """The input's gradient in plain, differentiable ops: the backward of a backward
    (``create_graph=True``) goes through these, the fused backward op having none of its own."""
    b, c, h, w = x.shape
    halves = x.reshape(b, color_groups, 2, c // (2 * color_groups), h, w)
    t, s = torch.tanh(halves[:, :, 0]), torch.sigmoid(halves[:, :, 1])
    g = grad_out.reshape(b, color_groups, c // (2 * color_groups), h, w)
    return torch.stack([g * s * (1 - t * t), g * t * s * (1 - s)], dim=2).reshape(b, c, h, w)


if LOADED:

    @torch.library.register_fake("pixelfast::gated_activation")
    def _gated_activation_fake(x, color_groups):
        # The rules the output's shape and layout rest on, worded as the op's own checks.
        op = "gated_activation"
        torch._check_value(x.dim() == 4, lambda: f"{op}: input must be a 4-D tensor [B, C, H, W], got {list(x.shape)}")
        check_color_groups(op, color_groups)
        torch._check_type(
            x.dtype in (torch.float32, torch.float64),
            lambda: f"{op}: input must be float32 or float64, got {x.dtype}",
        )
        torch._check_value(
            x.shape[1] >= 2 and x.shape[1] % (2 * color_groups) == 0,
            lambda: (
                f"{op}: input channels ({x.shape[1]}) must be a positive multiple of 2 * color_groups "
                f"({2 * color_groups})"
            ),
        )
        shape = (x.shape[0], x.shape[1] // 2, x.shape[2], x.shape[3])
        return x.new_empty(shape).contiguous(memory_format=layout(x))

    @torch.library.register_fake("pixelfast::gated_activation_backward")
    def _gated_activation_backward_fake(grad_out, x, color_groups):
        return x.new_empty(x.shape).contiguous(memory_format=layout(x))

    def _setup_context(ctx, inputs, output):
        x, color_groups = inputs
        ctx.save_for_backward(x)
        ctx.color_groups = color_groups

    def _backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            return _gate_gradient(grad_out, x, ctx.color_groups), None
        return torch.ops.pixelfast.gated_activation_backward(grad_out, x, ctx.color_groups), None

    torch.library.register_autograd("pixelfast::gated_activation", _backward, setup_context=_setup_context)
    autocast.register("pixelfast::gated_activation")
