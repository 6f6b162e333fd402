"""The training benchmark's plain-PyTorch models (``bench/plain_models.py``) are the library's
networks, tap for tap: built from a pixelfast model by ``plain_copy``, they give the same logits
and the same gradients, so the benchmark times two ways of doing one job."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pixelfast.models import GatedPixelCNN, PixelCNN

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from plain_models import plain_copy  # noqa: E402

CASES = {
    "gated k3": lambda: GatedPixelCNN(1, 2, 8, 3),
    "gated k5 first 5": lambda: GatedPixelCNN(1, 4, 6, 2, kernel_size=5, first_kernel_size=5),
    "gated 1 layer": lambda: GatedPixelCNN(1, 256, 4, 1),
    "pixelcnn": lambda: PixelCNN(1, 2, 6, 3),
    "pixelcnn no blocks": lambda: PixelCNN(1, 3, 4, 0),
}


def grads(model, x):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, x).backward()
    return logits.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("case", list(CASES))
def test_plain_copy_is_the_same_network(case):
    torch.manual_seed(0)
    ours = CASES[case]().double()
    with torch.no_grad():  # non-zero biases everywhere, so a dropped bias shows
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    plain = plain_copy(ours)
    x = torch.randint(0, ours.levels, (3, 1, 7, 6), generator=torch.Generator().manual_seed(1))
    want, our_grads = grads(ours, x)
    got, plain_grads = grads(plain, x)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # The parameters both name alike hold the same tensors' gradients (a square kernel's gradient
    # has the cropped one's in its used rows and columns; masked taps get zero on both sides).
    for name, g in our_grads.items():
        other = plain_grads[name]
        if other.shape != g.shape:
            other = other[tuple(slice(0, n) for n in g.shape)]
        torch.testing.assert_close(other, g, atol=1e-10, rtol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_plain_copy_refuses_what_it_does_not_copy():
    with pytest.raises(ValueError, match="unconditional grey"):
        plain_copy(GatedPixelCNN(1, 2, 4, 2, num_classes=10))
    with pytest.raises(ValueError, match="unconditional grey"):
        plain_copy(PixelCNN(3, 2, 6, 1))
