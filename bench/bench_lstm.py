"""Fused LSTM scans against two plain-PyTorch ones, alone, in their layers, and in PixelRNN training.

Sides of every comparison:

* fused: ``pixelfast.ops.row_lstm`` / ``diagonal_lstm`` (the layers' default, ``fused=True``);
* plain loop: the library's own plain twins ``row_lstm_ref`` (``F.conv1d`` per row) and
  ``diagonal_lstm_ref`` (the paper's way: skew, ``F.conv1d`` per column of the skewed map, unskew),
  which the layers run with ``fused=False``;
* batched plain: ``baselines.row_lstm_batched`` / ``diagonal_lstm_batched``, the plain loops at their
  best: the gates laid out for the loop once (the diagonal ones skewed once, by a pad and a
  reshape, not row by row), one matrix product per row / per diagonal, the diagonal one over the
  diagonal's pixels only, and the gates split by ``unbind`` (indexing a step out of the full gates
  tensor would make backward write a full-size zero gradient per step). In the layers and in
  training they replace the plain twins (``fused=False`` with the batched scan patched in).

Cases: the scans alone (gates precomputed), forward with the gates as a contiguous tensor and as a
channels-last one (the layout the layers' input-to-state convolutions produce; every side gets the
same tensor), and forward + backward; the whole layers, forward and forward + backward (masked
input-to-state conv included, the same in all sides): batch 16, 32x32, 192 input channels, hidden
96 per direction, 3 colour groups. The Row LSTM's floor: its state-to-state matrix products alone,
one per row (each waits for the row above), work any implementation must do. PixelRNN training
steps (one Adam step per call) on the paper's MNIST-sized configuration (7 layers, h = 16, 28x28,
batch 16).

Run: ``pytest bench/bench_lstm.py`` (the comparisons print at the end); on a GPU with
``PIXELFAST_BENCH_DEVICE=cuda`` (see ``benchutil.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from baselines import diagonal_lstm_batched, row_lstm_batched
from benchutil import DEVICE, SMALL, timed

import pixelfast.nn.lstm
from pixelfast.models import PixelRNN
from pixelfast.nn import DiagonalBiLSTM, RowLSTM
from pixelfast.ops import diagonal_lstm, diagonal_lstm_ref, row_lstm, row_lstm_ref

BATCH, IN_CHANNELS, HIDDEN, SIZE, GROUPS = (2, 24, 12, 8, 3) if SMALL else (16, 192, 96, 32, 3)
PLAIN_LOOP, BATCHED = "plain loop (library twin)", "batched plain"
SCANS = {
    "row": {"fused": row_lstm, PLAIN_LOOP: row_lstm_ref, BATCHED: row_lstm_batched, "taps": 3},
    "diagonal": {"fused": diagonal_lstm, PLAIN_LOOP: diagonal_lstm_ref, BATCHED: diagonal_lstm_batched, "taps": 2},
}
IMPLS = {"fused": "fast", PLAIN_LOOP: "baseline", BATCHED: "baseline"}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}
LAYERS = {"RowLSTM": RowLSTM, "DiagonalBiLSTM": DiagonalBiLSTM}
CASE = f"B={BATCH} {IN_CHANNELS}->{HIDDEN} {SIZE}x{SIZE} groups={GROUPS}"


def scan_inputs(taps, layout="contiguous"):
    generator = torch.Generator().manual_seed(0)
    gates = torch.randn(BATCH, 4 * HIDDEN, SIZE, SIZE, generator=generator).to(DEVICE)
    gates = gates.contiguous(memory_format=LAYOUTS[layout]).requires_grad_(True)
    weight = (torch.randn(4 * HIDDEN, HIDDEN, taps, generator=generator) * 0.05).to(DEVICE).requires_grad_(True)
    bias = torch.zeros(4 * HIDDEN, device=DEVICE, requires_grad=True)
    grad_h = torch.randn(BATCH, HIDDEN, SIZE, SIZE, generator=generator).to(DEVICE)
    return gates, weight, bias, grad_h


def scan_forward_group(kind, layout):
    return f"{kind} LSTM scan forward, {layout} gates, {CASE}"


def info(impl, table, case):
    return {"impl": impl, "role": IMPLS[impl], "table": table, "case": case}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", list(SCANS))
def bench_scan_forward(benchmark, kind, layout, impl):
    gates, weight, bias, _ = scan_inputs(SCANS[kind]["taps"], layout)
    benchmark.group = scan_forward_group(kind, layout)
    fn = SCANS[kind][impl]

    def run():
        with torch.no_grad():
            return fn(gates, weight, bias, GROUPS)

    timed(benchmark, run, **info(impl, "lstm scans", f"{kind} scan, forward, {layout} gates"))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("kind", list(SCANS))
def bench_scan_forward_backward(benchmark, kind, impl):
    gates, weight, bias, grad_h = scan_inputs(SCANS[kind]["taps"])
    fn = SCANS[kind][impl]
    benchmark.group = f"{kind} LSTM scan forward+backward, contiguous gates, {CASE}"

    def run():
        fn(gates, weight, bias, GROUPS).backward(grad_h)
        gates.grad = weight.grad = bias.grad = None

    timed(benchmark, run, **info(impl, "lstm scans", f"{kind} scan, forward+backward, contiguous gates"))


def bench_row_state_products_alone(benchmark):
    """The Row LSTM's ``SIZE`` state-to-state products, one per row (each waits for the row above),
    as plain matrix products ``[B*W, k*h] x [k*h, 4h]`` and nothing else: work any implementation
    of the scan must do, so (best plain) / (products alone) bounds the forward speed-up of any
    implementation over the plain ones."""
    taps = SCANS["row"]["taps"]
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(BATCH * SIZE, taps * HIDDEN, generator=generator).to(DEVICE)
    weight = torch.randn(taps * HIDDEN, 4 * HIDDEN, generator=generator).to(DEVICE)
    out = torch.zeros(BATCH * SIZE, 4 * HIDDEN, device=DEVICE)
    benchmark.group = scan_forward_group("row", "contiguous")

    def run():
        for _ in range(SIZE):
            torch.addmm(out, x, weight, out=out)

    timed(
        benchmark,
        run,
        impl=f"its {SIZE} state products alone",
        role="floor",
        also_in=[scan_forward_group("row", "channels-last")],
        table="lstm scans",
        case="row scan, forward, contiguous gates",
    )


@pytest.fixture
def plain_scans(monkeypatch):
    """``use(impl)``: the layers' ``fused=False`` path runs that plain scan for this test."""

    def use(impl):
        if impl == BATCHED:
            monkeypatch.setattr(pixelfast.nn.lstm, "row_lstm_ref", row_lstm_batched)
            monkeypatch.setattr(pixelfast.nn.lstm, "diagonal_lstm_ref", diagonal_lstm_batched)

    return use


