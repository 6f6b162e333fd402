"""The cached engine against the network itself: ``incremental_logits(model, x) == model(x)``,
per-layer caches against ordinary convolution, and the cached sampler against the naive one."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from devices import DEVICES, links_cuda_runtime, tolerance
from hypothesis import given, settings, strategies as st
from torch import nn

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelCNNPlusPlus, PixelRNN
from pixelfast.nn import HorizontalConv2d, MaskedConv2d, VerticalConv2d
from pixelfast.ops import masked_conv2d_ref
from pixelfast.sampling.cached import run_engine
from pixelfast.sampling.plan import PlanBuilder, UnsupportedModelError, lower
from pixelfast.sampling.plan_format import OP_CODES, OP_FIELDS


def jitter(model: nn.Module, scale: float = 0.2, seed: int = 0) -> nn.Module:
    """Random non-zero weights everywhere (class embeddings start at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return model.eval()


def random_image(model, batch, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.levels, (batch, model.in_channels, height, width), generator=generator)


def random_labels(model, batch, seed=0):
    if model.num_classes is None:
        return None
    return torch.randint(0, model.num_classes, (batch,), generator=torch.Generator().manual_seed(seed))


def assert_incremental_equals_forward(model, x, labels, atol=1e-4, device="cpu"):
    model, x = model.to(device), x.to(device)
    labels = labels.to(device) if labels is not None else None
    rtol = 1e-4
    if torch.device(device).type == "cuda":
        gpu = tolerance(next(model.parameters()).dtype, device)
        atol, rtol = max(atol, gpu["atol"]), max(rtol, gpu["rtol"])
    with torch.no_grad():
        expected = model(x, labels)
    got = pixelfast.incremental_logits(model, x, labels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)


# --- the correctness contract, over many configurations ------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    levels=st.sampled_from([2, 5, 256]),
    hidden=st.integers(1, 3),
    layers=st.integers(0, 3),
    classes=st.sampled_from([None, 4]),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    batch=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
@pytest.mark.parametrize("device", DEVICES)
def test_pixelcnn_incremental_logits_equal_forward(
    channels, levels, hidden, layers, classes, height, width, batch, seed, device
):
    model = jitter(
        PixelCNN(channels, levels, hidden_channels=3 * hidden, num_layers=layers, num_classes=classes), seed=seed
    )
    x = random_image(model, batch, height, width, seed)
    assert_incremental_equals_forward(model, x, random_labels(model, batch, seed), device=device)


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    levels=st.sampled_from([2, 7, 256]),
    hidden=st.integers(1, 3),
    layers=st.integers(1, 4),
    kernel=st.sampled_from([3, 5]),
    first_kernel=st.sampled_from([3, 5, 7]),
    classes=st.sampled_from([None, 3]),
    position_bias=st.sampled_from([False, True, "per class"]),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    batch=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_incremental_logits_equal_forward(
    channels, levels, hidden, layers, kernel, first_kernel, classes, position_bias, height, width, batch, seed, device
):
    per_class = position_bias == "per class" and classes is not None
    model = GatedPixelCNN(
        channels,
        levels,
        hidden_channels=3 * hidden,
        num_layers=layers,
        kernel_size=kernel,
        first_kernel_size=first_kernel,
        num_classes=classes,
        image_size=(height, width) if position_bias else None,
        position_bias=bool(position_bias),
        class_position_bias=per_class,
    )
    model = jitter(model, seed=seed)
    x = random_image(model, batch, height, width, seed)
    assert_incremental_equals_forward(model, x, random_labels(model, batch, seed), device=device)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["row", "diagonal"]),
    channels=st.sampled_from([1, 3]),
    levels=st.sampled_from([2, 6, 256]),
    hidden=st.integers(1, 3),
    layers=st.integers(0, 3),
    kernel=st.sampled_from([3, 5]),
    classes=st.sampled_from([None, 3]),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    batch=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
