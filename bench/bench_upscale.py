"""Upscaling 64 digits (7x7 -> 28x28): cached vs naive vs one forward pass of the whole model.

The model is ``SuperResolution(1, 256)`` with its defaults (scale 4, the default conditioning
network, the default Gated PixelCNN prior), untrained: speed does not depend on the weights.

* cached: ``pixelfast.upscale`` (one conditioning forward, then the engine on the prior with
  ``A(x)`` added at every sub-pixel);
* one no-grad forward pass ``model(y, x)`` of the same batch, the floor;
* naive = one forward pass x C*H*W: the whole model, conditioning network and prior, re-run per
  sub-pixel; the forward pass's measurement times the number of sub-pixels.

The row-cropped naive sampler of ``bench_sampling.py`` is left out here: the conditioning network
reads the whole low-resolution image, so a crop of rows would need the model's insides.

Run: ``pytest bench/bench_upscale.py`` (prints the ratios at the end; see ``benchutil.py``).
"""

from __future__ import annotations

import pytest
import torch
from benchutil import DEVICE, SMALL, timed

import pixelfast
from pixelfast.data import downsample, mnist_digits
from pixelfast.models import SuperResolution
from pixelfast.sampling.precision import full_fp32

SCALE = 4
COUNT, HIGH = (4, 8) if SMALL else (64, 28)
SIZES = f"{HIGH // SCALE}x{HIGH // SCALE} -> {HIGH}x{HIGH}"
GROUP = f"upscaling {COUNT} digits {SIZES}, default SuperResolution, {DEVICE.type}"
INFO = {"table": "upscale", "case": f"SuperResolution(1, 256), untrained; {COUNT} digits {SIZES}"}


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    if SMALL:
        model = SuperResolution(
            1, 256, prior_config={"hidden_channels": 6, "num_layers": 2}, conditioning_channels=4, conditioning_blocks=1
        )
        high = mnist_digits("test").images[:COUNT, :, :HIGH, :HIGH].long()
    else:
        model = SuperResolution(1, 256)
        high = mnist_digits("test").images[:COUNT].long()
    model = model.eval().to(DEVICE)
    low = downsample(high, SCALE).to(DEVICE)
    with torch.no_grad():  # start the device (context, cuDNN) before anything is timed
        model(high[:1].to(DEVICE), low[:1])
    return model, low, high.to(DEVICE)


def bench_cached_upscale(benchmark, case):
    model, low, _ = case
    benchmark.group = GROUP
    timed(
        benchmark,
        lambda: pixelfast.upscale(model, low, generator=0, method="cached", progress=False),
        impl="cached",
        role="fast",
        **INFO,
    )


def bench_one_forward_pass(benchmark, case):
    model, low, high = case
    benchmark.group = GROUP
    with torch.no_grad(), full_fp32():  # as pixelfast.upscale runs it
        timed(
            benchmark,
            lambda: model(high, low),
            impl="one forward pass",
            role="floor",
            derived=[{"impl": "naive = one forward pass x C*H*W", "role": "baseline", "scale": high[0].numel()}],
            **INFO,
        )
