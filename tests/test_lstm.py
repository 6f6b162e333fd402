"""The fused LSTM scans (``row_lstm``, ``diagonal_lstm``) against their plain-PyTorch loop twins."""

from __future__ import annotations

import pytest
import torch
from devices import DEVICES, lstm_inputs as make_inputs, tolerance
from hypothesis import given, settings, strategies as st

import pixelfast
from pixelfast.nn import DiagonalBiLSTM, RowLSTM
from pixelfast.ops import diagonal_lstm, diagonal_lstm_ref, gate_index, row_lstm, row_lstm_ref
from pixelfast.ops.lstm import skew, unskew

TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}
# kind: (fused op, plain twin, state-to-state taps)
SCANS = {
    "row3": (row_lstm, row_lstm_ref, 3),
    "row1": (row_lstm, row_lstm_ref, 1),
    "row5": (row_lstm, row_lstm_ref, 5),
    "diagonal": (diagonal_lstm, diagonal_lstm_ref, 2),
}


def tol(dtype, device):
    """The CPU tolerances above; a GPU's (other summation orders, expf/tanhf) from devices.py."""
    return TOLERANCE[dtype] if torch.device(device).type == "cpu" else tolerance(dtype, device)


def scan_with_grads(fn, gates, weight, bias, groups):
    """``(h, c, [grad gates, grad weight, grad bias])`` for a fixed random upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (gates, weight)]
    b = bias.detach().clone().requires_grad_(True) if bias is not None else None
    h, c = fn(leaves[0], leaves[1], b, groups, return_cell=True)
    grad_h = torch.randn(h.shape, generator=torch.Generator().manual_seed(1), dtype=h.dtype).to(h.device)
    h.backward(grad_h)
    grads = [leaves[0].grad, leaves[1].grad] + ([b.grad] if b is not None else [])
    return h, c, grads


def assert_matches_reference(kind, gates, weight, bias, groups):
    fn, ref, _ = SCANS[kind]
    h, c, grads = scan_with_grads(fn, gates, weight, bias, groups)
    h_ref, c_ref, ref_grads = scan_with_grads(ref, gates, weight, bias, groups)
    tol_ = tol(gates.dtype, gates.device)
    torch.testing.assert_close(h, h_ref, **tol_)
    torch.testing.assert_close(c, c_ref, **tol_)
    for name, got, want in zip(("gates", "weight", "bias"), grads, ref_grads):
        torch.testing.assert_close(got, want, **tol_, msg=lambda m, name=name: f"{kind}: grad {name}: {m}")


def pixel_loop(kind, gates, weight, bias, groups):
    """The documented recurrence written out pixel by pixel, independently of both twins."""
    batch, channels, height, width = gates.shape
    hidden = channels // 4
    h = gates.new_zeros(batch, hidden, height + 1, width + 2 * weight.shape[2])  # zero border
    c = torch.zeros_like(h)
    pad = weight.shape[2]  # image pixel (i, j) lives at (i + 1, j + pad)
    idx = [[gate_index(q, ch, hidden, groups) for ch in range(hidden)] for q in range(4)]
    for i in range(height):
        for j in range(width):
            a = gates[:, :, i, j] + (0 if bias is None else bias)
            if kind == "diagonal":
                a = a + h[:, :, i, j + pad] @ weight[:, :, 0].T + h[:, :, i + 1, j + pad - 1] @ weight[:, :, 1].T
                c_prev = c[:, :, i + 1, j + pad - 1]
            else:
                p = weight.shape[2] // 2
                for s in range(weight.shape[2]):
                    a = a + h[:, :, i, j + pad + s - p] @ weight[:, :, s].T
                c_prev = c[:, :, i, j + pad]
            gi, gf, go = (torch.sigmoid(a[:, idx[q]]) for q in range(3))
            gg = torch.tanh(a[:, idx[3]])
            c[:, :, i + 1, j + pad] = gf * c_prev + gi * gg
            h[:, :, i + 1, j + pad] = go * torch.tanh(c[:, :, i + 1, j + pad])
    return h[:, :, 1:, pad : pad + width]


# ------------------------------------------------------------------------------- against the twins


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("kind", list(SCANS))
def test_matches_reference(kind, groups, dtype, layout, device):
    gates, weight, bias = make_inputs(2, 6, 5, 7, SCANS[kind][2], dtype, device=device)
    if layout == "channels_last":
        gates = channels_last(gates)
    assert_matches_reference(kind, gates, weight, bias, groups)


@pytest.mark.parametrize("kind", list(SCANS))
@pytest.mark.parametrize("size", [(1, 1), (1, 6), (7, 1), (3, 8), (8, 3), (2, 2)])
def test_odd_sizes_and_batch_one(kind, size, device):
    gates, weight, bias = make_inputs(1, 3, *size, SCANS[kind][2], torch.float64, device=device)
    assert_matches_reference(kind, gates, weight, bias, 3)
    assert_matches_reference(kind, channels_last(gates), weight, bias, 3)


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(list(SCANS)),
    batch=st.integers(1, 3),
    hidden_per_group=st.integers(1, 3),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    groups=st.sampled_from([1, 3]),
    bias=st.booleans(),
    layout=st.sampled_from(["contiguous", "channels_last"]),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_many_shapes(kind, batch, hidden_per_group, height, width, groups, bias, layout, seed, device):
    gates, weight, b = make_inputs(
        batch, hidden_per_group * groups, height, width, SCANS[kind][2], torch.float64, bias, seed, device
    )
    if layout == "channels_last":
        gates = channels_last(gates)
    assert_matches_reference(kind, gates, weight, b, groups)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("kind", ["row3", "diagonal"])
def test_follows_the_documented_recurrence(kind, groups, device):
    gates, weight, bias = make_inputs(2, 3, 4, 5, SCANS[kind][2], torch.float64, seed=3, device=device)
    expected = pixel_loop("diagonal" if kind == "diagonal" else "row", gates, weight, bias, groups)
    for fn in SCANS[kind][:2]:
        torch.testing.assert_close(fn(gates, weight, bias, groups), expected, **tol(torch.float64, device))


def test_gate_layout_on_one_pixel():
    # One pixel, no state: h = o * tanh(i * g), with i, f, o, g read at gate_index (R, G, B blocks).
    hidden, groups = 6, 3
    gates = torch.randn(1, 4 * hidden, 1, 1, dtype=torch.float64)
    a = gates[0, :, 0, 0]
    # m = 2: hidden channel 2 is the first of group 1 (G), whose gate block starts at 4m = 8.
    assert [gate_index(q, 2, hidden, groups) for q in range(4)] == [8, 10, 12, 14]
    i, o, g = (a[[gate_index(q, c, hidden, groups) for c in range(hidden)]] for q in (0, 2, 3))
    expected = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
    for fn, taps in ((row_lstm, 3), (diagonal_lstm, 2)):
        out = fn(gates, torch.zeros(4 * hidden, hidden, taps, dtype=torch.float64), None, groups)
        torch.testing.assert_close(out[0, :, 0, 0], expected)


@pytest.mark.parametrize("kind", ["row3", "diagonal"])
def test_saturated_and_nan_pre_activations(kind):
    # float32 uses branch-free sigmoid/tanh: +-inf and huge gates must saturate like torch's,
    # and a NaN must come out as NaN (then spread along the recurrence, as in the plain loop).
    fn, ref, taps = SCANS[kind]
    gates, weight, bias = make_inputs(1, 3, 4, 4, taps, torch.float32)
    gates[0, :, 1, 1] = float("inf")
    gates[0, :6, 2, 0] = -1e30
    gates[0, 6:, 2, 0] = 1e30
    gates[0, 0, 3, 2] = float("nan")
    torch.testing.assert_close(
        fn(gates, weight, bias, 3), ref(gates, weight, bias, 3), equal_nan=True, **TOLERANCE[torch.float32]
    )
    assert torch.isnan(fn(gates, weight, bias, 3)[0, :, 3, 2]).any()


def test_skew_unskew_round_trip():
    x = torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    s = skew(x)
    assert s.shape == (2, 3, 4, 8)
    assert torch.equal(s[:, :, 2, 2:7], x[:, :, 2]) and torch.all(s[:, :, 2, :2] == 0)
    assert torch.equal(unskew(s, 5), x)


def test_non_contiguous_and_channels_last_inputs(device):
    for kind in ("row3", "diagonal"):
        gates, weight, bias = make_inputs(2, 3, 5, 4, SCANS[kind][2], torch.float64, device=device)
        assert_matches_reference(kind, gates.contiguous(memory_format=torch.channels_last), weight, bias, 3)
        wide = torch.randn(2, 24, 5, 4, dtype=torch.float64, device=device)
        assert_matches_reference(kind, wide[:, ::2], weight, bias, 3)  # a strided channel slice
        assert_matches_reference(kind, gates, weight.transpose(0, 1).contiguous().transpose(0, 1), bias, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 120, 9, 13), (1, 48, 16, 16), (3, 12, 3, 5)])
def test_layout_conversion_is_exact(shape, dtype):
    # Contiguous gates are converted to channels-last inside the op (in 8 x 8 register tiles for
    # float32 on AVX2, full 16 x 16 tiles and ragged edges alike): bit-identical to passing them
    # channels-last.
    gates = torch.randn(shape, dtype=dtype)
    hidden = shape[1] // 4
    for fn, taps in ((row_lstm, 3), (diagonal_lstm, 2)):
        weight = torch.randn(4 * hidden, hidden, taps, dtype=dtype) * 0.1
        assert torch.equal(fn(gates, weight, None, 3), fn(channels_last(gates), weight, None, 3))


def test_outputs_are_channels_last():
    gates, weight, bias = make_inputs(2, 3, 4, 5, 3, torch.float32)
    for g in (gates, channels_last(gates)):
        assert row_lstm(g, weight, bias).is_contiguous(memory_format=torch.channels_last)
        out = diagonal_lstm(g, weight[:, :, :2].contiguous(), bias)
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_only_weight_grads_when_gates_are_data(device):
    for kind in ("row3", "diagonal"):
        fn, ref, taps = SCANS[kind]
        gates, weight, bias = make_inputs(2, 3, 4, 4, taps, torch.float64, device=device)
        w, w_ref = weight.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        fn(gates, w, bias, 3).sum().backward()
        ref(gates, w_ref, bias, 3).sum().backward()
        torch.testing.assert_close(w.grad, w_ref.grad)


def test_cell_state_is_not_differentiable():
    gates, weight, bias = make_inputs(1, 3, 3, 3, 3, torch.float64)
    h, c = row_lstm(gates.requires_grad_(True), weight, bias, return_cell=True)
    assert h.requires_grad and not c.requires_grad


def test_layers_under_torch_compile_fullgraph():
    torch.manual_seed(0)
    model = torch.nn.ModuleList([RowLSTM(6, 3, color_groups=3), DiagonalBiLSTM(6, 3, color_groups=3)])
    x = torch.randn(2, 6, 5, 4)

    def run(x):
        return model[0](x) + model[1](x)

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, run(x))
    out.sum().backward()
    assert model[0].state_to_state.grad.abs().sum() > 0
    assert model[1].right_to_left.state_to_state.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ errors


def _gates(channels=12, dtype=torch.float32, **kw):
    return torch.randn(2, channels, 4, 5, dtype=dtype, **kw)


@pytest.mark.parametrize(
    "make_call, error, words",
    [
        (lambda: row_lstm(torch.randn(12, 4, 5), torch.randn(12, 3, 3)), ValueError, "4-D"),
        (lambda: row_lstm(_gates(10), torch.randn(10, 2, 3)), ValueError, "4h channels"),
        (lambda: row_lstm(_gates(8), torch.randn(8, 2, 3), None, 3), ValueError, "divisible by color_groups=3"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3, 3), None, 2), ValueError, "color_groups"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3, 2)), ValueError, "odd"),
        (lambda: row_lstm(_gates(), torch.randn(12, 4, 3)), ValueError, r"\[4h, h, k\]"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3)), ValueError, "weight must be"),
        (lambda: diagonal_lstm(_gates(), torch.randn(12, 3, 3)), ValueError, "2 taps"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3, 3, dtype=torch.float64)), TypeError, "dtype"),
        (lambda: row_lstm(_gates().long(), torch.randn(12, 3, 3).long()), TypeError, "float32 or float64"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3, 3, device="meta")), ValueError, "device"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3, 3), torch.randn(11)), ValueError, "bias"),
        (lambda: row_lstm(_gates(), torch.randn(12, 3, 3), [0.0] * 12), TypeError, "bias"),
        (lambda: diagonal_lstm(torch.randn(2, 12, 0, 3), torch.randn(12, 3, 2)), ValueError, "H, W >= 1"),
        (lambda: RowLSTM(4, 3, color_groups=3), ValueError, "divisible by 3"),
        (lambda: RowLSTM(3, 3, kernel_size=2), ValueError, "kernel_size"),
        (lambda: DiagonalBiLSTM(3, 4, color_groups=3), ValueError, "divisible by 3"),
        (lambda: DiagonalBiLSTM(3, 3, color_groups=2), ValueError, "color_groups"),
    ],
)
def test_bad_input_raises_clear_error(make_call, error, words):
    with pytest.raises(error, match=words):
        make_call()


@pytest.mark.parametrize(
    "name, args, error, words",
    [
        ("row_lstm", (torch.randn(12, 4, 5), torch.randn(12, 3, 3), None, 1), ValueError, "4-D"),
        ("row_lstm", (_gates(10), torch.randn(10, 2, 3), None, 1), ValueError, "4h channels"),
        ("row_lstm", (_gates(), torch.randn(12, 3, 3), None, 2), ValueError, "color_groups"),
        ("row_lstm", (_gates(), torch.randn(12, 3, 2), None, 1), ValueError, "odd"),
        ("row_lstm", (_gates(), torch.randn(12, 3, 3).double(), None, 1), TypeError, "dtype"),
        ("row_lstm", (_gates(), torch.randn(12, 3, 3), torch.randn(5), 1), ValueError, "bias"),
        ("row_lstm", (_gates().int(), torch.randn(12, 3, 3).int(), None, 1), TypeError, "float32 or float64"),
        ("diagonal_lstm", (_gates(), torch.randn(12, 3, 3), None, 1), ValueError, "2 taps"),
        ("diagonal_lstm", (_gates(8), torch.randn(8, 2, 2), None, 3), ValueError, "divisible by color_groups=3"),
        (
            "diagonal_lstm_backward",
            (torch.randn(2, 3, 4, 4), torch.randn(12, 3, 2), _gates(3), _gates(3), _gates(), 1),
            RuntimeError,
            "grad_h must have shape",
        ),
        (
            "row_lstm_backward",
            (_gates(3), torch.randn(12, 3, 3), _gates(3), _gates(3).double(), _gates(), 1),
            RuntimeError,
            "c has dtype",
        ),
    ],
)
def test_op_called_directly_checks_its_arguments(name, args, error, words):
    # The op's own checks (C++) are the only ones: a direct call gets the Python face's error
    # (the backward ops' own consistency checks, which no face calls, raise RuntimeError).
    with pytest.raises(error, match=words):
        getattr(torch.ops.pixelfast, name)(*args)


@pytest.mark.skipif(not pixelfast.ops.WITH_CUDA, reason="pixelfast was built without its CUDA kernels")
@pytest.mark.parametrize(
    "name, args, tensor",
    [
        ("row_lstm", (_gates(), torch.randn(12, 3, 3), None, 1), "gates"),
        ("diagonal_lstm", (_gates(), torch.randn(12, 3, 2), None, 1), "gates"),
        ("row_lstm_backward", (_gates(3), torch.randn(12, 3, 3), _gates(3), _gates(3), _gates(), 1), "acts"),
        ("diagonal_lstm_backward", (_gates(3), torch.randn(12, 3, 2), _gates(3), _gates(3), _gates(), 1), "acts"),
    ],
)
def test_cuda_kernel_given_cpu_tensors_gives_the_ops_message(name, args, tensor):
    # The CUDA kernel called directly (no GPU needed): the op's own message, before c10's device guard.
    cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match=f"{name}: {tensor} is on cpu, but this is the op's CUDA kernel"):
        getattr(torch.ops.pixelfast, name).default.redispatch(cuda, *args)
