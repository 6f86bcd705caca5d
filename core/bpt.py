"""BPT diagnostics: demarcation lines, classification and line ratios from fluxes (pure numpy).

The three diagrams (Baldwin, Phillips & Terlevich 1981; Veilleux & Osterbrock 1987) plot
log([OIII]5008/Hb) against log([NII]6585/Ha), log([SII]6718+6732/Ha) and log([OI]6302/Ha).

Conventions used throughout:

- "Below" a line means strictly below it (``y < line(x)``); a point on a line is above it.
- The Kewley et al. 2001 and Kauffmann et al. 2003 lines are hyperbolae. Their functions
  return NaN at and beyond the asymptote (only the left branch is a demarcation), and the
  classifiers treat every point at or beyond the asymptote as above the line.
- Classes are the strings of :data:`CLASSES`; per-spaxel maps store them as int8 codes
  (:data:`CLASS_CODES`, :func:`class_names`, :func:`class_codes`).
- A scalar in gives a scalar out (a Python ``str`` or a numpy float); arrays of any shape
  give arrays of that shape.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core.lines import BPT_LINES

CLASSES: tuple[str, ...] = ("sf", "comp", "seyfert", "liner", "ambiguous", "invalid")
CLASS_CODES: dict[str, int] = {name: code for code, name in enumerate(CLASSES)}

_SF, _COMP, _SEY, _LIN, _AMB, _INV = range(len(CLASSES))
_AGN = -1  # internal: above Kewley et al. 2001 in [NII], Seyfert/LINER not yet decided
_NAMES = np.array(CLASSES)

RATIOS: tuple[str, ...] = ("log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha")
FRACTIONS: tuple[str, ...] = ("frac_sf", "frac_comp", "frac_seyfert", "frac_liner", "frac_ambiguous")

#: Default radius (arcsec) of the central aperture whose summed fluxes give a galaxy's class.
APERTURE = 1.5
#: Default per-line signal-to-noise cut of the ratios.
SNR_CUT = 3.0

# Asymptotes of the hyperbolic demarcations (x where the denominator vanishes).
_KA03_NII_X = 0.05
_KE01_NII_X = 0.47
_KE01_SII_X = 0.32
_KE01_OI_X = -0.59


def _scalar_or_array(a: np.ndarray):
    return a[()] if a.ndim == 0 else a


def _hyperbola(x, a: float, x0: float, b: float):
    """``a / (x - x0) + b`` on the branch ``x < x0``; NaN at or beyond the asymptote."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(x < x0, a / (x - x0) + b, np.nan)
    return _scalar_or_array(y)


def _straight(x, slope: float, intercept: float):
    x = np.asarray(x, dtype=float)
    return _scalar_or_array(slope * x + intercept)


# --------------------------------------------------------------------------- lines


def kauffmann03_nii(log_nii_ha):
    """Kauffmann et al. 2003 (MNRAS 346, 1055, eq. 1) star-forming upper envelope, [NII] diagram.

    ``log([OIII]/Hb) = 0.61 / (log([NII]/Ha) - 0.05) + 1.30``, valid for
    ``log([NII]/Ha) < 0.05``; NaN elsewhere.
    """
    return _hyperbola(log_nii_ha, 0.61, _KA03_NII_X, 1.30)


def kewley01_nii(log_nii_ha):
    """Kewley et al. 2001 (ApJ 556, 121, eq. 5) maximum-starburst line, [NII] diagram.

    ``log([OIII]/Hb) = 0.61 / (log([NII]/Ha) - 0.47) + 1.19``, valid for
    ``log([NII]/Ha) < 0.47``; NaN elsewhere.
    """
    return _hyperbola(log_nii_ha, 0.61, _KE01_NII_X, 1.19)


def kewley01_sii(log_sii_ha):
    """Kewley et al. 2001 (ApJ 556, 121, eq. 6) maximum-starburst line, [SII] diagram.

    ``log([OIII]/Hb) = 0.72 / (log([SII]/Ha) - 0.32) + 1.30``, valid for
    ``log([SII]/Ha) < 0.32``; NaN elsewhere. [SII] is the 6718 + 6732 doublet.
    """
    return _hyperbola(log_sii_ha, 0.72, _KE01_SII_X, 1.30)


