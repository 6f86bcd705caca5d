"""The census: a fourth detector, of what is odd about a galaxy's lines as a whole, against the survey.

The other detectors look inside each galaxy: the autoencoder at its misfit, the consistency network
and the spectral mix at whether its lines agree with each other from place to place. All three are
blind, by construction, to a change that keeps a galaxy self-consistent but unlike every other
galaxy: a line ratio fixed by atomic physics that is off over the whole galaxy (an [OIII]
4960/5008 of 1/1.5 instead of 1/2.98), or one ion's light centred or shaped unlike Halpha's. This
detector describes each galaxy by a few numbers and asks how far they lie from the survey's:

1. :func:`features`: for every line, the log of its total flux over Halpha's (:data:`RATIO`); for
   every ion (a doublet is one, ``core.consistency.line_groups``) but Halpha's, the offset of its
   flux-weighted centroid from Halpha's, the difference of its ellipticity (``e1, e2`` of the second
   moments) and the log of its size over Halpha's, all in units of Halpha's own size. Each comes
   with its noise covariance, propagated from the inverse variances (first order) and multiplied by the
   galaxy's ``noise_factor`` (``core.maps.GridMaps``: neighbouring cells share noise, so a sum of many
   has more variance than the cells' own add up to); a feature whose line is not detected (total
   signal-to-noise under :data:`MIN_SNR`) is left out.
2. :func:`fit`: the survey's distribution of those features, one Gaussian whose covariance is the
   galaxies' own scatter with their noise taken out (extreme deconvolution, Bovy et al. 2011, AoAS 5,
   1657), the least likely :data:`TRIM` of the galaxies left out of each round so that the odd ones do
   not set it, made symmetric under the map's quarter turns and mirrors, so that turning a galaxy on
   the sky does not change its score. Left out by likelihood, which counts each galaxy's noise, not by
   distance: trimmed by distance, the demo's Seyferts (4 % of it) fell out of the fit and all became
   odd (median z 9.2, against 2.4 now; the demo's average precision 0.66 instead of 0.86). A mixture of
   three Gaussians came down to this one on the demo (the other two explained under 2 % of the galaxies).
3. :func:`statistics`: against that Gaussian plus the galaxy's own noise, the Mahalanobis
   distance of all its features (a whole-galaxy change) and the largest conditional z-score of
   one feature given all the others (one line or ion out of step with the rest: the doublet
   above), each a standard normal for an ordinary galaxy; :func:`galaxy_scores` puts both in
   robust units over the run, as ``core.mixing`` does, and ``score_census = exp(max z)``;
   ``census_feature`` names the feature of the largest conditional z-score.

What it cannot see: a change that moves neither ratios nor moments (a grey dust lane, dead fibres);
and being a comparison with the survey, a bright spot can bring a galaxy that was odd the other way
back towards it (0.6 % of spots on the demo's galaxies, ``benchmarks/brightness_safety.py --run``).
Multiplying a galaxy's fluxes by c (and ivar by 1/c^2) leaves every feature unchanged; turning
or mirroring the maps by a multiple of 90 degrees leaves the score unchanged. Pure numpy.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from core import consistency

#: The catalogue columns.
COLUMN = "score_census"
FEATURE_COLUMN = "census_feature"
#: The reference line of every ratio and shape.
REFERENCE = "Ha-6564"
#: A line (or ion) whose total flux is under this many sigma gives no feature.
MIN_SNR = 5.0
#: Share of the galaxies, the most distant, left out of each round of :func:`fit`.
TRIM = 0.1
#: Rounds of :func:`fit`.
ROUNDS = 5
#: Galaxies that :func:`fit_survey` learns the survey's features from, at most (a random subset): 1,000 take ~5 s.
FIT_GALAXIES = 1_000
#: Galaxies per block of :func:`block_features`.
BATCH = 128
#: Feature kinds: ratio per line; offset (two), ellipticity (two) and size per ion.
RATIO, SHAPE = "ratio", ("dy", "dx", "e1", "e2", "size")
#: The statistics of :func:`statistics`.
STATISTICS = ("whole galaxy", "one feature")
DEFINITION = (
    "census: each galaxy's line ratios (every line's total over Halpha's) and each ion's centroid, ellipticity "
    "and size relative to Halpha's, against a Gaussian fitted to the survey's (noise deconvolved, symmetric under "
    "90-degree turns and mirrors) plus the galaxy's own noise (counting what its neighbouring cells share): the "
    "Mahalanobis distance of all features and the largest conditional z-score of one feature given the others, "
    "each in robust units over the run; exp of the larger. Independent of the flux scale and of the other detectors"
)


def names(lines: Sequence[str]) -> list[str]:
    """The features' names, in the order of :func:`features`."""
    ref = list(lines).index(REFERENCE)
    out = [f"{line} {RATIO}" for i, line in enumerate(lines) if i != ref]
    for group in consistency.line_groups(lines):
        if ref not in group:
            ion = lines[group[0]].split("-")[0]
            out += [f"{ion} {kind}" for kind in SHAPE]
    return out


