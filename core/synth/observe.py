"""What the DAP would write for a synthetic galaxy's noiseless maps: footprint, noise, masks.

The hexagonal footprint of the bundle (``NOCOV``, ``LOWCOV`` outside it), noise that grows
on the continuum and in the blue, ``UNRELIABLE`` where the continuum is too faint, and now
and then a dead fibre (``DEADFIBER``, no data) or a foreground star (``FORESTAR``,
spurious line residuals); and the equivalent widths of the lines over the stellar
continuum (:func:`equivalent_widths`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.lines import wavelength
from core.lines import DAPPIXMASK_BITS
from core.synth.config import SynthConfig
from core.synth.geometry import uniform

#: The MANGA_DAPPIXMASK bits that the generator sets (numbers from the reader's table).
NOCOV, LOWCOV, DEADFIBER, FORESTAR, UNRELIABLE, DONOTUSE = (
    DAPPIXMASK_BITS[name] for name in ("NOCOV", "LOWCOV", "DEADFIBER", "FORESTAR", "UNRELIABLE", "DONOTUSE"))


@dataclass
class Observation:
    """One galaxy's maps as the DAP would write them."""

    flux: np.ndarray  # (C, n, n) model plus noise, zero where nothing was observed
    ivar: np.ndarray  # (C, n, n) inverse variance of the noise, zero where nothing was observed
    mask: np.ndarray  # (C, n, n) int32 MANGA_DAPPIXMASK bits
    snr: np.ndarray  # (n, n) continuum S/N (SPX_SNR)
    binid: np.ndarray  # (n, n) int32: one bin per covered spaxel, -1 elsewhere
    has_star: bool  # a foreground star was added
    has_dead: bool  # a dead fibre was added


def hex_radius(x, y):
    """The 'radius' of a hexagon with vertices on the x axis: a point is inside one of
    circumradius R where this is <= R (MaNGA's bundles point their corners east-west)."""
    ax, ay = np.abs(x), np.abs(y)
    return np.maximum(ay * 2 / math.sqrt(3), ax + ay / math.sqrt(3))


@dataclass
class _Footprint:
    """The bundle's footprint on the map."""

    xo: np.ndarray  # (1, n) arcsec east of the centre
    yo: np.ndarray  # (n, 1) arcsec north of the centre
    radius: float  # circumradius of the hexagon (arcsec)
    covered: np.ndarray  # (n, n) inside the hexagon

    def disc(self, x: float, y: float, r: float) -> np.ndarray:
        """(n, n) the covered spaxels within ``r`` arcsec of (``x``, ``y``)."""
        return self.covered & (np.hypot(self.xo - x, self.yo - y) <= r)


def _dead_fibre(rng, fp: _Footprint) -> np.ndarray:
    """(n, n) the spaxels a dead fibre leaves without data."""
    # Fibres sit on a hexagonal lattice of pitch 2.5"; a dead one leaves a 2" hole.
    jj, ii = np.mgrid[-7:8, -7:8]
    fx, fy = 2.5 * ii + 1.25 * (jj % 2), 2.5 * jj * math.sqrt(3) / 2
    inside = hex_radius(fx, fy) <= fp.radius - 1.25
    pick = rng.integers(int(inside.sum()))
    return fp.disc(fx[inside][pick], fy[inside][pick], 1.0)


def _foreground_star(rng, fp: _Footprint) -> np.ndarray:
    """(n, n) the spaxels a foreground star covers."""
    dist, ang = uniform(rng, 3.0, max(fp.radius - 1.0, 3.5)), uniform(rng, 0, 2 * math.pi)
    return fp.disc(dist * math.sin(ang), dist * math.cos(ang), uniform(rng, 1.5, 2.5))


