"""Perturbations of a galaxy's DAP maps that the synthetic survey never makes: the injection benchmark's kinds.

An anomaly score must rank oddities that nobody simulated (docs/ARCHITECTURE.md, "The
injection benchmark"). Each kind here is a pure function of a galaxy's
``EMLINE_GFLUX`` / ``_IVAR`` / ``_MASK`` maps (:class:`DapMaps`), a random generator and a
strength (0 leaves the maps as they are, 1 is strong), returning new maps; none of them is
one of the survey's anomalies (``core.synth.config.ANOMALY_KINDS``: compact extreme-[OIII]
starbursts, off-nuclear AGN/shock blobs, ionisation cones) or of its instrument effects
(flagged dead fibres, flagged foreground stars), and none is used in training. They come in
four families:

- ``brightness``: a region brighter or darker in every line, line ratios kept;
- ``ratio``: a region's line ratios moved (doublets of one ion move together unless the
  kind breaks the doublet on purpose);
- ``morphology``: one line or a group of lines spatially inconsistent with the rest;
- ``artefact``: what an instrument or a reduction can do (unflagged dead fibres, a stripe,
  a flux-calibration tilt of the blue camera, cosmic rays, wrong inverse variances, a sky
  residual).

Where a region is drawn, it is drawn from ``rng`` before the strength is used, so the same
generator puts the same region into a galaxy at every strength: a sensitivity curve. Sizes
are in spaxels of the DAP maps (0.5"), relative to the footprint's radius where a region
scales with the galaxy. Pure numpy; ``core.inject`` runs the benchmark.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from core.lines import DAPPIXMASK_BITS, LINES, wavelength
from core.synth.spectra import DOUBLETS

#: MaNGA's reconstructed PSF (FWHM 2.5") in DAP spaxels (0.5"), as a Gaussian sigma.
PSF_SIGMA = 2.5 / 0.5 / 2.355
#: The dichroic of the BOSS spectrographs splits the blue and red cameras near 6000 A.
CAMERA_SPLIT = 6000.0
FAMILIES = ("brightness", "ratio", "morphology", "artefact")
#: The strengths the benchmark runs by default: weak, moderate (the "middle" of the targets), strong.
DEFAULT_STRENGTHS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class DapMaps:
    """A galaxy's emission-line maps as a DAP ``MAPS`` file stores them."""

    channels: tuple[str, ...]  # DAP channel names, the order of the first axis
    flux: np.ndarray  # (C, ny, nx) EMLINE_GFLUX, 1E-17 erg/s/cm^2/spaxel
    ivar: np.ndarray  # (C, ny, nx) EMLINE_GFLUX_IVAR; 0 where nothing was measured
    mask: np.ndarray  # (C, ny, nx) int32 EMLINE_GFLUX_MASK, MANGA_DAPPIXMASK bits

    def index(self, names) -> list[int]:
        """Channel indices of the lines ``names`` that these maps hold (absent ones are skipped)."""
        return [self.channels.index(n) for n in names if n in self.channels]


@dataclass(frozen=True)
class Kind:
    """One kind of perturbation and what it claims to change."""

    name: str
    family: str  # one of FAMILIES
    summary: str  # what it does at strength 1, for people
    apply: Callable  # (DapMaps, rng, strength) -> DapMaps
    lines: tuple[str, ...] | None  # the only lines it changes; None: every line
    changes: str  # "flux" or "ivar": the only array it changes
    sign: int  # +1 / -1: the claimed lines' summed flux (ivar) grows / shrinks; 0: moved around


# ---------------------------------------------------------------------------------------
# Where a galaxy is


_BAD = (1 << DAPPIXMASK_BITS["NOCOV"]) | (1 << DAPPIXMASK_BITS["DONOTUSE"])


def footprint(m: DapMaps) -> np.ndarray:
    """(ny, nx) the spaxels with data: not NOCOV / DONOTUSE in any channel and a positive ivar in all."""
    return ~((m.mask & _BAD) != 0).any(axis=0) & (m.ivar > 0).all(axis=0)


def _geometry(m: DapMaps) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """``(yy, xx, y0, x0, radius)``: spaxel coordinates, the footprint's centre and radius (spaxels)."""
    fp = footprint(m)
    yy, xx = np.indices(fp.shape, dtype=np.float64)
    if not fp.any():
        ny, nx = fp.shape
        return yy, xx, (ny - 1) / 2, (nx - 1) / 2, min(ny, nx) / 2
    return yy, xx, float(yy[fp].mean()), float(xx[fp].mean()), float(np.sqrt(fp.sum() / np.pi))


