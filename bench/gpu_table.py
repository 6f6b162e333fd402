"""One summary from the results files that ``bench/gpu_check.sh`` has the benchmarks write.

Usage: ``python bench/gpu_table.py RESULTS.jsonl ...``: JSON lines written the moment each benchmark
is measured (``PIXELFAST_BENCH_RESULTS``, see ``benchutil.py``), so a step that ran out of time
still leaves what it measured; missing files are skipped, and the steps' several runs are pooled.
Per comparison: every side's min and median and each ratio to the fast side, of the mins and of the
medians (``benchresults.py``, the same summary as at the end of a ``pytest bench/`` run); the CPU
engine's thread counts with the speed-up over the fewest.
"""

from __future__ import annotations

import sys

import benchresults


def main(paths: list[str]) -> int:
    runs, results = [], []
    for path in paths:
        try:
            more_runs, more_results = benchresults.load(path)
        except (OSError, ValueError):
            print(f"(no results in {path.rsplit('/', 1)[-1]})")
            continue
        runs += more_runs
        results += more_results
    if not results:
        print("no benchmark results")
        return 1
    for run in runs[:1]:
        print(f"{run['gpu'] or run['device']}; {run['cpu']}, {run['cores']} cores; torch {run['torch']}")
    print("\n".join(benchresults.summary_lines(results)))
    print("(naive = one forward pass x the sub-pixels; row-cropped naive: one step per row x the steps per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
