"""The CUDA emulation itself (tests/emulation/cuda_emulation.h): the schedules expose a missing
barrier, shuffles and dynamic shared memory act as on a GPU, a divergent barrier is an error."""

from __future__ import annotations

import pytest
import torch
from emulation import SCHEDULES, load


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
