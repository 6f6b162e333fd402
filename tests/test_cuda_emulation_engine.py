"""The CUDA sampling engine's kernel (``csrc/sampler/engine_kernel.cuh``), run on the CPU under the
CUDA emulation, against the CPU engine: the same images and logits for every model kind, grey and
RGB, class-conditional, float32/float64, odd block sizes, clusters of one to eight blocks, tiles of
one image to more than a thread keeps in registers, and every emulated thread schedule (a missing
``__syncthreads`` or cluster barrier shows up as a different result under one of them)."""

from __future__ import annotations

import pytest
import torch
from emulation import SCHEDULES, load
from hypothesis import given, settings, strategies as st
from test_sampling_cached import jitter, random_image, random_labels
from user_models import ConcatEluGated, EluHeadPixelCNN

from pixelfast.models import GatedPixelCNN, PixelCNN, PixelCNNPlusPlus, PixelRNN
from pixelfast.sampling.plan import lower

MODELS = {
    "pixelcnn": lambda c, levels, h, classes, size=None: PixelCNN(
        c, levels, hidden_channels=h, num_layers=2, num_classes=classes
    ),
    "gated": lambda c, levels, h, classes, size=None: GatedPixelCNN(
        c, levels, hidden_channels=h, num_layers=2, kernel_size=3, first_kernel_size=5, num_classes=classes
    ),
    # the position biases index their table by the position (size: the call's (height, width))
    "gated-positions": lambda c, levels, h, classes, size=None: GatedPixelCNN(
        c, levels, hidden_channels=h, num_layers=2, num_classes=classes, image_size=size, position_bias=True
    ),
    # and per class too: the table indexed by the image's label as well
    "gated-class-positions": lambda c, levels, h, classes, size=None: GatedPixelCNN(
        c,
        levels,
        hidden_channels=h,
        num_layers=2,
        num_classes=classes,
        image_size=size,
        position_bias=True,
        class_position_bias=classes is not None,
    ),
    "row": lambda c, levels, h, classes, size=None: PixelRNN(
        "row", c, levels, hidden_channels=h, num_layers=1, num_classes=classes
    ),
    "diagonal": lambda c, levels, h, classes, size=None: PixelRNN(
        "diagonal", c, levels, hidden_channels=h, num_layers=1, num_classes=classes
    ),
    # ops of period 2 and 4 (the half and quarter maps), once per pixel, and the mixture
    "pixelcnn++": lambda c, levels, h, classes, size=None: PixelCNNPlusPlus(
        c, levels, nr_resnet=1, nr_filters=h, nr_logistic_mix=2, dropout=0.0, num_classes=classes
    ),
}
# Models of a user's own (tests/user_models.py), lowered from a trace of their forward: the ops
# only such models use (elu, mul, concat_elu, cat), grey and RGB (concat_elu on the vertical stack).
USER_MODELS = {
    "elu-head": lambda c, levels, h, classes, size=None: EluHeadPixelCNN(
        c, levels, hidden_channels=h, num_layers=1, num_classes=classes
    ),
    "concat-elu-gated": lambda c, levels, h, classes, size=None: ConcatEluGated(
        c, levels, n=h, num_layers=2, num_classes=classes, vertical_concat_elu_only=c == 3
    ),
}


@pytest.fixture(scope="module")
def emulated():
    return load()


def engine_arguments(kind, channels, levels, classes, dtype, batch, height, width, seed, teacher_forced):
    with torch.random.fork_rng():  # the same model for the same arguments (hypothesis replays them)
        torch.manual_seed(seed)
        model = {**MODELS, **USER_MODELS}[kind](channels, levels, 3, classes, (height, width))
        model = jitter(model, scale=0.3, seed=seed).to(dtype)
    plan = lower(model)
    image = random_image(model, batch, height, width, seed)
    generator = torch.Generator().manual_seed(seed)
    if teacher_forced:
        known = torch.ones_like(image, dtype=torch.bool)
    else:  # some sub-pixels known, the rest drawn
        known = torch.rand(image.shape, generator=generator) < 0.25
    uniforms = torch.rand(image.shape, generator=generator, dtype=torch.float64)
    labels = random_labels(model, batch, seed)
    return (
        plan.weights,
        plan.flat_buffers(),
        plan.program,
        image,
        known,
        uniforms,
        labels,
        0.9,
        levels,
        teacher_forced,
    )


