"""Read MaNGA DAP MAPS files and turn each galaxy into a fixed-size grid of line maps.

Three steps, each usable on its own:

* :func:`read_maps` reads the Gaussian-fitted line fluxes (``EMLINE_GFLUX``), their
  inverse variances and mask bits from a DAP MAPS file (``.fits`` or ``.fits.gz``),
  finding channels by name so DR15 (22 channels) and DR17 (35, another order) both work.
* :func:`to_grid` crops the square around the covered IFU footprint and resamples it to
  ``S x S`` cells by exact area overlap, so fluxes (and therefore line ratios) are conserved
  and masked spaxels stay masked.
* :func:`normalise` applies an optional per-galaxy scaling (:data:`NORMALISATIONS`);
  :func:`denormalise` recovers physical fluxes from the scale it returns.

:func:`preprocess` chains the three with a dataset's ``IngestOptions``; ingest and the
scoring of new files (``core.score``) both use it, so a new file is prepared exactly as
the run's own galaxies were.
Every problem with a file raises :class:`core.errors.MapsError` naming the file.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from core.dataset import IngestOptions
from core.errors import BlueberryError, MapsError
from core.lines import BPT_LINES, DAPPIXMASK, DAPPIXMASK_BITS, DEFAULT_BAD_BITS, DEFAULT_LINES, wavelength

#: The extensions read, in the order flux, inverse variance, mask.
EXTENSIONS: tuple[str, str, str] = ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK")
#: The equivalent-width extensions (Angstrom; read when a file has them): EW, inverse variance, mask.
EW_EXTENSIONS: tuple[str, str, str] = ("EMLINE_GEW", "EMLINE_GEW_IVAR", "EMLINE_GEW_MASK")

#: Per-galaxy flux normalisations (recorded in every dataset manifest):
#:   "none"     physical flux per cell, 1E-17 erg/s/cm^2 (the paper; scale = 1).
#:   "ha_peak"  every line divided by the Ha peak (99th percentile of the good Ha cells),
#:              so the brightest Ha is ~1 and brightness differences between galaxies vanish.
#:   "ha_total" every line divided by the total Ha flux of the good cells: the maps become
#:              the fraction of the galaxy's Ha per cell, independent of distance.
#:   "asinh"    asinh(flux / scale) with scale = Ha peak / 100: linear for faint cells,
#:              logarithmic for bright ones, so line ratios become differences and faint
#:              lines keep their weight next to Ha.
NORMALISATIONS: tuple[str, ...] = ("none", "ha_peak", "ha_total", "asinh")

#: Softening of the asinh stretch as a fraction of the Ha peak: lines brighter than 1% of
#: the Ha peak fall in the logarithmic regime.
ASINH_SOFTENING = 0.01

#: Speed of light in km/s, to turn the DAP's input velocity guess cz into a redshift.
C_KMS = 299792.458

#: Spaxel size of MaNGA cubes in arcsec, used when a file has no celestial WCS.
MANGA_PIXSCALE = 0.5

#: The most bytes a MAPS file may hold once decompressed. The largest real MAPS file is well
#: under 1 GB uncompressed: some tens of MB (DR17, 127-fibre bundle: ~1,100 planes of 74 x 74
#: spaxels; the 42 x 42 DR15 file of the tests is 5 MB). A file past this is a decompression
#: bomb or not a MAPS file: reading stops there, so an ingest worker holds at most this much
#: and refuses a bomb after inflating this much (~2 s on one core). Raise it here if needed.
MAX_FILE_BYTES = 256 << 20

#: Bytes read (or decompressed) at a time while checking :data:`MAX_FILE_BYTES`.
READ_CHUNK = 1 << 20

#: The fewest spaxels across a map, and across its covered footprint, that make a galaxy:
#: MaNGA's smallest bundle (19 fibres) covers about 25 spaxels; a map of a few spaxels
#: would be stretched over the whole grid, its cells invented from one or two values.
MIN_MAP_SPAXELS = 8

#: The largest |flux| believed, in 1E-17 erg/s/cm^2 per spaxel: 1E-11 erg/s/cm^2 from a
#: 0.5" spaxel, far above any galaxy MaNGA observes (the real DR15 file of the tests peaks at
#: 88). Beyond it a value is a fill value or a failed fit, not a measurement (e.g. float32's
#: 3.4E38, which overflows every sum it enters).
MAX_ABS_FLUX = 1e6

#: The noise of neighbouring spaxels of a MaNGA cube is correlated: each spaxel is rebuilt from the fibres
#: around it. The DAP approximates the correlation coefficient by ``exp(-D^2 / (2 sigma^2))`` with D in spaxels and
#: sigma = 1.92 (Westfall et al. 2019, AJ 158, 231, Sect. 6), zero beyond the rebuilding kernel's reach, 1.6"
#: (Law et al. 2016, AJ 152, 83): 3.2 spaxels. A cell of the grid that sums several spaxels has more variance
#: than independent spaxels would give (``to_grid``).
MANGA_NOISE_SIGMA, MANGA_NOISE_REACH = 1.92, 3.2

#: The primary header's FWHMs (arcsec) of the cube's reconstructed PSF in the g, r, i and z bands (the DRP copies
#: them into the DAP's files); :attr:`GalaxyMaps.psf_fwhm` is the smallest.
PSF_KEYS = ("GFWHM", "RFWHM", "IFWHM", "ZFWHM")
#: The ``VERSDAP`` of the project's synthetic files (``core.synth.writer``), whose spaxels' noise is
#: independent: it is drawn spaxel by spaxel, not rebuilt from fibres.
SYNTHETIC_VERSDAP = "blueberry-synth"

#: The grid sizes ``--size`` accepts: below 4 cells there is no map; above 256 the grid is
#: three times finer than the largest MaNGA map (74 spaxels across) and its arrays grow as S^2
#: with nothing new in them.
MIN_GRID, MAX_GRID = 4, 256


@dataclass
class GalaxyMaps:
    """The emission-line maps of one galaxy, as in the file (native spaxels)."""

    path: Path  # the MAPS file read
    galaxy_id: str  # PLATEIFU, e.g. "7815-3702"
    mangaid: str  # MANGAID, e.g. "1-113540" ("" when absent)
    ra: float  # OBJRA, degrees (NaN when absent)
    dec: float  # OBJDEC, degrees (NaN when absent)
    z: float  # redshift: Z, else SCINPVEL / c (NaN when neither is present)
    daptype: str  # DAPTYPE, e.g. "HYB10-GAU-MILESHC"
    versdap: str  # VERSDAP, the DAP version
    lines: tuple[str, ...]  # channel names, in the order of the arrays' first axis
    flux: np.ndarray  # (L, ny, nx) float32, 1E-17 erg/s/cm^2/spaxel, values as in the file
    ivar: np.ndarray  # (L, ny, nx) float32 inverse variance of flux
    mask: np.ndarray  # (L, ny, nx) bool, True = bad (a bad bit, ivar <= 0, NaN or inf)
    bits: np.ndarray  # (L, ny, nx) int32 raw MANGA_DAPPIXMASK bits
    pixscale: float  # arcsec per spaxel
    center: tuple[float, float]  # (x, y) 0-based pixel position of OBJRA/OBJDEC
    footprint: np.ndarray  # (ny, nx) bool, True = covered (NOCOV set in no selected line)
    ew: np.ndarray | None = None  # (L, ny, nx) float32 EMLINE_GEW (Angstrom), NaN where bad; None: not in the file
    # the sharpest of the reconstructed PSF's FWHMs in the header (PSF_KEYS), arcsec; NaN when it has none
    psf_fwhm: float = float("nan")


@dataclass
class GridMaps:
    """One galaxy's line maps on a square grid of S x S cells, ready for the model."""

    path: Path  # the MAPS file it came from (named in error messages)
    galaxy_id: str  # PLATEIFU
    lines: tuple[str, ...]  # channel names, first axis of the arrays
    flux: np.ndarray  # (L, S, S) float32 flux per cell (units set by norm), NaN where masked
    ivar: np.ndarray  # (L, S, S) float32 inverse variance of flux, 0 where masked
    mask: np.ndarray  # (L, S, S) bool, True = bad
    pixscale: float  # arcsec per grid cell
    center: tuple[float, float]  # (x, y) of OBJRA/OBJDEC in 0-based grid-cell coordinates
    crop: tuple[float, float, float, float]  # native box (x0, y0, x1, y1); spaxel i spans [i, i+1)
    norm: str = "none"  # the normalisation applied (one of NORMALISATIONS)
    scale: float = 1.0  # its scale factor; denormalise(flux, scale, norm) gives physical flux
    # the variance of the galaxy's total flux over the sum of its cells' variances (the median over lines): 1 for
    # independent cells, more where neighbouring cells share noise (a MaNGA cube's spaxels, a spaxel split among cells)
    noise_factor: float = 1.0
    noise_sigma: float = 0.0  # the file's correlation of neighbouring spaxels' noise (noise_correlation), in spaxels

    @property
    def cell_spaxels(self) -> float:
        """The side of a cell, in the file's spaxels."""
        return (self.crop[2] - self.crop[0]) / self.flux.shape[-1]


