"""The CUDA emulation itself (tests/emulation/cuda_emulation.h): the schedules expose a missing
barrier, shuffles and dynamic shared memory act as on a GPU, a divergent barrier is an error; the
emulated tensor cores (wmma_emulation.h) multiply rounded inputs, expose a missing __syncwarp and
refuse a misaligned tile or a warp that is not whole."""

from __future__ import annotations

import pytest
import torch
from emulation import SCHEDULES, load
from test_sampling_bf16 import to_bf16


@pytest.fixture(scope="module")
def emulated():
    return load()


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("threads", [1, 7, 64])
def test_block_sum_with_its_barrier_is_right_under_every_schedule(emulated, schedule, threads):
    x = torch.arange(3 * threads, dtype=torch.float64)
    got = emulated.block_sum(x, threads, True, SCHEDULES[schedule], 5)
    torch.testing.assert_close(got, x.view(3, threads).sum(1))


def test_a_missing_barrier_changes_the_result_under_some_schedule(emulated):
    x = torch.arange(3 * 64, dtype=torch.float64) + 1
    expected = x.view(3, 64).sum(1)
    wrong = [
        not torch.equal(emulated.block_sum(x, 64, False, SCHEDULES[schedule], 5), expected) for schedule in SCHEDULES
    ]
    assert any(wrong)
    assert wrong[SCHEDULES["forward"]]  # thread 0 runs to its end before thread 1 writes


def test_warp_shuffles_sum_each_warp(emulated):
    x = torch.randn(96, dtype=torch.float64)
    torch.testing.assert_close(emulated.warp_sum(x), x.view(3, 32).sum(1))


@pytest.mark.parametrize("reach", [1, 3])
def test_a_barrier_in_divergent_code_is_an_error_not_a_hang(emulated, reach):
    with pytest.raises(RuntimeError, match="divergent"):
        emulated.divergent_barrier(8, reach)
    emulated.divergent_barrier(8, 8)  # every thread reaches it: fine


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize(("threads", "cluster_blocks"), [(1, 1), (5, 3), (32, 8)])
def test_cluster_sum_with_its_barrier_is_right_under_every_schedule(emulated, schedule, threads, cluster_blocks):
    x = torch.randn(2 * threads * cluster_blocks, dtype=torch.float64)
    got = emulated.cluster_sum(x, threads, cluster_blocks, True, SCHEDULES[schedule], 5)
    torch.testing.assert_close(got, x.view(2, -1).sum(1))


def test_a_missing_cluster_barrier_changes_the_result_under_some_schedule(emulated):
    """The first block's thread 0 reads what the other blocks of its cluster wrote: without the
    barrier, some schedule runs it before them."""
    x = torch.randn(2 * 4 * 3, dtype=torch.float64)
    expected = x.view(2, -1).sum(1)
    assert any(
        not torch.allclose(emulated.cluster_sum(x, 4, 3, False, SCHEDULES[schedule], 5), expected)
        for schedule in SCHEDULES
    )


@pytest.mark.parametrize("reach", [1, 2])
def test_a_cluster_barrier_in_divergent_code_is_an_error_not_a_hang(emulated, reach):
    with pytest.raises(RuntimeError, match="cluster barrier"):
        emulated.divergent_cluster_barrier(4, 3, reach)
    emulated.divergent_cluster_barrier(4, 3, 3)  # every block reaches it: fine


