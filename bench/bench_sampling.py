"""The cached sampling engine against the naive sampler and against one forward pass.

* naive re-runs the whole network per sub-pixel; it is far too slow to finish, so a few of its steps
  are timed and multiplied by the step count (every step costs the same: one full forward pass);
* one no-grad forward pass of the same batch is the physical floor: the engine does that much work;
* scaling: cached sampling time at 16x16, 32x32 and 64x64;
* the CPU engine at 1, 2, 4, 8, 16 threads (always on the CPU).

Run: ``pytest bench/bench_sampling.py`` (prints ratios and the scaling exponent at the end); on a GPU
with ``PIXELFAST_BENCH_DEVICE=cuda``, other batch sizes with ``PIXELFAST_BENCH_BATCHES=16,256``
(see ``benchutil.py``).
"""

from __future__ import annotations

import os

import pytest
import torch
from benchutil import DEVICE, SMALL, int_list, timed

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN
from pixelfast.sampling.naive import sample_naive
from pixelfast.sampling.precision import full_fp32

NAIVE_STEPS = 3  # naive steps actually timed


def reference_model():
    """The issue's reference configuration: PixelCNN, RGB, 256 levels, h = 192, 15 residual blocks."""
    torch.manual_seed(0)
    if SMALL:
        return PixelCNN(in_channels=3, levels=256, hidden_channels=12, num_layers=2).eval()
    return PixelCNN(in_channels=3, levels=256, hidden_channels=192, num_layers=15).eval()


def shipped_model():
    from pixelfast.checkpoint import load_model
    from pixelfast.cli import default_checkpoint

    return load_model(str(default_checkpoint())).eval()


def pixelrnn(kind):
    """The PixelRNN paper's MNIST configuration (7 layers, h = 16), 256 levels, untrained weights."""

    def build():
        torch.manual_seed(0)
        return PixelRNN(kind=kind, in_channels=1, levels=256, hidden_channels=16, num_layers=2 if SMALL else 7).eval()

    return build


# name: (build, default batch, channels, size)
MODELS = {
    "PixelCNN h=192 15 blocks": (reference_model, 16, 3, (32, 32)),
    "shipped Gated MNIST model": (shipped_model, 64, 1, (28, 28)),
    "PixelRNN row h=16 7 layers": (pixelrnn("row"), 16, 1, (28, 28)),
    "PixelRNN diagonal h=16 7 layers": (pixelrnn("diagonal"), 16, 1, (28, 28)),
}
BATCHES = int_list("PIXELFAST_BENCH_BATCHES", [])  # empty: each model's own batch
CASES = [
    (name, n)
    for name, (_, default, _, _) in MODELS.items()
    for n in ([max(2, b // 64) for b in BATCHES] if SMALL and BATCHES else BATCHES or [2 if SMALL else default])
]


def labels_for(model, n):
    return None if model.num_classes is None else torch.arange(n, device=DEVICE) % model.num_classes


@pytest.fixture(scope="module", params=CASES, ids=[f"{name} {n}" for name, n in CASES])
def case(request):
    name, n = request.param
    build, _, channels, size = MODELS[name]
    size = (6, 6) if SMALL else size
    model = build().to(DEVICE)
    with torch.no_grad():  # start the device (context, cuDNN) before anything is timed
        model(torch.zeros(1, channels, *size, dtype=torch.long, device=DEVICE), labels_for(model, 1))
    return f"{name}, {n}x{channels}x{size[0]}x{size[1]}, {DEVICE.type}", model, n, size


def bench_cached_sampling(benchmark, case):
    name, model, n, size = case
    benchmark.group = f"sampling {name}: cached vs naive"
    benchmark.extra_info["also_in"] = [f"sampling {name}: cached vs one forward pass"]
    benchmark.extra_info["impl"] = "fast"
    labels = labels_for(model, n)
    timed(
        benchmark,
        lambda: pixelfast.sample(model, n, size=size, labels=labels, generator=0, method="cached", progress=False),
        rounds=1 if DEVICE.type == "cuda" else 2,
        warmup_rounds=0,  # the GPU engine is slow (one block per image)
    )
    benchmark.extra_info["seconds"] = benchmark.stats.stats.median


def bench_naive_sampling_steps(benchmark, case):
    name, model, n, size = case
    steps = model.in_channels * size[0] * size[1]
    benchmark.group = f"sampling {name}: cached vs naive"
    benchmark.extra_info["impl"] = "plain"
    benchmark.extra_info["scale"] = steps / NAIVE_STEPS  # extrapolated to the whole image
    x = torch.zeros(n, model.in_channels, *size, dtype=torch.long, device=DEVICE)
    known = torch.ones_like(x, dtype=torch.bool)
    known.view(n, -1)[:, :NAIVE_STEPS] = False  # only the first sub-pixels are drawn
    known = known.view_as(x)
    labels = labels_for(model, n)
    with torch.no_grad(), full_fp32():  # as pixelfast.sample runs it
        timed(benchmark, lambda: sample_naive(model, x, known, labels, 1.0, None, False), rounds=2, warmup_rounds=1)


def bench_one_forward_pass(benchmark, case):
    name, model, n, size = case
    benchmark.group = f"sampling {name}: cached vs one forward pass"
    benchmark.extra_info["impl"] = "plain"
    x = torch.randint(0, model.levels, (n, model.in_channels, *size), device=DEVICE)
    labels = labels_for(model, n)
    with torch.no_grad(), full_fp32():
        timed(benchmark, lambda: model(x, labels), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("side", [4, 8] if SMALL else [16, 32, 64])
def bench_cached_scaling(benchmark, side):
    torch.manual_seed(0)
    model = GatedPixelCNN(in_channels=3, levels=256, hidden_channels=48, num_layers=6).eval().to(DEVICE)
    benchmark.group = f"cached sampling time vs image size (Gated h=48, 6 layers, batch 16), {DEVICE.type}"
    benchmark.extra_info["pixels"] = side * side
    timed(
        benchmark,
        lambda: pixelfast.sample(model, 16, size=(side, side), generator=0, method="cached", progress=False),
        rounds=2,
        warmup_rounds=0,
    )


CPU = torch.device("cpu")
THREADS = int_list("PIXELFAST_BENCH_THREADS", [t for t in (1, 2, 4, 8, 16) if t <= (os.cpu_count() or 1)])
THREADS_BATCH = 4 if SMALL else 64


@pytest.fixture(scope="module")
def cpu_shipped_model():
    return shipped_model()


@pytest.mark.parametrize("threads", THREADS)
def bench_cpu_engine_threads(benchmark, cpu_shipped_model, threads):
    """The CPU engine (whatever PIXELFAST_BENCH_DEVICE says) on the shipped model at 1..16 threads."""
    size = (6, 6) if SMALL else (28, 28)
    labels = torch.arange(THREADS_BATCH) % 10
    benchmark.group = f"CPU engine, shipped Gated MNIST model, {THREADS_BATCH}x1x{size[0]}x{size[1]}, by threads"
    benchmark.extra_info["threads"] = threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timed(
            benchmark,
            lambda: pixelfast.sample(
                cpu_shipped_model, THREADS_BATCH, size=size, labels=labels, generator=0, method="cached", progress=False
            ),
            rounds=2,
            warmup_rounds=1,
            device=CPU,
        )
    finally:
        torch.set_num_threads(before)
