"""``score_sharp``: structure sharper than the PSF lets through, which no sky can make.

Every emission-line map of an IFU galaxy is the sky seen through the PSF. The sky's line
emission is not negative, and the reconstructed PSF of a MaNGA cube is close to a Gaussian of
sigma ``s`` (its FWHM is in the file's header). For a Gaussian PSF and any non-negative sky
``g``, ``ln f(x) + |x|^2 / (2 s^2)`` is a convex function of the position ``x`` (it is the
logarithm of the Laplace transform of the non-negative measure ``g(y) exp(-|y|^2 / (2 s^2))``),
so at every spaxel ``x`` and for every step ``d``::

    f(x) <= sqrt(f(x + d) f(x - d)) exp(|d|^2 / (2 s^2))

A peak can be no sharper than the PSF's own, whatever the sky: a giant HII region, a nucleus, an
ionisation cone, a line ratio changed anywhere, all meet the bound, and it is met with equality only
at the peak of an isolated point source. A cosmic ray, a stripe, the rim of an unflagged dead fibre,
a gain that jumps between fibres, the edge of a region dimmed by a reduction break it.

The test (:func:`significance`), per line, spaxel and step ``d`` in :data:`STEPS`, where the three
spaxels are good::

    z = (f(x) - G) / sigma_v,   G = sqrt(f(x + d) f(x - d)) exp(|d|^2 / (2 s^2))
    sigma_v^2 = sigma(x)^2 + (G / 2)^2 (sigma(x + d)^2 / f(x + d)^2 + sigma(x - d)^2 / f(x - d)^2)

A neighbour detected at less than :data:`MIN_SNR` sigma (the logarithm needs a positive flux, and the
propagation of errors a well-measured one) counts as its upper limit, its flux (where positive) plus
``MIN_SNR`` sigma, without noise: more than it holds in all but 0.13 % of cases, so the bound is looser,
and a spike where the line is faint is still tested.

The galaxy's score (:data:`DEFINITION`) is ``1 + sum (z - Z0)^2`` over the tests with
``z > Z0`` = :data:`Z0`, so that a galaxy that meets the bound everywhere scores about 1 (each test
at the bound adds 0.0085 on average: the noise's own tail). ``s`` is the smallest of the header's
FWHMs (``core.maps.PSF_KEYS``): a wider PSF is the narrower one convolved with a Gaussian, a
non-negative kernel, so the sharpest band's bound holds for every line. A file without them has no
score (NaN), and the anomaly score leaves the detector out for it.

The spaxels' noise is taken as independent. A MaNGA cube's neighbouring spaxels share noise, and
positively correlated noise makes ``f(x) - G`` less noisy than ``sigma_v`` says, so on real cubes
the test is conservative: on the real galaxy 7815-3702 (``../shared/data``), 3 of its 51,233 tests
lie above 3 sigma, the largest at 3.6. The project's synthetic files have independent noise
(``core.synth.observe``) and a Gaussian PSF, where the test is exact to first order.

Why it is in the anomaly score: nothing else in it sees a change that is grey (every line alike)
and sharp, such as dead fibres the reduction missed (the injection benchmark's ``dead_fibres`` at
strength 0.5: median percentile 46 without it, 95 with it; README.md, "The anomaly score"). It
also flags noise larger than the file's inverse variance says, since the tests' z then scatter
wider than 1. Pure numpy: the why view imports it without astropy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COLUMN = "score_sharp"
#: The catalogue's columns on where the bound is broken most: the line with the largest share of the
#: score, and the offset (arcsec, along the map's columns and rows) of its largest single test from the centre.
LINE_COLUMN, DX_COLUMN, DY_COLUMN = "sharp_line", "sharp_dx", "sharp_dy"
COLUMNS = (COLUMN, LINE_COLUMN, DX_COLUMN, DY_COLUMN)
#: The steps ``(dy, dx)`` of the test, in spaxels: along the rows, the columns and both diagonals.
STEPS = ((0, 1), (1, 0), (1, 1), (1, -1))
#: A neighbour detected under this S/N counts as its upper limit: its flux (where positive) plus MIN_SNR sigma.
MIN_SNR = 3.0
#: The significance (sigma) beyond which a test adds to the score. Measured on the injection benchmark: the sum of
#: every positive z's square let the noise at the many spaxels near the bound outweigh a dead fibre's rim.
Z0 = 2.0
DEFINITION = (
    "1 + sum over lines, spaxels and steps d of (z - 2)^2 where z > 2; z is how many sigma the spaxel's flux "
    "exceeds sqrt(f(x+d) f(x-d)) exp(|d|^2 / 2 s^2), the most that any non-negative sky seen through a Gaussian "
    "PSF of sigma s (the header's sharpest FWHM) allows; NaN without a PSF in the header")


@dataclass(frozen=True)
class Sharpness:
    """What :func:`measure` found in one galaxy: its catalogue columns."""

    score: float  # score_sharp (DEFINITION); NaN without a PSF
    line: str | None  # the line with the largest share of the score; None when no test exceeds Z0
    dx: float  # arcsec along the map's columns from the centre to the largest single test; NaN when none exceeds
    dy: float  # the same along the rows

    def row(self) -> dict:
        """The catalogue columns (``COLUMNS``)."""
        return {COLUMN: self.score, LINE_COLUMN: self.line, DX_COLUMN: self.dx, DY_COLUMN: self.dy}


def psf_sigma(fwhm: float, pixscale: float) -> float:
    """The Gaussian sigma, in spaxels, of a PSF of ``fwhm`` arcsec on spaxels of ``pixscale`` arcsec."""
    return fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / pixscale


def _neighbour(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``a[..., y + dy, x + dx]`` at ``(y, x)``; ``fill`` where that falls outside the map."""
    ny, nx = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(a, pad, constant_values=fill)  # (..., ny + 2, nx + 2): steps are at most one spaxel
    return padded[..., 1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]


