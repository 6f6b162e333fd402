"""The LSTM scans' CUDA kernels (``csrc/lstm/lstm_kernels.cuh``: each scan in one launch), run on the
CPU under the test-only CUDA emulation, against pixelfast's CPU kernels: forward and backward, both
scans, over shapes, block sizes (odd ones, and blocks smaller than a warp), clusters of 1 to 8
blocks, tiles of 1 to 3 images (a last cluster with fewer) and thread schedules (forward, reverse,
random: a missing barrier or a race shows up as a difference between them). Needs only a C++
compiler; no GPU, no CUDA build."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import pixelfast.ops  # noqa: F401  (loads pixelfast._C: the CPU kernels of torch.ops.pixelfast)
from tests.emulation import SCHEDULES, load

THREADS = (1, 3, 32, 33, 64, 256)
# (blocks per cluster, images per cluster)
LAYOUTS = ((1, 1), (2, 1), (3, 2), (8, 3))
# The same recurrence on both sides, summed in other orders (the CPU's GEMMs per step, here each
# thread's own sums), so the results agree to rounding.
TOLERANCE = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=1e-5, rtol=1e-5)}
# kind: (op name, state-to-state taps)
KINDS = {"row1": ("row_lstm", 1), "row3": ("row_lstm", 3), "row5": ("row_lstm", 5), "diagonal": ("diagonal_lstm", 2)}


@pytest.fixture(scope="module")
def emulated():
    return load()


def inputs(batch, hidden, height, width, taps, dtype, bias, seed):
    generator = torch.Generator().manual_seed(seed)
    gates = torch.randn(batch, 4 * hidden, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(4 * hidden, hidden, taps, generator=generator, dtype=dtype) * 0.5
    b = torch.randn(4 * hidden, generator=generator, dtype=dtype) if bias else None
    grad_h = torch.randn(batch, hidden, height, width, generator=generator, dtype=dtype)
    return gates, weight, b, grad_h


def assert_emulated_matches_cpu(emulated, kind, shape, dtype, launch, bias=True, seed=0):
    """Forward, then backward from the CPU's saved states: each emulated kernel against the CPU's."""
    op, taps = KINDS[kind]
    batch, groups, hidden, height, width = shape
    gates, weight, b, grad_h = inputs(batch, hidden, height, width, taps, dtype, bias, seed)
    want = getattr(torch.ops.pixelfast, op)(gates, weight, b, groups)
    got = getattr(emulated, op)(gates, weight, b, groups, *launch)
    tol = TOLERANCE[dtype]
    for name, g, w in zip(("h", "c", "acts"), got, want):
        torch.testing.assert_close(g, w, **tol, msg=lambda m, name=name: f"{kind} forward {name} {launch}: {m}")
    h, c, acts = want
    want = getattr(torch.ops.pixelfast, op + "_backward")(grad_h, weight, h, c, acts, groups)
    got = getattr(emulated, op + "_backward")(grad_h, weight, h, c, acts, groups, *launch)
    for name, g, w in zip(("grad_gates", "grad_weight", "grad_bias"), got, want):
        torch.testing.assert_close(g, w, **tol, msg=lambda m, name=name: f"{kind} backward {name} {launch}: {m}")


# Every launch shape on an odd, non-square case (3 x 5 images, 2 of them, h = 3 in 3 colour groups),
# each schedule in turn.
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("kind", ["row3", "diagonal"])
def test_every_launch_shape(emulated, kind, threads, layout):
    for schedule in SCHEDULES.values():
        launch = (threads, *layout, schedule, 7)
        assert_emulated_matches_cpu(emulated, kind, (2, 3, 3, 3, 5), torch.float64, launch)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(KINDS)),
    batch=st.integers(1, 3),
    groups=st.sampled_from([1, 3]),
    per_group=st.integers(1, 2),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    bias=st.booleans(),
    threads=st.sampled_from(THREADS),
    layout=st.sampled_from(LAYOUTS),
    schedule=st.sampled_from(list(SCHEDULES.values())),
    seed=st.integers(0, 2**31 - 1),
)
def test_emulated_kernels_match_cpu(
    emulated, kind, batch, groups, per_group, height, width, dtype, bias, threads, layout, schedule, seed
):
    shape = (batch, groups, groups * per_group, height, width)
    launch = (threads, *layout, schedule, seed)
    assert_emulated_matches_cpu(emulated, kind, shape, dtype, launch, bias=bias, seed=seed % 1000)


def test_emulated_ops_check_their_arguments(emulated):
    # The same driver checks as the real ops (the Python API's ValueError).
    gates, weight, _, _ = inputs(1, 3, 2, 2, 3, torch.float32, False, 0)
    with pytest.raises(ValueError, match="2 taps"):
        emulated.diagonal_lstm(gates, weight, None, 1, 32, 1, 1, 0, 0)


@pytest.mark.parametrize("kind", ["row3", "diagonal"])
def test_an_empty_batch_launches_nothing(emulated, kind):
    """Batch 0: empty states and gradients, zero weight and bias gradients, as on the CPU."""
    assert_emulated_matches_cpu(emulated, kind, (0, 1, 3, 3, 5), torch.float64, (32, 2, 1, 0, 0))