@pytest.mark.parametrize("device", DEVICES)
def test_pixelrnn_incremental_logits_equal_forward(
    kind, channels, levels, hidden, layers, kernel, classes, height, width, batch, seed, device
):
    model = PixelRNN(
        kind, channels, levels, hidden_channels=3 * hidden, num_layers=layers, kernel_size=kernel, num_classes=classes
    )
    model = jitter(model, scale=0.3, seed=seed)
    x = random_image(model, batch, height, width, seed)
    assert_incremental_equals_forward(model, x, random_labels(model, batch, seed), device=device)


@pytest.mark.parametrize("model_type", [PixelCNN, GatedPixelCNN])
def test_incremental_logits_float64_is_exact_to_rounding(model_type, device):
    model = jitter(model_type(3, 16, hidden_channels=6, num_layers=2, num_classes=2).double())
    x = random_image(model, 2, 6, 5)
    assert_incremental_equals_forward(model, x, torch.tensor([0, 1]), atol=1e-10, device=device)


@pytest.mark.parametrize("size", [(12, 5), (5, 12)])
def test_incremental_logits_non_square_and_realistic_width(size, device):
    model = jitter(GatedPixelCNN(3, 256, hidden_channels=12, num_layers=4, num_classes=10), scale=0.1)
    x = random_image(model, 4, *size)
    assert_incremental_equals_forward(model, x, torch.arange(4), device=device)


def test_incremental_logits_checks_its_input():
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    with pytest.raises(ValueError, match="levels in 0..3"):
        pixelfast.incremental_logits(model, torch.full((1, 1, 4, 4), 7))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        pixelfast.incremental_logits(model, torch.zeros(1, 3, 4, 4, dtype=torch.long))


# --- per-layer caches against ordinary convolution -------------------------------------------------


def layer_logits(build, channels: int, levels: int, x: torch.Tensor) -> torch.Tensor:
    """Run a one-layer plan teacher-forced on ``x``; the layer's output is read back as the logits."""
    builder = PlanBuilder(torch.float64, torch.device("cpu"))
    builder.buffer(channels)
    logits = builder.buffer(channels * levels)
    build(builder, logits)
    builder.sample(logits, channels)
    plan = builder.plan
    known = torch.ones_like(x, dtype=torch.bool)
    uniforms = torch.zeros(x.shape, dtype=torch.float64)
    _, out = run_engine(plan, x, known, uniforms, None, 1.0, levels, True)
    b, _, c, h, w = out.shape
    return out.permute(0, 2, 1, 3, 4).reshape(b, c * levels, h, w)  # back to conv channel order


def scaled(x, levels):
    return x.double() * (2.0 / (levels - 1)) - 1.0


def feeder(channels, seed=0):
    """A mask-A 1x1 conv in front of a mask-B layer: a mask-B layer on the image itself would read the
    sub-pixel it predicts, which no causal model does (and no sampler can)."""
    torch.manual_seed(seed)
    return MaskedConv2d(channels, 2 * channels, 1, "A", channels).double()


def check_layer_cache(layer, lower_layer, mask_type, channels, levels, x, seed):
    """The engine's output of ``layer`` (behind a mask-A feeder for mask B) equals the layer itself."""
    first = feeder(channels, seed) if mask_type == "B" else None

    def build(builder, dst):
        src = 0
        if first is not None:
            src = builder.buffer(first.out_channels)
            builder.masked_conv(src, 0, first)
        lower_layer(builder, dst, src)

    got = layer_logits(build, channels, levels, x)
    inputs = scaled(x, levels)
    if first is not None:
        inputs = masked_conv2d_ref(inputs, first.weight, first.bias, "A", channels)
    torch.testing.assert_close(got, layer(inputs))


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("channels", [1, 3])
def test_masked_conv_cache_matches_convolution(k, mask_type, channels):
    levels, width = 4, (2 * channels if mask_type == "B" else channels)
    layer = MaskedConv2d(width, channels * levels, k, mask_type, channels).double()
    x = torch.randint(0, levels, (2, channels, 6, 9))
    check_layer_cache(layer, lambda b, dst, src: b.masked_conv(dst, src, layer), mask_type, channels, levels, x, k)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("channels", [1, 3])
