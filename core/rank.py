"""Active-learning re-ranking: a model of the astronomer's interest, and what to label next.

The astronomer scores galaxies 0..5 (``core.labels``). A regression model over each
galaxy's features (:func:`features`: the run's latent vector reduced by PCA, the anomaly
score, the BPT line ratios, the central Halpha equivalent width, which lines and where on
the galaxy the score comes from; each standardised) learns
``interest / 5`` from the labelled galaxies and predicts every galaxy's *relevance* and its
*uncertainty*; an acquisition function (the upper confidence bound, mean + std, or the
expected improvement over the best label so far) orders what to label next, as in
Astronomaly and Protege (Lochner & Bassett 2021, Lochner & Rudnick 2025). With no labels,
relevance is the anomaly score's percentile.

Cost: the model trains on at most ``RankConfig.max_train`` labelled galaxies, so a
re-rank is a fixed training cost plus a prediction linear in the number of galaxies
(made in chunks of ``RankConfig.chunk``, so memory stays flat). docs/ARCHITECTURE.md
describes the run folder and ``ranking.parquet``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from core.bpt import FRACTIONS, RATIOS
from core.errors import RunError
from core.io import atomic_path
from core.scoring import SHAPE_COLUMNS

#: The ranking's file in a run folder.
RANKING_FILE = "ranking.parquet"
#: Its columns, in order.
RANK_COLUMNS = ("galaxy_id", "relevance", "uncertainty", "acquisition")
#: Catalogue columns used as features besides the latents, when the catalogue has them: the
#: score, the central line ratios, the share of spaxels in each BPT class (an off-nuclear
#: or extended AGN shows there, not in the centre), the central Halpha equivalent width and
#: where on the galaxy the score comes from (``core.scoring.SHAPE_COLUMNS``). Besides them,
#: the log of each line's share of the score (``err_<line>``): which lines make it odd.
CATALOGUE_FEATURES = ("anomaly_pct", *RATIOS, *FRACTIONS, "log_ew_ha_cen", *SHAPE_COLUMNS)
#: Error shares below this count as this in the log: a line with no share at all is not
#: infinitely unlike one with 1e-4.
SHARE_FLOOR = 1e-4
#: Acquisition of a galaxy already labelled: below every unlabelled one, so it is never proposed again.
LABELLED_ACQUISITION = -1.0
#: The key of the ranking's metadata in the parquet schema.
_META_KEY = b"blueberry"


@dataclass
class RankConfig:
    """How the interest model is built (defaults: those measured by benchmarks/discovery.py)."""

    model: str = "gp"  # "gp": Gaussian-process regression (Protege); "forest": a random-forest ensemble
    latent_components: int = 16  # PCA components of the latent vectors kept as features
    pca_sample: int = 50_000  # galaxies the PCA is fitted on at most (then applied to all, in chunks)
    max_train: int = 500  # labelled galaxies the model trains on at most (beyond: the interesting ones first)
    max_optimise: int = 200  # of which the GP's kernel is fitted on at most this many (its cost grows as M^3)
    xi: float = 0.01  # expected improvement's margin: how much better than the best label counts
    prior: str = "score"  # the model's prior mean: "score" (the anomaly percentile, scaled to the labels) or "zero"
    prior_sharpness: float = 20.0  # the score prior is (anomaly_pct / 100) ** this: the top few per cent stand out
    lengths: str = "group"  # RBF lengths learned from the labels: one per feature "group", "one" for all, or per "feature"
    acquisition: str = "ucb"  # "ucb" mean + std (best on benchmarks/discovery.py), "ei" expected improvement, "mean"
    prior_std: float = 0.3  # uncertainty of a relevance with no labels (the anomaly percentile's)
    chunk: int = 100_000  # galaxies predicted at a time
    batch: int = 10  # galaxies the astronomer labels between re-ranks: the top of the acquisition order is chosen as a set
    explore: float = 0.3  # share of that batch spent covering the feature space while few targets are known
    explore_until: int = 3  # labels of interest > 0 after which the batch stops exploring
    diversity: float = 0.5  # radius over which a pick damps its neighbours' acquisition, in kernel lengths (0: none)
    candidates: int = 20  # the batch's exploiting picks are chosen among this many times batch best-acquisition galaxies


# ---------------------------------------------------------------------------------------
# Features


def _standardised(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit variance over their finite values; a missing value becomes the mean (0)."""
    x = np.where(np.isfinite(x), x, np.nan)
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    z = (x - mean) / np.where(std > 0, std, 1.0)
    return np.nan_to_num(z, nan=0.0)


