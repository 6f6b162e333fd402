"""The fused gate (``gated_activation``) against its plain-PyTorch reference (``gated_activation_ref``):
values and gradients over many shapes, both layouts, colour groups; the layout it keeps; bad input;
autocast; and the Gated PixelCNN layer that uses it."""

from __future__ import annotations

import pytest
import torch
from devices import tolerance
from hypothesis import given, settings, strategies as st

from pixelfast.nn import GatedActivation
from pixelfast.ops import gated_activation, gated_activation_ref

LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


def value_and_grad(fn, x, groups, grad):
    leaf = x.detach().clone().requires_grad_(True)
    out = fn(leaf, groups)
    out.backward(grad)
    return out, leaf.grad


def assert_matches_reference(x, groups):
    grad = torch.randn(x.shape[0], x.shape[1] // 2, *x.shape[2:], dtype=x.dtype, device=x.device)
    out, grad_x = value_and_grad(gated_activation, x, groups, grad)
    ref, ref_grad = value_and_grad(gated_activation_ref, x, groups, grad)
    tol = tolerance(x.dtype, x.device)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(grad_x, ref_grad, **tol, msg=lambda m: f"grad: {m}")
    return out, grad_x


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(0, 3),
    groups=st.sampled_from([1, 3]),
    per_group=st.integers(1, 9),
    height=st.integers(0, 6),
    width=st.integers(1, 7),
    layout=st.sampled_from(list(LAYOUTS)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=st.sampled_from([0.1, 3.0, 40.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_many_shapes(batch, groups, per_group, height, width, layout, dtype, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2 * groups * per_group, height, width, generator=generator, dtype=dtype) * scale
    assert_matches_reference(x.contiguous(memory_format=LAYOUTS[layout]), groups)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("groups", [1, 3])
def test_keeps_the_layout_both_ways(layout, groups, device):
    fmt = LAYOUTS[layout]
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64, device=device).contiguous(memory_format=fmt)
    out, grad_x = assert_matches_reference(x, groups)
    assert out.is_contiguous(memory_format=fmt) and grad_x.is_contiguous(memory_format=fmt)


def test_strided_input_and_gradient_of_another_layout(device):
    x = torch.randn(2, 24, 5, 7, dtype=torch.float64, device=device)[:, ::2, :, 1:]  # neither layout
    assert_matches_reference(x, 3)
    x = torch.randn(2, 12, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    grad = torch.randn(2, 6, 3, 4, dtype=torch.float64, device=device).contiguous(memory_format=torch.channels_last)
    (got,) = torch.autograd.grad(gated_activation(x, 3), x, grad)
    (want,) = torch.autograd.grad(gated_activation_ref(x, 3), x, grad)
    torch.testing.assert_close(got, want)


def test_double_backward(device):
    # The backward of the backward (create_graph=True) goes through plain ops: gradgradcheck.
    x = torch.randn(2, 12, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: gated_activation(t, 3), (x,))
    x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: gated_activation(t, 1), (x,))


def test_layout_rule_of_the_fake_is_the_kernels(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    base = torch.randn(2, 16, 3, 4, device=device)
    inputs = [
        base,
        base.contiguous(memory_format=torch.channels_last),
        base.contiguous(memory_format=torch.channels_last)[:, :12],  # strided
        base[:, :, :1, :1].contiguous(memory_format=torch.channels_last),  # both layouts at once
    ]
    for x in inputs:
        real = gated_activation(x, 1)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = gated_activation(mode.from_tensor(x), 1)
        assert fake.stride() == real.stride(), (x.stride(), fake.stride(), real.stride())


def test_extreme_values_saturate_and_nan_propagates(device):
    x = torch.tensor([200.0, -200.0, 0.0, float("nan"), 200.0, 200.0, -200.0, 1.0], device=device)
    out = gated_activation(x.view(1, 8, 1, 1), 1).flatten()
    # a = x[0:4], b = x[4:8]: tanh(200) * sigmoid(200) = 1, tanh(-200) * sigmoid(200) = -1,
    # tanh(0) * ... = 0, NaN stays NaN.
    assert out[:3].tolist() == [1.0, -1.0, 0.0] and out[3].isnan()


def test_layer_is_the_gate_of_the_paper(device):
    # GatedActivation(groups) on [a_g, b_g] blocks: written out channel by channel, without the op.
    x = torch.randn(3, 18, 2, 2, dtype=torch.float64, device=device)
    m = 3
    halves = [(x[:, 6 * g : 6 * g + m], x[:, 6 * g + m : 6 * g + 2 * m]) for g in range(3)]
    want = torch.cat([torch.tanh(a) * torch.sigmoid(b) for a, b in halves], 1)
    torch.testing.assert_close(GatedActivation(3)(x), want)


def test_autocast_computes_in_float32():
    x = torch.randn(2, 12, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gated_activation(x.to(torch.bfloat16), 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, gated_activation(x.to(torch.bfloat16).float(), 3), rtol=0, atol=0)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: gated_activation(torch.randn(2, 6, 3), 1), ValueError, "4-D tensor"),
        (lambda: gated_activation(torch.randn(2, 5, 3, 3), 1), ValueError, "multiple of 2 \\* color_groups"),
        (lambda: gated_activation(torch.randn(2, 9, 3, 3), 3), ValueError, "multiple of 2 \\* color_groups \\(6\\)"),
        (lambda: gated_activation(torch.randn(2, 0, 3, 3), 1), ValueError, "multiple of 2"),
        (lambda: GatedActivation(3)(torch.randn(2, 9, 3, 3)), ValueError, "multiple of 2 \\* color_groups \\(6\\)"),
        (lambda: gated_activation(torch.randn(2, 6, 3, 3), 2), ValueError, "color_groups"),
        (lambda: gated_activation(torch.randn(2, 6, 3, 3), True), ValueError, "color_groups"),
        (lambda: gated_activation(torch.ones(2, 6, 3, 3, dtype=torch.int64), 1), TypeError, "float32 or float64"),
        (lambda: gated_activation([1.0, 2.0], 1), TypeError, "input must be a torch.Tensor"),
        (
            lambda: torch.ops.pixelfast.gated_activation_backward(torch.randn(2, 3, 3, 3), torch.randn(2, 6, 3, 2), 1),
            ValueError,
            "grad_out must have the output's shape",
        ),
        (
            lambda: torch.ops.pixelfast.gated_activation_backward(
                torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.randn(2, 6, 3, 3), 1
            ),
            TypeError,
            "share one dtype",
        ),
    ],
)
def test_bad_input_raises_clear_error(call, error, words):
    with pytest.raises(error, match=words):
        call()
