"""The CUDA engine's tensor-core products (``precision="bf16"`` and ``"tf32"``:
``csrc/sampler/engine_mma.cuh``), run on the CPU under the CUDA emulation (tensor cores emulated by
``tests/emulation/wmma_emulation.h``).

The reference is independent of the kernel: the model's own float64 forward pass with every
convolution's input and weight rounded (``test_sampling_bf16.RoundConvolutions``; bf16 by torch's own
conversion, tf32 by ``frexp`` in ``test_cuda_emulation.round_tf32``). The kernel sums in float32, so
its logits equal the reference's except where float32 and float64 round an activation differently
(a flip: one step of the rounding, and the image's logits after it). bf16 flips are rare; tf32's
steps are 8 times finer, so they are 8 times as frequent and the test asks for the typical image
to be several times nearer the reference than the fp32 engine is, and for every image to be within
a flip's reach. Each precision's logits also miss the other's reference by far more (a kernel that
rounded the wrong way, or not at all, fails).

The bf16 kernel's logits and draws are the CPU bf16 engine's (the same rounding, sums in another
order) for every model kind, odd cluster shapes and tiles of more than 16 images; the logits are
bit for bit the same under every emulated schedule.
"""

from __future__ import annotations

import pytest
import torch
from emulation import SCHEDULES, load
from test_cuda_emulation import ROUNDINGS
from test_cuda_emulation_engine import MODELS as KINDS, USER_MODELS, engine_arguments
from test_sampling_bf16 import CONV_MODELS, RoundConvolutions, per_image_error
from test_sampling_cached import jitter, random_image, random_labels
from test_sampling_kernels import MODELS

from pixelfast.sampling.cached import check_precision
from pixelfast.sampling.plan import lower

OTHER = {"bf16": "tf32", "tf32": "bf16"}


@pytest.fixture(scope="module")
def emulated():
    return load()


def teacher_forced(model, x, labels):
    plan = lower(model)
    known = torch.ones_like(x, dtype=torch.bool)
    uniforms = torch.zeros(x.shape, dtype=torch.float64)
    return (plan.weights, plan.flat_buffers(), plan.program, x, known, uniforms, labels, 1.0, model.levels, True)


@pytest.fixture(scope="module", params=CONV_MODELS)
def logits_and_references(request, emulated):
    """A model's teacher-forced logits from the kernel in each precision (a cluster of 2 blocks of
    2 warps holding the whole batch: up to 17 images, so two image tiles), from the CPU fp32
    engine, and the rounded float64 forward passes."""
    build, batch, height, width = MODELS[request.param]
    torch.manual_seed(0)
    model = jitter(build(), scale=0.3)
    x = random_image(model, batch, height, width, seed=1)
    labels = random_labels(model, batch, seed=2)
    with torch.no_grad():
        model.double()
        references = {}
        for precision, rounding in ROUNDINGS.items():
            with RoundConvolutions(rounding):
                references[precision] = model(x, labels)
    model.float()
    args = teacher_forced(model, x, labels)
    logits = {
        precision: emulated.sample_cached(*args, None, 64, 2, batch, SCHEDULES["random"], 1, precision)[1].double()
        for precision in ROUNDINGS
    }
    logits["fp32"] = torch.ops.pixelfast.sample_cached(*args)[1].double()
    return logits, references


def test_bf16_logits_are_the_forward_pass_with_rounded_convolutions(logits_and_references):
    logits, references = logits_and_references
    error = per_image_error(logits["bf16"], references["bf16"])
    assert (error < 1e-6).float().mean() >= 0.5  # a flip reaches only its own image
    assert error.max() < 1e-2  # and moves its logits by far less than this
    assert per_image_error(logits["fp32"], references["bf16"]).min() > 1e-3  # the reference tells them apart


def test_tf32_logits_are_the_forward_pass_with_rounded_convolutions(logits_and_references):
    logits, references = logits_and_references
    error = per_image_error(logits["tf32"], references["tf32"])
    unrounded = per_image_error(logits["fp32"], references["tf32"])
    assert error.median() < 0.3 * unrounded.median()  # measured: 0.0001-0.2 of it
    assert error.max() < 1e-3  # within the reach of a few flips
    assert unrounded.min() > 1e-4


@pytest.mark.parametrize("precision", list(ROUNDINGS))
def test_each_precision_misses_the_other_ones_reference(logits_and_references, precision):
    logits, references = logits_and_references
    own = per_image_error(logits[precision], references[precision])
    other = per_image_error(logits[precision], references[OTHER[precision]])
    assert other.median() > 10 * own.median()


def assert_bf16_kernel_draws_like_the_cpu_engine(emulated, args, threads, cluster_blocks, tile, schedule, seed=0):
    expected_images, expected_logits = torch.ops.pixelfast.sample_cached(*args, None, "bf16")
    images, logits = emulated.sample_cached(
        *args, None, threads, cluster_blocks, tile, SCHEDULES[schedule], seed, "bf16"
    )
    assert torch.equal(images, expected_images)
    if args[-1]:  # logits recorded: equal up to the sums' order, but for a rare flip's image
        error = per_image_error(logits.double(), expected_logits.double())
        assert (error < 1e-6).float().mean() >= 0.5  # an unrounded kernel misses by 1e-3 or more
        assert error.max() < 1e-2
    return images, logits


