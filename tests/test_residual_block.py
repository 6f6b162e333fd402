"""The fused PixelCNN residual block (``residual_block``) against its plain-PyTorch reference
(``residual_block_ref``: dense convolutions with the masks multiplied in), and the module on it."""

from __future__ import annotations

import pytest
import torch
from devices import DEVICES, tolerance
from hypothesis import given, settings, strategies as st

from pixelfast.nn import ResidualBlock
from pixelfast.ops import make_mask, residual_block, residual_block_ref

NAMES = ("input", "w_in", "b_in", "w", "b", "w_out", "b_out", "image_bias")


def block_inputs(batch, channels, hidden, height, width, k, dtype=torch.float64, bias=True, image_bias=False, seed=0):
    """``residual_block``'s tensors, in argument order (absent ones None), on the CPU."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    return [
        randn(batch, channels, height, width),
        randn(hidden, channels, 1, 1, scale=0.5),
        randn(hidden) if bias else None,
        randn(hidden, hidden, k, k, scale=0.5),
        randn(hidden) if bias else None,
        randn(channels, hidden, 1, 1, scale=0.5),
        randn(channels) if bias else None,
        randn(batch, hidden) if image_bias else None,
    ]


def forward_and_grads(fn, tensors, groups, device="cpu", grad_seed=1):
    leaves = [t.to(device).requires_grad_(True) if t is not None else None for t in tensors]
    out = fn(*leaves, groups)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    out.backward(grad.to(out.device))
    return out, {name: t.grad for name, t in zip(NAMES, leaves) if t is not None}


def assert_matches_reference(tensors, groups, device="cpu"):
    out, grads = forward_and_grads(residual_block, tensors, groups, device)
    want, want_grads = forward_and_grads(residual_block_ref, tensors, groups, device)
    tol = tolerance(tensors[0].dtype, device)
    torch.testing.assert_close(out, want, **tol)
    assert grads.keys() == want_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], **tol, msg=lambda m, name=name: f"grad {name}: {m}")
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("bias, image_bias", [(True, False), (False, False), (True, True), (False, True)])
def test_matches_reference(bias, image_bias, groups, k, dtype, device):
    tensors = block_inputs(2, 6, 3 * groups, 5, 4, k, dtype, bias, image_bias)
    assert_matches_reference(tensors, groups, device)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels_per_group=st.integers(1, 4),
    hidden_per_group=st.integers(1, 4),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    k=st.sampled_from([1, 3, 5, 7]),
    groups=st.sampled_from([1, 3]),
    bias=st.booleans(),
    image_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_many_shapes(
    batch, channels_per_group, hidden_per_group, height, width, k, groups, bias, image_bias, seed, device
):
    tensors = block_inputs(
        batch,
        channels_per_group * groups,
        hidden_per_group * groups,
        height,
        width,
        k,
        torch.float64,
        bias,
        image_bias,
        seed,
    )
    assert_matches_reference(tensors, groups, device)


# (one colour group with a 1x1 middle kernel masks nothing: not a case here)
@pytest.mark.parametrize("groups, k", [(1, 3), (1, 5), (3, 1), (3, 3), (3, 5)])
def test_masked_weights_holding_nan_stay_out_and_get_zero_gradient(groups, k, device):
    tensors = block_inputs(2, 6, 6, 4, 5, k, image_bias=True)
    masks = {1: make_mask(6, 6, 1, "B", groups), 3: make_mask(6, 6, k, "B", groups), 5: make_mask(6, 6, 1, "B", groups)}
    clean = list(tensors)
    for i, mask in masks.items():
        clean[i] = tensors[i] * mask.to(tensors[i])
        tensors[i] = tensors[i].masked_fill(mask == 0, float("nan"))
    out, grads = forward_and_grads(residual_block, tensors, groups, device)
    want, want_grads = forward_and_grads(residual_block_ref, clean, groups, device)
    tol = tolerance(torch.float64, device)
    torch.testing.assert_close(out, want, **tol)
    for i, name in ((1, "w_in"), (3, "w"), (5, "w_out")):
        assert torch.all(grads[name].cpu()[masks[i] == 0] == 0), name
        torch.testing.assert_close(grads[name], want_grads[name] * masks[i].to(want_grads[name]), **tol)


def test_output_and_input_grad_are_channels_last(device):
    """So that a stack of blocks converts no layouts (the ops' outputs, before autograd gives a leaf
    its own layout)."""
    tensors = [t.to(device) if t is not None else None for t in block_inputs(2, 4, 4, 5, 3, 3, torch.float32)]
    out, relu_x, hidden_in, hidden = torch.ops.pixelfast.residual_block(*tensors, 1)
    grad_x = torch.ops.pixelfast.residual_block_backward(
        torch.randn_like(out), relu_x, hidden_in, hidden, tensors[1], tensors[3], tensors[5], False, 1
    )[0]
    for t in (out, relu_x, hidden_in, hidden, grad_x):
        assert t.is_contiguous(memory_format=torch.channels_last)


def test_the_output_is_a_tensor_of_its_own_that_may_be_changed_in_place(device):
    """As a convolution's output: not a view of the op's internal matrices, which autograd would
    refuse to let a caller modify in place (``h = block(h); h += skip``)."""
    torch.manual_seed(0)
    block = ResidualBlock(4, 2).double().to(device)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=device, requires_grad=True)
    y = block(x)
    assert y._base is None
    y.mul_(2).add_(1)
    (grad,) = torch.autograd.grad(y.sum(), x)
    want = torch.autograd.grad((2 * residual_block_ref(x, *_weights(block), None, 1) + 1).sum(), x)[0]
    torch.testing.assert_close(grad, want, **tolerance(torch.float64, device))


def _weights(block):
    return (
        block.conv_in.weight,
        block.conv_in.bias,
        block.conv.weight,
        block.conv.bias,
        block.conv_out.weight,
        block.conv_out.bias,
    )


def test_a_contiguous_or_strided_input_gives_the_same_result(device):
    tensors = block_inputs(2, 4, 4, 5, 6, 3)
    wide = torch.randn(2, 4, 5, 12, dtype=torch.float64)[..., ::2]  # neither layout
    wide.copy_(tensors[0])
    for x in (tensors[0].contiguous(), tensors[0].contiguous(memory_format=torch.channels_last), wide):
        assert_matches_reference([x, *tensors[1:]], 1, device)


def test_module_equals_the_composition_of_its_layers(device):
    """ResidualBlock's forward runs the fused op; the unfused formula on its own layers (masked_conv2d,
    ReLU, class bias, sum) gives the same output and gradients."""
    torch.manual_seed(0)
    block = ResidualBlock(6, 3, 3, kernel_size=3, num_classes=4).double().to(device)
    with torch.no_grad():
        block.class_bias.weight.normal_()
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64, device=device, requires_grad=True)
    labels = torch.tensor([0, 3, 1], device=device)

    def unfused(x):
        y = block.conv(torch.relu(block.conv_in(torch.relu(x)))) + block.class_bias(labels)[:, :, None, None]
        return x + block.conv_out(torch.relu(y))

    tol = tolerance(torch.float64, device)
    got, want = block(x, labels), unfused(x)
    torch.testing.assert_close(got, want, **tol)
    params = [x, *block.parameters()]
    for a, b in zip(torch.autograd.grad(got.sum(), params), torch.autograd.grad(want.sum(), params)):
        torch.testing.assert_close(a, b, **tol)
    with pytest.raises(ValueError, match="pass labels"):
        block(x)


def test_trains_under_autocast_in_float32():
    tensors = [t.float() if t is not None else None for t in block_inputs(2, 4, 4, 4, 4, 3)]
    leaves = [t.requires_grad_(True) if t is not None else None for t in tensors]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = residual_block(leaves[0].bfloat16(), *leaves[1:], 1)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in leaves[1:] if t is not None)


def _call(**changes):
    args = dict(zip(NAMES, block_inputs(2, 6, 3, 4, 4, 3, torch.float32)))
    args["color_groups"] = 1
    args.update(changes)
    return lambda: residual_block(*args.values())


@pytest.mark.parametrize(
    "make_call, error, words",
    [
        (_call(input=torch.randn(6, 4, 4)), ValueError, "4-D"),
        (_call(w_in=torch.randn(3, 5, 1, 1)), ValueError, r"w_in must have shape \[3, 6, 1, 1\]"),
        (_call(w_in=torch.randn(3, 6, 3, 3)), ValueError, "w_in must have shape"),
        (_call(w_out=torch.randn(6, 3, 3, 3)), ValueError, "w_out must have shape"),
        (_call(w=torch.randn(3, 3, 4, 4)), ValueError, "odd"),
        (_call(w=torch.randn(3, 3, 13, 13)), ValueError, "odd"),
        (_call(w=torch.randn(3, 2, 3, 3)), ValueError, r"w must be \[hidden, hidden, k, k\]"),
        (_call(b_in=torch.randn(4)), ValueError, "b_in must have shape"),
        (_call(b=torch.randn(6)), ValueError, "b must have shape"),
        (_call(b_out=torch.randn(3)), ValueError, "b_out must have shape"),
        (_call(image_bias=torch.randn(3, 3)), ValueError, r"image_bias must have shape \[2, 3\]"),
        (
            lambda: residual_block(*block_inputs(2, 6, 4, 4, 4, 3, torch.float32), 3),
            ValueError,
            r"hidden channels \(4\) must be divisible by 3",
        ),
        (_call(color_groups=2), ValueError, "color_groups"),
        (_call(color_groups=True), ValueError, "color_groups"),
        (_call(w=torch.randn(3, 3, 3, 3, dtype=torch.float64)), TypeError, "share one dtype"),
        (_call(input=torch.ones(2, 6, 4, 4, dtype=torch.int64)), TypeError, "float32 or float64"),
        (_call(b=torch.randn(3, device="meta")), ValueError, "one device"),
        (_call(input=torch.randn(2, 6, 0, 4)), ValueError, "H, W >= 1"),
        (_call(w_out=[1.0]), TypeError, "w_out must be a torch.Tensor"),
        (_call(image_bias="labels"), TypeError, "image_bias must be a torch.Tensor or None"),
    ],
)
def test_bad_input_raises_clear_error(make_call, error, words):
    with pytest.raises(error, match=words):
        make_call()


def test_backward_op_checks_the_saved_activations():
    tensors = block_inputs(2, 6, 3, 4, 4, 3, torch.float32)
    out, relu_x, hidden_in, hidden = torch.ops.pixelfast.residual_block(*tensors, 1)
    assert hidden.shape == (2, 3, 5, 4)  # k // 2 spare rows
    w_in, w, w_out = tensors[1], tensors[3], tensors[5]
    with pytest.raises(ValueError, match=r"hidden must have shape \[2, 3, 5, 4\]"):
        torch.ops.pixelfast.residual_block_backward(out, relu_x, hidden_in, hidden_in, w_in, w, w_out, False, 1)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        torch.ops.pixelfast.residual_block_backward(hidden, relu_x, hidden_in, hidden, w_in, w, w_out, False, 1)
    with pytest.raises(TypeError, match="share one dtype"):
        torch.ops.pixelfast.residual_block_backward(out.double(), relu_x, hidden_in, hidden, w_in, w, w_out, False, 1)