# --------------------------------------------------------------------------------------
# Reading


def read_maps(path, lines=DEFAULT_LINES, bad_bits=DEFAULT_BAD_BITS) -> GalaxyMaps:
    """Read the emission-line maps ``lines`` of a DAP MAPS file.

    A spaxel is bad (``mask`` True) where any of ``bad_bits`` (names of
    :data:`DAPPIXMASK_BITS`) is set, where ``ivar <= 0``, where flux or ivar is NaN or inf,
    or where ``|flux|`` exceeds :data:`MAX_ABS_FLUX`. Raises :class:`MapsError` naming the
    file and the problem when the file cannot be used: among others a decompressed size over
    :data:`MAX_FILE_BYTES`, a channel name given twice, maps under :data:`MIN_MAP_SPAXELS` across.
    """
    path = Path(path)
    lines = (lines,) if isinstance(lines, str) else tuple(lines)
    bad_value = _bit_value(path, bad_bits)
    primary, headers, (flux, ivar, bits), ew_ext = _read_fits(path)

    galaxy_id = primary.get("PLATEIFU")
    if not galaxy_id:
        raise MapsError(path, "the primary header has no PLATEIFU: not a MaNGA DAP MAPS file?")
    if flux.ndim != 3:
        raise MapsError(path, f"{EXTENSIONS[0]} is not a (channel, y, x) cube: its shape is {flux.shape}")
    shapes = {ext: arr.shape for ext, arr in zip(EXTENSIONS, (flux, ivar, bits))}
    if len(set(shapes.values())) > 1:
        raise MapsError(path, "the shapes disagree: " + ", ".join(f"{e} {s}" for e, s in shapes.items()))
    if min(flux.shape[1:]) < MIN_MAP_SPAXELS:
        raise MapsError(path, f"the maps are {flux.shape[1]} x {flux.shape[2]} spaxels; a galaxy needs at least "
                              f"{MIN_MAP_SPAXELS} x {MIN_MAP_SPAXELS}")
    masktype = headers[2].get("MASKNAME", DAPPIXMASK)
    if masktype != DAPPIXMASK:
        raise MapsError(path, f"{EXTENSIONS[2]} uses mask bits {masktype!r}, not {DAPPIXMASK}")

    channels = _channel_names(path, EXTENSIONS[0], headers[0], flux.shape[0])
    for ext, hdr in zip(EXTENSIONS[1:], headers[1:]):
        # The IVAR and MASK extensions repeat the names in the DAP; a file where they
        # disagree was assembled wrongly and its planes cannot be trusted to line up.
        if "C01" in hdr and _channel_names(path, ext, hdr, flux.shape[0]) != channels:
            raise MapsError(path, f"the channel names of {ext} differ from those of {EXTENSIONS[0]}")
    missing = [name for name in lines if name not in channels]
    if missing:
        raise MapsError(
            path, f"line(s) {', '.join(missing)} missing from {EXTENSIONS[0]}; the file has: {', '.join(channels)}"
        )
    idx = [channels.index(name) for name in lines]

    flux = flux[idx].astype(np.float32)  # (L, ny, nx)
    ivar = ivar[idx].astype(np.float32)  # (L, ny, nx)
    bits = bits[idx].astype(np.int32)  # (L, ny, nx)
    # An absurd flux is masked like NaN and inf rather than refusing the file: it is one failed
    # fit, and the galaxy's other spaxels are fine (a line left with none is refused by preprocess).
    with np.errstate(invalid="ignore"):
        mask = ((bits & bad_value) != 0) | ~(ivar > 0) | ~np.isfinite(ivar) | ~(np.abs(flux) <= MAX_ABS_FLUX)
    footprint = ~((bits & (1 << DAPPIXMASK_BITS["NOCOV"])) != 0).any(axis=0)
    ew = _equivalent_widths(path, ew_ext, lines, flux.shape[1:], bad_value) if ew_ext else None

    ra = _header_float(primary, "OBJRA", "IFURA")
    dec = _header_float(primary, "OBJDEC", "IFUDEC")
    z = _header_float(primary, "Z")
    if not np.isfinite(z):
        z = _header_float(primary, "SCINPVEL") / C_KMS
    try:
        pixscale, center = _astrometry(headers[0], ra, dec, flux.shape[1:])
    except ValueError as exc:  # astropy's WcsError family: unknown projection, singular matrix
        problem = " ".join(str(exc).split())
        raise MapsError(path, f"the WCS of {EXTENSIONS[0]} is invalid: {problem}") from None
    fwhms = [v for v in (_header_float(primary, key) for key in PSF_KEYS) if v > 0]
    return GalaxyMaps(
        path=path,
        galaxy_id=str(galaxy_id).strip(),
        mangaid=str(primary.get("MANGAID", "")).strip(),
        ra=ra,
        dec=dec,
        z=z,
        daptype=str(primary.get("DAPTYPE", "")).strip(),
        versdap=str(primary.get("VERSDAP", "")).strip(),
        lines=lines,
        flux=flux,
        ivar=ivar,
        mask=mask,
        bits=bits,
        pixscale=pixscale,
        center=center,
        footprint=footprint,
        ew=ew,
        psf_fwhm=min(fwhms, default=float("nan")),
    )


