"""``python -m train evaluate``: detection quality of a run against the truth of a synthetic survey."""
from __future__ import annotations

from train.args import random_seed

HELP = "measure how well the anomaly score finds the true anomalies (synthetic surveys), next to two baselines"
EXAMPLES = """\
  python -m train evaluate --run runs/demo
  python -m train evaluate --run runs/demo --seed 1

Needs the truth columns (truth_anomaly, truth_class) that ingest copies from a synthetic
survey's truth.csv. Tasks: true anomalies vs everything else, each anomaly kind vs the
non-anomalies, Seyfert + LINER vs star-forming. Methods: the run's anomaly score, PCA
reconstruction error on the same maps (as many components as the model's latent, fitted on
the training split), and an isolation forest on the catalogue's log line ratios.
Prints ROC-AUC / average precision and writes RUN/evaluation.json and manifest "evaluation".
"""


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run directory after `python -m train embed`")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of the PCA and isolation-forest baselines (default 0)")


def run(args) -> int:
    from core.evaluate import evaluate_run, report

    result = evaluate_run(args.run, seed=args.seed)
    if result is None:
        print(f"{args.run}: the catalogue has no truth columns (truth_anomaly, truth_class), so there is nothing "
              "to evaluate; evaluation needs a synthetic survey (`python -m train synth`) ingested with its truth.csv")
        return 0
    print(report(result))
    return 0
