"""The README's speed tables are rendered from a benchmark results file, never typed.

``bench/render_readme.py`` renders them from the results of one ``pytest bench/`` run
(``bench/results/cpu.jsonl``); the README must hold exactly that, or, while no results file is
committed, the sentence that says how to make one. The renderer and the end-of-run summary are
checked on ``tests/data/bench_results_small_run.jsonl``, the results of one
``PIXELFAST_BENCH_SMALL=1 python -m pytest bench/`` run: a fixture of the file format only, whose
times mean nothing (the renderer refuses it for the README).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import benchresults  # noqa: E402
import render_readme  # noqa: E402

SMALL_RUN = ROOT / "tests" / "data" / "bench_results_small_run.jsonl"


def readme_block(text: str) -> str:
    start, end = text.index(render_readme.START), text.index(render_readme.END)
    return text[start + len(render_readme.START) : end].strip("\n")


def test_readme_tables_are_what_the_committed_results_render():
    results = render_readme.RESULTS if render_readme.RESULTS.exists() else None
    assert readme_block(render_readme.README.read_text()) == render_readme.render_file(results)


def test_the_small_run_renders_every_table():
    runs, results = benchresults.load(str(SMALL_RUN))
    block = render_readme.render_file(SMALL_RUN, allow_small=True)
    run = runs[0]
    first = block.split("\n")[0]
    for fact in (run["date"], run["cpu"], f"{run['cores']} cores", f"{run['threads']} thread", run["torch"]):
        assert fact in first
    assert "PIXELFAST_BENCH_SMALL=1" in first
    for caption in render_readme.TABLES.values():
        assert f"**{caption}**" in block
    assert "| **cached / one forward pass** |" in block
    # every comparison is a row of its table, with each side's median and min
    for comparison in benchresults.comparisons(results).values():
        table = block.split(f"**{render_readme.TABLES[comparison.table]}**")[1].split("\n\n**")[0]
        line = next(line for line in table.split("\n") if line.startswith(f"| {render_readme.text(comparison.case)} |"))
        for side in comparison.sides.values():
            assert render_readme.timing(side) in line
    assert block == render_readme.render_file(SMALL_RUN, allow_small=True)  # deterministic
    assert not any(line != line.rstrip() for line in block.split("\n"))


def test_every_side_has_three_timed_rounds():
    _, results = benchresults.load(str(SMALL_RUN))
    assert results and all(result["rounds"] >= 3 for result in results)


def test_the_readme_block_is_replaced_in_place():
    text = f"intro\n{render_readme.START}\nold numbers\n{render_readme.END}\noutro\n"
    new = render_readme.replace_block(text, "new tables")
    assert new == f"intro\n{render_readme.START}\nnew tables\n{render_readme.END}\noutro\n"
    with pytest.raises(ValueError, match="exactly one"):
        render_readme.replace_block("no markers", "tables")


def test_refuses_small_runs_and_mixed_runs(tmp_path):
    with pytest.raises(ValueError, match="SMALL"):
        render_readme.render_file(SMALL_RUN)
    lines = SMALL_RUN.read_text().splitlines()
    again = [json.dumps({**json.loads(line), "run": "another"}) for line in lines]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(lines + again) + "\n")
    with pytest.raises(ValueError, match="exactly one"):
        render_readme.render_file(mixed, allow_small=True)


def test_summary_gives_min_and_median_of_every_side():
    _, results = benchresults.load(str(SMALL_RUN))
    lines = benchresults.summary_lines(results)
    headline = [line for line in lines if "cached / one forward pass:" in line]
    assert len(headline) == 6  # five sampled models (PixelCNN++ included) and the upscaling
    assert all(line.count("x") >= 2 and " / " in line.split("pass:")[1] for line in headline)
    assert sum("min" in line and "median" in line for line in lines) >= len(benchresults.comparisons(results))


def test_ratios():
    fast = benchresults.Side("cached", "fast", 2.0, 3.0, 3)
    naive = benchresults.Side("naive", "baseline", 200.0, 330.0, 3)
    floor = benchresults.Side("one forward pass", "floor", 1.0, 1.5, 3)
    assert benchresults.ratio(naive, fast, "median") == 110.0 and benchresults.ratio(naive, fast, "min") == 100.0
    assert benchresults.ratio(floor, fast, "median") == 2.0 and benchresults.ratio(floor, fast, "min") == 2.0