def observe(rng, model, cont, radius: float, sigma_gal: float, early: bool, channels,
            config: SynthConfig) -> Observation:
    """Footprint, noise and masks for noiseless maps ``model`` (C, n, n) of galaxy noise
    ``sigma_gal``; ``cont`` is the continuum (peak 1) seen through the PSF."""
    n = model.shape[-1]
    xo = -(np.arange(n) - n // 2)[None, :] * config.pixscale
    yo = (np.arange(n) - n // 2)[:, None] * config.pixscale
    hexr = hex_radius(xo, yo)
    fp = _Footprint(xo, yo, radius, covered=hexr <= radius)
    lowcov = ~fp.covered & (hexr <= radius + 0.75)
    snr_peak = 10 ** rng.normal(math.log10(80 if early else 40), 0.2)
    snr = snr_peak * cont * np.sqrt(1.05 / (cont + 0.05))  # photon noise of starlight plus sky
    blue = np.where(np.array([wavelength(c) for c in channels]) < 4000, config.blue_noise, 1.0)
    sigma = sigma_gal * blue[:, None, None] * np.sqrt(1 + config.noise_continuum * cont)[None]
    flux = model + sigma * rng.standard_normal(model.shape)
    ivar = 1.0 / sigma**2

    bits = np.zeros((n, n), np.int64)
    bits[~fp.covered & ~lowcov] |= (1 << NOCOV) | (1 << LOWCOV) | (1 << DONOTUSE)
    bits[lowcov] |= (1 << LOWCOV) | (1 << DONOTUSE)
    bits[fp.covered & (snr < config.unreliable_snr)] |= 1 << UNRELIABLE
    nodata = ~fp.covered
    has_dead = bool(rng.random() < config.dead_fibre_probability)
    if has_dead:
        dead = _dead_fibre(rng, fp)
        bits[dead] |= (1 << DEADFIBER) | (1 << DONOTUSE)
        nodata |= dead
    has_star = bool(rng.random() < config.star_probability)
    if has_star:
        # Its spectrum ruins the continuum subtraction, which leaves spurious line
        # residuals; the DAP flags the spaxels.
        star = _foreground_star(rng, fp)
        bits[star] |= (1 << FORESTAR) | (1 << DONOTUSE)
        flux[:, star] += rng.normal(0, 5 * sigma_gal, (len(channels), 1))
    flux[:, nodata] = 0.0
    ivar[:, nodata] = 0.0
    mask = np.broadcast_to(bits.astype(np.int32), model.shape).copy()
    binid = np.full((n, n), -1, np.int32)
    binid[fp.covered] = np.arange(int(fp.covered.sum()), dtype=np.int32)
    return Observation(flux, ivar, mask, snr, binid, has_star, has_dead)


#: Bounds (Angstrom) of a class's central EW(Ha): retired galaxies stay below Cid Fernandes
#: et al. 2011's 3 A (with a margin for the noise of the measurement), the others above it.
EW_BOUNDS = {"retired": (0.05, 2.5)}
EW_ACTIVE = (3.5, 2000.0)
#: The continuum's floor, as a fraction of its peak: the sky, so that no EW divides by zero.
CONTINUUM_FLOOR = 1e-4


@dataclass
class EquivalentWidths:
    """The EMLINE_GEW maps of one galaxy."""

    ew: np.ndarray  # (C, n, n) observed line flux / continuum flux density, Angstrom
    ivar: np.ndarray  # (C, n, n) its inverse variance
    central: float  # the central aperture's EW(Ha) drawn: summed model Ha / summed continuum


def equivalent_widths(rng, log_ew: dict, host: str, model_ha, flux, ivar, cont, aperture) -> EquivalentWidths:
    """Equivalent widths of the observed lines ``flux`` (C, n, n) over a continuum shaped like ``cont``.

    The central aperture's EW(Ha) is drawn from the class's ``log_ew`` (median, std in dex;
    from the DAPall's EMLINE_GEW_1RE) within :data:`EW_BOUNDS`, and sets the continuum
    flux density (1E-17 erg/s/cm^2/A/spaxel): ``model_ha`` summed over ``aperture`` divided
    by it. The continuum is taken flat in wavelength, so every line's EW is its flux over
    the same map. ``rng`` is a stream of its own: drawing here changes no other draw.
    """
    lo, hi = EW_BOUNDS.get(host, EW_ACTIVE)
    central = float(np.clip(10 ** rng.normal(log_ew["median"], log_ew["std"]), lo, hi))
    shape = np.maximum(cont / cont.max(), CONTINUUM_FLOOR)  # (n, n)
    density = model_ha[aperture].sum() / (central * shape[aperture].sum()) * shape
    return EquivalentWidths(ew=flux / density, ivar=ivar * density ** 2, central=central)