@pytest.mark.parametrize("kind", [*KINDS, *USER_MODELS])
@pytest.mark.parametrize("channels", [1, 3])
def test_bf16_kernel_draws_like_the_cpu_bf16_engine_for_every_model_kind(emulated, kind, channels):
    """Teacher-forced (the logits) and free (the draws)."""
    for teacher_forced in (True, False):
        args = engine_arguments(kind, channels, 40, 3, torch.float32, 5, 3, 4, seed=2, teacher_forced=teacher_forced)
        assert_bf16_kernel_draws_like_the_cpu_engine(emulated, args, 64, 2, 3, "random", seed=4)


SHAPES = {  # threads, cluster blocks, tile
    "one warp, one image": (32, 1, 1),
    "3 warps, 3 blocks, 17 images": (96, 3, 17),
    "odd tile": (64, 2, 5),
    "8 blocks of one warp": (32, 8, 7),
}
# every shape for the RGB models; the larger grey ones (each cluster runs the whole raster loop)
# with the tile of all their images
LAUNCHES = [(name, shape) for name in ("gated rgb h18", "pixelcnn rgb h21") for shape in SHAPES] + [
    (name, "3 warps, 3 blocks, 17 images") for name in ("gated grey h33", "pixelcnn grey h40")
]


@pytest.mark.parametrize(("name", "shape"), LAUNCHES)
def test_bf16_kernel_draws_like_the_cpu_bf16_engine_over_launch_shapes(emulated, name, shape):
    """Channels past one 16-wide tile (18-80), some sub-pixels known and the rest drawn."""
    threads, cluster_blocks, tile = SHAPES[shape]
    build, batch, height, width = MODELS[name]
    torch.manual_seed(0)
    model = jitter(build(), scale=0.3)
    x = random_image(model, batch, height, width, seed=1)
    generator = torch.Generator().manual_seed(3)
    known = torch.rand(x.shape, generator=generator) < 0.25
    uniforms = torch.rand(x.shape, generator=generator, dtype=torch.float64)
    plan = lower(model)
    labels = random_labels(model, batch, seed=2)
    args = (plan.weights, plan.flat_buffers(), plan.program, x, known, uniforms, labels, 0.9, model.levels, False)
    images, _ = assert_bf16_kernel_draws_like_the_cpu_engine(emulated, args, threads, cluster_blocks, tile, "random", 5)
    assert not torch.equal(images[~known], x[~known])  # it drew


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_tensor_core_logits_are_the_same_under_every_schedule(emulated, schedule):
    """The warps' sums are added in warp order after a block barrier: no schedule changes a bit."""
    args = engine_arguments("gated", 3, 40, 3, torch.float32, 18, 2, 3, seed=3, teacher_forced=True)
    for precision in ROUNDINGS:
        expected = emulated.sample_cached(*args, None, 64, 2, 18, SCHEDULES["forward"], 0, precision)[1]
        got = emulated.sample_cached(*args, None, 64, 2, 18, SCHEDULES[schedule], 9, precision)[1]
        assert torch.equal(got, expected)


def test_tensor_core_precisions_need_whole_warps_and_float32(emulated):
    args = engine_arguments("pixelcnn", 1, 5, None, torch.float32, 1, 2, 2, seed=1, teacher_forced=True)
    with pytest.raises(RuntimeError, match="threads must be whole warps, got 33"):
        emulated.sample_cached(*args, None, 33, 1, 1, 0, 0, "tf32")
    double = engine_arguments("pixelcnn", 1, 5, None, torch.float64, 1, 2, 2, seed=1, teacher_forced=True)
    for precision in ROUNDINGS:
        with pytest.raises(ValueError, match=f"precision '{precision}' needs float32 weights, got Double"):
            emulated.sample_cached(*double, None, 32, 1, 1, 0, 0, precision)
    with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16' or 'tf32', got 'fp16'"):
        emulated.sample_cached(*args, None, 32, 1, 1, 0, 0, "fp16")


def test_the_cpu_engine_refuses_tf32_and_the_python_check_says_where_each_precision_runs():
    args = engine_arguments("pixelcnn", 1, 5, None, torch.float32, 1, 2, 2, seed=1, teacher_forced=True)
    with pytest.raises(ValueError, match="precision 'tf32' is the CUDA engine's"):
        torch.ops.pixelfast.sample_cached(*args, None, "tf32")
    with pytest.raises(ValueError, match="precision='tf32' runs on the CUDA engine only"):
        check_precision("sample", "tf32", "cpu")
    assert check_precision("sample", "tf32", "cuda") == "tf32"
    assert check_precision("sample", "bf16", "cuda") == "bf16"
    assert check_precision("sample", "bf16", "cpu") == "bf16"
