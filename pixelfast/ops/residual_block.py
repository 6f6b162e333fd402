"""``residual_block``: the PixelCNN residual block as one op, and its reference.

``out = x + conv_out(relu(conv(relu(conv_in(relu(x)))) + image_bias))``, with ``conv_in``
(``channels -> hidden``) and ``conv_out`` (``hidden -> channels``) 1x1 mask-B convolutions and
``conv`` a ``k x k`` mask-B one (``hidden -> hidden``), all with the same colour groups;
``image_bias`` (``[B, hidden]``, optional) is a per-image constant, e.g. a class embedding. It is
what :class:`pixelfast.nn.ResidualBlock` computes, as one autograd node instead of eight: the 1x1s
are single matrix products over the pixels (channels-last), the ReLUs run in place, the bias and the
sum go into the last product, and the backward is one call (``csrc/masked_conv/residual_block.cpp``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelfast._checks import check_one_device, check_op_types
from pixelfast.ops import autocast
from pixelfast.ops._library import LOADED, require_library
from pixelfast.ops.masked_conv import masked_conv2d_ref

_OPTIONAL = ("b_in", "b", "b_out", "image_bias")


def _named(x, w_in, b_in, w, b, w_out, b_out, image_bias) -> dict:
    """The tensor arguments by their names in messages (as the op's own: residual_block_op.h)."""
    return {
        "input": x,
        "w_in": w_in,
        "b_in": b_in,
        "w": w,
        "b": b,
        "w_out": w_out,
        "b_out": b_out,
        "image_bias": image_bias,
    }


def residual_block(
    x: torch.Tensor,
    w_in: torch.Tensor,
    b_in: torch.Tensor | None,
    w: torch.Tensor,
    b: torch.Tensor | None,
    w_out: torch.Tensor,
    b_out: torch.Tensor | None,
    image_bias: torch.Tensor | None = None,
    color_groups: int = 1,
) -> torch.Tensor:
    """The block (see the module), equal to :func:`residual_block_ref`; channels-last output.

    ``w_in``: ``[hidden, channels, 1, 1]``, ``w``: ``[hidden, hidden, k, k]``, ``w_out``:
    ``[channels, hidden, 1, 1]`` (full weights: masked entries are ignored and get a gradient of
    exactly zero); biases ``[hidden]``, ``[hidden]``, ``[channels]`` or None. Under
    ``torch.autocast`` it computes in float32. The op checks its arguments itself.
    """
    check_op_types("residual_block", _named(x, w_in, b_in, w, b, w_out, b_out, image_bias), color_groups, _OPTIONAL)
    require_library()
    return torch.ops.pixelfast.residual_block(x, w_in, b_in, w, b, w_out, b_out, image_bias, color_groups)[0]


def residual_block_ref(
    x: torch.Tensor,
    w_in: torch.Tensor,
    b_in: torch.Tensor | None,
    w: torch.Tensor,
    b: torch.Tensor | None,
    w_out: torch.Tensor,
    b_out: torch.Tensor | None,
    image_bias: torch.Tensor | None = None,
    color_groups: int = 1,
) -> torch.Tensor:
    """The plain-PyTorch twin, built on :func:`masked_conv2d_ref` (dense convolutions with the mask
    multiplied in), independent of the compiled op."""
    y = masked_conv2d_ref(F.relu(masked_conv2d_ref(F.relu(x), w_in, b_in, "B", color_groups)), w, b, "B", color_groups)
    if image_bias is not None:
        y = y + image_bias[:, :, None, None]
    return x + masked_conv2d_ref(F.relu(y), w_out, b_out, "B", color_groups)


if LOADED:

    @torch.library.register_fake("pixelfast::residual_block")
    def _residual_block_fake(x, w_in, b_in, w, b, w_out, b_out, image_bias, color_groups):
        # The rules the output shapes rest on, worded as the op's own checks (residual_block.cpp).
        torch._check_value(
            x.dim() == 4, lambda: f"residual_block: input must be a 4-D tensor [B, C, H, W], got {list(x.shape)}"
        )
        torch._check_value(
            w.dim() == 4,
            lambda: f"residual_block: w must be [hidden, hidden, k, k] with hidden >= 1, got {list(w.shape)}",
        )
        check_one_device("residual_block", _named(x, w_in, b_in, w, b, w_out, b_out, image_bias))
        batch, _, height, width = x.shape
        hidden = w.shape[0]

        def image(channels, rows=height):
            return x.new_empty(batch, channels, rows, width).contiguous(memory_format=torch.channels_last)

        # hidden has k // 2 spare rows (csrc/masked_conv/residual_block_op.h)
        return image(x.shape[1]), image(x.shape[1]), image(hidden), image(hidden, height + w.shape[2] // 2)

    @torch.library.register_fake("pixelfast::residual_block_backward")
    def _residual_block_backward_fake(grad_out, relu_x, hidden_in, hidden, w_in, w, w_out, image_bias, color_groups):
        batch, hidden_channels = hidden.shape[0], hidden.shape[1]
        return (
            relu_x.new_empty(relu_x.shape).contiguous(memory_format=torch.channels_last),
            w_in.new_empty(w_in.shape),
            w_in.new_empty(w_in.shape[0]),
            w.new_empty(w.shape),
            w.new_empty(w.shape[0]),
            w_out.new_empty(w_out.shape),
            w_out.new_empty(w_out.shape[0]),
            w.new_empty((batch, hidden_channels) if image_bias else (0,)),
        )

    def _setup_context(ctx, inputs, output):
        x, w_in, b_in, w, b, w_out, b_out, image_bias, color_groups = inputs
        _, relu_x, hidden_in, hidden = output
        ctx.save_for_backward(relu_x, hidden_in, hidden, w_in, w, w_out)
        ctx.has_image_bias = image_bias is not None
        ctx.color_groups = color_groups
        # Only the first output is the block's; the others are its saved activations, never
        # differentiated: their gradients stay None instead of zero-filled tensors.
        ctx.set_materialize_grads(False)

    def _backward(ctx, grad_out, *_saved_grads):
        if grad_out is None:
            return (None,) * 9
        relu_x, hidden_in, hidden, w_in, w, w_out = ctx.saved_tensors
        grads = torch.ops.pixelfast.residual_block_backward(
            grad_out, relu_x, hidden_in, hidden, w_in, w, w_out, ctx.has_image_bias, ctx.color_groups
        )
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:8])), None)

    torch.library.register_autograd("pixelfast::residual_block", _backward, setup_context=_setup_context)
    autocast.register("pixelfast::residual_block")
