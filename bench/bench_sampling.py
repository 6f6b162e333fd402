"""The cached sampling engine against the naive samplers and against one forward pass.

Per model and batch, one comparison (``benchresults.py``) with these sides, each timed with warm-up
and at least 3 rounds:

* cached: ``pixelfast.sample(..., method="cached")``;
* one forward pass: one no-grad forward pass of the same batch, the floor: the engine computes every
  activation of the network once, as the forward pass does, so ``cached / one forward pass`` is what
  its one-position-at-a-time evaluation costs over the whole-image one;
* naive = one forward pass x C*H*W: what a sampler that re-runs the whole network per sub-pixel
  (``method="naive"``, or any other library's loop) costs at least; the same measurement as the
  forward pass, times the number of sub-pixels, with no Python overhead multiplied up;
* row-cropped naive: the stronger plain sampler of ``baselines.py``, re-running the network per
  sub-pixel only on the rows that can affect the current row; one step of every row is timed (every
  step of a row costs the same) and multiplied by C*W, the steps per row. At small sizes the bench
  first checks that it draws what ``method="naive"`` draws. Not for PixelCNN++, whose U-net reaches
  every row above (the crop would only drop the rows below).

A second comparison per case for ``precision="bf16"`` (the engine's convolutions in bfloat16 with
float32 sums: on AMX tiles where the CPU has them, on tensor cores on a GPU): cached bf16 against
cached fp32 and against one forward pass under ``torch.autocast(device, torch.bfloat16)`` (where
pixelfast's own ops compute in float32, their registered autocast behaviour, so it is about the
fp32 forward pass). On a GPU a third for ``"tf32"``: cached tf32 against cached fp32.

Then: cached sampling time at 16x16, 32x32 and 64x64 (its growth exponent), and the CPU engine at
1, 2, 4, 8, 16 threads (always on the CPU).

Run: ``pytest bench/bench_sampling.py`` (the comparisons print at the end); on a GPU with
``PIXELFAST_BENCH_DEVICE=cuda``, other batch sizes with ``PIXELFAST_BENCH_BATCHES=16,256`` (see
``benchutil.py``).
"""

from __future__ import annotations

import os

import pytest
import torch
from baselines import one_step_per_row, rows_above, sample_row_cropped
from benchutil import DEVICE, SMALL, int_list, timed

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelCNNPlusPlus, PixelRNN
from pixelfast.sampling.categorical import draw_uniforms
from pixelfast.sampling.precision import full_fp32


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


def pixelcnn_plus_plus():
    """PixelCNN++'s CIFAR-10 preset (53.6 M parameters: 5 blocks per resolution, 160 filters, 10
    logistics), untrained weights: the time does not depend on them."""
    torch.manual_seed(0)
    if SMALL:
        return PixelCNNPlusPlus(3, 256, nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout=0.0).eval()
    return PixelCNNPlusPlus.cifar10().eval()


