"""``python -m train embed``: score every galaxy of a trained run and cache what the dashboard reads."""
from __future__ import annotations

from train.args import device_name, percentile, positive_int, random_seed

HELP = "reconstruct and score every galaxy of a run; write latents, UMAP and nearest neighbours"
EXAMPLES = """\
  python -m train embed --run runs/demo
  python -m train embed --run runs/dr17 --device cuda --batch-size 256
  python -m train embed --run runs/demo --neighbours 50 --flag-pct 95
  python -m train embed --run runs/dr17 --mixing-rank 3      # galaxies that need a third spectrum

Writes RUN/catalogue.parquet, latents.npy, recon.npy and neighbours.npy (atomically), trains
the consistency network (consistency.pt), fits the survey's line ratios and shapes (census.json),
and records the score definition, its median and 90th percentile, each detector's calibration,
the UMAP parameters and the files' sha256 in RUN/manifest.json. The anomaly score is the largest
of its five detectors' robust z-scores: the autoencoder's reconstruction, each line predicted
from the others, each galaxy's mix of a few spectra, the galaxy's line ratios and shapes
against the survey's, and structure sharper than the PSF (measured by ingest; README.md,
"The anomaly score"; core/scoring.py).
"""


def add_arguments(p) -> None:
    from core.embed import K_NEIGHBOURS
    from core.mixing import RANK as MIXING_RANK
    from core.scoring import BATCH_SIZE, FLAG_PCT

    p.add_argument("--run", required=True, metavar="RUN", help="run directory written by `python -m train fit`")
    p.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help=f"galaxies per forward pass (default {BATCH_SIZE})")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    p.add_argument("--neighbours", type=positive_int, default=K_NEIGHBOURS, metavar="K",
                   help=f"nearest neighbours kept per galaxy in latent space (default {K_NEIGHBOURS})")
    p.add_argument("--flag-pct", type=percentile, default=FLAG_PCT, metavar="PCT",
                   help=f"flag galaxies at or above this percentile of the score, between 0 and 100 "
                        f"(default {FLAG_PCT:g})")
    p.add_argument("--seed", type=random_seed, default=0,
                   help="seed of the UMAP, of the consistency network's training and of the census's "
                        "choice of galaxies (default 0)")
    p.add_argument("--mixing-rank", type=positive_int, default=MIXING_RANK, metavar="K",
                   help=f"spectra in each galaxy's mix for score_mixing (default {MIXING_RANK}: the smallest that fits "
                        "the demo's galaxies to their noise; benchmarks/real_fit.py measures a survey's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from core.embed import embed_run

    summary = embed_run(args.run, batch_size=args.batch_size, device=args.device, k=args.neighbours,
                        flag_pct=args.flag_pct, seed=args.seed, mixing_rank=args.mixing_rank,
                        progress=not args.quiet)
    print(summary)
    return 0
