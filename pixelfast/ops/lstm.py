"""Fused LSTM scans of PixelRNN (Row LSTM, Diagonal LSTM) and their plain-PyTorch loop twins.

Both scans take precomputed input-to-state gates ``gates [B, 4h, H, W]`` and run the whole
recurrence of one layer in one op call, forward and backward (C++/CUDA, ``csrc/lstm``).

Gate layout: ``color_groups`` (1, or 3 for R, G, B) contiguous blocks of ``4m`` channels
(``m = h / color_groups``), each block ``[i, f, o, g]`` of ``m`` channels. Hidden channel ``c``
(colour group ``c // m``) uses gate channels ``(c // m) * 4m + q * m + c % m`` for
``q = 0, 1, 2, 3`` = i, f, o, g; with ``color_groups=1`` this is the usual ``[i, f, o, g]``. So a
masked convolution whose output colour groups are contiguous blocks (``MaskedConv2d``,
``HorizontalConv2d``) yields the gates of each colour group's hidden channels from that group's
inputs. The cell is the standard one: ``i, f, o = sigmoid``, ``g = tanh``,
``c = f * c_prev + i * g``, ``h = o * tanh(c)``; states outside the image are zero.

* :func:`row_lstm`: rows top to bottom;
  ``a(i, j) = gates(i, j) + bias + sum_s weight[:, :, s] @ h(i - 1, j + s - k // 2)``,
  ``c_prev = c(i - 1, j)``. ``weight [4h, h, k]``: a ``k x 1`` conv along the previous row.
* :func:`diagonal_lstm`: the skewed map (row ``i`` shifted right by ``i``, ``H x (H + W - 1)``) is
  scanned column by column, left to right, with a 2x1 column conv over the previous skewed column:
  ``a(i, j) = gates(i, j) + bias + weight[:, :, 0] @ h(i - 1, j) + weight[:, :, 1] @ h(i, j - 1)``,
  ``c_prev = c(i, j - 1)``. ``weight [4h, h, 2]``: tap 0 = row ``i - 1`` of the previous skewed
  column (the pixel above), tap 1 = row ``i`` (the pixel to the left). The kernel never builds the
  skewed map: step ``t`` simply visits the pixels ``(i, t - i)``.

Only ``h`` is differentiable. Both kernels work pixel-major: a step visits a row or an
anti-diagonal and wants each pixel's channels contiguous, so they run on channels-last tensors
(inputs in another layout are converted once) and return channels-last ``[B, h, H, W]`` tensors;
pixelfast's convolutions produce and accept that layout, so stacked layers convert nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelfast._checks import check_one_device, check_op_types
from pixelfast.ops import autocast
from pixelfast.ops._library import LOADED, require_library


def gate_index(q: int, c: int, hidden: int, color_groups: int) -> int:
    """The gate channel of gate ``q`` (0=i, 1=f, 2=o, 3=g) of hidden channel ``c``."""
    m = hidden // color_groups
    return (c // m) * 4 * m + q * m + c % m


def row_lstm(
    gates: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    color_groups: int = 1,
    return_cell: bool = False,
):
    """The Row LSTM scan as one op: ``h [B, h, H, W]`` (and ``c`` if ``return_cell``).

    ``gates [B, 4h, H, W]``: input-to-state pre-activations (gate layout in the module doc);
    ``weight [4h, h, k]`` (odd ``k``): state-to-state ``k x 1`` conv over the previous row's ``h``;
    ``bias [4h]`` or None. Equal to :func:`row_lstm_ref`. Float32 under ``torch.autocast``. The op
    checks its arguments itself (``csrc/lstm/lstm_scan.cpp``).
    """
    check_op_types("row_lstm", {"gates": gates, "weight": weight, "bias": bias}, color_groups)
    require_library()
    h, c, _ = torch.ops.pixelfast.row_lstm(gates, weight, bias, color_groups)
    return (h, c) if return_cell else h


def diagonal_lstm(
    gates: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    color_groups: int = 1,
    return_cell: bool = False,
):
    """The Diagonal LSTM scan (one direction, left to right) as one op: ``h [B, h, H, W]``.

    ``gates [B, 4h, H, W]`` in image space; ``weight [4h, h, 2]`` (tap 0: pixel above, tap 1: pixel
    to the left); ``bias [4h]`` or None. The right-to-left direction is this op on the
    width-flipped gates, flipped back (see :class:`pixelfast.nn.DiagonalBiLSTM`). Equal to
    :func:`diagonal_lstm_ref`. Float32 under ``torch.autocast``. The op checks its arguments
    itself (``csrc/lstm/lstm_scan.cpp``).
    """
    check_op_types("diagonal_lstm", {"gates": gates, "weight": weight, "bias": bias}, color_groups)
    require_library()
    h, c, _ = torch.ops.pixelfast.diagonal_lstm(gates, weight, bias, color_groups)
    return (h, c) if return_cell else h


# ------------------------------------------------------------------------------ plain twins


def _cell(pre: torch.Tensor, c_prev: torch.Tensor, color_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step on pre-activations ``[B, 4h, *rest]`` in the gate layout: ``(h, c)``."""
    batch, channels, *rest = pre.shape
    hidden = channels // 4
    split = pre.reshape(batch, color_groups, 4, hidden // color_groups, *rest)
    i, f, o = (torch.sigmoid(split[:, :, q]).reshape(batch, hidden, *rest) for q in range(3))
    g = torch.tanh(split[:, :, 3]).reshape(batch, hidden, *rest)
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


def row_lstm_ref(
    gates: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    color_groups: int = 1,
    return_cell: bool = False,
):
    """The plain-PyTorch twin of :func:`row_lstm`: a Python loop over rows, ``F.conv1d`` per row.

    Like every twin it checks nothing beyond what PyTorch itself raises (it is the tests'
    reference, independent of the compiled op): give it arguments :func:`row_lstm` accepts.
    """
    batch, channels, height, width = gates.shape
    hidden = channels // 4
    h = gates.new_zeros(batch, hidden, width)
    c = gates.new_zeros(batch, hidden, width)
    hs, cs = [], []
    for i in range(height):
        pre = gates[:, :, i] + F.conv1d(h, weight, bias, padding=weight.shape[2] // 2)
        h, c = _cell(pre, c, color_groups)
        hs.append(h)
        cs.append(c)
    h_out = torch.stack(hs, dim=2)
    return (h_out, torch.stack(cs, dim=2)) if return_cell else h_out


def skew(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, H, H + W - 1]``: row ``i`` shifted right by ``i``, zero padded."""
    batch, channels, height, width = x.shape
    out = x.new_zeros(batch, channels, height, height + width - 1)
    for i in range(height):
        out[:, :, i, i : i + width] = x[:, :, i]
    return out


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of :func:`skew`: ``[B, C, H, H + W - 1] -> [B, C, H, W]``."""
    return torch.stack([x[:, :, i, i : i + width] for i in range(x.shape[2])], dim=2)


def diagonal_lstm_ref(
    gates: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    color_groups: int = 1,
    return_cell: bool = False,
):
    """The plain-PyTorch twin of :func:`diagonal_lstm`, the paper's way.

    Skew the gates explicitly, loop over the skewed map's ``H + W - 1`` columns with a 2x1
    ``F.conv1d`` over the previous column (row ``i`` reads rows ``i - 1`` and ``i``), unskew. The
    padding the skew adds is not part of the image: its states are zeroed after each step, so every
    pixel's neighbours outside the image read as zero, as in the fused kernel. Checks nothing
    beyond what PyTorch raises, like :func:`row_lstm_ref`.
    """
    batch, channels, height, width = gates.shape
    hidden = channels // 4
    skewed = skew(gates)
    inside = skew(gates.new_ones(1, 1, height, width))[0, 0]  # [H, H + W - 1]: 1 on image pixels
    h = gates.new_zeros(batch, hidden, height)
    c = gates.new_zeros(batch, hidden, height)
    hs, cs = [], []
    for t in range(height + width - 1):
        # Pad one row on top: output row i reads rows i - 1 (tap 0) and i (tap 1).
        pre = skewed[:, :, :, t] + F.conv1d(F.pad(h, (1, 0)), weight, bias)
        h, c = _cell(pre, c, color_groups)
        h = h * inside[:, t]
        c = c * inside[:, t]
        hs.append(h)
        cs.append(c)
    h_out = unskew(torch.stack(hs, dim=3), width)
    return (h_out, unskew(torch.stack(cs, dim=3), width)) if return_cell else h_out


# ------------------------------------------------------------------ fake tensors and autograd

if LOADED:

    def _image_like(like: torch.Tensor, channels: int) -> torch.Tensor:
        batch, _, height, width = like.shape
        return torch.empty(
            (batch, channels, height, width),
            dtype=like.dtype,
            device=like.device,
            memory_format=torch.channels_last,
        )

    def _make_scan_fake(op):
        def scan_fake(gates, weight, bias, color_groups):
            # The rules the output shapes rest on, worded as the op's own checks (lstm_scan.cpp).
            torch._check_value(
                gates.dim() == 4, lambda: f"{op}: gates must be a 4-D tensor [B, 4h, H, W], got {list(gates.shape)}"
            )
            check_one_device(op, {"gates": gates, "weight": weight, "bias": bias})
            channels = gates.shape[1]
            torch._check_value(
                channels > 0 and channels % 4 == 0,  # the colour groups' share: the kernel's check
                lambda: (
                    f"{op}: gates must have 4h channels (i, f, o, g per hidden channel) with h divisible by "
                    f"color_groups={color_groups}, got {channels} channels"
                ),
            )
            hidden = channels // 4
            return _image_like(gates, hidden), _image_like(gates, hidden), _image_like(gates, 4 * hidden)

        return scan_fake

    def _scan_backward_fake(grad_h, weight, h, c, acts, color_groups):
        return _image_like(acts, acts.shape[1]), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])

    def _setup_context(ctx, inputs, output):
        _, weight, _, color_groups = inputs
        h, c, acts = output
        ctx.save_for_backward(weight, h, c, acts)
        ctx.color_groups = color_groups
        ctx.mark_non_differentiable(c, acts)  # kept for the backward only
        ctx.set_materialize_grads(False)  # no zero gradients for them either

    def _make_backward(backward_op):
        def backward(ctx, grad_h, grad_c, grad_acts):
            weight, h, c, acts = ctx.saved_tensors
            if grad_h is None:  # h unused: nothing flows back
                grad_h = torch.zeros_like(h)
            need_gates, need_weight, need_bias = ctx.needs_input_grad[:3]
            grad_gates, grad_weight, grad_bias = backward_op(grad_h, weight, h, c, acts, ctx.color_groups)
            return (
                grad_gates if need_gates else None,
                grad_weight if need_weight else None,
                grad_bias if need_bias else None,
                None,
            )

        return backward

    for _name in ("row_lstm", "diagonal_lstm"):
        torch.library.register_fake(f"pixelfast::{_name}")(_make_scan_fake(_name))
        torch.library.register_fake(f"pixelfast::{_name}_backward")(_scan_backward_fake)
        torch.library.register_autograd(
            f"pixelfast::{_name}",
            _make_backward(getattr(torch.ops.pixelfast, f"{_name}_backward")),
            setup_context=_setup_context,
        )
        autocast.register(f"pixelfast::{_name}")
