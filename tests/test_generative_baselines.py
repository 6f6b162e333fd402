"""The latent-variable baselines beside the autoregressive models: ``ConvVAE`` (its bounds checked
against hand computations) and ``DCGAN`` (each player's gradient reaches only that player), trained,
checkpointed and sampled through the same functions and commands as the pixel models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import pixelfast
from pixelfast import cli
from pixelfast.checkpoint import load_checkpoint, load_model
from pixelfast.data import mnist_digits
from pixelfast.evaluate import bits_per_dim, log_prob
from pixelfast.models import DCGAN, MODELS, ConvVAE, build_model
from pixelfast.train import train

LEVELS = 4
TINY = {"hidden_channels": 3, "latent_dim": 2}


def tiny(cls, in_channels=1, size=(6, 7), num_classes=3, seed=0, **kwargs):
    """A small float64 model; label embeddings randomised so conditioning is visible."""
    torch.manual_seed(seed)
    options = {**TINY, "levels": LEVELS, "num_classes": num_classes, "image_size": size, **kwargs}
    model = cls(in_channels=in_channels, **options).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embedding" in name or "projection" in name:
                param.normal_()
    return model


def images(n, channels=1, size=(6, 7), seed=0):
    return torch.randint(0, LEVELS, (n, channels, *size), generator=torch.Generator().manual_seed(seed))


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# --- shapes and conditioning -----------------------------------------------------------------


@pytest.mark.parametrize("channels, size", [(1, (8, 8)), (3, (6, 7)), (1, (5, 10))])
def test_vae_logits_have_the_autoregressive_layout_at_any_size(channels, size):
    # 6x7 and 5x10 are not multiples of 4: the decoder's 8x8 / 8x12 output is cropped
    model = tiny(ConvVAE, channels, size)
    x, labels = images(2, channels, size), torch.tensor([0, 2])
    logits = model(x, labels)
    assert logits.shape == (2, LEVELS, channels, *size)
    assert F.cross_entropy(logits, x).isfinite()
    mean, log_var = model.encode(x, labels)
    assert mean.shape == log_var.shape == (2, TINY["latent_dim"])
    assert model.decode(mean, labels).shape == logits.shape
    assert model.elbo_nats(x, labels).shape == (2,)
    assert model.importance_weighted_nats(x, labels, samples=3).shape == (2,)
    assert model.generate(4, torch.tensor([0, 1, 2, 0])).shape == (4, channels, *size)
    transposed = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(transposed) == 2
    for conv in transposed:
        assert (conv.kernel_size, conv.stride, conv.padding, conv.output_padding) == ((3, 3), (2, 2), (1, 1), (1, 1))


@pytest.mark.parametrize("channels, size", [(1, (8, 8)), (3, (6, 7))])
def test_dcgan_shapes(channels, size):
    model = tiny(DCGAN, channels, size).eval()
    x, labels = images(3, channels, size), torch.tensor([0, 1, 2])
    assert model(x, labels).shape == (3,)
    fake = model.generator(torch.randn(3, TINY["latent_dim"], dtype=torch.float64), labels)
    assert fake.shape == (3, channels, *size) and fake.abs().max() <= 1
    drawn = model.generate(3, labels, generator=seeded(0))
    assert drawn.dtype == torch.int64 and drawn.shape == (3, channels, *size)
    assert drawn.min() >= 0 and drawn.max() <= LEVELS - 1


def test_class_conditioning_changes_every_part():
    x, z = images(1).repeat(2, 1, 1, 1), torch.randn(1, 2, dtype=torch.float64).repeat(2, 1)
    labels = torch.tensor([0, 1])
    vae = tiny(ConvVAE)
    mean, _ = vae.encode(x, labels)
    assert not torch.allclose(mean[0], mean[1])
    logits = vae.decode(z, labels)
    assert not torch.allclose(logits[0], logits[1])
    gan = tiny(DCGAN).eval()
    fake = gan.generator(z, labels)
    assert not torch.allclose(fake[0], fake[1])
    score = gan(x, labels)
    assert not torch.allclose(score[0], score[1])
    with torch.no_grad():  # a fresh VAE's logits are all near 0: make its output depend on them
        vae.decoder[-1].weight.mul_(50)
    for model in (vae, gan):  # the same seed, other labels (or the same labels, another seed): other images
        a = model.generate(4, torch.zeros(4, dtype=torch.long), generator=seeded(1))
        assert not torch.equal(a, model.generate(4, torch.full((4,), 2), generator=seeded(1)))
        assert not torch.equal(a, model.generate(4, torch.zeros(4, dtype=torch.long), generator=seeded(2)))


# --- the VAE's bounds ------------------------------------------------------------------------


def gaussian_kl(mean_q, std_q, mean_p, std_p):
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)), elementwise, in closed form."""
    return torch.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5