def _moments(f, yy, xx):
    """Total, centroid, second moments of maps ``f`` ``(N, P)``, with each one's gradient with respect to the cells:
    ``(values (N, 6), grads (N, 6, P))`` for ``F, y, x, Qyy, Qxx, Qyx``."""
    total = f.sum(1)  # (N,)
    safe = np.where(total > 0, total, 1.0)[:, None]
    y = (f * yy).sum(1) / safe[:, 0]
    x = (f * xx).sum(1) / safe[:, 0]
    dy, dx = yy - y[:, None], xx - x[:, None]  # (N, P)
    qyy, qxx, qyx = ((f * a).sum(1) / safe[:, 0] for a in (dy * dy, dx * dx, dy * dx))
    values = np.stack([total, y, x, qyy, qxx, qyx], 1)
    # d(sum a f / F)/df_k = (a_k - mean a) / F; the centroid's own shift cancels to first order in the moments
    grads = np.stack([np.ones_like(f), dy / safe, dx / safe, (dy * dy - qyy[:, None]) / safe,
                      (dx * dx - qxx[:, None]) / safe, (dy * dx - qyx[:, None]) / safe], 1)  # (N, 6, P)
    return values, grads


def _shape(values, grads, size):
    """``(y, x, e1, e2, ln T)`` of :func:`_moments`, positions in units of ``size`` ``(N,)``, and their gradients."""
    _, y, x, qyy, qxx, qyx = values.T
    t = np.where(qyy + qxx > 0, qyy + qxx, 1.0)
    e1, e2 = (qxx - qyy) / t, 2 * qyx / t
    g = grads
    dt = g[:, 4] + g[:, 3]
    out = np.stack([y / size, x / size, e1, e2, np.log(t)], 1)  # (N, 5)
    dout = np.stack([g[:, 1] / size[:, None], g[:, 2] / size[:, None],
                     (g[:, 4] - g[:, 3] - e1[:, None] * dt) / t[:, None],
                     (2 * g[:, 5] - e2[:, None] * dt) / t[:, None], dt / t[:, None]], 1)  # (N, 5, P)
    return out, dout


