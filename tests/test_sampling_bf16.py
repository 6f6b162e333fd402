"""``precision="bf16"``: the CPU engine's convolutions with inputs and weights rounded to bfloat16
and float32 sums (csrc/sampler/small_gemm_bf16.h), on AMX tiles where the CPU has them and as
float32 products of rounded values with each float32 kernel.

The reference is independent of the engine: the model's own float64 forward pass inside a dispatch
mode that rounds every convolution's input and weight to bf16 (torch's own conversion). The engine
computes the same sums in float32, so its logits equal the reference's except where an activation
lies so near the middle between two bf16 values that float32 and float64 round it differently (a
flip: one input moves by one bf16 step, and the image's logits after it with it). So the test asks
that most images' logits agree to float32 precision and all within a flip's reach; every image of
the fp32 engine misses the same reference by orders of magnitude more, which the test checks too (it
would pass a bf16 path that did not round).
"""

from __future__ import annotations

import importlib.resources

import pytest
import torch
from devices import gemm_kernel
from test_sampling_cached import jitter, random_image, random_labels
from test_sampling_kernels import MODELS
from torch.utils._python_dispatch import TorchDispatchMode

import pixelfast
from pixelfast import cli
from pixelfast.checkpoint import load_model
from pixelfast.data import downsample
from pixelfast.models import ConvVAE, GatedPixelCNN, PixelCNN, SuperResolution
from pixelfast.nn import MaskedConv2d
from pixelfast.sampling.cached import check_precision

KERNELS = ["amx", "generic", "avx2", "avx512"]
# The models whose every product is a convolution of the forward pass (the LSTMs' state-to-state
# products are inside their scan ops, and PixelCNN++'s logits at this jitter reach 1e8).
CONV_MODELS = ["gated grey h33", "gated rgb h18", "pixelcnn grey h40", "pixelcnn rgb h21"]


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Makes the engine use this kernel (amx: bf16 on AMX; the others: rounded float32)."""
    with gemm_kernel(request.param):
        yield request.param


def to_bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(t.dtype)


def rounded_residual_block(x, w_in, b_in, w, b, w_out, b_out, image_bias, groups, rounding=to_bf16):
    """The residual block op's output, its three convolutions' inputs and weights rounded (the op
    runs its products inside, out of the mode's reach). Only the first output is read (the op's
    Python face returns it alone)."""

    def conv(t, weight, bias):
        return torch.ops.pixelfast.masked_conv2d(
            rounding(t.float()).double(), rounding(weight.float()).double(), bias, "B", groups
        )

    y = conv(torch.relu(conv(torch.relu(x), w_in, b_in)), w, b)
    if image_bias is not None:
        y = y + image_bias[:, :, None, None]
    out = x + conv(torch.relu(y), w_out, b_out)
    return out, out, out, out


class RoundConvolutions(TorchDispatchMode):
    """Every convolution's input and weight rounded to float32 and then by ``rounding`` (bf16 by
    default) before it runs (in float64 after)."""

    def __init__(self, rounding=to_bf16):
        super().__init__()
        self.rounding = rounding

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.pixelfast.residual_block.default:
            return rounded_residual_block(*args, rounding=self.rounding)
        if func in (torch.ops.aten.convolution.default, torch.ops.pixelfast.masked_conv2d.default):
            round_ = self.rounding
            args = (round_(args[0].float()).double(), round_(args[1].float()).double(), *args[2:])
        return func(*args, **(kwargs or {}))


def logits_and_references(name: str, scale: float = 0.3):
    build, batch, height, width = MODELS[name]
    model = jitter(build(), scale=scale)
    x = random_image(model, batch, height, width, seed=1)
    labels = random_labels(model, batch, seed=2)
    with torch.no_grad():
        plain = model.double()(x, labels)
        with RoundConvolutions():
            rounded = model(x, labels)
    model.float()
    bf16 = pixelfast.incremental_logits(model, x, labels, precision="bf16").double()
    fp32 = pixelfast.incremental_logits(model, x, labels).double()
    return bf16, fp32, rounded, plain


def per_image_error(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Each image's largest logit error, relative to the largest logit."""
    return ((got - expected).abs() / expected.abs().max()).flatten(1).amax(1)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_bf16_logits_are_the_forward_pass_with_rounded_convolutions(name, kernel):
    bf16, fp32, rounded, _ = logits_and_references(name)
    error = per_image_error(bf16, rounded)
    assert (error < 1e-6).float().mean() >= 0.5  # a flip reaches only its own image
    assert error.max() < 1e-2  # and moves its logits by far less than this
    assert per_image_error(fp32, rounded).min() > 1e-4  # the reference tells them apart


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_logits_are_within_its_tolerance_of_the_float64_ones(name, kernel):
    """The stated tolerance: each logit within 2% of the logits' largest magnitude, every model."""
    bf16, _, _, plain = logits_and_references(name, scale=0.1)
    assert ((bf16 - plain).abs() / plain.abs().max()).max() < 2e-2
    assert (bf16.softmax(1) - plain.softmax(1)).abs().max() < 1e-2
    assert not torch.allclose(bf16, plain, atol=1e-6, rtol=0)  # it did round


