"""Upscaling 64 digits (7x7 -> 28x28): cached vs naive vs one forward pass of the whole model.

The model is ``SuperResolution(1, 256)`` with its defaults (scale 4, the default conditioning
network, the default Gated PixelCNN prior), untrained: speed does not depend on the weights.

* cached: ``pixelfast.upscale`` (one conditioning forward, then the engine on the prior with
  ``A(x)`` added at every sub-pixel);
* naive re-runs the whole model, conditioning network and prior, per sub-pixel; a few of its steps
  are timed and multiplied by the step count (every step costs one full forward pass);
* one no-grad forward pass ``model(y, x)`` of the same batch.

Run: ``pytest bench/bench_upscale.py`` (prints the ratios at the end; see ``benchutil.py``).
"""

from __future__ import annotations

import pytest
import torch
from benchutil import DEVICE, SMALL, timed

import pixelfast
from pixelfast.data import downsample, mnist_digits
from pixelfast.models import SuperResolution
from pixelfast.sampling.naive import sample_naive
from pixelfast.sampling.precision import full_fp32

NAIVE_STEPS = 3  # naive steps actually timed
SCALE = 4
GROUP = f"upscaling {'4' if SMALL else '64'} digits {{}}, default SuperResolution, {DEVICE.type}"


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    if SMALL:
        model = SuperResolution(
            1, 256, prior_config={"hidden_channels": 6, "num_layers": 2}, conditioning_channels=4, conditioning_blocks=1
        )
        high = mnist_digits("test").images[:4, :, :8, :8].long()
    else:
        model = SuperResolution(1, 256)
        high = mnist_digits("test").images[:64].long()
    model = model.eval().to(DEVICE)
    low = downsample(high, SCALE).to(DEVICE)
    with torch.no_grad():  # start the device (context, cuDNN) before anything is timed
        model(high[:1].to(DEVICE), low[:1])
    return model, low, high.to(DEVICE)


def bench_cached_upscale(benchmark, case):
    model, low, _ = case
    benchmark.group = GROUP.format("cached vs naive")
    benchmark.extra_info["also_in"] = [GROUP.format("cached vs one forward pass")]
    benchmark.extra_info["impl"] = "fast"
    timed(
        benchmark,
        lambda: pixelfast.upscale(model, low, generator=0, method="cached", progress=False),
        rounds=2,
        warmup_rounds=0,
    )


def bench_naive_upscale_steps(benchmark, case):
    model, low, high = case
    benchmark.group = GROUP.format("cached vs naive")
    benchmark.extra_info["impl"] = "plain"
    benchmark.extra_info["scale"] = high[0].numel() / NAIVE_STEPS  # extrapolated to the whole image
    y = torch.zeros_like(high)
    known = torch.ones_like(y, dtype=torch.bool)
    known.view(len(y), -1)[:, :NAIVE_STEPS] = False  # only the first sub-pixels are drawn
    with torch.no_grad(), full_fp32():  # as pixelfast.upscale runs it
        timed(benchmark, lambda: sample_naive(model, y, known, low, 1.0, None, False), rounds=2, warmup_rounds=1)


def bench_one_forward_pass(benchmark, case):
    model, low, high = case
    benchmark.group = GROUP.format("cached vs one forward pass")
    benchmark.extra_info["impl"] = "plain"
    with torch.no_grad(), full_fp32():
        timed(benchmark, lambda: model(high, low), rounds=3, warmup_rounds=1)
