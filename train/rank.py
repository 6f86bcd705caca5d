"""``python -m train rank``: re-rank a run's galaxies by a model of the astronomer's interest (``core.rank``)."""
from __future__ import annotations

from train.args import out_file, random_seed

HELP = "rank galaxies by predicted interest from the labels, and say which to label next"
EXAMPLES = """\
  python -m train rank --run runs/demo --out ranked.csv
  python -m train rank --run runs/demo --labels labels.csv --out ranked.csv
  python -m train rank --run runs/demo --model forest --out ranked.csv

A Gaussian-process model of the labels (interest 0 to 5; `python -m train labels`, or the
app) over each galaxy's latent vector, anomaly score, line ratios and central Halpha
equivalent width predicts every galaxy's relevance (0 to 1) and its uncertainty; the
acquisition (relevance + uncertainty) says which galaxies to label next (higher: sooner).
Without --labels the run's own labels (RUN/labels.sqlite) are used; with no labels at all,
relevance is the anomaly score's percentile / 100. Writes the CSV (galaxy_id, relevance,
uncertainty, acquisition; most relevant first) and RUN/ranking.parquet (catalogue order),
which the app reads.
"""


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run directory after `python -m train embed`")
    p.add_argument("--labels", metavar="FILE.csv", help="labels CSV (galaxy_id, interest[, note]) instead of the run's own")
    p.add_argument("--out", required=True, type=out_file, metavar="FILE.csv", help="CSV file to write")
    p.add_argument("--model", choices=("gp", "forest"), default="gp",
                   help="gp: Gaussian-process regression (default); forest: a random-forest ensemble")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of the PCA and of the model (default 0)")


def run(args) -> int:
    import time
    from dataclasses import asdict

    from core.labels import LabelStore, read_labels_csv
    from core.rank import RankConfig, rank, write_ranking
    from core.run import open_run
    from core.tables import write_csv

    t0 = time.perf_counter()
    run = open_run(args.run)
    if args.labels:
        labels = read_labels_csv(args.labels, run.catalogue["galaxy_id"].astype(str))
    else:
        labels = LabelStore(args.run).latest()
    cfg = RankConfig(model=args.model)
    ranking = rank(run, labels, seed=args.seed, cfg=cfg)
    write_ranking(args.run, ranking, n_labels=len(labels), labels=args.labels or "labels.sqlite", seed=args.seed,
                  config=asdict(cfg))
    write_csv(args.out, ranking.sort_values("relevance", ascending=False, kind="stable"))
    print(f"ranked {len(ranking)} galaxies from {len(labels)} label(s) in {time.perf_counter() - t0:.1f} s "
          f"into {args.out} and {run.path / 'ranking.parquet'}")
    return 0
