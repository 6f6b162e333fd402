"""``masked_conv2d``: a PixelCNN masked convolution that skips the masked rows, and its reference.

Mask (PixelRNN paper): with ``k = kernel_size`` and ``c = k // 2``, tap ``(r, s)`` is used when
``r < c``, or ``r == c and s < c``. The centre tap ``(c, c)`` connects input colour group ``g_in``
to output group ``g_out`` when ``g_in < g_out`` (mask "A") or ``g_in <= g_out`` (mask "B").
Groups are contiguous channel blocks: channel ``i`` of ``C`` is in group ``i * groups // C``.
Because the groups are contiguous, the centre tap of output group ``g`` reads a *prefix* of the
input channels (see :func:`centre_prefix`); the kernel relies on that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelfast._checks import check_one_device, check_op_types
from pixelfast.ops import autocast
from pixelfast.ops._library import LOADED, require_library

MAX_KERNEL_SIZE = 11  # the op takes odd kernel sizes 1..11 (kMaxKernelSize in masked_conv.h)


def centre_prefix(in_channels: int, color_groups: int, mask_type: str, g_out: int) -> int:
    """How many leading input channels the centre tap connects to output group ``g_out``."""
    per_group = in_channels // color_groups
    return per_group * (g_out + 1 if mask_type == "B" else g_out)


def make_mask(in_channels: int, out_channels: int, kernel_size: int, mask_type: str, color_groups: int) -> torch.Tensor:
    """The dense 0/1 mask ``[out, in, k, k]`` that :func:`masked_conv2d_ref` multiplies in."""
    c = kernel_size // 2
    mask = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
    mask[:, :, :c, :] = 1
    mask[:, :, c, :c] = 1
    out_per_group = out_channels // color_groups
    for g in range(color_groups):
        prefix = centre_prefix(in_channels, color_groups, mask_type, g)
        mask[g * out_per_group : (g + 1) * out_per_group, :prefix, c, c] = 1
    return mask


def masked_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask_type: str = "B",
    color_groups: int = 1,
) -> torch.Tensor:
    """Masked 'same' convolution, stride 1; equal to :func:`masked_conv2d_ref`, without the rows below
    the centre (``csrc/masked_conv/masked_conv.h``: kernels of 5x5 and more skip every masked tap,
    a 3x3 one runs as one convolution over its top two rows).

    ``weight`` is the full ``[out, in, k, k]`` tensor; its masked entries are ignored and get a
    gradient of exactly zero. The result is channels-last (the layout the kernel computes in, so
    stacked layers convert nothing): use ``.reshape``, not ``.view``, to flatten it. Under
    ``torch.autocast`` it computes in float32 (:mod:`pixelfast.ops.autocast`). The op checks its
    arguments itself (``csrc/masked_conv/masked_conv.cpp``).
    """
    check_op_types("masked_conv2d", {"input": x, "weight": weight, "bias": bias}, color_groups)
    require_library()
    return torch.ops.pixelfast.masked_conv2d(x, weight, bias, mask_type, color_groups)


def masked_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask_type: str = "B",
    color_groups: int = 1,
) -> torch.Tensor:
    """The plain-PyTorch twin: a dense ``F.conv2d`` with the mask multiplied into the weight.

    The tests' reference, independent of the compiled op: it checks nothing beyond what PyTorch
    itself raises, so give it arguments that :func:`masked_conv2d` accepts.
    """
    out_channels, in_channels, k, _ = weight.shape
    mask = make_mask(in_channels, out_channels, k, mask_type, color_groups).to(weight)
    return F.conv2d(x, weight * mask, bias, padding=k // 2)


if LOADED:

    @torch.library.register_fake("pixelfast::masked_conv2d")
    def _masked_conv2d_fake(x, weight, bias, mask_type, color_groups):
        # The rules the output shape rests on, worded as the op's own checks (masked_conv.cpp).
        op = "masked_conv2d"
        torch._check_value(x.dim() == 4, lambda: f"{op}: input must be a 4-D tensor [B, C, H, W], got {list(x.shape)}")
        torch._check_value(
            weight.dim() == 4,
            lambda: f"{op}: weight must be [out, in, k, k] with a square kernel, got {list(weight.shape)}",
        )
        check_one_device(op, {"input": x, "weight": weight, "bias": bias})
        torch._check_value(
            x.shape[1] == weight.shape[1],
            lambda: f"{op}: input has {x.shape[1]} channels but the weight expects {weight.shape[1]}",
        )
        shape = (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
        return x.new_empty(shape).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("pixelfast::masked_conv2d_backward")
    def _masked_conv2d_backward_fake(grad_out, x, weight, mask_type, color_groups, output_mask):
        return (
            x.new_empty(x.shape).contiguous(memory_format=torch.channels_last),
            weight.new_empty(weight.shape),
            weight.new_empty(weight.shape[0]),
        )

    def _setup_context(ctx, inputs, output):
        x, weight, bias, mask_type, color_groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.mask_type = mask_type
        ctx.color_groups = color_groups

    def _backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_x, grad_weight, grad_bias = torch.ops.pixelfast.masked_conv2d_backward(
            grad_out, x, weight, ctx.mask_type, ctx.color_groups, [need_x, need_weight]
        )
        return (
            grad_x if need_x else None,
            grad_weight if need_weight else None,
            grad_bias if need_bias else None,
            None,
            None,
        )

    torch.library.register_autograd("pixelfast::masked_conv2d", _backward, setup_context=_setup_context)
    autocast.register("pixelfast::masked_conv2d")
