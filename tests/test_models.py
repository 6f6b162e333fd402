"""Models and their layers: causality (autograd), no blind spot, shapes, config round-trip, errors."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch
import torch.nn.functional as F
from causality import LEVELS, all_positions, assert_sees_immediate_past, check_causal, earlier, levels_image, tiny

from pixelfast.models import (
    MODELS,
    GatedPixelCNN,
    GatedPixelCNNConfig,
    PixelCNN,
    PixelRNN,
    SuperResolution,
    build_model,
)
from pixelfast.nn import GatedActivation, HorizontalConv2d, MaskedConv2d, VerticalConv2d
from pixelfast.ops import make_mask


def gated_receptive_field(model, c, i, j, height, width):
    """Earlier sub-pixels inside GatedPixelCNN's documented receptive field of (c, i, j)."""
    reach = model.first_kernel_size // 2 + (model.num_layers - 1) * (model.kernel_size // 2)
    rf = torch.zeros(model.in_channels, height, width, dtype=torch.bool)
    rf[:, max(0, i - reach) : i, max(0, j - reach) : j + reach + 1] = True
    rf[:, i, max(0, j - reach) : j] = True
    rf[:c, i, j] = True
    return rf


# ---------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_causal_for_every_subpixel(channels, device):
    model = tiny(PixelCNN, channels, num_layers=2).to(device)
    height, width = 5, 6
    positions = all_positions(channels, height, width)
    depends = check_causal(model, height, width, positions)
    assert_sees_immediate_past(depends, positions)


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_causal_and_sees_every_earlier_subpixel(channels, device):
    # Reach R = 1 + 5 * 1 = 6 covers the whole 5x6 image, so every earlier sub-pixel, including
    # the ones up and to the right (a masked PixelCNN's blind spot), must matter.
    height, width = 5, 6
    model = tiny(GatedPixelCNN, channels, hidden_channels=12, num_layers=6, kernel_size=3, first_kernel_size=3).to(
        device
    )
    positions = all_positions(channels, height, width)
    depends = check_causal(model, height, width, positions)
    for k, (c, i, j) in enumerate(positions):
        missing = earlier(c, i, j, channels, height, width) & ~depends[k]
        assert not missing.any(), f"logits at {(c, i, j)} ignore earlier sub-pixels {missing.nonzero().tolist()}"


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_receptive_field_is_exactly_as_documented(channels, device):
    # reach = 5 // 2 + 1 * (3 // 2) = 3 on a 7x9 image: nonzero exactly on earlier-and-within-reach.
    height, width = 7, 9
    model = tiny(GatedPixelCNN, channels, hidden_channels=12, num_layers=2, kernel_size=3, first_kernel_size=5).to(
        device
    )
    positions = [(c, i, j) for (i, j) in [(0, 0), (0, 4), (3, 0), (3, 4), (6, 8), (5, 7)] for c in range(channels)]
    depends = check_causal(model, height, width, positions)
    for k, (c, i, j) in enumerate(positions):
        rf = gated_receptive_field(model, c, i, j, height, width)
        assert torch.equal(depends[k], rf), f"receptive field of {(c, i, j)}"


def test_pixelcnn_has_blind_spot_gated_does_not():
    # Pixel (i - 1, j + 4) is earlier but a stack of masked convs never reaches it, at any depth
    # (7x7 reaches j + 3 one row up; each 3x3 gains one column only by climbing one more row).
    height, width, i, j = 6, 8, 3, 1
    position = [(0, i, j)]
    depends = check_causal(tiny(PixelCNN, 1, num_layers=4), height, width, position)
    assert depends[0, 0, i - 1, j + 3]
    assert not depends[0, 0, i - 1, j + 4]  # the blind spot
    gated = tiny(GatedPixelCNN, 1, num_layers=4, kernel_size=3, first_kernel_size=3)
    depends = check_causal(gated, height, width, position)
    assert depends[0, 0, i - 1, j + 4]


def test_conditional_models_stay_causal(device):
    labels = torch.tensor([2])
    check_causal(tiny(GatedPixelCNN, 3, num_classes=3).to(device), 4, 5, labels=labels)
    check_causal(tiny(PixelCNN, 3, num_classes=3).to(device), 4, 5, labels=labels)