def _equivalent_widths(path, ext: dict, lines, map_shape, bad_value: int) -> np.ndarray | None:
    """(L, ny, nx) the EMLINE_GEW of ``lines``, NaN where its mask has a bad bit or it is not finite.

    None when the extension lacks a line or its maps have another shape than the fluxes':
    the equivalent width is optional, so such a file is read without it, not refused.
    """
    (hdr, ew), mask = ext.get(EW_EXTENSIONS[0], (None, None)), ext.get(EW_EXTENSIONS[2])
    if ew is None or ew.ndim != 3 or ew.shape[1:] != tuple(map_shape) or "C01" not in hdr:
        return None
    names = _channel_names(path, EW_EXTENSIONS[0], hdr, ew.shape[0])
    if not set(lines) <= set(names):
        return None
    idx = [names.index(name) for name in lines]
    out = ew[idx].astype(np.float32)  # (L, ny, nx)
    bad = ~np.isfinite(out)
    if mask is not None and mask[1].shape == ew.shape:
        bad |= (mask[1][idx].astype(np.int64) & bad_value) != 0
    out[bad] = np.nan
    return out


def _bit_value(path, bad_bits) -> int:
    if isinstance(bad_bits, str):
        bad_bits = (bad_bits,)
    unknown = [b for b in bad_bits if b not in DAPPIXMASK_BITS]
    if unknown:
        raise MapsError(
            path, f"unknown mask bit name(s) {', '.join(map(str, unknown))}; known: {', '.join(DAPPIXMASK_BITS)}"
        )
    return sum(1 << DAPPIXMASK_BITS[b] for b in set(bad_bits))


