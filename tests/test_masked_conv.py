"""The fused masked convolution against its plain-PyTorch reference (``masked_conv2d_ref``)."""

from __future__ import annotations

import pytest
import torch
from devices import DEVICES, conv_inputs as make_inputs, tolerance
from hypothesis import given, settings, strategies as st

import pixelfast
from pixelfast.nn import MaskedConv2d
from pixelfast.ops import make_mask, masked_conv2d, masked_conv2d_ref


def forward_and_grads(fn, x, weight, bias, mask_type, groups, grad_out=None):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight)]
    b = bias.detach().clone().requires_grad_(True) if bias is not None else None
    out = fn(leaves[0], leaves[1], b, mask_type, groups)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        grad_out = grad_out.to(out.device)
    out.backward(grad_out)
    grads = [leaves[0].grad, leaves[1].grad] + ([b.grad] if b is not None else [])
    return out, grads


def assert_matches_reference(x, weight, bias, mask_type, groups):
    out, grads = forward_and_grads(masked_conv2d, x, weight, bias, mask_type, groups)
    ref, ref_grads = forward_and_grads(masked_conv2d_ref, x, weight, bias, mask_type, groups)
    tol = tolerance(x.dtype, x.device)
    torch.testing.assert_close(out, ref, **tol)
    for name, got, want in zip(("input", "weight", "bias"), grads, ref_grads):
        torch.testing.assert_close(got, want, **tol, msg=lambda m, name=name: f"grad {name}: {m}")
    return grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_matches_reference(mask_type, groups, k, dtype, device):
    x, weight, bias = make_inputs(2, 6, 9, 5, 9, k, dtype, device=device)
    grads = assert_matches_reference(x, weight, bias, mask_type, groups)
    # A masked-out weight gets exactly zero gradient, so no optimizer ever needs to re-mask.
    mask = make_mask(6, 9, k, mask_type, groups).to(device, dtype)
    assert torch.all(grads[1][mask == 0] == 0)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("groups", [1, 3])
def test_masked_taps_holding_nan_stay_out(k, groups, device):
    # Whatever a masked tap holds, even NaN, is ignored, and its gradient is exactly zero.
    x, weight, bias = make_inputs(2, 6, 9, 5, 4, k, torch.float64, device=device)
    mask = make_mask(6, 9, k, "B", groups).to(device, torch.float64)
    poisoned = weight.masked_fill(mask == 0, float("nan")).requires_grad_(True)
    out = masked_conv2d(x, poisoned, bias, "B", groups)
    torch.testing.assert_close(out, masked_conv2d_ref(x, weight * mask, bias, "B", groups))
    out.sum().backward()
    assert torch.all(poisoned.grad[mask == 0] == 0) and torch.isfinite(poisoned.grad).all()


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8])
def test_batch_sizes(batch, device):
    x, weight, bias = make_inputs(batch, 3, 6, 7, 4, 3, torch.float64, seed=batch, device=device)
    assert_matches_reference(x, weight, bias, "A", 3)


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (6, 1), (2, 2), (11, 5)])
def test_small_and_odd_images(size, device):
    # Images smaller than the kernel exercise the padding and crop arithmetic.
    x, weight, bias = make_inputs(2, 3, 3, *size, 7, torch.float64, device=device)
    assert_matches_reference(x, weight, bias, "B", 3)


def test_without_bias(device):
    x, weight, _ = make_inputs(2, 3, 6, 5, 5, 5, torch.float64, device=device)
    assert_matches_reference(x, weight, None, "B", 3)


def test_non_contiguous_input(device):
    x, weight, bias = make_inputs(2, 6, 6, 9, 5, 3, torch.float64, device=device)
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, transposed strides
    assert not x_t.is_contiguous()
    assert_matches_reference(x_t, weight, bias, "B", 3)
    wide = torch.randn(2, 12, 9, 5, dtype=torch.float64, device=device)
    assert_matches_reference(wide[:, ::2], weight, bias, "A", 3)  # a strided channel slice


