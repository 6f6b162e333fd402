"""PixelRNN and its LSTM layers: causality (autograd), receptive fields, fused == plain, config, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from causality import (
    LEVELS,
    all_positions,
    assert_sees_immediate_past,
    check_causal,
    earlier,
    levels_image,
    tiny as tiny_model,
)

import pixelfast
from pixelfast.models import MODELS, PixelRNN, build_model
from pixelfast.nn import DiagonalBiLSTM, RowLSTM


def tiny(kind, in_channels, seed=0, **kwargs):
    """:func:`causality.tiny`'s PixelRNN, with the head's hidden bias raised so that its few ReLUs
    pass (else a dependence can hide behind them)."""
    model = tiny_model(PixelRNN, in_channels, seed, kind=kind, **kwargs)
    with torch.no_grad():
        model.head.hidden.bias.add_(1.0)
    return model


def diagonal_model_receptive_field(c, i, j, channels, height, width):
    """Every earlier sub-pixel but one: the last colour of pixel (i - 1, W - 1) when j < W - 4.

    The 7x7 mask-A input conv puts that sub-pixel only into features at (i, W - 4 .. W - 1) (and
    later rows); a pixel (i, j < W - 4) comes before all of them, however complete the LSTM
    layers' receptive field is.
    """
    rf = earlier(c, i, j, channels, height, width)
    if i >= 1 and j < width - 4:
        rf[channels - 1, i - 1, width - 1] = False
    return rf


# ---------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_causal_for_every_subpixel(kind, channels, device):
    height, width = 5, 6
    model = tiny(kind, channels).to(device)
    positions = all_positions(channels, height, width)
    depends = check_causal(model, height, width, positions)
    assert_sees_immediate_past(depends, positions)
    if kind == "diagonal":
        for k, (c, i, j) in enumerate(positions):
            expected = diagonal_model_receptive_field(c, i, j, channels, height, width)
            assert torch.equal(depends[k], expected), f"receptive field of {(c, i, j)}"


def test_conditional_models_stay_causal(device):
    labels = torch.tensor([2])
    for kind in ("row", "diagonal"):
        check_causal(tiny(kind, 3, num_classes=3).to(device), 4, 5, labels=labels, images=1)


def layer_dependence(layer, channels, height, width):
    """``[C_out, H, W, C_in, H, W]``: where d out[c, i, j] / d x[c', i', j'] is nonzero."""
    x = torch.randn(1, channels, height, width, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: layer(t), x)
    return jac[0, :, :, :, 0] != 0


def colour_group(channel, channels, groups):
    return channel * groups // channels


@pytest.mark.parametrize("groups", [1, 3])
def test_diagonal_bilstm_layer_sees_every_earlier_position(groups):
    # The layer's own receptive field is complete: every earlier position (all its channels) and,
    # at the position itself, the input colour groups <= the output channel's group (mask B).
    torch.manual_seed(0)
    height, width = 4, 5
    layer = DiagonalBiLSTM(3, 3, color_groups=groups).double()
    depends = layer_dependence(layer, 3, height, width)
    for co in range(3):
        for i in range(height):
            for j in range(width):
                expected = torch.zeros(3, height, width, dtype=torch.bool)
                expected[:, :i] = True
                expected[:, i, :j] = True
                for ci in range(3):
                    expected[ci, i, j] = colour_group(ci, 3, groups) <= colour_group(co, 3, groups)
                assert torch.equal(depends[co, i, j], expected), f"output ({co}, {i}, {j})"


@pytest.mark.parametrize("groups", [1, 3])
def test_row_lstm_layer_receptive_field_is_the_documented_triangle(groups):
    torch.manual_seed(0)
    height, width, k = 4, 7, 3
    p = k // 2
    layer = RowLSTM(3, 3, kernel_size=k, color_groups=groups).double()
    depends = layer_dependence(layer, 3, height, width)
    for co in range(3):
        for i in range(height):
            for j in range(width):
                expected = torch.zeros(3, height, width, dtype=torch.bool)
                for d in range(1, i + 1):  # row i - d: columns j - (d + 1) p .. j + d p
                    expected[:, i - d, max(0, j - (d + 1) * p) : j + d * p + 1] = True
                expected[:, i, max(0, j - p) : j] = True
                for ci in range(3):
                    expected[ci, i, j] = colour_group(ci, 3, groups) <= colour_group(co, 3, groups)
                assert torch.equal(depends[co, i, j], expected), f"output ({co}, {i}, {j})"


# ------------------------------------------------------------------------------- fused == plain


@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_fused_and_plain_layers_give_the_same_model(kind, device):
    model = tiny(kind, 3, num_classes=2).to(device)
    x = levels_image(2, 3, 5, 4).double().to(device)
    labels = torch.tensor([0, 1], device=device)
    outputs, grads = [], []
    for fused in (True, False):
        model.fused = fused
        assert all(block.lstm.fused == fused for block in model.blocks)
        model.zero_grad()
        logits = model(x, labels)
        F.cross_entropy(logits, x.long()).backward()
        outputs.append(logits.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1])
    for fused_grad, plain_grad in zip(*grads):
        torch.testing.assert_close(fused_grad, plain_grad)