def test_the_shipped_model_in_bf16_keeps_its_probabilities():
    with importlib.resources.as_file(cli.default_checkpoint()) as path:
        model = load_model(path)
    x = pixelfast.sample(model, 10, generator=0, progress=False).long()  # digits it draws
    labels = torch.arange(10)
    with torch.no_grad():
        plain = model.double()(x, labels).float().softmax(1)
    model.float()
    bf16 = pixelfast.incremental_logits(model, x, labels, precision="bf16").softmax(1)
    # Each sub-pixel's distribution moves by (total variation) 0.002 on average, at most 0.13.
    moved = 0.5 * (bf16 - plain).abs().sum(1)
    assert moved.mean() < 5e-3
    assert moved.max() < 0.25


def test_masked_out_weights_are_never_multiplied_in(kernel):
    """The centre tap's masked-out weights (an output group's inputs of its own or later groups)
    play no part, whatever they hold: the AMX tiles read a product's rows in blocks of 32, past a
    colour group's inputs, and 0 x inf there would be NaN (the packing zeroes those rows)."""
    model = jitter(PixelCNN(3, 4, hidden_channels=48, num_layers=1), scale=0.2)  # 16 a group
    x = random_image(model, 16, 3, 3, seed=1)  # 16 rows: AMX's tiles, where the CPU has them
    clean = pixelfast.incremental_logits(model, x, precision="bf16")
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, MaskedConv2d):
                layer.weight[layer.mask() == 0] = float("inf")
    dirty = pixelfast.incremental_logits(model, x, precision="bf16")
    assert torch.isfinite(clean).all()
    assert torch.equal(dirty, clean)


def test_bf16_sampling_repeats_with_the_seed_and_differs_little_from_fp32():
    model = jitter(GatedPixelCNN(1, 8, hidden_channels=24, num_layers=3, num_classes=2), scale=0.2)
    first = pixelfast.sample(model, 6, size=6, generator=3, progress=False, precision="bf16")
    again = pixelfast.sample(model, 6, size=6, generator=3, progress=False, precision="bf16")
    fp32 = pixelfast.sample(model, 6, size=6, generator=3, progress=False)
    assert torch.equal(first, again)
    assert first.dtype == torch.uint8 and int(first.max()) < 8
    assert (first == fp32).float().mean() > 0.5  # same uniforms: most draws agree


def test_bf16_and_the_amx_kernel_are_refused_where_they_cannot_run():
    model = jitter(GatedPixelCNN(1, 4, hidden_channels=8, num_layers=1), scale=0.2)
    with pytest.raises(ValueError, match="precision must be one of"):
        pixelfast.sample(model, 1, size=4, progress=False, precision="fp16")
    with pytest.raises(ValueError, match="method='naive' computes in fp32"):
        pixelfast.sample(model, 1, size=4, progress=False, precision="bf16", method="naive")
    with pytest.raises(ValueError, match="runs on the CUDA engine only"):
        check_precision("sample", "tf32", "cpu")
    vae = ConvVAE(in_channels=1, levels=4, image_size=(8, 8))
    with pytest.raises(ValueError, match="draws whole images"):
        pixelfast.sample(vae, 1, progress=False, precision="bf16")
    x = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="needs float32 weights"):
        pixelfast.incremental_logits(model.double(), x, precision="bf16")
    with pytest.raises(ValueError, match="auto, generic, avx2, avx512 or amx, got 'sse'"):
        torch.ops.pixelfast.sampler_gemm_kernel("sse")


def test_super_resolution_in_bf16():
    """The condition logits A(x) come in as they are; the prior's convolutions round."""
    torch.manual_seed(0)
    model = SuperResolution(1, 6, 2, prior="GatedPixelCNN", prior_config={"hidden_channels": 20, "num_layers": 2})
    jitter(model, scale=0.1)
    y = torch.randint(0, 6, (3, 1, 6, 6), generator=torch.Generator().manual_seed(1))
    x = downsample(y, 2)
    with torch.no_grad():
        plain = model.double()(y, x)
    model.float()
    bf16 = pixelfast.incremental_logits(model, y, condition=x, precision="bf16").double()
    assert ((bf16 - plain).abs() / plain.abs().max()).max() < 2e-2
    assert not torch.allclose(bf16, plain, atol=1e-6, rtol=0)
    high = pixelfast.upscale(model, x, n=2, generator=0, progress=False, precision="bf16")
    assert torch.equal(high, pixelfast.upscale(model, x, n=2, generator=0, progress=False, precision="bf16"))
    assert high.shape == (6, 1, 6, 6)
    with pytest.raises(ValueError, match="is the cached engine's"):
        pixelfast.upscale(model, x, method="naive", progress=False, precision="bf16")
    independent = SuperResolution(1, 6, 2, objective="independent")
    with pytest.raises(ValueError, match="is the cached engine's"):
        pixelfast.upscale(independent, x, progress=False, precision="bf16")
