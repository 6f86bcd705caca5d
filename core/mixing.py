"""Spectral mixing: a third detector, with nothing to train: are a galaxy's lines a mix of two spectra?

A cell's emission is the sum of what a few ionising sources give there (young stars, an AGN, old
stars' diffuse LI(N)ER gas), each with its own spectrum of line ratios: the mixing sequences of IFU
surveys (Davies et al. 2016, MNRAS 462, 1616). So a galaxy's ``L x P`` matrix of line fluxes
(``L`` lines, ``P`` cells) is close to a matrix of rank :data:`RANK`: ``RANK`` spectra times
``RANK`` maps, smooth ratio gradients and dust bending it only a little. This detector:

1. fits that factorisation to each galaxy alone (:func:`residuals`): weighted alternating least
   squares, :data:`ITERATIONS` rounds from the galaxy's leading singular vectors, each cell
   weighted by ``1 / (1/ivar + (f * fit)**2)`` with ``f`` = :data:`FLOOR`, in units of the
   galaxy's Halpha level (``core.consistency.normalise``; without Halpha, of :data:`LEVEL_LINES`),
   and returns each cell's normalised residual ``(x - fit) * sqrt(weight)``;
2. looks for where the residuals agree in sign over a region (:func:`statistics`): per ion
   (a doublet is one group, ``core.consistency.line_groups``) and over all lines, the residuals
   are summed over the group's lines and matched-filtered by a Gaussian of each of
   :data:`SCALES` cells, ``S = sum(K r) / sqrt(F sum(K^2 w))`` (``w`` the number of measured lines
   in the cell), which is a standard normal for unit residuals at any scale and coverage: ``F``
   (:func:`filter_factors`, ``core.maps.filter_variance_factor``) is how much the neighbouring
   cells' shared noise adds to the variance of the filter's sum (1 for a single cell; up to 2.8
   for the demo's smallest bundles, 3.6 to 22 for real MaNGA cubes on 32 x 32 cells), so that
   a galaxy gridded finer than others is not scored odder; the statistic is the largest ``|S|``
   over the cells that the kernel finds at least :data:`COVER` measured;
3. puts each of those ``groups x scales`` statistics in units of its own scatter over the run's
   galaxies of like signal-to-noise (:func:`calibrate`: the median and 1.4826 x the median absolute
   deviation of its logarithm in :data:`SNR_BINS` bins of the galaxies' median Halpha S/N per cell,
   :func:`signal_to_noise`, interpolated between them) and takes the largest:
   ``score_mixing = exp(max z)`` (:func:`galaxy_scores`), so
   ``ln score_mixing`` is the galaxy's strongest coherent departure from a two-spectrum mix in
   robust standard deviations, and ``mixing_group`` names the ion (or ``all lines``) where it lies:
   where a moderate change was made, but a line made several times brighter can pull the fit
   towards it, and the misfit then shows in the other lines.

Why rank 2: ordinary demo galaxies fit to their noise with it (median reduced chi-square 0.91
against the noise alone; rank 1 gives 1.41, with a tenth of them above 40), and a third spectrum
absorbs what it should find: with rank 3 the injection benchmark's median kind for ``score_mixing``
alone fell from 93 to 66 (benchmarks/README.md, "A third detector").
Why coherent regions: a line whose morphology turns against the others, a patch with odd ratios,
an instrumental stripe, all move many neighbouring cells the same way, while noise does not; the
scales reach from one cell to about a third of the map.

What it cannot see: whatever keeps every cell a two-spectrum mix, above all a region brighter or
darker in every line with its ratios kept (a dust lane, dead fibres). The autoencoder's score covers
those. Multiplying a galaxy's fluxes by c (and ivar by 1/c^2) leaves the score unchanged. Pure numpy
and torch on the CPU; ~7 ms a galaxy at 32 x 32 on 2 cores.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core import consistency

#: Spectra (and maps) of the factorisation, unless ``embed --mixing-rank`` says otherwise; the run's is kept in its
#: manifest with the calibration (:func:`rank_of`).
RANK = 2
#: Each cell's error floor in the fit and its residuals, a fraction of the fitted flux.
FLOOR = 0.03
#: Rounds of alternating least squares: the median reduced chi-square of demo galaxies moves 0.1 % after 10.
ITERATIONS = 10
#: Gaussian sigmas (cells) of the matched filters; 0 is the single cell.
SCALES = (0.0, 1.0, 2.0, 3.5)
#: A filtered cell counts where the kernel finds at least this share of the group's lines measured.
COVER = 0.5
#: :func:`calibrate` puts each statistic in units of its scatter among galaxies of like signal-to-noise: this many
#: bins of equal counts (fewer where a bin would hold under :data:`MIN_BIN` galaxies). The two-spectrum mix's own
#: misfit grows with the signal-to-noise (a well-measured galaxy shows what the mix cannot follow), and over the
#: whole run the best measured galaxies made the tail: on the demo, calibrated in one bin, 19 of the 20 ordinary
#: galaxies among the 60 highest anomaly scores were there by score_mixing, and the average precision fell to 0.80.
SNR_BINS, MIN_BIN = 10, 100
#: The lines whose level sets a galaxy's units, the first the run has: Halpha (as ``core.consistency``), else
#: the brightest lines of most galaxies.
LEVEL_LINES = (consistency.REF_LINE, "OIII-5008", "Hb-4862", "NII-6585", "SII-6718")
#: Galaxies per block.
BATCH = 256
#: The catalogue columns.
COLUMN = "score_mixing"
GROUP_COLUMN = "mixing_group"
ALL_LINES = "all lines"
FIT_COLUMNS = {
    "chi2_mixing": f"reduced chi-square of the galaxy's mix (of the run's rank, {RANK} by default) over every "
                   f"measured line and cell, against the noise and a {FLOOR:.0%} floor",
    "chi2_mixing_noise": "the same against the measured noise alone (1: fitted to the noise)",
}
DEFINITION = (
    f"spectral mixing: each galaxy's line maps fitted alone as a mix of a few spectra (the run's rank, {RANK} by "
    "default; weighted least squares, "
    f"noise plus a {FLOOR:.0%} floor); the residuals summed per ion and over all lines and matched-filtered by "
    f"Gaussians of {', '.join(f'{s:g}' for s in SCALES)} cells (their variance counting the noise that neighbouring "
    "cells share); each largest |S| in units of its scatter over the "
    f"run's galaxies of like signal-to-noise (median and 1.4826 x MAD of its log in {SNR_BINS} bins of their median "
    "Halpha S/N per cell, interpolated); exp of the largest. No training; independent of the flux "
    "scale and of the other detectors"
)


def groups(lines: Sequence[str]) -> list[tuple[str, list[int]]]:
    """``(name, line indices)`` of every ion (a doublet is one group) and of all lines together."""
    ions = [(lines[idx[0]].split("-")[0], idx) for idx in consistency.line_groups(lines)]
    return [*ions, (ALL_LINES, list(range(len(lines))))]


def _level_line(lines: Sequence[str]) -> int:
    """The line whose level sets each galaxy's units: the first of :data:`LEVEL_LINES` the run has, else its first.

    Chosen from the run's lines alone: a choice made from the galaxies in a block would give a galaxy scored
    alone (``train score``) other units, and so another fit, than among the run's (``embed``).
    """
    return next((list(lines).index(ln) for ln in LEVEL_LINES if ln in lines), 0)


def residuals(flux, ivar, mask, lines: Sequence[str], fits=None, rank: int = RANK) -> np.ndarray:
    """Normalised residuals ``(N, L, S, S)`` float32 of each galaxy's mix of ``rank`` spectra; NaN where unmeasured.

    With ``fits`` (an ``(N, 2)`` array) each galaxy's :data:`FIT_COLUMNS` are written into it. ``rank``: the
    run's (:func:`rank_of`), :data:`RANK` unless ``embed --mixing-rank`` said otherwise.
    """
    import torch

    # float32: float64 takes twice as long (35 s of the demo's embed, not 16) for a score that then moves by 1e-5
    # rather than 1e-3 when every flux is scaled (tests/test_mixing.py)
    x, iv, good = (torch.from_numpy(a) for a in consistency.normalise(flux, ivar, mask, _level_line(lines)))
    n, n_lines, size, _ = x.shape
    data = x.reshape(n, n_lines, size * size)  # (B, L, P)
    noise = (iv * good).reshape(n, n_lines, size * size)  # (B, L, P) inverse variance, 0 where unmeasured
    # Start from the leading singular vectors of the data in units of (noise + 1): bright, well-measured cells lead.
    u, s, _ = torch.linalg.svd(data * noise.sqrt() / (1 + noise.sqrt()), full_matrices=False)
    spectra = u[:, :, :rank] * s[:, None, :rank]  # (B, L, K)
    weight, ridge = noise, 1e-6 * torch.eye(rank).reshape(-1)
    for _ in range(ITERATIONS):
        wx = weight * data
        # each cell's maps from the spectra: (S^T W_p S) a_p = S^T W_p x_p, then each line's spectrum from the maps
        outer = (spectra[:, :, :, None] * spectra[:, :, None, :]).reshape(n, n_lines, rank * rank)  # (B, L, K*K)
        maps = _solve(torch.bmm(weight.transpose(1, 2), outer) + ridge,
                      torch.bmm(wx.transpose(1, 2), spectra))  # (B, P, K)
        outer = (maps[:, :, :, None] * maps[:, :, None, :]).reshape(n, size * size, rank * rank)  # (B, P, K*K)
        spectra = _solve(torch.bmm(weight, outer) + ridge, torch.bmm(wx, maps))  # (B, L, K)
        fit = torch.bmm(spectra, maps.transpose(1, 2))  # (B, L, P)
        weight = noise / (1 + noise * (FLOOR * fit) ** 2)
    resid = (data - fit) * weight.sqrt()
    if fits is not None:
        count = (noise > 0).sum((1, 2)).clamp(min=1)
        fits[:, 0] = (resid**2).sum((1, 2)).numpy() / count.numpy()
        fits[:, 1] = ((data - fit) ** 2 * noise).sum((1, 2)).numpy() / count.numpy()
    return torch.where(noise > 0, resid, torch.nan).reshape(n, n_lines, size, size).numpy()


def _solve(m, rhs):
    """Solve the ``K x K`` systems ``m`` (flattened, ``(..., K*K)``) for ``rhs`` ``(..., K)``."""
    import torch

    k = rhs.shape[-1]
    if k == 2:  # closed form: batched LAPACK on millions of 2 x 2 systems is many times slower
        a, b, d = m[..., 0], m[..., 1], m[..., 3]
        det = a * d - b * b
        det = torch.where(det.abs() > 0, det, torch.ones_like(det))
        return torch.stack([(d * rhs[..., 0] - b * rhs[..., 1]) / det, (a * rhs[..., 1] - b * rhs[..., 0]) / det], -1)
    return torch.linalg.solve(m.reshape(*m.shape[:-1], k, k), rhs.unsqueeze(-1)).squeeze(-1)


def _kernel(sigma: float) -> np.ndarray:
    """A 1-D Gaussian of peak 1 (the single cell for 0), out to 3 sigma."""
    if sigma == 0:
        return np.ones(1)
    half = int(np.ceil(3 * sigma))
    return np.exp(-np.arange(-half, half + 1) ** 2 / (2 * sigma**2))


def _sums(resid, lines: Sequence[str]):
    """``(total, count, size)``: each group's residuals summed per cell and its measured lines per cell, both
    ``(N, G, S, S)`` float64, and its number of lines ``(G, 1, 1)``."""
    measured = np.isfinite(resid)
    values = np.where(measured, resid, 0.0)
    index = [idx for _, idx in groups(lines)]
    total = np.stack([values[:, idx].sum(1) for idx in index], 1).astype(np.float64)  # (N, G, S, S)
    count = np.stack([measured[:, idx].sum(1) for idx in index], 1).astype(np.float64)  # (N, G, S, S)
    return total, count, np.array([len(idx) for idx in index], np.float64)[:, None, None]


def _filtered(total, count, size, sigma: float) -> np.ndarray:
    """The signed matched-filter maps ``S`` ``(N, G, S, S)`` at one scale; NaN where the kernel finds fewer than
    :data:`COVER` of the group's lines measured."""
    from scipy.ndimage import convolve1d

    k = _kernel(sigma)  # the 2-D kernel is k(y) k(x): two passes
    num = convolve1d(convolve1d(total, k, axis=2, mode="constant"), k, axis=3, mode="constant")
    var = convolve1d(convolve1d(count, k**2, axis=2, mode="constant"), k**2, axis=3, mode="constant")
    full = np.square(k).sum() ** 2 * size  # the variance with every line of every cell measured
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var >= COVER * full, num / np.sqrt(var), np.nan)


