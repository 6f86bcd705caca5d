"""Export speed: seconds and megabytes of a selection written as CSV, FITS and VOTable.

    python benchmarks/export_formats.py                          # runs/demo's catalogue, 1,000 10,000 100,000 rows
    python benchmarks/export_formats.py --run runs/mine --rows 10000 1000000

The catalogue is repeated to the row counts asked for (every column, as the app exports
it) and written to memory by the writers the app streams (``core.tables.iter_csv``,
``core.export.write_selection``); VOTables stop at ``core.export.VOTABLE_MAX_ROWS``, as in the
app. Each figure is the best of ``--repeat`` runs. Prints a table and writes JSON (default
benchmarks/results/export_formats.json).
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from core.export import VOTABLE_MAX_ROWS, export_info, write_selection  # noqa: E402
from core.run import RunManifest  # noqa: E402
from core.tables import iter_csv  # noqa: E402


def write(fmt: str, frame: pd.DataFrame, manifest) -> int:
    """Bytes of ``frame`` written as ``fmt``."""
    if fmt == "csv":
        return sum(len(chunk.encode("utf-8")) for chunk in iter_csv(frame))
    buf = io.BytesIO()
    write_selection(buf, frame, export_info(manifest, len(frame)), fmt)
    return buf.tell()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(REPO / "runs" / "demo"), help="an embedded run (default runs/demo)")
    p.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "export_formats.json"))
    args = p.parse_args(argv)
    catalogue = pd.read_parquet(Path(args.run) / "catalogue.parquet")
    manifest = RunManifest.read(args.run)
    results = []
    print(f"{len(catalogue.columns)} columns; best of {args.repeat}\n\n| rows | format | seconds | MB |\n| --- | --- | --- | --- |")
    for n in args.rows:
        frame = catalogue.iloc[[i % len(catalogue) for i in range(n)]].reset_index(drop=True)
        for fmt in ("csv", "fits", "votable"):
            if fmt == "votable" and n > VOTABLE_MAX_ROWS:
                continue
            times, size = [], 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                size = write(fmt, frame, manifest)
                times.append(time.perf_counter() - t0)
            results.append({"rows": n, "format": fmt, "seconds": min(times), "bytes": size})
            print(f"| {n:,} | {fmt} | {min(times):.2f} | {size / 1e6:.1f} |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "columns": len(catalogue.columns), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