def significance(flux, ivar, mask, sigma: float) -> np.ndarray:
    """``(D, L, ny, nx)`` each test's z (the module's docstring) for the maps ``flux``, ``ivar``, ``mask``
    ``(L, ny, nx)`` (mask True = bad) and a PSF of ``sigma`` spaxels; NaN where the spaxel is not tested."""
    flux = np.asarray(flux, np.float64)
    good = ~np.asarray(mask, bool) & (np.asarray(ivar) > 0) & np.isfinite(flux)
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)  # (L, ny, nx)
    f = np.where(good, flux, 0.0)
    limit = MIN_SNR * np.sqrt(var)
    detected = good & (f > limit)
    # an undetected neighbour counts as its upper limit, without noise: more than it likely holds
    f_bound = np.where(detected, f, np.maximum(f, 0.0) + limit)
    var_bound = np.where(detected, var, 0.0)
    out = np.full((len(STEPS), *f.shape), np.nan)
    for k, (dy, dx) in enumerate(STEPS):
        up, down = _neighbour(f_bound, dy, dx, 0.0), _neighbour(f_bound, -dy, -dx, 0.0)  # (L, ny, nx) f(x ± d)
        tested = good & _neighbour(good, dy, dx, False) & _neighbour(good, -dy, -dx, False)
        up, down = np.where(tested, up, 1.0), np.where(tested, down, 1.0)
        bound = np.sqrt(up * down) * np.exp((dy * dy + dx * dx) / (2.0 * sigma**2))
        rel = _neighbour(var_bound, dy, dx, 0.0) / up**2 + _neighbour(var_bound, -dy, -dx, 0.0) / down**2
        z = (f - bound) / np.sqrt(np.where(tested, var + 0.25 * bound**2 * rel, 1.0))
        out[k] = np.where(tested, z, np.nan)
    return out


def excess(z: np.ndarray) -> np.ndarray:
    """``(D, L, ny, nx)`` each test's term of the score, ``(z - Z0)^2`` where ``z > Z0``, else 0."""
    return np.where(z > Z0, (z - Z0) ** 2, 0.0)  # untested (NaN) tests compare False


def galaxy_significance(g, lines: Sequence[str] | None = None) -> tuple[np.ndarray | None, list[int]]:
    """``(z (D, L, ny, nx), idx)``: :func:`significance` of a galaxy's native maps ``g`` (``core.maps.GalaxyMaps``)
    in ``lines`` (default all), whose indices in ``g.lines`` are ``idx``; z is None without a PSF in the header."""
    idx = [g.lines.index(ln) for ln in (g.lines if lines is None else lines)]
    if not (np.isfinite(g.psf_fwhm) and g.psf_fwhm > 0):
        return None, idx
    return significance(g.flux[idx], g.ivar[idx], g.mask[idx], psf_sigma(g.psf_fwhm, g.pixscale)), idx


def measure(g, lines: Sequence[str] | None = None) -> Sharpness:
    """:class:`Sharpness` of a galaxy's native maps ``g`` (``core.maps.GalaxyMaps``) in ``lines`` (default all)."""
    z, idx = galaxy_significance(g, lines)
    if z is None:
        return Sharpness(float("nan"), None, float("nan"), float("nan"))
    terms = excess(z)
    per_line = terms.sum((0, 2, 3))  # (L,)
    if not per_line.any():
        return Sharpness(1.0, None, float("nan"), float("nan"))
    _, _, y, x = np.unravel_index(np.argmax(terms), terms.shape)
    return Sharpness(1.0 + float(per_line.sum()), g.lines[idx[int(np.argmax(per_line))]],
                     round(float((x - g.center[0]) * g.pixscale), 2), round(float((y - g.center[1]) * g.pixscale), 2))


def cell_map(z: np.ndarray, crop, size: int) -> np.ndarray:
    """``(size, size)`` the largest of the tests' ``z`` (:func:`significance`, ``(D, L, ny, nx)``) above the bound,
    0 where every test meets it, in each cell of a ``size`` x ``size`` grid over the native box ``crop``
    ``(x0, y0, x1, y1)`` (``core.maps.GridMaps.crop``); NaN for a cell that holds no tested spaxel. Each spaxel
    goes to the cell its centre falls in: a map to see where, not a measurement."""
    tested = np.isfinite(z).any((0, 1))  # (ny, nx)
    zmax = np.where(tested, np.where(np.isfinite(z), z, -np.inf).max((0, 1)), np.nan)
    x0, y0, x1, _ = crop
    side = (x1 - x0) / size
    ys, xs = np.nonzero(tested)
    cy, cx = np.floor((ys + 0.5 - y0) / side).astype(int), np.floor((xs + 0.5 - x0) / side).astype(int)
    inside = (cy >= 0) & (cy < size) & (cx >= 0) & (cx < size)
    out = np.full((size, size), np.nan)
    np.fmax.at(out, (cy[inside], cx[inside]), np.maximum(zmax[ys[inside], xs[inside]], 0.0))
    return out
