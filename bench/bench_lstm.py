"""Fused LSTM scans vs their plain-PyTorch loops (the paper's way), CPU.

* the scans alone (gates precomputed) and the whole layers (masked input-to-state conv included,
  identical in both), forward and forward + backward: batch 16, 32x32, 192 input channels, hidden 96
  per direction, 3 colour groups;
* the fused scans given channels-last gates, the layout the layers' input-to-state convolutions
  produce (the fused ops otherwise convert their input once);
* the Row LSTM's ceiling: its plain loop against its state-to-state matrix products alone, one per
  row, each waiting for the row above: work any implementation must do;
* PixelRNN training throughput (images/s, one Adam step per call) with fused vs plain-loop layers,
  on the paper's MNIST-sized configuration (7 layers, h = 16, 28x28, batch 16).

Run: ``pytest bench/bench_lstm.py`` (prints the speed-ups at the end); on a GPU with
``PIXELFAST_BENCH_DEVICE=cuda`` (see ``benchutil.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from benchutil import DEVICE, SMALL, timed

from pixelfast.models import PixelRNN
from pixelfast.nn import DiagonalBiLSTM, RowLSTM
from pixelfast.ops import diagonal_lstm, diagonal_lstm_ref, row_lstm, row_lstm_ref

BATCH, IN_CHANNELS, HIDDEN, SIZE, GROUPS = (2, 24, 12, 8, 3) if SMALL else (16, 192, 96, 32, 3)
SCANS = {
    "row": {"fast": row_lstm, "plain": row_lstm_ref, "taps": 3},
    "diagonal": {"fast": diagonal_lstm, "plain": diagonal_lstm_ref, "taps": 2},
}
LAYERS = {"RowLSTM": RowLSTM, "DiagonalBiLSTM": DiagonalBiLSTM}
IMPLS = ("fast", "plain")
CASE = f"B={BATCH} {IN_CHANNELS}->{HIDDEN} {SIZE}x{SIZE} groups={GROUPS}"


def scan_inputs(taps):
    generator = torch.Generator().manual_seed(0)
    gates = torch.randn(BATCH, 4 * HIDDEN, SIZE, SIZE, generator=generator).to(DEVICE).requires_grad_(True)
    weight = (torch.randn(4 * HIDDEN, HIDDEN, taps, generator=generator) * 0.05).to(DEVICE).requires_grad_(True)
    bias = torch.zeros(4 * HIDDEN, device=DEVICE, requires_grad=True)
    grad_h = torch.randn(BATCH, HIDDEN, SIZE, SIZE, generator=generator).to(DEVICE)
    return gates, weight, bias, grad_h


CHANNELS_LAST = "{kind} LSTM scan forward, fused given channels-last gates (as the layers pass them), " + CASE


# The fused scan also runs on channels-last gates, without its one layout conversion: the layers'
# input-to-state convolutions already produce that layout. The plain loop keeps its own
# (contiguous) layout and serves as the reference of both comparisons.
@pytest.mark.parametrize("impl, layout", [("fast", "contiguous"), ("plain", "contiguous"), ("fast", "channels_last")])
@pytest.mark.parametrize("kind", list(SCANS))
def bench_scan_forward(benchmark, kind, impl, layout):
    gates, weight, bias, _ = scan_inputs(SCANS[kind]["taps"])
    if layout == "channels_last":
        gates = gates.detach().contiguous(memory_format=torch.channels_last)
        benchmark.group = CHANNELS_LAST.format(kind=kind)
    else:
        benchmark.group = f"{kind} LSTM scan forward, {CASE}"
    fn = SCANS[kind][impl]
    benchmark.extra_info["impl"] = impl
    if impl == "plain":
        benchmark.extra_info["also_in"] = [CHANNELS_LAST.format(kind=kind)] + ([ROW_CEILING] if kind == "row" else [])

    def run():
        with torch.no_grad():
            return fn(gates, weight, bias, GROUPS)

    timed(benchmark, run, rounds=4, warmup_rounds=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", list(SCANS))
def bench_scan_forward_backward(benchmark, kind, impl):
    gates, weight, bias, grad_h = scan_inputs(SCANS[kind]["taps"])
    fn = SCANS[kind][impl]
    benchmark.group = f"{kind} LSTM scan forward+backward, {CASE}"
    benchmark.extra_info["impl"] = impl

    def run():
        fn(gates, weight, bias, GROUPS).backward(grad_h)
        gates.grad = weight.grad = bias.grad = None

    timed(benchmark, run, rounds=3, warmup_rounds=1)


ROW_CEILING = f"row LSTM scan forward ceiling: plain loop vs its state-to-state products alone, {CASE}"


def bench_row_state_products_alone(benchmark):
    """The Row LSTM's ``SIZE`` state-to-state products, one per row (each waits for the row above),
    as plain matrix products ``[B*W, k*h] x [k*h, 4h]`` and nothing else: work any implementation
    of the scan must do, so plain loop / products bounds the forward speed-up of any fused scan."""
    taps = SCANS["row"]["taps"]
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(BATCH * SIZE, taps * HIDDEN, generator=generator).to(DEVICE)
    weight = torch.randn(taps * HIDDEN, 4 * HIDDEN, generator=generator).to(DEVICE)
    out = torch.zeros(BATCH * SIZE, 4 * HIDDEN, device=DEVICE)
    benchmark.group = ROW_CEILING
    benchmark.extra_info["impl"] = "fast"

    def run():
        for _ in range(SIZE):
            torch.addmm(out, x, weight, out=out)

    timed(benchmark, run, rounds=4, warmup_rounds=1)


def make_layer(name, impl):
    torch.manual_seed(0)
    return LAYERS[name](IN_CHANNELS, HIDDEN, color_groups=GROUPS, fused=impl == "fast").to(DEVICE)


def layer_input():
    return torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(DEVICE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(LAYERS))
def bench_layer_forward(benchmark, name, impl):
    layer, x = make_layer(name, impl), layer_input()
    benchmark.group = f"{name} layer forward, {CASE}"
    benchmark.extra_info["impl"] = impl

    def run():
        with torch.no_grad():
            return layer(x)

    timed(benchmark, run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(LAYERS))
def bench_layer_forward_backward(benchmark, name, impl):
    layer, x = make_layer(name, impl), layer_input().requires_grad_(True)
    grad_h = torch.randn(BATCH, HIDDEN, SIZE, SIZE, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    benchmark.group = f"{name} layer forward+backward, {CASE}"
    benchmark.extra_info["impl"] = impl

    def run():
        layer(x).backward(grad_h)
        layer.zero_grad(set_to_none=True)
        x.grad = None

    timed(benchmark, run, rounds=3, warmup_rounds=1)


TRAIN_BATCH, TRAIN_SIZE = (2, 8) if SMALL else (16, 28)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["row", "diagonal"])
def bench_pixelrnn_training_step(benchmark, kind, impl):
    torch.manual_seed(0)
    model = PixelRNN(kind=kind, in_channels=1, levels=256, hidden_channels=16, num_layers=7, fused=impl == "fast")
    model = model.to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (TRAIN_BATCH, 1, TRAIN_SIZE, TRAIN_SIZE), generator=torch.Generator().manual_seed(3))
    x = x.to(DEVICE)
    benchmark.group = f"PixelRNN {kind} training step (7 layers, h=16, B={TRAIN_BATCH}, 1x{TRAIN_SIZE}x{TRAIN_SIZE})"
    benchmark.extra_info["impl"] = impl

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), x).backward()
        optimizer.step()

    timed(benchmark, run, rounds=4, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = TRAIN_BATCH / benchmark.stats.stats.median