def make_layer(name, impl):
    torch.manual_seed(0)
    return LAYERS[name](IN_CHANNELS, HIDDEN, color_groups=GROUPS, fused=impl == "fused").to(DEVICE)


def layer_input():
    return torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(DEVICE)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name", list(LAYERS))
def bench_layer_forward(benchmark, plain_scans, name, impl):
    plain_scans(impl)
    layer, x = make_layer(name, impl), layer_input()
    benchmark.group = f"{name} layer forward, {CASE}"

    def run():
        with torch.no_grad():
            return layer(x)

    timed(benchmark, run, **info(impl, "lstm layers", f"{name} layer, forward"))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name", list(LAYERS))
def bench_layer_forward_backward(benchmark, plain_scans, name, impl):
    plain_scans(impl)
    layer, x = make_layer(name, impl), layer_input().requires_grad_(True)
    grad_h = torch.randn(BATCH, HIDDEN, SIZE, SIZE, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    benchmark.group = f"{name} layer forward+backward, {CASE}"

    def run():
        layer(x).backward(grad_h)
        layer.zero_grad(set_to_none=True)
        x.grad = None

    timed(benchmark, run, **info(impl, "lstm layers", f"{name} layer, forward+backward"))


TRAIN_BATCH, TRAIN_SIZE = (2, 8) if SMALL else (16, 28)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("kind", ["row", "diagonal"])
def bench_pixelrnn_training_step(benchmark, plain_scans, kind, impl):
    plain_scans(impl)
    torch.manual_seed(0)
    model = PixelRNN(kind=kind, in_channels=1, levels=256, hidden_channels=16, num_layers=7, fused=impl == "fused")
    model = model.to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (TRAIN_BATCH, 1, TRAIN_SIZE, TRAIN_SIZE), generator=torch.Generator().manual_seed(3))
    x = x.to(DEVICE)
    setup = f"7 layers, h=16, {TRAIN_BATCH} x 1x{TRAIN_SIZE}x{TRAIN_SIZE}"
    benchmark.group = f"PixelRNN {kind} training step ({setup})"

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), x).backward()
        optimizer.step()

    timed(benchmark, run, **info(impl, "pixelrnn training", f"PixelRNN {kind}, one Adam step ({setup})"))
    benchmark.extra_info["images_per_s"] = TRAIN_BATCH / benchmark.stats.stats.median