def latent_components(latents: np.ndarray, cfg: RankConfig, seed: int) -> np.ndarray:
    """(N, k) the latents' first principal components, fitted on a sample and applied in chunks."""
    from sklearn.decomposition import PCA

    n, d = latents.shape
    k = min(cfg.latent_components, d, n)
    if k == 0:
        return np.zeros((n, 0))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, cfg.pca_sample), replace=False))
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(np.asarray(latents[sample], dtype=np.float64))
    return np.concatenate([pca.transform(np.asarray(latents[lo:lo + cfg.chunk], dtype=np.float64))
                           for lo in range(0, n, cfg.chunk)])


def catalogue_features(catalogue: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(N, F) the catalogue's features (:data:`CATALOGUE_FEATURES`, log anomaly score, log error shares) with
    missing-value flags."""
    cols, names = [], []
    if "anomaly_score" in catalogue:
        cols.append(np.log10(np.clip(catalogue["anomaly_score"].to_numpy(np.float64), 1e-12, None)))
        names.append("log_anomaly_score")
    for name in CATALOGUE_FEATURES:
        if name == "log_ew_ha_cen" and "ew_ha_cen" in catalogue:
            ew = catalogue["ew_ha_cen"].to_numpy(np.float64)
            cols.append(np.log10(np.clip(ew, 1e-2, None)))  # EW <= 0 (absorption): as low as it gets
            names.append(name)
        elif name in catalogue:
            cols.append(catalogue[name].to_numpy(np.float64))
            names.append(name)
    for name in catalogue.columns:
        if name.startswith("err_"):
            cols.append(np.log10(np.clip(catalogue[name].to_numpy(np.float64), SHARE_FLOOR, None)))
            names.append(f"log_{name}")
    x = np.stack(cols, axis=1) if cols else np.zeros((len(catalogue), 0))
    missing = ~np.isfinite(x)
    flagged = missing.any(axis=0)
    names += [f"{n}_missing" for n, f in zip(names, flagged) if f]
    # Whether a line is undetected is itself a feature (a retired galaxy has no [OIII]).
    return np.hstack([x, missing[:, flagged].astype(np.float64)]), names


@dataclass
class Features:
    """Every galaxy's features, in groups that the interest model weighs separately."""

    x: np.ndarray  # (N, F) standardised per column, then each group scaled by sqrt(F / (groups x its columns))
    groups: dict  # group name -> the columns of x it holds (tuple of int)


def features(run, cfg: RankConfig | None = None, seed: int = 0) -> Features:
    """The features of every galaxy of ``run`` (``core.run.open_run``), in catalogue order.

    Four groups, each standardised per column and then scaled so that it weighs as much as
    any other in a distance, however many columns it has: the latents, the catalogue's
    physics (:data:`CATALOGUE_FEATURES` but the residual's shape), which lines the score
    comes from (``log_err_*``) and where on the galaxy (``core.scoring.SHAPE_COLUMNS``).
    Without the balance the 19 error shares outvote the few line ratios and a hunt by line
    ratios (LINERs) finds nothing in its first 50 labels (benchmarks/README.md).
    """
    cfg = cfg or RankConfig()
    cat_x, names = catalogue_features(run.catalogue)
    kinds = ["shares" if n.startswith("log_err_") else "shape" if n.removesuffix("_missing") in SHAPE_COLUMNS
             else "physics" for n in names]
    parts = {"latents": latent_components(run.latents, cfg, seed),
             **{k: cat_x[:, [i for i, kind in enumerate(kinds) if kind == k]] for k in ("physics", "shares", "shape")}}
    parts = {k: _standardised(v) for k, v in parts.items() if v.shape[1]}
    total = sum(v.shape[1] for v in parts.values())
    x = np.hstack([v * np.sqrt(total / len(parts) / v.shape[1]) for v in parts.values()]) if parts else np.zeros(
        (len(run.catalogue), 0))
    edges = np.cumsum([0, *(v.shape[1] for v in parts.values())])
    return Features(x, {k: tuple(range(a, b)) for k, a, b in zip(parts, edges[:-1], edges[1:])})


# ---------------------------------------------------------------------------------------
# The interest model


def _label_vector(catalogue: pd.DataFrame, labels: pd.DataFrame | None) -> np.ndarray:
    """(N,) interest / 5 of each galaxy, NaN where unlabelled; RunError for ids not in the run."""
    y = np.full(len(catalogue), np.nan)
    if labels is None or len(labels) == 0:
        return y
    index = pd.Index(catalogue["galaxy_id"].astype(str))
    rows = index.get_indexer(labels["galaxy_id"].astype(str))
    if (rows < 0).any():
        unknown = labels["galaxy_id"][rows < 0].astype(str).head(5).tolist()
        raise RunError(f"{(rows < 0).sum()} labelled galaxies are not in the run ({', '.join(unknown)} ...)")
    y[rows] = labels["interest"].to_numpy(np.float64) / 5.0
    return y


def _training_rows(y: np.ndarray, cfg: RankConfig, seed: int) -> np.ndarray:
    """The labelled rows the model trains on: all of them up to ``cfg.max_train``, else the
    interesting ones (interest > 0, at most half) and a random draw of the others."""
    labelled = np.flatnonzero(np.isfinite(y))
    if len(labelled) <= cfg.max_train:
        return labelled
    rng = np.random.default_rng(seed)
    keen = labelled[y[labelled] > 0]
    keen = rng.permutation(keen)[:cfg.max_train // 2]
    rest = rng.permutation(np.setdiff1d(labelled, keen))[:cfg.max_train - len(keen)]
    return np.sort(np.concatenate([keen, rest]))


def _prior_mean(catalogue: pd.DataFrame, y: np.ndarray, cfg: RankConfig) -> np.ndarray:
    """(N,) what the model expects before it sees a galaxy's neighbours' labels.

    "score": the sharpened anomaly percentile times how well it predicts the labels so far
    (least squares through the origin, in [0, 1]): for an anomaly hunt the score stays a
    guide, for a hunt it misleads (an AGN hunt) it fades as the labels contradict it.
    """
    if cfg.prior == "zero" or "anomaly_pct" not in catalogue:
        return np.zeros(len(catalogue))
    p = (catalogue["anomaly_pct"].to_numpy(np.float64) / 100.0) ** cfg.prior_sharpness
    p = np.nan_to_num(p)
    labelled = np.isfinite(y)
    denom = float(np.sum(p[labelled] ** 2))
    weight = float(np.clip(np.sum(y[labelled] * p[labelled]) / denom, 0.0, 1.0)) if denom > 0 else 0.0
    return weight * p


def _on_columns(kernel, columns):
    """``kernel`` applied to ``columns`` of the features only (a scikit-learn kernel)."""
    from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

    class OnColumns(Kernel):
        def __init__(self, kernel, columns):
            self.kernel, self.columns = kernel, columns

        @property
        def hyperparameters(self):
            return [Hyperparameter(f"kernel__{h.name}", h.value_type, h.bounds, h.n_elements)
                    for h in self.kernel.hyperparameters]

        @property
        def theta(self):
            return self.kernel.theta

        @theta.setter
        def theta(self, theta):
            self.kernel.theta = theta

        @property
        def bounds(self):
            return self.kernel.bounds

        def __call__(self, X, Y=None, eval_gradient=False):
            cols = list(self.columns)
            return self.kernel(X[:, cols], None if Y is None else Y[:, cols], eval_gradient=eval_gradient)

        def diag(self, X):
            return self.kernel.diag(X[:, list(self.columns)])

        def is_stationary(self):
            return True

    return OnColumns(kernel, tuple(columns))


def _fit(x: np.ndarray, y: np.ndarray, cfg: RankConfig, seed: int, groups=()):
    """The interest model trained on features ``x`` (M, F) and targets ``y`` (M,) in [0, 1];
    ``groups``: the columns of each feature group (:class:`Features`)."""
    if cfg.model == "forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=200, min_samples_leaf=1, max_features=0.5, n_jobs=2,
                                     random_state=seed).fit(x, y)
    if cfg.model != "gp":
        raise ValueError(f"unknown interest model {cfg.model!r}; give 'gp' or 'forest'")
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    d = x.shape[1]
    if cfg.lengths == "group" and len(groups) > 1:
        # One length per group: the labels say which kind of feature matters to this hunt.
        # Each group's total variance is d / len(groups), so that is its initial length squared.
        similarity = _on_columns(RBF(np.sqrt(d / len(groups)), (1e-1, 1e3)), groups[0])
        for cols in groups[1:]:
            similarity = similarity * _on_columns(RBF(np.sqrt(d / len(groups)), (1e-1, 1e3)), cols)
    elif cfg.lengths in ("one", "group", "feature"):
        similarity = RBF(np.full(d, np.sqrt(d)) if cfg.lengths == "feature" else np.sqrt(d), (1e-1, 1e3))
    else:
        raise ValueError(f"unknown lengths {cfg.lengths!r}; give 'group', 'one' or 'feature'")
    kernel = ConstantKernel(0.25, (1e-2, 10.0)) * similarity + WhiteKernel(1e-2, (1e-4, 1e-1))
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    # The prior mean is 0, "not interesting": far from every label, relevance falls back to it,
    # and labels that are all 5 (the first of a hunt) still rank their look-alikes first.
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed)
    sub = np.random.default_rng(seed).permutation(len(x))[:cfg.max_optimise]
    with warnings.catch_warnings():  # a hyperparameter at its bound is an answer here, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x[sub], y[sub])
    fitted = gp.kernel_
    if cfg.lengths == "group" and len(groups) > 1:
        # The same kernel as one RBF with a length per column: one exp per pair of galaxies
        # instead of one per group, which is most of the prediction's time at a million.
        lengths = np.empty(d)
        for part in _factors(fitted.k1.k2):
            lengths[list(part.columns)] = part.kernel.length_scale
        fitted = (ConstantKernel(fitted.k1.k1.constant_value) * RBF(lengths)
                  + WhiteKernel(fitted.k2.noise_level))
    elif len(sub) == len(x):
        return gp
    # The kernel fitted on the subset, the posterior on every training label.
    return GaussianProcessRegressor(kernel=fitted, optimizer=None, normalize_y=False).fit(x, y)