def test_elbo_is_the_reconstruction_minus_the_closed_form_kl():
    model = tiny(ConvVAE, 3, (5, 6))
    x, labels = images(4, 3, (5, 6)), torch.tensor([0, 1, 2, 1])
    mean, log_var = model.encode(x, labels)
    std = torch.exp(0.5 * log_var)
    eps = torch.randn(mean.shape, generator=seeded(7), dtype=torch.float64)  # the model's draw
    logits = model.decode(mean + std * eps, labels)
    log_p = torch.log_softmax(logits, dim=1).gather(1, x.unsqueeze(1)).squeeze(1)  # [B, C, H, W]
    kl = gaussian_kl(mean, std, torch.zeros_like(mean), torch.ones_like(std)).sum(1)
    expected = log_p.sum(dim=(1, 2, 3)) - kl
    assert kl.min() > 0
    assert torch.allclose(model.elbo_nats(x, labels, generator=seeded(7)), expected)
    torch.manual_seed(3)
    loss = model.loss(x, labels)
    torch.manual_seed(3)
    elbo = model.elbo_nats(x, labels)  # the loss draws from torch's global generator
    assert torch.allclose(loss, -elbo.mean() / (3 * 5 * 6))


def test_importance_weighted_bound_by_hand():
    model = tiny(ConvVAE)
    x, labels = images(2), torch.tensor([2, 0])
    samples = 3
    got = model.importance_weighted_nats(x, labels, samples, generator=seeded(4), batch_size=1)
    mean, log_var = model.encode(x, labels)
    std = torch.exp(0.5 * log_var)
    g, expected = seeded(4), []
    for i in range(2):  # batch_size=1: one image and one sample per decoder pass, in that order
        weights = []
        for _ in range(samples):
            eps = torch.randn((1, 1, 2), generator=g, dtype=torch.float64)[0]
            z = mean[i : i + 1] + std[i : i + 1] * eps
            logits = model.decode(z, labels[i : i + 1])
            log_px = torch.log_softmax(logits, dim=1).gather(1, x[i : i + 1].unsqueeze(1)).sum()
            prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
            posterior = torch.distributions.Normal(mean[i], std[i]).log_prob(z[0]).sum()
            weights.append(log_px + prior - posterior)
        expected.append(torch.logsumexp(torch.stack(weights), 0) - math.log(samples))
    assert torch.allclose(got, torch.stack(expected))


def test_importance_weighted_bound_is_above_the_elbo_and_equal_for_one_sample():
    model = tiny(ConvVAE)
    x, labels = images(3), torch.tensor([0, 1, 2])
    draws = 400
    many, many_labels = x.repeat(draws, 1, 1, 1), labels.repeat(draws)
    with torch.no_grad():
        elbo = model.elbo_nats(many, many_labels, generator=seeded(0)).view(draws, 3)
        one = model.importance_weighted_nats(many, many_labels, 1, generator=seeded(1)).view(draws, 3)
        bound = model.importance_weighted_nats(x, labels, 64, generator=seeded(2))
    # samples=1 is the ELBO in expectation: the means agree within the noise
    spread = ((elbo.var(0) + one.var(0)) / draws).sqrt()
    assert ((elbo.mean(0) - one.mean(0)).abs() < 4 * spread + 1e-9).all()
    # more samples: a tighter bound on ln p(x), above the ELBO
    assert (bound > elbo.mean(0) + 4 * elbo.std(0) / math.sqrt(draws)).all()


def test_log_prob_of_a_vae_is_its_elbo_from_a_fixed_seed():
    model = tiny(ConvVAE)
    x, labels = images(5), torch.tensor([0, 1, 2, 0, 1])
    first = log_prob(model, x, labels, progress=False)
    assert torch.equal(first, log_prob(model, x, labels, progress=False))  # repeatable
    with torch.no_grad():
        expected = model.elbo_nats(x, labels, generator=seeded(0)).double()
    assert torch.allclose(first, expected)
    assert bits_per_dim(model, (x, labels)) == pytest.approx(-expected.sum().item() / (x.numel() * math.log(2)))


# --- the GAN's gradients ---------------------------------------------------------------------


