"""What every benchmark shares: the device it runs on, the size knob, and timing that waits for it.

Environment:
  PIXELFAST_BENCH_DEVICE=cuda   run the benchmarks on the GPU (default: cpu). The CPU engine's
                                thread-scaling benchmark always runs on the CPU.
  PIXELFAST_BENCH_SMALL=1       tiny sizes, to check that the benchmarks run (their times mean nothing)
  PIXELFAST_BENCH_BATCHES=16,256  the sampling benchmarks' batch sizes (default: each model's own)
  PIXELFAST_BENCH_THREADS=1,2,4   the CPU engine's thread counts (default: 1, 2, 4, 8, 16 up to the cores)
  PIXELFAST_BENCH_RESULTS=FILE  append each benchmark's median to FILE as one JSON line the moment
                                it is measured (bench/gpu_table.py reads them): a run stopped by a
                                time limit keeps what it measured, unlike pytest-benchmark's JSON
"""

from __future__ import annotations

import json
import os

import torch

DEVICE = torch.device(os.environ.get("PIXELFAST_BENCH_DEVICE", "cpu"))
SMALL = os.environ.get("PIXELFAST_BENCH_SMALL", "") == "1"


def int_list(name: str, default: list[int]) -> list[int]:
    value = os.environ.get(name, "").strip()
    return [int(part) for part in value.split(",") if part.strip()] if value else default


def synchronize(device: torch.device = DEVICE) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(benchmark, fn, rounds: int, warmup_rounds: int = 0, device: torch.device = DEVICE):
    """``benchmark.pedantic(fn)``, each call ending when the device has finished its work."""
    benchmark.extra_info["device"] = str(device)

    def run():
        out = fn()
        synchronize(device)
        return out

    synchronize(device)
    result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds)
    record(benchmark)
    return result


def record(benchmark) -> None:
    path = os.environ.get("PIXELFAST_BENCH_RESULTS")
    if not path or benchmark.stats is None:
        return
    line = {
        "name": benchmark.name,
        "group": benchmark.group,
        "median": benchmark.stats.stats.median,
        "extra_info": dict(benchmark.extra_info),
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")
