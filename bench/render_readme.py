"""The README's speed tables, rendered from the results file of one ``pytest bench/`` run.

Usage (from the repository root)::

    rm -f bench/results/cpu.jsonl
    PIXELFAST_BENCH_RESULTS=bench/results/cpu.jsonl python -m pytest bench/
    python bench/render_readme.py bench/results/cpu.jsonl     # rewrites README.md between the markers
    python bench/render_readme.py --check                     # exit 1 if README.md is not what it renders

The tables go between ``<!-- bench-tables:start -->`` and ``<!-- bench-tables:end -->`` in README.md,
headed by the run's date, CPU, core and thread counts, torch version and commit, all taken from the
file. The file must hold exactly one run (its description line first, see ``benchutil.py``), not one
run at tiny sizes (``PIXELFAST_BENCH_SMALL=1``). ``tests/test_bench_readme.py`` checks that the
README holds exactly what this script renders from the committed ``bench/results/cpu.jsonl``, or
the sentence below while that file does not exist, so no number in the tables is typed by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import benchresults as br

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results" / "cpu.jsonl"
START, END = "<!-- bench-tables:start -->", "<!-- bench-tables:end -->"
HEADLINE = "one forward pass"  # the floor whose ratio is the headline: cached / one forward pass
NO_RESULTS = (
    "No measurements are committed yet. These tables are rendered from one benchmark run: "
    "`PIXELFAST_BENCH_RESULTS=bench/results/cpu.jsonl python -m pytest bench/`, then "
    "`python bench/render_readme.py bench/results/cpu.jsonl` (see that script)."
)
TABLES = {  # table key: caption, in the README's order
    "sampling": "Sampling (`bench/bench_sampling.py`)",
    "sampling bf16": 'Sampling with `precision="bf16"` (`bench/bench_sampling.py`)',
    "upscale": "Super-resolution (`bench/bench_upscale.py`)",
    "masked_conv2d forward": "Masked convolution, forward (`bench/bench_masked_conv.py`)",
    "masked_conv2d forward+backward": "Masked convolution, forward + backward (`bench/bench_masked_conv.py`)",
    "lstm scans": "LSTM scans (`bench/bench_lstm.py`)",
    "lstm layers": "LSTM layers (`bench/bench_lstm.py`)",
    "pixelrnn training": "PixelRNN training (`bench/bench_lstm.py`)",
    "training": "PixelCNN and Gated PixelCNN training (`bench/bench_training.py`)",
}


def one_run(runs: list[dict], results: list[dict], allow_small: bool = False) -> dict:
    """The file's one run; refuses results of several runs, of none, or of a tiny-size run."""
    ids = {run["run"] for run in runs} | {result.get("run") for result in results}
    if len(runs) != 1 or len(ids) != 1:
        raise ValueError(
            f"the results hold {len(runs)} run description(s) and {len(ids)} run id(s); the README's tables "
            "come from exactly one `pytest bench/` run: remove the file before the run"
        )
    run = runs[0]
    if run.get("small") and not allow_small:
        raise ValueError("these results come from a PIXELFAST_BENCH_SMALL=1 run, whose times mean nothing")
    return run


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def text(value: str) -> str:
    """Plain text for markdown: ``*`` (as in ``C*H*W``) and ``|`` escaped."""
    return value.replace("*", "\\*").replace("|", "\\|")


def short(impl: str) -> str:
    """A side's name in a ratio's header: ``naive = one forward pass x C*H*W`` -> ``naive``."""
    return impl.split(" = ")[0].split(" (")[0]


def timing(side: br.Side | None) -> str:
    return "" if side is None else f"{br.seconds(side.median)} ({br.seconds(side.min)})"


def ratio_cell(side: br.Side | None, fast: br.Side | None) -> str:
    if side is None or fast is None:
        return ""
    text = br.times(br.ratio(side, fast, "median"))
    text = f"**{text}**" if side.impl == HEADLINE else text
    return f"{text} ({br.times(br.ratio(side, fast, 'min'))})"


