"""Discovery benchmark: how fast a simulated astronomer finds what they look for by labelling.

On a synthetic survey (a run whose catalogue has the truth columns), an astronomer labels
``--batch`` galaxies at a time, always the unlabelled ones of highest acquisition
(``core.rank.rank``), with interest 5 for a target and 0 for anything else. Two tasks:

* ``anomaly``: the true anomalies (``truth_anomaly``);
* ``agn``: the AGN hunt, ``truth_class`` Seyfert or LINER.

After 0, 10, 20, 50 and 100 labels it prints how many targets the relevance ranking holds in
its top 50 and top 200 (a labelled galaxy counts at its label), the average precision and
the ROC-AUC of the relevance over every galaxy; beside them the *ceiling*: the same interest
model trained on every galaxy's label, predicted with 5-fold cross-validation.

    python benchmarks/discovery.py --run runs/demo
    python benchmarks/discovery.py --run runs/demo --model forest --out /tmp/discovery-forest.json
    python benchmarks/discovery.py --run runs/demo --held-out --out /tmp/discovery-held-out.json
Writes benchmarks/results/discovery.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from core.rank import RankConfig, features, rank
from core.run import open_run

#: Labels after which the metrics are reported.
CHECKPOINTS = (0, 10, 20, 50, 100)
#: Interest of a target and of anything else.
TARGET, OTHER = 5, 0
TOP = (50, 200)


def targets(catalogue: pd.DataFrame, held_out: bool = False) -> dict[str, np.ndarray]:
    """The tasks: name -> (N,) bool, the galaxies the astronomer is looking for.

    ``held_out``: also one hunt per truth class and per artefact flag (``truth_has_*``), hunts
    that no default of ``RankConfig`` was chosen on: whether the loop works for what it was
    not tuned to.
    """
    tasks = {}
    if "truth_anomaly" in catalogue:
        tasks["anomaly"] = catalogue["truth_anomaly"].fillna(False).astype(bool).to_numpy()
    if "truth_class" in catalogue:
        tasks["agn"] = catalogue["truth_class"].isin(["seyfert", "liner"]).to_numpy()
    if held_out:
        for name in sorted(catalogue.get("truth_class", pd.Series(dtype=str)).dropna().unique()):
            tasks[name] = (catalogue["truth_class"] == name).to_numpy()
        for col in sorted(c for c in catalogue.columns if c.startswith("truth_has_")):
            tasks[col.removeprefix("truth_has_")] = catalogue[col].fillna(False).astype(bool).to_numpy()
    return tasks


def metrics(relevance: np.ndarray, truth: np.ndarray) -> dict:
    order = np.argsort(-relevance, kind="stable")
    out = {f"top{k}": int(truth[order[:k]].sum()) for k in TOP}
    out["average_precision"] = round(float(average_precision_score(truth, relevance)), 4)
    out["roc_auc"] = round(float(roc_auc_score(truth, relevance)), 4)
    return out


def simulate(run, x, truth, cfg: RankConfig, batch: int, seed: int) -> tuple[list[dict], list[float]]:
    """The astronomer's session: metrics at each checkpoint, and the seconds of each re-rank."""
    ids = run.catalogue["galaxy_id"].astype(str).to_numpy()
    labelled: list[int] = []
    rows, seconds = [], []
    while True:
        labels = pd.DataFrame({"galaxy_id": ids[labelled], "interest": np.where(truth[labelled], TARGET, OTHER)})
        t0 = time.perf_counter()
        ranking = rank(run, labels, seed=seed, cfg=cfg, x=x)
        seconds.append(time.perf_counter() - t0)
        if len(labelled) in CHECKPOINTS:
            rows.append({"labels": len(labelled), "targets_labelled": int(truth[labelled].sum()),
                         **metrics(ranking["relevance"].to_numpy(), truth)})
        if len(labelled) >= CHECKPOINTS[-1]:
            return rows, seconds
        acquisition = ranking["acquisition"].to_numpy().copy()
        acquisition[labelled] = -np.inf
        labelled += list(np.argsort(-acquisition, kind="stable")[:batch])


def ceiling(run, x, truth, cfg: RankConfig, seed: int) -> dict:
    """The interest model trained on every galaxy's label, out-of-fold predictions (5-fold CV)."""
    ids = run.catalogue["galaxy_id"].astype(str).to_numpy()
    relevance = np.zeros(len(ids))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in folds.split(x.x, truth):
        labels = pd.DataFrame({"galaxy_id": ids[train], "interest": np.where(truth[train], TARGET, OTHER)})
        relevance[test] = rank(run, labels, seed=seed, cfg=cfg, x=x)["relevance"].to_numpy()[test]
    return metrics(relevance, truth)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a run of a synthetic survey (default runs/demo)")
    parser.add_argument("--model", choices=("gp", "forest"), default=RankConfig.model, help="interest model")
    parser.add_argument("--batch", type=int, default=10, help="galaxies labelled between re-ranks (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", action="store_true",
                        help="also hunt each truth class and artefact flag (hunts the defaults were not chosen on)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "discovery.json"))
    args = parser.parse_args(argv)

    run = open_run(args.run)
    cfg = replace(RankConfig(), model=args.model)
    t0 = time.perf_counter()
    x = features(run, cfg, args.seed)
    feature_seconds = time.perf_counter() - t0
    result = {"date": date.today().isoformat(), "run": str(args.run), "n_galaxies": len(run.catalogue),
              "machine": platform.platform(), "config": asdict(cfg), "batch": args.batch, "seed": args.seed,
              "n_features": int(x.x.shape[1]),
              "feature_groups": {k: len(v) for k, v in x.groups.items()}, "feature_seconds": round(feature_seconds, 3),
              "has_ew": "ew_ha_cen" in run.catalogue, "tasks": {}}
    for name, truth in targets(run.catalogue, args.held_out).items():
        rows, seconds = simulate(run, x, truth, cfg, args.batch, args.seed)
        ceil = ceiling(run, x, truth, cfg, args.seed)
        result["tasks"][name] = {"n_targets": int(truth.sum()), "steps": rows, "ceiling": ceil,
                                 "rerank_seconds_median": round(float(np.median(seconds)), 3)}
        print(f"\n{name}: {int(truth.sum())} targets among {len(truth)} galaxies ({args.model})")
        print(f"{'labels':>8} {'found':>6} {'top50':>6} {'top200':>7} {'AP':>7} {'ROC-AUC':>8}")
        for r in rows:
            print(f"{r['labels']:>8} {r['targets_labelled']:>6} {r['top50']:>6} {r['top200']:>7} "
                  f"{r['average_precision']:>7.3f} {r['roc_auc']:>8.3f}")
        print(f"{'ceiling':>8} {'':>6} {ceil['top50']:>6} {ceil['top200']:>7} {ceil['average_precision']:>7.3f} "
              f"{ceil['roc_auc']:>8.3f}   (5-fold CV on every label)")
    write_result(args.out, result)
    return 0


def write_result(out, result: dict) -> None:
    """The benchmark's JSON, where --out says."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
