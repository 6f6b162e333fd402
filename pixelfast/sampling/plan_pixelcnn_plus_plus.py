"""PixelCNN++'s lowering (:class:`~pixelfast.models.PixelCNNPlusPlus`): its strided U-net on the
engine's grids, registered with :func:`pixelfast.sampling.plan.lowers`.

Every map of the U-net is stored at full-size coordinates: the map at ``1/s`` of the image's size
(``s`` = 1, 2, 4) keeps its position ``(i, j)`` at ``(s i, s j)`` and its ops run only there
(:meth:`~pixelfast.sampling.plan.PlanBuilder.on_grid`, period ``s``). So

* a conv of a map at scale ``s`` reads taps ``s`` apart;
* a stride-2 conv is a conv of the finer map evaluated on the coarser grid (period ``2 s``);
* a stride-2 transposed conv is four convs, one per parity of the output position (period ``2 s``,
  residues 0 or ``s``), each reading the input positions that reach that parity;

and a half- or quarter-size layer runs exactly when its input position is complete, once.

The ``u`` stream reads the rows above only: it runs in the row phase. The ``ul`` stream reads the
pixels to the left too: it runs in the pixel phase, once per pixel (one group: the network does not
read the pixel's own colours, they meet in the mixture). The head runs per colour: the ``mixture``
op turns the parameters into colour ``g``'s logits given the colours drawn before it, then the draw.

The first layers read the image and a channel of ones (:class:`PixelCNNPlusPlus`'s ``u_init``,
``ul_init_above``, ``ul_init_left``) and are shifted down or right, which zeroes the first row or
column, bias included. The ones are a one-channel buffer, set to 1 in the image and 0 in the
padding, and each layer's bias becomes a weight on the ones at its unshifted output position: it is
there exactly where the shifted output is not zero.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelfast.models.pixelcnn_plus_plus import RESOLUTIONS, PixelCNNPlusPlus
from pixelfast.nn.gated_resnet import GatedResNet
from pixelfast.nn.logistic_mixture import DiscretizedLogisticMixture
from pixelfast.nn.shifted_conv import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
)
from pixelfast.sampling.plan import PIXEL, ROW, PlanBuilder, UnsupportedModelError, lower_module, lowers

SHIFTED_CONVS = (DownShiftedConv2d, DownRightShiftedConv2d)
TRANSPOSED_CONVS = (DownShiftedConvTranspose2d, DownRightShiftedConvTranspose2d)


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The rows above and the columns left of the output position a shifted conv's first tap reads."""
    kh, kw = conv.kernel_size
    return kh - 1, (kw // 2 if isinstance(conv, DownShiftedConv2d) else kw - 1)


def _taps(weight: torch.Tensor, top: int, left: int, scale: int, shift: tuple[int, int] = (0, 0)) -> list:
    """Taps of a conv at ``scale``: output ``(r, j)`` reads input ``(r + scale (ky - top) - shift[0],
    j + scale (kx - left) - shift[1])``; one run per kernel row at scale 1, one tap per run else."""
    kh, kw = weight.shape[2:]
    if scale == 1:
        return [(ky - top - shift[0], -left - shift[1], weight[:, :, ky, :]) for ky in range(kh)]
    return [
        (scale * (ky - top) - shift[0], scale * (kx - left) - shift[1], weight[:, :, ky, kx : kx + 1])
        for ky in range(kh)
        for kx in range(kw)
    ]


def _conv(b: PlanBuilder, dst: int, src: int, conv: nn.Conv2d, phase: int, scale: int, accumulate=False) -> None:
    """A shifted conv of the map ``src`` at ``scale``, on the grid the caller set."""
    top, left = _padding(conv)
    b.conv(dst, src, phase, 1, _taps(conv.weight, top, left, scale), bias=conv.bias, accumulate=accumulate)


def _first_conv(b: PlanBuilder, dst: int, ones: int, conv: nn.Conv2d, phase: int, shift, accumulate: bool) -> None:
    """A first layer, on ``[image, ones]`` and shifted by ``shift`` (rows, columns), into ``dst``."""
    top, left = _padding(conv)
    colours = conv.in_channels - 1
    on_ones = conv.weight[:, colours:].clone()
    on_ones[:, 0, -1, left] += conv.bias  # the tap at the unshifted output position
    b.conv(dst, 0, phase, 1, _taps(conv.weight[:, :colours], top, left, 1, shift), accumulate=accumulate)
    b.conv(dst, ones, phase, 1, _taps(on_ones, top, left, 1, shift), accumulate=True)


def _transposed_conv(b: PlanBuilder, src: int, conv: nn.ConvTranspose2d, phase: int, scale: int) -> int:
    """A stride-2 transposed conv from the map at ``2 scale`` to the map at ``scale``: per parity
    ``(a, c)`` of the output position ``(p, q)``, the taps ``(ky, kx)`` with ``p - ky`` and
    ``q + left - kx`` even (``left``: the columns cropped on the left), reading input
    ``((p - ky) / 2, (q + left - kx) / 2)``."""
    dst = b.buffer(conv.out_channels)
    kh, kw = conv.kernel_size
    left = kw // 2 if isinstance(conv, DownShiftedConvTranspose2d) else 0
    weight = conv.weight  # [in, out, kh, kw]
    for a in range(2):
        for c in range(2):
            taps = [
                (-scale * ky, scale * (left - kx), weight[:, :, ky, kx].t()[:, :, None])
                for ky in range(kh)
                for kx in range(kw)
                if (a - ky) % 2 == 0 and (c + left - kx) % 2 == 0
            ]
            with b.on_grid(2 * scale, a * scale, c * scale):
                b.conv(dst, src, phase, 1, taps, bias=conv.bias)
    return dst


@lowers(GatedResNet, reads=(*SHIFTED_CONVS, nn.Conv2d, nn.Dropout, nn.Embedding))
def _lower_gated_resnet(block: GatedResNet, b: PlanBuilder, x: int, aux: list[int], phase: int, scale: int) -> int:
    """``x + a * sigmoid(b)``; ``aux``: the buffers whose concatenation is the block's auxiliary input.

    ``skip(concat_elu(cat(aux)))`` is split by part: concat_elu orders its channels ``[elu(parts),
    elu(-parts)]``, so part ``p``'s share of the 1x1 weight is its columns in both halves.
    """
    n = block.channels
    act = b.buffer(2 * n)
    b.concat_elu(act, x, phase)
    c = b.buffer(n)
    _conv(b, c, act, block.conv_in, phase, scale)
    if block.skip is not None:
        weight = block.skip.weight[:, :, 0, 0]
        total, offset = sum(b.plan.buffers[part][0] for part in aux), 0
        for part in aux:
            width = b.plan.buffers[part][0]
            part_act = b.buffer(2 * width)
            b.concat_elu(part_act, part, phase)
            positive, negative = weight[:, offset : offset + width], weight[:, total + offset : total + offset + width]
            share = torch.cat([positive, negative], 1)
            bias = block.skip.bias if offset == 0 else None
            b.conv(c, part_act, phase, 1, [(0, 0, share[:, :, None])], bias=bias, accumulate=True)
            offset += width
    act = b.buffer(2 * n)
    b.concat_elu(act, c, phase)
    y = b.buffer(2 * n)
    _conv(b, y, act, block.conv_out, phase, scale)  # dropout: the identity in a plan
    if block.class_bias is not None:
        b.class_bias(y, block.class_bias, 1, phase)
    out = b.buffer(n)
    b.sigmoid_gate(out, y, 1, phase)
    b.add(out, x, 1, phase)
    return out


@lowers(DiscretizedLogisticMixture, reads=(nn.Conv2d,))
def _lower_mixture_head(head: DiscretizedLogisticMixture, b: PlanBuilder, features: int) -> None:
    """``params = out(elu(features))`` once per pixel; per colour, its logits and the draw."""
    if b.head_logits is not None or b.logit_scale != 1.0 or b.condition_logits:
        raise UnsupportedModelError(
            "the cached engine does not combine a logistic-mixture head's logits with others "
            "(guidance, or a super-resolution condition); use method='naive'"
        )
    act = b.buffer(b.plan.buffers[features][0])
    b.elu(act, features, 1)
    params = b.buffer(head.out.out_channels)
    b.conv(params, act, PIXEL, 1, [(0, 0, head.out.weight[:, :, 0, :])], bias=head.out.bias)
    logits = b.buffer(head.image_channels * head.levels)
    b.mixture(logits, params, head.image_channels)
    b.sample(logits, head.image_channels)


@lowers(
    PixelCNNPlusPlus,
    reads=(GatedResNet, *SHIFTED_CONVS, *TRANSPOSED_CONVS, DiscretizedLogisticMixture, nn.ModuleList),
)
def _lower_pixelcnn_plus_plus(model: PixelCNNPlusPlus, b: PlanBuilder) -> None:
    """The model's ``_features`` op by op, each map on its grid, then the head."""
    n = model.nr_filters
    ones = b.buffer(1)
    b.conv(ones, ones, ROW, 1, [], bias=torch.ones(1))  # no taps: the bias alone, in the image only
    u = b.buffer(n)
    _first_conv(b, u, ones, model.u_init, ROW, (1, 0), accumulate=False)
    ul = b.buffer(n)  # the part above, for the whole row; then the part on the left, per pixel
    _first_conv(b, ul, ones, model.ul_init_above, ROW, (1, 0), accumulate=False)
    _first_conv(b, ul, ones, model.ul_init_left, PIXEL, (0, 1), accumulate=True)
    us, uls = [u], [ul]
    for r in range(RESOLUTIONS):
        scale = 2**r
        with b.on_grid(scale):
            for u_block, ul_block in zip(model.up_u[r], model.up_ul[r]):
                u = lower_module(u_block, b, u, [], ROW, scale)
                ul = lower_module(ul_block, b, ul, [u], PIXEL, scale)
                us.append(u)
                uls.append(ul)
        if r < RESOLUTIONS - 1:
            with b.on_grid(2 * scale):
                u_half, ul_half = b.buffer(n), b.buffer(n)
                _conv(b, u_half, u, model.downsample_u[r], ROW, scale)
                _conv(b, ul_half, ul, model.downsample_ul[r], PIXEL, scale)
            u, ul = u_half, ul_half
            us.append(u)
            uls.append(ul)
    u, ul = us.pop(), uls.pop()
    for r in range(RESOLUTIONS):
        scale = 2 ** (RESOLUTIONS - 1 - r)
        with b.on_grid(scale):
            for u_block, ul_block in zip(model.down_u[r], model.down_ul[r]):
                u = lower_module(u_block, b, u, [us.pop()], ROW, scale)
                ul = lower_module(ul_block, b, ul, [u, uls.pop()], PIXEL, scale)
        if r < RESOLUTIONS - 1:
            u = _transposed_conv(b, u, model.upsample_u[r], ROW, scale // 2)
            ul = _transposed_conv(b, ul, model.upsample_ul[r], PIXEL, scale // 2)
    lower_module(model.head, b, ul)