def _spot(rng, m: DapMaps, within: float) -> tuple[float, float]:
    """A random point (y, x) no further than ``within`` x the footprint radius from its centre."""
    _, _, y0, x0, r = _geometry(m)
    dist, ang = within * r * np.sqrt(rng.random()), 2 * np.pi * rng.random()
    return y0 + dist * np.sin(ang), x0 + dist * np.cos(ang)


def _gauss(m: DapMaps, y: float, x: float, sigma: float) -> np.ndarray:
    """(ny, nx) a Gaussian of peak 1 centred on (y, x)."""
    yy, xx = np.indices(m.flux.shape[1:], dtype=np.float64)
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def _sigma(m: DapMaps) -> np.ndarray:
    """(C, ny, nx) the 1-sigma flux error; 0 where there is no ivar."""
    with np.errstate(divide="ignore"):
        return np.where(m.ivar > 0, 1.0 / np.sqrt(np.where(m.ivar > 0, m.ivar, 1.0)), 0.0)


def _doublets(names) -> tuple[str, ...]:
    """``names`` plus the weak member of each doublet whose strong member is in it: an ion moves as a whole."""
    weak = [w for w, (s, _) in DOUBLETS.items() if s in names and w not in names]
    return tuple(sorted((*names, *weak), key=wavelength))


def _scaled(m: DapMaps, names, factor: np.ndarray) -> DapMaps:
    """The maps with the lines ``names`` multiplied by ``factor`` ((ny, nx), 1 = unchanged) where there is data."""
    flux = m.flux.copy()
    fp = footprint(m)
    for i in m.index(names):
        flux[i] = np.where(fp, flux[i] * factor, flux[i])
    return replace(m, flux=flux)


def _added(m: DapMaps, names, extra: np.ndarray) -> DapMaps:
    """The maps with ``extra`` ((C, ny, nx) or (ny, nx)) added to the lines ``names`` where there is data."""
    flux = m.flux.copy()
    extra = np.broadcast_to(extra, m.flux.shape)
    fp = footprint(m)
    for i in m.index(names):
        flux[i] = np.where(fp, flux[i] + extra[i], flux[i])
    return replace(m, flux=flux)


def _remapped(m: DapMaps, names, strength: float, where: Callable) -> DapMaps:
    """The lines ``names`` blended towards their maps resampled at ``where(yy, xx) -> (ys, xs)``.

    Bilinear sampling of the footprint's flux (zero outside it); ``strength`` mixes the
    moved map into the original (1: fully moved), so 0 is exactly the original.
    """
    fp = footprint(m)
    yy, xx = np.indices(fp.shape, dtype=np.float64)
    ys, xs = where(yy, xx)
    flux = m.flux.copy()
    for i in m.index(names):
        moved = _bilinear(np.where(fp, m.flux[i], 0.0), ys, xs)
        flux[i] = np.where(fp, m.flux[i] + strength * (moved - m.flux[i]), m.flux[i])
    return replace(m, flux=flux)


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``img`` sampled at fractional positions (zero outside it)."""
    ny, nx = img.shape
    padded = np.pad(img, 1)  # (ny + 2, nx + 2): a border of zeros for points just outside
    ys = np.clip(ys + 1, 0, ny + 0.999)
    xs = np.clip(xs + 1, 0, nx + 0.999)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    return ((1 - fy) * (1 - fx) * padded[y0, x0] + (1 - fy) * fx * padded[y0, x0 + 1]
            + fy * (1 - fx) * padded[y0 + 1, x0] + fy * fx * padded[y0 + 1, x0 + 1])


def _line_peaks(m: DapMaps) -> np.ndarray:
    """(C,) each line's 99th-percentile flux over the footprint (0 without data): a peak no single spike sets."""
    fp = footprint(m)
    if not fp.any():
        return np.zeros(len(m.channels))
    return np.maximum(np.percentile(m.flux[:, fp], 99, axis=1), 0.0)


# ---------------------------------------------------------------------------------------
# The kinds. Each takes (maps, rng, strength) and draws its region before using strength.