def test_horizontal_conv_cache_matches_convolution(k, mask_type, channels):
    levels, width = 3, (2 * channels if mask_type == "B" else channels)
    layer = HorizontalConv2d(width, channels * levels, k, mask_type, channels).double()
    x = torch.randint(0, levels, (2, channels, 5, 8))
    check_layer_cache(layer, lambda b, dst, src: b.horizontal_conv(dst, src, layer), mask_type, channels, levels, x, k)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_vertical_conv_row_cache_matches_convolution(k):
    levels, channels = 5, 3
    torch.manual_seed(k)
    vertical = VerticalConv2d(channels, channels * levels, k, include_current_row=False).double()
    # Read back through an identity 1x1 (mask B keeps the block diagonal) in the pixel phase.
    identity = MaskedConv2d(channels * levels, channels * levels, 1, "B", channels, bias=False).double()
    with torch.no_grad():
        identity.weight.copy_(torch.eye(channels * levels).view_as(identity.weight))

    def build(builder, dst):
        rows = builder.buffer(channels * levels)
        builder.vertical_conv(rows, 0, vertical)
        builder.masked_conv(dst, rows, identity)

    x = torch.randint(0, levels, (3, channels, 7, 6))
    got = layer_logits(build, channels, levels, x)
    torch.testing.assert_close(got, vertical(scaled(x, levels)))


def test_cache_size_does_not_grow_with_height():
    model = GatedPixelCNN(3, 256, hidden_channels=6, num_layers=3)
    plan = lower(model)
    # rows x (W + 2 pad) x channels per buffer: a function of the width only.
    assert plan.cache_values_per_image(64) < 64 * 64 * sum(c for c, _, _ in plan.buffers)
    assert max(rows for _, rows, _ in plan.buffers) <= 7 // 2 + 1
    images = pixelfast.sample(model, 2, size=(64, 64), generator=0, method="cached", progress=False)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.uint8


# --- the cached sampler -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda c: PixelCNN(c, 6, hidden_channels=6, num_layers=2, num_classes=3),
        lambda c: GatedPixelCNN(c, 6, hidden_channels=6, num_layers=2, num_classes=3),
        lambda c: PixelRNN("row", c, 6, hidden_channels=6, num_layers=2, num_classes=3),
        lambda c: PixelRNN("diagonal", c, 6, hidden_channels=6, num_layers=2, num_classes=3),
    ],
    ids=["PixelCNN", "GatedPixelCNN", "RowLSTM", "DiagonalBiLSTM"],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_cached_draws_the_same_images_as_naive(make, channels, device):
    model = jitter(make(channels), scale=0.5)
    kwargs = dict(size=(4, 5), labels=[0, 1, 2], generator=11, progress=False, device=device)
    naive = pixelfast.sample(model, 3, method="naive", **kwargs)
    cached = pixelfast.sample(model, 3, method="cached", **kwargs)
    assert torch.equal(naive, cached)


def test_cached_completion_keeps_known_pixels_and_matches_naive(device):
    model = jitter(GatedPixelCNN(1, 8, hidden_channels=6, num_layers=2, num_classes=2), scale=0.5)
    image = torch.randint(0, 8, (2, 1, 6, 6))
    known = torch.zeros(6, 6, dtype=torch.bool)
    known[:3] = True  # the top half
    kwargs = dict(labels=[0, 1], image=image, known=known, generator=5, progress=False, device=device)
    cached = pixelfast.sample(model, 2, method="cached", **kwargs)
    assert cached.device.type == device.type
    assert torch.equal(cached[:, :, :3].cpu(), image[:, :, :3].to(torch.uint8))
    assert torch.equal(cached, pixelfast.sample(model, 2, method="naive", **kwargs))