# name: (build, default batch, channels, size)
MODELS = {
    "PixelCNN h=192 15 blocks": (reference_model, 16, 3, (32, 32)),
    "shipped Gated MNIST model": (shipped_model, 64, 1, (28, 28)),
    "PixelRNN row h=16 7 layers": (pixelrnn("row"), 16, 1, (28, 28)),
    "PixelRNN diagonal h=16 7 layers": (pixelrnn("diagonal"), 16, 1, (28, 28)),
    "PixelCNN++ CIFAR-10 preset (53.6 M)": (pixelcnn_plus_plus, 16, 3, (32, 32)),
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
    model = build().to(DEVICE)
    size = (6, 6) if SMALL and not getattr(model, "position_bias", False) else size  # else its own size only
    with torch.no_grad():  # start the device (context, cuDNN) before anything is timed
        model(torch.zeros(1, channels, *size, dtype=torch.long, device=DEVICE), labels_for(model, 1))
    shape = f"{n}x{channels}x{size[0]}x{size[1]}"
    info = {"table": "sampling", "case": f"{name}; {shape}"}
    return f"sampling {name}, {shape}, {DEVICE.type}", info, model, n, size


def bench_cached_sampling(benchmark, case):
    group, info, model, n, size = case
    benchmark.group = group
    labels = labels_for(model, n)
    timed(
        benchmark,
        lambda: pixelfast.sample(model, n, size=size, labels=labels, generator=0, method="cached", progress=False),
        impl="cached",
        role="fast",
        **info,
    )


def bench_one_forward_pass(benchmark, case):
    """One forward pass, and from it the naive sampler: that many forward passes per image."""
    group, info, model, n, size = case
    benchmark.group = group
    x = torch.randint(0, model.levels, (n, model.in_channels, *size), device=DEVICE)
    labels = labels_for(model, n)
    steps = model.in_channels * size[0] * size[1]
    with torch.no_grad(), full_fp32():  # as pixelfast.sample runs it
        timed(
            benchmark,
            lambda: model(x, labels),
            impl="one forward pass",
            role="floor",
            derived=[{"impl": "naive = one forward pass x C*H*W", "role": "baseline", "scale": steps}],
            **info,
        )


def precision_case(case, reduced):
    """The comparison of precision ``reduced`` against fp32: its group and info. bf16 on the CPU
    (AMX where the CPU has it) and on a GPU (tensor cores), tf32 on a GPU only."""
    group, info, model, n, size = case
    if reduced == "tf32" and DEVICE.type != "cuda":
        pytest.skip("precision='tf32' is the CUDA engine's")
    return f"{group}, {reduced}", {**info, "table": f"sampling {reduced}"}, model, n, size


# (the comparison, the side's precision): fp32 is each comparison's baseline
PRECISION_SIDES = [("bf16", "fp32"), ("bf16", "bf16"), ("tf32", "fp32"), ("tf32", "tf32")]


@pytest.mark.parametrize(("reduced", "precision"), PRECISION_SIDES, ids=[f"{r}-{p}" for r, p in PRECISION_SIDES])
def bench_cached_sampling_precision(benchmark, case, reduced, precision):
    group, info, model, n, size = precision_case(case, reduced)
    benchmark.group = group
    labels = labels_for(model, n)
    timed(
        benchmark,
        lambda: pixelfast.sample(
            model, n, size=size, labels=labels, generator=0, method="cached", progress=False, precision=precision
        ),
        impl=f"cached {precision}",
        role="baseline" if precision == "fp32" else "fast",
        **info,
    )


def bench_one_forward_pass_bf16(benchmark, case):
    group, info, model, n, size = precision_case(case, "bf16")
    benchmark.group = group
    x = torch.randint(0, model.levels, (n, model.in_channels, *size), device=DEVICE)
    labels = labels_for(model, n)
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        timed(benchmark, lambda: model(x, labels), impl="one forward pass, bf16 autocast", role="floor", **info)


def bench_row_cropped_naive(benchmark, case):
    group, info, model, n, size = case
    if isinstance(model, PixelCNNPlusPlus):
        pytest.skip(
            "PixelCNN++'s U-net reaches every row above, so the row-cropped sampler re-runs the whole "
            "image above the row: about half of naive, 32 forward passes per timed round here"
        )
    benchmark.group = group
    labels = labels_for(model, n)
    if SMALL:  # the baseline draws what the library's naive sampler draws
        naive = pixelfast.sample(model, n, size=size, labels=labels, generator=0, method="naive", progress=False)
        assert torch.equal(sample_row_cropped(model, n, size, labels, generator=0), naive)
    reach = rows_above(model)
    x = torch.zeros(n, model.in_channels, *size, dtype=torch.int64, device=DEVICE)
    uniforms = draw_uniforms(x.shape, torch.Generator().manual_seed(0), DEVICE)
    with torch.no_grad(), full_fp32():
        timed(
            benchmark,
            lambda: one_step_per_row(model, x, labels, reach, uniforms),
            impl="row-cropped naive",
            role="baseline",
            scale=model.in_channels * size[1],  # steps per row
            rows_above="all" if reach is None else reach,
            **info,
        )


@pytest.mark.parametrize("side", [4, 8] if SMALL else [16, 32, 64])
def bench_cached_scaling(benchmark, side):
    torch.manual_seed(0)
    model = GatedPixelCNN(in_channels=3, levels=256, hidden_channels=48, num_layers=6).eval().to(DEVICE)
    benchmark.group = f"cached sampling time vs image size (Gated h=48, 6 layers, batch 16), {DEVICE.type}"
    timed(
        benchmark,
        lambda: pixelfast.sample(model, 16, size=(side, side), generator=0, method="cached", progress=False),
        series="size",
        x=side * side,
        label=f"{side}x{side}",
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
    size = (28, 28)  # the shipped model draws its own size only (position biases)
    labels = torch.arange(THREADS_BATCH) % 10
    benchmark.group = f"CPU engine, shipped Gated MNIST model, {THREADS_BATCH}x1x{size[0]}x{size[1]}, by threads"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timed(
            benchmark,
            lambda: pixelfast.sample(
                cpu_shipped_model, THREADS_BATCH, size=size, labels=labels, generator=0, method="cached", progress=False
            ),
            device=CPU,
            series="threads",
            x=threads,
            label=f"{threads} thread{'s' if threads > 1 else ''}",
        )
    finally:
        torch.set_num_threads(before)
