"""The cached sampling engine against the naive sampler and against one forward pass, CPU.

* naive re-runs the whole network per sub-pixel; it is far too slow to finish, so a few of its steps
  are timed and multiplied by the step count (every step costs the same: one full forward pass);
* one no-grad forward pass of the same batch is the physical floor: the engine does that much work;
* scaling: cached sampling time at 16x16, 32x32 and 64x64.

Run: ``pytest bench/bench_sampling.py`` (prints ratios and the scaling exponent at the end).
"""

from __future__ import annotations

import pytest
import torch

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN
from pixelfast.sampling.naive import sample_naive

NAIVE_STEPS = 3  # naive steps actually timed


def reference_model():
    """The issue's reference configuration: PixelCNN, RGB, 256 levels, h = 192, 15 residual blocks."""
    torch.manual_seed(0)
    return PixelCNN(in_channels=3, levels=256, hidden_channels=192, num_layers=15).eval()


def shipped_model():
    from pixelfast.checkpoint import load_model
    from pixelfast.cli import default_checkpoint

    return load_model(str(default_checkpoint())).eval()


def pixelrnn(kind):
    """The PixelRNN paper's MNIST configuration (7 layers, h = 16), 256 levels, untrained weights."""

    def build():
        torch.manual_seed(0)
        return PixelRNN(kind=kind, in_channels=1, levels=256, hidden_channels=16, num_layers=7).eval()

    return build


MODELS = {
    "PixelCNN h=192 15 blocks, 16x3x32x32": (reference_model, 16, (32, 32)),
    "shipped Gated MNIST model, 64x1x28x28": (shipped_model, 64, (28, 28)),
    "PixelRNN row h=16 7 layers, 16x1x28x28": (pixelrnn("row"), 16, (28, 28)),
    "PixelRNN diagonal h=16 7 layers, 16x1x28x28": (pixelrnn("diagonal"), 16, (28, 28)),
}


def labels_for(model, n):
    return None if model.num_classes is None else torch.arange(n) % model.num_classes


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    build, n, size = MODELS[request.param]
    return request.param, build(), n, size


def bench_cached_sampling(benchmark, case):
    name, model, n, size = case
    benchmark.group = f"sampling {name}: cached vs naive"
    benchmark.extra_info["also_in"] = [f"sampling {name}: cached vs one forward pass"]
    benchmark.extra_info["impl"] = "fast"
    labels = labels_for(model, n)
    benchmark.pedantic(
        lambda: pixelfast.sample(model, n, size=size, labels=labels, generator=0, method="cached", progress=False),
        rounds=2, warmup_rounds=0,
    )
    benchmark.extra_info["seconds"] = benchmark.stats.stats.median


def bench_naive_sampling_steps(benchmark, case):
    name, model, n, size = case
    steps = model.in_channels * size[0] * size[1]
    benchmark.group = f"sampling {name}: cached vs naive"
    benchmark.extra_info["impl"] = "plain"
    benchmark.extra_info["scale"] = steps / NAIVE_STEPS  # extrapolated to the whole image
    x = torch.zeros(n, model.in_channels, *size, dtype=torch.long)
    known = torch.ones_like(x, dtype=torch.bool)
    known.view(n, -1)[:, :NAIVE_STEPS] = False  # only the first sub-pixels are drawn
    known = known.view_as(x)
    labels = labels_for(model, n)
    with torch.no_grad():
        benchmark.pedantic(lambda: sample_naive(model, x, known, labels, 1.0, None, False), rounds=2, warmup_rounds=1)


def bench_one_forward_pass(benchmark, case):
    name, model, n, size = case
    benchmark.group = f"sampling {name}: cached vs one forward pass"
    benchmark.extra_info["impl"] = "plain"
    x = torch.randint(0, model.levels, (n, model.in_channels, *size))
    labels = labels_for(model, n)
    with torch.no_grad():
        benchmark.pedantic(lambda: model(x, labels), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("side", [16, 32, 64])
def bench_cached_scaling(benchmark, side):
    torch.manual_seed(0)
    model = GatedPixelCNN(in_channels=3, levels=256, hidden_channels=48, num_layers=6).eval()
    benchmark.group = "cached sampling time vs image size (Gated h=48, 6 layers, batch 16)"
    benchmark.extra_info["pixels"] = side * side
    benchmark.pedantic(
        lambda: pixelfast.sample(model, 16, size=(side, side), generator=0, method="cached", progress=False),
        rounds=2, warmup_rounds=0,
    )