@pytest.mark.parametrize("temperature", [0.37, 2.5])
def test_cached_matches_naive_at_other_temperatures(temperature, device):
    # Temperatures far from 1 and 0: an engine that divided by T twice would draw other images.
    model = jitter(GatedPixelCNN(3, 8, hidden_channels=6, num_layers=2, num_classes=3), scale=0.5)
    kwargs = dict(
        size=(4, 4), labels=[0, 1, 2, 1], generator=21, temperature=temperature, progress=False, device=device
    )
    assert torch.equal(
        pixelfast.sample(model, 4, method="cached", **kwargs), pixelfast.sample(model, 4, method="naive", **kwargs)
    )


def test_cached_over_several_chunks_matches_naive():
    # More than one CPU chunk (CHUNK images per engine call): each chunk must get its own images'
    # uniforms, labels and masks.
    from pixelfast.sampling.cached import CHUNK

    n = CHUNK + 6
    model = jitter(PixelCNN(1, 4, hidden_channels=3, num_layers=1, num_classes=5), scale=0.5)
    kwargs = dict(size=(2, 3), labels=[k % 5 for k in range(n)], generator=8, progress=False)
    cached = pixelfast.sample(model, n, method="cached", **kwargs)
    assert torch.equal(cached, pixelfast.sample(model, n, method="naive", **kwargs))


def test_cached_rgb_completion_with_a_mask_per_image_matches_naive(device):
    model = jitter(PixelRNN("row", 3, 6, hidden_channels=6, num_layers=1, num_classes=2), scale=0.5)
    generator = torch.Generator().manual_seed(3)
    image = torch.randint(0, 6, (3, 3, 4, 5), generator=generator)
    known = torch.rand(3, 3, 4, 5, generator=generator) < 0.5  # every image and channel its own mask
    known[0] = False  # one image drawn from scratch
    kwargs = dict(labels=[0, 1, 1], image=image, known=known, generator=6, progress=False, device=device)
    cached = pixelfast.sample(model, 3, method="cached", **kwargs)
    assert torch.equal(cached.cpu()[known], image[known].to(torch.uint8))
    assert torch.equal(cached, pixelfast.sample(model, 3, method="naive", **kwargs))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_cached_draws_have_the_model_s_frequencies(temperature):
    # Independent of draw_uniforms, which the naive sampler shares: a model whose every sub-pixel
    # has the same known distribution (zero weights, the head's bias as logits), its draws counted.
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    bias = torch.tensor([0.5, -1.0, 1.5, 0.0])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.out.bias.copy_(bias)
    images = pixelfast.sample(
        model, 50, size=(8, 10), temperature=temperature, generator=17, method="cached", progress=False
    )
    counts = torch.bincount(images.flatten().long(), minlength=4).double()
    expected = torch.softmax(bias.double() / temperature, 0) * counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom: p = 0.001


def test_cached_is_deterministic_and_auto_uses_it(device):
    model = jitter(PixelCNN(3, 16, hidden_channels=6, num_layers=1), scale=0.5)
    a = pixelfast.sample(model, 3, size=(4, 4), generator=1, progress=False, device=device)
    b = pixelfast.sample(model, 3, size=(4, 4), generator=1, method="cached", progress=False, device=device)
    c = pixelfast.sample(model, 3, size=(4, 4), generator=2, method="cached", progress=False, device=device)
    assert torch.equal(a, b) and not torch.equal(b, c)


@pytest.fixture
def split(request):
    """Makes the CPU engine split its thread team's work by ``request.param`` ("channel": every
    op's channels; "image": each thread its own images) whatever the model's size; restores the
    default after. Yields the count of engine calls that split by image so far (a function)."""
    limit = torch.ops.pixelfast.sampler_split_images_below(0 if request.param == "channel" else 1 << 62)
    yield torch.ops.pixelfast.sampler_image_split_runs
    assert torch.ops.pixelfast.sampler_split_images_below(limit) in (0, 1 << 62)