def filter_factors(cell_spaxels, noise_sigma) -> np.ndarray:
    """``(N, len(SCALES))`` each galaxy's variance factor ``F`` of each matched filter (``core.maps.GridMaps``'s
    ``cell_spaxels`` and ``noise_sigma``, ``(N,)`` each)."""
    from core.maps import filter_variance_factor  # here: core.maps reads FITS files, which the app's import spares

    cells = np.atleast_1d(np.asarray(cell_spaxels, np.float64))
    sigmas = np.broadcast_to(np.asarray(noise_sigma, np.float64), cells.shape)
    return np.array([[filter_variance_factor(_kernel(scale), c, s) for scale in SCALES]
                     for c, s in zip(cells, sigmas)]).reshape(len(cells), len(SCALES))


def catalogue_factors(catalogue) -> np.ndarray | None:
    """:func:`filter_factors` of every galaxy of a dataset's (or run's) catalogue; None for a dataset ingested before
    it had the columns (0.3.0), whose cells are then taken as independent."""
    from core.maps import CELL_SPAXELS, NOISE_SIGMA

    if CELL_SPAXELS not in catalogue or NOISE_SIGMA not in catalogue:
        return None
    return filter_factors(catalogue[CELL_SPAXELS].to_numpy(np.float64), catalogue[NOISE_SIGMA].to_numpy(np.float64))