def comparison_table(comparisons: list[br.Comparison]) -> list[str]:
    roles: dict[str, str] = {}
    for comparison in comparisons:
        for side in comparison.ordered():
            roles.setdefault(side.impl, side.role)
    impls = sorted(roles, key=lambda impl: br.ROLES.index(roles[impl]))  # stable: first seen within a role
    fast = next((impl for impl in impls if roles[impl] == "fast"), None)
    ratios = [impl for impl in impls if roles[impl] != "fast"] if fast else []
    names = [text(f"{fast} {'/' if roles[impl] == 'floor' else 'vs'} {short(impl)}") for impl in ratios]
    names = [f"**{name}**" if impl == HEADLINE else name for name, impl in zip(names, ratios)]
    header = ["case", *(text(impl) for impl in impls), *names]
    lines = [row(header), row(["---"] * len(header))]
    for comparison in comparisons:
        sides = comparison.sides
        cells = [text(comparison.case or comparison.group), *(timing(sides.get(impl)) for impl in impls)]
        cells += [ratio_cell(sides.get(impl), comparison.fast) for impl in ratios]
        lines.append(row(cells))
    return lines


def series_table(name: str, line: br.Series) -> list[str]:
    first = line.points[0]
    if line.kind == "threads":
        lines = [row(["threads", "time", f"speed-up over {first.label}"]), row(["---"] * 3)]
        for point in line.points:
            speedup = f"{br.times(first.median / point.median)} ({br.times(first.min / point.min)})"
            lines.append(row([point.label, timing(point), speedup]))
        return lines
    lines = [row(["image size", "time"]), row(["---"] * 2)]
    lines += [row([point.label, timing(point)]) for point in line.points]
    grow = br.exponent(line.points)
    if grow is not None:
        lines += ["", f"Time grows like pixels^{grow:.2f} (of the mins: pixels^{br.exponent(line.points, 'min'):.2f})."]
    return lines


def render(runs: list[dict], results: list[dict], allow_small: bool = False) -> str:
    """The markdown between the markers, from one run's description and results."""
    run = one_run(runs, results, allow_small)
    capability = f", {run['cpu_capability']}" if run.get("cpu_capability") else ""
    where = f"{run['cpu']} ({run['cores']} cores{capability})"
    if run.get("gpu"):
        where += f" and {run['gpu']}"
    commit = f", commit {run['commit']}" if run.get("commit") else ""
    out = [
        f"Measured {run['date']} on {where}, device {run['device']}, torch {run['torch']} with "
        f"{run['threads']} thread{'s' if run['threads'] != 1 else ''}{commit}, in one `python -m pytest bench/` run"
        f"{' at tiny sizes (PIXELFAST_BENCH_SMALL=1: the times mean nothing)' if run.get('small') else ''}. "
        "Times: the median of each side's timed rounds (at least 3, after warm-up), the min in "
        "parentheses. Ratios: of the medians (of the mins); `A vs B` is B's time over A's (A's "
        "speed-up), `A / B` is A's time over B's.",
    ]
    comparisons = br.comparisons(results)
    keys = list(TABLES) + sorted({c.table for c in comparisons.values() if c.table and c.table not in TABLES})
    for key in keys:
        members = [c for c in comparisons.values() if c.table == key]
        if members:
            out += ["", f"**{TABLES.get(key, key)}**", "", *comparison_table(members)]
    for name, line in br.series(results).items():
        out += ["", f"**{text(name)}**", "", *series_table(name, line)]
    return "\n".join(out)


def render_file(path: Path | str | None, allow_small: bool = False) -> str:
    """:func:`render` of a results file, or the sentence that says how to make one when ``path`` is None."""
    if path is None:
        return NO_RESULTS
    return render(*br.load(str(path)), allow_small=allow_small)


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md needs exactly one {START} ... {END} pair")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default=None, help=f"results file (default: {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--check", action="store_true", help="only check that README.md is what this renders")
    parser.add_argument("--readme", default=str(README), help="the README to rewrite or check")
    args = parser.parse_args(argv)
    path = Path(args.results) if args.results else RESULTS if RESULTS.exists() else None
    try:
        block = render_file(path)
        text = Path(args.readme).read_text()
        new = replace_block(text, block)
    except (OSError, ValueError) as error:
        print(f"render_readme: {error}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"render_readme: {args.readme} does not hold what {path or 'no results'} renders", file=sys.stderr)
            return 1
        return 0
    Path(args.readme).write_text(new)
    print(f"render_readme: {args.readme} rewritten from {path or 'no results (the sentence that says how)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
