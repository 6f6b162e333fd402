"""The strongest plain-PyTorch baselines the benchmarks hold pixelfast against (bench code, not library code).

* :func:`masked_conv2d_cropped`: a masked convolution as two ``F.conv2d`` on cropped kernels over a
  padded input (the rows above; the left part of the centre row with the colour-masked centre tap),
  summed, as :class:`pixelfast.nn.VerticalConv2d` and :class:`pixelfast.nn.HorizontalConv2d` do; the
  cropped kernels are the layer's own parameters (:func:`crop_kernels`), so no masked-out tap is
  stored, multiplied or differentiated.
* :func:`row_lstm_batched`, :func:`diagonal_lstm_batched`: the LSTM scans with the gates laid out
  once for the loop (bias added, the diagonal one skewed with one pad and one reshape) and one
  matrix product per row / per diagonal; the diagonal scan computes only the diagonal's pixels, not
  the skewed map's padding.
* :func:`sample_row_cropped`: the naive sampler, but each step runs the network only on the rows that
  can affect the current row (:func:`rows_above` of them above it, and the current row), not on the
  whole canvas. It draws what ``pixelfast.sample(..., method="naive")`` draws from the same seed
  (the same uniforms and the same inverse-CDF draw), which ``tests/test_bench_baselines.py`` checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN
from pixelfast.nn import DiagonalBiLSTM, HorizontalConv2d, MaskedConv2d, RowLSTM, VerticalConv2d
from pixelfast.nn.lstm import DiagonalLSTM
from pixelfast.ops.masked_conv import make_mask
from pixelfast.sampling.api import eval_no_grad
from pixelfast.sampling.categorical import categorical, draw_uniforms
from pixelfast.sampling.precision import full_fp32

# --- masked convolution on cropped kernels ----------------------------------------------------


def crop_kernels(weight: torch.Tensor, mask_type: str, color_groups: int):
    """``(above [out, in, c, k], row [out, in, 1, c + 1], row_mask)`` from a full ``[out, in, k, k]``
    weight (``c = k // 2``): the rows above the centre, and the centre row's left part with the
    centre tap, whose colour mask ``row_mask`` is multiplied in at every call. Both kernels are new
    leaf tensors (the layer's parameters), with ``requires_grad`` as ``weight`` has it."""
    out_channels, in_channels, k, _ = weight.shape
    c = k // 2
    grad = weight.requires_grad
    above = weight.detach()[:, :, :c].clone().requires_grad_(grad)
    row = weight.detach()[:, :, c : c + 1, : c + 1].clone().requires_grad_(grad)
    row_mask = make_mask(in_channels, out_channels, k, mask_type, color_groups)[:, :, c : c + 1, : c + 1]
    return above, row, row_mask.to(weight)


def masked_conv2d_cropped(
    x: torch.Tensor, above: torch.Tensor, row: torch.Tensor, row_mask: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The masked 'same' convolution of :func:`pixelfast.ops.masked_conv2d_ref`, computed only over
    the taps the mask uses: output ``(i, j)`` = ``above`` over rows ``i - c .. i - 1`` (columns
    ``j - c .. j + c``) + ``row * row_mask`` over row ``i``, columns ``j - c .. j``."""
    c = row.shape[3] - 1
    out = F.conv2d(F.pad(x, (c, 0)), row * row_mask, bias)
    if c:
        # Drop the last row (no output reads it), pad c rows on top and c columns each side.
        out = out + F.conv2d(F.pad(x[:, :, :-1], (c, c, c, 0)), above)
    return out


# --- LSTM scans, one matrix product per row or diagonal ----------------------------------------


def _cell(pre: torch.Tensor, c_prev: torch.Tensor, color_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step on ``pre [..., 4h]`` in the gate layout (colour groups of ``[i, f, o, g]``
    blocks) and ``c_prev [..., h]``: ``(h, c)``, both ``[..., h]``."""
    *lead, channels = pre.shape
    hidden = channels // 4
    split = pre.view(*lead, color_groups, 4, hidden // color_groups)
    ifo = torch.sigmoid(split[..., :3, :])
    g = torch.tanh(split[..., 3, :])
    c = ifo[..., 1, :] * c_prev.view(*lead, color_groups, hidden // color_groups) + ifo[..., 0, :] * g
    h = ifo[..., 2, :] * torch.tanh(c)
    return h.reshape(*lead, hidden), c.reshape(*lead, hidden)


def row_lstm_batched(
    gates: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, color_groups: int = 1
) -> torch.Tensor:
    """:func:`pixelfast.ops.row_lstm_ref`'s result: the gates laid out ``[H, B, W, 4h]`` once (bias
    added), then per row one ``[B*W, k*h] x [k*h, 4h]`` product over the row above's shifted states."""
    batch, channels, height, width = gates.shape
    hidden, k = channels // 4, weight.shape[2]
    p = k // 2
    rows = gates.permute(2, 0, 3, 1).contiguous()
    rows = (rows + bias if bias is not None else rows).unbind(0)  # unbind: one gradient for all rows
    state_weight = weight.permute(2, 1, 0).reshape(k * hidden, channels)  # row s*h + q: tap s, state q
    h = gates.new_zeros(batch, width, hidden)
    c = gates.new_zeros(batch, width, hidden)
    hs = []
    for i in range(height):
        padded = F.pad(h, (0, 0, p, p))
        state = torch.cat([padded[:, s : s + width] for s in range(k)], dim=2)  # tap s: column j + s - p
        pre = torch.addmm(rows[i].view(batch * width, channels), state.view(batch * width, k * hidden), state_weight)
        h, c = _cell(pre.view(batch, width, channels), c, color_groups)
        hs.append(h)
    return torch.stack(hs).permute(1, 3, 0, 2)  # [H, B, W, h] -> [B, h, H, W]


def diagonal_lstm_batched(
    gates: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, color_groups: int = 1
) -> torch.Tensor:
    """:func:`pixelfast.ops.diagonal_lstm_ref`'s result, the paper's skewed scan done the plain way at
    its best: the gates skewed once (``[T, H, B, 4h]``, ``T = H + W - 1``, by one pad and one
    reshape, bias added), then per diagonal ``t`` one ``[B*n, 2h] x [2h, 4h]`` product over its
    ``n`` pixels only (rows ``max(0, t - W + 1) .. min(H - 1, t)``); the rest of the column is zero."""
    batch, channels, height, width = gates.shape
    hidden, steps = channels // 4, height + width - 1
    skewed = gates.permute(2, 3, 0, 1)  # [H, W, B, 4h]
    if bias is not None:
        skewed = skewed + bias
    # Skew: row i shifted right by i. Pad each row to W + H, flatten, drop the last H: [H, T, B, 4h].
    skewed = F.pad(skewed, (0, 0, 0, 0, 0, height)).reshape(height * (width + height), batch, channels)
    skewed = skewed[: height * steps].view(height, steps, batch, channels).transpose(0, 1).contiguous()
    skewed = skewed.unbind(0)  # not skewed[t] in the loop: each would back-propagate a full-size zero gradient
    state_weight = torch.cat([weight[:, :, 0], weight[:, :, 1]], dim=1).t()  # [h(i - 1), h(i)] -> 4h
    h = gates.new_zeros(height, batch, hidden)
    c = gates.new_zeros(height, batch, hidden)
    hs = []
    for t in range(steps):
        lo, hi = max(0, t - width + 1), min(height - 1, t)
        count = hi - lo + 1
        above = h[lo - 1 : hi] if lo > 0 else F.pad(h[:hi], (0, 0, 0, 0, 1, 0))
        state = torch.cat([above, h[lo : hi + 1]], dim=2).view(count * batch, 2 * hidden)
        pre = torch.addmm(skewed[t][lo : hi + 1].reshape(count * batch, channels), state, state_weight)
        h_new, c_new = _cell(pre.view(count, batch, channels), c[lo : hi + 1], color_groups)
        h = F.pad(h_new, (0, 0, 0, 0, lo, height - 1 - hi))
        c = F.pad(c_new, (0, 0, 0, 0, lo, height - 1 - hi))
        hs.append(h)
    # Unskew: [H, T, B*h] flattened, H rows of padding appended, rows of T + 1 = W + H, first W columns.
    out = torch.stack(hs, dim=1).reshape(height * steps, batch * hidden)
    out = F.pad(out, (0, 0, 0, height)).view(height, width + height, batch, hidden)[:, :width]
    return out.permute(2, 3, 0, 1)  # [H, W, B, h] -> [B, h, H, W]


# --- the row-cropped naive sampler -------------------------------------------------------------

_UNBOUNDED = (RowLSTM, DiagonalLSTM, DiagonalBiLSTM)


def rows_above(model: nn.Module) -> int | None:
    """How many rows above its own an output row of ``model`` can read (None: all of them).

    An upper bound: the sum of every layer's reach upwards (masked and vertical convs ``k // 2``,
    the horizontal conv 0, any other conv ``k - 1``; LSTM layers see every row above), so along
    any path through the network no more. Only for pixelfast's PixelCNN, GatedPixelCNN and
    PixelRNN, whose other layers read their own position only. A Gated PixelCNN with position biases:
    None (its biases belong to absolute rows, so it runs on whole images only; see ``row_step``).
    """
    if not isinstance(model, (PixelCNN, GatedPixelCNN, PixelRNN)):
        raise TypeError(f"rows_above: only PixelCNN, GatedPixelCNN and PixelRNN, got {type(model).__name__}")
    if getattr(model, "position_bias", False):
        return None

    def reach(module: nn.Module) -> int | None:
        if isinstance(module, _UNBOUNDED):
            return None
        if isinstance(module, (MaskedConv2d, VerticalConv2d)):
            return module.kernel_size // 2
        if isinstance(module, HorizontalConv2d):
            return 0
        if isinstance(module, nn.Conv2d):
            return module.kernel_size[0] - 1
        total = 0
        for child in module.children():
            part = reach(child)
            if part is None:
                return None
            total += part
        return total

    return reach(model)


def row_step(model, x, labels, reach, i, j, c, temperature, uniforms) -> None:
    """Draw sub-pixel ``(c, i, j)`` of every image of ``x`` in place, running ``model`` on rows
    ``i - reach .. i`` only (from row 0 when ``reach`` is None or reaches past the top; the whole
    image for a model with position biases, which takes only whole images)."""
    top = 0 if reach is None else max(0, i - reach)
    bottom = x.shape[2] if getattr(model, "position_bias", False) else i + 1
    logits = model(x[:, :, top:bottom], labels)
    x[:, c, i, j] = categorical(logits[:, :, c, i - top, j], temperature, uniforms[:, c, i, j])


def sample_row_cropped(
    model: nn.Module,
    n: int,
    size: tuple[int, int],
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """``n`` images, uint8 ``[n, C, H, W]``, in raster order (R, G, B within a pixel), as
    ``pixelfast.sample(model, n, size=size, labels=labels, generator=generator, method="naive")``
    draws them, but each step runs the network on the rows that can affect the current row only."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    device = next(model.parameters()).device
    height, width = size
    x = torch.zeros(n, model.in_channels, height, width, dtype=torch.int64, device=device)
    uniforms = draw_uniforms(x.shape, generator, device)
    if labels is not None:
        labels = labels.to(device)
    reach = rows_above(model)
    with eval_no_grad(model), full_fp32():
        for i in range(height):
            for j in range(width):
                for c in range(model.in_channels):
                    row_step(model, x, labels, reach, i, j, c, temperature, uniforms)
    return x.to(torch.uint8)


def one_step_per_row(model, x, labels, reach, uniforms) -> None:
    """Sub-pixel ``(0, i, 0)`` of every row ``i``: ``1 / (C * W)`` of the row-cropped sampler's work
    (every step of row ``i`` runs the network on the same rows), for timing it."""
    for i in range(x.shape[2]):
        row_step(model, x, labels, reach, i, 0, 0, 1.0, uniforms)
