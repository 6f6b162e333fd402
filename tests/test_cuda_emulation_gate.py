"""The gated activation's CUDA kernels (``csrc/gate/gate_kernels.cuh``), run on the CPU under the
test-only CUDA emulation, against pixelfast's CPU kernel and the plain reference: forward and
backward, both layouts, colour groups, block sizes (odd ones, and blocks smaller than a warp) and
tiny grids, so that the grid-stride loops go round. Needs only a C++ compiler; no GPU."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from pixelfast.ops import gated_activation_ref
from tests.emulation import SCHEDULES, load

THREADS = (1, 3, 32, 33, 256)
MAX_BLOCKS = (1, 2, 65535)
LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


@pytest.fixture(scope="module")
def emulated():
    return load()


def assert_emulated_matches(emulated, shape, groups, layout, dtype, launch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    grad = torch.randn(shape[0], shape[1] // 2, *shape[2:], generator=generator, dtype=dtype)
    want = torch.ops.pixelfast.gated_activation(x, groups)
    got = emulated.gated_activation(x, groups, *launch)
    torch.testing.assert_close(got, want, msg=lambda m: f"forward {launch}: {m}")
    torch.testing.assert_close(got, gated_activation_ref(x, groups))
    assert x.numel() == 0 or got.is_contiguous(memory_format=LAYOUTS[layout])  # an empty tensor has none
    want = torch.ops.pixelfast.gated_activation_backward(grad, x, groups)
    got = emulated.gated_activation_backward(grad, x, groups, *launch)
    torch.testing.assert_close(got, want, msg=lambda m: f"backward {launch}: {m}")
    assert x.numel() == 0 or got.is_contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("max_blocks", MAX_BLOCKS)
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_launch_shape(emulated, layout, threads, max_blocks):
    for schedule in SCHEDULES.values():
        assert_emulated_matches(emulated, (2, 12, 3, 5), 3, layout, torch.float64, (threads, max_blocks, schedule, 7))


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(0, 3),
    groups=st.sampled_from([1, 3]),
    per_group=st.integers(1, 4),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    layout=st.sampled_from(list(LAYOUTS)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    threads=st.sampled_from(THREADS),
    max_blocks=st.sampled_from(MAX_BLOCKS),
    seed=st.integers(0, 2**31 - 1),
)
def test_many_shapes(emulated, batch, groups, per_group, height, width, layout, dtype, threads, max_blocks, seed):
    shape = (batch, 2 * groups * per_group, height, width)
    assert_emulated_matches(emulated, shape, groups, layout, dtype, (threads, max_blocks, 2, seed), seed)
