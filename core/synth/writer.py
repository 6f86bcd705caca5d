"""The DAP file writer: a MaNGA ``MAPS`` file from maps in memory, the mirror of :mod:`core.maps`.

The files have the extensions (the emission-line fluxes and, when given, equivalent
widths), header keys, channel names ``C01..``, celestial TAN WCS
and ``MANGA_DAPPIXMASK`` bits of the MaNGA Data Analysis Pipeline's, so the reader of
real data serves the synthetic survey too. Writing is deterministic: the same maps give
the same bytes, gzip included.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from core.io import atomic_path
from core.lines import LINES
from core.lines import DAPPIXMASK, DAPPIXMASK_BITS
from core.maps import C_KMS, EW_EXTENSIONS, EXTENSIONS, MANGA_PIXSCALE

FLUX_UNIT = "1E-17 erg/s/cm^2/spaxel"
#: gzip level 1: three times faster than astropy's default 9 for ~10 % more disk.
GZIP_LEVEL = 1
#: The emission-line extensions, named as the reader expects them.
FLUX_EXT, IVAR_EXT, MASK_EXT = EXTENSIONS
#: The equivalent-width extensions, written after the fluxes' as in a real MAPS file.
EW_EXT, EW_IVAR_EXT, EW_MASK_EXT = EW_EXTENSIONS
EW_UNIT = "ang"


def _wcs_cards(nx: int, ny: int, ra: float, dec: float, pixscale: float, naxis: int) -> list:
    """WCS keys as the DAP writes them: celestial TAN on axes 1-2, a dummy third axis for cubes."""
    cards = [("WCSAXES", naxis, "Number of coordinate axes"),
             # The DAP puts the IFU centre on pixel nx//2 (0-based); FITS counts from 1.
             ("CRPIX1", float(nx // 2 + 1), "Pixel coordinate of reference point"),
             ("CRPIX2", float(ny // 2 + 1), "Pixel coordinate of reference point")]
    if naxis == 3:
        cards.append(("CRPIX3", 1.0, "Pixel coordinate of reference point"))
    cards += [("PC1_1", -pixscale / 3600.0, "Coordinate transformation matrix element"),
              ("PC2_2", pixscale / 3600.0, "Coordinate transformation matrix element"),
              ("CDELT1", 1.0, "[deg] Coordinate increment at reference point"),
              ("CDELT2", 1.0, "[deg] Coordinate increment at reference point")]
    if naxis == 3:
        cards.append(("CDELT3", 1.0, "Coordinate increment at reference point"))
    cards += [("CUNIT1", "deg", "Units of coordinate increment and value"),
              ("CUNIT2", "deg", "Units of coordinate increment and value"),
              ("CTYPE1", "RA---TAN", "Right ascension, gnomonic projection"),
              ("CTYPE2", "DEC--TAN", "Declination, gnomonic projection"),
              ("CRVAL1", float(ra), "[deg] Coordinate value at reference point"),
              ("CRVAL2", float(dec), "[deg] Coordinate value at reference point")]
    if naxis == 3:
        cards.append(("CRVAL3", 1.0, "Coordinate value at reference point"))
    cards += [("LONPOLE", 180.0, "[deg] Native longitude of celestial pole"),
              ("LATPOLE", float(dec), "[deg] Native latitude of celestial pole"),
              ("RADESYS", "FK5", "Equatorial coordinate system"),
              ("EQUINOX", 2000.0, "[yr] Equinox of equatorial coordinates")]
    if naxis == 3:
        cards += [("CTYPE3", "", "Undefined type"), ("CUNIT3", "", "Undefined units")]
    return cards


def _measurement_specs(names: tuple[str, str, str], unit: str, channels: tuple) -> dict:
    """The specs of a measurement's three extensions (values, inverse variance, mask), which name each other."""
    data, ivar, mask = names
    return {
        data: dict(channels=channels, bunit=unit,
                   extra=[("ERRDATA", ivar, "Associated inv. variance extension"),
                          ("QUALDATA", mask, "Associated quality extension")]),
        ivar: dict(channels=channels, bunit=f"({unit})^{{-2}}", hduclas2="ERROR",
                   extra=[("HDUCLAS3", "INVMSE", "Value is inverse mean-square error"),
                          ("SCIDATA", data, "Associated data extension"),
                          ("QUALDATA", mask, "Associated quality extension")]),
        mask: dict(channels=channels, hduclas2="QUALITY",
                   extra=[("HDUCLAS3", "FLAG32BIT", "32-bit mask"),
                          ("SCIDATA", data, "Associated data extension"),
                          ("ERRDATA", ivar, "Associated inv. variance extension")]),
    }


