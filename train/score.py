"""``python -m train score``: score new MAPS files with a trained run, against the run's population."""
from __future__ import annotations

from train.args import device_name, out_file, positive_int

HELP = "score new MaNGA MAPS files with a trained run (same preprocessing, percentiles against the run)"
EXAMPLES = """\
  python -m train score --run runs/demo new/manga-*-MAPS-*.fits.gz --out scores.csv
  python -m train score --run runs/dr17 dr17/8485 --out 8485.csv --device cuda

Each file is read with the run's own preprocessing (its lines, grid size, normalisation and
mask bits), reconstructed by its model, checked by its consistency network, fitted as a mix of two
spectra, compared with the survey's line ratios and shapes, tested on its native spaxels against the
sharpness the PSF allows, and scored exactly as `train embed` scores the run: anomaly_score in the
units of the run (the largest of the detectors' scores, each over its median and spread among the
run's galaxies), with score_recon, score_consistency, score_mixing (and mixing_group), score_census
(and census_feature) and score_sharp (and sharp_line, sharp_dx, sharp_dy) beside it.
anomaly_pct is the percentage of the run's galaxies scoring at or below the file, and
flagged uses the run's threshold. Files that cannot be used are listed on stderr and skipped.
"""


def add_arguments(p) -> None:
    from core.scoring import BATCH_SIZE

    p.add_argument("--run", required=True, metavar="RUN", help="run directory after `python -m train embed`")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="MAPS files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, type=out_file, metavar="FILE.csv", help="CSV file to write, one row per scored galaxy")
    p.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help=f"galaxies per forward pass (default {BATCH_SIZE})")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    from core.score import score_files
    from core.tables import write_csv

    table, skipped = score_files(args.run, args.inputs, batch_size=args.batch_size, device=args.device,
                                 progress=not args.quiet)
    write_csv(args.out, table)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"scored {len(table)} galaxies ({int(table['flagged'].sum())} flagged) into {args.out}"
          + (f"; {len(skipped)} file(s) skipped, listed above" if skipped else ""))
    return 0
