"""Two injection benchmarks side by side: today's score against a new one, kind by kind.

Each input is an ``injection.json`` written by ``python -m train evaluate --run RUN --inject``
(or a run folder holding one). For every kind and strength the table shows, per file, the
median percentile against its own run and the % flagged, for one score column of each
(``anomaly_score`` by default), and the headline at the middle strength. Prints the table
and writes JSON::

    python benchmarks/injection.py runs/demo runs/new --labels today new
    python benchmarks/injection.py a/injection.json b/injection.json --columns anomaly_score score_consistency \\
        --out benchmarks/results/injection-compare.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.io import read_json, write_json  # noqa: E402
from core.run import INJECTION_FILE  # noqa: E402


def load(path) -> dict:
    """An injection.json, or the one in a run folder."""
    path = Path(path)
    path = path / INJECTION_FILE if path.is_dir() else path
    try:
        result = read_json(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot be read ({exc}); write it with `python -m train evaluate --run RUN --inject`")
    if "rows" not in result or "headline" not in result:
        raise SystemExit(f"{path}: not an injection.json (no rows or headline)")
    return result


def compare(results: list[dict], labels: list[str], columns: list[str]) -> dict:
    """``{"rows": [{kind, strength, <label>: {median_pct, flagged}}], "headline": {<label>: ...}}``."""
    for result, label, col in zip(results, labels, columns):
        if col not in result["scores"]:
            raise SystemExit(f"{label}: no score column {col!r}; it has {', '.join(result['scores'])}")
    keys = []
    for result in results:
        keys += [(r["kind"], r["strength"]) for r in result["rows"] if (r["kind"], r["strength"]) not in keys]
    rows = []
    for kind, strength in keys:
        row = {"kind": kind, "strength": strength}
        for result, label, col in zip(results, labels, columns):
            match = [r for r in result["rows"] if r["kind"] == kind and r["strength"] == strength]
            row[label] = match[0][col] if match else None
        rows.append(row)
    return {"labels": labels, "columns": columns, "rows": rows,
            "headline": {label: result["headline"][col] for result, label, col in zip(results, labels, columns)}}


def table(comparison: dict) -> str:
    labels = comparison["labels"]
    head = f"{'kind':<20}{'strength':>9}" + "".join(f"{label[:18]:>20}" for label in labels)
    out = ["median percentile / % flagged", head, "-" * len(head)]
    for row in comparison["rows"]:
        cells = []
        for label in labels:
            c = row[label]
            cells.append(f"{'-':>20}" if not c or c.get("median_pct") is None
                         else f"{c['median_pct']:>12.1f} {100 * c['flagged']:>5.0f}%")
        out.append(f"{row['kind']:<20}{row['strength']:>9g}" + "".join(cells))
    for label in labels:
        h = comparison["headline"][label]
        if h.get("median_pct") is not None:
            out.append(f"{label}: at strength {h['strength']:g} the median kind sits at {h['median_pct']:.1f} "
                       f"(lowest {h['min_kind_pct']:.1f}, {h['kinds_at_90']} kinds >= 90), {100 * h['flagged']:.0f} % "
                       f"flagged; untouched {h['control_pct']:.1f}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INJECTION", help="injection.json files or run folders")
    p.add_argument("--labels", nargs="+", help="a name per input (default: the run folders' names)")
    p.add_argument("--columns", nargs="+", default=None,
                   help="the score column of each input (one for all, or one per input; default anomaly_score)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "injection-compare.json",
                   help="JSON to write (default benchmarks/results/injection-compare.json)")
    args = p.parse_args(argv)
    results = [load(x) for x in args.inputs]
    labels = args.labels or [Path(x).name if Path(x).is_dir() else Path(x).parent.name or Path(x).stem
                             for x in args.inputs]
    columns = args.columns or ["anomaly_score"]
    columns = columns * len(results) if len(columns) == 1 else columns
    if len(labels) != len(results) or len(columns) != len(results):
        p.error("give one label (and one column, or a single column) per input")
    comparison = compare(results, labels, columns)
    print(table(comparison))
    write_json(args.out, comparison)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