@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_trains(kind, device):
    torch.manual_seed(0)
    model = PixelRNN(kind=kind, in_channels=1, levels=LEVELS, hidden_channels=4, num_layers=1).to(device)
    x = levels_image(4, 1, 4, 4).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------------ model plumbing


@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_config_round_trip(kind):
    model = tiny(kind, 3, num_classes=3, image_size=(5, 4), kernel_size=5, head_channels=9)
    config = json.loads(json.dumps(model.config))
    assert config == {
        "in_channels": 3,
        "levels": LEVELS,
        "num_classes": 3,
        "image_size": [5, 4],
        "kind": kind,
        "hidden_channels": 6,
        "num_layers": 2,
        "kernel_size": 5,
        "head_channels": 9,
    }
    assert MODELS["PixelRNN"] is PixelRNN and PixelRNN.name == "PixelRNN"
    rebuilt = build_model("PixelRNN", config).double()
    rebuilt.load_state_dict(model.state_dict())
    x, labels = levels_image(2, 3, 5, 4), torch.tensor([0, 2])
    torch.testing.assert_close(rebuilt(x, labels), model(x, labels))
    assert "kind='" + kind + "'" in repr(model)


def test_logits_layout_and_levels_input(device):
    model = tiny("diagonal", 3).to(device)
    x = levels_image(2, 3, 4, 5).to(device)
    logits = model(x)
    assert logits.shape == (2, LEVELS, 3, 4, 5)
    torch.testing.assert_close(model(x.to(torch.uint8)), logits)
    assert torch.isfinite(F.cross_entropy(logits, x))


def test_naive_sampling_runs(device):
    model = tiny("row", 1).float()
    images = pixelfast.sample(model, n=2, size=(3, 3), method="naive", generator=0, device=device)
    assert images.shape == (2, 1, 3, 3) and int(images.max()) < LEVELS


@pytest.mark.parametrize(
    "make_call, error, words",
    [
        (lambda: PixelRNN(kind="column"), ValueError, "kind"),
        (lambda: PixelRNN(in_channels=3, hidden_channels=4), ValueError, "divisible by 3"),
        (lambda: PixelRNN(in_channels=3, hidden_channels=6, head_channels=4), ValueError, "divisible by 3"),
        (lambda: PixelRNN(kernel_size=4), ValueError, "odd"),
        (lambda: PixelRNN(num_layers=-1), ValueError, "num_layers"),
        (lambda: PixelRNN(hidden_channels=2.5), TypeError, "hidden_channels"),
        (lambda: PixelRNN(in_channels=2), ValueError, "in_channels"),
        (lambda: build_model("PixelRNN", {"kind": "row", "depth": 3}), ValueError, "depth"),
        (lambda: tiny("row", 1)(levels_image(1, 3, 4, 4)), ValueError, r"\[B, 1, H, W\]"),
        (lambda: tiny("row", 1)(levels_image(1, 1, 4, 4) + LEVELS), ValueError, "levels"),
        (lambda: tiny("row", 1, num_classes=2)(levels_image(1, 1, 4, 4)), ValueError, "pass labels"),
        (lambda: tiny("diagonal", 1)(levels_image(1, 1, 4, 4), torch.tensor([0])), ValueError, "unconditional"),
    ],
)
def test_bad_arguments_raise_clear_errors(make_call, error, words):
    with pytest.raises(error, match=words):
        make_call()
