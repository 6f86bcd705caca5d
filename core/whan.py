"""The WHAN diagram: Halpha equivalent width against log([NII]/Halpha) (pure numpy).

Cid Fernandes et al. 2011 (MNRAS 413, 1687, section 6) separate galaxies whose gas is
ionised by young stars or an AGN from *retired* galaxies, whose weak LINER-like emission
comes from hot old stars (post-AGB): on the BPT diagrams the two overlap, but the old
stars cannot make an Halpha equivalent width above ~3 A. Their classes:

- ``SF``: log([NII]/Ha) < -0.4 and EW(Ha) > 3 A (star-forming)
- ``sAGN``: log([NII]/Ha) > -0.4 and EW(Ha) > 6 A (strong AGN)
- ``wAGN``: log([NII]/Ha) > -0.4 and 3 A < EW(Ha) < 6 A (weak AGN)
- ``retired``: EW(Ha) < 3 A
- ``passive``: EW(Ha) and EW([NII]) < 0.5 A (lineless)

and ``unknown`` here where a needed quantity is missing. Equivalent widths come from the
MAPS file's ``EMLINE_GEW`` (``core.maps``); the catalogue columns (:func:`galaxy_whan`) are
taken in the central aperture of ``core.bpt``. Like ``core.bpt``, the lines are functions
named by the quantity they bound, and scalars give scalars.
"""
from __future__ import annotations

import numpy as np

from core.bpt import APERTURE, _scalar_or_array, central_aperture
from core.lines import BPT_LINES

CLASSES: tuple[str, ...] = ("SF", "sAGN", "wAGN", "retired", "passive", "unknown")
#: The catalogue columns :func:`galaxy_whan` adds.
COLUMNS: tuple[str, ...] = ("ew_ha_cen", "ew_nii_cen", "whan_class")

#: Cid Fernandes et al. 2011's thresholds: the SF/AGN split in log([NII]/Ha), and EW(Ha) in Angstrom.
NII_HA_SPLIT = -0.4
EW_RETIRED = 3.0
EW_STRONG_AGN = 6.0
EW_PASSIVE = 0.5


def cidfernandes11_nii_ha(log_nii_ha):
    """Cid Fernandes et al. 2011 SF/AGN division of the WHAN diagram: log([NII]/Ha) = -0.4.

    Returns True where ``log_nii_ha`` lies on the AGN side (> -0.4); NaN gives False.
    """
    with np.errstate(invalid="ignore"):
        return _scalar_or_array(np.asarray(log_nii_ha, dtype=float) > NII_HA_SPLIT)


def cidfernandes11_ew_ha(log_nii_ha):
    """Cid Fernandes et al. 2011 lower EW(Ha) (Angstrom) of the active classes at ``log_nii_ha``.

    3 A on the star-forming side (SF above, retired below), 6 A on the AGN side (sAGN
    above, wAGN between 3 and 6 A); NaN where ``log_nii_ha`` is NaN.
    """
    x = np.asarray(log_nii_ha, dtype=float)
    with np.errstate(invalid="ignore"):
        y = np.where(x > NII_HA_SPLIT, EW_STRONG_AGN, EW_RETIRED)
    return _scalar_or_array(np.where(np.isfinite(x), y, np.nan))


def classify_whan(log_nii_ha, ew_ha, ew_nii=None):
    """WHAN class of each galaxy (Cid Fernandes et al. 2011): one of :data:`CLASSES`.

    ``ew_ha`` and ``ew_nii`` in Angstrom (emission positive). Without ``ew_nii`` a galaxy
    with EW(Ha) < 0.5 A is passive on Halpha alone. A missing EW(Ha) gives ``unknown``; so
    does a missing [NII]/Ha where EW(Ha) > 3 A (SF and AGN need the ratio).
    """
    x, ew = np.broadcast_arrays(np.asarray(log_nii_ha, dtype=float), np.asarray(ew_ha, dtype=float))
    weak_nii = np.ones(ew.shape, bool) if ew_nii is None else np.broadcast_to(np.asarray(ew_nii, float), ew.shape) < EW_PASSIVE
    with np.errstate(invalid="ignore"):
        out = np.full(ew.shape, "unknown", dtype=object)
        active = ew >= EW_RETIRED
        agn = cidfernandes11_nii_ha(x)
        out[active & np.isfinite(x) & ~agn] = "SF"
        out[active & agn & (ew >= EW_STRONG_AGN)] = "sAGN"
        out[active & agn & (ew < EW_STRONG_AGN)] = "wAGN"
        out[ew < EW_RETIRED] = "retired"
        out[(ew < EW_PASSIVE) & weak_nii] = "passive"
    out = out.astype(str)
    return str(out) if out.ndim == 0 else out


def galaxy_whan(ew, lines, center, pixscale: float, log_nii_ha: float, aperture: float = APERTURE) -> dict:
    """The WHAN catalogue columns of one galaxy (:data:`COLUMNS`).

    ``ew``: ``(L, ny, nx)`` EMLINE_GEW over ``lines`` (NaN where bad), or None when the file
    has none. ``ew_ha_cen`` / ``ew_nii_cen``: the median equivalent width (Angstrom) of the
    good spaxels in the central aperture (``core.bpt.central_aperture``, the BPT columns'
    aperture); the median, because a spaxel's EW is a ratio that a faint continuum makes
    noisy. ``whan_class`` from them and the aperture's ``log_nii_ha``. NaN and ``unknown``
    without equivalent widths.
    """
    lines = list(lines)
    values = {}
    for key, line in (("ew_ha_cen", BPT_LINES["ha"]), ("ew_nii_cen", BPT_LINES["nii"])):
        values[key] = float("nan")
        if ew is not None and line in lines:
            plane = ew[lines.index(line)]
            inside = central_aperture(plane.shape, center, pixscale, aperture) & np.isfinite(plane)
            if inside.any():
                values[key] = float(np.median(plane[inside]))
    values["whan_class"] = classify_whan(log_nii_ha, values["ew_ha_cen"], values["ew_nii_cen"])
    return values
