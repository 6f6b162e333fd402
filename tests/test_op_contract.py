"""Every compiled op's contract, over one table of sample inputs (as pytorch/extension-cpp's
``sample_inputs``): its Python face equals the plain twin (``*_ref``), gradcheck, opcheck of the
forward and backward ops, torch.compile without graph breaks, kernels registered for the CPU and,
as built, CUDA, and the rebuild message when the library is missing.

Each op's own behaviour (shapes, layouts, dtypes, many sizes, bad input) is tested in its own file:
test_masked_conv.py, test_lstm.py, test_gate.py, test_residual_block.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from devices import conv_inputs, links_cuda_runtime, lstm_inputs, tolerance

import pixelfast
from pixelfast.ops import (
    _library,
    diagonal_lstm,
    diagonal_lstm_ref,
    gated_activation,
    gated_activation_ref,
    masked_conv2d,
    masked_conv2d_ref,
    residual_block,
    residual_block_ref,
    row_lstm,
    row_lstm_ref,
)


@dataclasses.dataclass(frozen=True)
class Op:
    """An op's Python face and plain twin, and how to call its raw backward op."""

    name: str  # torch.ops.pixelfast.<name> and <name>_backward
    face: Callable
    reference: Callable
    # (forward args, forward outputs, upstream gradient) -> the backward op's args
    backward_args: Callable


def _conv_backward_args(args, out, grad):
    x, weight, _, mask_type, groups = args
    return (grad, x.detach(), weight.detach(), mask_type, groups, [True, True])


def _lstm_backward_args(args, out, grad):
    _, weight, _, groups = args
    h, c, acts = out
    return (grad, weight.detach(), h, c, acts, groups)


def _block_backward_args(args, out, grad):
    _, w_in, _, w, _, w_out, _, image_bias, groups = args
    _, relu_x, hidden_in, hidden = out
    return (grad, relu_x, hidden_in, hidden, w_in.detach(), w.detach(), w_out.detach(), image_bias is not None, groups)


def _gate_backward_args(args, out, grad):
    x, groups = args
    return (grad, x.detach(), groups)