def _factors(kernel) -> list:
    """The factors of a product of kernels (``a * b * c``), in order."""
    from sklearn.gaussian_process.kernels import Product

    return [*_factors(kernel.k1), *_factors(kernel.k2)] if isinstance(kernel, Product) else [kernel]


def _predict(model, x: np.ndarray, cfg: RankConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the model's prediction, in chunks of ``cfg.chunk``."""
    means, stds = [], []
    for lo in range(0, len(x), cfg.chunk):
        part = x[lo:lo + cfg.chunk]
        if cfg.model == "forest":
            per_tree = np.stack([t.predict(part) for t in model.estimators_])  # (trees, chunk)
            means.append(per_tree.mean(axis=0))
            stds.append(per_tree.std(axis=0))
        else:
            m, s = model.predict(part, return_std=True)
            means.append(m)
            stds.append(s)
    return np.concatenate(means), np.concatenate(stds)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float) -> np.ndarray:
    """E[max(f - best - xi, 0)] for f ~ N(mean, std^2): how much a label here may beat the best so far."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-9)
    z = (mean - best - xi) / std
    return (mean - best - xi) * norm.cdf(z) + std * norm.pdf(z)


def rank(run, labels: pd.DataFrame | None = None, *, seed: int = 0, cfg: RankConfig | None = None,
         x: Features | None = None) -> pd.DataFrame:
    """Relevance, uncertainty and acquisition of every galaxy of ``run``, in catalogue order.

    ``labels``: ``galaxy_id, interest`` (``LabelStore.latest()`` or ``read_labels_csv``).
    ``x``: the :class:`Features` of :func:`features`, precomputed (a benchmark re-ranks many
    times). Without labels, relevance is ``anomaly_pct / 100``, uncertainty ``cfg.prior_std`` and acquisition the
    relevance. A labelled galaxy's relevance is its label / 5, its uncertainty 0 and its
    acquisition :data:`LABELLED_ACQUISITION`.
    """
    cfg = cfg or RankConfig()
    cat = run.catalogue
    y = _label_vector(cat, labels)
    labelled = np.isfinite(y)
    out = pd.DataFrame({"galaxy_id": cat["galaxy_id"].astype(str).to_numpy()})
    if not labelled.any():
        prior = cat["anomaly_pct"].to_numpy(np.float64) / 100.0 if "anomaly_pct" in cat else np.full(len(cat), 0.5)
        out["relevance"] = prior
        out["uncertainty"] = np.full(len(cat), cfg.prior_std)
        out["acquisition"] = prior
        return out
    feats = features(run, cfg, seed) if x is None else x
    x = feats.x
    train = _training_rows(y, cfg, seed)
    prior = _prior_mean(cat, y, cfg)
    model = _fit(x[train], y[train] - prior[train], cfg, seed, list(feats.groups.values()))
    mean, std = _predict(model, x, cfg)
    mean = mean + prior
    if cfg.acquisition == "ei":
        acquisition = expected_improvement(mean, std, best=float(np.nanmax(y)), xi=cfg.xi)
    elif cfg.acquisition == "ucb":
        acquisition = mean + std
    elif cfg.acquisition == "mean":
        acquisition = mean.copy()
    else:
        raise ValueError(f"unknown acquisition {cfg.acquisition!r}; give 'ucb', 'ei' or 'mean'")
    acquisition = np.where(labelled, LABELLED_ACQUISITION, acquisition)
    out["relevance"] = np.where(labelled, y, mean)
    out["uncertainty"] = np.where(labelled, 0.0, std)
    out["acquisition"] = _batch_first(acquisition, x, y, _length_scale(model, x, cfg), cfg, seed)
    return out


# ---------------------------------------------------------------------------------------
# The next batch


def _length_scale(model, x: np.ndarray, cfg: RankConfig) -> float:
    """The distance in feature space over which two galaxies' relevances go together: the
    GP's fitted RBF length (the geometric mean of a per-feature kernel's). Not for lengths
    per group: a group the hunt ignores goes to the bound, so their mean says nothing; then,
    as for the forest, sqrt(F), the features' own scale (two galaxies lie sqrt(2 F) apart on average)."""
    length = getattr(getattr(getattr(getattr(model, "kernel_", None), "k1", None), "k2", None), "length_scale", None)
    if length is None or (cfg.lengths == "group" and np.ndim(length) > 0):
        return float(np.sqrt(max(x.shape[1], 1)))
    return float(np.exp(np.mean(np.log(length))))


