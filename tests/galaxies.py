"""Galaxies whose every cell mixes a few spectra: what the line detectors' tests score (test_consistency, test_mixing)."""
from __future__ import annotations

import numpy as np

from core.lines import DR15_CHANNELS

LINES = list(DR15_CHANNELS)
L, S = len(LINES), 16
HA = LINES.index("Ha-6564")
OIII = [LINES.index("OIII-4960"), LINES.index("OIII-5008")]


def mixed_survey(n, seed=0, noise=0.02, spectra=3):
    """``n`` galaxies whose cells mix ``spectra`` positive spectra (the same for every galaxy and every call) with
    smooth weight maps; NOCOV outside a disc. ``(flux, ivar, mask)``, each ``(n, L, S, S)``."""
    mix = np.random.default_rng(12345).uniform(0.05, 1.0, (spectra, L))
    mix[:, HA] = 3.0
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:S, :S] - (S - 1) / 2
    flux = np.empty((n, L, S, S))
    for i in range(n):
        weights = [np.exp(-((x - rng.uniform(-3, 3)) ** 2 + (y - rng.uniform(-3, 3)) ** 2) / (2 * rng.uniform(2, 5) ** 2))
                   for _ in range(spectra)]
        flux[i] = 10 * rng.uniform(0.5, 2.0) * np.einsum("kl,kij->lij", mix, np.array(weights))  # (L, S, S)
    flux += rng.normal(0, noise, flux.shape)
    ivar = np.full(flux.shape, 1 / noise**2)
    mask = np.broadcast_to(x**2 + y**2 > (S / 2) ** 2, flux.shape).copy()
    return flux, ivar, mask


def with_oiii_moved(flux, ivar, mask, factor: float, y0: int, x0: int):
    """``(flux, ivar, mask)`` of two galaxies: the first of ``flux`` as it is, then the same with [OIII] multiplied by
    ``factor`` in a 4 x 4-cell patch at (y0, x0), where it no longer goes with the other lines."""
    odd = flux[:1].copy()
    odd[0, OIII, y0:y0 + 4, x0:x0 + 4] *= factor
    return np.concatenate([flux[:1], odd]), np.concatenate([ivar[:1]] * 2), np.concatenate([mask[:1]] * 2)