def _read_fits(path: Path):
    """Return (primary header, [flux, ivar, mask headers], (flux, ivar, mask arrays), optional).

    ``optional``: ``{name: (header, array)}`` of the :data:`EW_EXTENSIONS` the file has.

    The whole file is read into memory first (:func:`_read_capped`): a ``.gz`` file is
    decompressed to its end, which checks its CRC and length (astropy's lazy gzip reads
    would silently stop at a truncation and report a "missing" extension instead, or return
    damaged bytes that lie before the first failing block), at about the same speed.
    Astropy's truncation and header-verification warnings become errors, so a damaged file
    never yields partial data.
    """
    raw = _read_capped(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", VerifyWarning)
            warnings.filterwarnings("error", message="File may have been truncated")
            # lazy_load_hdus=False reads every header now, so a truncation anywhere is seen.
            with fits.open(raw, lazy_load_hdus=False) as hdul:
                # Each of astropy's hdul[name] parses every HDU's EXTNAME again: looked up once here. The file is
                # in memory, so its headers and arrays stay valid once it is closed (no copies).
                names = [hdu.name for hdu in hdul]
                by_name = {}
                for name, hdu in zip(names, hdul):
                    by_name.setdefault(name, hdu)  # the first of a name, as hdul[name] gives
                missing = [ext for ext in EXTENSIONS if ext not in by_name]
                if missing:
                    raise MapsError(
                        path, f"extension(s) {', '.join(missing)} missing; the file has: {', '.join(names)}"
                    )
                primary = hdul[0].header
                headers = [by_name[ext].header for ext in EXTENSIONS]
                arrays = tuple(np.asarray(by_name[ext].data) for ext in EXTENSIONS)
                optional = {ext: (by_name[ext].header, np.asarray(by_name[ext].data))
                            for ext in EW_EXTENSIONS if ext in by_name and by_name[ext].data is not None}
    except (OSError, EOFError, ValueError, TypeError, VerifyWarning, AstropyUserWarning) as exc:
        raise MapsError(path, f"not a readable FITS file ({type(exc).__name__}: {exc})") from None
    return primary, headers, arrays, optional


def _read_capped(path: Path) -> io.BytesIO:
    """The bytes of ``path``, decompressed when it is gzipped, read in chunks that stop at
    :data:`MAX_FILE_BYTES`: a decompression bomb is refused after reading that much, never
    held whole in memory."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise MapsError(path, "file not found") from None
    except OSError as exc:
        raise MapsError(path, f"cannot read the file: {exc.strerror or exc}") from None
    out = io.BytesIO()
    with fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
        fh.seek(0)
        source = gzip.GzipFile(fileobj=fh, mode="rb") if gzipped else fh
        try:
            while chunk := source.read(READ_CHUNK):
                if out.tell() + len(chunk) > MAX_FILE_BYTES:
                    raise MapsError(path, f"holds more than {MAX_FILE_BYTES / 2**20:.0f} MiB"
                                          f"{' once decompressed' if gzipped else ''}, far more than any real "
                                          "MAPS file (core.maps.MAX_FILE_BYTES); refused")
                out.write(chunk)
        except EOFError:
            raise MapsError(path, "the gzip file is truncated (it ends before the end of its stream)") from None
        except (OSError, zlib.error) as exc:
            if not gzipped:
                raise MapsError(path, f"cannot read the file: {exc.strerror or exc}") from None
            raise MapsError(path, f"the gzip file is corrupt ({exc})") from None
    out.seek(0)
    return out


def _channel_names(path, ext: str, header, n: int) -> list[str]:
    names = [str(header[key]).strip() for i in range(1, n + 1) if (key := f"C{i:02d}") in header]
    if not names:
        raise MapsError(path, f"no channel names (header keys C01, C02, ...) in {ext}")
    if len(names) != n:
        raise MapsError(path, f"{ext} names {len(names)} channels in C01, C02, ... but holds {n}")
    # A name given twice would be read from its first plane, which may be the wrong one.
    twice = {name: [f"C{i:02d}" for i, other in enumerate(names, 1) if other == name]
             for name in names if names.count(name) > 1}
    if twice:
        raise MapsError(path, f"{ext} names a channel more than once: "
                              + "; ".join(f"{name} in {', '.join(keys)}" for name, keys in twice.items()))
    return names


def _header_float(header, *keys) -> float:
    for key in keys:
        try:
            value = float(header[key])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isfinite(value):
            return value
    return float("nan")


def _astrometry(header, ra: float, dec: float, shape) -> tuple[float, tuple[float, float]]:
    """Spaxel size (arcsec) and the 0-based (x, y) pixel of (ra, dec) from the map's WCS.

    Falls back to MaNGA's 0.5" spaxels and CRPIX (or the map centre) when the header has
    no celestial WCS or the object position is unknown.
    """
    ny, nx = shape
    fallback = (
        float(header.get("CRPIX1", (nx + 1) / 2)) - 1.0,
        float(header.get("CRPIX2", (ny + 1) / 2)) - 1.0,
    )
    with warnings.catch_warnings():
        # Astropy "fixes" old-style date and unit keywords with a warning; harmless here.
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        return MANGA_PIXSCALE, fallback
    # .celestial builds a new WCS on each access (a fifth of a file's read); a map's two axes, RA then Dec, are it
    celestial = wcs if (wcs.naxis, wcs.wcs.lng, wcs.wcs.lat) == (2, 0, 1) else wcs.celestial
    pixscale = float(np.mean(proj_plane_pixel_scales(celestial)) * 3600.0)
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return pixscale, fallback
    x, y = celestial.world_to_pixel_values(ra, dec)
    if not (np.isfinite(x) and np.isfinite(y)):
        return pixscale, fallback
    return pixscale, (float(x), float(y))


# --------------------------------------------------------------------------------------
# Resampling to a grid


#: The catalogue columns of each galaxy's :attr:`GridMaps.noise_factor`, :attr:`GridMaps.cell_spaxels` and
#: :attr:`GridMaps.noise_sigma`.
NOISE_FACTOR, CELL_SPAXELS, NOISE_SIGMA = "noise_factor", "cell_spaxels", "noise_sigma"


def to_grid(g: GalaxyMaps, size: int = 32, min_good: float = 0.5, margin: float = 1.0) -> GridMaps:
    """Crop the square around the covered footprint and resample it to ``size x size`` cells.

    The square is centred on the footprint's bounding box and ``margin`` spaxels wider on
    every side. Resampling uses the exact area overlap of cells and spaxels (separable
    matrices ``Wy (S, ny)``, ``Wx (S, nx)``), so it works for any ``size``, up or down,
    and for non-square maps. A cell is masked when less than ``min_good`` of its area is
    covered by good spaxels (those outside the map count as bad); a good cell gets the
    mean surface brightness of its good spaxels times the cell area, i.e. flux per cell in
    the file's units, so integrated fluxes and line ratios are preserved. Variances are
    propagated with the correlation of neighbouring spaxels' noise that the file's kind has
    (:func:`noise_correlation`, :func:`_cell_variance`).
    """
    if size < 1:
        raise ValueError(f"grid size must be positive, got {size}")
    if not 0.0 < min_good <= 1.0:
        raise ValueError(f"min_good must be in (0, 1], got {min_good}")
    if not g.footprint.any():
        raise MapsError(g.path, "no covered spaxels (NOCOV is set everywhere)")
    ny, nx = g.footprint.shape
    rows = np.flatnonzero(g.footprint.any(axis=1))
    cols = np.flatnonzero(g.footprint.any(axis=0))
    height, width = rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]
    if min(height, width) < MIN_MAP_SPAXELS:
        raise MapsError(g.path, f"the covered footprint is {height} x {width} spaxels; a galaxy needs at least "
                                f"{MIN_MAP_SPAXELS} x {MIN_MAP_SPAXELS}")
    side = max(height, width) + 2.0 * margin
    x0 = (cols[0] + cols[-1] + 1) / 2.0 - side / 2.0
    y0 = (rows[0] + rows[-1] + 1) / 2.0 - side / 2.0
    wy = _overlap(y0, side, size, ny)  # (S, ny)
    wx = _overlap(x0, side, size, nx)  # (S, nx)

    good = ~g.mask  # (L, ny, nx)
    flux = np.where(good, g.flux, 0.0).astype(np.float64)
    with np.errstate(divide="ignore"):
        var = np.where(good, 1.0 / g.ivar.astype(np.float64), 0.0)
    wxt = np.ascontiguousarray(wx.T)  # (nx, S)
    total = wy @ flux @ wxt  # (S, ny) @ (L, ny, nx) @ (nx, S) -> (L, S, S)
    cover = wy @ good.astype(np.float64) @ wxt  # good area inside each cell, in spaxels
    sigma = noise_correlation(g)
    var_total = _cell_variance(wy, wx, var, sigma)
    cell_area = (side / size) ** 2
    # The tolerance keeps a fully covered cell good at min_good=1 despite rounding.
    bad = cover < min_good * cell_area * (1.0 - 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        fill = cell_area / cover  # mean surface brightness * cell area = total * fill
        out_flux = np.where(bad, np.nan, total * fill)
        out_ivar = np.where(bad, 0.0, 1.0 / (var_total * fill**2))
        cells = np.where(bad, 0.0, var_total * fill**2).sum((1, 2))  # (L,) the sum of the good cells' variances
    # each spaxel's weight in the sum of the good cells, whose variance is then that of a sum over spaxels
    weight = wy.T @ np.where(bad, 0.0, fill) @ wx  # (ny, S) @ (L, S, S) @ (S, nx) -> (L, ny, nx)
    factors = _sum_variance(weight, var, sigma)[cells > 0] / cells[cells > 0]

    cell = side / size
    cx, cy = g.center
    return GridMaps(
        path=g.path,
        galaxy_id=g.galaxy_id,
        lines=g.lines,
        flux=out_flux.astype(np.float32),
        ivar=out_ivar.astype(np.float32),
        mask=bad,
        pixscale=g.pixscale * cell,
        # Pixel centres sit at integers, edges at half-integers, in both coordinate systems.
        center=((cx + 0.5 - x0) / cell - 0.5, (cy + 0.5 - y0) / cell - 0.5),
        crop=(float(x0), float(y0), float(x0 + side), float(y0 + side)),
        noise_factor=float(np.median(factors)) if len(factors) else 1.0,
        noise_sigma=sigma,
    )


def noise_correlation(g: GalaxyMaps) -> float:
    """Sigma (spaxels) of the correlation of the file's neighbouring spaxels' noise: 0 (independent) for the
    project's synthetic files, :data:`MANGA_NOISE_SIGMA` for every other (a MaNGA cube's DAP maps)."""
    return 0.0 if g.versdap.startswith(SYNTHETIC_VERSDAP) else MANGA_NOISE_SIGMA


def _shifted(a: np.ndarray, d: int, axis: int) -> np.ndarray:
    """``a`` with ``a[..., i + d, ...]`` at ``i`` along ``axis``; 0 where ``i + d`` falls outside."""
    out = np.zeros_like(a)
    n = a.shape[axis]
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis], dst[axis] = slice(max(d, 0), n + min(d, 0)), slice(max(-d, 0), n - max(d, 0))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _cell_variance(wy: np.ndarray, wx: np.ndarray, var: np.ndarray, sigma: float) -> np.ndarray:
    """(L, S, S) the variance of each cell's sum ``sum_j w_j x_j`` of spaxels with variances ``var``
    (L, ny, nx), 0 where unused, and weights ``wy (S, ny) x wx (S, nx)``.

    ``sum_jk w_j w_k rho_jk s_j s_k`` with ``s = sqrt(var)``, ``rho_jk = exp(-D^2 / (2 sigma^2))`` out to
    :data:`MANGA_NOISE_REACH` spaxels and 0 beyond (independent spaxels for ``sigma`` 0). Each offset
    ``d = k - j`` is one separable sum: ``(wy * wy shifted by dy) @ (s * s shifted by d) @ (wx * wx shifted)^T``.
    """
    wxt = np.ascontiguousarray(wx.T)  # (nx, S)
    s = np.sqrt(var)
    out = np.zeros((var.shape[0], wy.shape[0], wxt.shape[1]))
    for dy, dx, rho in _correlated(sigma):
        pairs = s * _shifted(_shifted(s, dy, 1), dx, 2)  # (L, ny, nx) s_j s_(j+d)
        wy_d = wy * _shifted(wy, dy, 1)  # (S, ny) wy[c, j] wy[c, j + dy]
        wx_d = wxt * _shifted(wxt, dx, 0)  # (nx, S)
        out += rho * (wy_d @ pairs @ wx_d)  # (S, ny) @ (L, ny, nx) @ (nx, S) -> (L, S, S)
    return out


def _correlated(sigma: float):
    """``(dy, dx, rho)`` for every offset of two spaxels whose noise is correlated, ``(0, 0, 1)`` first: the DAP's
    ``exp(-D^2 / (2 sigma^2))`` out to :data:`MANGA_NOISE_REACH`; the spaxel alone for ``sigma`` 0."""
    yield 0, 0, 1.0
    if sigma == 0:
        return
    reach = int(np.floor(MANGA_NOISE_REACH))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy, dx) != (0, 0) and dy * dy + dx * dx <= MANGA_NOISE_REACH**2:
                yield dy, dx, float(np.exp(-(dy * dy + dx * dx) / (2 * sigma**2)))


def _sum_variance(weight: np.ndarray, var: np.ndarray, sigma: float) -> np.ndarray:
    """(L,) the variance of ``sum_j w_j x_j`` over all spaxels, with weights ``weight`` and variances ``var`` (both
    (L, ny, nx)) and the spaxels' correlation of :func:`_cell_variance`."""
    ws = weight * np.sqrt(var)  # (L, ny, nx)
    return sum(rho * (ws * _shifted(_shifted(ws, dy, 1), dx, 2)).sum((1, 2)) for dy, dx, rho in _correlated(sigma))