def test_channels_last_input_and_weight(device):
    x, weight, bias = make_inputs(3, 6, 9, 6, 7, 5, torch.float32, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous(memory_format=torch.channels_last)
    assert_matches_reference(x, weight, bias, "B", 3)


def test_output_and_input_grad_are_channels_last_so_stacks_convert_nothing(device):
    x, weight, bias = make_inputs(2, 3, 6, 5, 5, 3, torch.float32, device=device)
    out = masked_conv2d(x, weight, bias, "A", 3)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad_x, _, _ = torch.ops.pixelfast.masked_conv2d_backward(out, x, weight, "A", 3, [True, True])
    assert grad_x.is_contiguous(memory_format=torch.channels_last)


def test_only_weight_grad_when_input_is_data(device):
    x, weight, bias = make_inputs(2, 3, 6, 5, 5, 7, torch.float64, device=device)
    w = weight.clone().requires_grad_(True)
    w_ref = weight.clone().requires_grad_(True)
    masked_conv2d(x, w, bias, "A", 3).sum().backward()
    masked_conv2d_ref(x, w_ref, bias, "A", 3).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    cin_per_group=st.integers(1, 4),
    cout_per_group=st.integers(1, 4),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    k=st.sampled_from([1, 3, 5, 7, 9, 11]),
    mask_type=st.sampled_from(["A", "B"]),
    groups=st.sampled_from([1, 3]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_many_shapes(batch, cin_per_group, cout_per_group, height, width, k, mask_type, groups, bias, seed, device):
    x, weight, b = make_inputs(
        batch, cin_per_group * groups, cout_per_group * groups, height, width, k, torch.float64, bias, seed, device
    )
    assert_matches_reference(x, weight, b, mask_type, groups)


def test_module_under_torch_compile_fullgraph(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        MaskedConv2d(3, 12, 7, "A", color_groups=3),
        torch.nn.ReLU(),
        MaskedConv2d(12, 12, 3, "B", color_groups=3),
    ).to(device)
    x = torch.randn(2, 3, 8, 8, device=device)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, model(x))
    out.sum().backward()
    assert model[0].weight.grad is not None and model[2].weight.grad.abs().sum() > 0


def test_module_trains_with_any_optimizer_without_remasking(device):
    torch.manual_seed(0)
    layer = MaskedConv2d(3, 6, 5, "A", color_groups=3).to(device)
    mask = layer.mask().to(device)
    masked_before = layer.weight.detach()[mask == 0].clone()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.0)
    x = torch.randn(4, 3, 6, 6, device=device)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).pow(2).mean().backward()
        optimizer.step()
    assert torch.equal(layer.weight.detach()[mask == 0], masked_before)
    assert not torch.equal(layer.weight.detach()[mask == 1], torch.zeros_like(layer.weight)[mask == 1])


def test_module_matches_reference_and_initialises_masked_weights_to_zero(device):
    layer = MaskedConv2d(6, 9, 3, "B", color_groups=3).to(device)
    assert torch.all(layer.weight.detach()[layer.mask().to(device) == 0] == 0)
    x = torch.randn(2, 6, 5, 5, device=device)
    torch.testing.assert_close(
        layer(x), masked_conv2d_ref(x, layer.weight, layer.bias, "B", 3), **tolerance(torch.float32, device)
    )
    assert "mask_type='B'" in repr(layer)


