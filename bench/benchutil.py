"""What every benchmark shares: the device it runs on, the size knob, and timing that waits for it.

Environment:
  PIXELFAST_BENCH_DEVICE=cuda   run the benchmarks on the GPU (default: cpu). The CPU engine's
                                thread-scaling benchmark always runs on the CPU.
  PIXELFAST_BENCH_SMALL=1       tiny sizes, to check that the benchmarks run (their times mean nothing)
  PIXELFAST_BENCH_BATCHES=16,256  the sampling benchmarks' batch sizes (default: each model's own)
  PIXELFAST_BENCH_THREADS=1,2,4   the CPU engine's thread counts (default: 1, 2, 4, 8, 16 up to the cores)
  PIXELFAST_BENCH_RESULTS=FILE  append to FILE, as JSON lines, one line describing the run (date,
                                CPU, threads, torch, commit) when the run starts, then one line per
                                benchmark (min, median, rounds, extra_info) the moment it is
                                measured: a run stopped by a time limit keeps what it measured.
                                ``bench/render_readme.py`` renders the README's speed tables from
                                such a file, ``bench/gpu_table.py`` prints one table from several.

Every comparison is a pytest-benchmark group; each side of it sets ``extra_info`` (see
``benchresults.py``): ``impl`` (its name), ``role`` ("fast", "baseline" or "floor"), and where it
applies ``scale`` (the factor from what was timed to the whole), ``derived`` (further sides computed
from the same measurement: naive sampling is one forward pass times the number of sub-pixels),
``also_in`` (other groups it is a side of, so nothing is timed twice), ``table`` and ``case`` (where
the README puts it).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import uuid
from pathlib import Path

import torch

DEVICE = torch.device(os.environ.get("PIXELFAST_BENCH_DEVICE", "cpu"))
SMALL = os.environ.get("PIXELFAST_BENCH_SMALL", "") == "1"
ROUNDS = 3  # timed rounds of every side, at least
WARMUP_ROUNDS = 1  # untimed rounds before them, at least
RUN_ID = uuid.uuid4().hex[:12]  # ties each result line to its run's description


def int_list(name: str, default: list[int]) -> list[int]:
    value = os.environ.get(name, "").strip()
    return [int(part) for part in value.split(",") if part.strip()] if value else default


def synchronize(device: torch.device = DEVICE) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    benchmark, fn, rounds: int = ROUNDS, warmup_rounds: int = WARMUP_ROUNDS, device: torch.device = DEVICE, **info
):
    """``benchmark.pedantic(fn)`` with at least :data:`WARMUP_ROUNDS` untimed and :data:`ROUNDS` timed
    rounds, each call ending when the device has finished its work; ``info`` goes into
    ``benchmark.extra_info``. Appends the result to ``PIXELFAST_BENCH_RESULTS``."""
    if rounds < ROUNDS or warmup_rounds < WARMUP_ROUNDS:
        raise ValueError(f"every side gets >= {WARMUP_ROUNDS} warm-up and >= {ROUNDS} timed rounds")
    benchmark.extra_info["device"] = str(device)
    benchmark.extra_info.update(info)

    def run():
        out = fn()
        synchronize(device)
        return out

    synchronize(device)
    result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds)
    record(benchmark)
    return result


def result_line(name: str, group: str | None, stats, extra_info: dict) -> dict:
    """One benchmark's result as ``benchresults.py`` reads it (``stats``: pytest-benchmark's)."""
    return {
        "run": RUN_ID,
        "name": name,
        "group": group,
        "min": stats.min,
        "median": stats.median,
        "rounds": stats.rounds,
        "extra_info": dict(extra_info),
    }


def record(benchmark) -> None:
    path = os.environ.get("PIXELFAST_BENCH_RESULTS")
    if not path or benchmark.stats is None:
        return
    line = result_line(benchmark.name, benchmark.group, benchmark.stats.stats, benchmark.extra_info)
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def commit() -> str | None:
    """The checkout's commit (short), with ``+changes`` when tracked files differ from it (the
    results file being written aside)."""
    root = Path(__file__).resolve().parent.parent
    git = {"cwd": root, "capture_output": True, "text": True, "check": True}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **git).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    results = os.environ.get("PIXELFAST_BENCH_RESULTS")
    own = os.path.relpath(os.path.abspath(results), root) if results else None
    return head + ("+changes" if any(line[3:] != own for line in changed) else "")


def run_line() -> dict:
    """The line that describes this run: when, on what, with how many threads."""
    import pixelfast

    line = {
        "run": RUN_ID,
        "kind": "run",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        # AVX2 or AVX512: the machines vary, and oneDNN's convolutions (the forward pass) with them
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "pixelfast": pixelfast.__version__,
        "commit": commit(),
        "device": str(DEVICE),
        "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
        "small": SMALL,
    }
    return line


def record_run() -> None:
    """Append :func:`run_line` to ``PIXELFAST_BENCH_RESULTS`` (at the start of the run)."""
    path = os.environ.get("PIXELFAST_BENCH_RESULTS")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # bench/results/ on a first run
        with open(path, "a") as handle:
            handle.write(json.dumps(run_line()) + "\n")
