"""The fused masked convolution against two plain ones, forward and forward + backward.

* fused: ``pixelfast.ops.masked_conv2d`` (computes only the taps the mask uses; channels-last output);
* conv2d(w*mask): ``F.conv2d(x, weight * mask)``, the usual PixelCNN layer
  (``pixelfast.ops.masked_conv2d_ref``);
* cropped kernels: ``baselines.masked_conv2d_cropped``, two ``F.conv2d`` on cropped kernels over a
  padded input (the rows above; the left part of the centre row with the colour-masked centre tap),
  summed, as ``pixelfast.nn.VerticalConv2d`` / ``HorizontalConv2d`` do: no masked-out tap is
  stored or computed, so this is the strongest plain way.

Cases: the first layer (3 -> 192, 7x7, mask A) and 192 -> 192 layers (7x7 and 3x3, mask B), each
with one and with three colour groups, batch 16, 32x32, every side given the same input, as a
contiguous tensor and as a channels-last one (a plain convolution may run faster on the latter);
backward gets the output gradient in each side's own output layout, as the next layer of its kind
would hand it back.

Run: ``pytest bench/bench_masked_conv.py`` (the comparisons print at the end); on a GPU with
``PIXELFAST_BENCH_DEVICE=cuda`` (see ``benchutil.py``).
"""

from __future__ import annotations

import pytest
import torch
from baselines import crop_kernels, masked_conv2d_cropped
from benchutil import DEVICE, SMALL, timed

from pixelfast.ops import masked_conv2d, masked_conv2d_ref

BATCH, SIZE = (2, 8) if SMALL else (16, 32)
WIDTH = 12 if SMALL else 192
LAYERS = {
    # name: (in, out, kernel, mask, input needs grad)
    f"first layer 3->{WIDTH} 7x7 mask A": (3, WIDTH, 7, "A", False),
    f"{WIDTH}->{WIDTH} 7x7 mask B": (WIDTH, WIDTH, 7, "B", True),
    f"{WIDTH}->{WIDTH} 3x3 mask B": (WIDTH, WIDTH, 3, "B", True),
}
CASES = [(layer, groups) for layer in LAYERS for groups in (1, 3)]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}
IMPLS = {"fused": "fast", "conv2d(w*mask)": "baseline", "cropped kernels": "baseline"}


def make_case(layer, groups, layout, impl):
    """``(fn, leaves, grad_out)``: the side's call and its differentiable inputs, each side with
    its own copies of the same values (the cropped kernels are that layer's own parameters)."""
    cin, cout, k, mask_type, input_grad = LAYERS[layer]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, cin, SIZE, SIZE, generator=generator)
    weight = torch.randn(cout, cin, k, k, generator=generator).mul_(0.05)
    grad_out = torch.randn(BATCH, cout, SIZE, SIZE, generator=generator).to(DEVICE)
    x = x.to(DEVICE).contiguous(memory_format=LAYOUTS[layout]).requires_grad_(input_grad)
    weight = weight.to(DEVICE).requires_grad_(True)
    bias = torch.zeros(cout, device=DEVICE, requires_grad=True)
    if impl == "cropped kernels":
        above, row, row_mask = crop_kernels(weight, mask_type, groups)
        return (lambda: masked_conv2d_cropped(x, above, row, row_mask, bias)), (x, above, row, bias), grad_out
    fn = masked_conv2d if impl == "fused" else masked_conv2d_ref
    return (lambda: fn(x, weight, bias, mask_type, groups)), (x, weight, bias), grad_out


def describe(benchmark, direction, layer, groups, layout, impl):
    colours = f"{groups} colour group{'s' if groups > 1 else ''}"
    benchmark.group = f"masked_conv2d {direction}, {layer}, {colours}, {layout} input, B={BATCH} {SIZE}x{SIZE}"
    return {
        "impl": impl,
        "role": IMPLS[impl],
        "table": f"masked_conv2d {direction}",
        "case": f"{layer}, {colours}, {layout}",
    }


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("layer, groups", CASES)
def bench_forward(benchmark, layer, groups, layout, impl):
    info = describe(benchmark, "forward", layer, groups, layout, impl)
    fn, _, _ = make_case(layer, groups, layout, impl)

    def run():
        with torch.no_grad():
            return fn()

    timed(benchmark, run, **info)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("layer, groups", CASES)
def bench_forward_backward(benchmark, layer, groups, layout, impl):
    info = describe(benchmark, "forward+backward", layer, groups, layout, impl)
    fn, leaves, grad_out = make_case(layer, groups, layout, impl)
    with torch.no_grad():  # the gradient in the side's own output layout
        grad_out = torch.empty_like(fn()).copy_(grad_out)

    def run():
        fn().backward(grad_out)
        for leaf in leaves:
            leaf.grad = None

    timed(benchmark, run, **info)
