"""Shared benchmark plumbing: after the run, print each fast path's speed-up over its plain twin.

Every benchmark sets ``benchmark.group`` to the case it measures and ``benchmark.extra_info["impl"]``
to "fast" or "plain"; the summary divides the plain median by the fast one, case by case, so the
ratio always comes from the same run on the same machine. A plain benchmark that times only part of
its work (a few naive sampling steps) sets ``extra_info["scale"]``, the factor to the whole. A
benchmark whose result also serves as one side of other comparisons lists those groups in
``extra_info["also_in"]``, so nothing is timed twice. Groups
whose benchmarks set ``extra_info["pixels"]`` get a scaling exponent: time ~ pixels ** exponent.
"""

from __future__ import annotations

import math
from collections import defaultdict


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    medians = defaultdict(dict)
    sizes = defaultdict(list)
    for bench in session.benchmarks:
        if bench.stats is None:
            continue
        impl = bench.extra_info.get("impl")
        if impl:
            for group in [bench.group, *bench.extra_info.get("also_in", ())]:
                medians[group][impl] = bench.stats.median * bench.extra_info.get("scale", 1.0)
        if "pixels" in bench.extra_info:
            sizes[bench.group].append((bench.extra_info["pixels"], bench.stats.median))
    lines = []
    for group, by_impl in sorted(medians.items()):
        if "fast" in by_impl and "plain" in by_impl:
            fast, plain = by_impl["fast"], by_impl["plain"]
            lines.append(
                f"{group}\n    plain {plain:12.4f} s   fast {fast:10.4f} s   plain/fast {plain / fast:10.2f}x"
                f"   fast/plain {fast / plain:8.3f}"
            )
    for group, points in sorted(sizes.items()):
        (small_px, small_t), (large_px, large_t) = min(points), max(points)
        if large_px > small_px:
            exponent = math.log(large_t / small_t) / math.log(large_px / small_px)
            detail = ", ".join(f"{px} px: {t:.3f} s" for px, t in sorted(points))
            lines.append(f"{group}\n    {detail}; time ~ pixels^{exponent:.3f}")
    reports = [bench.extra_info["report"] for bench in session.benchmarks if "report" in bench.extra_info]
    if reports:
        terminalreporter.section("pixelfast measurements")
        for line in reports:
            terminalreporter.write_line(line)
    if lines:
        terminalreporter.section("pixelfast speed-ups (plain median / fast median, same run)")
        for line in lines:
            terminalreporter.write_line(line)