def gradients(model):
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def test_each_gan_loss_trains_only_its_own_player():
    model = tiny(DCGAN).float()
    x, labels = images(4), torch.tensor([0, 1, 2, 0])
    parts = {}
    for which in (0, 1):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        model.losses(x, labels)[which].backward()
        parts[which] = gradients(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    model.loss(x, labels).backward()
    combined = gradients(model)
    for name, _ in model.named_parameters():
        player, other = (0, 1) if name.startswith("discriminator.") else (1, 0)
        assert parts[other][name] is None, f"{name} gets a gradient from the other player's loss"
        assert parts[player][name] is not None and parts[player][name].abs().sum() > 0, name
        assert torch.allclose(combined[name], parts[player][name], atol=1e-7), name


def test_gan_asks_for_the_papers_adam_betas():
    assert DCGAN.optimizer_options == {"betas": (0.5, 0.999)}
    assert ConvVAE.optimizer_options == {} and not DCGAN.has_likelihood and ConvVAE.has_likelihood


# --- training, checkpoints, sampling ---------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return mnist_digits("train", levels=LEVELS).subset(range(16)), load_digits_test(LEVELS)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """Each model trained one epoch by ``pixelfast.train``: name -> (result, checkpoint, log)."""
    folder = tmp_path_factory.mktemp("baselines")
    out = {}
    for name in ("ConvVAE", "DCGAN"):
        messages = []
        result = train(
            name,
            digits[0],
            test_data=digits[1],
            model_config=TINY,
            epochs=1,
            batch_size=8,
            device="cpu",
            out=folder / f"{name}.pt",
            progress=False,
            log=messages.append,
        )
        out[name] = (result, folder / f"{name}.pt", messages)
    return out


@pytest.mark.parametrize("name", ["ConvVAE", "DCGAN"])
def test_train_checkpoints_and_load_model_restores_the_model(trained, name):
    result, path, messages = trained[name]
    saved = load_checkpoint(path)
    assert saved["model_name"] == name and saved["epoch"] == 1
    assert saved["model_config"]["num_classes"] == 10 and saved["model_config"]["image_size"] == [28, 28]
    betas = saved["optimizer_state"]["param_groups"][0]["betas"]
    assert tuple(betas) == ((0.5, 0.999) if name == "DCGAN" else (0.9, 0.999))
    loaded = load_model(path)
    assert type(loaded) is MODELS[name] and loaded.config == result.model.config
    state = result.model.state_dict()
    assert loaded.state_dict().keys() == state.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    entry = result.history[-1]
    if name == "DCGAN":  # no likelihood: the loss, not bits/dim
        assert entry["train_bits_per_dim"] is None and entry["test_bits_per_dim"] is None
        assert math.isfinite(entry["train_loss"]) and saved["metrics"]["train_loss"] == entry["train_loss"]
        assert "train loss" in messages[-1] and "bits/dim" not in messages[-1]
    else:  # the negative ELBO: an upper bound, in bits/dim
        assert "train_loss" not in entry and 0 < entry["train_bits_per_dim"] < 2 + 1
        assert entry["test_bits_per_dim"] == pytest.approx(bits_per_dim(loaded, load_digits_test(LEVELS)))
        assert "bits/dim" in messages[-1] and "held-out" in messages[-1]


def load_digits_test(levels):
    return mnist_digits("test", levels=levels).subset(range(4))


@pytest.mark.parametrize("name", ["ConvVAE", "DCGAN"])
def test_sample_is_seeded_uint8_levels_with_checked_labels(trained, name):
    model = load_model(trained[name][1])
    first = pixelfast.sample(model, 6, labels=[3, 3, 4, 4, 5, 5], generator=11, progress=False)
    assert first.dtype == torch.uint8 and first.shape == (6, 1, 28, 28)
    assert int(first.max()) <= LEVELS - 1
    assert torch.equal(first, pixelfast.sample(model, 6, labels=[3, 3, 4, 4, 5, 5], generator=11, progress=False))
    # default labels: image k gets class k % num_classes, as for the autoregressive models
    default = pixelfast.sample(model, 3, generator=11, progress=False)
    assert torch.equal(default, pixelfast.sample(model, 3, labels=[0, 1, 2], generator=11, progress=False))
    assert model.training is False
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        pixelfast.sample(model, 2, labels=[0, 10], progress=False)
    with pytest.raises(ValueError, match="2 labels for n=3"):
        pixelfast.sample(model, 3, labels=[0, 1], progress=False)
    with pytest.raises(ValueError, match="class-conditional"):
        model.generate(2)


def test_temperature_divides_the_vae_logits_and_scales_the_gan_latent():
    vae, gan = tiny(ConvVAE).eval(), tiny(DCGAN).eval()
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        z = torch.randn((4, 2), generator=seeded(3), dtype=torch.float64)
        # near zero temperature: every sub-pixel is the decoder's most likely level
        cold = vae.generate(4, labels, temperature=1e-4, generator=seeded(3))
        assert torch.equal(cold, vae.decode(z, labels).argmax(1))
        for temperature in (0.5, 1.0, 2.0):
            drawn = gan.generate(4, labels, temperature=temperature, generator=seeded(3))
            assert torch.equal(drawn, gan.to_levels(gan.generator(temperature * z, labels)))
    assert not torch.equal(cold, vae.generate(4, labels, temperature=3.0, generator=seeded(3)))
    for model in (vae, gan):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            model.generate(2, labels[:2], temperature=0.0)
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            pixelfast.sample(model, 2, temperature=-1.0, progress=False)


@pytest.mark.parametrize("cls", [ConvVAE, DCGAN])
def test_sample_refuses_what_only_autoregressive_models_do(cls):
    model = tiny(cls)
    name = cls.__name__
    image, known = torch.zeros(1, 6, 7, dtype=torch.long), torch.ones(6, 7, dtype=torch.bool)
    with pytest.raises(ValueError, match=f"{name} draws whole images.*cannot complete"):
        pixelfast.sample(model, 2, image=image, known=known, progress=False)
    for method in ("naive", "cached"):
        with pytest.raises(ValueError, match=f"{name} draws whole images.*method must be 'auto'"):
            pixelfast.sample(model, 2, method=method, progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        pixelfast.sample(model, 2, method="fast", progress=False)
    with pytest.raises(ValueError, match="part is not supported"):
        pixelfast.sample(model, 4, generator=0, part=(0, 2), progress=False)
    with pytest.raises(ValueError, match=f"{name} draws 6x7 images only"):
        pixelfast.sample(model, 2, size=(8, 8), progress=False)
    assert pixelfast.sample(model, 2, size=(6, 7), generator=0, progress=False).shape == (2, 1, 6, 7)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ConvVAE, DCGAN])