def statistics(resid, lines: Sequence[str], factors=None) -> np.ndarray:
    """``(N, G, len(SCALES))`` the largest matched-filter ``|S|`` of each group (:func:`groups`) at each scale, with
    each galaxy's :func:`filter_factors` ``(N, len(SCALES))`` (default 1: independent cells)."""
    sums = _sums(resid, lines)
    out = np.zeros((len(resid), len(groups(lines)), len(SCALES)), np.float32)
    for j, sigma in enumerate(SCALES):
        s = np.nan_to_num(np.abs(_filtered(*sums, sigma)), nan=0.0)
        out[:, :, j] = s.reshape(*s.shape[:2], -1).max(2)
    if factors is not None:
        out /= np.sqrt(np.asarray(factors, np.float32))[:, None, :]
    return out


def departure(resid, lines: Sequence[str], calibration: dict, factors=None, snr=None) -> tuple[str, float, np.ndarray]:
    """``(group, scale, map)`` of one galaxy's residuals ``(L, S, S)``: the group and scale of its largest z-score
    (those of :func:`galaxy_scores`, with the run's :func:`calibrate`, the galaxy's :func:`filter_factors`
    ``(len(SCALES),)`` and its :func:`signal_to_noise`) and that signed matched-filter map ``(S, S)`` in sigma:
    where on the galaxy ``score_mixing`` comes from."""
    sums = _sums(np.asarray(resid)[None], lines)
    maps = np.stack([_filtered(*sums, sigma)[0] for sigma in SCALES], 1)  # (G, T, S, S)
    if factors is not None:
        maps = maps / np.sqrt(np.asarray(factors, np.float64))[None, :, None, None]
    stats = np.nan_to_num(np.abs(maps), nan=0.0).reshape(*maps.shape[:2], -1).max(2)  # (G, T)
    z = _z(stats[None], calibration, None if snr is None else [snr])[0]  # (G, T)
    g, t = np.unravel_index(np.argmax(z), z.shape)
    return groups(lines)[g][0], SCALES[t], maps[g, t]