SPLIT_MODELS = {
    "gated rgb": lambda: GatedPixelCNN(3, 16, hidden_channels=12, num_layers=3, num_classes=4),
    "pixelcnn grey": lambda: PixelCNN(1, 8, hidden_channels=10, num_layers=2, num_classes=4),
    "diagonal": lambda: PixelRNN("diagonal", 3, 8, hidden_channels=6, num_layers=2, num_classes=4),
    "pixelcnn++": lambda: PixelCNNPlusPlus(3, 16, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, num_classes=4),
}


@pytest.mark.parametrize("split", ["channel", "image"], indirect=True)
@pytest.mark.parametrize("kind", sorted(SPLIT_MODELS))
@pytest.mark.parametrize("threads", [2, 3])
def test_cached_images_do_not_depend_on_the_thread_count(threads, kind, split, request):
    # The CPU engine splits every op's channels, and the draws' images, over a thread team, or
    # (small networks) the images themselves: the same images and logits either way, and with 5
    # images the team's shares are uneven. In float64: in float32 the matrix products' rounding
    # (their row counts differ) moves the logits by more than the split could be wrong by.
    model = jitter(SPLIT_MODELS[kind]().double(), scale=0.5)
    labels = [0, 1, 2, 3, 0]
    kwargs = dict(size=(5, 6), labels=labels, generator=4, method="cached", progress=False)
    x = random_image(model, 5, 5, 6, seed=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pixelfast.sample(model, 5, **kwargs)
        logits = pixelfast.incremental_logits(model, x, torch.tensor(labels))
        torch.set_num_threads(threads)
        runs = split()
        assert torch.equal(pixelfast.sample(model, 5, **kwargs), one)
        got = pixelfast.incremental_logits(model, x, torch.tensor(labels))
        torch.testing.assert_close(got, logits, rtol=1e-8, atol=1e-8)
        by_image = request.node.callspec.params["split"] == "image"
        assert split() == runs + (2 if by_image else 0)  # each engine call split by image, or none
        # Fewer images than threads: split by channel, whatever the model's size.
        pixelfast.sample(model, 1, **{**kwargs, "labels": [2]})
        assert split() == runs + (2 if by_image else 0)
    finally:
        torch.set_num_threads(before)


def test_a_small_network_is_split_by_image_and_a_large_one_by_channel():
    # The default limit (8 MiB of weights): the shipped-size Gated PixelCNN goes by image, the
    # reference PixelCNN (21.8 MB) by channel.
    small = jitter(GatedPixelCNN(1, 4, hidden_channels=8, num_layers=2))
    large = PixelCNN(3, 256, hidden_channels=192, num_layers=15).eval()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runs = torch.ops.pixelfast.sampler_image_split_runs()
        pixelfast.sample(small, 2, size=(3, 3), generator=0, method="cached", progress=False)
        assert torch.ops.pixelfast.sampler_image_split_runs() == runs + 1
        pixelfast.sample(large, 2, size=(1, 2), generator=0, method="cached", progress=False)
        assert torch.ops.pixelfast.sampler_image_split_runs() == runs + 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="bytes must be >= 0"):
        torch.ops.pixelfast.sampler_split_images_below(-1)


@pytest.mark.parametrize("classes", [None, 3])
def test_position_bias_tables_count_one_row_towards_the_split(classes):
    # A position reads one row of each position-bias table (of a table per class, one per class at
    # most), so the tables count [channels] each: counted whole, the shipped model's pushed its
    # guided plan onto the slower channel split.
    model = GatedPixelCNN(
        1,
        4,
        hidden_channels=8,
        num_layers=2,
        num_classes=classes,
        image_size=(32, 32),
        position_bias=True,
        class_position_bias=classes is not None,
    )
    model = jitter(model)
    whole = sum(w.numel() * w.element_size() for w in lower(model).weights)
    limit = torch.ops.pixelfast.sampler_split_images_below(32 << 10)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert whole > 4 * (32 << 10)
        runs = torch.ops.pixelfast.sampler_image_split_runs()
        labels = None if classes is None else [0, 2]
        pixelfast.sample(model, 2, labels=labels, generator=0, method="cached", progress=False)
        assert torch.ops.pixelfast.sampler_image_split_runs() == runs + 1
    finally:
        torch.set_num_threads(before)
        torch.ops.pixelfast.sampler_split_images_below(limit)


