"""Mixed precision: every model trains under ``torch.autocast`` (bf16; fp16 on a GPU too), its ops
computing in float32, and a step under autocast matches the float32 step within bf16's precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN
from pixelfast.ops import diagonal_lstm, masked_conv2d, row_lstm

MODELS = {
    "pixelcnn": lambda: PixelCNN(3, 8, hidden_channels=12, num_layers=2, num_classes=3),
    "gated": lambda: GatedPixelCNN(3, 8, hidden_channels=12, num_layers=3, num_classes=3),
    "gated-grey": lambda: GatedPixelCNN(1, 8, hidden_channels=6, num_layers=2),
    "row": lambda: PixelRNN("row", 3, 8, hidden_channels=12, num_layers=2),
    "diagonal": lambda: PixelRNN("diagonal", 3, 8, hidden_channels=12, num_layers=2),
}

# The low-precision dtypes autocast offers per device type.
AUTOCAST_DTYPES = {"cpu": [torch.bfloat16], "cuda": [torch.bfloat16, torch.float16]}


def step(model, x, labels, device_type, dtype=None):
    """The loss and the parameter gradients of one training step (autocast when dtype is given)."""
    model.zero_grad()
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        logits = model(x, labels) if model.num_classes else model(x)
    loss = F.cross_entropy(logits.float(), x)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_training_step_under_autocast_matches_float32(device, kind):
    torch.manual_seed(0)
    model = MODELS[kind]().to(device)
    x = torch.randint(0, 8, (4, model.in_channels, 6, 6), device=device)
    labels = torch.tensor([0, 1, 2, 0], device=device) if model.num_classes else None
    loss32, grad32 = step(model, x, labels, device.type)
    for dtype in AUTOCAST_DTYPES[device.type]:
        loss, grad = step(model, x, labels, device.type, dtype)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        # bf16 keeps 8 significant bits: the loss within 2%, the gradient's direction within a few degrees
        torch.testing.assert_close(loss, loss32, rtol=2e-2, atol=0)
        assert F.cosine_similarity(grad, grad32, dim=0) > 0.99


def test_ops_compute_in_float32_under_autocast(device):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 5, generator=generator).to(device)
    weight = torch.randn(6, 3, 3, 3, generator=generator).to(device)
    gates = torch.randn(2, 12, 4, 5, generator=generator).to(device)
    row_weight = torch.randn(12, 3, 3, generator=generator).to(device)
    diag_weight = torch.randn(12, 3, 2, generator=generator).to(device)
    low = torch.bfloat16
    with torch.autocast(device.type, dtype=low):
        conv = masked_conv2d(x.to(low), weight, None, "A", 3)
        direct = torch.ops.pixelfast.masked_conv2d(x.to(low), weight.to(low), None, "A", 3)
        row = row_lstm(gates.to(low), row_weight, None, 3)
        diagonal = diagonal_lstm(gates.to(low), diag_weight.to(low), None, 3)
    assert conv.dtype == direct.dtype == row.dtype == diagonal.dtype == torch.float32
    # exactly the float32 op on the rounded inputs
    rounded = x.to(low).float()
    torch.testing.assert_close(conv, masked_conv2d(rounded, weight, None, "A", 3), rtol=0, atol=0)
    torch.testing.assert_close(direct, masked_conv2d(rounded, weight.to(low).float(), None, "A", 3), rtol=0, atol=0)
    torch.testing.assert_close(row, row_lstm(gates.to(low).float(), row_weight, None, 3), rtol=0, atol=0)
    expected = diagonal_lstm(gates.to(low).float(), diag_weight.to(low).float(), None, 3)
    torch.testing.assert_close(diagonal, expected, rtol=0, atol=0)


def test_low_precision_outside_autocast_is_refused_by_name(device):
    x = torch.randn(1, 3, 4, 4, device=device, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="masked_conv2d: input must be float32 or float64, got torch.bfloat16"):
        masked_conv2d(x, torch.randn(3, 3, 3, 3, device=device, dtype=torch.bfloat16), None, "B", 3)
