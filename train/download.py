"""``python -m train download``: fetch the MAPS files of the galaxies a DAPall catalogue lists."""
from __future__ import annotations

from train.args import existing_file, finite_float, int_range, out_folder, positive_int, processes

HELP = "download the MaNGA DAP MAPS files of the galaxies a DAPall catalogue lists (parallel, resumable)"
EXAMPLES = """\
  python -m train download --dapall dapall-v3_1_1-3.1.0.fits --out data/manga-dr17
  python -m train download --dapall dapall-v3_1_1-3.1.0.fits --out data/manga-dr17 \\
      --where "Z < 0.05 and NSA_ELPETRO_BA > 0.4" --limit 500 --dry-run
  python -m train download --dapall dapall.fits --out data/dr17 --daptype SPX-MILESHC-MASTARSSP --workers 4
  python -m train download --dapall dapall.fits --out data/dr17 --base-url https://mirror.example.org/sas/

Files go to OUT/<DAPTYPE>/<plate>/<ifu>/, as on the SDSS Science Archive Server below
--base-url (dr17/manga/spectro/analysis/v3_1_1/3.1.0/<DAPTYPE>/<plate>/<ifu>/). Run the same
command again after an interruption or a failure: complete files are kept, the rest fetched.
--where is a condition on the DAPall's columns (names as in the file: Z, NSA_ELPETRO_BA,
DAPQUAL, PLATEIFU, ...; and, or, not, comparisons, numbers and 'strings').
Exit status 0 when every file is there, 1 when some failed (listed with the reason).
Then: python -m train ingest data/manga-dr17/HYB10-MILESHC-MASTARSSP --out data/dr17-64 --size 64 --dapall ...
"""


def add_arguments(p) -> None:
    from core.download import DEFAULT_BASE_URL, DEFAULT_DAPTYPE, DownloadOptions

    defaults = DownloadOptions()
    p.add_argument("--dapall", required=True, type=existing_file, metavar="DAPALL.fits",
                   help="the DAPall catalogue that lists the galaxies")
    p.add_argument("--out", required=True, type=out_folder, metavar="FOLDER", help="folder to download into")
    p.add_argument("--daptype", default=DEFAULT_DAPTYPE, help=f"DAP analysis type (default {DEFAULT_DAPTYPE})")
    p.add_argument("--where", metavar="EXPR", help="only the DAPall rows where this condition holds")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N galaxies (the first ones listed)")
    p.add_argument("--workers", type=processes, default=defaults.workers,
                   help=f"files fetched at once (default {defaults.workers})")
    p.add_argument("--retries", type=int_range(0, 100), default=defaults.retries,
                   help=f"further attempts after a server error or timeout (default {defaults.retries})")
    p.add_argument("--timeout", type=finite_float(low=0, low_open=True), default=defaults.timeout,
                   help=f"seconds to wait for the server (default {defaults.timeout:g})")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help=f"the archive's root, the part before dr17/ (default {DEFAULT_BASE_URL})")
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched, fetch nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from core.download import DownloadOptions, download, plan, summary

    targets = plan(args.dapall, args.out, daptype=args.daptype, where=args.where, limit=args.limit,
                   base_url=args.base_url)
    if args.dry_run:
        for t in targets:
            print(f"{t.url} -> {t.path}{'  (present)' if t.path.is_file() else ''}")
        print(f"{len(targets)} files; {sum(t.path.is_file() for t in targets)} already present (their size is "
              "checked against the server's when the command runs)")
        return 0
    if not targets:
        print(f"no galaxy of {args.dapall} matches; nothing to download")
        return 0
    opts = DownloadOptions(workers=args.workers, retries=args.retries, timeout=args.timeout)
    report = download(targets, opts, progress=not args.quiet)
    print(summary(report, targets))
    return 1 if report.failed else 0