def block_statistics(flux, ivar, mask, lines: Sequence[str], fits=None, progress: bool = False,
                     rank: int = RANK, factors=None) -> np.ndarray:
    """:func:`statistics` of every galaxy's mix of ``rank`` spectra, :data:`BATCH` at a time so a large survey is
    never held at once; with ``fits`` (``(N, 2)``) each galaxy's :data:`FIT_COLUMNS`; ``factors``: every galaxy's
    :func:`filter_factors` (default 1)."""
    from tqdm.auto import tqdm

    out = np.empty((len(flux), len(groups(lines)), len(SCALES)), np.float32)
    for start in tqdm(range(0, len(flux), BATCH), desc="mixing", unit="block", disable=not progress):
        rows = slice(start, min(start + BATCH, len(flux)))
        resid = residuals(np.asarray(flux[rows]), np.asarray(ivar[rows]), np.asarray(mask[rows]), lines,
                          None if fits is None else fits[rows], rank=rank)
        out[rows] = statistics(resid, lines, None if factors is None else factors[rows])
    return out


def signal_to_noise(flux, ivar, mask, lines: Sequence[str]) -> np.ndarray:
    """``(N,)`` each galaxy's median signal-to-noise per measured cell of the line that sets its level (Halpha where
    the run has it): what :func:`calibrate` compares galaxies by. A median, so that a compact bright region hardly
    moves it; NaN without a measured cell."""
    ref = _level_line(lines)
    f = np.asarray(flux[:, ref], np.float64)  # (N, S, S): one line, so a memory-mapped survey is read in one pass
    iv = np.asarray(ivar[:, ref], np.float64)
    good = ~np.asarray(mask[:, ref], bool) & np.isfinite(f) & (iv > 0)
    snr = np.where(good, f * np.sqrt(np.where(good, iv, 0.0)), np.nan).reshape(len(f), -1)
    out = np.full(len(f), np.nan)
    seen = good.reshape(len(f), -1).any(1)
    out[seen] = np.nanmedian(snr[seen], axis=1)
    return out