def features(flux, ivar, mask, lines: Sequence[str], noise_factor=None) -> tuple[np.ndarray, np.ndarray]:
    """``(values (N, D), noise (N, D, D))`` of :func:`names`; an undetected feature is NaN with noise 0.

    ``noise_factor`` (N,), each galaxy's ``core.maps.GridMaps.noise_factor`` (default 1: independent cells), scales
    the cells' variances: every feature is a sum over many cells, whose variance is that much larger than the sum of
    the cells' own where neighbouring cells share noise."""
    flux, ivar, mask = (np.asarray(a) for a in (flux, ivar, mask))
    n, n_lines, size, _ = flux.shape
    ref = list(lines).index(REFERENCE)
    good = ~mask & (ivar > 0) & np.isfinite(flux)
    factor = np.ones(n) if noise_factor is None else np.asarray(noise_factor, np.float64)
    f = np.where(good, flux, 0.0).astype(np.float64).reshape(n, n_lines, -1)  # (N, L, P)
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0).astype(np.float64).reshape(n, n_lines, -1)
    var *= factor[:, None, None]
    yy, xx = (a.ravel() - (size - 1) / 2 for a in np.mgrid[:size, :size].astype(np.float64))

    ref_values, ref_grads = _moments(f[:, ref], yy, xx)
    ref_total = ref_values[:, 0]
    ref_snr = ref_total / np.sqrt(np.maximum(var[:, ref].sum(1), 1e-300))
    radius = np.sqrt(np.maximum(ref_values[:, 3] + ref_values[:, 4], 1e-12))  # Halpha's rms size (N,)
    ref_shape, ref_dshape = _shape(ref_values, ref_grads, radius)

    # Each feature is one block's value minus Halpha's; the noise covariance is that of the block (its own cells)
    # plus that of Halpha's (shared by every feature).
    vals, blocks, ion_grads = [], [], []
    totals = f.sum(2)  # (N, L)
    sigma_tot = np.sqrt(var.sum(2))  # (N, L)
    line_total = np.ones_like(totals)  # each detected line's total (1 where not): d ln F_i / df_i = 1 / F_i
    for i in range(n_lines):
        if i == ref:
            continue
        detected = (totals[:, i] > MIN_SNR * sigma_tot[:, i]) & (ref_snr > MIN_SNR)
        line_total[:, i] = np.where(detected, totals[:, i], 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals.append(np.where(detected, np.log(totals[:, i] / ref_total), np.nan)[:, None])
        blocks.append((sigma_tot[:, i] ** 2 / line_total[:, i] ** 2)[:, None, None])
    for group in consistency.line_groups(lines):
        if ref in group:
            continue
        g_f, g_var = f[:, group].sum(1), var[:, group].sum(1)  # (N, P)
        g_values, g_grads = _moments(g_f, yy, xx)
        detected = (g_values[:, 0] > MIN_SNR * np.sqrt(g_var.sum(1))) & (ref_snr > MIN_SNR)
        g_shape, g_dshape = _shape(g_values, g_grads, radius)
        vals.append(np.where(detected[:, None], g_shape - ref_shape, np.nan))
        cov = np.einsum("nip,np,njp->nij", g_dshape, g_var, g_dshape)  # (N, 5, 5)
        blocks.append(np.where(detected[:, None, None], cov, 0.0))
        ion_grads.append((group, g_dshape))
    values = np.concatenate(vals, 1)  # (N, D)
    n_ratio = n_lines - 1
    # Halpha's part, shared by every feature: d(ratio)/df_ref = -1/F_ref in every cell, d(shape)/df_ref = -ref_dshape
    n_ions = (values.shape[1] - n_ratio) // len(SHAPE)
    inv_ref = 1.0 / np.where(ref_total > 0, ref_total, 1.0)
    ratio_ratio = var[:, ref].sum(1) * inv_ref**2  # (N,)
    ratio_shape = np.einsum("np,nkp->nk", var[:, ref], ref_dshape) * inv_ref[:, None]  # (N, 5)
    shape_shape = np.einsum("nip,np,njp->nij", ref_dshape, var[:, ref], ref_dshape)  # (N, 5, 5)
    noise = np.block([[np.broadcast_to(ratio_ratio[:, None, None], (n, n_ratio, n_ratio)),
                       np.broadcast_to(np.tile(ratio_shape, n_ions)[:, None, :], (n, n_ratio, len(SHAPE) * n_ions))],
                      [np.broadcast_to(np.tile(ratio_shape, n_ions)[:, :, None], (n, len(SHAPE) * n_ions, n_ratio)),
                       np.tile(shape_shape, (1, n_ions, n_ions))]])  # (N, D, D)
    start = 0
    for block in blocks:
        k = block.shape[1]
        noise[:, start:start + k, start:start + k] += block
        start += k
    # a line's ratio and its own ion's shape share the line's cells
    ratio_index = {i: i - (i > ref) for i in range(n_lines) if i != ref}
    for k, (group, g_dshape) in enumerate(ion_grads):
        shape = slice(n_ratio + len(SHAPE) * k, n_ratio + len(SHAPE) * (k + 1))
        for i in group:
            cross = np.einsum("np,nkp->nk", var[:, i], g_dshape) / line_total[:, i, None]  # (N, 5)
            noise[:, ratio_index[i], shape] += cross
            noise[:, shape, ratio_index[i]] += cross
    measured = np.isfinite(values)
    noise = np.where(measured[:, :, None] & measured[:, None, :], noise, 0.0)
    return values, noise


def _symmetries(lines: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 8 turns and mirrors of the map acting on the features, each as ``(perm, sign)``: ``T v = sign * v[perm]``."""
    n_ratio = len(lines) - 1
    n_ions = (len(names(lines)) - n_ratio) // len(SHAPE)
    # on one ion's (dy, dx, e1, e2, size): a quarter turn and a mirror of x generate the 8
    turn = (np.array([1, 0, 2, 3, 4]), np.array([1.0, -1.0, -1.0, -1.0, 1.0]))
    mirror = (np.array([0, 1, 2, 3, 4]), np.array([1.0, -1.0, 1.0, -1.0, 1.0]))

    def compose(a, b):  # a after b
        return b[0][a[0]], a[1] * b[1][a[0]]

    one = (np.arange(5), np.ones(5))
    elements = []
    for m in (one, mirror):
        t = one
        for _ in range(4):
            elements.append(compose(t, m))
            t = compose(turn, t)
    out = []
    for perm, sign in elements:
        full_perm = np.concatenate([np.arange(n_ratio)] + [n_ratio + 5 * k + perm for k in range(n_ions)])
        full_sign = np.concatenate([np.ones(n_ratio)] + [sign] * n_ions)
        out.append((full_perm, full_sign))
    return out


def _symmetric(mean, cov, lines):
    """The mean and covariance averaged over the map's turns and mirrors."""
    ms, cs = [], []
    for perm, sign in _symmetries(lines):
        ms.append(sign * mean[perm])
        cs.append(sign[:, None] * sign[None, :] * cov[np.ix_(perm, perm)])
    return np.mean(ms, 0), np.mean(cs, 0)


def _filled(values, noise, mean):
    """``(x, noise, measured)``: values with the unmeasured features at ``mean`` and the noise with those features
    cut off from the rest and of variance 1, so that with the survey's covariance cut off the same way
    (:func:`_against`) they drop out of every distance exactly (a Gaussian's marginal)."""
    measured = np.isfinite(values)
    x = np.where(measured, values, mean)
    both = measured[:, :, None] & measured[:, None, :]
    noise = np.where(both, noise, 0.0)
    idx = np.arange(values.shape[1])
    noise[:, idx, idx] += ~measured
    return x, noise, measured


def _distance_z(d2, k):
    """A chi-square of ``k`` degrees of freedom as a standard normal (Wilson & Hilferty 1931)."""
    k = np.maximum(k, 1)
    return ((np.maximum(d2, 0) / k) ** (1 / 3) - (1 - 2 / (9 * k))) / np.sqrt(2 / (9 * k))


def _against(x, noise, measured, mean, cov):
    """Each galaxy against one Gaussian convolved with its noise, over its measured features (:func:`_filled`):
    ``(inv (N, D, D), pr (N, D), d2 (N,), logdet (N,))`` with ``pr = inv (x - mean)``, ``d2 = (x - mean) pr``;
    ``inv`` is zero outside the measured features."""
    both = measured[:, :, None] & measured[:, None, :]
    total = np.where(both, cov[None], 0.0) + noise
    _, logdet = np.linalg.slogdet(total)
    inv = np.where(both, np.linalg.inv(total), 0.0)
    pr = np.einsum("nij,nj->ni", inv, x - mean)
    return inv, pr, np.einsum("ni,ni->n", x - mean, pr), logdet


def fit(values, noise, lines: Sequence[str]) -> dict:
    """``{"mean", "cov"}`` (lists): the survey's features (:func:`features` of its galaxies) as one Gaussian with
    their noise deconvolved (extreme deconvolution), the least likely :data:`TRIM` of the galaxies left out of each
    round, symmetric under turns and mirrors."""
    values, noise = np.asarray(values, np.float64), np.asarray(noise, np.float64)
    seen = np.isfinite(values).any(1)  # a galaxy without a measured feature (no Halpha detected) says nothing
    values, noise = values[seen], noise[seen]
    if not len(values):
        raise ValueError(f"no galaxy has {REFERENCE} detected above {MIN_SNR:g} sigma")
    with warnings.catch_warnings():  # a feature measured in no galaxy: NaN, replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(values, 0)
        centre = np.where(np.isfinite(centre), centre, 0.0)
        spread = 1.4826 * np.nanmedian(np.abs(values - centre), 0)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    mean, cov = _symmetric(centre, np.diag(spread**2), lines)
    for _ in range(ROUNDS):
        inv, pr, d2, logdet = _against(*_filled(values, noise, mean), mean, cov)
        # by likelihood, not distance: a well-measured galaxy of a rare class (a Seyfert) shapes the survey
        loglike = -0.5 * (d2 + logdet)
        kept = loglike >= np.quantile(loglike, TRIM)
        # extreme deconvolution: each galaxy's features without its noise, and what its noise leaves unknown of them
        b = (mean + pr @ cov)[kept]  # (K, D)
        unknown = cov[None] - cov @ inv[kept] @ cov  # (K, D, D)
        mean = b.mean(0)
        cov = ((b - mean).T @ (b - mean) + unknown.sum(0)) / kept.sum()
        mean, cov = _symmetric(mean, cov, lines)
    return {"mean": mean.tolist(), "cov": cov.tolist()}


def statistics(values, noise, model: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(stats (N, 2), feature (N,))``: each galaxy's :data:`STATISTICS` against the survey's Gaussian plus its
    own noise (its Mahalanobis distance as a normal z-score, its largest conditional |z| of one feature given the
    others), both NaN without a measured feature, and the index of that feature."""
    values, noise = np.asarray(values, np.float64), np.asarray(noise, np.float64)
    mean, cov = np.asarray(model["mean"]), np.asarray(model["cov"])
    x, n, measured = _filled(values, noise, mean)
    inv, pr, d2, _ = _against(x, n, measured, mean, cov)
    k = measured.sum(1)
    diag = np.einsum("nii->ni", inv)
    cond = np.where(measured, np.abs(pr) / np.sqrt(np.where(measured, diag, 1.0)), 0.0)
    stats = np.stack([_distance_z(d2, k), cond.max(1)], 1)
    stats[k == 0] = np.nan
    return stats, cond.argmax(1)


def block_features(flux, ivar, mask, lines: Sequence[str], rows=None, noise_factor=None):
    """:func:`features` of the galaxies ``rows`` (default all), :data:`BATCH` at a time from arrays that may be
    memory-mapped; ``noise_factor`` (N,) of every galaxy (default 1)."""
    rows = np.arange(len(flux)) if rows is None else np.asarray(rows)
    factor = np.ones(len(flux)) if noise_factor is None else np.asarray(noise_factor, np.float64)
    parts = [features(*(np.asarray(a[rows[i:i + BATCH]]) for a in (flux, ivar, mask)), lines,
                      factor[rows[i:i + BATCH]]) for i in range(0, len(rows), BATCH)]
    if not parts:
        d = len(names(lines))
        return np.empty((0, d)), np.empty((0, d, d))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def fit_survey(flux, ivar, mask, lines: Sequence[str], rows, seed: int = 0, noise_factor=None) -> dict:
    """:func:`fit` on at most :data:`FIT_GALAXIES` of the galaxies ``rows`` (the training split), drawn with
    ``seed``."""
    rows = np.asarray(rows)
    if len(rows) > FIT_GALAXIES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, FIT_GALAXIES, replace=False))
    return fit(*block_features(flux, ivar, mask, lines, rows, noise_factor), lines)


def block_statistics(flux, ivar, mask, lines: Sequence[str], model: dict, progress: bool = False,
                     noise_factor=None):
    """:func:`statistics` of every galaxy, :data:`BATCH` at a time, so a large survey is never held at once."""
    from tqdm.auto import tqdm

    stats, feature = np.empty((len(flux), len(STATISTICS))), np.zeros(len(flux), int)
    for start in tqdm(range(0, len(flux), BATCH), desc="census", unit="block", disable=not progress):
        rows = np.arange(start, min(start + BATCH, len(flux)))
        stats[rows], feature[rows] = statistics(*block_features(flux, ivar, mask, lines, rows, noise_factor), model)
    return stats, feature


def calibrate(stats) -> dict:
    """``{"median", "spread"}``: each of :data:`STATISTICS`' median and 1.4826 x MAD over the run's galaxies ``stats``
    (1 where it does not scatter)."""
    stats = np.asarray(stats, np.float64)
    median = np.nanmedian(stats, 0) if np.isfinite(stats).any() else np.zeros(stats.shape[1])
    spread = 1.4826 * np.nanmedian(np.abs(stats - median), 0) if np.isfinite(stats).any() else np.ones(stats.shape[1])
    return {"median": median.tolist(), "spread": np.where(spread > 0, spread, 1.0).tolist()}


def galaxy_scores(stats, feature, calibration: dict, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(score_census (N,), census_feature (N,) names)`` from :func:`statistics` and the run's :func:`calibrate`:
    exp of the larger of the two statistics in robust units; the feature is the one of the largest conditional
    z-score. NaN and None for a galaxy without a measured feature."""
    z = (np.asarray(stats, np.float64) - np.asarray(calibration["median"])) / np.asarray(calibration["spread"])
    measured = np.isfinite(z).all(1)
    best = np.where(measured[:, None], z, -np.inf).max(1)
    score = np.where(measured, np.exp(np.minimum(best, 700.0)), np.nan)
    return score, np.where(measured, np.asarray(names(lines), dtype=object)[np.asarray(feature)], None)


FORMAT = "blueberry-census/1"


def save(path, model: dict, calibration: dict, lines: Sequence[str]) -> None:
    """Write the survey's Gaussian (:func:`fit`) and the statistics' :func:`calibrate` to ``path`` (JSON, atomically)."""
    from core.io import write_json

    write_json(path, {"format": FORMAT, "lines": list(lines), "features": names(lines), "min_snr": MIN_SNR,
                      "model": model, "calibration": calibration})


def load(path, lines: Sequence[str], repair: str) -> tuple[dict, dict]:
    """``(model, calibration)`` of a run's census file; RunError naming the file and ``repair`` when it cannot be
    used with ``lines``."""
    from core.errors import RunError
    from core.io import read_versioned

    obj = read_versioned(path, FORMAT, RunError, repair)
    if obj.get("lines") != list(lines) or obj.get("features") != names(lines):
        raise RunError(f"{path}: made for lines {obj.get('lines')}, not the run's {list(lines)}; {repair}")
    try:
        model, calibration = obj["model"], obj["calibration"]
        d = len(names(lines))
        if np.shape(model["cov"]) != (d, d) or np.shape(model["mean"]) != (d,):
            raise ValueError("the Gaussian's shapes do not match the features")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: not a census of this run ({exc}); {repair}") from None
    return model, calibration