def _extension_spec(name: str, channels: tuple) -> dict:
    """Channel names and header keys of each MAPS extension, as the DAP writes them."""
    specs = {
        "SPX_ELLCOO": dict(channels=("Elliptical radius", "R/Re", "Elliptical azimuth"),
                           units=("arcsec", "", "degrees")),
        "SPX_SNR": {},
        "BINID": dict(channels=("Binned spectra", "Stellar continua", "Em. line moments",
                                "Em. line models", "Spectral indices")),
        **_measurement_specs(EXTENSIONS, FLUX_UNIT, channels),
        **_measurement_specs(EW_EXTENSIONS, EW_UNIT, channels),
    }
    return specs[name]


@lru_cache(maxsize=64)
def _extension_cards(name: str, shape: tuple, dtype: str, channels: tuple, pixscale: float):
    """The header card images of one extension, made by astropy once per layout.

    astropy verifies every card it formats (~0.1 ms each, 300 per file); only the WCS
    reference position differs between files of one layout, so those cards are swapped.
    Returns ``(cards, index of each key)``.
    """
    ny, nx = shape[-2:]
    spec = _extension_spec(name, channels)
    hdr = fits.Header(_wcs_cards(nx, ny, 0.0, 0.0, pixscale, len(shape)))
    hdr["MASKNAME"] = DAPPIXMASK
    names = spec.get("channels", ())
    for i, ch in enumerate(names):
        key = f"C{i + 1:02d}" if len(names) > 9 else f"C{i + 1}"
        hdr[key] = (ch, f"Data in channel {i + 1}")
        if spec.get("units"):
            hdr[f"U{i + 1}"] = (spec["units"][i], f"Units of data in channel {i + 1}")
    if "bunit" in spec:
        hdr["BUNIT"] = (spec["bunit"], "Unit of pixel value")
    hdr["HDUCLASS"] = ("SDSS", "SDSS format class")
    hdr["HDUCLAS1"] = ("CUBE", "Data format")
    hdr["HDUCLAS2"] = spec.get("hduclas2", "DATA")
    for key, value, comment in spec.get("extra", ()):
        hdr[key] = (value, comment)
    hdu = fits.ImageHDU(data=np.zeros(shape, dtype=dtype), header=hdr, name=name)
    text = hdu.header.tostring(endcard=False, padding=False)
    cards = tuple(text[i:i + 80] for i in range(0, len(text), 80))
    return cards, {card[:8].strip(): i for i, card in enumerate(cards)}


def _fits_block(text: bytes, fill: bytes) -> bytes:
    return text + fill * (-len(text) % 2880)


def _extension_bytes(name: str, data: np.ndarray, ra: float, dec: float, pixscale: float,
                     channels: tuple) -> bytes:
    cards, index = _extension_cards(name, data.shape, data.dtype.str, channels, float(pixscale))
    cards = list(cards)
    for key, value in (("CRVAL1", ra), ("CRVAL2", dec), ("LATPOLE", dec)):
        old = fits.Card.fromstring(cards[index[key]])
        cards[index[key]] = fits.Card(key, float(value), old.comment).image
    header = _fits_block(("".join(cards) + "END".ljust(80)).encode("ascii"), b" ")
    big_endian = data.astype(data.dtype.newbyteorder(">"), copy=False)
    return header + _fits_block(big_endian.tobytes(), b"\0")


