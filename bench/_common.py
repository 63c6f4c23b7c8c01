"""Shared helpers of the benchmarks: peak memory, result files and a readable table.

Each benchmark is a script run as ``python bench/NAME.py``; it prints a table and
writes ``bench/results/NAME.json``, one flat object whose keys carry their units
(``rows_per_s``, ``peak_rss_mb``, ``seconds``).
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PROJECT_ROOT = BENCH_DIR.parent


def peak_rss_mb(*, children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / divisor, 1)


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Measure the wall time of a block: ``with timed() as t: …`` then ``t["seconds"]``."""
    result: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start


def rate(count: float, seconds: float) -> float:
    """Items per second, rounded; 0 when no time passed."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def environment() -> dict[str, str]:
    """Where the numbers were measured: Python version and machine."""
    return {
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
    }


def write_results(name: str, results: Mapping[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` (a flat object, keys sorted) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(dict(results), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    rows: Sequence[Sequence[Any]] | Mapping[str, Any],
    *,
    headers: Sequence[str] = ("metric", "value"),
    title: str | None = None,
) -> None:
    """Print rows (or a mapping of metric → value) as an aligned text table."""
    body = [list(r) for r in (rows.items() if isinstance(rows, Mapping) else rows)]
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in body]]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(headers))]
    if title:
        print(title)
    for index, row in enumerate(cells):
        line = "  ".join(
            cell.rjust(widths[i]) if index and i else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        )
        print(line.rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
