"""One table from the results files that ``bench/gpu_check.sh`` has the benchmarks write.

Usage: ``python bench/gpu_table.py RESULTS.jsonl ...``: one JSON line per benchmark, written the
moment it is measured (``PIXELFAST_BENCH_RESULTS``, see ``benchutil.py``), so a step that ran out
of time still leaves what it measured; missing files are skipped. Per group: each implementation's median,
and plain / fast, the fast path's speed-up (extrapolated naive sampling included, as in
``bench/conftest.py``). The CPU engine's thread counts get one row each, with the speed-up over one
thread.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(paths: list[str]) -> list[dict]:
    benchmarks = []
    for path in paths:
        try:
            with open(path) as handle:
                benchmarks.extend(json.loads(line) for line in handle if line.strip())
        except (OSError, ValueError):
            print(f"(no results in {path.rsplit('/', 1)[-1]})")
    return benchmarks


def seconds(value: float) -> str:
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.3f} s"


def table(benchmarks: list[dict]) -> list[str]:
    by_group: dict[str, dict[str, float]] = defaultdict(dict)
    threads: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for bench in benchmarks:
        info, median = bench.get("extra_info", {}), bench["median"]
        if "threads" in info:
            threads[bench["group"]].append((info["threads"], median))
            continue
        impl = info.get("impl", bench["name"])
        for group in [bench["group"], *info.get("also_in", ())]:
            by_group[group][impl] = median * info.get("scale", 1.0)
    rows = [("case", "fast (pixelfast)", "plain / reference", "speed-up")]
    for group in sorted(by_group):
        impls = by_group[group]
        fast, plain = impls.get("fast"), impls.get("plain")
        ratio = f"{plain / fast:.2f}x" if fast and plain else ""
        rows.append((group, seconds(fast) if fast else "", seconds(plain) if plain else "", ratio))
    for group, points in sorted(threads.items()):
        points.sort()
        one = dict(points).get(1)
        for count, median in points:
            rows.append((f"{group}: {count} threads", seconds(median), "", f"{one / median:.2f}x vs 1" if one else ""))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return lines


def main(paths: list[str]) -> int:
    benchmarks = load(paths)
    if not benchmarks:
        print("no benchmark results")
        return 1
    print("\n".join(table(benchmarks)))
    print("(naive sampling: a few steps timed and multiplied by the step count; plain/fast = speed-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