def ellcoo(nx: int, ny: int, pixscale: float, pa: float, ellipticity: float, reff: float | None):
    """The DAP's ``SPX_ELLCOO``: elliptical radius (arcsec), R/Re and azimuth (deg) per spaxel.

    On-sky x grows to the east (decreasing column, since RA runs right to left), y to the
    north; ``pa`` is the major axis east of north; the radius is the semi-major axis of the
    ellipse of ellipticity ``1 - b/a`` through the spaxel.
    """
    x = -(np.arange(nx) - nx // 2) * pixscale
    y = (np.arange(ny) - ny // 2) * pixscale
    xx, yy = np.meshgrid(x, y)
    sp, cp = np.sin(np.radians(pa)), np.cos(np.radians(pa))
    major = xx * sp + yy * cp
    minor = (xx * cp - yy * sp) / (1.0 - ellipticity)
    radius = np.hypot(major, minor)
    azimuth = np.degrees(np.arctan2(minor, major)) % 360.0
    r_re = radius / reff if reff else np.zeros_like(radius)
    return np.stack([radius, r_re, azimuth]).astype(np.float32)


def _check_maps(path: Path, channels: tuple, flux, ivar, mask, binid, snr):
    """The maps as the file stores them: float32 flux and ivar, int32 mask and bin ids
    (``(5, ny, nx)``, by default one bin per covered spaxel), float32 ``snr``."""
    unknown = [c for c in channels if c not in LINES]
    if unknown:
        raise ValueError(f"unknown emission-line channel(s) {unknown} for {path}")
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.int32)
    if flux.ndim != 3 or flux.shape[0] != len(channels):
        raise ValueError(f"flux must be (C={len(channels)}, ny, nx), got {flux.shape} for {path}")
    if ivar.shape != flux.shape or mask.shape != flux.shape:
        raise ValueError(f"flux {flux.shape}, ivar {ivar.shape} and mask {mask.shape} differ for {path}")
    _, ny, nx = flux.shape
    if binid is None:
        covered = ~np.all(mask & (1 << DAPPIXMASK_BITS["NOCOV"]), axis=0).astype(bool)
        binid = np.full((ny, nx), -1, dtype=np.int32)
        binid[covered] = np.arange(int(covered.sum()), dtype=np.int32)
    binid = np.asarray(binid, dtype=np.int32)
    if binid.ndim == 2:
        binid = np.broadcast_to(binid, (5, ny, nx))  # the DAP's five binning stages
    if binid.shape != (5, ny, nx):
        raise ValueError(f"binid must be (ny, nx) or (5, ny, nx), got {binid.shape} for {path}")
    snr = np.zeros((ny, nx), np.float32) if snr is None else np.asarray(snr, dtype=np.float32)
    if snr.shape != (ny, nx):
        raise ValueError(f"snr must be ({ny}, {nx}), got {snr.shape} for {path}")
    return flux, ivar, mask, binid, snr


def _primary_header(*, galaxy_id, mangaid, ra, dec, z, daptype, versdap, pa, ellipticity, reff,
                    extra_header) -> fits.Header:
    plate, _, ifu = str(galaxy_id).partition("-")
    primary = fits.Header()
    primary["AUTHOR"] = "Blueberry synthetic survey (core.synth)"
    primary["MASKNAME"] = (DAPPIXMASK, "Bits in sdssMaskbits.par used by mask extension")
    primary["TELESCOP"] = ("SDSS 2.5-M", "Sloan Digital Sky Survey")
    primary["INSTRUME"] = ("MaNGA", "SDSS-IV MaNGA IFU (simulated)")
    primary["OBJSYS"] = ("ICRS", "The TCC objSys")
    primary["EQUINOX"] = 2000.0
    primary["RADESYS"] = "FK5"
    primary["IFURA"] = (float(ra), "IFU R.A. (J2000 deg.)")
    primary["IFUDEC"] = (float(dec), "IFU Dec. (J2000 deg.)")
    primary["OBJRA"] = (float(ra), "Object R.A. (J2000 deg.)")
    primary["OBJDEC"] = (float(dec), "Object Dec. (J2000 deg.)")
    if plate.isdigit() and ifu.isdigit():
        primary["PLATEID"] = (int(plate), "Current plate")
        primary["IFUDSGN"] = (int(ifu), "ifuDesign")
    primary["PLATEIFU"] = (str(galaxy_id), "PLATEID-ifuDesign")
    primary["MANGAID"] = (str(mangaid), "MaNGA ID number")
    primary["VERSDAP"] = (versdap, "MaNGA DAP version")
    primary["DAPTYPE"] = (daptype, "DAP analysis method")
    primary["DAPFRMT"] = ("MAPS", "DAP data file format")
    primary["ECOOPA"] = (float(pa), "Position angle for ellip. coo")
    primary["ECOOELL"] = (float(ellipticity), "Ellipticity (1-b/a) for ellip. coo")
    if reff:
        primary["REFF"] = (float(reff), "Effective radius (arcsec)")
    primary["SCINPVEL"] = (float(C_KMS * z), "Initial guess velocity")
    primary["Z"] = (float(z), "Redshift")
    for key, value in (extra_header or {}).items():
        primary[key] = value
    primary["DAPQUAL"] = (0, "DAP quality bitmask")
    return primary


def write_maps_file(path, *, galaxy_id: str, mangaid: str, ra: float, dec: float, z: float,
                    channels, flux, ivar, mask, binid=None, snr=None, pixscale: float = MANGA_PIXSCALE,
                    daptype: str = "SYNTH-GAU-BLUEBERRY", versdap: str = "blueberry-synth-1",
                    pa: float = 0.0, ellipticity: float = 0.0, reff: float | None = None,
                    extra_header=None, ew=None, ew_ivar=None) -> Path:
    """Write a MaNGA DAP ``MAPS`` file (gzip-compressed when ``path`` ends in ``.gz``).

    ``flux``, ``ivar`` and ``mask`` are ``(C, ny, nx)`` in the order of ``channels`` (DAP
    names such as ``core.lines.DR15_CHANNELS``); flux in 1E-17 erg/s/cm^2/spaxel; ``mask``
    holds ``MANGA_DAPPIXMASK`` bits. ``binid`` is ``(ny, nx)`` or ``(5, ny, nx)``; by
    default every covered spaxel (NOCOV unset in any channel) is its own bin, -1 elsewhere.
    ``snr`` is the continuum S/N map ``SPX_SNR`` (zeros by default). ``pa``,
    ``ellipticity`` and ``reff`` (arcsec) define ``SPX_ELLCOO`` and the ``ECOOPA``,
    ``ECOOELL`` and ``REFF`` keys. ``extra_header`` (a dict) adds primary header keys.
    ``ew`` and ``ew_ivar`` (``(C, ny, nx)``, Angstrom), when given, add the equivalent-width
    extensions ``EMLINE_GEW``, ``_IVAR`` and ``_MASK`` (``mask`` again) after the others.
    The write is atomic and deterministic (the same inputs give the same bytes).
    """
    path = Path(path)
    channels = tuple(channels)
    flux, ivar, mask, binid, snr = _check_maps(path, channels, flux, ivar, mask, binid, snr)
    ny, nx = snr.shape
    primary = _primary_header(galaxy_id=galaxy_id, mangaid=mangaid, ra=ra, dec=dec, z=z, daptype=daptype,
                              versdap=versdap, pa=pa, ellipticity=ellipticity, reff=reff,
                              extra_header=extra_header)
    parts = [fits.PrimaryHDU(header=primary).header.tostring().encode("ascii")]
    extensions = [("SPX_ELLCOO", ellcoo(nx, ny, pixscale, pa, ellipticity, reff)), ("SPX_SNR", snr),
                  ("BINID", binid), (FLUX_EXT, flux), (IVAR_EXT, ivar), (MASK_EXT, mask)]
    if ew is not None:
        ew, ew_ivar = (np.asarray(a, dtype=np.float32) for a in (ew, ew_ivar))
        if ew.shape != flux.shape or ew_ivar.shape != flux.shape:
            raise ValueError(f"ew {ew.shape} and ew_ivar {ew_ivar.shape} must have the shape of flux {flux.shape} "
                             f"for {path}")
        extensions += [(EW_EXT, ew), (EW_IVAR_EXT, ew_ivar), (EW_MASK_EXT, mask)]
    for name, data in extensions:
        parts.append(_extension_bytes(name, np.ascontiguousarray(data), ra, dec, pixscale, channels))
    data = b"".join(parts)
    if path.name.endswith(".gz"):
        # mtime=0: the same galaxy gives the same bytes, so checksums are reproducible.
        data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
