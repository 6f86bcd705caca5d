"""Time and disk of the real-survey walk-through's first steps, measured on a synthetic DR17 survey.

Lays a synthetic DR17 survey out as the SDSS archive does, serves it locally, and runs what a
user runs on the real survey: ``train download`` (from a DAPall-shaped catalogue of
``--dapall-rows`` rows, as large as DR17's), then ``train ingest --size 64 --dapall`` (the
paper's grid). Prints seconds and bytes per galaxy of each step, and the DAPall join alone.
Fit, embed and evaluate are measured by the demo (``runs/demo/manifest.json``) and
``benchmarks/train_throughput.py``.

    python benchmarks/walkthrough.py              # 100 galaxies
    python benchmarks/walkthrough.py --n 300 --workers 2
Writes benchmarks/results/walkthrough.json.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import date
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).parent))
from download_local import Quiet, archive  # noqa: E402

from core import summaries  # noqa: E402
from core.dataset import IngestOptions, open_dataset  # noqa: E402
from core.download import DEFAULT_DAPTYPE, DownloadOptions, download, plan  # noqa: E402
from core.ingest import ingest  # noqa: E402
from core.lines import DR17_CHANNELS  # noqa: E402


def big_dapall(path: Path, ids, rows: int, seed: int = 0) -> Path:
    """A DAPall-shaped table of ``rows`` rows (the survey's galaxies among them) with the joined columns."""
    rng = np.random.default_rng(seed)
    pids = np.array([f"{8000 + i // 17}-{1901 + i % 17}" for i in range(rows)], dtype="U12")
    pids[: len(ids)] = ids
    cols = [fits.Column("PLATEIFU", "12A", array=pids),
            fits.Column("DAPTYPE", "30A", array=np.full(rows, DEFAULT_DAPTYPE)),
            fits.Column("DAPQUAL", "K", array=np.zeros(rows, np.int64)),
            fits.Column("EMLINE_GEW_1RE", f"{len(DR17_CHANNELS)}E",
                        array=rng.normal(10, 3, (rows, len(DR17_CHANNELS))).astype(np.float32))]
    cols += [fits.Column(c, "E", array=rng.normal(1, 0.3, rows).astype(np.float32))
             for c in summaries.DAPALL_COLUMNS if c != "DAPQUAL"]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name=DEFAULT_DAPTYPE)]).writeto(path)
    return path


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="galaxies (default 100)")
    ap.add_argument("--dapall-rows", type=int, default=11000, help="rows of the DAPall (default 11000, ~DR17's)")
    ap.add_argument("--workers", type=int, default=None, help="ingest processes (default: all cores)")
    ap.add_argument("--size", type=int, default=64, help="grid size (default 64, the paper's)")
    args = ap.parse_args()
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        listing, _ = archive(root, args.n, seed=3)
        ids = [str(p).strip() for p in fits.getdata(listing, 1)["PLATEIFU"]]
        dapall = big_dapall(root / "dapall-big.fits", ids, args.dapall_rows)
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root / "sas")))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            t0 = time.perf_counter()
            targets = plan(dapall, root / "maps", base_url=f"http://127.0.0.1:{server.server_address[1]}/",
                           where=f"PLATEIFU in {ids!r}")
            report = download(targets, DownloadOptions(workers=8), progress=False)
            steps["download"] = {"seconds": time.perf_counter() - t0, "bytes": du(root / "maps")}
        finally:
            server.shutdown()
            server.server_close()
        assert len(report.fetched) == args.n, report.failed
        t0 = time.perf_counter()
        rep = ingest([root / "maps"], root / "ds", IngestOptions(size=args.size), workers=args.workers,
                     progress=False, catalogues=summaries.SummaryFiles(dapall=str(dapall)))
        steps["ingest"] = {"seconds": time.perf_counter() - t0, "bytes": du(root / "ds"),
                           "bytes_without_parts": du(root / "ds") - du(root / "ds" / ".parts")}
        t0 = time.perf_counter()
        _, joins = summaries.join(open_dataset(root / "ds").catalogue.drop(columns=joins_of(rep)),
                                  summaries.SummaryFiles(dapall=str(dapall)))
        steps["dapall_join"] = {"seconds": time.perf_counter() - t0, "rows": joins[0]["rows"],
                                "matched": joins[0]["matched"], "file_bytes": joins[0]["bytes"]}
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "n": args.n, "size": args.size, "steps": steps}
    for name, s in steps.items():
        per = f"{s['seconds'] / args.n * 1000:.1f} ms/galaxy" if name != "dapall_join" else \
            f"{s['rows']} rows, {s['matched']} matched"
        size = f", {s['bytes'] / args.n / 2**20:.2f} MiB/galaxy" if "bytes" in s else ""
        print(f"{name:12s} {s['seconds']:7.2f} s  ({per}{size})")
    out = Path(__file__).parent / "results" / "walkthrough.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def joins_of(report) -> list[str]:
    return [c for j in report.joins for c in j["columns"]]


if __name__ == "__main__":
    main()
