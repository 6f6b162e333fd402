"""Benchmark results as comparisons: which sides each group has, their min and median, the ratios.

Pure Python (no torch), shared by the summary at the end of a run (``conftest.py``), the README's
speed tables (``render_readme.py``) and the GPU check's table (``gpu_table.py``).

A result line (``benchutil.result_line``) is one timed benchmark: ``group``, ``min``, ``median``,
``rounds`` and ``extra_info``. Its ``extra_info`` makes it a side of a comparison:

* ``impl``: the side's name; ``role``: "fast" (pixelfast), "baseline" (a plain way to do the same
  work) or "floor" (work any implementation must do, such as one forward pass);
* ``scale``: the factor from what was timed to the whole (a few steps of a sampler);
* ``derived``: further sides computed from the same measurement, ``{"impl", "role", "scale"}``;
* ``also_in``: other groups it is a side of; ``table``, ``case``: the README table and its row;
* ``series``, ``x``, ``label``: a point of a series instead (time against image size, threads).

Ratios: a baseline's speed-up is ``baseline / fast``; a floor's ratio is ``fast / floor`` (how
many floors the fast side costs). Each is given of the medians and of the mins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

ROLES = ("baseline", "fast", "floor")  # the order of a comparison's sides


@dataclass
class Side:
    impl: str
    role: str
    min: float
    median: float
    rounds: int


@dataclass
class Comparison:
    group: str
    table: str | None = None
    case: str | None = None
    sides: dict[str, Side] = field(default_factory=dict)

    def ordered(self) -> list[Side]:
        return sorted(self.sides.values(), key=lambda side: ROLES.index(side.role))

    @property
    def fast(self) -> Side | None:
        return next((side for side in self.sides.values() if side.role == "fast"), None)


@dataclass
class Point:
    x: float
    label: str
    min: float
    median: float
    rounds: int


def load(path: str) -> tuple[list[dict], list[dict]]:
    """``(runs, results)``: the run descriptions and the result lines of a results file."""
    runs, results = [], []
    with open(path) as handle:
        for line in handle:
            if line.strip():
                entry = json.loads(line)
                (runs if entry.get("kind") == "run" else results).append(entry)
    return runs, results


def comparisons(results: list[dict]) -> dict[str, Comparison]:
    """Every group with sides, in the order the results first name them."""
    groups: dict[str, Comparison] = {}
    for result in results:
        info = result.get("extra_info", {})
        if "role" not in info:
            continue
        scale = info.get("scale", 1.0)
        sides = [(info["impl"], info["role"], scale)]
        sides += [(d["impl"], d["role"], scale * d.get("scale", 1.0)) for d in info.get("derived", ())]
        for k, name in enumerate([result["group"], *info.get("also_in", ())]):
            comparison = groups.setdefault(name, Comparison(name))
            if k == 0:
                comparison.table = info.get("table", comparison.table)
                comparison.case = info.get("case", comparison.case)
            for impl, role, factor in sides:
                comparison.sides[impl] = Side(
                    impl, role, result["min"] * factor, result["median"] * factor, result["rounds"]
                )
    return groups


@dataclass
class Series:
    kind: str  # "size": time against pixels (its exponent); "threads": speed-up over the fewest threads
    points: list[Point] = field(default_factory=list)


def series(results: list[dict]) -> dict[str, Series]:
    """Every series (group) with its points, sorted by ``x``."""
    out: dict[str, Series] = {}
    for result in results:
        info = result.get("extra_info", {})
        if "series" in info:
            point = Point(info["x"], info["label"], result["min"], result["median"], result["rounds"])
            out.setdefault(result["group"], Series(info["series"])).points.append(point)
    for line in out.values():
        line.points.sort(key=lambda point: point.x)
    return out


def ratio(side: Side, fast: Side, of: str) -> float:
    """A baseline's speed-up over ``fast`` or ``fast``'s cost in floors, of the mins or the medians."""
    a, b = getattr(side, of), getattr(fast, of)
    return b / a if side.role == "floor" else a / b


def exponent(points: list[Point], of: str = "median") -> float | None:
    """``e`` in time ~ x ** e, from the smallest and the largest point."""
    first, last = points[0], points[-1]
    if last.x <= first.x:
        return None
    return math.log(getattr(last, of) / getattr(first, of)) / math.log(last.x / first.x)


def seconds(value: float) -> str:
    """Three significant digits in us, ms or s; from 100 s on, whole seconds and minutes or hours."""
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        rounded = float(f"{value / scale:.3g}")
        if rounded < 1000 or unit == "s":
            break
    if unit == "s" and rounded >= 100:
        text = f"{value:.0f} s"
        if value < 600:
            return f"{text} ({value / 60:.1f} min)"
        return f"{text} ({value / 60:.0f} min)" if value < 7200 else f"{text} ({value / 3600:.1f} h)"
    return f"{rounded:#.3g}".rstrip(".") + f" {unit}"


def times(value: float) -> str:
    """A ratio, three significant digits (whole numbers from 1000 on)."""
    return f"{value:.0f}x" if value >= 999.5 else f"{value:#.3g}".rstrip(".") + "x"


def ratio_name(side: Side, fast: Side) -> str:
    return f"{fast.impl} / {side.impl}" if side.role == "floor" else f"speed-up of {fast.impl}"


def summary_lines(results: list[dict]) -> list[str]:
    """The end-of-run summary: per comparison, each side's min and median and each ratio, both of
    the mins and of the medians; then each series."""
    lines = []
    for name, comparison in comparisons(results).items():
        sides, fast = comparison.ordered(), comparison.fast
        lines.append(name)
        width = max(len(side.impl) for side in sides)
        lines.append(f"    {'':{width}}  {'min':>18}  {'median':>18}  rounds   ratio of mins / of medians")
        for side in sides:
            row = f"    {side.impl:{width}}  {seconds(side.min):>18}  {seconds(side.median):>18}  {side.rounds:6d}"
            if fast is not None and side is not fast:
                row += (
                    f"   {ratio_name(side, fast)}: {times(ratio(side, fast, 'min'))}"
                    f" / {times(ratio(side, fast, 'median'))}"
                )
            lines.append(row)
    for name, line in series(results).items():
        lines.append(name)
        one = line.points[0]
        for point in line.points:
            row = f"    {point.label:>12}  min {seconds(point.min):>18}  median {seconds(point.median):>18}"
            if line.kind == "threads" and point is not one:
                row += (
                    f"   speed-up over {one.label}: {times(one.min / point.min)} / {times(one.median / point.median)}"
                )
            lines.append(row)
        grow = exponent(line.points)
        if line.kind == "size" and grow is not None:
            lines.append(f"    time ~ pixels^{exponent(line.points, 'min'):.2f} (mins) / ^{grow:.2f} (medians)")
    return lines
