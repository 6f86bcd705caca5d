"""Cross-line consistency: a second detector, independent of the autoencoder and of brightness.

The autoencoder's score (``core.scoring``) asks "does the model reproduce these maps?"; a
galaxy whose lines disagree with each other cell by cell (one line's morphology turned
against the others', a patch with odd ratios, an instrumental stripe in some lines) can
still be reproduced well enough to look ordinary. This detector asks a narrower question,
with no neural network: **is each cell's emission-line spectrum one that the survey's
cells make?**

1. :func:`fit_basis` learns ``k`` basis spectra (one flux per line) from the survey's
   well-measured cells (Halpha S/N > :data:`FIT_SNR`), each cell divided by its own Halpha,
   by a singular value decomposition (lines scaled by their median ratio so faint lines
   count): the few shapes that the survey's line ratios vary along.
2. :func:`consistency_scores` fits every cell of a galaxy as a linear combination of the
   basis, by weighted least squares with the measured noise plus a floor of
   :data:`FLOOR` (2 %) of the cell's **own** Halpha (local, so a bright spot elsewhere
   changes nothing), and takes the reduced chi-square of each cell. A galaxy's
   ``score_consistency`` is the mean of its worst :data:`TOP_FRACTION` (10 %) of cells with
   Halpha S/N > :data:`MIN_SNR`: a compact oddity is not diluted by the rest of the galaxy.

Multiplying a galaxy's fluxes by c (and ivar by 1/c^2) leaves every cell's fit, floor and
chi-square unchanged, so the score does not depend on brightness or distance. It is blind
to what keeps each cell's spectrum ordinary (a region brighter or darker in every line)
and to changes below the noise; the autoencoder's score covers the first. Pure numpy.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The line every cell is divided by and whose S/N selects cells (Halpha).
REF_LINE = "Ha-6564"
#: Basis spectra (the survey's cells' ratio vectors vary along this many directions).
N_BASIS = 4
#: Halpha S/N of the cells the basis is learned from.
FIT_SNR = 20.0
#: Cells the basis is learned from at most (a random sample, spread evenly over the survey).
FIT_CELLS = 200_000
#: Error floor of a cell's fit, as a fraction of the cell's own Halpha flux.
FLOOR = 0.02
#: Halpha S/N a cell needs to count in the score.
MIN_SNR = 3.0
#: The score is the mean reduced chi-square of this share of a galaxy's counted cells, the worst.
TOP_FRACTION = 0.10
#: Galaxies per block in :func:`consistency_scores` (bounds the memory: ~20 MB per galaxy at 32 x 32).
BLOCK = 64
#: The catalogue column.
COLUMN = "score_consistency"
DEFINITION = (
    "cross-line consistency: each cell's line fluxes fitted as a combination of the "
    f"survey's {N_BASIS} basis spectra (weighted least squares, noise plus a floor of {FLOOR:.0%} of the "
    f"cell's own Halpha); the mean reduced chi-square of the worst {TOP_FRACTION:.0%} of the cells with "
    f"Halpha S/N > {MIN_SNR:g}; independent of the flux scale and of the autoencoder"
)


def _cells(flux, ivar, mask):
    """Galaxy maps ``(N, L, S, S)`` as cells ``(N*S*S, L)``: flux and ivar 0 and good False where unusable."""
    n, n_lines = flux.shape[:2]
    flux = np.asarray(flux, np.float64).transpose(0, 2, 3, 1).reshape(-1, n_lines)  # (N*S*S, L)
    ivar = np.asarray(ivar, np.float64).transpose(0, 2, 3, 1).reshape(-1, n_lines)  # (N*S*S, L)
    good = ~np.asarray(mask, bool).transpose(0, 2, 3, 1).reshape(-1, n_lines)  # (N*S*S, L)
    good &= np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    return np.where(good, flux, 0.0), np.where(good, ivar, 0.0), good


def _ref(lines: Sequence[str]) -> int:
    if REF_LINE not in lines:
        raise ValueError(f"the consistency detector needs {REF_LINE} among the lines; these are {list(lines)}")
    return list(lines).index(REF_LINE)


def fit_basis(flux, ivar, mask, lines: Sequence[str], k: int = N_BASIS, max_cells: int = FIT_CELLS,
              seed: int = 0, block: int = 256) -> np.ndarray:
    """The ``(k, L)`` basis spectra of the survey ``flux``, ``ivar``, ``mask`` ``(N, L, S, S)``.

    Raises ValueError when fewer than ``4 k`` cells are well measured (S/N > FIT_SNR in
    Halpha and at most a quarter of the lines masked): too few to learn from.
    """
    ref, rng = _ref(lines), np.random.default_rng(seed)
    # Each block keeps at most its share of max_cells, so a survey of millions never holds all its cells.
    quota = max(1, -(-max_cells * block // max(len(flux), 1)))
    rows = []
    for start in range(0, len(flux), block):
        f, iv, good = _cells(flux[start:start + block], ivar[start:start + block], mask[start:start + block])
        keep = np.flatnonzero(good[:, ref] & (f[:, ref] * np.sqrt(iv[:, ref]) > FIT_SNR)
                              & (good.sum(1) >= 0.75 * f.shape[1]))
        if len(keep) > quota:
            keep = rng.choice(keep, quota, replace=False)
        rows.append(np.where(good[keep], f[keep] / f[keep, ref:ref + 1], np.nan))  # (cells, L) ratios to Halpha
    ratios = np.concatenate(rows) if rows else np.empty((0, len(lines)))
    if len(ratios) < 4 * k:
        raise ValueError(f"only {len(ratios)} well-measured cells (Halpha S/N > {FIT_SNR:g}); "
                         f"the consistency basis needs at least {4 * k}")
    median = np.nanmedian(ratios, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    ratios = np.where(np.isnan(ratios), median, ratios)
    # Each line in units of its median ratio, so a faint line's variation counts as much as Halpha's
    # (measured: in units of each line's noise instead, the demo's ROC-AUC fell from 0.94 to 0.77).
    scale = np.maximum(np.abs(median), 1e-3)
    _, _, vt = np.linalg.svd(ratios / scale, full_matrices=False)
    return (vt[:k] * scale).astype(np.float64)  # (k, L)


def consistency_scores(basis: np.ndarray, flux, ivar, mask, lines: Sequence[str],
                       block: int = BLOCK) -> np.ndarray:
    """``score_consistency`` of each galaxy ``(N,)``; NaN where no cell has Halpha S/N > MIN_SNR."""
    ref, (k, _) = _ref(lines), basis.shape
    n, out = len(flux), np.full(len(flux), np.nan)
    for start in range(0, n, block):
        stop = min(start + block, n)
        f, iv, good = _cells(flux[start:stop], ivar[start:stop], mask[start:stop])
        variance = np.where(good, 1.0 / np.where(good, iv, 1.0), np.inf) + (FLOOR * f[:, ref:ref + 1]) ** 2
        w = np.where(good, 1.0 / variance, 0.0)  # (C, L)
        normal = np.einsum("cl,kl,jl->ckj", w, basis, basis)  # (C, k, k)
        # A ridge relative to the matrix's own size keeps an empty cell solvable and the fit scale-free.
        normal += (1e-12 * np.trace(normal, axis1=1, axis2=2) + 1e-300)[:, None, None] * np.eye(k)
        coef = np.linalg.solve(normal, np.einsum("cl,kl,cl->ck", w, basis, f)[..., None])[..., 0]  # (C, k)
        chi2 = (w * (f - coef @ basis) ** 2).sum(1)  # (C,)
        dof = good.sum(1) - k
        counted = good[:, ref] & (f[:, ref] * np.sqrt(iv[:, ref]) > MIN_SNR) & (dof > 0)
        reduced = np.where(counted, chi2 / np.maximum(dof, 1), np.nan).reshape(stop - start, -1)  # (B, S*S)
        for i, row in enumerate(reduced):
            row = row[np.isfinite(row)]
            if row.size:
                top = max(1, int(TOP_FRACTION * row.size))
                out[start + i] = np.partition(row, row.size - top)[row.size - top:].mean()
    return out