def kewley01_oi(log_oi_ha):
    """Kewley et al. 2001 (ApJ 556, 121, eq. 7) maximum-starburst line, [OI] diagram.

    ``log([OIII]/Hb) = 0.73 / (log([OI]/Ha) + 0.59) + 1.33``, valid for
    ``log([OI]/Ha) < -0.59``; NaN elsewhere.
    """
    return _hyperbola(log_oi_ha, 0.73, _KE01_OI_X, 1.33)


def kewley06_sii(log_sii_ha):
    """Kewley et al. 2006 (MNRAS 372, 961) Seyfert/LINER line of the [SII] diagram.

    ``log([OIII]/Hb) = 1.89 log([SII]/Ha) + 0.76``; it divides the galaxies above
    :func:`kewley01_sii` into Seyferts (above) and LINERs (below).
    """
    return _straight(log_sii_ha, 1.89, 0.76)


def kewley06_oi(log_oi_ha):
    """Kewley et al. 2006 (MNRAS 372, 961) Seyfert/LINER line of the [OI] diagram.

    ``log([OIII]/Hb) = 1.18 log([OI]/Ha) + 1.30``; it divides the galaxies above
    :func:`kewley01_oi` into Seyferts (above) and LINERs (below).
    """
    return _straight(log_oi_ha, 1.18, 1.30)


def schawinski07_nii(log_nii_ha):
    """Schawinski et al. 2007 (MNRAS 382, 1415) Seyfert/LINER line of the [NII] diagram.

    ``log([OIII]/Hb) = 1.05 log([NII]/Ha) + 0.45``; meaningful above :func:`kewley01_nii`.
    """
    return _straight(log_nii_ha, 1.05, 0.45)


def cidfernandes10_nii(log_nii_ha):
    """Cid Fernandes et al. 2010 (MNRAS 403, 1036, eq. 3) Seyfert/LINER line, [NII] diagram.

    ``log([OIII]/Hb) = 0.48 + 1.01 log([NII]/Ha)``: the Kewley et al. 2006 [SII]/[OI]
    Seyfert/LINER division transposed to the [NII] diagram; meaningful above
    :func:`kewley01_nii`.
    """
    return _straight(log_nii_ha, 1.01, 0.48)


# --------------------------------------------------------------------------- classes


def class_names(codes):
    """Class names of int codes (:data:`CLASS_CODES`); a scalar code gives a ``str``."""
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"BPT class codes must be integers, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= len(CLASSES)):
        raise ValueError(f"BPT class codes must lie in 0..{len(CLASSES) - 1}; got {codes.min()}..{codes.max()}")
    names = _NAMES[codes]
    return str(names) if names.ndim == 0 else names