# ------------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("include_current_row", [False, True])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_vertical_conv_reads_the_documented_rows(include_current_row, kernel_size):
    torch.manual_seed(0)
    layer = VerticalConv2d(2, 4, kernel_size, include_current_row).double()
    p = kernel_size // 2
    # The same conv as a square kernel centred on the output: rows i - p .. i (- 1), all columns.
    dense = torch.zeros(4, 2, kernel_size, kernel_size, dtype=torch.float64)
    dense[:, :, : layer.weight.shape[2]] = layer.weight.detach()
    for height in (1, 4):
        x = torch.randn(3, 2, height, 5, dtype=torch.float64)
        assert torch.allclose(layer(x), F.conv2d(x, dense, layer.bias, padding=p))


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("color_groups", [1, 3])
def test_horizontal_conv_reads_the_documented_columns(mask_type, color_groups):
    torch.manual_seed(0)
    layer = HorizontalConv2d(3, 6, 5, mask_type, color_groups).double()
    centre = make_mask(3, 6, 1, mask_type, color_groups)[:, :, 0, 0].double()
    assert torch.equal(layer.mask[:, :, 0, 2], centre)
    assert torch.all(layer.mask[:, :, 0, :2] == 1)
    # The same conv as a 5x5 kernel: centre row, columns j - 2 .. j, centre tap colour masked.
    dense = torch.zeros(6, 3, 5, 5, dtype=torch.float64)
    dense[:, :, 2, :3] = layer.weight.detach()[:, :, 0]
    dense[:, :, 2, 2] *= centre
    x = torch.randn(2, 3, 4, 7, dtype=torch.float64)
    assert torch.allclose(layer(x), F.conv2d(x, dense, layer.bias, padding=2))
    layer(x).sum().backward()  # masked weights are ignored, so they get exactly zero gradient
    assert torch.all(layer.weight.grad[layer.mask == 0] == 0)


def test_gated_activation_keeps_colour_groups_apart():
    x = torch.randn(2, 12, 3, 3, dtype=torch.float64)
    out = GatedActivation(color_groups=3)(x)
    assert out.shape == (2, 6, 3, 3)
    for g in range(3):
        a, b = x[:, 4 * g : 4 * g + 2], x[:, 4 * g + 2 : 4 * g + 4]
        assert torch.allclose(out[:, 2 * g : 2 * g + 2], torch.tanh(a) * torch.sigmoid(b))
    plain = GatedActivation()(x)
    assert torch.allclose(plain, torch.tanh(x[:, :6]) * torch.sigmoid(x[:, 6:]))


# --------------------------------------------------------------------------------- shapes & config


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("channels", [1, 3])
def test_logit_shape_and_loss(cls, channels, device):
    model = tiny(cls, channels).float().to(device)
    x = levels_image(2, channels, 5, 7).to(device)
    logits = model(x)
    assert logits.shape == (2, LEVELS, channels, 5, 7)
    assert logits.dtype == torch.float32
    loss = F.cross_entropy(logits, x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_input_dtypes_agree_and_sizes_are_free(cls, device):
    model = tiny(cls, 3).to(device)
    x = levels_image(2, 3, 4, 6).to(device)
    reference = model(x)
    assert torch.equal(model(x.to(torch.uint8)), reference)
    assert torch.equal(model(x.double()), reference)
    assert torch.allclose(model.float()(x.float()).double(), reference, atol=1e-5)
    for height, width in [(1, 1), (1, 5), (6, 1)]:
        assert model(levels_image(1, 3, height, width).to(device)).shape == (1, LEVELS, 3, height, width)


def test_binary_levels_and_no_residual_blocks():
    model = tiny(PixelCNN, 1, levels=2, num_layers=0)
    x = levels_image(3, 1, 4, 4, levels=2)
    assert model(x.bool()).shape == (3, 2, 1, 4, 4)
    check_causal(model, 3, 4)


def test_logits_scale_levels_to_unit_range():
    # Level 0 must be fed to the network as -1 and the top level as +1: compare two models, one
    # fed levels and one whose first conv we call directly on the scaled image.
    model = tiny(PixelCNN, 1, levels=5, num_layers=0)
    x = torch.tensor([0, 1, 2, 3, 4]).view(1, 1, 1, 5)
    scaled = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64).view(1, 1, 1, 5)
    assert torch.allclose(model(x), model.head(model.input_conv(scaled)))


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (PixelCNN, {"in_channels": 1}),
        (PixelCNN, {"in_channels": 3, "num_classes": 4, "image_size": (5, 6), "head_channels": 9}),
        (GatedPixelCNN, {"in_channels": 1, "num_classes": 10, "image_size": [28, 28]}),
        (GatedPixelCNN, {"in_channels": 3, "kernel_size": 5, "first_kernel_size": 3}),
    ],
)
def test_config_round_trip(cls, kwargs):
    model = tiny(cls, **kwargs)
    config = json.loads(json.dumps(model.config))
    assert config == model.config
    assert model.name in MODELS and MODELS[model.name] is cls
    rebuilt = build_model(model.name, config).double()
    rebuilt.load_state_dict(model.state_dict())
    again = type(model)(**model.config).double()
    again.load_state_dict(model.state_dict())
    assert rebuilt.image_size == model.image_size and rebuilt.num_classes == model.num_classes
    x = levels_image(2, model.in_channels, 5, 6)
    labels = None if model.num_classes is None else torch.tensor([0, model.num_classes - 1])
    assert torch.equal(rebuilt(x, labels), model(x, labels))
    assert torch.equal(again(x, labels), model(x, labels))