@pytest.mark.parametrize("split", ["channel"], indirect=True)
def test_cached_images_are_the_same_when_the_team_goes_on_alone(split):
    # When other programs hold the cores the engine split by channel goes on with one thread
    # part-way through (csrc/sampler/engine_cpu.cpp, keep_going). A limit of 0 preemptions makes it
    # do so after the first pixel on any machine: same images, and the fallback did run.
    model = jitter(GatedPixelCNN(1, 16, hidden_channels=24, num_layers=3, num_classes=4), scale=0.5)
    kwargs = dict(size=(6, 7), labels=[0, 1, 2, 3], generator=9, method="cached", progress=False)
    before = torch.get_num_threads()
    limit = torch.ops.pixelfast.sampler_solo_after(0)
    try:
        torch.set_num_threads(1)
        alone = pixelfast.sample(model, 4, **kwargs)
        torch.set_num_threads(2)
        solo_before = torch.ops.pixelfast.sampler_solo_runs()
        assert torch.equal(pixelfast.sample(model, 4, **kwargs), alone)
        assert torch.ops.pixelfast.sampler_solo_runs() == solo_before + 1
    finally:
        torch.set_num_threads(before)
        assert torch.ops.pixelfast.sampler_solo_after(limit) == 0
    with pytest.raises(ValueError, match="preemptions must be >= 0"):
        torch.ops.pixelfast.sampler_solo_after(-1)


@pytest.mark.parametrize("split", ["channel", "image"], indirect=True)
def test_cached_images_are_the_same_when_other_programs_hold_the_cores(split):
    # With every core busy elsewhere the team's threads are preempted; whether the engine then goes
    # on alone depends on the scheduler (the test above makes it), but the images may not change.
    model = jitter(GatedPixelCNN(1, 16, hidden_channels=24, num_layers=3, num_classes=4), scale=0.5)
    kwargs = dict(size=(24, 24), labels=[0, 1, 2, 3], generator=9, method="cached", progress=False)
    before = torch.get_num_threads()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 2))]
    try:
        torch.set_num_threads(1)
        alone = pixelfast.sample(model, 4, **kwargs)
        torch.set_num_threads(2)
        assert torch.equal(pixelfast.sample(model, 4, **kwargs), alone)
    finally:
        torch.set_num_threads(before)
        for process in busy:
            process.kill()
            process.wait()


def test_low_temperature_is_the_argmax_of_the_forward_pass(device):
    model = jitter(GatedPixelCNN(3, 8, hidden_channels=6, num_layers=2), scale=0.5).to(device)
    images = pixelfast.sample(model, 2, size=(4, 4), temperature=1e-6, generator=0, method="cached", progress=False)
    with torch.no_grad():
        logits = model(images.long())
    assert torch.equal(logits.argmax(1), images.long())


class NotAPixelModel(nn.Module):
    in_channels, levels, num_classes, image_size = 1, 4, None, (4, 4)

    def __init__(self):
        super().__init__()
        self.conv = MaskedConv2d(1, 4, 3, "A")

    def forward(self, x, labels=None):
        return self.conv(x.float()).view(x.shape[0], 4, 1, *x.shape[2:])


def test_unsupported_model_names_itself_and_auto_falls_back():
    model = NotAPixelModel()
    with pytest.raises(UnsupportedModelError, match="NotAPixelModel"):
        pixelfast.sample(model, 1, method="cached", progress=False)
    with pytest.warns(UserWarning, match="falling back to the naive sampler"):
        images = pixelfast.sample(model, 1, method="auto", generator=0, progress=False)
    assert images.shape == (1, 1, 4, 4)


def test_unsupported_layer_is_named():
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=2)
    model.blocks[1] = nn.Identity()
    with pytest.raises(UnsupportedModelError, match=r"'blocks.1' \(Identity\)"):
        lower(model)


