"""Where a synthetic galaxy's light comes from: the grid and PSF, the stars, the gas, the anomalies.

Galaxies are inclined exponential disks with Sersic bulges and clumpy HII regions, seen
through a Gaussian PSF of ~2.5 arcsec FWHM inside the hexagonal footprint of one of the
five MaNGA bundles. The maps here live on a grid padded by three PSF sigmas on every
side, which :meth:`Grid.blur` turns into the observed map; :mod:`core.synth.ionisation`
gives them their spectra.

Every function draws from the galaxy's random generator in a fixed order: changing that
order changes every galaxy of every survey.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.synth.config import BUNDLES, SynthConfig

#: Hosts whose light is mostly old stars: rounder, no star-forming disk to speak of.
EARLY = ("liner", "retired")
#: Range of the bulge-to-total light ratio by host class.
BULGE_TO_TOTAL = {"sf": (0.0, 0.3), "comp": (0.15, 0.5), "seyfert": (0.2, 0.6), "liner": (0.4, 0.9),
                  "retired": (0.5, 0.95), "blueberry": (0.0, 0.0)}
#: Intrinsic thickness (axis ratio seen edge-on) of disks.
Q0 = 0.15
#: Radius softening of the Sersic bulge (arcsec): keeps the r^(1/4) cusp from putting
#: most of the light into the one central spaxel.
_BULGE_SOFTENING = 0.25


def uniform(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def bundle(rng, truth_class: str, config: SynthConfig) -> int:
    """The bundle (fibres) of a galaxy: the first draw from its random generator."""
    weights = dict(config.bundle_weights)
    if truth_class == "blueberry":  # dwarfs: MaNGA gives small galaxies small bundles
        weights = {b: w for b, w in weights.items() if b <= 37} or weights
    sizes = list(weights)
    return int(sizes[rng.choice(len(sizes), p=np.array(list(weights.values()), float) / sum(weights.values()))])


def _psf_matrix(n: int, pad: int, sigma_pix: float) -> np.ndarray:
    """(n, n + 2 pad) Gaussian blur matrix from the padded grid to the map: K @ M @ K.T."""
    d = np.arange(n)[:, None] + pad - np.arange(n + 2 * pad)[None, :]
    return np.exp(-0.5 * (d / sigma_pix) ** 2) / (math.sqrt(2 * math.pi) * sigma_pix)


@dataclass
class Grid:
    """The sky around one galaxy: a padded grid of N = n + 2 pad spaxels a side, and the PSF."""

    fibres: int  # the bundle: number of fibres
    radius: float  # circumradius of the bundle's hexagonal footprint (arcsec)
    n: int  # side of the map (spaxels): the bundle plus a margin, like the DRP cubes
    pix: float  # spaxel size (arcsec)
    psf: float  # PSF FWHM (arcsec)
    pad: int  # spaxels added on every side of the map: three PSF sigmas
    kern: np.ndarray  # (n, N) float32 blur matrix: map = kern @ padded @ kern.T
    xe: np.ndarray  # (1, N) arcsec east of the centre (RA runs right to left)
    yn: np.ndarray  # (N, 1) arcsec north of the centre

    def blur(self, maps: np.ndarray) -> np.ndarray:
        """(k, N, N) padded maps -> (k, n, n) maps seen through the PSF."""
        return np.matmul(np.matmul(self.kern, maps), self.kern.T)

    def aperture(self, radius: float) -> np.ndarray:
        """(n, n) bool: the map's spaxels within ``radius`` arcsec of the centre (the central aperture)."""
        yo = (np.arange(self.n) - self.n // 2) * self.pix
        return np.hypot(yo[:, None], yo[None, :]) <= radius

    def point(self) -> np.ndarray:
        """(N, N) a point source at the centre, total 1."""
        m = np.zeros((self.n + 2 * self.pad,) * 2)
        m[self.pad + self.n // 2, self.pad + self.n // 2] = 1.0
        return m


def make_grid(rng, fibres: int, config: SynthConfig) -> Grid:
    """The grid of a galaxy in bundle ``fibres``, with its drawn PSF."""
    pix = config.pixscale
    n = int(round(BUNDLES[fibres] / pix)) + 8
    psf = float(np.clip(rng.normal(config.psf_fwhm, config.psf_scatter), 0.6 * config.psf_fwhm, 1.5 * config.psf_fwhm))
    sigma_pix = psf / 2.3548 / pix
    pad = int(math.ceil(3 * sigma_pix))
    kern = _psf_matrix(n, pad, sigma_pix).astype(np.float32)  # float32: 5x faster, ample precision
    off = (np.arange(n + 2 * pad) - (pad + n // 2)) * pix
    return Grid(fibres, BUNDLES[fibres] / 2, n, pix, psf, pad, kern, xe=-off[None, :], yn=off[:, None])


@dataclass
class Stars:
    """The starlight: an inclined exponential disk and a Sersic bulge, on the padded grid."""

    re: float  # effective radius (arcsec)
    ba: float  # axis ratio b/a on the sky
    inclination: float  # degrees, for a disk of intrinsic thickness Q0
    pa: float  # position angle of the major axis, degrees east of north
    bt: float  # bulge-to-total light ratio
    re_bulge: float  # effective radius of the bulge (arcsec)
    r_disk: np.ndarray  # (N, N) radius in the plane of the disk (arcsec)
    disk: np.ndarray  # (N, N) the exponential disk, 1 at the centre
    bulge: np.ndarray  # (N, N) the r^(1/4) bulge
    stellar: np.ndarray  # (N, N) disk plus bulge, total 1


def make_stars(rng, grid: Grid, host: str) -> Stars:
    """Size, shape and orientation of a galaxy of class ``host``, and its starlight."""
    re = uniform(rng, 0.3, 0.9) if host == "blueberry" else grid.radius / uniform(rng, 1.2, 2.6)
    if host in EARLY:
        ba = uniform(rng, 0.45, 1.0)
    else:
        ba = math.sqrt(Q0**2 + (1 - Q0**2) * uniform(rng, 0.15, 1.0) ** 2)  # cos(i) uniform: random orientations
    inclination = math.degrees(math.acos(math.sqrt(max(ba**2 - Q0**2, 0.0) / (1 - Q0**2))))
    pa = uniform(rng, 0.0, 180.0)
    bt = uniform(rng, *BULGE_TO_TOTAL[host])
    re_bulge = re * uniform(rng, 0.12, 0.3)
    sp, cp = math.sin(math.radians(pa)), math.cos(math.radians(pa))
    major, minor = grid.xe * sp + grid.yn * cp, grid.xe * cp - grid.yn * sp
    r_disk = np.hypot(major, minor / ba)
    disk = np.exp(-r_disk / (re / 1.678))
    r_bulge = np.hypot(major, minor / uniform(rng, max(ba, 0.6), 1.0))
    bulge = np.exp(-7.669 * ((np.hypot(r_bulge, _BULGE_SOFTENING) / re_bulge) ** 0.25 - 1))
    stellar = bt * bulge / bulge.sum() + (1 - bt) * disk / disk.sum()
    return Stars(re, ba, inclination, pa, bt, re_bulge, r_disk, disk, bulge, stellar)


@dataclass
class Gas:
    """The star-forming gas: the disk's light plus HII regions, on the padded grid."""

    n_clumps: int  # number of HII regions
    clump_fraction: float  # fraction of the gas's light in them
    clumps: np.ndarray  # (N, N) the HII regions alone
    gas: np.ndarray  # (N, N) disk and clumps, total 1 before the central hole is cut


def make_gas(rng, grid: Grid, stars: Stars) -> Gas:
    """HII regions: PSF-sized blobs scattered like the disk light, in the plane of the disk."""
    re, ba = stars.re, stars.ba
    sp, cp = math.sin(math.radians(stars.pa)), math.cos(math.radians(stars.pa))
    n_clumps = int(rng.integers(10, 45))
    rad = np.minimum(rng.gamma(2.0, re / 1.678, n_clumps), 2.5 * re)
    theta = rng.uniform(0, 2 * math.pi, n_clumps)
    ca, cb = rad * np.cos(theta), rad * np.sin(theta) * ba
    cx, cy = ca * sp + cb * cp, ca * cp - cb * sp
    csig = rng.uniform(0.3, 0.8, n_clumps)
    lum = rng.lognormal(0.0, 0.6, n_clumps)
    gx = np.exp(-0.5 * ((grid.xe - cx[:, None]) / csig[:, None]) ** 2)  # (k, N): Gaussians are separable
    gy = np.exp(-0.5 * ((grid.yn[:, 0][None, :] - cy[:, None]) / csig[:, None]) ** 2)  # (k, N)
    clumps = (gy * (lum / csig**2)[:, None]).T @ gx
    clump_fraction = uniform(rng, 0.25, 0.6)
    gas = (1 - clump_fraction) * stars.disk / stars.disk.sum() + clump_fraction * clumps / clumps.sum()
    # Bulgy disks often lack star formation in the centre.
    hole = uniform(rng, 0.0, 0.8) * min(stars.bt / 0.3, 1.0)
    gas *= 1 - hole * np.exp(-((stars.r_disk / (0.4 * re)) ** 2))
    return Gas(n_clumps, clump_fraction, clumps, gas)


@dataclass
class Feature:
    """An anomaly's own emission region: an off-nuclear blob or a bicone."""

    shape: np.ndarray | None  # (N, N) its light; None for classes without one
    truth: dict  # anomaly_x, anomaly_y, anomaly_size, anomaly_angle, cone_half_angle (NaN: none)


def make_feature(rng, grid: Grid, truth_class: str) -> Feature:
    """The region of an anomaly's own emission, if its class has one."""
    truth = dict.fromkeys(("anomaly_x", "anomaly_y", "anomaly_size", "anomaly_angle", "cone_half_angle"), np.nan)
    if truth_class == "offnuclear":
        return _offnuclear(rng, grid, truth)
    if truth_class == "cones":
        return _cones(rng, grid, truth)
    return Feature(None, truth)


def _offnuclear(rng, grid: Grid, truth: dict) -> Feature:
    """A compact blob away from the nucleus (a wandering AGN, a shock from an interaction)."""
    dist = uniform(rng, max(0.4 * grid.radius, 4.0), 0.75 * grid.radius)
    ang = uniform(rng, 0, 2 * math.pi)
    size = uniform(rng, 0.5, 1.2)
    bx, by = dist * math.sin(ang), dist * math.cos(ang)
    blob = np.exp(-0.5 * ((grid.xe - bx) ** 2 + (grid.yn - by) ** 2) / size**2)
    truth.update(anomaly_x=bx, anomaly_y=by, anomaly_size=size, anomaly_angle=math.degrees(ang))
    return Feature(blob, truth)


def _cones(rng, grid: Grid, truth: dict) -> Feature:
    """An AGN's bicone, reaching the edge of the bundle along an axis unrelated to the disk."""
    axis = uniform(rng, 0, 180)
    half = uniform(rng, 25, 45)
    length = uniform(rng, 0.6, 1.0) * grid.radius
    r_sky = np.hypot(grid.xe, grid.yn)
    az = np.degrees(np.arctan2(grid.xe, grid.yn))  # east of north
    dphi = np.abs((az - axis + 90) % 180 - 90)  # angle to the axis, either cone
    near = np.abs((az - axis + 180) % 360 - 180) < 90
    shade = np.where(near, 1.0, uniform(rng, 0.3, 0.8))  # the far cone sits behind the disk
    cone = (shade * np.exp(-((dphi / half) ** 6)) * np.exp(-((r_sky / length) ** 4))
            / np.hypot(r_sky, 1.0))  # dilution of the AGN's radiation, partly offset by denser gas
    truth.update(anomaly_size=length, anomaly_angle=axis, anomaly_x=0.0, anomaly_y=0.0, cone_half_angle=half)
    return Feature(cone, truth)


@dataclass
class Sky:
    """Where one galaxy's light comes from, before it has a spectrum."""

    grid: Grid
    stars: Stars
    gas: Gas
    feature: Feature


def make_sky(rng, fibres: int, host: str, truth_class: str, config: SynthConfig) -> Sky:
    grid = make_grid(rng, fibres, config)
    stars = make_stars(rng, grid, host)
    gas = make_gas(rng, grid, stars)
    return Sky(grid, stars, gas, make_feature(rng, grid, truth_class))
