"""Anomaly scores: reconstructions, the masked reconstruction error, per-line shares, baselines.

The anomaly score of a galaxy (:data:`SCORE_DEFINITION`, :func:`combine`) combines five
detectors: ``score_recon``, how badly the autoencoder reproduces the galaxy;
``score_consistency`` (``core.consistency``), how badly each of its lines is predicted from
the others; ``score_mixing`` (``core.mixing``), how far its lines depart, over a region, from
a mix of two spectra fitted to the galaxy alone; ``score_census`` (``core.census``), how far its
line ratios and each ion's centroid and shape lie from the survey's; ``score_sharp``
(``core.sharpness``, measured by ingest on the native maps), how far its maps break the bound on
sharpness that the PSF sets for any sky. Each detector's score is put
in units of its own scatter over the run's galaxies, a robust z-score ``ln(score / median) / spread`` with
``spread`` 1.4826 times the median absolute deviation of ``ln(score)`` (the standard deviation
for a normal distribution), and the anomaly score is the exponential of the largest::

    anomaly_score = exp( max_d ln(score_d / median_d) / spread_d )

so ``ln(anomaly_score)`` is how many robust standard deviations the galaxy sits above the run's
typical galaxy in the detector that finds it oddest. Why the largest rather than a mean: the
detectors see different things (the autoencoder a region brighter or darker in every line, the
other two lines that disagree), so an oddity is usually plain in one of them and absent from the
others, and a mean dilutes it (on the demo survey, 5-epoch autoencoder, the injection median kind at
strength 0.5: 79.8 with the weighted mean of two detectors, 85.3 with the larger of the same two,
90.9 with the largest of three; README.md, "The anomaly score"). Why in units of the spread: the
autoencoder's score scatters three times more among ordinary galaxies than the consistency
score (spreads of 0.53 and 0.19 in ln on the demo survey), so its ordinary scatter would win.

``score_recon`` (:data:`RECON_DEFINITION`) is the galaxy's reduced chi-square against the noise
and an error model, over its unmasked cells::

    score = sum_{l, i, j unmasked} (recon - x)**2 / (sigma**2 + (f * P)**2 + (m * recon)**2) / n_unmasked

where ``x`` is the galaxy's flux in the dataset's normalisation (the grid the model was
trained on), ``recon`` the model's reconstruction of it (for the VAE the decoder's output
at the posterior mean), ``sigma**2 = 1 / ivar`` the measured noise variance of the cell in
the same units, ``P`` the galaxy's Halpha peak after a :data:`FLOOR_SMOOTH` x
:data:`FLOOR_SMOOTH`-cell median filter (its brightest line where a run has no Halpha),
``f`` = :data:`ERROR_FLOOR` = 2 % and ``m`` = :data:`MODEL_ERROR` = 10 %. Masked cells (bad
DAP bits, no coverage) count neither in the sum nor in ``n_unmasked``.

Why not the plain mean squared residual: it ranks galaxies by brightness and noise, not by
oddness (a faint galaxy's noise, or a bright Seyfert's ordinary 1 % mismatch, outweighs a
genuinely odd [OIII] blob). Dividing by the noise makes the score independent of the
normalisation and of the depth. The error model says no model is better than ``m`` of what
it predicts in a cell, nor than ``f`` of the galaxy's brightness anywhere. Neither is set by
the raw data of a small region: a bright spot in any line but Halpha never lowers the score,
and one in Halpha lowers it far less often than before (``benchmarks/brightness_safety.py``:
11.5 % of cases against 37.4 %; not never, as ``P`` is still a statistic of the data). The
earlier floor, 1 % of the galaxy's raw peak Halpha, was set by one spaxel: a compact spot
brighter than the nucleus raised the floor of every cell and hid the rest of the galaxy's
oddness (a bright Halpha spot on the 96 most anomalous demo galaxies lowered every one of
their scores). Measured choices, ROC-AUC / AP on the demo survey: README.md, "The anomaly score".

``err_<line>`` is the share of the summed terms that falls in that line's map (shares sum
to 1), ``resid_offset``, ``resid_peak``, ``resid_elong`` and ``resid_size`` say where on the
galaxy the terms lie (:data:`SHAPE_DEFINITIONS`), ``anomaly_pct`` the percentage of the run's
galaxies whose score is at or below this one, and a galaxy is ``flagged`` when its score is
at or above the run's ``flag_pct``-th percentile (90 by default).

Torch and scikit-learn are imported inside the functions that need them, so the pure
numpy parts (errors, percentiles, the metrics table) stay cheap to import.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from core import census, consistency, mixing, sharpness
from core.bpt import RATIOS
from core.lines import BPT_LINES

#: The error floor in the score, as a fraction of the galaxy's smoothed Halpha peak ``P``.
ERROR_FLOOR = 0.02
#: The model's relative error in the score: a fraction of its own prediction in each cell.
MODEL_ERROR = 0.10
#: The line whose peak sets the error floor (the brightest line where a run lacks it).
FLOOR_LINE = BPT_LINES["ha"]
#: Side, in cells, of the median filter applied before taking the peak: a region smaller than
#: about half the window (a spot, a bad spaxel) cannot set ``P``.
FLOOR_SMOOTH = 5
RECON_DEFINITION = (
    "reduced chi-square against the noise and an error model: the mean over the unmasked cells (every line, "
    f"every S x S cell) of (recon - x)^2 / (1/ivar + ({ERROR_FLOOR:g} P)^2 + ({MODEL_ERROR:g} recon)^2), with x the "
    "flux in the dataset's normalisation, ivar its inverse variance, recon the model's reconstruction (VAE: "
    f"decoded posterior mean) and P the galaxy's Ha peak after a {FLOOR_SMOOTH} x {FLOOR_SMOOTH}-cell median "
    "filter; masked cells are excluded from both the sum and the count"
)
#: The catalogue column of the autoencoder's reduced chi-square.
RECON_COLUMN = "score_recon"
SCORE_DEFINITION = (
    "exp of the largest of the detectors' robust z-scores, each ln(score / median) / spread with the median and "
    "the spread (1.4826 x the median absolute deviation of ln score) over the run's galaxies, of: "
    f"{RECON_COLUMN}, the autoencoder's {RECON_DEFINITION}; and, where the run has them, {consistency.COLUMN}, "
    f"{consistency.DEFINITION}; {mixing.COLUMN}, {mixing.DEFINITION}; {census.COLUMN}, {census.DEFINITION}; "
    f"{sharpness.COLUMN}, {sharpness.DEFINITION}"
)
PCT_DEFINITION = ("percentage of the run's galaxies whose anomaly_score is at or below this one (0-100; "
                  "scores equal to within float32 rounding, relative 1e-5, count as equal)")
#: Scores this close (relative) count as equal in percentiles: the same galaxy scored in
#: another batch (``train score``) differs from its ``train embed`` score by float32 rounding.
SCORE_RTOL = 1e-5
FLAG_PCT = 90.0
#: Share of a map's cells whose terms make ``resid_peak`` (the 5 % with the largest terms).
SHAPE_TOP_CELLS = 0.05
#: Where on the galaxy the score comes from (:func:`residual_shape`): catalogue column -> definition.
SHAPE_DEFINITIONS = {
    "resid_offset": "distance of the centroid of the score's terms (summed over the lines) from the map centre, "
                    "in half map widths (0: centred; an off-nuclear oddity is large)",
    "resid_peak": f"share of the score in the {SHAPE_TOP_CELLS:.0%} of cells with the largest terms "
                  "(compact oddity: near 1; misfit spread over the galaxy: small)",
    "resid_elong": "1 - minor/major axis of the terms' second moments (0: round; a cone, a bar, a stripe: near 1)",
    "resid_size": "RMS radius of the terms about their centroid, in half map widths",
}
SHAPE_COLUMNS = tuple(SHAPE_DEFINITIONS)
#: Galaxies per forward pass of the model (embed, train score).
BATCH_SIZE = 64
#: Per-galaxy line-ratio features of the isolation-forest baseline (columns of the dataset catalogue).
RATIO_FEATURES = RATIOS


def model_input(flux: np.ndarray) -> np.ndarray:
    """The model's view of dataset flux: masked (NaN) cells become 0, as in ``core.torchdata``."""
    return np.nan_to_num(np.asarray(flux, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def reconstruct(model, flux, mask, batch_size: int = BATCH_SIZE, device="cpu", progress: bool = True,
                desc: str = "reconstruct") -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Run ``model`` over galaxies ``flux`` / ``mask`` ``(N, L, S, S)`` (memory-mapped is fine).

    Yields ``(rows, latents (B, D), recon (B, L, S, S))`` batch by batch, in order; latents
    are the encoder means, recon is float32 with masked cells NaN (like the dataset's flux).
    The model runs in eval mode without gradients, so the result is deterministic.
    """
    import torch
    from tqdm.auto import tqdm

    model.eval()
    n = len(flux)
    with torch.inference_mode():
        for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress,
                          total=-(-n // batch_size)):
            rows = slice(start, min(start + batch_size, n))
            m = np.asarray(mask[rows], dtype=bool)
            x = torch.from_numpy(model_input(flux[rows])).unsqueeze(2).to(device)
            out = model(x)
            recon = out.recon.squeeze(2).float().cpu().numpy()
            recon[m] = np.nan
            yield rows, out.mu.float().cpu().numpy(), recon


def floor_peaks(flux, mask, lines: Sequence[str]) -> np.ndarray:
    """``P`` of :data:`RECON_DEFINITION` for a batch ``(N, L, S, S)``: each galaxy's smoothed Halpha peak.

    Masked cells count as 0 in the median filter; a run without Halpha takes, per cell, the
    brightest of its lines. 0 for a galaxy without positive flux.
    """
    from scipy.ndimage import median_filter

    good = ~np.asarray(mask, dtype=bool)
    flux = np.where(good, np.nan_to_num(np.asarray(flux, dtype=np.float64), posinf=0.0, neginf=0.0), 0.0)
    img = flux[:, list(lines).index(FLOOR_LINE)] if FLOOR_LINE in lines else flux.max(axis=1)  # (N, S, S)
    smooth = median_filter(img, size=(1, FLOOR_SMOOTH, FLOOR_SMOOTH), mode="constant")
    return np.maximum(smooth.reshape(len(img), -1).max(axis=1), 0.0)


def data_floor_peaks(flux, mask, ivar, lines: Sequence[str]) -> np.ndarray:
    """:func:`floor_peaks` over the cells the score counts: unmasked, with a positive ivar."""
    return floor_peaks(flux, np.asarray(mask, dtype=bool) | ~(np.asarray(ivar, dtype=np.float64) > 0), lines)


def cell_weights(flux, mask, ivar, lines: Sequence[str], floor_fraction: float = ERROR_FLOOR,
                 peaks=None) -> np.ndarray:
    """The data's part ``1 / (1/ivar + (f P)**2)`` of every cell's weight in the score, a batch ``(N, L, S, S)``.

    0 where the cell is masked or has no positive ivar (see :data:`RECON_DEFINITION`).
    ``floor_fraction`` is ``f`` (0: the noise alone, as ``core.evaluate.ordinary_fit`` measures).
    ``peaks`` ``(N,)``: the galaxies' ``P`` when already known (:func:`data_floor_peaks` of the same arrays).
    The model's part joins in :func:`with_model_error`, which needs the reconstruction.
    """
    ivar = np.asarray(ivar, dtype=np.float64)
    good = ~np.asarray(mask, dtype=bool) & (ivar > 0)
    peaks = data_floor_peaks(flux, mask, ivar, lines) if peaks is None else np.asarray(peaks, dtype=np.float64)
    floor = (floor_fraction * peaks)[:, None, None, None] ** 2  # (N, 1, 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = 1.0 / ivar + floor
    return np.where(good, 1.0 / variance, 0.0)


def with_model_error(weights, recon, model_error: float = MODEL_ERROR) -> np.ndarray:
    """The score's weights ``1 / (1/w + (m recon)**2)`` from the data's part ``w`` (:func:`cell_weights`).

    Written ``w / (1 + w (m recon)**2)`` so a weight of 0 (a masked cell) stays 0.
    """
    weights = np.asarray(weights, dtype=np.float64)
    model = np.square(model_error * np.nan_to_num(np.asarray(recon, dtype=np.float64)))
    return weights / (1.0 + weights * model)


def normalised_residual(x, recon, ivar, floor, model_error: float = MODEL_ERROR) -> np.ndarray:
    """``(x - recon) / sqrt(1/ivar + floor**2 + (m recon)**2)``: each cell's residual in units of the score's error.

    ``floor`` is the error floor in flux units (a scalar, or broadcastable, e.g. ``(N, 1, 1, 1)``:
    ``ERROR_FLOOR * floor_peaks(...)``), ``model_error`` is ``m``. NaN where ``ivar`` is not positive or
    a value is not finite (masked cells are NaN in the dataset's flux), so a map of it shows where on the
    galaxy the score comes from.
    """
    ivar = np.asarray(ivar, dtype=np.float64)
    recon = np.asarray(recon, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (np.asarray(x, dtype=np.float64) - recon) / np.sqrt(
            1.0 / ivar + np.square(floor) + np.square(model_error * recon))
    return np.where((ivar > 0) & np.isfinite(out), out, np.nan)


def _chi_terms(recon, flux, mask, ivar, lines: Sequence[str], floor_fraction: float = ERROR_FLOOR,
               model_error: float = MODEL_ERROR) -> tuple[np.ndarray, np.ndarray]:
    """The summed terms of :data:`RECON_DEFINITION`, ``(N, L, S, S)`` (0 where masked), and the unmasked cells."""
    weights = with_model_error(cell_weights(flux, mask, ivar, lines, floor_fraction), recon, model_error)
    good = weights > 0
    diff = np.where(good, np.asarray(recon, dtype=np.float64) - np.asarray(flux, dtype=np.float64), 0.0)
    return np.square(diff) * weights, good


def galaxy_errors(recon, flux, mask, ivar, lines: Sequence[str], floor_fraction: float = ERROR_FLOOR,
                  model_error: float = MODEL_ERROR) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly scores ``(N,)`` and per-line error shares ``(N, L)`` of a batch ``(N, L, S, S)``.

    Both follow :data:`RECON_DEFINITION` (with ``floor_fraction`` as its ``f`` and ``model_error``
    as its ``m``; both 0: against the noise alone). A galaxy without unmasked cells gets NaN.
    """
    return _errors(*_chi_terms(recon, flux, mask, ivar, lines, floor_fraction, model_error))


def _errors(terms: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    per_line = terms.sum(axis=(2, 3))  # (N, L)
    total = per_line.sum(axis=1)
    count = good.sum(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(count > 0, total / count, np.nan)
        shares = np.where(total[:, None] > 0, per_line / total[:, None], np.nan)
    return score, shares


def residual_shape(recon, flux, mask, ivar, lines: Sequence[str]) -> np.ndarray:
    """``(N, 4)`` where on the galaxy its score comes from: :data:`SHAPE_COLUMNS`, a batch ``(N, L, S, S)``.

    The moments of the score's terms summed over the lines, an ``(S, S)`` map ``e`` per galaxy
    (see :data:`SHAPE_DEFINITIONS`). They depend on neither the flux scale nor the map's
    orientation, so they describe an oddity of any kind by where it lies, not by what it is.
    NaN for a galaxy without residual.
    """
    return _shape(_chi_terms(recon, flux, mask, ivar, lines)[0])


def score_batch(recon, flux, mask, ivar, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`galaxy_errors` and :func:`residual_shape` of one batch, its terms computed once (embed, train score)."""
    terms, good = _chi_terms(recon, flux, mask, ivar, lines)
    return (*_errors(terms, good), _shape(terms))


def _shape(terms: np.ndarray) -> np.ndarray:
    e = terms.sum(axis=1)  # (N, S, S)
    n, size = e.shape[0], e.shape[-1]
    half = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0  # cell centres from the map's centre, (S, S)
    total = e.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = e / total[:, None, None]  # (N, S, S), sums to 1
        cx, cy = (w * xx).sum(axis=(1, 2)), (w * yy).sum(axis=(1, 2))
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]  # (N, S, S)
        mxx, myy, mxy = (w * dx * dx).sum(axis=(1, 2)), (w * dy * dy).sum(axis=(1, 2)), (w * dx * dy).sum(axis=(1, 2))
        root = np.sqrt(np.square(mxx - myy) / 4.0 + np.square(mxy))
        major, minor = (mxx + myy) / 2.0 + root, np.clip((mxx + myy) / 2.0 - root, 0.0, None)
        top = max(1, int(round(SHAPE_TOP_CELLS * size * size)))
        peak = -np.partition(-e.reshape(n, -1), top - 1, axis=1)[:, :top].sum(axis=1)
        out = np.stack([np.hypot(cx, cy) / half, peak / total,
                        1.0 - np.sqrt(minor / major), np.sqrt(mxx + myy) / half], axis=1)
    return np.where((total > 0)[:, None], out, np.nan)


def percentile_in(scores, population) -> np.ndarray:
    """``anomaly_pct`` of ``scores`` against a run's ``population`` (see :data:`PCT_DEFINITION`)."""
    pop = np.sort(np.asarray(population, dtype=np.float64))
    pop = pop[np.isfinite(pop)]
    scores = np.asarray(scores, dtype=np.float64)
    pct = 100.0 * np.searchsorted(pop, scores * (1.0 + SCORE_RTOL), side="right") / max(len(pop), 1)
    return np.where(np.isfinite(scores), pct, np.nan)


def flag_threshold(population, flag_pct: float = FLAG_PCT) -> float:
    """The score at the ``flag_pct``-th percentile of a run; galaxies at or above it are flagged."""
    return float(np.nanpercentile(np.asarray(population, dtype=np.float64), flag_pct))


def combine(components: dict[str, np.ndarray], scales: dict[str, dict]) -> np.ndarray:
    """The anomaly score (:data:`SCORE_DEFINITION`) of the ``components`` (column -> ``(N,)``) with their
    :func:`component_scales`: exp of each galaxy's largest robust z-score; a component that is NaN for a galaxy
    is left out, and a galaxy with none is NaN."""
    zs = robust_z(components, scales)  # (K, N)
    best = np.where(np.isfinite(zs), zs, -np.inf).max(0)  # (N,)
    # capped where exp would overflow: such a galaxy is odd beyond any doubt, and JSON has no infinity
    return np.where(np.isfinite(best), np.exp(np.minimum(best, 700.0)), np.nan)


def robust_z(components: dict[str, np.ndarray], scales: dict[str, dict]) -> np.ndarray:
    """``(K, N)`` each component's robust z-score ``ln(score / median) / spread`` (:func:`combine` takes the largest),
    in the order of ``components``; NaN where the component is."""
    zs = []
    for name, values in components.items():
        median, spread = scales[name]["median"], scales[name]["spread"]
        # A score of 0 (a perfect fit) would be ln 0: it counts as a millionth of the median.
        with np.errstate(invalid="ignore"):
            zs.append(np.log(np.maximum(np.asarray(values, np.float64), 1e-6 * median) / median) / spread)
    return np.stack(zs)


def component_scales(components: dict[str, np.ndarray]) -> dict[str, dict]:
    """Each component's ``{"median", "spread"}`` over the run's galaxies: the median of its positive finite
    values, and 1.4826 x the median absolute deviation of their logarithm (1 and 1 where there are none, or
    where they do not scatter)."""
    out = {}
    for name, values in components.items():
        values = np.asarray(values, np.float64)
        positive = values[np.isfinite(values) & (values > 0)]
        median, spread = 1.0, 1.0
        if positive.size:
            median = float(np.median(positive))
            logs = np.log(positive)
            spread = float(1.4826 * np.median(np.abs(logs - np.median(logs))))
            spread = spread if spread > 0 else 1.0
        out[name] = {"median": median, "spread": spread}
    return out


def score_columns(scores, shares, lines: Sequence[str], population, threshold: float,
                  shape=None, components: dict | None = None) -> pd.DataFrame:
    """The per-galaxy score columns of a run catalogue (and of ``train score``); ``shape``:
    :func:`residual_shape`'s ``(N, 4)``, written as :data:`SHAPE_COLUMNS`; ``components``: the
    detectors' own scores (column -> ``(N,)``), written after the shares."""
    shares = np.asarray(shares, dtype=np.float64)
    cols = {"anomaly_score": np.asarray(scores, dtype=np.float64),
            "anomaly_pct": percentile_in(scores, population)}
    cols["flagged"] = np.nan_to_num(cols["anomaly_score"], nan=-np.inf) * (1.0 + SCORE_RTOL) >= threshold
    finite = np.isfinite(shares).all(axis=1)
    top = np.argmax(np.nan_to_num(shares, nan=-1.0), axis=1)
    cols["top_line"] = np.where(finite, np.asarray(lines, dtype=object)[top], None)
    for i, line in enumerate(lines):
        cols[f"err_{line}"] = shares[:, i]
    if shape is not None:
        for i, name in enumerate(SHAPE_COLUMNS):
            cols[name] = np.asarray(shape, dtype=np.float64)[:, i]
    for name, values in (components or {}).items():
        cols[name] = np.asarray(values, dtype=np.float64)
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------------------
# Baselines


def pca_errors(flux, mask, ivar, lines: Sequence[str], fit_rows, n_components: int, seed: int = 0,
               batch_size: int = 512) -> np.ndarray:
    """PCA reconstruction error of every galaxy, in the units of :data:`RECON_DEFINITION`.

    The maps are given to PCA exactly as the model sees them (masked cells 0, see
    :func:`model_input`), PCA is fitted on the rows ``fit_rows`` (the model's training
    split) with ``n_components`` (the model's latent size), and the error counts the
    unmasked cells only and is scored exactly like the model's (:func:`galaxy_errors`).
    """
    from sklearn.decomposition import PCA

    n = len(flux)
    fit_rows = np.asarray(fit_rows)
    x_fit = model_input(flux[np.sort(fit_rows)]).reshape(len(fit_rows), -1)
    n_components = int(min(n_components, len(fit_rows), x_fit.shape[1]))
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed).fit(x_fit)
    del x_fit
    errors = np.empty(n)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        x = model_input(flux[rows])
        recon = pca.inverse_transform(pca.transform(x.reshape(len(x), -1))).reshape(x.shape)
        errors[rows], _ = galaxy_errors(recon, x, mask[rows], ivar[rows], lines)
    return errors


def isolation_forest_scores(catalogue: pd.DataFrame, seed: int = 0,
                            features: Sequence[str] = RATIO_FEATURES) -> np.ndarray:
    """Isolation-forest anomaly score (higher = odder) on per-galaxy line-ratio features.

    A missing ratio (a line below the S/N cut) is filled with the column median and
    marked by an indicator feature, so "this line is undetected" can itself be odd.
    """
    from sklearn.ensemble import IsolationForest

    present = [f for f in features if f in catalogue.columns]
    if not present:
        from core.errors import DatasetError

        raise DatasetError(f"the catalogue has none of the line-ratio columns {', '.join(features)}; "
                           "ingest the survey again with `python -m train ingest` to add them")
    x = catalogue[present].to_numpy(dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    missing = np.isnan(x)
    medians = np.nan_to_num(np.nanmedian(np.where(missing.all(axis=0), 0.0, x), axis=0))
    x = np.where(missing, medians, x)
    x = np.hstack([x, missing[:, missing.any(axis=0)].astype(np.float64)])
    forest = IsolationForest(n_estimators=300, random_state=seed).fit(x)
    return -forest.score_samples(x)


# --------------------------------------------------------------------------------------
# Detection quality against the truth of a synthetic survey


def truth_tasks(catalogue: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, positives, negatives)`` boolean masks of the detection tasks a catalogue supports.

    ``anomaly``: truth_anomaly against everything else; ``anomaly:<kind>``: one anomaly
    kind against the non-anomalies; ``agn``: Seyfert + LINER against star-forming.
    """
    tasks = []
    cls = catalogue["truth_class"].astype(str).str.lower() if "truth_class" in catalogue else None
    if "truth_anomaly" in catalogue:
        anomaly = catalogue["truth_anomaly"].fillna(False).astype(bool).to_numpy()
        tasks.append(("anomaly", anomaly, ~anomaly))
        if cls is not None:
            for kind in sorted(cls[anomaly].unique()):
                tasks.append((f"anomaly:{kind}", anomaly & (cls == kind).to_numpy(), ~anomaly))
    if cls is not None:
        tasks.append(("agn", cls.isin(["seyfert", "liner"]).to_numpy(), (cls == "sf").to_numpy()))
    return tasks


def detection_metrics(tasks, methods: dict[str, np.ndarray], subset=None) -> list[dict]:
    """ROC-AUC and average precision of every method's score on every task.

    ``methods`` maps a name to per-galaxy scores (higher = more anomalous); ``subset``
    (a boolean mask) restricts every task to those galaxies. A task without both classes
    is reported with ``None`` metrics.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    rows = []
    for name, pos, neg in tasks:
        if subset is not None:
            pos, neg = pos & subset, neg & subset
        use = pos | neg
        row = {"task": name, "n_pos": int(pos.sum()), "n_neg": int(neg.sum())}
        for method, scores in methods.items():
            s = np.asarray(scores, dtype=np.float64)[use]
            y = pos[use]
            ok = np.isfinite(s)
            if y[ok].all() or not y[ok].any():
                row[method] = {"roc_auc": None, "average_precision": None}
                continue
            row[method] = {"roc_auc": float(roc_auc_score(y[ok], s[ok])),
                           "average_precision": float(average_precision_score(y[ok], s[ok]))}
        rows.append(row)
    return rows


def format_table(rows: list[dict], methods: Sequence[str]) -> str:
    """A plain-text table: one line per task, ROC-AUC / average precision per method."""
    head = f"{'task':<24}{'n_pos':>7}{'n_neg':>7}" + "".join(f"{m + ' AUC/AP':>22}" for m in methods)
    out = [head, "-" * len(head)]
    for row in rows:
        cells = []
        for m in methods:
            auc, ap = row[m]["roc_auc"], row[m]["average_precision"]
            cells.append(f"{'n/a':>22}" if auc is None else f"{auc:>15.3f} /{ap:>5.3f}")
        out.append(f"{row['task']:<24}{row['n_pos']:>7}{row['n_neg']:>7}" + "".join(cells))
    return "\n".join(out)