def filter_variance_factor(kernel: np.ndarray, cell_spaxels: float, sigma: float) -> float:
    """How much more variance a sum of a grid's cells weighted by ``kernel (k) x kernel (k)`` has than the sum of
    its cells' own variances would give: 1 for independent cells, more where neighbouring cells share noise.

    For a grid of cells of ``cell_spaxels`` spaxels over spaxels of equal noise with the correlation of
    :func:`_cell_variance` (``sigma`` 0: independent), averaged over where the cells' edges fall on the spaxels.
    A single cell gives 1; a kernel far wider than the correlation, the factor of a region without edges (a whole
    galaxy's ``noise_factor`` is somewhat less: its edge cells have fewer neighbours).
    """
    kernel = np.asarray(kernel, np.float64)
    covariance = _cell_covariance(round(float(cell_spaxels), 3), float(sigma))  # (2R+1, 2R+1) by offset
    reach = covariance.shape[0] // 2
    auto = np.correlate(kernel, kernel, "full")  # (2k-1,) sum_a k_a k_(a+D)
    half = len(kernel) - 1
    pad = max(reach, half)
    a = np.zeros(2 * pad + 1)
    a[pad - half:pad + half + 1] = auto
    a = a[pad - reach:pad + reach + 1]  # the kernel's autocorrelation at the covariance's offsets
    return float(a @ covariance @ a / (covariance[reach, reach] * np.sum(kernel**2) ** 2))