def _nearest_sq(x: np.ndarray, others: np.ndarray, chunk: int) -> np.ndarray:
    """(S,) squared distance of each row of ``x`` to the nearest row of ``others``, in blocks of chunk x 64."""
    sq, sq_o = (x ** 2).sum(axis=1), (others ** 2).sum(axis=1)  # (S,), (L,)
    nearest = np.full(len(x), np.inf)
    for lo in range(0, len(x), chunk):
        for r in range(0, len(others), 64):
            d2 = sq[lo:lo + chunk, None] + sq_o[None, r:r + 64] - 2.0 * x[lo:lo + chunk] @ others[r:r + 64].T  # (chunk, <=64)
            nearest[lo:lo + chunk] = np.minimum(nearest[lo:lo + chunk], d2.min(axis=1))
    return nearest


def _batch_first(acquisition: np.ndarray, x: np.ndarray, y: np.ndarray, length: float,
                 cfg: RankConfig, seed: int = 0) -> np.ndarray:
    """``acquisition`` with the next ``cfg.batch`` galaxies chosen as a set raised above all others.

    Taking the top ``batch`` of the acquisition spends a batch on near-twins: one label
    would have told the model about all of them. Instead (local penalisation, Gonzalez et al.
    2016) each exploiting pick damps the acquisition of its neighbours by
    ``1 - exp(-d^2 / 2 length^2)`` before the next pick. While fewer than
    ``cfg.explore_until`` interesting labels are known, ``cfg.explore`` of the batch instead
    goes to the unlabelled galaxy farthest from every labelled or picked one (farthest-point
    coverage): the first labels of a hunt the anomaly score misleads then still reach every
    region of the feature space. The batch's acquisition is the best other value plus its
    place in the batch, so the order below it, and every galaxy's own value, is kept.
    """
    free = np.flatnonzero(acquisition > LABELLED_ACQUISITION)
    size = min(cfg.batch, len(free))
    if size <= 1:
        return acquisition
    n_keen = int(np.sum(y[np.isfinite(y)] > 0))
    n_explore = int(round(cfg.explore * size)) if n_keen < cfg.explore_until else 0
    pool = free[np.argsort(-acquisition[free], kind="stable")[:cfg.candidates * size]]
    gain = acquisition[pool] - acquisition[pool].min() + 1e-9  # (P,) >= 0, so damping only lowers it
    # Coverage is judged on a sample of the unlabelled galaxies (as the PCA is): the cost stays
    # flat in N, and the farthest of a sample of 50,000 is as far out as the feature space goes.
    reach = np.random.default_rng(seed).permutation(free)[:cfg.pca_sample] if n_explore else free[:0]
    x_reach = x[reach]  # (S, F)
    nearest = _nearest_sq(x_reach, x[np.isfinite(y)], cfg.chunk)  # (S,) squared distance to the nearest labelled
    picks: list[int] = []
    for k in range(size):
        if k >= size - n_explore:  # exploring picks come last: the exploiting ones matter most
            cover = nearest.copy()
            cover[np.isin(reach, picks)] = -np.inf
            pick = int(reach[np.argmax(cover)])
        else:
            pick = int(pool[np.argmax(gain)])
            radius = max(cfg.diversity * length, 1e-9)
            gain *= 1.0 - np.exp(-((x[pool] - x[pick]) ** 2).sum(-1) / (2 * radius ** 2))
        gain[pool == pick] = 0.0
        nearest = np.minimum(nearest, ((x_reach - x[pick]) ** 2).sum(-1))
        picks.append(pick)
    out = acquisition.copy()
    top = float(np.max(np.delete(acquisition, picks)))
    out[picks] = top + np.arange(len(picks), 0, -1)
    return out


