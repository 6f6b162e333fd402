"""Classifier-free guidance: the "no class" label that ``class_dropout`` trains, and sampling with
``guidance=w``, whose logits are ``(1 + w) * l_label - w * l_no_class``, in both samplers."""

from __future__ import annotations

import copy

import pytest
import torch
from devices import DEVICES
from hypothesis import given, settings, strategies as st
from test_sampling_cached import jitter, random_image

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN
from pixelfast.sampling.guidance import Guided
from pixelfast.sampling.plan import lower
from pixelfast.train import train


def guided_model(channels=1, levels=6, hidden=6, layers=2, classes=3, seed=0, scale=0.5, positions=None, size=None):
    """``positions``: None, "shared" (position biases) or "per class" (those per label too), for ``size``."""
    model = GatedPixelCNN(
        channels,
        levels,
        hidden,
        layers,
        num_classes=classes,
        class_dropout=0.1,
        image_size=size if positions else None,
        position_bias=positions is not None,
        class_position_bias=positions == "per class",
    )
    return jitter(model, scale=scale, seed=seed)


def guided_logits(model, x, labels, weight):
    """The definition, written out: the model given the labels and given no class, extrapolated."""
    with torch.no_grad():
        given_labels = model(x, labels)
        no_class = model(x, torch.full_like(labels, model.num_classes))
    return (1 + weight) * given_labels - weight * no_class


# --- the engine's guided logits and draws -----------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    levels=st.sampled_from([2, 7, 256]),
    layers=st.integers(1, 3),
    weight=st.sampled_from([0.25, 1.0, 2.5]),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    batch=st.integers(1, 3),
    seed=st.integers(0, 1000),
    positions=st.sampled_from([None, "shared", "per class"]),
)
@pytest.mark.parametrize("device", DEVICES)
def test_guided_engine_logits_equal_the_definition(
    channels, levels, layers, weight, height, width, batch, seed, positions, device
):
    # per class: the "no class" copy of the network must read the no-class label's position biases
    model = guided_model(channels, levels, 6, layers, seed=seed, scale=0.3, positions=positions, size=(height, width))
    model = model.to(device)
    x = random_image(model, batch, height, width, seed).to(device)
    labels = torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(seed)).to(device)
    got = pixelfast.incremental_logits(Guided(model, weight), x, labels)
    torch.testing.assert_close(got, guided_logits(model, x, labels, weight), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positions", [None, "per class"])
@pytest.mark.parametrize("channels", [1, 3])
def test_guided_cached_draws_the_same_images_as_naive(channels, positions, device):
    model = guided_model(channels, positions=positions, size=(4, 5))
    kwargs = dict(size=(4, 5), labels=[0, 1, 2], generator=11, progress=False, device=device, guidance=1.5)
    cached = pixelfast.sample(model, 3, method="cached", **kwargs)
    assert torch.equal(cached, pixelfast.sample(model, 3, method="naive", **kwargs))


def test_guided_draws_have_the_guided_frequencies():
    # Independent of the naive sampler: zero conv weights make every position's logits the same,
    # so the draws of many pixels are samples of one categorical, softmax(guided logits).
    model = GatedPixelCNN(1, 4, 3, 2, num_classes=2, class_dropout=0.1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            spatial = name.endswith(("v_conv.weight", "h_conv.weight"))  # the only layers wider than 1x1
            p.copy_(torch.zeros_like(p) if spatial else torch.randn(p.shape, generator=generator))
    model.eval()
    weight = 2.0
    images = pixelfast.sample(model, 40, size=(8, 10), labels=1, generator=5, guidance=weight, progress=False)
    x = torch.zeros(1, 1, 8, 10, dtype=torch.long)
    logits = guided_logits(model, x, torch.tensor([1]), weight)[0, :, 0]  # [levels, H, W]
    assert torch.allclose(logits, logits[:, :1, :1].expand_as(logits), atol=1e-5)  # one distribution
    counts = torch.bincount(images.flatten().long(), minlength=4).double()
    expected = torch.softmax(logits[:, 0, 0].double(), 0) * counts.sum()
    unguided = torch.softmax(model(x, torch.tensor([1]))[0, :, 0, 0, 0].double(), 0) * counts.sum()
    chi2 = lambda e: ((counts - e) ** 2 / e).sum().item()  # noqa: E731
    assert chi2(expected) < 16.3  # chi-square, 3 degrees of freedom: p = 0.001
    assert chi2(unguided) > 100  # and the guidance changed the distribution measurably


def test_zero_guidance_is_the_model_itself_and_guidance_changes_the_images():
    model = guided_model()
    kwargs = dict(size=(5, 5), labels=[0, 1, 2, 0], generator=2, progress=False)
    plain = pixelfast.sample(model, 4, **kwargs)
    assert torch.equal(pixelfast.sample(model, 4, guidance=0.0, **kwargs), plain)
    assert not torch.equal(pixelfast.sample(model, 4, guidance=2.0, **kwargs), plain)


def test_guided_plan_runs_the_network_twice():
    model = guided_model()
    single, double = lower(model), lower(Guided(model, 1.0))
    assert len(double.buffers) == 2 * len(single.buffers) - 1  # buffer 0, the image, is shared
    assert len(double.weights) == 2 * len(single.weights)


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: GatedPixelCNN(1, 4, 3, 1, num_classes=3),  # conditional, but no "no class" label
        lambda: GatedPixelCNN(1, 4, 3, 1),
        lambda: PixelCNN(1, 4, hidden_channels=3, num_layers=1, num_classes=3),
    ],
    ids=["gated-without-class-dropout", "unconditional", "pixelcnn"],
)
def test_guidance_refuses_a_model_without_a_no_class_label(make):
    with pytest.raises(ValueError, match="class_dropout"):
        pixelfast.sample(make(), 2, size=(3, 3), guidance=1.0, progress=False)


