"""Download speed against a local archive: files/s and MiB/s of ``core.download`` on synthetic MAPS files.

Writes a synthetic survey (DR17 layout), lays it out as the SDSS archive does
(``core.download.SAS_PATH``), serves it from a local ``http.server`` in a thread, and
downloads it twice with ``core.download``: the first run fetches and checks every file (each
is read by ``core.maps.read_maps`` before it is renamed into place), the second finds them
complete (one HEAD request each) and fetches nothing. Server and client share the machine,
so the figure is the client's overhead (verification, threads), not the network's.

    python benchmarks/download_local.py               # 200 galaxies, 8 workers
    python benchmarks/download_local.py --n 50 --workers 4
Writes benchmarks/results/download_local.json.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import threading
from datetime import date
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from astropy.io import fits

from core.download import DEFAULT_DAPTYPE, SAS_PATH, DownloadOptions, download, plan
from core.synth import generate_survey


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def archive(root: Path, n: int, seed: int) -> tuple[Path, int]:
    """A SAS-shaped tree of ``n`` synthetic galaxies under ``root``, and a DAPall listing them."""
    src = root / "survey"
    truth = generate_survey(src, n, seed, release="dr17", progress=False)
    total = 0
    for gid, name in zip(truth["galaxy_id"], truth["file"]):
        plate, ifu = gid.split("-")
        dest = root / "sas" / SAS_PATH.format(daptype=DEFAULT_DAPTYPE, plate=plate, ifu=ifu)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src / name, dest)
        total += dest.stat().st_size
    cols = [fits.Column("PLATEIFU", "12A", array=np.asarray(truth["galaxy_id"], dtype=str))]
    dapall = root / "dapall.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name=DEFAULT_DAPTYPE)]).writeto(dapall)
    return dapall, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="galaxies (default 200)")
    ap.add_argument("--workers", type=int, default=8, help="download threads (default 8)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dapall, total = archive(root, args.n, args.seed)
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root / "sas")))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            targets = plan(dapall, root / "out", base_url=f"http://127.0.0.1:{server.server_address[1]}/")
            opts = DownloadOptions(workers=args.workers)
            first = download(targets, opts, progress=False)
            second = download(targets, opts, progress=False)
        finally:
            server.shutdown()
            server.server_close()
    assert len(first.fetched) == args.n and len(second.kept) == args.n, (first.failed, second.failed)
    result = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "n": args.n, "workers": args.workers, "mean_file_kib": round(total / args.n / 1024, 1),
        "fetch_files_per_s": round(args.n / first.seconds, 1), "fetch_mib_per_s": round(first.bytes / 2**20 / first.seconds, 1),
        "resume_files_per_s": round(args.n / second.seconds, 1),
    }
    print(f"{args.n} synthetic DR17 MAPS files of {result['mean_file_kib']} KiB on average, {args.workers} threads:")
    print(f"  first run (fetch + read check): {result['fetch_files_per_s']} files/s, {result['fetch_mib_per_s']} MiB/s")
    print(f"  second run (all complete, HEAD only): {result['resume_files_per_s']} files/s")
    out = Path(__file__).parent / "results" / "download_local.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