# ---------------------------------------------------------------------------------------
# ranking.parquet


def write_ranking(run_dir, df: pd.DataFrame, **info) -> Path:
    """Write ``run_dir/ranking.parquet`` atomically, with what it was made from in its metadata.

    The metadata holds the catalogue's sha256 recorded by ``embed``, so :func:`read_ranking`
    can tell a ranking of an older catalogue; ``info`` adds fields (e.g. ``n_labels``, the
    config). Not stamped in the manifest: the app re-ranks while it serves, and a ranking is
    a cache of the labels, remade in seconds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.run import RunManifest

    run_dir = Path(run_dir)
    missing = [c for c in RANK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"a ranking needs the columns {', '.join(RANK_COLUMNS)}; missing {', '.join(missing)}")
    meta = {"catalogue_sha256": RunManifest.read(run_dir).checksums.get("catalogue.parquet"),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
    table = pa.Table.from_pandas(df[list(RANK_COLUMNS)], preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           _META_KEY: json.dumps(meta, default=str).encode()})
    path = run_dir / RANKING_FILE
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def ranking_info(run_dir) -> dict | None:
    """The metadata :func:`write_ranking` stored, or None without a ranking."""
    import pyarrow.parquet as pq

    path = Path(run_dir) / RANKING_FILE
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(_META_KEY, b"{}"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: damaged ranking ({exc}); delete it and run `python -m train rank --run "
                       f"{run_dir} --out ranked.csv` again") from None


def read_ranking(run_dir) -> pd.DataFrame | None:
    """The run's ranking, or None when there is none or it ranks another catalogue than the run's.

    RunError when the file is damaged.
    """
    from core.io import load_parquet
    from core.run import RunManifest

    run_dir = Path(run_dir)
    info = ranking_info(run_dir)
    if info is None:
        return None
    current = RunManifest.read(run_dir).checksums.get("catalogue.parquet")
    if info.get("catalogue_sha256") != current:
        return None  # the run was embedded again after this ranking: it must be remade
    df = load_parquet(run_dir / RANKING_FILE, RunError,
                      f"delete it and run `python -m train rank --run {run_dir} --out ranked.csv` again")
    missing = [c for c in RANK_COLUMNS if c not in df.columns]
    if missing:
        raise RunError(f"{run_dir / RANKING_FILE}: no column(s) {', '.join(missing)}; delete it and rank again")
    return df
