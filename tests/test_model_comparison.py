"""The seeds' comparison (pixelfast experiment generative-models) on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from pixelfast import cli
from pixelfast.data import mnist_digits
from pixelfast.evaluate import bits_per_dim
from pixelfast.model_comparison import Contender, compare, trained_models
from pixelfast.models import ConvVAE, GatedPixelCNN, PixelCNN
from pixelfast.quality import digit_features, frechet_distance, train_digit_scorer
from pixelfast.sampling import sample


@pytest.fixture(scope="module")
def scorer():
    train = mnist_digits("train")
    return train_digit_scorer(train.images[:600], train.labels[:600], epochs=2, progress=False)


def tiny(cls, seed):
    torch.manual_seed(seed)
    return cls(1, 256, hidden_channels=6, num_layers=2, num_classes=10, image_size=(28, 28))


def test_compare_measures_each_model_and_the_real_digits(scorer):
    models = {"gated": (tiny(GatedPixelCNN, 0), 3), "plain": (tiny(PixelCNN, 1), 1)}
    result = compare(models, count=20, timing_steps=1, scorer=scorer, progress=False, log=lambda _: None)
    real, gated, plain = result.rows
    test = mnist_digits("test")
    assert real.label == "real digits (held-out)" and real.parameters is None and real.bits_per_dim is None
    assert 0.5 < real.accuracy <= 1 and real.frechet < gated.frechet
    assert (gated.label, gated.epochs, plain.epochs) == ("gated", 3, 1)
    assert gated.parameters == sum(p.numel() for p in models["gated"][0].parameters())
    assert gated.bits_per_dim == pytest.approx(bits_per_dim(models["gated"][0], test), rel=1e-6)
    assert gated.importance_bits_per_dim is None
    assert gated.seconds_per_epoch > 0 and gated.images_per_second > 0
    # the same samples the caller would draw, scored the same way
    drawn = sample(models["plain"][0], 20, labels=torch.arange(20) % 10, generator=0, progress=False).long()
    features = digit_features(scorer, drawn)
    assert plain.frechet == pytest.approx(frechet_distance(features, digit_features(scorer, test.images)))
    assert plain.accuracy == pytest.approx((scorer(drawn).argmax(1) == torch.arange(20) % 10).float().mean().item())
    assert result.grid.shape == (3 * 20, 1, 28, 28) and result.grid_columns == 20
    assert torch.equal(result.grid[40:], drawn)
    assert torch.equal(mnist_digits("test").labels[_first_labels(result.grid[:20], test)], torch.arange(20) % 10)
    table = result.table()
    assert table.count("\n") == 2 + 3 - 1 and "| gated |" in table and "| – |" in table


def _first_labels(images, test):
    """The held-out index of each of ``images`` (they are held-out digits)."""
    return torch.tensor([int(torch.nonzero((test.images == image).flatten(1).all(1))[0]) for image in images])


class HeldOutDigits(torch.nn.Module):
    """A stand-in generator that draws held-out digits of the asked class (and has no likelihood)."""

    in_channels, levels, num_classes, image_size, has_likelihood = 1, 256, 10, (28, 28), False

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # something for the timed Adam steps
        test = mnist_digits("test")
        self.pools = [test.images[test.labels == digit] for digit in range(10)]

    def inputs(self, x, labels):
        return x, labels

    def loss(self, x, labels):
        return self.weight.square().sum() + 0 * x.float().mean()

    def generate(self, n, labels, temperature, generator):
        seen = [0] * 10
        out = []
        for label in labels.tolist():
            out.append(self.pools[label][seen[label] % len(self.pools[label])])
            seen[label] += 1
        return torch.stack(out).long()


def test_compare_scores_real_digits_of_the_asked_class_as_such(scorer):
    result = compare({"real": (HeldOutDigits(), 0)}, count=40, timing_steps=1, scorer=scorer, progress=False)
    row = result.rows[1]
    assert row.bits_per_dim is None and row.importance_bits_per_dim is None and row.parameters == 1
    assert row.accuracy == pytest.approx(result.rows[0].accuracy, abs=0.15) and row.accuracy >= 0.7
    assert row.frechet < 0.5 * frechet_distance(
        digit_features(scorer, torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(0))),
        digit_features(scorer, mnist_digits("test").images),
    )
    cells = [cell.strip() for cell in result.table().splitlines()[3].split("|")[1:-1]]
    assert cells[:3] == ["real", "1", "0"] and cells[4] == "–"  # no bits/dim for a model without a likelihood


def test_compare_reports_the_vae_bounds_in_bits_per_dim(scorer):
    torch.manual_seed(0)
    vae = ConvVAE(1, 256, hidden_channels=4, latent_dim=3, num_classes=10, image_size=(28, 28))
    row = compare(
        {"vae": (vae, 0)}, count=20, timing_steps=1, importance_samples=4, scorer=scorer, progress=False
    ).rows[1]
    test = mnist_digits("test")
    assert row.bits_per_dim == pytest.approx(bits_per_dim(vae, test), rel=1e-6)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)  # the comparison's seed; it scores the held-out digits 50 at a time
        bound = torch.cat(
            [
                vae.eval().importance_weighted_nats(test.images[s : s + 50], test.labels[s : s + 50], samples=4)
                for s in range(0, 500, 50)
            ]
        )
    # a lower bound on ln p(x) in nats -> an upper bound on the bits/dim, positive like the ELBO's
    assert row.importance_bits_per_dim == pytest.approx(-bound.mean().item() / (28 * 28 * math.log(2)), rel=1e-9)
    assert 0 < row.importance_bits_per_dim < row.bits_per_dim + 0.05  # tighter than the ELBO, up to its noise


def test_compare_refuses_a_model_that_is_not_a_digits_model(scorer):
    model = GatedPixelCNN(1, 256, hidden_channels=3, num_layers=1)  # unconditional
    with pytest.raises(ValueError, match="class-conditional"):
        compare({"x": (model, 1)}, count=20, scorer=scorer, progress=False)
    with pytest.raises(ValueError, match="count must be >= 20"):
        compare({}, count=19, scorer=scorer, progress=False)


def test_trained_models_trains_once_and_then_reuses(tmp_path):
    contender = Contender("Tiny PixelCNN", "PixelCNN", {"hidden_channels": 2, "num_layers": 1}, 1, 1e-3)
    lines = []
    first = trained_models(tmp_path, (contender,), device="cpu", limit=64, progress=False, log=lines.append)
    model, epochs = first["Tiny PixelCNN"]
    assert epochs == 1 and (tmp_path / "tiny-pixelcnn.pt").is_file() and model.num_classes == 10
    assert any("epoch 1/1" in line for line in lines)
    lines.clear()
    again, _ = trained_models(tmp_path, (contender,), device="cpu", limit=64, progress=False, log=lines.append)[
        "Tiny PixelCNN"
    ]
    assert any("nothing to do" in line for line in lines) and not any("epoch 1/1:" in line for line in lines)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_the_shipped_contender_is_the_shipped_model(tmp_path):
    from pixelfast.model_comparison import CONTENDERS

    (model, epochs) = trained_models(tmp_path, CONTENDERS[:1], progress=False, log=lambda _: None)["Gated PixelCNN"]
    assert epochs == 109 and model.num_classes == 10 and not any(tmp_path.iterdir())
    assert math.isfinite(sum(p.sum().item() for p in model.parameters()))


def test_the_command_refuses_a_tiny_count(tmp_path, capsys):
    code = cli.main(["experiment", "generative-models", "--count", "5", "--out", str(tmp_path / "x.png")])
    assert code == 2 and "--count" in capsys.readouterr().err
