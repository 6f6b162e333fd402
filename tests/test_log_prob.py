"""``pixelfast.log_prob``: one exact log-likelihood per image, in nats."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN


def forward_log_prob(model, x, second):
    """The reference: minus the forward pass's per-sub-pixel cross entropy, summed per image."""
    with torch.no_grad():
        return -F.cross_entropy(model.eval()(x, second), x, reduction="none").double().sum(dim=(1, 2, 3))


@pytest.mark.parametrize(
    "make",
    [
        lambda: GatedPixelCNN(in_channels=1, levels=4, hidden_channels=3, num_layers=2, num_classes=3),
        lambda: PixelCNN(in_channels=3, levels=5, hidden_channels=3, num_layers=1),
        lambda: PixelRNN(in_channels=1, levels=3, hidden_channels=3, num_layers=1, kind="diagonal"),
    ],
)
def test_matches_the_cross_entropy_of_the_forward_pass(make):
    torch.manual_seed(0)
    model = make().train()
    x = torch.randint(0, model.levels, (7, model.in_channels, 5, 6))
    labels = torch.randint(0, 3, (7,)) if model.num_classes else None
    got = pixelfast.log_prob(model, x, labels, batch_size=3, progress=False)  # 3 batches: 3, 3, 1
    assert got.dtype == torch.float64 and got.shape == (7,)
    assert model.training  # restored
    torch.testing.assert_close(got, forward_log_prob(model, x, labels), rtol=1e-6, atol=1e-6)
    data = (x, labels)
    bpd = pixelfast.bits_per_dim(model, data, batch_size=4)
    assert bpd == pytest.approx(-got.sum().item() / (x.numel() * math.log(2)), rel=1e-9)
    one = pixelfast.log_prob(model, x[2:3], None if labels is None else labels[2:3], progress=False)
    torch.testing.assert_close(one, got[2:3], rtol=1e-6, atol=1e-6)  # batching does not matter


def test_probabilities_of_every_image_sum_to_one():
    # All 2**(1*2*3) binary 2x3 images: exp(log_prob) is a distribution only if the model is causal
    # and each conditional is normalised; a per-image sum over the wrong axis would not sum to 1.
    torch.manual_seed(1)
    model = GatedPixelCNN(in_channels=1, levels=2, hidden_channels=3, num_layers=2, num_classes=2)
    images = torch.tensor(list(itertools.product([0, 1], repeat=6))).reshape(-1, 1, 2, 3)
    for label in (0, 1):
        labels = torch.full((images.shape[0],), label)
        total = pixelfast.log_prob(model, images, labels, batch_size=16, progress=False).exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-5)


class Conditioned(nn.Module):
    """A stand-in for a model conditioned on an image: logits depend on ``condition``."""

    levels, in_channels, num_classes = 3, 1, None

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.seen = []

    def forward(self, x, condition=None):
        self.seen.append(condition)
        base = torch.zeros(x.shape[0], self.levels, *x.shape[1:])
        if condition is not None:
            base[:, 0] = self.scale * condition.float().reshape(-1, 1, 1, 1)
        return base


def test_condition_is_the_forward_s_second_argument():
    model = Conditioned()
    x = torch.zeros(4, 1, 2, 2, dtype=torch.int64)
    condition = torch.tensor([0.0, 1.0, 2.0, 3.0])
    got = pixelfast.log_prob(model, x, condition=condition, batch_size=3, progress=False)
    assert torch.equal(model.seen[0], condition[:3]) and torch.equal(model.seen[1], condition[3:])
    expected = forward_log_prob(model, x, condition)
    torch.testing.assert_close(got, expected)
    assert got[3] > got[0]  # level 0 more likely where the condition says so
    with pytest.raises(ValueError, match="labels or condition"):
        pixelfast.log_prob(model, x, torch.zeros(4, dtype=torch.int64), condition=condition)
    with pytest.raises(ValueError, match="one entry per image"):
        pixelfast.log_prob(model, x, condition=condition[:2])


def test_bad_arguments():
    model = GatedPixelCNN(in_channels=1, levels=4, hidden_channels=3, num_layers=1, num_classes=3)
    x = torch.randint(0, 4, (2, 1, 3, 3))
    with pytest.raises(ValueError, match="class-conditional"):
        pixelfast.log_prob(model, x)
    with pytest.raises(ValueError, match="0..3"):
        pixelfast.log_prob(model, x + 4, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch_size"):
        pixelfast.log_prob(model, x, torch.zeros(2, dtype=torch.int64), batch_size=0)
    with pytest.raises(ValueError, match="device"):
        pixelfast.log_prob(model, x, torch.zeros(2, dtype=torch.int64), device="meta")
    unconditional = PixelCNN(in_channels=1, levels=4, hidden_channels=3, num_layers=0)
    with pytest.raises(ValueError, match="unconditional"):
        pixelfast.log_prob(unconditional, x, torch.zeros(2, dtype=torch.int64))
    # Data that carries labels is fine for an unconditional model: they are not its to use.
    assert pixelfast.log_prob(unconditional, (x, torch.zeros(2, dtype=torch.int64)), progress=False).shape == (2,)