@functools.lru_cache(maxsize=512)
def _cell_covariance(cell: float, sigma: float) -> np.ndarray:
    """(2R+1, 2R+1) the mean covariance of two cells ``(dy, dx)`` apart, for spaxels of unit noise
    (:func:`filter_variance_factor`).

    Each offset ``d`` of two correlated spaxels contributes a separable term: on a strip of cells, ``py(D)`` is the
    mean over cells ``a`` of ``sum_j wy[a, j] wy[a + D, j + dy]``, and likewise in x.
    """
    offsets = list(_correlated(sigma))
    far = max(abs(dy) for dy, _, _ in offsets)  # spaxels apart that still share noise
    reach = int(np.ceil((far + 1) / cell)) + 1  # cells as far apart as shared or correlated spaxels reach
    n = 4 * reach + 8  # a strip long enough that its middle cells see every phase and have neighbours each side
    w = _overlap(0.0, n * cell, n, int(np.ceil(n * cell)) + 1)  # (n, spaxels)
    middle = np.arange(reach, n - reach)

    def strip(d):  # (2R+1,) over offsets D: mean over middle cells of sum_j w[a, j] w[a + D, j + d]
        pairs = w @ _shifted(w, d, 1).T  # (n, n): [a, b] = sum_j w[a, j] w[b, j + d]
        return np.array([pairs[middle, middle + dd].mean() for dd in range(-reach, reach + 1)])

    return sum(rho * np.outer(strip(dy), strip(dx)) for dy, dx, rho in offsets)


