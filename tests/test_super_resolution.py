"""Super-resolution: ``downsample`` and the pairs, the model (A + B, causality, losses, checkpoints,
training), ``incremental_logits(model, y, condition=x)`` and ``pixelfast.upscale``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from causality import all_positions, assert_sees_immediate_past, check_causal
from devices import tolerance
from hypothesis import given, settings, strategies as st
from torch import nn

import pixelfast
from pixelfast.checkpoint import load_checkpoint, load_model, save_checkpoint
from pixelfast.data import LowResolutionPairs, downsample, mnist_digits
from pixelfast.models import GatedPixelCNN, SuperResolution, build_model
from pixelfast.train import train

SMALL_PRIORS = {
    "GatedPixelCNN": {"hidden_channels": 6, "num_layers": 2, "first_kernel_size": 3},
    "PixelCNN": {"hidden_channels": 3, "num_layers": 1},
    "PixelRNN": {"kind": "row", "hidden_channels": 3, "num_layers": 1},
}


def small(channels=1, levels=5, scale=2, prior="GatedPixelCNN", seed=0, jitter=0.3, **kwargs):
    """A small float64 model with random weights everywhere (so A and B both matter)."""
    torch.manual_seed(seed)
    config = {
        "prior": prior,
        "prior_config": SMALL_PRIORS.get(prior),
        "conditioning_channels": 6,
        "conditioning_blocks": 1,
        **kwargs,
    }
    model = SuperResolution(channels, levels, scale, **config).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * jitter)
    return model.eval()


def levels(shape, levels=5, seed=0):
    return torch.randint(0, levels, shape, generator=torch.Generator().manual_seed(seed))


# --- downsample and the pairs ------------------------------------------------------------------


def test_downsample_is_the_rounded_block_mean():
    image = torch.tensor([[[[0, 1, 4, 4], [1, 1, 4, 5], [0, 0, 9, 9], [0, 3, 9, 9]]]], dtype=torch.uint8)
    # block means 0.75, 4.25, 0.75, 9 -> 1, 4, 1, 9; 0.5 and 2.5 round to even: 0, 2
    assert downsample(image, 2).tolist() == [[[[1, 4], [1, 9]]]]
    assert downsample(image, 2).dtype == torch.uint8
    halves = torch.tensor([[[0, 1], [0, 1]], [[2, 3], [2, 3]]])  # [C=2, 2, 2]: means 0.5, 2.5
    assert downsample(halves, 2).tolist() == [[[0]], [[2]]]
    whole = downsample(image.double(), 4)  # mean 59 / 16 = 3.69
    assert whole.tolist() == [[[[4.0]]]] and whole.dtype == torch.float64
    assert torch.equal(downsample(image, 1), image)


def test_downsample_refuses_bad_input():
    image = torch.zeros(1, 1, 6, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="6x8 is not a multiple of the factor 4"):
        downsample(image, 4)
    with pytest.raises(ValueError, match="factor must be an int >= 1"):
        downsample(image, 0)
    with pytest.raises(ValueError, match="factor must be an int >= 1"):
        downsample(image, 2.0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\] or \[C, H, W\]"):
        downsample(torch.zeros(4, 4), 2)
    with pytest.raises(TypeError, match="must be a tensor"):
        downsample([[0]], 1)
    with pytest.raises(ValueError, match="whole numbers"):
        downsample(torch.full((1, 2, 2), 0.5), 2)
    with pytest.raises(ValueError, match="levels in 0..255"):
        downsample(torch.full((1, 2, 2), -1), 2)
    with pytest.raises(TypeError, match="integer levels"):
        downsample(torch.zeros(1, 2, 2, dtype=torch.bool), 2)


def test_pairs_of_the_shipped_digits_are_7x7_to_28x28():
    digits = mnist_digits("test")
    pairs = LowResolutionPairs(digits, 4)
    assert len(pairs) == 500 and pairs.levels == 256
    low, high = pairs[3]
    assert low.shape == (1, 7, 7) and high.shape == (1, 28, 28) and low.dtype == torch.uint8
    assert torch.equal(high, digits.images[3])
    assert torch.equal(low, downsample(digits.images[3], 4))
    assert "500 x [1, 7, 7] -> [1, 28, 28]" in repr(pairs)


# --- the model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,size", [(1, (3, 5)), (2, (4, 6)), (4, (8, 4)), (8, (8, 16))])
def test_forward_is_conditioning_plus_prior_at_any_multiple_of_scale(scale, size):
    model = small(scale=scale)
    y = levels((2, 1, *size))
    x = downsample(y, scale)
    conditioning = model.conditioning_logits(x)
    assert conditioning.shape == (2, 5, 1, *size)
    with torch.no_grad():
        torch.testing.assert_close(model(y, x), conditioning + model.prior(y))


def test_defaults_need_only_channels_and_levels():
    model = SuperResolution(1, 256)
    assert (model.scale, model.prior_name, model.objective) == (4, "GatedPixelCNN", "joint")
    assert isinstance(model.prior, GatedPixelCNN)
    y = levels((1, 1, 8, 8), 256)
    assert model(y, downsample(y, 4)).shape == (1, 256, 1, 8, 8)
    upsamplers = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.stride, m.kernel_size) for m in upsamplers] == [((2, 2), (3, 3))] * 2


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("prior", list(SMALL_PRIORS))
def test_causal_in_y_and_depends_on_x(channels, prior):
    """The logits at sub-pixel i read y only before i (autograd), and read the low-resolution x."""
    width = {"GatedPixelCNN": 12, "PixelCNN": 6, "PixelRNN": 6}[prior] if channels == 3 else None
    model = small(
        channels,
        prior=prior,
        prior_config={**SMALL_PRIORS[prior], "hidden_channels": width or SMALL_PRIORS[prior]["hidden_channels"]},
    )
    height, width = 4, 4
    low = levels((1, channels, 2, 2), seed=3)

    class GivenLow(nn.Module):  # the model with x fixed, as the causality helpers call it
        in_channels, levels = model.in_channels, model.levels

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, y, labels=None):
            return self.model(y, low.expand(y.shape[0], -1, -1, -1))

    positions = all_positions(channels, height, width)
    depends = check_causal(GivenLow(), height, width, positions)
    if prior == "GatedPixelCNN":  # no blind spot: the immediate past is always seen
        assert_sees_immediate_past(depends, positions)
    x = low.double().requires_grad_(True)
    logits = model(levels((1, channels, height, width)), x)
    for c, i, j in positions:
        (grad,) = torch.autograd.grad(logits[0, :, c, i, j].sum(), x, retain_graph=True)
        assert grad.abs().sum() > 0, f"logits at {(c, i, j)} ignore the low-resolution image"


def test_losses_of_each_objective():
    y = levels((2, 1, 4, 6))
    x = downsample(y, 2)
    joint = small()
    both = joint.loss(y, x)
    a, b = joint.conditioning_logits(x), joint.prior(y)
    torch.testing.assert_close(both, F.cross_entropy(a + b, y) + F.cross_entropy(a, y))
    joint.conditioning_loss = 0.0
    torch.testing.assert_close(joint.loss(y, x), F.cross_entropy(joint(y, x), y))
    independent = small(objective="independent")
    assert independent.prior is None and independent.config["prior"] is None
    torch.testing.assert_close(independent.loss(y, x), F.cross_entropy(independent.conditioning_logits(x), y))
    torch.testing.assert_close(independent(y, x), independent.conditioning_logits(x))


def test_l2_trains_the_mean_by_squared_error_alone_and_sigma_by_likelihood():
    model = small(objective="l2", levels=9)
    y = levels((2, 1, 4, 4), 9)
    x = downsample(y, 2)
    model.loss(y, x).backward()
    full = [p.grad.clone() for p in model.conditioning.parameters()]
    assert model.log_sigma.grad is not None and model.log_sigma.grad != 0
    model.zero_grad()
    mean = (model.conditioning(x.double() / 4 - 1) + 1) * 4  # the predicted level
    F.mse_loss(mean / 4 - 1, y.double() / 4 - 1).backward()
    for got, expected in zip(full, [p.grad for p in model.conditioning.parameters()]):
        torch.testing.assert_close(got, expected)
    logits = model.conditioning_logits(x)
    assert logits.shape == (2, 9, 1, 4, 4)
    assert torch.equal(logits.argmax(1), mean.detach().round().clamp(0, 8).long())


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="power of two"):
        small(scale=3)
    with pytest.raises(ValueError, match="objective must be one of"):
        small(objective="gan")
    with pytest.raises(ValueError, match="prior must be one of"):
        small(prior="Transformer")
    with pytest.raises(ValueError, match=r"prior_config cannot set \['levels'\]"):
        SuperResolution(1, 5, prior_config={"levels": 3})
    with pytest.raises(ValueError, match="conditioning_loss must be a finite number >= 0"):
        SuperResolution(1, 5, conditioning_loss=-1)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        SuperResolution(2, 5)
    model = small()
    y = levels((2, 1, 4, 6))
    with pytest.raises(ValueError, match=r"needs a high-resolution y of shape \(2, 1, 6, 6\)"):
        model(y, levels((2, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"x must be \[B, 1, H, W\]"):
        model(y, levels((2, 3, 2, 3)))
    with pytest.raises(ValueError, match="levels in 0..4"):
        model(y, downsample(y, 2) + 5)
    with pytest.raises(ValueError, match="unconditional"):
        model.inputs(y, torch.zeros(2, dtype=torch.long))


def test_checkpoint_round_trip(tmp_path):
    model = small(prior="PixelRNN").float()  # a checkpointed model loads in float32
    save_checkpoint(tmp_path / "sr.pt", model)
    loaded = load_model(tmp_path / "sr.pt")
    assert loaded.config == model.config and "num_classes" not in loaded.config
    assert build_model("SuperResolution", model.config).config == model.config
    y = levels((2, 1, 4, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(y, downsample(y, 2)), model(y, downsample(y, 2)))


@pytest.mark.parametrize("objective", ["joint", "independent", "l2"])
def test_trains_by_name_on_any_dataset(objective, monkeypatch):
    losses = []
    original = SuperResolution.loss
    monkeypatch.setattr(SuperResolution, "loss", lambda self, y, x: losses.append(x.shape) or original(self, y, x))
    images = levels((16, 1, 8, 8), 4, seed=1)
    config = {
        "scale": 4,
        "objective": objective,
        "conditioning_channels": 4,
        "conditioning_blocks": 1,
        "prior_config": {"hidden_channels": 4, "num_layers": 1},
    }
    result = train(
        "SuperResolution",
        images,
        test_data=images[:4],
        model_config=config,
        epochs=2,
        batch_size=8,
        lr=0.01,
        progress=False,
        log=lambda message: None,
        device="cpu",
    )
    assert result.model.image_size == (8, 8) and result.model.objective == objective
    first, last = result.history[0]["test_bits_per_dim"], result.history[-1]["test_bits_per_dim"]
    assert 0 < last < first  # held-out bits/dim of y given downsample(y), improving
    assert losses == [(8, 1, 2, 2)] * 4  # the model's own objective, given the downsampled batch


def test_trains_on_an_rgb_image_folder(tmp_path):
    from PIL import Image

    for k in range(4):
        pixels = levels((16, 16, 3), 256, seed=k).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"{k}.png")
    config = {
        "conditioning_channels": 3,
        "conditioning_blocks": 0,
        "prior_config": {"hidden_channels": 3, "num_layers": 1},
    }
    result = train(
        "SuperResolution",
        "folder",
        root=tmp_path,
        levels=4,
        model_config=config,
        epochs=1,
        batch_size=4,
        progress=False,
        log=lambda message: None,
        device="cpu",
    )
    model = result.model
    assert (model.in_channels, model.image_size, model.scale) == (3, (16, 16), 4)
    assert result.history[0]["test_bits_per_dim"] > 0  # 16x16 RGB from 4x4
    assert pixelfast.upscale(model, levels((1, 3, 4, 4), 4), generator=0, progress=False).shape == (1, 3, 16, 16)


# --- the engine: incremental logits -------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    prior=st.sampled_from(list(SMALL_PRIORS)),
    channels=st.sampled_from([1, 3]),
    n_levels=st.sampled_from([2, 5, 256]),
    scale=st.sampled_from([1, 2, 4]),
    height=st.integers(1, 3),
    width=st.integers(1, 3),
    batch=st.integers(1, 2),
    seed=st.integers(0, 1000),
)
def test_incremental_logits_equal_forward(prior, channels, n_levels, scale, height, width, batch, seed):
    config = {**SMALL_PRIORS[prior], "hidden_channels": 6} if channels == 3 else SMALL_PRIORS[prior]
    model = small(channels, n_levels, scale, prior, seed, prior_config=config)
    y = levels((batch, channels, scale * height, scale * width), n_levels, seed)
    x = levels((batch, channels, height, width), n_levels, seed + 1)  # any x, not only downsample(y)
    with torch.no_grad():
        expected = model(y, x)
    torch.testing.assert_close(pixelfast.incremental_logits(model, y, condition=x), expected, atol=1e-10, rtol=1e-10)


def test_incremental_logits_on_the_device(device):
    model = small(3, 6, 2, prior_config={"hidden_channels": 6, "num_layers": 2}).float().to(device)
    y = levels((2, 3, 4, 6), 6).to(device)
    x = downsample(y, 2)
    with torch.no_grad():
        expected = model(y, x)
    got = pixelfast.incremental_logits(model, y, condition=x)
    torch.testing.assert_close(got, expected, **tolerance(torch.float32, device))


def test_incremental_logits_refuses_a_missing_or_misplaced_condition():
    model = small()
    y = levels((1, 1, 4, 4))
    with pytest.raises(ValueError, match="needs condition=, the low-resolution image"):
        pixelfast.incremental_logits(model, y)
    with pytest.raises(ValueError, match="needs a high-resolution y"):
        pixelfast.incremental_logits(model, y, condition=levels((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="condition= is for super-resolution models"):
        pixelfast.incremental_logits(model.prior, y, condition=y)
    with pytest.raises(ValueError, match="has none: its sub-pixels are independent"):
        pixelfast.incremental_logits(small(objective="independent"), y, condition=downsample(y, 2))


# --- upscale ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prior,channels", [("GatedPixelCNN", 1), ("GatedPixelCNN", 3), ("PixelCNN", 3), ("PixelRNN", 1)]
)
def test_naive_and_cached_draw_the_same_images(prior, channels):
    config = {**SMALL_PRIORS[prior], "hidden_channels": 6} if channels == 3 else SMALL_PRIORS[prior]
    model = small(channels, 6, 2, prior, prior_config=config)
    low = levels((2, channels, 2, 2), 6)
    naive = pixelfast.upscale(model, low, n=2, temperature=0.9, generator=4, method="naive", progress=False)
    cached = pixelfast.upscale(model, low, n=2, temperature=0.9, generator=4, method="cached", progress=False)
    assert naive.shape == (4, channels, 4, 4) and naive.dtype == torch.uint8
    assert torch.equal(naive, cached)
    assert torch.equal(pixelfast.upscale(model, low, n=2, temperature=0.9, generator=4, progress=False), cached)
    assert not torch.equal(cached, pixelfast.upscale(model, low, n=2, temperature=0.9, generator=5, progress=False))


def test_upscale_on_the_device(device):
    model = small(3, 6, 2, prior_config={"hidden_channels": 6, "num_layers": 2}).to(device)
    low = levels((2, 3, 1, 2), 6).to(device)
    naive = pixelfast.upscale(model, low, generator=1, method="naive", progress=False)
    cached = pixelfast.upscale(model, low, generator=1, method="cached", progress=False)
    assert cached.device.type == torch.device(device).type and torch.equal(naive, cached)


@pytest.mark.parametrize("method,calls", [("cached", 1), ("naive", 4 * 6)])
def test_cached_runs_the_conditioning_network_once(method, calls):
    model = small(levels=6)
    seen = []
    model.conditioning.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    pixelfast.upscale(model, levels((3, 1, 2, 3), 6), n=2, generator=0, method=method, progress=False)
    assert len(seen) == calls and seen[0] == (3 if method == "cached" else 6)


@pytest.mark.parametrize("objective", ["independent", "l2"])
def test_without_a_prior_every_sub_pixel_is_drawn_from_a(objective):
    model = small(levels=6, objective=objective, jitter=3.0)
    low = levels((3, 1, 2, 2), 6, seed=2)
    sharp = pixelfast.upscale(model, low, n=2, temperature=1e-4, generator=0, method="cached", progress=False)
    with torch.no_grad():
        argmax = model.conditioning_logits(low).argmax(1)
    assert torch.equal(sharp.long(), argmax.repeat_interleave(2, 0))  # image k * n + s: input k
    warm = [pixelfast.upscale(model, low, n=2, generator=1, method=m, progress=False) for m in ("naive", "auto")]
    assert torch.equal(warm[0], warm[1])


def test_upscale_refuses_bad_input():
    model = small(levels=6, image_size=(4, 6))
    low = levels((2, 1, 2, 3), 6)
    with pytest.raises(ValueError, match=r"enlarges 2x3 images 2x to 4x6 \(scale=2\); got a 4x6"):
        pixelfast.upscale(model, levels((1, 1, 4, 6), 6))
    with pytest.raises(ValueError, match=r"low must be \[B, 1, h, w\]"):
        pixelfast.upscale(model, levels((1, 3, 2, 3), 6))
    with pytest.raises(ValueError, match="levels in 0..5"):
        pixelfast.upscale(model, low + 6)
    with pytest.raises(ValueError, match="whole numbers"):
        pixelfast.upscale(model, low.double() + 0.5)
    with pytest.raises(TypeError, match="integer levels"):
        pixelfast.upscale(model, low.bool())
    with pytest.raises(TypeError, match="must be a tensor"):
        pixelfast.upscale(model, low.tolist())
    with pytest.raises(TypeError, match="must be a pixelfast.models.SuperResolution"):
        pixelfast.upscale(model.prior, low)
    with pytest.raises(ValueError, match="n must be >= 1"):
        pixelfast.upscale(model, low, n=0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        pixelfast.upscale(model, low, temperature=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        pixelfast.upscale(model, low, method="fast")
    with pytest.raises(TypeError, match=r"use pixelfast.upscale\(model, low\)"):
        pixelfast.sample(model, 2)
    assert pixelfast.upscale(model, low[0], generator=0, progress=False).shape == (1, 1, 4, 6)  # one [C, h, w]


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_by_cli(tmp_path_factory):
    """A tiny joint model trained one epoch on 8 digits (28x28 from 7x7) by ``pixelfast train``."""
    from pixelfast import cli

    path = tmp_path_factory.mktemp("sr") / "sr.pt"
    code = cli.main(
        [
            "train",
            "--model",
            "SuperResolution",
            "--data",
            "mnist-digits",
            "--limit",
            "8",
            "--levels",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(path),
            "--no-progress",
            "--model-arg",
            "conditioning_channels=4",
            "--model-arg",
            "conditioning_blocks=1",
            "--model-arg",
            'prior_config={"hidden_channels": 3, "num_layers": 1}',
        ]
    )
    assert code == 0
    return path


def test_cli_trains_and_upscales_the_demo_digits(trained_by_cli, tmp_path, capsys):
    from PIL import Image

    from pixelfast import cli

    model = load_model(trained_by_cli)
    assert isinstance(model, SuperResolution) and model.image_size == (28, 28) and model.scale == 4
    out = tmp_path / "demo.png"
    code = cli.main(
        [
            "upscale",
            "--checkpoint",
            str(trained_by_cli),
            "--demo",
            "--count",
            "3",
            "--n",
            "2",
            "--seed",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "upscaled 3 image(s) 7x7 -> 28x28" in printed and "input | 2 sample(s) | truth" in printed
    with Image.open(out) as grid:  # columns: input, 2 samples, truth; rows: 3 digits; 2-pixel padding
        assert grid.size == (2 + 4 * 30, 2 + 3 * 30)
    # with the user's own baselines: their columns too
    tiny = dict(conditioning_channels=4, conditioning_blocks=1, image_size=(28, 28))
    for objective in ("l2", "independent"):
        save_checkpoint(tmp_path / f"{objective}.pt", SuperResolution(1, 4, objective=objective, **tiny))
    code = cli.main(
        [
            "upscale",
            "--checkpoint",
            str(trained_by_cli),
            "--demo",
            "--count",
            "2",
            "--n",
            "1",
            "--l2",
            str(tmp_path / "l2.pt"),
            "--independent",
            str(tmp_path / "independent.pt"),
            "--seed",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and "input | l2 | independent | 1 sample(s) | truth" in capsys.readouterr().out
    with Image.open(out) as grid:
        assert grid.size == (2 + 5 * 30, 2 + 2 * 30)
    code = cli.main(
        [
            "upscale",
            "--checkpoint",
            str(trained_by_cli),
            "--demo",
            "--l2",
            str(tmp_path / "independent.pt"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--l2 must hold a SuperResolution trained with objective=l2" in err


def test_cli_upscales_a_png(trained_by_cli, tmp_path, capsys):
    from PIL import Image

    from pixelfast import cli

    Image.fromarray(downsample(mnist_digits("test").images[0], 4)[0].numpy()).save(tmp_path / "low.png")
    out = tmp_path / "out.png"
    code = cli.main(
        [
            "upscale",
            "--checkpoint",
            str(trained_by_cli),
            "--input",
            str(tmp_path / "low.png"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and "1 image(s) 7x7 -> 28x28" in capsys.readouterr().out
    with Image.open(out) as grid:
        assert grid.size == (2 + 5 * 30, 32)


def test_cli_upscale_errors_are_one_line(trained_by_cli, tmp_path, capsys):
    from pixelfast import cli

    (tmp_path / "text.png").write_text("not a picture")
    other = tmp_path / "gated.pt"
    save_checkpoint(other, GatedPixelCNN(1, 4, hidden_channels=3, num_layers=1))
    out = str(tmp_path / "o.png")
    cases = [
        (["--checkpoint", str(trained_by_cli), "--out", out], "one of the arguments --input --demo is required"),
        (["--checkpoint", str(other), "--demo", "--out", out], "holds a GatedPixelCNN, not a SuperResolution"),
        (
            ["--checkpoint", str(trained_by_cli), "--input", str(tmp_path / "text.png"), "--out", out],
            "is not a readable PNG",
        ),
        (["--checkpoint", str(trained_by_cli), "--input", str(tmp_path / "none.png"), "--out", out], "does not exist"),
        (
            ["--checkpoint", str(trained_by_cli), "--demo", "--out", str(tmp_path / "no" / "o.png")],
            "for --out does not exist",
        ),
    ]
    for arguments, message in cases:
        code = cli.main(["upscale", *arguments])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_cli_upscale_without_the_shipped_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from pixelfast import cli

    monkeypatch.setattr(cli, "DEFAULT_SR_CHECKPOINT", "not_shipped.pt")
    code = cli.main(["upscale", "--demo", "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "shipped default model (pixelfast/assets/not_shipped.pt)" in err


# --- the shipped model ----------------------------------------------------------------------------


def test_the_shipped_model_loads_and_upscales(tmp_path, capsys):
    """``pixelfast/assets/default_sr_digits.pt``: a joint model 7x7 -> 28x28 over 256 levels that
    ``pixelfast upscale`` uses when no checkpoint is given; its samples are consistent with the input."""
    from PIL import Image

    from pixelfast import cli

    resource = cli.default_checkpoint(cli.DEFAULT_SR_CHECKPOINT)
    assert resource.is_file(), "the shipped super-resolution model is missing from the package"
    model = load_model(str(resource))
    assert isinstance(model, SuperResolution) and model.objective == "joint"
    assert (model.in_channels, model.levels, model.scale, model.image_size) == (1, 256, 4, (28, 28))
    truth = mnist_digits("test").images[:2].long()
    low = downsample(truth, 4)
    high = pixelfast.upscale(model, low, n=2, temperature=0.8, generator=0, progress=False)
    assert high.shape == (4, 1, 28, 28) and high.dtype == torch.uint8
    # a trained model draws digits that downsample back close to their input (an untrained one does not)
    error = (downsample(high.long(), 4) - low.repeat_interleave(2, 0)).double().abs().mean().item()
    assert error < 20, error
    out = tmp_path / "up.png"
    assert (
        cli.main(["upscale", "--demo", "--count", "1", "--n", "1", "--seed", "0", "--out", str(out), "--no-progress"])
        == 0
    )
    assert "columns input | l2 | independent | 1 sample(s) | truth" in capsys.readouterr().out
    with Image.open(out) as grid:  # input, L2, independent, one sample, truth
        assert grid.size == (2 + 5 * 30, 32)
    for objective, name in cli.DEFAULT_SR_BASELINES.items():  # the shipped baselines: weights only
        saved = load_checkpoint(str(cli.default_checkpoint(name)))
        assert saved["optimizer_state"] is None and saved["model_config"]["objective"] == objective


def test_upscale_refuses_a_huge_n_at_once():
    model = SuperResolution(1, 4, scale=2, conditioning_channels=4, conditioning_blocks=1)
    with pytest.raises(ValueError, match="sub-pixels"):
        pixelfast.upscale(model, torch.zeros(2, 1, 3, 3, dtype=torch.long), n=10**12, progress=False)
