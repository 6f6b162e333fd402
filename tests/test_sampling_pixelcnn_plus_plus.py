"""PixelCNN++ in the cached engine (pixelfast/sampling/plan_pixelcnn_plus_plus.py): its strided
U-net on the engine's grids and its logistic-mixture head, against the model's own forward pass and
the naive sampler; and the engine's refusals of the plan fields this needs (periods, once-per-pixel
ops, the mixture op)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from test_sampling_cached import jitter, random_image, random_labels

import pixelfast
from pixelfast.models import PixelCNNPlusPlus
from pixelfast.nn.logistic_mixture import mixture_channels
from pixelfast.sampling.cached import run_engine
from pixelfast.sampling.plan import PIXEL, ROW, PlanBuilder, lower
from pixelfast.sampling.plan_format import OP_FIELDS, encode_op


def model_of(channels, levels, nr_resnet=1, filters=5, mix=2, classes=None, dtype=torch.float64, seed=0, scale=0.3):
    with torch.random.fork_rng():  # the same model whatever ran before
        torch.manual_seed(seed)
        model = PixelCNNPlusPlus(channels, levels, nr_resnet, filters, mix, dropout=0.0, num_classes=classes)
    return jitter(model.to(dtype), scale=scale, seed=seed)


def probabilities_close(got, expected, atol):
    """Logits compared as probabilities: a float32 bin far out in a tail has a logit of -1e4 whose
    rounding means nothing, and thin bins differ by the float rounding of a CDF difference."""
    torch.testing.assert_close(got.exp(), expected.exp(), atol=atol, rtol=0)


# --- the correctness contract: the engine's logits are the forward pass's ---------------------------


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    levels=st.sampled_from([2, 5, 256]),
    nr_resnet=st.integers(1, 2),
    mix=st.integers(1, 3),
    classes=st.sampled_from([None, 3]),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_incremental_logits_equal_forward(channels, levels, nr_resnet, mix, classes, height, width, seed):
    """Every size, odd ones too (the half and quarter maps are then ceil(H / 2) and ceil(H / 4))."""
    model = model_of(channels, levels, nr_resnet, 4, mix, classes, seed=seed)
    x = random_image(model, 2, height, width, seed)
    labels = random_labels(model, 2, seed)
    with torch.no_grad():
        expected = model(x, labels)
    got = pixelfast.incremental_logits(model, x, labels)
    # Summation order differs (the engine's products against the convolutions'); the jittered
    # networks' activations reach ~1e5 and a logistic's scale can be e^-7, so float64 rounding moves
    # a logit by up to ~1e-8 (seed=866 at 3x8x8, nr_resnet=2, mix=2: 3.8e-9). A bug moves it by far more.
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("channels", [1, 3])
def test_incremental_logits_equal_forward_in_float32_at_cifar_depth(channels):
    """Five blocks per resolution and 256 levels, 16x16 (down to 4x4), in float32."""
    model = model_of(channels, 256, nr_resnet=5, filters=8, mix=4, dtype=torch.float32, scale=0.1)
    x = random_image(model, 2, 16, 16, seed=1)
    with torch.no_grad():
        expected = model(x)
    got = pixelfast.incremental_logits(model, x)
    probabilities_close(got, expected, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.99


def test_every_map_is_on_its_grid():
    """The plan holds ops of period 1, 2 and 4; the coarse ones on residue 0, but for the four
    parities of each transposed conv."""
    program = lower(model_of(1, 4)).program
    fields = list(OP_FIELDS)
    at, grids = 0, set()
    while at < len(program):
        record = program[at + 1 : at + program[at]]
        grids.add(tuple(record[fields.index(name)] for name in ("period", "row_residue", "col_residue")))
        at += program[at]
    assert {(1, 0, 0), (2, 0, 0), (4, 0, 0)} <= grids
    assert {(2, 1, 0), (2, 0, 1), (2, 1, 1), (4, 2, 0), (4, 0, 2), (4, 2, 2)} <= grids


# --- sampling: the same images as the naive sampler ---------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_draws_the_same_images_as_naive(channels, temperature):
    model = model_of(channels, 16, mix=3, classes=2)
    labels = torch.tensor([0, 1, 1])
    kwargs = dict(size=(6, 5), labels=labels, temperature=temperature, generator=7, progress=False)
    cached = pixelfast.sample(model, 3, method="cached", **kwargs)
    naive = pixelfast.sample(model, 3, method="naive", **kwargs)
    assert torch.equal(cached, naive)
    assert cached.unique().numel() > 3  # drawn, not a constant


def test_cached_completion_keeps_the_known_sub_pixels_and_matches_naive():
    model = model_of(3, 16, mix=3)
    image = random_image(model, 2, 5, 6, seed=3)
    known = torch.rand(image.shape, generator=torch.Generator().manual_seed(4)) < 0.4
    kwargs = dict(image=image, known=known, generator=5, progress=False)
    cached = pixelfast.sample(model, 2, method="cached", **kwargs)
    naive = pixelfast.sample(model, 2, method="naive", **kwargs)
    assert torch.equal(cached, naive) and torch.equal(cached[known], image[known])


def test_auto_uses_the_cached_engine():
    model = model_of(1, 4)
    with torch.no_grad():  # no fallback warning: auto runs the engine
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            auto = pixelfast.sample(model, 2, size=(4, 4), generator=1, progress=False)
    assert torch.equal(auto, pixelfast.sample(model, 2, size=(4, 4), generator=1, method="cached", progress=False))


def test_cold_cached_samples_are_the_argmax_of_a_forward_pass():
    """Causality end to end: at a temperature near 0 each sub-pixel is the argmax of the logits that
    one forward pass over the result gives there: at temperature 1e-4 a level whose logit is 1e-3
    below the top one has a chance of e^-10 against it, so only near-ties may go either way."""
    model = model_of(3, 16, mix=3)
    out = pixelfast.sample(model, 2, size=(5, 5), temperature=1e-4, generator=0, method="cached", progress=False)
    with torch.no_grad():
        logits = model(out)
    chosen = logits.gather(1, out.long()[:, None]).squeeze(1)
    assert (logits.amax(dim=1) - chosen).max() < 1e-3


# --- the engine's refusals of the new plan fields -------------------------------------------------------


def one_op_plan(channels, levels, **changes):
    """A valid plan (a conv of the image's row above into the logits, a draw) with the first op's
    fields or a mixture op changed."""
    b = PlanBuilder(torch.float32, torch.device("cpu"))
    b.buffer(channels)
    logits = b.buffer(channels * levels)
    weight = torch.zeros(channels * levels, channels, 1)
    mixture = changes.pop("mixture", None)
    fields = {**dict(phase=PIXEL, dst=logits, src=0, groups=channels), **changes}
    program = encode_op("conv", ((-1, 0, 1, b.weight(weight.permute(2, 1, 0).reshape(channels, -1))),), **fields)
    if mixture is not None:
        params = b.buffer(mixture["params"])
        b.plan.buffers[params][1] = 1
        dst = mixture.get("dst", logits)
        program += encode_op("mixture", phase=PIXEL, dst=dst, src=params, groups=mixture["groups"])
    program += encode_op("sample", phase=PIXEL, dst=0, src=logits, groups=channels)
    b.plan.buffers[0][1] = 2
    b.plan.program = program
    return b.plan


def run_plan(plan, channels, levels):
    image = torch.zeros(1, channels, 3, 3, dtype=torch.long)
    known = torch.zeros_like(image, dtype=torch.bool)
    uniforms = torch.full(image.shape, 0.5, dtype=torch.float64)
    return run_engine(plan, image, known, uniforms, None, 1.0, levels, False)


def test_the_plan_without_changes_runs():
    images, _ = run_plan(one_op_plan(3, 4), 3, 4)
    assert images.shape == (1, 3, 3, 3)
    params = mixture_channels(3, 2)
    images, _ = run_plan(one_op_plan(3, 4, mixture=dict(params=params, groups=3)), 3, 4)
    assert images.shape == (1, 3, 3, 3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(period=0), "bad period 0"),
        (dict(period=2, row_residue=2), "bad period 2 with residues 2, 0"),
        (dict(period=2, col_residue=-1), "bad period 2 with residues 0, -1"),
        (dict(phase=ROW, period=2, reverse=1), "right-to-left scan runs at every position"),
        (dict(groups=2), "one group per colour \\(3\\) or one group"),
        (dict(groups=1, centre=2, centre_weight=0), "may not read the pixel's colours"),
        (dict(mixture=dict(params=mixture_channels(3, 2), groups=1)), "mixture and condition ops must have one group"),
        (dict(mixture=dict(params=mixture_channels(3, 2) + 1, groups=3)), "holds 10 channels per component"),
        (dict(mixture=dict(params=mixture_channels(3, 2), groups=3, dst=0)), "writes channels \\* levels"),
    ],
)
def test_engine_refuses_bad_grids_groups_and_mixtures(changes, message):
    with pytest.raises(RuntimeError, match=message):
        run_plan(one_op_plan(3, 4, **changes), 3, 4)


def test_a_once_per_pixel_conv_may_read_the_current_position_of_a_map_but_not_of_the_image():
    b = PlanBuilder(torch.float32, torch.device("cpu"))
    b.buffer(1)
    logits = b.buffer(4)
    w = b.weight(torch.zeros(1, 4))
    program = encode_op("conv", ((0, 0, 1, w),), phase=PIXEL, dst=logits, src=0, groups=1)
    program += encode_op("sample", phase=PIXEL, dst=0, src=logits, groups=1)
    b.plan.program = program
    with pytest.raises(RuntimeError, match="may not read the current pixel or later ones"):
        run_plan(b.plan, 1, 4)
    b.plan.program = encode_op("conv", ((0, 1, 1, w),), phase=PIXEL, dst=logits, src=logits, groups=1)
    b.plan.buffers[logits][2] = 1
    b.plan.program += encode_op("sample", phase=PIXEL, dst=0, src=logits, groups=1)
    with pytest.raises(RuntimeError, match="may not read later pixels"):
        run_plan(b.plan, 1, 4)