def _overlap(start: float, side: float, size: int, n: int) -> np.ndarray:
    """(size, n) lengths of overlap between ``size`` equal cells over [start, start + side)
    and the unit spaxels [i, i + 1) of an axis of ``n`` spaxels."""
    edges = start + side * np.arange(size + 1) / size
    pix = np.arange(n, dtype=np.float64)
    hi = np.minimum(edges[1:, None], pix[None, :] + 1.0)
    lo = np.maximum(edges[:-1, None], pix[None, :])
    return np.clip(hi - lo, 0.0, None)


# --------------------------------------------------------------------------------------
# Normalisation


def normalise(grid: GridMaps, mode: str) -> tuple[GridMaps, float]:
    """Scale a physical-flux grid by one of :data:`NORMALISATIONS`; return it and the scale.

    The linear modes divide flux by ``scale`` and multiply ivar by ``scale**2``. For
    ``asinh`` the flux becomes ``asinh(flux / scale)`` and ivar is the first-order
    (delta-method) inverse variance of that stretched value, ``ivar * (scale**2 + flux**2)``.
    Masked cells stay NaN with ivar 0. Raises :class:`MapsError` when the scale cannot be
    set (no good Ha cell with positive flux).
    """
    _check_norm(mode)
    if len(grid.lines) != grid.flux.shape[0]:
        raise ValueError(f"grid.lines names {len(grid.lines)} lines but flux holds {grid.flux.shape[0]}")
    if grid.norm != "none":
        raise BlueberryError(f"{grid.path}: the grid is already normalised ({grid.norm!r})")
    if mode == "none":
        return grid, 1.0
    ha = BPT_LINES["ha"]
    if ha not in grid.lines:
        raise BlueberryError(f"normalisation {mode!r} needs {ha} in the line list; it has {', '.join(grid.lines)}")
    i = grid.lines.index(ha)
    values = grid.flux[i][~grid.mask[i]].astype(np.float64)
    if mode == "ha_total":
        scale = float(values.sum())
    else:
        scale = float(np.percentile(values, 99)) if values.size else float("nan")
        if mode == "asinh":
            scale *= ASINH_SOFTENING
    if not (np.isfinite(scale) and scale > 0):
        raise MapsError(grid.path, f"cannot normalise with {mode!r}: {ha} has no good cells with positive flux")

    flux = grid.flux.astype(np.float64)
    ivar = grid.ivar.astype(np.float64)
    if mode == "asinh":
        new_flux = np.arcsinh(flux / scale)
        new_ivar = ivar * (scale**2 + flux**2)
    else:
        new_flux = flux / scale
        new_ivar = ivar * scale**2
    new_ivar = np.where(grid.mask, 0.0, new_ivar)
    out = dataclasses.replace(
        grid, flux=new_flux.astype(np.float32), ivar=new_ivar.astype(np.float32), norm=mode, scale=scale
    )
    return out, scale


