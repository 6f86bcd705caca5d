"""How two groups of galaxies differ: the numbers of the compare view (``views/compare.py``).

``compare_rows`` takes two sets of catalogue rows (two saved selections, or one and the rest)
and returns a :class:`Comparison`: a few summary figures, the BPT (and WHAN) class fractions,
the distributions of the anomaly score and the line ratios on shared bins, the mean share of
the error per line, and each group's mean residual map per line, every galaxy's residual
scaled to its own peak first (as the inspector draws it), so bright galaxies do not dominate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.bpt import CLASSES, RATIOS
from dashboard.data import AppData

#: Galaxies averaged into a group's residual maps at most (drawn at random beyond): each costs a read of its maps.
MAX_MAP_GALAXIES = 200
#: Bins of each distribution, spread over the 1st to 99th percentile of both groups together.
BINS = 30
#: Class columns whose fractions are compared, with their classes in display order.
CLASS_COLUMNS = {"bpt_class": CLASSES, "whan_class": ("SF", "sAGN", "wAGN", "retired", "passive")}


@dataclass
class Comparison:
    """Two groups of galaxies side by side; every table has one column per group, named ``names``."""

    names: tuple[str, str]  # the groups' names as shown
    rows: tuple[np.ndarray, np.ndarray]  # catalogue rows of each group
    summary: pd.DataFrame  # index: figure (galaxies, flagged share, median score ...)
    classes: dict  # class column (bpt_class, whan_class) -> DataFrame, index: class, the share of each group
    distributions: dict  # quantity -> (edges (B+1,), shares (2, B)): log10 anomaly score and the line ratios
    error_shares: pd.DataFrame  # index: line, the mean err_<line> (share of the score) of each group
    residuals: np.ndarray  # (2, L, S, S) float32, mean residual / peak per line, NaN where never observed
    residual_n: tuple[int, int]  # galaxies averaged into each group's residual maps


def _shares(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Shared bins over both groups' finite values, and each group's share of its finite values per bin."""
    finite = [v[np.isfinite(v)] for v in values]
    both = np.concatenate(finite)
    lo, hi = (np.percentile(both, [1, 99]) if both.size else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    shares = np.stack([np.histogram(np.clip(v, lo, hi), edges)[0] / max(len(v), 1) for v in finite])
    return edges, shares  # values beyond the 1st-99th percentiles fall into the end bins


def mean_residuals(data: AppData, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    """(L, S, S) mean over ``rows`` (at most MAX_MAP_GALAXIES, drawn at random) of each galaxy's residual
    scaled to its own peak (``AppData.galaxy_maps``); NaN where every galaxy is masked. Returns it and the count."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > MAX_MAP_GALAXIES:
        rows = np.random.default_rng(seed).choice(rows, MAX_MAP_GALAXIES, replace=False)
    s = data.run.dataset.size
    total = np.zeros((len(data.lines), s, s))
    count = np.zeros((len(data.lines), s, s))
    for row in np.sort(rows):  # in file order: the maps are memory-mapped
        residual = data.galaxy_maps(int(row))["residual"]
        seen = np.isfinite(residual)
        total[seen] += residual[seen]
        count += seen
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(np.float32), len(rows)


def compare_rows(data: AppData, rows_a, rows_b, names: tuple[str, str], interest: np.ndarray | None = None
                 ) -> Comparison:
    """Compare the galaxies in catalogue rows ``rows_a`` with those in ``rows_b`` (see the module's doc).
    ``interest`` (N,) adds the labelled count and mean interest of each group (NaN = unlabelled)."""
    if names[0] == names[1]:
        raise ValueError(f"choose two different groups to compare, not {names[0]!r} twice")
    groups = [np.unique(np.asarray(r, dtype=np.int64)) for r in (rows_a, rows_b)]
    for name, rows in zip(names, groups):
        if not len(rows):
            raise ValueError(f"{name!r} holds no galaxy of this run: nothing to compare")
    cat = data.catalogue
    parts = [cat.iloc[rows] for rows in groups]
    columns = list(names)

    summary = {"galaxies": [len(p) for p in parts],
               "flagged share": [float(p["flagged"].mean()) for p in parts],
               "median anomaly score": [float(p["anomaly_score"].median()) for p in parts],
               "median percentile": [float(p["anomaly_pct"].median()) for p in parts]}
    if interest is not None:
        labelled = [interest[rows][~np.isnan(interest[rows])] for rows in groups]
        summary["labelled"] = [len(v) for v in labelled]
        summary["mean interest"] = [float(v.mean()) if len(v) else np.nan for v in labelled]

    classes = {}
    for col, order in CLASS_COLUMNS.items():
        if col in cat.columns:
            shares = [p[col].astype(str).value_counts(normalize=True) for p in parts]
            index = [c for c in order if any(c in s.index for s in shares)] + sorted(
                {c for s in shares for c in s.index} - set(order))
            classes[col] = pd.DataFrame({n: s.reindex(index, fill_value=0.0).to_numpy() for n, s in zip(columns, shares)},
                                        index=index)

    distributions = {}
    score = data.score
    with np.errstate(divide="ignore", invalid="ignore"):
        log_score = np.where(score > 0, np.log10(score), np.nan)
    distributions["log10 anomaly score"] = _shares([log_score[rows] for rows in groups])
    for ratio in RATIOS:
        if ratio in cat.columns:
            values = cat[ratio].to_numpy(dtype=np.float64, na_value=np.nan)
            distributions[ratio] = _shares([values[rows] for rows in groups])

    lines = [ln for ln in data.lines if f"err_{ln}" in cat.columns]
    error_shares = pd.DataFrame({n: [float(p[f"err_{ln}"].mean()) for ln in lines] for n, p in zip(columns, parts)},
                                index=lines)
    maps = [mean_residuals(data, rows) for rows in groups]
    return Comparison(names=tuple(names), rows=tuple(groups),
                      summary=pd.DataFrame(summary, index=columns).T, classes=classes, distributions=distributions,
                      error_shares=error_shares, residuals=np.stack([m for m, _ in maps]),
                      residual_n=(maps[0][1], maps[1][1]))