_OIII = _doublets(("OIII-5008",))
_NII = _doublets(("NII-6585",))
_SII = ("SII-6718", "SII-6732")
_RED_GROUP = _doublets(("NII-6585", "Ha-6564", "SII-6718", "SII-6732"))
_BALMER_BLUE = ("Heta-3836", "Hzet-3890", "Heps-3971", "Hdel-4102", "Hgam-4341", "Hb-4862")
_BLUE = tuple(n for n in LINES if wavelength(n) < CAMERA_SPLIT)
_RED = tuple(n for n in LINES if wavelength(n) >= CAMERA_SPLIT)


def bright_knot(m, rng, strength):
    """A PSF-sized knot in every line, with the galaxy's own line ratios, peaking at 3 x strength x each
    line's peak: a region far brighter than the rest (a giant HII complex, a transient)."""
    y, x = _spot(rng, m, 0.7)
    profile = _gauss(m, y, x, PSF_SIGMA)  # (ny, nx)
    extra = 3.0 * strength * _line_peaks(m)[:, None, None] * profile[None]  # (C, ny, nx)
    return _added(m, m.channels, extra)


def dark_lane(m, rng, strength):
    """A straight band of 0.3 x the footprint's radius across the galaxy, grey: every line dimmed by up
    to 90 % x strength (a foreground occulter, not dust: the line ratios stay)."""
    yy, xx, y0, x0, r = _geometry(m)
    ang, offset = np.pi * rng.random(), (rng.random() - 0.5) * r
    dist = (xx - x0) * np.sin(ang) - (yy - y0) * np.cos(ang) - offset
    band = np.exp(-dist**2 / (2 * (0.15 * r) ** 2))
    return _scaled(m, m.channels, 1.0 - 0.9 * strength * band)


def bright_ring(m, rng, strength):
    """A ring at 0.4 to 0.7 x the footprint's radius brighter in every line by up to 3 x strength
    (a resonance ring; the survey's disks are exponential)."""
    yy, xx, y0, x0, r = _geometry(m)
    radius = r * (0.4 + 0.3 * rng.random())
    ring = np.exp(-(np.hypot(yy - y0, xx - x0) - radius) ** 2 / (2 * (0.08 * r) ** 2))
    return _scaled(m, m.channels, 1.0 + 3.0 * strength * ring)


def nii_patch(m, rng, strength):
    """A region (Gaussian of 0.25 x the radius) where [NII] (both lines) is up to 1 + 4 x strength times
    brighter, nothing else changed: a nitrogen-rich patch."""
    _, _, _, _, r = _geometry(m)
    y, x = _spot(rng, m, 0.6)
    return _scaled(m, _NII, 1.0 + 4.0 * strength * _gauss(m, y, x, 0.25 * r))


def balmer_excess(m, rng, strength):
    """A region where Hb and the bluer Balmer lines are up to 1 + 1.5 x strength brighter than Ha allows:
    Ha/Hb falls below Case B's 2.86, which no dust can do."""
    _, _, _, _, r = _geometry(m)
    y, x = _spot(rng, m, 0.6)
    return _scaled(m, _BALMER_BLUE, 1.0 + 1.5 * strength * _gauss(m, y, x, 0.3 * r))


def oiii_doublet(m, rng, strength):
    """[OIII] 4960 multiplied by 1 + 2 x strength everywhere: the 5008/4960 ratio, fixed at 2.98 by
    atomic physics, broken (a fit that confused the line with a neighbour)."""
    return _scaled(m, ("OIII-4960",), np.full(m.flux.shape[1:], 1.0 + 2.0 * strength))


def sii_deficit(m, rng, strength):
    """A region (0.3 x the radius) where [SII] (both lines) is dimmed by up to 80 % x strength."""
    _, _, _, _, r = _geometry(m)
    y, x = _spot(rng, m, 0.6)
    return _scaled(m, _SII, 1.0 - 0.8 * strength * _gauss(m, y, x, 0.3 * r))


def rotated_oiii(m, rng, strength):
    """The [OIII] maps rotated about the footprint's centre by 120 deg x strength, the other lines not."""
    _, _, y0, x0, _ = _geometry(m)
    ang = np.radians(120.0 * strength) * (1 if rng.random() < 0.5 else -1)
    c, s = np.cos(ang), np.sin(ang)

    def where(yy, xx):
        dy, dx = yy - y0, xx - x0
        return y0 + c * dy - s * dx, x0 + s * dy + c * dx
    return _remapped(m, _OIII, 1.0 if strength > 0 else 0.0, where)


