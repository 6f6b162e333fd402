"""Fused masked convolution vs the dense reference ``F.conv2d(x, weight * mask)``.

Run: ``pytest bench/bench_masked_conv.py`` (prints the speed-ups at the end); on a GPU with
``PIXELFAST_BENCH_DEVICE=cuda`` (see ``benchutil.py``).
"""

from __future__ import annotations

import pytest
import torch
from benchutil import DEVICE, SMALL, timed

from pixelfast.ops import masked_conv2d, masked_conv2d_ref

CASES = {
    # name: (batch, in, out, size, kernel, mask, input needs grad)
    "a first layer 3->192 7x7 A": (16, 3, 192, 32, 7, "A", False),
    "b 192->192 7x7 B": (16, 192, 192, 32, 7, "B", True),
    "c 192->192 3x3 B": (16, 192, 192, 32, 3, "B", True),
}
if SMALL:
    CASES = {
        name: (2, cin and min(cin, 12), 12, 8, k, mask, grad) for name, (_, cin, _, _, k, mask, grad) in CASES.items()
    }
IMPLS = {"fast": masked_conv2d, "plain": masked_conv2d_ref}


def make_case(name):
    batch, cin, cout, size, k, mask_type, input_grad = CASES[name]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, size, size, generator=generator).requires_grad_(input_grad)
    weight = torch.randn(cout, cin, k, k, generator=generator).mul_(0.05).requires_grad_(True)
    bias = torch.zeros(cout, requires_grad=True)
    grad_out = torch.randn(batch, cout, size, size, generator=generator)
    if DEVICE.type != "cpu":
        x = x.detach().to(DEVICE).requires_grad_(input_grad)
        weight = weight.detach().to(DEVICE).requires_grad_(True)
        bias = bias.detach().to(DEVICE).requires_grad_(True)
        grad_out = grad_out.to(DEVICE)
    return x, weight, bias, mask_type, grad_out


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def bench_forward(benchmark, case, impl):
    x, weight, bias, mask_type, _ = make_case(case)
    fn = IMPLS[impl]
    benchmark.group = f"masked_conv2d forward, {case}"
    benchmark.extra_info["impl"] = impl

    def run():
        with torch.no_grad():
            return fn(x, weight, bias, mask_type, 3)

    timed(benchmark, run, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def bench_forward_backward(benchmark, case, impl):
    x, weight, bias, mask_type, grad_out = make_case(case)
    fn = IMPLS[impl]
    benchmark.group = f"masked_conv2d forward+backward, {case}"
    benchmark.extra_info["impl"] = impl

    # Each op gets its gradient in its own output's layout, as the next layer of its kind would
    # hand it back (channels-last for the fused op, contiguous for the reference).
    with torch.no_grad():
        layout = fn(x, weight, bias, mask_type, 3)
    grad_out = torch.empty_like(layout).copy_(grad_out)

    def run():
        out = fn(x, weight, bias, mask_type, 3)
        out.backward(grad_out)
        weight.grad = bias.grad = x.grad = None

    timed(benchmark, run, rounds=5, warmup_rounds=1)