def assert_kernel_equals_cpu_engine(emulated, args, threads, schedule, seed=0, cluster_blocks=1, tile=1):
    expected_images, expected_logits = torch.ops.pixelfast.sample_cached(*args)
    images, logits = emulated.sample_cached(*args, None, threads, cluster_blocks, tile, SCHEDULES[schedule], seed)
    assert torch.equal(images, expected_images)
    exact = args[0][0].dtype == torch.float64
    torch.testing.assert_close(logits, expected_logits, atol=1e-12 if exact else 2e-5, rtol=1e-10 if exact else 1e-4)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("teacher_forced", [True, False])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_engine_kernel_equals_cpu_engine(emulated, kind, channels, teacher_forced, schedule):
    args = engine_arguments(kind, channels, 5, 3, torch.float64, 2, 3, 4, seed=1, teacher_forced=teacher_forced)
    assert_kernel_equals_cpu_engine(emulated, args, threads=7, schedule=schedule, seed=3)


@pytest.mark.parametrize("kind", list(USER_MODELS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("teacher_forced", [True, False])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_engine_kernel_runs_user_models_like_the_cpu_engine(emulated, kind, channels, teacher_forced, schedule):
    args = engine_arguments(kind, channels, 5, 3, torch.float64, 2, 3, 4, seed=2, teacher_forced=teacher_forced)
    assert_kernel_equals_cpu_engine(emulated, args, threads=7, schedule=schedule, seed=3)


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(list(MODELS)),
    channels=st.sampled_from([1, 3]),
    levels=st.sampled_from([2, 5, 256]),
    classes=st.sampled_from([None, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    batch=st.integers(1, 3),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    threads=st.sampled_from([1, 2, 5, 32, 33, 64]),
    cluster_blocks=st.sampled_from([1, 2, 3]),
    tile=st.sampled_from([1, 2, 5]),
    schedule=st.sampled_from(list(SCHEDULES)),
    teacher_forced=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_engine_kernel_equals_cpu_engine_over_many_configurations(
    emulated,
    kind,
    channels,
    levels,
    classes,
    dtype,
    batch,
    height,
    width,
    threads,
    cluster_blocks,
    tile,
    schedule,
    teacher_forced,
    seed,
):
    args = engine_arguments(kind, channels, levels, classes, dtype, batch, height, width, seed, teacher_forced)
    assert_kernel_equals_cpu_engine(emulated, args, threads, schedule, seed, cluster_blocks, tile)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize(("cluster_blocks", "tile", "threads"), [(3, 6, 33), (8, 2, 64), (2, 7, 32)])
def test_engine_kernel_in_clusters_equals_cpu_engine(emulated, kind, schedule, cluster_blocks, tile, threads):
    """Clusters whose blocks split every op's channels (more blocks than some ops have channels:
    idle blocks still meet the barriers), tiles of more images than a thread keeps in registers,
    a last cluster with fewer images than the tile, draws by whole warps (blocks of 32 and 64
    threads) and by single threads (33)."""
    args = engine_arguments(kind, 3, 40, 3, torch.float64, 7, 2, 3, seed=6, teacher_forced=False)
    assert_kernel_equals_cpu_engine(
        emulated, args, threads=threads, schedule=schedule, seed=7, cluster_blocks=cluster_blocks, tile=tile
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_engine_kernel_runs_the_strided_u_net_like_the_cpu_engine(emulated, channels):
    """An image large enough for every residue of the half and quarter maps' ops."""
    args = engine_arguments("pixelcnn++", channels, 16, 3, torch.float64, 2, 9, 10, seed=4, teacher_forced=False)
    assert_kernel_equals_cpu_engine(emulated, args, threads=33, schedule="random", seed=5)


def test_engine_kernel_with_a_block_larger_than_every_op(emulated):
    args = engine_arguments("gated", 3, 256, None, torch.float32, 1, 2, 3, seed=5, teacher_forced=False)
    assert_kernel_equals_cpu_engine(emulated, args, threads=256, schedule="random", seed=11)


@pytest.mark.parametrize("threads", [4, 32])
def test_engine_kernel_reports_non_finite_logits(emulated, threads):
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    with torch.no_grad():
        model.head.out.bias.fill_(float("nan"))
    plan = lower(model)
    image = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    known = torch.zeros_like(image, dtype=torch.bool)
    uniforms = torch.full(image.shape, 0.5, dtype=torch.float64)
    args = (plan.weights, plan.flat_buffers(), plan.program, image, known, uniforms, None, 1.0, 4, False)
    with pytest.raises(RuntimeError, match="non-finite"):
        emulated.sample_cached(*args, None, threads, 2, 1, 0, 0)


def test_cuda_engine_checks_its_arguments_before_the_device():
    """A CPU tensor in the CUDA kernel's call gets the op's own message, not a device-guard error."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key("pixelfast::sample_cached", "CUDA"):
        pytest.skip("pixelfast was built without CUDA")
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    plan = lower(model)
    image = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    args = (
        plan.weights,
        plan.flat_buffers(),
        plan.program,
        image,
        torch.zeros_like(image, dtype=torch.bool),
        torch.zeros(image.shape, dtype=torch.float64),
        None,
        1.0,
        4,
        False,
    )
    cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match="sample_cached: the CUDA engine got tensors on cpu"):
        torch.ops.pixelfast.sample_cached.default.redispatch(cuda, *args)
    with pytest.raises(RuntimeError, match="sample_cached: temperature must be > 0"):
        torch.ops.pixelfast.sample_cached.default.redispatch(cuda, *args[:7], 0.0, *args[8:])


def conditioned_plan(model):
    """The model's plan with a condition op adding the call's condition to the logits (as
    super-resolution's plan does), built with the plan builder's own methods."""
    from pixelfast.sampling import plan as planning

    builder = planning.PlanBuilder(torch.float64, torch.device("cpu"))
    builder.buffer(model.in_channels)
    builder.condition_logits = True
    with torch.no_grad():
        planning.lower_module(model, builder)
    return builder.plan


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_engine_kernel_adds_the_condition_like_the_cpu_engine(emulated, channels, schedule):
    from pixelfast.sampling.cached import run_engine

    model = jitter(MODELS["gated"](channels, 6, 3, None), seed=2).double()
    plan = conditioned_plan(model)
    image = random_image(model, 2, 3, 4, seed=2)
    condition = torch.randn(2, 6, channels, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    known = torch.ones_like(image, dtype=torch.bool)
    uniforms = torch.zeros(image.shape, dtype=torch.float64)
    _, logits = run_engine(plan, image, known, uniforms, None, 1.0, 6, True, condition)
    with torch.no_grad():
        expected = model(image) + condition  # the condition adds to the logits of the sum
    torch.testing.assert_close(logits, expected, atol=1e-10, rtol=1e-10)
    engine_condition = condition.permute(0, 3, 4, 2, 1).flatten(3).contiguous()
    args = (plan.weights, plan.flat_buffers(), plan.program, image, known, uniforms, None, 1.0, 6, True)
    images, emulated_logits = emulated.sample_cached(*args, engine_condition, 5, 2, 2, SCHEDULES[schedule], 1)
    torch.testing.assert_close(emulated_logits, logits, atol=1e-12, rtol=1e-10)
    known[:] = False  # free sampling with the condition: the same draws
    args = (plan.weights, plan.flat_buffers(), plan.program, image, known, uniforms.uniform_(), None, 1.0, 6, False)
    expected_images, _ = torch.ops.pixelfast.sample_cached(*args, engine_condition)
    images, _ = emulated.sample_cached(*args, engine_condition, 5, 2, 2, SCHEDULES[schedule], 1)
    assert torch.equal(images, expected_images)


def test_engine_refuses_a_missing_or_misshapen_condition():
    from pixelfast.sampling.cached import run_engine

    model = MODELS["gated"](1, 6, 3, None).double()
    plan = conditioned_plan(model)
    image = torch.zeros(1, 1, 3, 4, dtype=torch.long)
    args = (
        plan,
        image,
        torch.zeros_like(image, dtype=torch.bool),
        torch.zeros(image.shape, dtype=torch.float64),
        None,
        1.0,
        6,
        False,
    )
    with pytest.raises(RuntimeError, match="no condition was given"):
        run_engine(*args)
    with pytest.raises(RuntimeError, match="the condition has 12 channels"):
        run_engine(*args, torch.zeros(1, 12, 1, 3, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="condition must be a Double tensor"):
        run_engine(*args, torch.zeros(1, 6, 1, 3, 4))


def teacher_forced_arguments(plan, image, levels):
    """The engine op's arguments for a hand-built plan, every sub-pixel known, logits recorded."""
    known = torch.ones_like(image, dtype=torch.bool)
    uniforms = torch.zeros(image.shape, dtype=torch.float64)
    return (plan.weights, plan.flat_buffers(), plan.program, image, known, uniforms, None, 1.0, levels, True)


@pytest.mark.parametrize(("cluster_blocks", "tile"), [(1, 1), (3, 2)])
def test_engine_kernel_runs_a_row_conv_of_its_own_output_position_by_position(emulated, cluster_blocks, tile):
    """out(j) = bias + w . out(j - 1) along the row: the kernel may not run this row-phase conv's
    positions in one stage (each reads the one to its left), as it does other row-phase ops."""
    from pixelfast.sampling.plan import ROW, PlanBuilder

    levels, width = 3, 5
    generator = torch.Generator().manual_seed(3)  # every channel reads every channel to its left
    w = torch.randn(levels, levels, 1, generator=generator, dtype=torch.float64) * 0.5
    bias = torch.randn(levels, generator=generator, dtype=torch.float64)
    b = PlanBuilder(torch.float64, torch.device("cpu"))
    b.buffer(1)
    out = b.buffer(levels)
    b.conv(out, out, ROW, 1, [(0, -1, w)], bias=bias)
    logits = b.buffer(levels)
    b.add(logits, out, 1, copy=True)
    b.sample(logits, 1)
    image = torch.zeros(3, 1, 2, width, dtype=torch.long)
    args = teacher_forced_arguments(b.plan, image, levels)
    for schedule in SCHEDULES:
        assert_kernel_equals_cpu_engine(
            emulated, args, threads=32, schedule=schedule, seed=1, cluster_blocks=cluster_blocks, tile=tile
        )


@pytest.mark.parametrize("adds", [7, 8, 9, 12])
def test_engine_kernel_runs_every_op_of_a_long_chain_once(emulated, adds):
    """A conv followed by more residual adds than its epilogue takes: the first ones run in the
    conv's stage, the rest in their own, and none twice."""
    from pixelfast.sampling.plan import PIXEL, PlanBuilder

    levels = 4
    generator = torch.Generator().manual_seed(5)
    b = PlanBuilder(torch.float64, torch.device("cpu"))
    b.buffer(1)
    other = b.buffer(levels)  # a map finished before the conv: the adds' source
    b.conv(other, 0, PIXEL, 1, [(-1, -1, torch.randn(levels, 1, 3, generator=generator, dtype=torch.float64))])
    logits = b.buffer(levels)  # the pixel to the left: a pixel-phase conv, whose epilogue runs the adds
    b.conv(logits, 0, PIXEL, 1, [(0, -1, torch.randn(levels, 1, 1, generator=generator, dtype=torch.float64))])
    for _ in range(adds):
        b.add(logits, other, 1)
    b.sample(logits, 1)
    image = torch.randint(0, levels, (3, 1, 3, 4), generator=generator)
    args = teacher_forced_arguments(b.plan, image, levels)
    assert_kernel_equals_cpu_engine(emulated, args, threads=32, schedule="random", seed=2, cluster_blocks=2, tile=2)