def shifted_red(m, rng, strength):
    """[NII], Ha and [SII] shifted together by 4 spaxels (2") x strength in a random direction: the red
    lines misregistered against the blue ones."""
    ang = 2 * np.pi * rng.random()
    dy, dx = 4.0 * strength * np.sin(ang), 4.0 * strength * np.cos(ang)
    return _remapped(m, _RED_GROUP, 1.0 if strength > 0 else 0.0, lambda yy, xx: (yy - dy, xx - dx))


def smoothed_sii(m, rng, strength):
    """The [SII] maps blurred by a Gaussian of 3 spaxels (1.5") x strength, flux conserved, the other lines not."""
    fp = footprint(m)
    flux = m.flux.copy()
    if strength > 0:
        for i in m.index(_SII):
            flux[i] = np.where(fp, _blur(np.where(fp, m.flux[i], 0.0), 3.0 * strength), m.flux[i])
    return replace(m, flux=flux)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` convolved with a Gaussian of ``sigma`` spaxels, zero beyond its edges (separable, numpy only)."""
    r = min(int(np.ceil(4 * sigma)), (min(img.shape) - 1) // 2)
    t = np.arange(-r, r + 1)
    k = np.exp(-t**2 / (2 * sigma**2))
    k /= k.sum()
    rows = np.apply_along_axis(np.convolve, 1, img, k, mode="same")
    return np.apply_along_axis(np.convolve, 0, rows, k, mode="same")


def mirrored_balmer(m, rng, strength):
    """Hb and the bluer Balmer lines blended (strength: the mirrored share) with their mirror image
    across a random axis through the centre; Ha stays."""
    _, _, y0, x0, _ = _geometry(m)
    ang = np.pi * rng.random()
    ny, nx = np.sin(ang), np.cos(ang)  # the mirror axis's direction

    def where(yy, xx):
        dy, dx = yy - y0, xx - x0
        along = dy * ny + dx * nx
        return y0 + 2 * along * ny - dy, x0 + 2 * along * nx - dx
    return _remapped(m, _BALMER_BLUE, strength, where)


def dead_fibres(m, rng, strength):
    """Three fibres (2" holes) whose flux is lost (x 1 - strength) in every line, with neither a mask bit
    nor a changed ivar: dead fibres the reduction missed."""
    fp = footprint(m)
    yy, xx = np.indices(fp.shape, dtype=np.float64)
    hole = np.zeros(fp.shape, bool)
    for _ in range(3):
        y, x = _spot(rng, m, 0.7)
        hole |= np.hypot(yy - y, xx - x) <= 2.0
    return _scaled(m, m.channels, np.where(hole, 1.0 - strength, 1.0))


def stripe(m, rng, strength):
    """A two-spaxel row across the map with 10 x strength sigma added in every line (a bad detector
    column carried through the reconstruction of the cube)."""
    _, _, y0, _, r = _geometry(m)
    row = int(round(y0 + (rng.random() - 0.5) * r))
    band = np.zeros(m.flux.shape[1:])
    band[max(row, 0):row + 2] = 1.0
    return _added(m, m.channels, 10.0 * strength * _sigma(m) * band[None])


def blue_tilt(m, rng, strength):
    """Every line bluer than 6000 A (the blue camera) multiplied by a gradient of +-50 % x strength
    across the footprint in a random direction: a flux calibration wrong in one camera."""
    yy, xx, y0, x0, r = _geometry(m)
    ang = 2 * np.pi * rng.random()
    ramp = ((yy - y0) * np.sin(ang) + (xx - x0) * np.cos(ang)) / r
    return _scaled(m, _BLUE, np.clip(1.0 + 0.5 * strength * ramp, 0.0, None))


def cosmic_rays(m, rng, strength):
    """A cluster of six single-spaxel spikes of 100 x strength sigma within 3 spaxels of a point, in one
    strong line (Ha, Hb or [OIII] 5008), unflagged: cosmic rays the reduction missed."""
    line = ("Ha-6564", "Hb-4862", "OIII-5008")[int(rng.integers(3))]
    y, x = _spot(rng, m, 0.7)
    ny, nx = m.flux.shape[1:]
    spikes = np.zeros((ny, nx))
    for _ in range(6):
        j = int(np.clip(round(y + rng.uniform(-3, 3)), 0, ny - 1))
        i = int(np.clip(round(x + rng.uniform(-3, 3)), 0, nx - 1))
        spikes[j, i] = 1.0
    return _added(m, (line,), 100.0 * strength * _sigma(m) * spikes[None])


def overconfident_ivar(m, rng, strength):
    """The inverse variances of the red lines (above 6000 A) multiplied by 1 + 24 x strength: errors
    underestimated five-fold at strength 1, the fluxes untouched."""
    red = m.index(_RED)
    ivar = m.ivar.copy()
    ivar[red] = ivar[red] * (1.0 + 24.0 * strength)
    return replace(m, ivar=ivar)


def sky_residual(m, rng, strength):
    """[OI] 6302 raised by 5 x strength sigma over the whole footprint: the 6300 A night-sky line badly
    subtracted (the [OI] doublet's fixed ratio broken)."""
    return _added(m, ("OI-6302",), 5.0 * strength * _sigma(m))


#: Every kind, by name, in family order.
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("bright_knot", "brightness", "a PSF-sized knot 3x the galaxy's peak, every line", bright_knot, None, "flux", 1),
    Kind("dark_lane", "brightness", "a grey band across the galaxy, every line dimmed by 90 %", dark_lane, None, "flux", -1),
    Kind("bright_ring", "brightness", "a ring 4x brighter in every line", bright_ring, None, "flux", 1),
    Kind("nii_patch", "ratio", "a patch with [NII] 5x brighter", nii_patch, _NII, "flux", 1),
    Kind("balmer_excess", "ratio", "a patch with Hb 2.5x brighter (Ha/Hb below Case B)", balmer_excess, _BALMER_BLUE,
         "flux", 1),
    Kind("oiii_doublet", "ratio", "[OIII] 4960 3x brighter (doublet ratio broken)", oiii_doublet, ("OIII-4960",),
         "flux", 1),
    Kind("sii_deficit", "ratio", "a patch with [SII] dimmed by 80 %", sii_deficit, _SII, "flux", -1),
    Kind("rotated_oiii", "morphology", "[OIII] rotated by 120 deg", rotated_oiii, _OIII, "flux", 0),
    Kind("shifted_red", "morphology", "[NII], Ha, [SII] shifted by 2\"", shifted_red, _RED_GROUP, "flux", 0),
    Kind("smoothed_sii", "morphology", "[SII] blurred by 1.5\"", smoothed_sii, _SII, "flux", 0),
    Kind("mirrored_balmer", "morphology", "blue Balmer lines replaced by their mirror image", mirrored_balmer,
         _BALMER_BLUE, "flux", 0),
    Kind("dead_fibres", "artefact", "three unflagged dead fibres", dead_fibres, None, "flux", -1),
    Kind("stripe", "artefact", "a 2-spaxel row +10 sigma in every line", stripe, None, "flux", 1),
    Kind("blue_tilt", "artefact", "blue camera's flux calibration tilted +-50 %", blue_tilt, _BLUE, "flux", 0),
    Kind("cosmic_rays", "artefact", "six unflagged 100-sigma spikes in one strong line", cosmic_rays,
         ("Hb-4862", "OIII-5008", "Ha-6564"), "flux", 1),
    Kind("overconfident_ivar", "artefact", "red lines' ivar x25 (errors 5x too small)", overconfident_ivar, _RED,
         "ivar", 1),
    Kind("sky_residual", "artefact", "[OI] 6302 +5 sigma everywhere (sky line)", sky_residual, ("OI-6302",), "flux", 1),
)}


def perturb(kind: str, maps: DapMaps, rng: np.random.Generator, strength: float) -> DapMaps:
    """``maps`` perturbed by the kind named ``kind`` at ``strength`` (0: an unchanged copy, 1: strong).

    The input is not modified. Raises ValueError for an unknown kind or a strength outside [0, 1].
    """
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; kinds are {', '.join(KINDS)}")
    if not 0.0 <= strength <= 1.0:  # NaN fails too
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    out = KINDS[kind].apply(maps, rng, float(strength))
    return replace(out, flux=out.flux.astype(maps.flux.dtype), ivar=out.ivar.astype(maps.ivar.dtype))