def denormalise(flux, scale, mode: str) -> np.ndarray:
    """Physical flux (1E-17 erg/s/cm^2 per cell) from normalised ``flux``.

    ``scale`` is the value :func:`normalise` returned, or an array of them broadcastable
    against ``flux`` (e.g. shape (N, 1, 1, 1) for a batch of galaxies). NaN stays NaN.
    """
    _check_norm(mode)
    flux = np.asarray(flux)
    if mode == "none":
        return flux
    if mode == "asinh":
        return np.sinh(flux) * scale
    return flux * scale


def _check_norm(mode: str) -> None:
    if mode not in NORMALISATIONS:
        raise BlueberryError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALISATIONS)}")


# --------------------------------------------------------------------------------------
# The whole chain


@dataclass
class Preprocessed:
    """One MAPS file through :func:`preprocess`."""

    maps: GalaxyMaps  # as read (native spaxels): the requested lines, plus the extra ones the file has
    physical: GridMaps  # every line read, on the grid, in physical units
    grid: GridMaps  # the requested lines, normalised: what the model sees
    scale: float  # the normalisation's scale; denormalise(grid.flux, scale, norm) is physical


def preprocess(path, opts: IngestOptions = IngestOptions(), extra_lines=()) -> Preprocessed:
    """Read a MAPS file, grid it and normalise it as ``opts`` says: ingest and ``train score`` both use it.

    ``extra_lines`` (ingest asks for the BPT lines) are read and gridded too, when the file
    has them all, but stay out of ``grid``. Raises :class:`MapsError` for a galaxy that the
    model cannot use, among them one with a requested line masked everywhere (ingest
    records the file as skipped).
    """
    _check_norm(opts.norm)
    needed = tuple(sorted(set(opts.lines) | set(extra_lines), key=wavelength))
    try:
        g = read_maps(path, lines=needed, bad_bits=opts.bad_bits)
    except MapsError as exc:
        if "missing" not in exc.problem or set(extra_lines) <= set(opts.lines):
            raise
        g = read_maps(path, lines=opts.lines, bad_bits=opts.bad_bits)  # the file lacks an extra line
    take = [g.lines.index(name) for name in opts.lines]
    empty = [name for name, i in zip(opts.lines, take) if g.mask[i].all()]
    if empty:
        raise MapsError(g.path, f"no good spaxels in line(s) {', '.join(empty)}")
    physical = to_grid(g, size=opts.size, min_good=opts.min_good)
    grid = dataclasses.replace(physical, lines=tuple(opts.lines), flux=physical.flux[take], ivar=physical.ivar[take],
                               mask=physical.mask[take])
    empty = [name for name, m in zip(grid.lines, grid.mask) if m.all()]
    if empty:
        raise MapsError(g.path, f"no good cells in line(s) {', '.join(empty)} on the {opts.size}x{opts.size} grid "
                                f"(min_good={opts.min_good})")
    grid, scale = normalise(grid, opts.norm)
    return Preprocessed(maps=g, physical=physical, grid=grid, scale=scale)