@pytest.mark.parametrize(
    "make_call, error, words",
    [
        (lambda: masked_conv2d(torch.randn(3, 5, 5), torch.randn(3, 3, 3, 3)), ValueError, "4-D"),
        (
            lambda: masked_conv2d(torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3), None, "B", 3),
            ValueError,
            "divisible by 3",
        ),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 4, 4)), ValueError, "odd"),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 13, 13)), ValueError, "odd"),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 5)), ValueError, "square"),
        (
            lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3, dtype=torch.float64)),
            TypeError,
            "dtype",
        ),
        (
            lambda: masked_conv2d(torch.ones(1, 3, 5, 5, dtype=torch.int64), torch.randn(3, 3, 3, 3)),
            TypeError,
            "float32 or float64",
        ),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3, device="meta")), ValueError, "device"),
        (lambda: masked_conv2d(torch.randn(1, 4, 5, 5), torch.randn(3, 3, 3, 3)), ValueError, "channels"),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3), torch.randn(4)), ValueError, "bias"),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3), None, "C"), ValueError, "mask_type"),
        (
            lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3), None, "B", 2),
            ValueError,
            "color_groups",
        ),
        (
            lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3), None, "B", True),
            ValueError,
            "color_groups",
        ),
        (lambda: masked_conv2d(torch.randn(1, 3, 0, 5), torch.randn(3, 3, 3, 3)), ValueError, "H, W >= 1"),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 0), torch.randn(3, 3, 3, 3)), ValueError, "H, W >= 1"),
        (lambda: masked_conv2d(torch.randn(1, 0, 5, 5), torch.randn(3, 0, 3, 3)), ValueError, "one input channel"),
        (lambda: masked_conv2d(torch.randn(1, 3, 5, 5), torch.randn(0, 3, 3, 3)), ValueError, "one output"),
        (lambda: MaskedConv2d(4, 6, 3, "A", color_groups=3), ValueError, "divisible by 3"),
        (lambda: MaskedConv2d(3, 6, 4, "A"), ValueError, "odd"),
        (lambda: MaskedConv2d(3, 6, 3, "a"), ValueError, "mask_type"),
    ],
)
def test_bad_input_raises_clear_error(make_call, error, words):
    with pytest.raises(error, match=words):
        make_call()


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((torch.randn(3, 5, 5), torch.randn(3, 3, 3, 3), None, "B", 1), ValueError, "4-D"),
        ((torch.randn(1, 3, 5, 5), torch.randn(3, 3, 2, 2), None, "B", 1), ValueError, "odd"),
        ((torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3), None, "B", 3), ValueError, "divisible"),
        (
            (torch.ones(1, 3, 5, 5, dtype=torch.int32), torch.ones(3, 3, 3, 3, dtype=torch.int32), None, "B", 1),
            TypeError,
            "float32 or float64",
        ),
        ((torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3).double(), None, "B", 1), TypeError, "dtype"),
        ((torch.randn(1, 3, 5, 5), torch.randn(3, 3, 3, 3), None, "X", 1), ValueError, "mask_type"),
    ],
)
def test_op_called_directly_checks_its_arguments(args, error, words):
    # The op's own checks (C++) are the only ones: a direct call gets the Python face's error.
    with pytest.raises(error, match=words):
        torch.ops.pixelfast.masked_conv2d(*args)


CUDA_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)


@pytest.mark.skipif(not pixelfast.ops.WITH_CUDA, reason="pixelfast was built without CUDA")
@pytest.mark.parametrize("backward", [False, True])
def test_cuda_kernel_rejects_cpu_tensors_with_its_own_message(backward):
    # The CUDA kernel called directly with CPU tensors (no GPU needed: the dispatcher goes straight
    # to it): the op's own check must fire before the device guard, not c10's "Expected a CUDA device".
    x, weight, bias = make_inputs(1, 3, 3, 4, 4, 3, torch.float32)
    with pytest.raises(RuntimeError, match="must be a CUDA tensor") as raised:
        if backward:
            torch.ops.pixelfast.masked_conv2d_backward.default.redispatch(
                CUDA_KEYS, torch.randn(1, 3, 4, 4), x, weight, "B", 3, [True, True]
            )
        else:
            torch.ops.pixelfast.masked_conv2d.default.redispatch(CUDA_KEYS, x, weight, bias, "B", 3)
    assert "masked_conv2d" in str(raised.value) and "Expected a CUDA device" not in str(raised.value)


@pytest.mark.parametrize("device", DEVICES[1:])  # CUDA only
@pytest.mark.parametrize("where", ["weight", "bias"])
def test_cuda_kernel_names_the_tensor_left_on_the_cpu(where, device):
    x, weight, bias = make_inputs(1, 3, 3, 4, 4, 3, torch.float32, device=device)
    args = {"weight": weight, "bias": bias}
    args[where] = args[where].cpu()
    with pytest.raises(RuntimeError, match=f"{where} is on cpu"):
        torch.ops.pixelfast.masked_conv2d.default.redispatch(CUDA_KEYS, x, args["weight"], args["bias"], "B", 3)
