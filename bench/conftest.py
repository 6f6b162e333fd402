"""Shared benchmark plumbing: after the run, print each fast path's speed-up over its plain twin.

Every benchmark sets ``benchmark.group`` to the case it measures and ``benchmark.extra_info["impl"]``
to "fast" or "plain"; the summary divides the plain median by the fast one, case by case, so the
ratio always comes from the same run on the same machine.
"""

from __future__ import annotations

from collections import defaultdict


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    medians = defaultdict(dict)
    for bench in session.benchmarks:
        impl = bench.extra_info.get("impl")
        if impl and bench.stats is not None:
            medians[bench.group][impl] = bench.stats.median
    lines = []
    for group, by_impl in sorted(medians.items()):
        if "fast" in by_impl and "plain" in by_impl:
            fast, plain = by_impl["fast"], by_impl["plain"]
            lines.append(f"{group:<58} plain {plain * 1e3:9.2f} ms   fast {fast * 1e3:9.2f} ms   speed-up {plain / fast:6.2f}x")
    if lines:
        terminalreporter.section("pixelfast speed-ups (plain median / fast median, same run)")
        for line in lines:
            terminalreporter.write_line(line)