def test_bad_inputs_are_clear_errors(cls):
    model = tiny(cls)
    name = cls.__name__
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=rf"{name}: x must be \[B, 1, H, W\]"):
        model(images(2, channels=3), labels)
    with pytest.raises(ValueError, match=rf"{name}: x must be \[B, 1, 6, 7\] \(image_size"):
        model.loss(images(2, size=(8, 8)), labels)
    with pytest.raises(ValueError, match="whole-number levels"):
        model(images(2) + LEVELS, labels)
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        model.loss(images(2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="accepted: hidden_channels, image_size, in_channels, latent_dim"):
        build_model(name, {**model.config, "num_layers": 2})
    with pytest.raises(ValueError, match=f"{name}: image_size=\\(H, W\\) is required"):
        cls(image_size=None)
    with pytest.raises(ValueError, match=f"{name}: latent_dim must be >= 1"):
        cls(latent_dim=0)
    with pytest.raises(ValueError, match=f"{name}: in_channels must be 1 or 3"):
        cls(in_channels=2)


def test_a_gan_has_no_likelihood():
    model = tiny(DCGAN)
    x, labels = images(2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="bits_per_dim: DCGAN has no likelihood"):
        bits_per_dim(model, (x, labels))
    with pytest.raises(ValueError, match="log_prob: DCGAN has no likelihood"):
        log_prob(model, x, labels, progress=False)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        tiny(ConvVAE).importance_weighted_nats(x, labels, samples=0)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ConvVAE", "DCGAN"])
def test_cli_trains_samples_and_evaluates(name, tmp_path, capsys):
    out, grid = tmp_path / "m.pt", tmp_path / "g.png"
    common = ["--data", "mnist-digits", "--limit", "8", "--batch-size", "8", "--levels", "4", "--no-progress"]
    args = ["train", "--model", name, *common, "--device", "cpu", "--out", str(out), "--unconditional"]
    assert cli.main([*args, "--hidden-channels", "3", "--model-arg", "latent_dim=2"]) == 0
    assert load_checkpoint(out)["model_config"]["latent_dim"] == 2
    line = capsys.readouterr().out
    assert ("train loss" in line) == (name == "DCGAN")
    assert cli.main(["sample", "--checkpoint", str(out), "--n", "4", "--out", str(grid), "--seed", "1"]) == 0
    assert "sampled 4 images of 28x28" in capsys.readouterr().out
    with Image.open(grid) as picture:
        assert picture.size[0] > 28 * 2
    assert cli.main(["sample", "--checkpoint", str(out), "--n", "4", "--out", str(grid), "--method", "naive"]) == 2
    assert "method must be 'auto'" in capsys.readouterr().err
    code = cli.main(["eval", "--checkpoint", str(out), "--limit", "4", "--no-progress"])
    if name == "DCGAN":
        assert code == 2 and "DCGAN has no likelihood" in capsys.readouterr().err
    else:
        assert code == 0 and "upper bound" in capsys.readouterr().out
    code = cli.main([*args, "--overwrite", "--num-layers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and f"{name} has no num_layers option (--num-layers)" in err and err.count("\n") == 1