OPS = {
    "masked_conv2d": Op("masked_conv2d", masked_conv2d, masked_conv2d_ref, _conv_backward_args),
    "gated_activation": Op("gated_activation", gated_activation, gated_activation_ref, _gate_backward_args),
    "row_lstm": Op("row_lstm", row_lstm, row_lstm_ref, _lstm_backward_args),
    "diagonal_lstm": Op("diagonal_lstm", diagonal_lstm, diagonal_lstm_ref, _lstm_backward_args),
    "residual_block": Op("residual_block", residual_block, residual_block_ref, _block_backward_args),
}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One call: tensors ``make(dtype, device) -> (input, ...)`` (for the convolution and the scans
    ``(input, weight, bias or None)``) and the options after them."""

    op: str
    make: Callable
    options: tuple
    channels_last: bool = False

    def args(self, dtype, device="cpu", requires_grad=False) -> tuple:
        tensors = list(self.make(dtype, device))
        if self.channels_last:
            tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        tensors = [t.requires_grad_(requires_grad) if t is not None else None for t in tensors]
        return (*tensors, *self.options)

    def __str__(self) -> str:
        layout = ", channels_last" if self.channels_last else ""
        return f"{self.op}{self.options}{layout}"


def _conv(k, bias=True):
    return lambda dtype, device: conv_inputs(2, 3, 6, 5, 4, k, dtype, bias, device=device)


def _lstm(taps, bias=True):
    return lambda dtype, device: lstm_inputs(2, 3, 4, 3, taps, dtype, bias, device=device)


def _block(k, groups, bias=True, image_bias=False):
    """``residual_block``'s 8 tensors (absent ones None) for 2 images of 3x4 pixels, 6 channels,
    3 * groups hidden ones."""

    def make(dtype, device):
        g = torch.Generator().manual_seed(k)
        hidden = 3 * groups

        def randn(*shape, present=True):
            return torch.randn(*shape, generator=g, dtype=dtype).to(device) * 0.5 if present else None

        return (
            randn(2, 6, 3, 4),
            randn(hidden, 6, 1, 1),
            randn(hidden, present=bias),
            randn(hidden, hidden, k, k),
            randn(hidden, present=bias),
            randn(6, hidden, 1, 1),
            randn(6, present=bias),
            randn(2, hidden, present=image_bias),
        )

    return make


def _gate(batch, channels, height, width, spare=0):
    """``spare`` > 0: the input is a channel slice of a channels-last tensor with ``spare`` more
    channels (strided: neither layout)."""

    def make(dtype, device):
        generator = torch.Generator().manual_seed(channels)
        x = torch.randn(batch, channels + spare, height, width, generator=generator, dtype=dtype).to(device)
        if spare:
            x = x.contiguous(memory_format=torch.channels_last)[:, :channels]
        return (x,)

    return make


SAMPLES = [
    Sample("gated_activation", _gate(2, 12, 3, 5), (3,)),
    Sample("gated_activation", _gate(2, 8, 4, 3), (1,), channels_last=True),
    Sample("gated_activation", _gate(1, 6, 1, 1), (3,), channels_last=True),
    Sample("gated_activation", _gate(2, 12, 3, 4, spare=4), (3,)),
    Sample("masked_conv2d", _conv(3), ("A", 3)),
    Sample("masked_conv2d", _conv(5), ("B", 3)),
    Sample("masked_conv2d", _conv(3), ("B", 1)),
    Sample("masked_conv2d", _conv(1), ("A", 1)),
    Sample("masked_conv2d", _conv(5, bias=False), ("B", 1)),
    Sample("masked_conv2d", _conv(1), ("B", 3)),
    Sample("residual_block", _block(3, 1), (1,)),
    Sample("residual_block", _block(3, 3, image_bias=True), (3,), channels_last=True),
    Sample("residual_block", _block(5, 1, bias=False, image_bias=True), (1,)),
    Sample("residual_block", _block(1, 3, bias=False), (3,)),
    Sample("row_lstm", _lstm(3), (3,)),
    Sample("row_lstm", _lstm(1, bias=False), (1,)),
    Sample("row_lstm", _lstm(1, bias=False), (3,)),
    Sample("row_lstm", _lstm(3), (3,), channels_last=True),
    Sample("diagonal_lstm", _lstm(2), (3,)),
    Sample("diagonal_lstm", _lstm(2, bias=False), (1,), channels_last=True),
]
samples = pytest.mark.parametrize("sample", SAMPLES, ids=str)


def _outputs_and_grads(fn, args):
    """Forward outputs and the gradients of the tensor arguments for a fixed upstream gradient."""
    out = fn(*args)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(out.device)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return out, torch.autograd.grad(out, leaves, grad)


@samples
def test_face_matches_the_plain_twin(sample, device):
    op = OPS[sample.op]
    args = sample.args(torch.float64, device, requires_grad=True)
    out, grads = _outputs_and_grads(op.face, args)
    want, want_grads = _outputs_and_grads(op.reference, args)
    tol = tolerance(torch.float64, device)
    torch.testing.assert_close(out, want, **tol)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected, **tol)


@samples
def test_gradcheck(sample, device):
    op = OPS[sample.op]
    args = sample.args(torch.float64, device, requires_grad=True)
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    tensors = tuple(args[i] for i in positions)

    def call(*inputs):
        full = list(args)
        for i, t in zip(positions, inputs):
            full[i] = t
        return op.face(*full)

    # fast_mode checks random projections of the Jacobian: the same test, a fraction of the calls.
    assert torch.autograd.gradcheck(call, tensors, eps=1e-6, atol=1e-6, fast_mode=True)


@samples
def test_opcheck_forward_and_backward(sample, device):
    op = OPS[sample.op]
    args = sample.args(torch.float32, device, requires_grad=True)
    forward = getattr(torch.ops.pixelfast, op.name)
    torch.library.opcheck(forward.default, args)
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    out = forward(*detached)
    first = out[0] if isinstance(out, (tuple, list)) else out
    grad = torch.randn(first.shape, device=device)
    backward = getattr(torch.ops.pixelfast, f"{op.name}_backward")
    torch.library.opcheck(backward.default, op.backward_args(detached, out, grad))


@samples
def test_compiles_without_graph_breaks(sample, device):
    op = OPS[sample.op]
    args = sample.args(torch.float32, device, requires_grad=True)
    compiled = torch.compile(op.face, fullgraph=True, backend="aot_eager")
    out, grads = _outputs_and_grads(compiled, args)
    want, want_grads = _outputs_and_grads(op.face, args)
    torch.testing.assert_close(out, want)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", sorted(OPS))
def test_kernels_are_registered_for_the_cpu_and_cuda_as_built(name):
    for overload in (name, f"{name}_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pixelfast::{overload}", "CPU"), overload
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(f"pixelfast::{overload}", "CUDA")
        # the build's record, the package's flag and the binary itself (does it link the CUDA runtime?)
        assert has_cuda == _library.build_info.WITH_CUDA == pixelfast.ops.WITH_CUDA == links_cuda_runtime(), overload


@pytest.mark.parametrize("name", sorted(OPS))
def test_missing_library_gives_rebuild_instructions(name, monkeypatch):
    sample = next(s for s in SAMPLES if s.op == name)
    args = sample.args(torch.float32)
    monkeypatch.setattr(_library, "_load_error", "pixelfast's compiled library was never built.")
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        OPS[name].face(*args)