def test_engine_rejects_a_corrupt_plan():
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    plan = lower(model)
    x = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    args = (
        torch.zeros(1, 1, 3, 3, dtype=torch.bool),
        torch.zeros(1, 1, 3, 3, dtype=torch.float64),
        None,
        1.0,
        4,
        False,
    )
    plan.program[0] = 3  # a truncated op
    with pytest.raises(RuntimeError, match="bad length|truncated"):
        run_engine(plan, x, *args)
    plan = lower(model)
    plan.buffers[1][1] = 0
    with pytest.raises(RuntimeError, match="bad shape"):
        run_engine(plan, x, *args)
    with pytest.raises(RuntimeError, match="temperature"):
        run_engine(lower(model), x, args[0], args[1], None, 0.0, 4, False)


def test_engine_ignores_the_fields_an_op_does_not_use():
    # A hand-written plan may leave any in-range value in a field its op does not read (a conv's
    # `cell`): the engine draws as with the -1 that PlanBuilder writes, and never indexes by it.
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=2)
    x = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    args = (torch.zeros(2, 1, 3, 3, dtype=torch.bool), torch.rand(2, 1, 3, 3, dtype=torch.float64), None, 1.0, 4, True)
    plan = lower(model)
    expected = run_engine(plan, x, *args)
    cell = 1 + list(OP_FIELDS).index("cell")  # after the record's length
    at, changed = 0, 0
    while at < len(plan.program):
        if plan.program[at + 1] != OP_CODES["lstm_cell"] and plan.program[at + 1] != OP_CODES["cat"]:
            plan.program[at + cell] = 2**24 - 1 - changed
            changed += 1
        at += plan.program[at]
    assert changed > 2
    for got, want in zip(run_engine(plan, x, *args), expected, strict=True):
        assert torch.equal(got, want)


def test_engine_reports_non_finite_logits(device):
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    with torch.no_grad():
        model.head.out.bias.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="non-finite"):
        pixelfast.sample(model, 1, size=(2, 2), method="cached", progress=False, device=device)


def test_cuda_engine_registered_when_built_with_cuda():
    # The CPU query proves the op name is right, so the CUDA query's False on a CPU build means
    # something; the binary's linkage is an independent record of what was built.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("pixelfast::sample_cached", "CPU")
    registered = torch._C._dispatch_has_kernel_for_dispatch_key("pixelfast::sample_cached", "CUDA")
    assert registered == pixelfast.ops.WITH_CUDA == links_cuda_runtime()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rows": 2**62}, "bad shape"),
        ({"pad": 2**63 - 1}, "bad shape"),
        ({"pad": 2**62}, "bad shape"),
        ({"channels": 2**40}, "bad shape"),
        ({"rows": 2**24, "pad": 2**10}, "too large"),  # each in range, the ring too big to address
    ],
)
def test_engine_refuses_huge_buffers(changes, message):
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    plan = lower(model)
    for field, value in changes.items():
        plan.buffers[1][{"channels": 0, "rows": 1, "pad": 2}[field]] = value
    x = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    args = (
        torch.zeros(1, 1, 3, 3, dtype=torch.bool),
        torch.zeros(1, 1, 3, 3, dtype=torch.float64),
        None,
        1.0,
        4,
        False,
    )
    with pytest.raises(RuntimeError, match=message):
        run_engine(plan, x, *args)


@pytest.mark.parametrize("position", ["code", "segment", "row_offset"])
def test_engine_refuses_out_of_range_op_fields(position):
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    plan = lower(model)
    x = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    args = (
        torch.zeros(1, 1, 3, 3, dtype=torch.bool),
        torch.zeros(1, 1, 3, 3, dtype=torch.float64),
        None,
        1.0,
        4,
        False,
    )
    # the first op is a conv with segments: header field 1 is its code, 12 its row offset, 18 its
    # first segment's row offset; 2**32 + 1 would read as code 1 (a conv) if truncated to int32
    plan.program[{"code": 1, "segment": 18, "row_offset": 12}[position]] = {
        "code": 2**32 + 1,
        "segment": -(2**63),
        "row_offset": -(2**62),
    }[position]
    with pytest.raises(RuntimeError, match="out of range"):
        run_engine(plan, x, *args)