@pytest.mark.parametrize(
    "weight, error",
    [(-0.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError), ("1", TypeError)],
)
def test_guidance_must_be_a_finite_number_at_least_zero(weight, error):
    with pytest.raises(error, match="guidance"):
        pixelfast.sample(guided_model(), 2, size=(3, 3), guidance=weight, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=3, class_dropout=1.0), r"class_dropout must be a number in \[0, 1\)"),
        (dict(num_classes=3, class_dropout=-0.1), r"class_dropout must be a number in \[0, 1\)"),
        (dict(num_classes=3, class_dropout=True), r"class_dropout must be a number in \[0, 1\)"),
        (dict(class_dropout=0.1), "needs a class-conditional model"),
    ],
)
def test_class_dropout_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GatedPixelCNN(1, 4, 3, 1, **kwargs)


def test_the_no_class_label_exists_only_with_class_dropout():
    x = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    with_no_class, without = guided_model(), GatedPixelCNN(1, 6, 6, 2, num_classes=3)
    assert with_no_class.no_class == 3 and without.no_class is None
    with_no_class(x, torch.tensor([3, 0]))  # "no class" is a label of its own
    with pytest.raises(ValueError, match=r"labels must be in 0..3 \(3: no class\)"):
        with_no_class(x, torch.tensor([4, 0]))
    with pytest.raises(ValueError, match=r"labels must be in 0..2, got"):
        without(x, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"labels must be in 0..2, got"):  # sample asks for real classes
        pixelfast.sample(with_no_class, 1, size=(3, 3), labels=3, progress=False)


# --- training -------------------------------------------------------------------------------------


def test_class_dropout_replaces_labels_in_training_mode_only():
    model = GatedPixelCNN(1, 6, 6, 2, num_classes=3, class_dropout=0.999999)
    jitter(model, scale=0.5)
    x = random_image(model, 4, 4, 4)
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        eval_loss = model.loss(x, labels)
        no_class_loss = model.loss(x, torch.full_like(labels, 3))
        model.train()
        torch.manual_seed(0)
        train_loss = model.loss(x, labels)  # (no dropout layers: only the labels differ)
    torch.testing.assert_close(train_loss, no_class_loss)
    assert not torch.allclose(eval_loss, no_class_loss)


@pytest.mark.parametrize("per_class_positions", [False, True])
def test_a_source_without_no_class_gains_one_as_the_mean_of_its_classes(per_class_positions):
    positions = dict(image_size=(4, 4), position_bias=True, class_position_bias=True) if per_class_positions else {}
    source = jitter(GatedPixelCNN(1, 6, 6, 2, num_classes=3, **positions), seed=4)
    grown = GatedPixelCNN(1, 6, 6, 2, num_classes=3, class_dropout=0.2, **positions)
    state = grown.fit_source_state(source.state_dict())
    grown.load_state_dict(state)
    names = ["blocks.1.v_class.weight", "blocks.0.h_class.weight"]
    if per_class_positions:
        names += ["blocks.0.v_class_row", "blocks.1.h_class_col"]
    for name in names:
        old, new = source.state_dict()[name], grown.state_dict()[name]
        assert torch.equal(new[:3], old)
        torch.testing.assert_close(new[3], old.mean(0))
    x, labels = random_image(source, 2, 4, 4), torch.tensor([2, 1])
    with torch.no_grad():  # the classes draw as before
        torch.testing.assert_close(grown.eval()(x, labels), source(x, labels))


def test_train_init_from_a_model_without_no_class(tmp_path):
    source = tmp_path / "source.pt"
    common = dict(data="mnist-digits", levels=4, epochs=1, batch_size=8, limit=16, progress=False)
    config = dict(hidden_channels=6, num_layers=2, image_size=(28, 28))
    train("GatedPixelCNN", out=source, model_config=config, **common)
    grown = train(
        "GatedPixelCNN",
        out=tmp_path / "grown.pt",
        model_config={**config, "class_dropout": 0.2},
        init_from=source,
        **common,
    ).model
    assert grown.no_class == 10
    images = pixelfast.sample(grown, 2, guidance=1.0, generator=0, progress=False)
    assert images.shape == (2, 1, 28, 28)


def test_a_guided_model_reads_as_its_model_and_copies():
    model = guided_model()
    guided = Guided(model, 1.5)
    assert (guided.levels, guided.num_classes, guided.in_channels, guided.no_class) == (6, 3, 1, 3)
    copied = copy.deepcopy(guided)
    assert copied.weight == 1.5 and copied.levels == 6 and copied.model is not model
    with pytest.raises(AttributeError):
        guided.no_such_attribute  # noqa: B018