@pytest.mark.parametrize(
    ("threads", "mode"),
    [(32, 0), (32, 1), (33, 2), (48, 2)],
    ids=[
        "an exited lane",
        "lanes that shuffle different numbers of times",
        "a partial warp of 1",
        "a partial warp of 16",
    ],
)
def test_a_full_mask_shuffle_without_its_whole_warp_is_an_error(emulated, threads, mode):
    """Undefined on a GPU, so the emulation refuses it instead of pairing up whatever lanes wait."""
    with pytest.raises(RuntimeError, match="warp shuffle"):
        emulated.broken_shuffle(threads, mode)
    if mode == 2:
        emulated.broken_shuffle(64, 2)  # whole warps: fine


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 -> tf32 (10 explicit mantissa bits), round to nearest, ties away from zero - by
    frexp, independent of the bit arithmetic of the kernels and the emulation."""
    mantissa, exponent = torch.frexp(t.double())  # |mantissa| in [0.5, 1): 11 significant bits
    scaled = mantissa * 2.0**11
    rounded = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    return torch.ldexp(rounded / 2.0**11, exponent).to(t.dtype)


ROUNDINGS = {"bf16": to_bf16, "tf32": round_tf32}  # each precision's rounding, independent of the kernels
CHUNKS = {"bf16": 16, "tf32": 8}  # wmma's K for each
BEFORE_LOADS, AFTER_STORE = 1, 2  # wmma_product's __syncwarps (bits of its `sync`)
BOTH = BEFORE_LOADS | AFTER_STORE


def wmma_operands(precision, seed=0):
    k = CHUNKS[precision]
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, k, generator=generator), torch.randn(k, 16, generator=generator)


@pytest.mark.parametrize("precision", list(ROUNDINGS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_wmma_product_is_the_product_of_the_rounded_inputs(emulated, precision, schedule):
    rounding = ROUNDINGS[precision]
    a, b = wmma_operands(precision)
    got = emulated.wmma_product(a, b, precision, BOTH, 0, 32, 32, SCHEDULES[schedule], 3)
    expected = rounding(a).double() @ rounding(b).double()
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-6)  # float32 sums
    unrounded = a.double() @ b.double()
    assert (got.double() - unrounded).abs().max() > 1e-4  # the inputs were rounded


@pytest.mark.parametrize("precision", list(ROUNDINGS))
def test_wmma_rounds_ties_as_the_device_does(emulated, precision):
    """bf16 ties go to the even value, tf32 ties away from zero (cvt.rna): 1 + half a step, and
    1 + 3 halves, times 1."""
    rounding, k = ROUNDINGS[precision], CHUNKS[precision]
    step = 2.0**-7 if precision == "bf16" else 2.0**-10
    a = torch.zeros(16, k)
    a[0, 0], a[1, 0], a[2, 0] = 1 + step / 2, 1 + 3 * step / 2, -(1 + step / 2)
    b = torch.zeros(k, 16)
    b[0, 0] = 1
    got = emulated.wmma_product(a, b, precision, BOTH, 0, 32, 32, 0, 0)[:3, 0].tolist()
    if precision == "bf16":
        assert got == [1.0, 1 + 2 * step, -1.0]
    else:
        assert got == [1 + step, 1 + 2 * step, -(1 + step)]
    assert got == rounding(a[:3, 0]).tolist()  # the test's own rounding agrees


@pytest.mark.parametrize("left_out", [BEFORE_LOADS, AFTER_STORE], ids=["before the loads", "after the store"])
def test_wmma_without_a_syncwarp_reads_what_other_lanes_have_not_written(emulated, left_out):
    a, b = wmma_operands("bf16")
    expected = emulated.wmma_product(a, b, "bf16", BOTH, 0, 32, 32, 0, 0)
    got = emulated.wmma_product(a, b, "bf16", BOTH & ~left_out, 0, 32, 32, SCHEDULES["forward"], 1)
    assert not torch.equal(got, expected)  # lane 0 reads before lane 1 has written its share


@pytest.mark.parametrize("misalign", [4, 16])
def test_a_misaligned_wmma_tile_is_an_error(emulated, misalign):
    a, b = wmma_operands("tf32")
    with pytest.raises(RuntimeError, match="not 256-bit aligned"):
        emulated.wmma_product(a, b, "tf32", BOTH, misalign, 32, 32, 0, 0)
    emulated.wmma_product(a, b, "tf32", BOTH, 32, 32, 32, 0, 0)  # 32 bytes: fine


@pytest.mark.parametrize(("threads", "active"), [(32, 16), (16, 16)], ids=["lanes exited", "a partial warp"])
def test_wmma_without_its_whole_warp_is_an_error(emulated, threads, active):
    a, b = wmma_operands("bf16")
    with pytest.raises(RuntimeError, match="warp"):
        emulated.wmma_product(a, b, "bf16", BOTH, 0, threads, active, 0, 0)