def _log_snr(snr) -> np.ndarray:
    """ln of :func:`signal_to_noise`, a galaxy without one (or below 0.01) at ln 0.01: among the faintest."""
    return np.log(np.maximum(np.nan_to_num(np.asarray(snr, np.float64), nan=0.0), 0.01))


def _logs(stats) -> np.ndarray:
    """The statistics' logarithms; a statistic of 0 (no cell counted) as ln 1e-12."""
    return np.log(np.maximum(np.asarray(stats, np.float64), 1e-12))


def _z(stats, calibration: dict, snr=None) -> np.ndarray:
    """Each statistic (``(N, G, T)``) in units of its scatter over the run's galaxies of like signal-to-noise
    (:func:`calibrate`): the bins' medians and spreads interpolated linearly in ln S/N between the bins' centres,
    held beyond the first and the last. A calibration of one bin (or of a run embedded before the bins) is the
    same for every galaxy."""
    median, spread = np.asarray(calibration["median"]), np.asarray(calibration["spread"])
    if median.ndim == 2:  # (G, T): one bin
        return (_logs(stats) - median) / spread
    if snr is None:
        raise ValueError("a calibration by signal-to-noise needs each galaxy's signal_to_noise")
    centres = np.asarray(calibration["log_snr"])
    at = np.clip(np.interp(_log_snr(snr), centres, np.arange(len(centres))), 0, len(centres) - 1)  # (N,) bin position
    lo = np.minimum(at.astype(int), len(centres) - 2) if len(centres) > 1 else np.zeros(len(at), int)
    w = (at - lo)[:, None, None] if len(centres) > 1 else np.zeros((len(at), 1, 1))
    hi = np.minimum(lo + 1, len(centres) - 1)
    return (_logs(stats) - ((1 - w) * median[lo] + w * median[hi])) / ((1 - w) * spread[lo] + w * spread[hi])


def calibrate(stats, rank: int = RANK, snr=None) -> dict:
    """``{"median", "spread", "log_snr", "rank"}``: each statistic's log, its median and 1.4826 x MAD (1 where it
    does not scatter) over the galaxies ``stats`` in each of :data:`SNR_BINS` bins of equal counts of their
    :func:`signal_to_noise` ``snr`` (nested lists ``(B, G, len(SCALES))``), the bins' median ln S/N, and the rank
    of the mix they came from. Without ``snr``, one bin of every galaxy (``(G, len(SCALES))``)."""
    logs = _logs(stats)  # (N, G, T)

    def robust(part):
        median = np.median(part, axis=0)
        spread = 1.4826 * np.median(np.abs(part - median), axis=0)
        return median, np.where(spread > 0, spread, 1.0)

    if snr is None:
        median, spread = robust(logs)
        return {"median": median.tolist(), "spread": spread.tolist(), "rank": int(rank)}
    log_snr = _log_snr(snr)
    bins = np.array_split(np.argsort(log_snr, kind="stable"), max(1, min(SNR_BINS, len(logs) // MIN_BIN)))
    parts = [robust(logs[b]) for b in bins]
    return {"median": [m.tolist() for m, _ in parts], "spread": [s.tolist() for _, s in parts],
            "log_snr": [float(np.median(log_snr[b])) for b in bins], "rank": int(rank)}


def calibration_of(score_info) -> dict | None:
    """The run's :func:`calibrate` as embed kept it in the manifest's ``score`` (a ``ScoreInfo``); None for a run
    without ``score_mixing``."""
    return score_info.components.get(COLUMN, {}).get("statistics") if score_info is not None else None


def rank_of(calibration: dict) -> int:
    """The rank of the mix a run's statistics came from (:data:`RANK` for a run embedded before it was kept)."""
    return int(calibration.get("rank", RANK))


def galaxy_scores(stats, calibration: dict, lines: Sequence[str], snr=None) -> tuple[np.ndarray, np.ndarray]:
    """``(score_mixing (N,), mixing_group (N,) names)`` from :func:`statistics`, the run's :func:`calibrate` and
    each galaxy's :func:`signal_to_noise` ``snr``."""
    z = _z(stats, calibration, snr)
    z = z.reshape(len(z), -1)  # (N, G*T)
    names = np.array([name for name, _ in groups(lines)], dtype=object)
    # a galaxy with no cell measured has every statistic 0: no score, as in the other detectors
    measured = np.asarray(stats).reshape(len(z), -1).max(1, initial=0) > 0
    best = z.argmax(1) if z.size else np.zeros(0, int)
    return (np.where(measured, np.exp(np.minimum(z.max(1, initial=-np.inf), 700.0)), np.nan),
            np.where(measured, names[best // len(SCALES)], None))
