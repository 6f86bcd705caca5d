"""Re-ranking time (``core.rank.rank``): features, training and prediction for N galaxies.

A catalogue of N galaxies with the columns the ranking reads (anomaly score, line ratios,
BPT fractions, Halpha EW, the 19 lines' error shares, the residual's shape) and
128-dimensional latents, random but shaped like a run's; M of them labelled. rank() is timed end to end (PCA of the latents, training on the labels,
prediction in chunks), with BLAS limited to --threads cores (2 = the target machine).

    python benchmarks/rank_speed.py                         # N = 10,000 and 100,000; M = 100 and 1,000
    python benchmarks/rank_speed.py --n 10000 1000000 --labels 100
Writes benchmarks/results/rank_speed.json (or --out).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.discovery import write_result  # noqa: E402
from core.bpt import FRACTIONS, RATIOS  # noqa: E402
from core.lines import DEFAULT_LINES  # noqa: E402
from core.rank import RankConfig, rank  # noqa: E402
from core.scoring import SHAPE_COLUMNS  # noqa: E402


def fake_run(n: int, latent_dim: int = 128, seed: int = 0) -> SimpleNamespace:
    """What rank() reads of a run: the catalogue's feature columns and the latents."""
    rng = np.random.default_rng(seed)
    score = rng.lognormal(1.0, 0.6, n)
    cat = pd.DataFrame({"galaxy_id": np.char.add("g", np.arange(n).astype(str)), "anomaly_score": score,
                        "anomaly_pct": pd.Series(score).rank(pct=True).to_numpy() * 100,
                        "ew_ha_cen": rng.lognormal(2.0, 1.0, n)})
    for col in (*RATIOS, *FRACTIONS):
        cat[col] = rng.normal(0, 0.4, n)
    shares = rng.dirichlet(np.full(len(DEFAULT_LINES), 0.8), size=n)  # (N, 19) each line's share of the score
    for j, line in enumerate(DEFAULT_LINES):
        cat[f"err_{line}"] = shares[:, j]
    for col in SHAPE_COLUMNS:
        cat[col] = rng.uniform(0, 1, n)
    return SimpleNamespace(catalogue=cat, latents=rng.normal(0, 1, (n, latent_dim)).astype(np.float32))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="galaxies")
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 1000], help="labelled galaxies")
    parser.add_argument("--model", choices=("gp", "forest"), default=RankConfig.model)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timings per case; the median is kept")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rank_speed.json"))
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    cfg = RankConfig(model=args.model)
    rows = []
    print(f"{'N':>10} {'labels':>7} {'seconds':>8}   ({args.model}, {args.threads} BLAS threads, median of {args.repeat})")
    with threadpool_limits(args.threads):
        for n in args.n:
            run = fake_run(n)
            rng = np.random.default_rng(1)
            for m in args.labels:
                picked = rng.choice(n, size=min(m, n), replace=False)
                labels = pd.DataFrame({"galaxy_id": run.catalogue["galaxy_id"].to_numpy()[picked],
                                       "interest": rng.integers(0, 6, len(picked))})
                seconds = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    rank(run, labels, cfg=cfg)
                    seconds.append(time.perf_counter() - t0)
                rows.append({"n": n, "labels": int(len(picked)), "seconds": round(float(np.median(seconds)), 3)})
                print(f"{n:>10,} {len(picked):>7,} {rows[-1]['seconds']:>8.2f}", flush=True)
    write_result(args.out, {"date": date.today().isoformat(), "machine": platform.platform(),
                            "threads": args.threads, "config": asdict(cfg), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
