"""One Adam training step of pixelfast's PixelCNN and Gated PixelCNN against the same networks
written the usual plain-PyTorch way (``plain_models.py``).

Sides of every comparison:

* pixelfast: the library's model (``pixelfast.models``): fused masked convolutions
  (``masked_conv2d``: a 3x3 or dense 1x1 kernel as one convolution over the rows the mask reads,
  larger ones as blocks of used taps), the vertical and horizontal stacks' cropped kernels, the
  fused gate (``gated_activation``: one pass each way), the PixelCNN's residual block as one op
  (``residual_block``) and channels-last activations throughout;
* plain PyTorch: the same network, tap for tap and weight for weight (checked by
  ``tests/test_bench_plain_models.py``), written as most PixelCNN code is: square kernels times a 0/1
  mask at every call, ``F.conv2d`` with 'same' padding, ``torch.tanh(a) * torch.sigmoid(b)``.

Both take the same step: cross entropy of the logits on a batch of 32 binarised shipped digits
(2 levels, unconditional), backward, ``torch.optim.Adam``. Configurations: the Gated PixelCNN with
10 layers of 128 channels, and the PixelCNN with 15 residual blocks of 16 channels (32 in the
residual stream), fp32.

Run: ``pytest bench/bench_training.py`` (the comparisons print at the end).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from benchutil import DEVICE, SMALL, timed
from plain_models import plain_copy

from pixelfast.data import mnist_digits
from pixelfast.models import GatedPixelCNN, PixelCNN

BATCH = 4 if SMALL else 32
MODELS = {
    "Gated PixelCNN": lambda: GatedPixelCNN(1, 2, 16 if SMALL else 128, 2 if SMALL else 10),
    "PixelCNN": lambda: PixelCNN(1, 2, 16, 2 if SMALL else 15),
}
SETUPS = {
    "Gated PixelCNN": "10 layers, 128 channels" if not SMALL else "small",
    "PixelCNN": "15 residual blocks, 16 channels" if not SMALL else "small",
}
IMPLS = {"pixelfast": "fast", "plain PyTorch": "baseline"}


def batch() -> torch.Tensor:
    return mnist_digits("train", levels=2).images[:BATCH].long().to(DEVICE)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name", list(MODELS))
def bench_training_step(benchmark, name, impl):
    torch.manual_seed(0)
    model = MODELS[name]()
    if impl == "plain PyTorch":
        model = plain_copy(model)
    model = model.to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = batch()
    case = f"{name}, one Adam step ({SETUPS[name]}, {BATCH} x 1x28x28, 2 levels)"
    benchmark.group = f"training step: {case}"

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), x).backward()
        optimizer.step()

    # Two warm-up steps (oneDNN builds its primitives, Adam its state) and 5 timed ones: a step's
    # time drifts with the machine's load, and both sides should see the same spread of it.
    timed(benchmark, run, rounds=5, warmup_rounds=2, impl=impl, role=IMPLS[impl], table="training", case=case)
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.median