# One small config per model, every option set, in the config's field order.
SMALL_CONFIGS = {
    "PixelCNN": dict(
        in_channels=3, levels=4, hidden_channels=3, num_layers=1, head_channels=6, num_classes=2, image_size=(3, 4)
    ),
    "GatedPixelCNN": dict(
        in_channels=1,
        levels=4,
        hidden_channels=3,
        num_layers=2,
        kernel_size=5,
        first_kernel_size=3,
        head_channels=4,
        num_classes=2,
        image_size=(3, 4),
        class_dropout=0.25,
        position_bias=True,
        class_position_bias=True,
    ),
    "PixelRNN": dict(
        kind="row",
        in_channels=1,
        levels=4,
        hidden_channels=3,
        num_layers=1,
        kernel_size=5,
        head_channels=4,
        num_classes=2,
        image_size=(3, 4),
        fused=False,
    ),
    "PixelCNNPlusPlus": dict(
        in_channels=3,
        levels=4,
        nr_resnet=1,
        nr_filters=3,
        nr_logistic_mix=2,
        dropout=0.25,
        num_classes=2,
        image_size=(3, 4),
    ),
    "SuperResolution": dict(
        in_channels=1,
        levels=4,
        scale=2,
        prior="PixelCNN",
        prior_config={"hidden_channels": 3, "num_layers": 1},
        conditioning_channels=4,
        conditioning_blocks=1,
        objective="joint",
        conditioning_loss=0.5,
        image_size=(4, 6),
    ),
    "ConvVAE": dict(in_channels=3, levels=4, hidden_channels=3, latent_dim=2, num_classes=2, image_size=(3, 4)),
    "DCGAN": dict(in_channels=1, levels=4, hidden_channels=3, latent_dim=2, num_classes=2, image_size=(3, 4)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_config_class_is_the_constructor_the_attributes_and_the_checkpoint_config(name):
    cls, options = MODELS[name], SMALL_CONFIGS[name]
    assert cls.Config.names() == tuple(options)  # every option covered, in positional order
    model = cls(**options)
    assert isinstance(model.options, cls.Config) and model.options == cls.Config(**options)
    assert cls(*options.values()).options == model.options  # positional arguments in the same order
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.options.levels = 8
    for key in cls.Config.names():  # read as attributes (SuperResolution's `prior` is the module)
        assert getattr(model, "prior_name" if key == "prior" else key) == getattr(model.options, key)
    assert name != "SuperResolution" or isinstance(model.prior, PixelCNN)
    saved = {key: value for key, value in options.items() if key != "fused"}  # a runtime switch
    assert model.config == {**saved, "image_size": list(options["image_size"])} == model.options.to_dict()
    assert build_model(name, model.config).config == model.config
    with pytest.raises(ValueError, match="accepted: " + ", ".join(sorted(cls.Config.names()))):
        build_model(name, {**model.config, "depth": 3})
    with pytest.raises(TypeError, match="depth"):
        cls(**options, depth=3)


def test_a_config_checks_and_documents_the_options():
    defaults = GatedPixelCNN.Config()
    assert GatedPixelCNN.Config is GatedPixelCNNConfig
    assert defaults.head_channels == 2 * defaults.hidden_channels == 96  # None resolved, as saved
    assert "first_kernel_size=7" in repr(defaults)
    assert GatedPixelCNNConfig(image_size=[5, 6]).image_size == (5, 6)
    with pytest.raises(ValueError, match="GatedPixelCNN: kernel_size must be odd"):
        GatedPixelCNNConfig(kernel_size=4)  # before any layer is built
    model = PixelRNN(kind="row", levels=4, hidden_channels=3, num_layers=1)
    model.fused = False  # a runtime switch: not saved, not part of the architecture
    assert model.fused is False and "fused" not in model.config
    assert build_model("PixelRNN", {**model.config, "fused": False}).fused is False
    with pytest.raises(AttributeError, match="no_such_option"):
        _ = model.no_such_option  # not an option: the usual error


def test_options_read_as_attributes_under_torch_compile():
    # forward reads options (model.levels, ...) in its input checks: no graph break for them
    model = GatedPixelCNN(1, 4, hidden_channels=3, num_layers=1, num_classes=2)
    read = torch.compile(
        lambda x: x * model.levels + model.num_classes + model.color_groups, fullgraph=True, backend="eager"
    )
    assert read(torch.ones(1)).item() == 7


def test_model_attributes():
    model = GatedPixelCNN(in_channels=3, levels=16, hidden_channels=6, num_layers=1, image_size=(8, 9))
    assert (model.in_channels, model.levels, model.num_classes, model.image_size) == (3, 16, None, (8, 9))
    assert model.name == "GatedPixelCNN" and PixelCNN.name == "PixelCNN"
    assert model.config["image_size"] == [8, 9]
    assert isinstance(model.head.out, MaskedConv2d)


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_class_conditioning_changes_logits(cls, device):
    model = tiny(cls, 1, num_classes=3).to(device)
    x = levels_image(1, 1, 4, 4).repeat(3, 1, 1, 1).to(device)
    labels = torch.tensor([0, 1, 2], device=device)
    logits = model(x, labels)
    assert not torch.allclose(logits[0], logits[1])
    assert not torch.allclose(logits[1], logits[2])
    assert torch.allclose(model(x[:1], labels[1:2]), logits[1:2])  # images are independent
    # A fresh model starts at zero class biases, and training moves them.
    fresh = cls(in_channels=1, levels=LEVELS, hidden_channels=6, num_layers=2, num_classes=3).to(device)
    F.cross_entropy(fresh(x, labels), x).backward()
    grads = [p.grad for n, p in fresh.named_parameters() if "class" in n]
    assert len(grads) == fresh.num_layers * (2 if cls is GatedPixelCNN else 1)  # v and h biases
    assert all(g is not None and torch.any(g != 0) for g in grads)


def test_class_position_biases_start_at_zero_and_belong_to_their_label():
    options = dict(in_channels=1, levels=LEVELS, hidden_channels=6, num_layers=2, num_classes=3, image_size=(4, 5))
    shared = tiny(GatedPixelCNN, **options, position_bias=True)
    per_class = GatedPixelCNN(**options, position_bias=True, class_position_bias=True).double()
    missing, unexpected = per_class.load_state_dict(shared.state_dict(), strict=False)
    assert not unexpected and missing and all("_class_row" in k or "_class_col" in k for k in missing)
    x = levels_image(1, 1, 4, 5).repeat(3, 1, 1, 1)
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(per_class(x, labels), shared(x, labels))  # zero at the start: the model it grew from
    with torch.no_grad():  # label 1's bias at one row (2) and one column (3) of the last block's h stack
        per_class.blocks[-1].h_class_row[1, 2] = 1.0
        per_class.blocks[-1].h_class_col[1, 3] = 0.5
    before, after = shared(x, labels), per_class(x, labels)
    changed = (after - before).abs().amax(dim=(1, 2))  # [B, H, W]
    assert torch.equal(after[[0, 2]], before[[0, 2]])  # the other labels' images are untouched
    assert changed[1, 2].gt(0).all() and changed[1, :, 3].gt(0).all()  # label 1's row 2 and column 3 ...
    assert changed[1, [0, 1, 3]][:, [0, 1, 2, 4]].eq(0).all()  # ... and nowhere else (a pointwise bias)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_forward_errors(cls):
    model = tiny(cls, 3)
    good = levels_image(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(good[0])
    with pytest.raises(ValueError, match="in_channels=3"):
        model(good[:, :1])
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(good.tolist())
    with pytest.raises(ValueError, match=r"0\.\.3"):
        model(good + 1)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        model(good - 1)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        model(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    with pytest.raises(ValueError, match="whole"):
        model(good.double() + 0.5)
    with pytest.raises(ValueError, match="whole"):
        model(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="unconditional"):
        model(good, torch.tensor([0, 1]))


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_label_errors(cls):
    model = tiny(cls, 1, num_classes=3)
    x = levels_image(2, 1, 4, 4)
    with pytest.raises(ValueError, match="pass labels"):
        model(x)
    with pytest.raises(ValueError, match=r"shape \[2\]"):
        model(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \[2\]"):
        model(x, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model(x, torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer"):
        model(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(x, [0, 1])
    assert model(x, torch.tensor([0, 2], dtype=torch.int32)).shape == (2, LEVELS, 1, 4, 4)


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (PixelCNN, {"in_channels": 2}, ValueError, "in_channels must be 1 or 3"),
        (PixelCNN, {"levels": 1}, ValueError, "levels must be >= 2"),
        (PixelCNN, {"levels": 2.5}, TypeError, "levels must be an int"),
        (PixelCNN, {"in_channels": 3, "hidden_channels": 8}, ValueError, "hidden_channels must be divisible by 3"),
        (PixelCNN, {"in_channels": 3, "head_channels": 8}, ValueError, "head_channels must be divisible by 3"),
        (PixelCNN, {"num_layers": -1}, ValueError, "num_layers must be >= 0"),
        (PixelCNN, {"num_classes": 0}, ValueError, "num_classes must be >= 1"),
        (PixelCNN, {"image_size": 28}, ValueError, "image_size"),
        (PixelCNN, {"image_size": (28, 0)}, ValueError, "image_size must be >= 1"),
        (GatedPixelCNN, {"in_channels": 3, "hidden_channels": 4}, ValueError, "divisible by 3"),
        (GatedPixelCNN, {"num_layers": 0}, ValueError, "num_layers must be >= 1"),
        (GatedPixelCNN, {"kernel_size": 4}, ValueError, "kernel_size must be odd"),
        (GatedPixelCNN, {"first_kernel_size": 1}, ValueError, "first_kernel_size must be >= 3"),
        (GatedPixelCNN, {"num_classes": True}, TypeError, "num_classes must be an int"),
    ],
)
def test_constructor_errors(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**{"hidden_channels": 6, "num_layers": 1, **kwargs})


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model 'PixelSNAIL'.*PixelCNN, GatedPixelCNN, PixelRNN"):
        build_model("PixelSNAIL", {})
    with pytest.raises(ValueError, match="unknown config keys for PixelCNN: kernel_size"):
        build_model("PixelCNN", {"kernel_size": 3})
    with pytest.raises(TypeError, match="config must be a dict"):
        build_model("PixelCNN", [("levels", 2)])


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN, PixelRNN, SuperResolution])
def test_the_constructor_signature_is_the_config(cls):
    """help() and IDEs show the options, not (*args, **kwargs)."""
    parameters = inspect.signature(cls).parameters
    assert tuple(parameters) == cls.Config.names()
    for parameter, field in zip(parameters.values(), dataclasses.fields(cls.Config)):
        if field.default is not dataclasses.MISSING:  # a default_factory shows as a sentinel
            assert parameter.default == field.default, field.name
