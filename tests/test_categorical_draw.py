"""The engine's categorical draw (``csrc/sampler/pointwise.h``: its own vectorised exponential, a
running maximum in 8 lanes, the sum in level order) against the inverse CDF computed here with
Python's exact-to-rounding ``math.exp`` and ``math.fsum``: uniforms placed a relative 1e-9 below and
above a level's cumulative probability must draw that level and the next one. A draw whose
exponentials are off by more than about 1e-9 (relative) lands on the wrong side of some of them."""

from __future__ import annotations

import math

import pytest
import torch

from pixelfast.sampling.cached import run_engine
from pixelfast.sampling.plan import PIXEL, PlanBuilder
from pixelfast.sampling.plan_format import encode_op

MARGIN = 1e-9


def constant_logits_plan(logits: torch.Tensor, dtype: torch.dtype):
    """A plan whose logits at every pixel are `logits` (a conv's bias; its one tap, on the row
    above, has zero weights), then a draw."""
    levels = logits.numel()
    b = PlanBuilder(dtype, torch.device("cpu"))
    b.buffer(1)
    out = b.buffer(levels)
    tap = b.weight(torch.zeros(1, levels))
    bias = b.weight(logits)
    program = encode_op("conv", ((-1, 0, 1, tap),), phase=PIXEL, dst=out, src=0, groups=1, bias=bias)
    program += encode_op("sample", phase=PIXEL, dst=0, src=out, groups=1)
    b.plan.buffers[0][1] = 2
    b.plan.program = program
    return b.plan


def boundaries(logits: list[float], temperature: float) -> list[tuple[float, int]]:
    """(uniform, the level it must draw) just below and just above the cumulative probability of
    each level that, like the next one, moves it by well over the margin."""
    top = max(logits)
    weights = [math.exp((x - top) / temperature) for x in logits]
    total = math.fsum(weights)
    cases = []
    for level in range(len(logits) - 1):
        cdf = math.fsum(weights[: level + 1]) / total
        steps = min(weights[level], weights[level + 1]) / total
        if steps > 1e3 * MARGIN * cdf and cdf * (1 + MARGIN) < 1:
            cases += [(cdf * (1 - MARGIN), level), (cdf * (1 + MARGIN), level + 1)]
    return cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
@pytest.mark.parametrize("levels, scale", [(256, 4.0), (256, 40.0), (13, 1.0), (3, 0.3)])
def test_the_draw_is_the_inverse_cdf_of_exact_exponentials(dtype, temperature, levels, scale):
    generator = torch.Generator().manual_seed(levels + int(scale * 10))
    logits = (torch.randn(levels, generator=generator, dtype=torch.float64) * scale).to(dtype)
    if levels > 8:
        logits[::7] -= 900.0  # exponentials that underflow to zero sit among the others
    cases = boundaries([float(x) for x in logits], temperature)
    assert len(cases) >= 2  # the test checks something
    uniforms = torch.tensor([u for u, _ in cases], dtype=torch.float64).reshape(1, 1, 1, -1)
    image = torch.zeros(uniforms.shape, dtype=torch.long)
    known = torch.zeros(uniforms.shape, dtype=torch.bool)
    drawn, _ = run_engine(constant_logits_plan(logits, dtype), image, known, uniforms, None, temperature, levels, False)
    expected = torch.tensor([level for _, level in cases]).reshape(uniforms.shape)
    mismatches = (drawn != expected).nonzero().tolist()
    assert not mismatches, f"{len(mismatches)} of {len(cases)} draws on the wrong side of a boundary"
