"""``python -m train ingest``: MaNGA MAPS files -> a dataset folder."""
from __future__ import annotations

from train.args import existing_file, int_range, out_folder, processes

HELP = "read MaNGA DAP MAPS files (real or synthetic) into a dataset folder for training"
EXAMPLES = """\
  python -m train ingest data/synth --out data/demo-dataset
  python -m train ingest 'dr17/**/manga-*-MAPS-SPX-MILESHC-MASTARSSP.fits.gz' --out data/dr17-64 --size 64
  python -m train ingest a.fits.gz b.fits.gz --out data/two --norm ha_peak --workers 2
  python -m train ingest data/synth --out data/ds --lines Hb-4862 OIII-5008 Ha-6564 NII-6585
  python -m train ingest data/manga-dr17 --out data/dr17-64 --size 64 \
      --dapall dapall-v3_1_1-3.1.0.fits --drpall drpall-v3_1_1.fits --drop-critical

--dapall joins, by plate-IFU (the row of the file's own DAPTYPE first), the DAPall columns
sfr_tot, sfr_1re, emline_gew_1re_ha (Halpha EW in 1 Re), nsa_sersic_n, nsa_elpetro_ba,
nsa_elpetro_th50_r, stellar_sigma_1re and dapqual; --drpall adds nsa_elpetro_mass (NSA stellar
mass, Msun/h^2). Galaxies without a row get empty values; the summary says how many matched.

A file that cannot be used is skipped and recorded, with its reason, in DATASET/manifest.json.
Re-running on the same inputs reuses what was already done (DATASET/.parts holds the per-file work).
"""


def add_arguments(p) -> None:
    from core.dataset import IngestOptions
    from core.maps import MAX_GRID, MIN_GRID, NORMALISATIONS

    defaults = IngestOptions()
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="MAPS files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, type=out_folder, metavar="DATASET", help="dataset folder to write")
    p.add_argument("--size", type=int_range(MIN_GRID, MAX_GRID), default=defaults.size,
                   help=f"grid size S of the maps, {MIN_GRID} to {MAX_GRID} (32 demo, 64 paper; default {defaults.size})")
    p.add_argument("--lines", nargs="+", default=list(defaults.lines), metavar="LINE",
                   help="DAP channel names of the sequence (default: the 19 lines between 3800 and 8000 A)")
    p.add_argument("--norm", default=defaults.norm, choices=NORMALISATIONS,
                   help=f"per-galaxy normalisation (default {defaults.norm})")
    p.add_argument("--bad-bits", nargs="+", default=list(defaults.bad_bits), metavar="BIT",
                   help=f"MANGA_DAPPIXMASK bits that mark a spaxel bad (default {' '.join(defaults.bad_bits)})")
    p.add_argument("--dapall", type=existing_file, metavar="DAPALL.fits",
                   help="MaNGA DAPall catalogue whose columns are joined by plate-IFU")
    p.add_argument("--drpall", type=existing_file, metavar="DRPALL.fits",
                   help="MaNGA DRPall catalogue: joins the NSA stellar mass (nsa_elpetro_mass)")
    p.add_argument("--drop-critical", action="store_true",
                   help="leave out galaxies whose DAPall DAPQUAL has the CRITICAL bit (needs --dapall)")
    p.add_argument("--workers", type=processes, default=None, help="worker processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from core.errors import DatasetError
    from core.dataset import IngestOptions
    from core.ingest import ingest, summary
    from core.lines import check_lines
    from core.summaries import SummaryFiles

    try:
        lines = check_lines(args.lines)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    opts = IngestOptions(lines=lines, size=args.size, norm=args.norm, bad_bits=tuple(args.bad_bits))
    if args.drop_critical and not args.dapall:
        raise DatasetError("--drop-critical reads DAPQUAL from the DAPall catalogue: give --dapall DAPALL.fits too")
    catalogues = SummaryFiles(dapall=args.dapall, drpall=args.drpall, drop_critical=args.drop_critical)
    report = ingest(args.inputs, args.out, opts, workers=args.workers, progress=not args.quiet, catalogues=catalogues)
    print(summary(report))
    return 0
