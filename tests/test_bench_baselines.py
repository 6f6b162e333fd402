"""The benchmarks' plain baselines (``bench/baselines.py``) compute what the library computes.

A baseline that got its answer wrong could be as fast as it liked: each is held to the library's
own reference here. The row-cropped naive sampler draws exactly what ``pixelfast.sample(...,
method="naive")`` draws from the same seed, and its crop is no larger than needed (one row less
changes the logits).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN
from pixelfast.ops import diagonal_lstm_ref, masked_conv2d_ref, row_lstm_ref

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from baselines import (  # noqa: E402
    crop_kernels,
    diagonal_lstm_batched,
    masked_conv2d_cropped,
    row_lstm_batched,
    rows_above,
    sample_row_cropped,
)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_cropped_kernels_compute_the_masked_conv(k, mask_type, groups):
    generator = torch.Generator().manual_seed(k)
    x = torch.randn(2, 6, 5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 6, k, k, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(9, generator=generator, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 9, 5, 7, generator=generator, dtype=torch.float64)
    above, row, row_mask = crop_kernels(weight, mask_type, groups)
    out = masked_conv2d_cropped(x, above, row, row_mask, bias)
    ref = masked_conv2d_ref(x, weight, bias, mask_type, groups)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out, (x, above, row, bias), grad, allow_unused=True)
    ref_x, ref_weight, ref_bias = torch.autograd.grad(ref, (x, weight, bias), grad)
    c = k // 2
    torch.testing.assert_close(grads[0], ref_x)
    if c:  # a 1x1 kernel has no rows above
        torch.testing.assert_close(grads[1], ref_weight[:, :, :c])
    torch.testing.assert_close(grads[2], ref_weight[:, :, c : c + 1, : c + 1])
    torch.testing.assert_close(grads[3], ref_bias)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("size", [(5, 7), (7, 5), (1, 4), (4, 1)])
@pytest.mark.parametrize(
    "batched, ref, taps", [(row_lstm_batched, row_lstm_ref, 3), (diagonal_lstm_batched, diagonal_lstm_ref, 2)]
)
def test_batched_scans_compute_the_twins(batched, ref, taps, size, groups):
    generator = torch.Generator().manual_seed(0)
    gates = torch.randn(2, 24, *size, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(24, 6, taps, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(24, generator=generator, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 6, *size, generator=generator, dtype=torch.float64)
    out, expected = batched(gates, weight, bias, groups), ref(gates, weight, bias, groups)
    torch.testing.assert_close(out, expected)
    got = torch.autograd.grad(out, (gates, weight, bias), grad)
    want = torch.autograd.grad(expected, (gates, weight, bias), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def positioned(model):
    """``model`` with random position biases (they start at zero)."""
    with torch.no_grad():
        for block in model.blocks:
            for table in (block.v_row, block.v_col, block.h_row, block.h_col):
                table.normal_()
    return model


def tiny_models():
    torch.manual_seed(0)
    small = {"levels": 8, "hidden_channels": 6}
    return {
        "PixelCNN RGB": (PixelCNN(in_channels=3, num_layers=1, **small), 4),  # 7x7 first layer (3) + one 3x3 (1)
        "Gated conditional": (
            GatedPixelCNN(in_channels=1, num_layers=2, first_kernel_size=3, num_classes=3, **small),
            2,  # first vertical conv 3x3 (1) + one more (1)
        ),
        "Gated positions": (
            positioned(GatedPixelCNN(1, num_layers=2, image_size=(8, 4), position_bias=True, **small)),
            None,
        ),
        "PixelRNN row": (PixelRNN(kind="row", in_channels=1, num_layers=1, **small), None),
        "PixelRNN diagonal": (PixelRNN(kind="diagonal", in_channels=1, num_layers=1, **small), None),
    }


def test_rows_above():
    for name, (model, reach) in tiny_models().items():
        assert rows_above(model) == reach, name
    with pytest.raises(TypeError):
        rows_above(torch.nn.Conv2d(1, 1, 3))


@pytest.mark.parametrize("name", ["PixelCNN RGB", "Gated conditional"])
def test_crop_is_the_receptive_field(name):
    """The last row's logits from rows ``H-1-R .. H-1`` are the whole image's; from one row less they are not."""
    model, reach = tiny_models()[name]
    model.eval()
    x = torch.randint(0, 8, (2, model.in_channels, 9, 5), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2]) if model.num_classes else None
    with torch.no_grad():
        full = model(x, labels)[..., -1, :]
        torch.testing.assert_close(model(x[:, :, -1 - reach :], labels)[..., -1, :], full)
        assert not torch.allclose(model(x[:, :, -reach:], labels)[..., -1, :], full)


@pytest.mark.parametrize(
    "name", ["PixelCNN RGB", "Gated conditional", "Gated positions", "PixelRNN row", "PixelRNN diagonal"]
)
def test_row_cropped_sampler_draws_what_naive_draws(name):
    model, _ = tiny_models()[name]
    size = (8, 4)  # taller than every crop, so the crops are used
    labels = torch.tensor([1, 0, 2]) if model.num_classes else None
    naive = pixelfast.sample(model, 3, size=size, labels=labels, generator=5, method="naive", progress=False)
    cropped = sample_row_cropped(model, 3, size, labels, generator=5)
    assert cropped.dtype == torch.uint8
    assert torch.equal(cropped, naive)