@pytest.mark.parametrize("per_class", [False, True])
def test_engine_refuses_position_biases_that_do_not_fit(per_class):
    model = GatedPixelCNN(
        1,
        4,
        hidden_channels=3,
        num_layers=2,
        num_classes=2 if per_class else None,
        image_size=(3, 4),
        position_bias=True,
        class_position_bias=per_class,
    )
    model = jitter(model)
    code = OP_CODES["class_position_bias" if per_class else "position_bias"]
    kind = "class position bias" if per_class else "position bias"

    def run(plan, size=(3, 4), labels="own"):
        labels = (torch.tensor([1]) if per_class else None) if isinstance(labels, str) else labels
        x = torch.zeros(1, 1, *size, dtype=torch.long)
        known, uniforms = torch.zeros_like(x, dtype=torch.bool), torch.zeros(x.shape, dtype=torch.float64)
        return run_engine(plan, x, known, uniforms, labels, 1.0, 4, False)

    def first_position_bias(plan):
        at = 0
        while plan.program[at + 1] != code:
            at += plan.program[at]
        return at

    if per_class:  # the class biases' own checks would speak first: a plan without them
        bare = copy.deepcopy(model)
        for block in bare.blocks:
            block.v_class = block.h_class = None
        with pytest.raises(RuntimeError, match="the plan has position biases per class but no labels were given"):
            run(lower(bare), labels=None)
        with pytest.raises(RuntimeError, match=r"label 2 out of range 0..1"):
            run(lower(bare), labels=torch.tensor([2]))
        run(lower(bare), labels=torch.tensor([1]))
    images, _ = run(lower(model))
    assert images.shape == (1, 1, 3, 4)
    for size in [(4, 3), (3, 5)]:
        with pytest.raises(RuntimeError, match=rf"biases are for 3 x 4 images, the image is {size[0]} x {size[1]}"):
            run(lower(model), size)
    table = 1 + list(OP_FIELDS).index("table")
    plan = lower(model)
    vector = next(k for k, w in enumerate(plan.weights) if w.dim() == 1)  # a conv's bias
    for value, message in [(-1, f"{kind} table index out of range"), (vector, rf"{kind} table has shape \[")]:
        plan = lower(model)
        plan.program[first_position_bias(plan) + table] = value
        with pytest.raises(RuntimeError, match=message):
            run(plan)
    plan = lower(model)
    plan.program[first_position_bias(plan) + 1 + list(OP_FIELDS).index("period")] = 2
    with pytest.raises(RuntimeError, match="a position bias runs at every position"):
        run(plan)


def test_a_model_with_position_biases_refuses_other_sizes():
    model = GatedPixelCNN(1, 4, hidden_channels=3, num_layers=2, image_size=(3, 4), position_bias=True)
    wrong = torch.zeros(1, 1, 4, 3, dtype=torch.long)
    for call in (lambda: model(wrong), lambda: pixelfast.incremental_logits(model, wrong)):
        with pytest.raises(ValueError, match="biases per row and column of 3x4 images; got an input of 4x3"):
            call()
    with pytest.raises(ValueError, match=r"position_bias\), so it draws only that size; got 4x4"):
        pixelfast.sample(model, 1, size=(4, 4), progress=False)
    with pytest.raises(ValueError, match="position_bias needs image_size"):
        GatedPixelCNN(1, 4, position_bias=True)
    for options in [dict(num_classes=2), dict(position_bias=True, image_size=(3, 4))]:
        with pytest.raises(ValueError, match="class_position_bias needs position_bias=True and a class-conditional"):
            GatedPixelCNN(1, 4, class_position_bias=True, **options)
    with pytest.raises(ValueError, match="class_position_bias must be True or False"):
        GatedPixelCNN(1, 4, num_classes=2, image_size=(3, 4), position_bias=True, class_position_bias=1)
