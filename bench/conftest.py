"""Shared benchmark plumbing: the run's description in the results file, and after the run a summary.

``python -m pytest bench/`` collects the ``bench_*`` functions of ``bench/bench_*.py`` (see
``[tool.pytest.ini_options]`` in ``pyproject.toml``). Every benchmark sets ``benchmark.group`` to the
comparison it is a side of and ``extra_info`` to its role there (``benchutil.py``,
``benchresults.py``); at the end of the run the summary gives, per comparison, every side's min and
median and each ratio to the fast side, of the mins and of the medians, all from this run on this
machine. With ``PIXELFAST_BENCH_RESULTS`` set, the run's description (date, CPU, threads, torch,
commit) goes to that file first, before any result.
"""

from __future__ import annotations

import benchresults
import benchutil
import pytest


def pytest_sessionstart(session):
    benchutil.record_run()


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: the last thing printed
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    results = [
        benchutil.result_line(bench.name, bench.group, bench.stats, bench.extra_info)
        for bench in session.benchmarks
        if bench.stats.data  # a benchmark that failed has no rounds
    ]
    reports = [bench.extra_info["report"] for bench in session.benchmarks if "report" in bench.extra_info]
    if reports:
        terminalreporter.section("pixelfast measurements")
        for line in reports:
            terminalreporter.write_line(line)
    lines = benchresults.summary_lines(results)
    if lines:
        line = benchutil.run_line()
        terminalreporter.section("pixelfast comparisons (same run; ratios of the mins / of the medians)")
        terminalreporter.write_line(
            f"{line['cpu']}, {line['cores']} cores, torch {line['torch']}, {line['threads']} torch threads, "
            f"device {line['device']}{', SMALL sizes: times mean nothing' if line['small'] else ''}"
        )
        for line in lines:
            terminalreporter.write_line(line)