def class_codes(names):
    """int8 codes of class names (the inverse of :func:`class_names`)."""
    names = np.asarray(names, dtype=str)
    unknown = sorted(set(np.unique(names)) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown BPT class(es) {', '.join(unknown)}; known: {', '.join(CLASSES)}")
    codes = np.zeros(names.shape, dtype=np.int8)
    for name, code in CLASS_CODES.items():
        codes[names == name] = code
    return _scalar_or_array(codes)


def _below_hyperbola(x, y, line, x0):
    # NaN on either side compares False, so missing data is never "below".
    with np.errstate(invalid="ignore"):
        return (x < x0) & (y < line(x))


def _nii_codes(x, y, agn_split: str | None):
    """[NII]-diagram codes: sf, comp, and above Kewley 2001 seyfert/liner (or _AGN without a split)."""
    sf = _below_hyperbola(x, y, kauffmann03_nii, _KA03_NII_X)
    comp = ~sf & _below_hyperbola(x, y, kewley01_nii, _KE01_NII_X)
    codes = np.where(sf, _SF, np.where(comp, _COMP, _AGN))
    if agn_split is not None:
        split = {"schawinski07": schawinski07_nii, "cid10": cidfernandes10_nii}[agn_split]
        agn = ~sf & ~comp
        codes = np.where(agn & (y > split(x)), _SEY, np.where(agn, _LIN, codes))
    return np.where(np.isfinite(x) & np.isfinite(y), codes, _INV).astype(np.int8)


def _agn_diagram_codes(x, y, ke01, x0, ke06):
    sf = _below_hyperbola(x, y, ke01, x0)
    codes = np.where(sf, _SF, np.where(y > ke06(x), _SEY, _LIN))
    return np.where(np.isfinite(x) & np.isfinite(y), codes, _INV).astype(np.int8)


def _prepare(*arrays):
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    return np.broadcast_arrays(*arrays)


def classify_nii(log_nii_ha, log_oiii_hb, agn_split: str = "schawinski07"):
    """Classify on the [NII] diagram alone: ``sf``, ``comp``, ``seyfert``, ``liner`` or ``invalid``.

    sf: below Kauffmann et al. 2003; comp: between Kauffmann et al. 2003 and Kewley et al.
    2001; above Kewley et al. 2001, Seyferts lie above and LINERs below the ``agn_split``
    line: ``"schawinski07"`` (:func:`schawinski07_nii`) or ``"cid10"``
    (:func:`cidfernandes10_nii`). NaN input gives ``invalid``. Scalars give a ``str``.
    """
    if agn_split not in ("schawinski07", "cid10"):
        raise ValueError(f"agn_split must be 'schawinski07' or 'cid10', got {agn_split!r}")
    x, y = _prepare(log_nii_ha, log_oiii_hb)
    return class_names(_nii_codes(x, y, agn_split))


def classify_sii(log_sii_ha, log_oiii_hb):
    """Classify on the [SII] diagram alone (Kewley et al. 2001, 2006): sf, seyfert, liner, invalid."""
    x, y = _prepare(log_sii_ha, log_oiii_hb)
    return class_names(_agn_diagram_codes(x, y, kewley01_sii, _KE01_SII_X, kewley06_sii))


def classify_oi(log_oi_ha, log_oiii_hb):
    """Classify on the [OI] diagram alone (Kewley et al. 2001, 2006): sf, seyfert, liner, invalid."""
    x, y = _prepare(log_oi_ha, log_oiii_hb)
    return class_names(_agn_diagram_codes(x, y, kewley01_oi, _KE01_OI_X, kewley06_oi))


def classify_codes(log_nii_ha, log_oiii_hb, log_sii_ha, log_oi_ha=None) -> np.ndarray:
    """:func:`classify` as an int8 array of :data:`CLASS_CODES` (always an array)."""
    if log_oi_ha is None:
        log_oi_ha = np.nan
    nii, oiii, sii, oi = _prepare(log_nii_ha, log_oiii_hb, log_sii_ha, log_oi_ha)
    n = _nii_codes(nii, oiii, None)
    s = _agn_diagram_codes(sii, oiii, kewley01_sii, _KE01_SII_X, kewley06_sii)
    o = _agn_diagram_codes(oi, oiii, kewley01_oi, _KE01_OI_X, kewley06_oi)
    # Where [OI] is unusable the [OI] diagram simply does not vote.
    o = np.where(o == _INV, s, o)
    sf = (n == _SF) & (s == _SF) & (o == _SF)
    comp = (n == _COMP) & (s == _SF) & (o == _SF)
    agn = (n == _AGN) & (s != _SF) & (s == o)
    codes = np.where(sf, _SF, np.where(comp, _COMP, np.where(agn, s, _AMB)))
    return np.where((n == _INV) | (s == _INV), _INV, codes).astype(np.int8)


def classify(log_nii_ha, log_oiii_hb, log_sii_ha, log_oi_ha=None):
    """The Kewley et al. 2006 (MNRAS 372, 961) classification over the BPT diagrams.

    - ``sf``: below Kauffmann et al. 2003 in [NII] and below Kewley et al. 2001 in [SII]
      and [OI];
    - ``comp``: between Kauffmann et al. 2003 and Kewley et al. 2001 in [NII], and below
      Kewley et al. 2001 in [SII] and [OI] (as Marvin's ``bpt_kewley06`` does);
    - ``seyfert`` / ``liner``: above Kewley et al. 2001 in all diagrams and above / below
      the Kewley et al. 2006 Seyfert/LINER line in both [SII] and [OI];
    - ``ambiguous``: valid, but the diagrams disagree (e.g. AGN in [NII] and star-forming
      in [SII], or Seyfert in [SII] and LINER in [OI]);
    - ``invalid``: log([NII]/Ha), log([OIII]/Hb) or log([SII]/Ha) is NaN or infinite.

    [OI] is optional: without it (``None``), and element-wise wherever it is NaN (weak
    [OI] is common in spaxels), the classification uses the [NII] and [SII] diagrams
    only. Inputs broadcast together; a scalar result is a ``str``, otherwise an array of
    ``str`` of the broadcast shape.
    """
    return class_names(classify_codes(log_nii_ha, log_oiii_hb, log_sii_ha, log_oi_ha))


# --------------------------------------------------------------------------- ratios


def _threshold(snr, line: str) -> float:
    if isinstance(snr, Mapping):
        return float(snr.get(line, 3.0))
    return float(snr)


def _usable(flux, ivar, cut):
    """Flux where it is finite, positive and (given ivar) detected at S/N >= cut; else NaN."""
    f = np.asarray(flux, dtype=float)
    ok = np.isfinite(f) & (f > 0)
    if ivar is not None:
        iv = np.asarray(ivar, dtype=float)
        with np.errstate(invalid="ignore"):
            ok = ok & np.isfinite(iv) & (iv > 0) & (f * np.sqrt(iv) >= cut)
    return np.where(ok, f, np.nan)


def _usable_sum(fa, fb, iva, ivb, cut):
    """The [SII] doublet sum, with the S/N of the sum (variances add)."""
    fa, fb = np.asarray(fa, dtype=float), np.asarray(fb, dtype=float)
    total = fa + fb
    ok = np.isfinite(fa) & np.isfinite(fb) & (total > 0)
    if iva is not None:
        iva, ivb = np.asarray(iva, dtype=float), np.asarray(ivb, dtype=float)
        good_iv = np.isfinite(iva) & np.isfinite(ivb) & (iva > 0) & (ivb > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = ok & good_iv & (total >= cut * np.sqrt(1.0 / iva + 1.0 / ivb))
    return np.where(ok, total, np.nan)


def _log_ratio(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(num / den)


def log_ratios(flux: Mapping, ivar: Mapping | None = None, snr=SNR_CUT) -> dict:
    """The four BPT log line ratios from fluxes.

    ``flux`` (and ``ivar``, the inverse variances) map DAP line names (the values of
    :data:`core.lines.BPT_LINES`) to arrays of one broadcastable shape. Returns
    ``{"log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha"}`` (float arrays; numpy
    floats for scalar input). A ratio is NaN wherever one of its lines is missing from
    ``flux``, non-finite, non-positive, or, when ``ivar`` is given, has a non-positive or
    missing ivar or S/N below ``snr``. ``snr`` is a float or a dict by DAP line name
    (lines not in the dict use 3); ``ivar=None`` applies no S/N cut. [SII] is
    6718 + 6732, cut on the S/N of the sum against the larger of the two thresholds.
    """
    present = [np.asarray(v) for v in flux.values()]
    if ivar is not None:
        present += [np.asarray(v) for v in ivar.values()]
    shape = np.broadcast_shapes(*(a.shape for a in present)) if present else ()
    missing = np.full(shape, np.nan)

    def line(role):
        name = BPT_LINES[role]
        if name not in flux or (ivar is not None and name not in ivar):
            return missing
        iv = None if ivar is None else ivar[name]
        return np.broadcast_to(_usable(flux[name], iv, _threshold(snr, name)), shape)

    a, b = BPT_LINES["sii_a"], BPT_LINES["sii_b"]
    if a in flux and b in flux and (ivar is None or (a in ivar and b in ivar)):
        cut = max(_threshold(snr, a), _threshold(snr, b))
        sii = _usable_sum(flux[a], flux[b], None if ivar is None else ivar[a], None if ivar is None else ivar[b], cut)
        sii = np.broadcast_to(sii, shape)
    else:
        sii = missing

    ha, hb = line("ha"), line("hb")
    out = {
        "log_nii_ha": _log_ratio(line("nii"), ha),
        "log_oiii_hb": _log_ratio(line("oiii"), hb),
        "log_sii_ha": _log_ratio(sii, ha),
        "log_oi_ha": _log_ratio(line("oi"), ha),
    }
    return {k: _scalar_or_array(np.asarray(v, dtype=float)) for k, v in out.items()}


# --------------------------------------------------------------------------- cubes


def ratio_maps(flux, lines: Sequence[str], mask=None, ivar=None, snr=SNR_CUT) -> dict:
    """Per-spaxel BPT log line ratios of a cube ``(L, S, S)`` whose maps are the lines ``lines``.

    ``{"log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha"}``, each ``(S, S)``: the
    diagrams' axes (Baldwin, Phillips & Terlevich 1981, PASP 93, 5; Veilleux & Osterbrock
    1987, ApJS 63, 295), computed by :func:`log_ratios`. A ratio is NaN where one of its
    lines is masked (``mask`` True), missing from ``lines``, non-finite or non-positive,
    or, with ``ivar``, below the S/N cut ``snr``. Use it for the data and for a model's
    reconstruction alike (with the data's ``ivar``, the same cut applies to both).
    """
    flux = np.asarray(flux, dtype=np.float64)
    if mask is not None:
        flux = np.where(np.asarray(mask, dtype=bool), np.nan, flux)
    wanted = set(BPT_LINES.values())
    fl = {name: flux[i] for i, name in enumerate(lines) if name in wanted}
    iv = None if ivar is None else {name: np.asarray(ivar[i]) for i, name in enumerate(lines) if name in wanted}
    return log_ratios(fl, iv, snr)


def _check_cube(flux, ivar, mask, lines):
    flux = np.asarray(flux)
    lines = list(lines)
    if flux.ndim != 3 or flux.shape[0] != len(lines):
        raise ValueError(f"flux must have shape (L={len(lines)}, ny, nx) to match lines; got {flux.shape}")
    if ivar is not None and np.shape(ivar) != flux.shape:
        raise ValueError(f"ivar shape {np.shape(ivar)} differs from flux shape {flux.shape}")
    if mask is not None and np.shape(mask) != flux.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from flux shape {flux.shape}")
    return flux, lines


def _good(flux, ivar, mask, i):
    """Spaxels of line ``i`` that can be used at all: unmasked, finite, ivar > 0."""
    good = np.isfinite(flux[i])
    if mask is not None:
        good &= ~np.asarray(mask[i], dtype=bool)
    if ivar is not None:
        iv = np.asarray(ivar[i], dtype=float)
        good &= np.isfinite(iv) & (iv > 0)
    return good


def _bpt_maps(flux, ivar, mask, lines):
    """Per BPT line present: flux and ivar maps with unusable spaxels set to NaN / 0."""
    f, iv = {}, ({} if ivar is not None else None)
    for name in set(BPT_LINES.values()) & set(lines):
        i = lines.index(name)
        good = _good(flux, ivar, mask, i)
        f[name] = np.where(good, np.asarray(flux[i], dtype=float), np.nan)
        if ivar is not None:
            iv[name] = np.where(good, np.asarray(ivar[i], dtype=float), 0.0)
    return f, iv


def spaxel_classes(flux, ivar, mask, lines: Sequence[str], snr=SNR_CUT) -> np.ndarray:
    """Per-spaxel Kewley et al. 2006 class codes, a ``(ny, nx)`` int8 map (:data:`CLASS_CODES`).

    ``flux``/``ivar``/``mask`` are ``(L, ny, nx)`` over ``lines`` (``mask`` True = bad;
    ``ivar`` or ``mask`` may be None). Lines the diagrams need but ``lines`` lacks make the
    spaxels ``invalid`` (missing [OI] only drops the [OI] diagram).
    """
    flux, lines = _check_cube(flux, ivar, mask, lines)
    f, iv = _bpt_maps(flux, ivar, mask, lines)
    if not f:
        return np.full(flux.shape[1:], _INV, dtype=np.int8)
    r = log_ratios(f, iv, snr)
    return classify_codes(r["log_nii_ha"], r["log_oiii_hb"], r["log_sii_ha"], r["log_oi_ha"])


def _summed(f: dict, iv: dict | None, region: np.ndarray):
    """Fluxes summed over ``region`` (each line over its own usable spaxels); variances add."""
    fs, ivs = {}, ({} if iv is not None else None)
    for name, fmap in f.items():
        use = region & np.isfinite(fmap)
        if not use.any():
            continue
        fs[name] = float(fmap[use].sum())
        if iv is not None:
            ivs[name] = float(1.0 / np.sum(1.0 / iv[name][use]))
    return fs, ivs


def _integrated(fs, ivs, snr) -> dict:
    r = log_ratios(fs, ivs, snr)
    nii, oiii, sii, oi = (r[k] for k in RATIOS)
    return {
        **{k: float(v) for k, v in r.items()},
        "bpt_nii": classify_nii(nii, oiii),
        "bpt_sii": classify_sii(sii, oiii),
        "bpt_oi": classify_oi(oi, oiii),
        "bpt_class": classify(nii, oiii, sii, oi),
    }


def central_aperture(shape, center, pixscale: float, aperture: float = APERTURE) -> np.ndarray:
    """(ny, nx) bool: the spaxels whose centres lie within ``aperture`` arcsec of ``center``.

    ``center`` is ``(x, y)`` in pixels (spaxel centres on integers); the spaxel holding the
    centre is always in it, so a small aperture is never empty.
    """
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    cx, cy = float(center[0]), float(center[1])
    inside = np.hypot(xx - cx, yy - cy) * float(pixscale) <= float(aperture)
    iy, ix = int(np.floor(cy + 0.5)), int(np.floor(cx + 0.5))
    if 0 <= iy < ny and 0 <= ix < nx:
        inside[iy, ix] = True
    return inside


def galaxy_bpt(flux, ivar, mask, lines: Sequence[str], center, pixscale: float, aperture: float = APERTURE,
               snr=SNR_CUT) -> dict:
    """The per-galaxy BPT catalogue columns of one galaxy.

    ``flux``/``ivar``/``mask``: ``(L, ny, nx)`` over ``lines`` (``mask`` True = bad;
    ``ivar`` None means no S/N cut), physical fluxes at native resolution. ``center`` is
    ``(x, y)`` in pixels (x the column index, y the row index, spaxel centres on integers);
    ``pixscale`` arcsec per pixel; ``aperture`` the radius in arcsec of the central
    aperture (the spaxel holding the centre is always in it).

    Returns ``log_nii_ha``, ``log_oiii_hb``, ``log_sii_ha``, ``log_oi_ha``, ``bpt_nii``
    (Schawinski et al. 2007 split), ``bpt_sii``, ``bpt_oi`` and ``bpt_class`` from the
    fluxes summed inside the aperture; ``bpt_class_total`` from the fluxes summed over the
    whole footprint (each line over its unmasked spaxels with ivar > 0, variances summed,
    the S/N cut applied to the sums); and ``frac_sf`` ... ``frac_ambiguous``, the fraction
    of good Ha spaxels (unmasked, S/N >= the Ha threshold) in each :func:`spaxel_classes`
    class (NaN when there are none). Lines missing from ``lines`` give NaN ratios and
    ``invalid`` classes, not an error.
    """
    flux, lines = _check_cube(flux, ivar, mask, lines)
    ny, nx = flux.shape[1:]
    f, iv = _bpt_maps(flux, ivar, mask, lines)
    inside = central_aperture((ny, nx), center, pixscale, aperture)

    out = _integrated(*_summed(f, iv, inside), snr)
    out["bpt_class_total"] = _integrated(*_summed(f, iv, np.ones((ny, nx), dtype=bool)), snr)["bpt_class"]

    ha = BPT_LINES["ha"]
    good_ha = np.zeros((ny, nx), dtype=bool)
    if ha in f:
        good_ha = np.isfinite(_usable(f[ha], None if iv is None else iv[ha], _threshold(snr, ha)))
    n_good = int(good_ha.sum())
    codes = spaxel_classes(flux, ivar, mask, lines, snr)
    for name, key in zip(CLASSES[:-1], FRACTIONS):
        out[key] = float(np.sum(good_ha & (codes == CLASS_CODES[name])) / n_good) if n_good else float("nan")
    return out
