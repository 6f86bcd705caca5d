"""Tables of the MaNGA Data Analysis Pipeline (DAP): emission-line channels and pixel mask bits.

Channel names follow the DAP: ``<ion>-<rounded vacuum wavelength>``. The DAP writes them
into the header of every emission-line extension as ``C01``, ``C02``, ... and the order
differs between releases, so code must look channels up by name (``core.maps`` does),
never by a fixed index.

Wavelengths are the vacuum rest wavelengths (Angstrom) of the DAP emission-line
parameter files (``ELPMPL8`` / ``ELPMPL11``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    name: str  # DAP channel name, e.g. "Ha-6564"
    wave: float  # vacuum rest wavelength, Angstrom
    ion: str  # species, e.g. "Ha", "OIII"


def _table(rows: list[tuple[str, float]]) -> tuple[Line, ...]:
    return tuple(Line(name, wave, name.split("-")[0]) for name, wave in rows)


_WAVES = {
    "OII-3727": 3727.092, "OII-3729": 3729.875, "H12-3751": 3751.217,
    "H11-3771": 3771.701, "Hthe-3798": 3798.976, "Heta-3836": 3836.472,
    "NeIII-3869": 3869.860, "HeI-3889": 3889.749, "Hzet-3890": 3890.151,
    "NeIII-3968": 3968.590, "Heps-3971": 3971.195, "Hdel-4102": 4102.892,
    "Hgam-4341": 4341.684, "HeII-4687": 4687.015, "Hb-4862": 4862.683,
    "OIII-4960": 4960.295, "OIII-5008": 5008.240, "NI-5199": 5199.349,
    "NI-5201": 5201.705, "HeI-5877": 5877.243, "OI-6302": 6302.046,
    "OI-6365": 6365.535, "NII-6549": 6549.860, "Ha-6564": 6564.608,
    "NII-6585": 6585.271, "SII-6718": 6718.294, "SII-6732": 6732.674,
    "HeI-7067": 7067.144, "ArIII-7137": 7137.760, "ArIII-7753": 7753.240,
    "Peta-9017": 9017.385, "SIII-9071": 9071.100, "Pzet-9231": 9231.547,
    "SIII-9533": 9533.200, "Peps-9548": 9548.588,
}

#: DR15 (DAP 2.2, MPL-7) channel order of EMLINE_GFLUX: 22 channels.
DR15_CHANNELS: tuple[str, ...] = (
    "OII-3727", "OII-3729", "Hthe-3798", "Heta-3836", "NeIII-3869", "Hzet-3890",
    "NeIII-3968", "Heps-3971", "Hdel-4102", "Hgam-4341", "HeII-4687", "Hb-4862",
    "OIII-4960", "OIII-5008", "HeI-5877", "OI-6302", "OI-6365", "NII-6549",
    "Ha-6564", "NII-6585", "SII-6718", "SII-6732",
)

#: DR17 (DAP 3.1, MPL-11) channel order of EMLINE_GFLUX: 35 channels.
DR17_CHANNELS: tuple[str, ...] = (
    "OII-3727", "OII-3729", "H12-3751", "H11-3771", "Hthe-3798", "Heta-3836",
    "NeIII-3869", "HeI-3889", "Hzet-3890", "NeIII-3968", "Heps-3971", "Hdel-4102",
    "Hgam-4341", "HeII-4687", "Hb-4862", "OIII-4960", "OIII-5008", "NI-5199",
    "NI-5201", "HeI-5877", "OI-6302", "OI-6365", "NII-6549", "Ha-6564", "NII-6585",
    "SII-6718", "SII-6732", "HeI-7067", "ArIII-7137", "ArIII-7753", "Peta-9017",
    "SIII-9071", "Pzet-9231", "SIII-9533", "Peps-9548",
)

RELEASES: dict[str, tuple[str, ...]] = {"dr15": DR15_CHANNELS, "dr17": DR17_CHANNELS}

#: Every DAP line we know, by name.
LINES: dict[str, Line] = {ln.name: ln for ln in _table(sorted(_WAVES.items(), key=lambda kv: kv[1]))}

#: The default sequence (Mantha et al. 2026): every DR15 line between 3800 and 8000 A,
#: in wavelength order. All 19 are in DR17 too.
DEFAULT_LINES: tuple[str, ...] = tuple(
    name for name in sorted(DR15_CHANNELS, key=lambda n: _WAVES[n]) if 3800.0 < _WAVES[name] < 8000.0
)

#: Lines the BPT diagrams need, by role.
BPT_LINES = {
    "hb": "Hb-4862", "oiii": "OIII-5008", "oi": "OI-6302", "ha": "Ha-6564",
    "nii": "NII-6585", "sii_a": "SII-6718", "sii_b": "SII-6732",
}

#: Name of the DAP's pixel mask, written in the MASKNAME header key of every mask extension.
DAPPIXMASK = "MANGA_DAPPIXMASK"

#: Bit numbers of the MANGA_DAPPIXMASK (sdssMaskbits.par), used by every DAP map mask.
DAPPIXMASK_BITS: dict[str, int] = {
    "NOCOV": 0,  # no coverage in this spaxel
    "LOWCOV": 1,  # low coverage in this spaxel
    "DEADFIBER": 2,  # a major contributing fibre is dead
    "FORESTAR": 3,  # foreground star
    "NOVALUE": 4,  # the spaxel was not fit (e.g. below the S/N limit)
    "UNRELIABLE": 5,  # value is deemed unreliable
    "MATHERROR": 6,  # mathematical error in computing the value
    "FITFAILED": 7,  # the fit failed
    "NEARBOUND": 8,  # a fitted parameter is near its boundary
    "NOCORRECTION": 9,  # an appropriate correction was not available
    "MULTICOMP": 10,  # multi-component velocity features present
    "DONOTUSE": 30,  # do not use this spaxel for science
}

#: The bits that make a spaxel bad by default, as Marvin does.
DEFAULT_BAD_BITS: tuple[str, ...] = ("NOCOV", "UNRELIABLE", "DONOTUSE")


def wavelength(name: str) -> float:
    """Vacuum rest wavelength of a DAP channel, in Angstrom."""
    try:
        return LINES[name].wave
    except KeyError:
        raise KeyError(f"unknown emission line {name!r}; known lines: {', '.join(LINES)}") from None


def check_lines(names) -> tuple[str, ...]:
    """Validate a user-given line list: known names, no repeats, in wavelength order."""
    names = tuple(names)
    unknown = [n for n in names if n not in LINES]
    if unknown:
        raise ValueError(f"unknown emission line(s) {', '.join(unknown)}; known lines: {', '.join(LINES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated emission line(s) in {', '.join(names)}")
    if not names:
        raise ValueError("the line list is empty")
    return tuple(sorted(names, key=wavelength))

#: Bit numbers of MANGA_DAPQUAL, the DAP's quality bits of a whole galaxy (the DAPQUAL key of
#: every MAPS header and the DAPQUAL column of the DAPall catalogue).
DAPQUAL_BITS: dict[str, int] = {
    "FORESTAR": 0,  # a foreground star in the field
    "BADZ": 1,  # the redshift is wrong
    "LINELESS": 2,  # no emission lines in the cube
    "PPXFFAIL": 3,  # pPXF failed to fit the galaxy
    "SINGLEBIN": 4,  # the binning left a single bin
    "BADGEOM": 5,  # invalid geometry: elliptical coordinates and Re are meaningless
    "DRPCRIT": 28,  # critical failure in the DRP
    "DAPCRIT": 29,  # critical failure in the DAP
    "CRITICAL": 30,  # critical failure in the DRP or the DAP: do not use
}


def channels_of(n: int) -> tuple[str, ...]:
    """The DAP emission-line channels of a release whose vectors hold ``n`` of them (22: DR15, 35: DR17)."""
    for channels in RELEASES.values():
        if len(channels) == n:
            return channels
    known = ", ".join(f"{len(c)} ({r.upper()})" for r, c in RELEASES.items())
    raise ValueError(f"no DAP release has {n} emission-line channels; known: {known}")
