"""A synthetic MaNGA-like survey, written as real DAP-format MAPS files.

An astronomer trying Blueberry has no MaNGA data at hand and the tests run offline, so
this module makes galaxies that look like MaNGA's, with a ground truth, and writes them in
the layout of the MaNGA Data Analysis Pipeline (DAP) ``MAPS`` files: the same extensions,
header keys, channel names ``C01..``, celestial TAN WCS and ``MANGA_DAPPIXMASK`` bits, so
the reader of real data serves the synthetic survey too (:func:`write_maps_file`).

The physics (:func:`make_galaxy`):

- Line ratios per class (star-forming, composite, Seyfert, LINER, retired) are drawn from
  multivariate normals fitted to real DR17 DAPall central fluxes (:func:`derive_templates`,
  committed as ``assets/synth_templates.json``), and rejected unless they sit on the right
  side of the BPT demarcations (:mod:`core.bpt`) with a margin.
- Intrinsic Balmer and Paschen lines follow Case B (T = 10^4 K, n_e = 100 cm^-3); dust
  reddens every line with the Calzetti et al. (2000) curve through a spatially varying
  A_V map, so the observed Ha/Hb is never below 2.86. Doublets are tied at their atomic
  ratios in the observed flux, as the DAP ties them in its fits.
- Galaxies are inclined exponential disks with Sersic bulges, clumpy HII regions and
  metallicity gradients; Seyferts and LINERs get a point-like nucleus (the PSF makes it
  PSF-sized); LINERs and retired galaxies get diffuse LIER emission that follows the
  starlight. Everything is seen through a Gaussian PSF of ~2.5 arcsec FWHM, inside the
  hexagonal footprint of one of the five MaNGA bundles, with noise and masks.

The anomalies (a few per cent, ``truth_anomaly``), each visible in the line maps:

- ``blueberry``: a compact (sub-PSF) starburst with extreme [OIII]/Hb ~ 9, strong
  [NeIII] and HeII and very weak [NII], [SII] and [OI] (low metallicity; Yang et al. 2017,
  ApJ 847, 38): a blob whose [OIII] map outshines Ha by three times.
- ``offnuclear``: a star-forming disk with a compact Seyfert- or shock/LINER-like region
  offset from the nucleus (a wandering AGN or a shock from an interaction): a blob that is
  ordinary in Ha but stands out in [OIII], [NII], [SII] and [OI].
- ``cones``: a Seyfert whose extended narrow-line region is a bicone of high-ionisation
  gas reaching the edge of the bundle, along an axis unrelated to the disk. Chosen
  because it is a real, rare and scientifically prized MaNGA population (the DAPall
  subset the templates come from is a bicone-candidate sample; see also the MaNGA AGN
  ionisation-cone searches), and because it tests what a per-galaxy line-ratio
  catalogue cannot: its central line ratios are those of an ordinary Seyfert, so only
  the spatial shape of the [OIII] map gives it away.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from core.errors import BlueberryError
from core.io import atomic_path, sha256_file, write_json
from core.lines import BPT_LINES, DR17_CHANNELS, LINES, RELEASES, wavelength
from core.maps import DAPPIXMASK_BITS

#: The MANGA_DAPPIXMASK bits that the generator sets (numbers from the reader's table).
NOCOV, LOWCOV, DEADFIBER, FORESTAR, UNRELIABLE, DONOTUSE = (
    DAPPIXMASK_BITS[name] for name in ("NOCOV", "LOWCOV", "DEADFIBER", "FORESTAR", "UNRELIABLE", "DONOTUSE"))

FLUX_UNIT = "1E-17 erg/s/cm^2/spaxel"
C_KMS = 299792.458
#: gzip level 1: three times faster than astropy's default 9 for ~10 % more disk.
GZIP_LEVEL = 1

NORMAL_CLASSES: tuple[str, ...] = ("sf", "comp", "seyfert", "liner", "retired")
ANOMALY_KINDS: tuple[str, ...] = ("blueberry", "offnuclear", "cones")
#: The Kewley et al. 2006 class (core.bpt.classify) of each class's central aperture.
#: Retired galaxies are LIERs: LINER-like ratios from old stars, not from a nucleus.
CENTRAL_BPT = {"sf": "sf", "comp": "comp", "seyfert": "seyfert", "liner": "liner", "retired": "liner"}

#: Radius (arcsec) of the central aperture whose summed fluxes define the class
#: (the default of core.bpt.galaxy_bpt).
APERTURE = 1.5

#: MaNGA bundles: fibres -> diameter of the hexagonal footprint (arcsec).
BUNDLES = {19: 12.0, 37: 17.0, 61: 22.0, 91: 27.0, 127: 32.0}

#: Case B hydrogen lines relative to Hb (T = 10^4 K, n_e = 100 cm^-3; Storey & Hummer
#: 1995 for the Balmer series, Hummer & Storey 1987 for the Paschen lines).
CASE_B = {
    "Ha-6564": 2.86, "Hb-4862": 1.0, "Hgam-4341": 0.468, "Hdel-4102": 0.259,
    "Heps-3971": 0.159, "Hzet-3890": 0.105, "Heta-3836": 0.0731, "Hthe-3798": 0.0530,
    "H11-3771": 0.0397, "H12-3751": 0.0305, "Peps-9548": 0.0366, "Pzet-9231": 0.0254,
    "Peta-9017": 0.0184,
}
#: Doublets fixed by atomic physics: weak member -> (strong member, flux ratio weak/strong).
DOUBLETS = {
    "OIII-4960": ("OIII-5008", 1 / 2.98), "NII-6549": ("NII-6585", 1 / 3.05),
    "OI-6365": ("OI-6302", 1 / 3.1), "NeIII-3968": ("NeIII-3869", 0.301),
    "ArIII-7753": ("ArIII-7137", 0.241), "SIII-9533": ("SIII-9071", 2.47),
}
#: The ratios of the class templates (multivariate normal, correlations kept).
RATIOS = ("log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha", "log_ha_hb", "log_sii_6718_6732")
#: Weak lines taken from the templates as log(line / reference), dereddened.
WEAK_LINES = {
    "OII-3727": "Hb-4862", "OII-3729": "Hb-4862", "NeIII-3869": "OIII-5008",
    "HeI-3889": "Hb-4862", "HeII-4687": "Hb-4862", "NI-5199": "Hb-4862", "NI-5201": "Hb-4862",
    "HeI-5877": "Hb-4862", "HeI-7067": "Hb-4862", "ArIII-7137": "Hb-4862", "SIII-9071": "Hb-4862",
}
#: Lines whose ratio follows a radial gradient, by the template ratio that drives them.
GRADIENT_GROUPS = {
    "log_nii_ha": ("NII-6585", "NII-6549"), "log_oiii_hb": ("OIII-5008", "OIII-4960", "NeIII-3869", "NeIII-3968"),
    "log_sii_ha": ("SII-6718", "SII-6732"), "log_oi_ha": ("OI-6302", "OI-6365"),
}
#: Blueberries are too rare for the DAPall templates: mean and scatter of their ratios
#: after Yang et al. 2017 (ApJ 847, 38; [OIII]5007/Hb ~ 6-10, 12+log(O/H) ~ 7.1-7.8) and
#: Izotov et al. 2011 (green peas). Like the real ones they straddle the
#: maximum-starburst lines at the low-metallicity end, so their BPT class varies.
BLUEBERRY = {
    "mean": {"log_nii_ha": -1.9, "log_oiii_hb": 0.95, "log_sii_ha": -1.5, "log_oi_ha": -2.3,
             "log_ha_hb": 0.49, "log_sii_6718_6732": 0.12},
    "std": {"log_nii_ha": 0.1, "log_oiii_hb": 0.04, "log_sii_ha": 0.08, "log_oi_ha": 0.1,
            "log_ha_hb": 0.02, "log_sii_6718_6732": 0.03},
    "weak": {"OII-3727": -0.45, "OII-3729": -0.35, "NeIII-3869": -1.05, "HeI-3889": -1.0,
             "HeII-4687": -1.8, "NI-5199": -2.5, "NI-5201": -2.5, "HeI-5877": -0.98,
             "HeI-7067": -1.45, "ArIII-7137": -1.2, "SIII-9071": -1.0},
    "log_ha_cen": {"median": 2.3, "std": 0.25},
}
#: Calzetti et al. (2000) total-to-selective extinction.
R_V = 4.05
#: Radius softening of the Sersic bulge (arcsec): keeps the r^(1/4) cusp from putting
#: most of the light into the one central spaxel.
_BULGE_SOFTENING = 0.25
TEMPLATES_PATH = Path(__file__).resolve().parents[1] / "assets" / "synth_templates.json"


def calzetti_k(wave) -> np.ndarray:
    """Calzetti et al. (2000) k(lambda) = A_lambda / E(B-V) for vacuum wavelengths in Angstrom."""
    x = np.asarray(wave, dtype=float) / 1e4
    blue = 2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + R_V
    red = 2.659 * (-1.857 + 1.040 / x) + R_V
    return np.where(x < 0.63, blue, red)


def av_from_balmer(log_ha_hb) -> np.ndarray:
    """A_V implied by an observed log(Ha/Hb) for Case B 2.86 and the Calzetti curve (>= 0)."""
    k_hb, k_ha = calzetti_k([wavelength("Hb-4862"), wavelength("Ha-6564")])
    av = 2.5 * R_V / (k_hb - k_ha) * (np.asarray(log_ha_hb, dtype=float) - math.log10(CASE_B["Ha-6564"]))
    return np.clip(av, 0.0, None)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic survey (recorded in the survey's ``synth.json``)."""

    # Relative weights of the ordinary classes (normalised); MaNGA is mostly star-forming,
    # composite and retired, with a few per cent Seyferts and LINERs.
    class_mix: dict = field(default_factory=lambda: {
        "sf": 0.56, "comp": 0.17, "retired": 0.19, "seyfert": 0.04, "liner": 0.04})
    # Fraction of the survey that is a true anomaly (rounded to a whole number of galaxies).
    anomaly_fraction: float = 0.02
    # Relative weights of the anomaly kinds.
    anomaly_mix: dict = field(default_factory=lambda: {k: 1.0 for k in ANOMALY_KINDS})
    # 1-sigma line-flux error per spaxel (1E-17 erg/s/cm^2/spaxel) where the continuum is faint;
    # MaNGA's unbinned maps have ~0.05-0.1.
    noise: float = 0.07
    # Scatter of the noise level between galaxies (dex): depth and conditions vary.
    noise_scatter: float = 0.15
    # How much the error grows on the continuum peak: sigma *= sqrt(1 + this * continuum/peak),
    # because photon noise of the starlight dominates the line-fit errors there.
    noise_continuum: float = 1.0
    # Error multiplier for lines bluer than 4000 A, where the spectrograph throughput drops.
    blue_noise: float = 1.5
    # Mean and scatter of the PSF FWHM (arcsec); MaNGA's reconstructed PSF is ~2.5".
    psf_fwhm: float = 2.5
    psf_scatter: float = 0.15
    # Spaxel size (arcsec).
    pixscale: float = 0.5
    # Relative frequency of each bundle (fibres -> weight): a MaNGA plate carries
    # 2 x 19, 4 x 37, 4 x 61, 2 x 91 and 5 x 127-fibre bundles.
    bundle_weights: dict = field(default_factory=lambda: {19: 2, 37: 4, 61: 4, 91: 2, 127: 5})
    # Continuum S/N below which the DAP's fits are flagged UNRELIABLE (whole spaxel).
    unreliable_snr: float = 1.0
    # Probability of a foreground star (FORESTAR + DONOTUSE) and of a dead fibre
    # (DEADFIBER + DONOTUSE, no data) in a galaxy.
    star_probability: float = 0.04
    dead_fibre_probability: float = 0.03
    # Every galaxy's brightest Ha spaxel reaches this S/N (fainter draws are brightened):
    # maps of pure noise teach a map-based model nothing and swamp its anomaly scores.
    min_ha_snr: float = 20.0
    # Minimum distance (dex) of a template draw from every BPT demarcation, so that noise
    # does not move a class across a line.
    bpt_margin: float = 0.05
    # The class templates (derive_templates output); None: the committed assets file.
    templates: str | None = None

    def __post_init__(self):
        unknown = set(self.class_mix) - set(NORMAL_CLASSES)
        if unknown or not self.class_mix or min(self.class_mix.values()) < 0 or sum(self.class_mix.values()) <= 0:
            raise ValueError(f"class_mix needs non-negative weights of {NORMAL_CLASSES}, got {self.class_mix}")
        unknown = set(self.anomaly_mix) - set(ANOMALY_KINDS)
        if unknown or min(self.anomaly_mix.values(), default=0) < 0 or sum(self.anomaly_mix.values()) <= 0:
            raise ValueError(f"anomaly_mix needs non-negative weights of {ANOMALY_KINDS}, got {self.anomaly_mix}")
        if not 0.0 <= self.anomaly_fraction <= 1.0:
            raise ValueError(f"anomaly_fraction must lie in [0, 1], got {self.anomaly_fraction}")
        if set(self.bundle_weights) - set(BUNDLES):
            raise ValueError(f"bundle_weights keys must be among {tuple(BUNDLES)}, got {tuple(self.bundle_weights)}")
        if self.noise <= 0 or self.pixscale <= 0 or self.psf_fwhm <= 0:
            raise ValueError("noise, pixscale and psf_fwhm must be positive")


# --------------------------------------------------------------------------------------
# Templates from the DR17 DAPall


def _round(x, digits: int = 5):
    return float(np.format_float_positional(float(x), precision=digits, unique=False, fractional=False))


def derive_templates(dapall_path) -> dict:
    """Per-class line-ratio templates from the central fluxes of a MaNGA DR17 DAPall file.

    Classes: the Kewley et al. 2006 BPT class (:func:`core.bpt.classify`) of
    ``EMLINE_GFLUX_CEN``, with Ha equivalent width inside 1 Re (``EMLINE_GEW_1RE``)
    >= 3 A for ``sf``, ``comp`` and ``seyfert``; ``liner`` takes every BPT LINER and
    ``retired`` the BPT LINERs with EW(Ha) < 3 A (Cid Fernandes et al. 2011: LINER-like
    ratios from old stars). Needs the BPT lines detected (positive, Hb > 1E-17).

    Returns a JSON-ready dict: per class the mean and covariance of :data:`RATIOS`, the
    median and scatter of log Ha central flux, and the median and scatter of every
    :data:`WEAK_LINES` ratio, dereddened with the galaxy's Balmer decrement, from the
    brighter half (in Hb) of the class.
    """
    from core.bpt import classify

    path = Path(dapall_path)
    try:
        with fits.open(path) as hdul:
            table = hdul[1].data
            flux = np.array(table["EMLINE_GFLUX_CEN"], dtype=float)
            ew = np.array(table["EMLINE_GEW_1RE"], dtype=float)
    except (OSError, KeyError, IndexError) as exc:
        raise BlueberryError(f"{path}: not a DAPall table with EMLINE_GFLUX_CEN and EMLINE_GEW_1RE ({exc})") from None
    if flux.ndim != 2 or flux.shape[1] != len(DR17_CHANNELS):
        raise BlueberryError(f"{path}: EMLINE_GFLUX_CEN has shape {flux.shape}, expected (N, {len(DR17_CHANNELS)}) (DR17)")
    flux[flux <= -999] = np.nan  # the DAP's "no measurement"
    col = {name: i for i, name in enumerate(DR17_CHANNELS)}

    def f(name):
        return flux[:, col[name]]

    ha, hb = f(BPT_LINES["ha"]), f(BPT_LINES["hb"])
    nii, oiii, oi = f(BPT_LINES["nii"]), f(BPT_LINES["oiii"]), f(BPT_LINES["oi"])
    sii_a, sii_b = f(BPT_LINES["sii_a"]), f(BPT_LINES["sii_b"])
    ok = (hb > 1.0) & (ha > 0) & (nii > 0) & (oiii > 0) & (oi > 0) & (sii_a > 0) & (sii_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.column_stack([
            np.log10(nii / ha), np.log10(oiii / hb), np.log10((sii_a + sii_b) / ha),
            np.log10(oi / ha), np.log10(ha / hb), np.log10(sii_a / sii_b)])
    bpt = np.where(ok, classify(ratios[:, 0], ratios[:, 1], ratios[:, 2], ratios[:, 3]), "invalid")
    ew_ha = ew[:, col["Ha-6564"]]
    members = {
        "sf": (bpt == "sf") & (ew_ha >= 3), "comp": (bpt == "comp") & (ew_ha >= 3),
        "seyfert": (bpt == "seyfert") & (ew_ha >= 3), "liner": bpt == "liner",
        "retired": (bpt == "liner") & (ew_ha < 3),
    }
    k = calzetti_k([wavelength(n) for n in DR17_CHANNELS])
    av = av_from_balmer(ratios[:, 4])

    classes = {}
    for name, sel in members.items():
        sel = sel & np.all(np.isfinite(ratios), axis=1)
        r = ratios[sel]
        bright = sel & (hb >= np.median(hb[sel]))
        weak = {}
        for line, ref in WEAK_LINES.items():
            # Deredden: the synthetic galaxies apply their own dust.
            dered = 10 ** (0.4 * av[bright] * (k[col[line]] - k[col[ref]]) / R_V)
            rel = f(line)[bright] / f(ref)[bright] * dered
            rel = rel[np.isfinite(rel)]
            # The median of the signed ratios is robust to noise; the floor keeps logs finite
            # where a line is undetected in the class.
            med = max(float(np.median(rel)), 1e-3)
            pos = np.log10(rel[rel > 0]) if np.any(rel > 0) else np.array([np.log10(med)])
            scatter = min(0.5 * float(np.subtract(*np.percentile(pos, [84, 16]))), 0.3)
            weak[line] = {"median": _round(np.log10(med)), "std": _round(scatter)}
        classes[name] = {
            "n": int(sel.sum()),
            "mean": [_round(v) for v in r.mean(axis=0)],
            "cov": [[_round(v) for v in row] for row in np.cov(r, rowvar=False)],
            "log_ha_cen": {"median": _round(np.median(np.log10(ha[sel]))),
                           "std": _round(np.std(np.log10(ha[sel])))},
            "weak": weak,
        }
    return {
        "source": {"file": path.name, "sha256": sha256_file(path), "column": "EMLINE_GFLUX_CEN",
                   "rows": int(len(flux)), "usable": int(ok.sum())},
        "ratios": list(RATIOS),
        "classes": classes,
    }


@lru_cache(maxsize=4)
def load_templates(path=None) -> dict:
    """The class templates (the committed ``assets/synth_templates.json`` by default)."""
    path = Path(path) if path else TEMPLATES_PATH
    if not path.is_file():
        raise BlueberryError(f"{path}: synthetic-survey templates not found; re-create them with "
                             "core.synth.derive_templates(<DAPall file>)")
    with open(path) as fh:
        tpl = json.load(fh)
    if tuple(tpl.get("ratios", ())) != RATIOS or set(tpl.get("classes", {})) != set(NORMAL_CLASSES):
        raise BlueberryError(f"{path}: templates must hold the ratios {RATIOS} for the classes {NORMAL_CLASSES}")
    return tpl


def _bpt_class(r, margin: float = 0.0) -> str:
    """The class of log ratios ``r`` (dict), or "ambiguous" unless it holds within ``margin`` dex."""
    from core.bpt import classify

    shifts = [(0.0, 0.0)] if margin <= 0 else [(dx, dy) for dx in (-margin, margin) for dy in (-margin, margin)]
    names = {str(classify(r["log_nii_ha"] + dx, r["log_oiii_hb"] + dy, r["log_sii_ha"] + dx, r["log_oi_ha"] + dx))
             for dx, dy in shifts}
    return names.pop() if len(names) == 1 else "ambiguous"


def _draw_ratios(rng, templates: dict, cls: str, margin: float) -> dict:
    """A ratio vector of class ``cls``: a template draw on the class's side of the BPT lines."""
    if cls == "blueberry":
        r = {k: rng.normal(BLUEBERRY["mean"][k], BLUEBERRY["std"][k]) for k in RATIOS}
        return {**r, "weak": {line: rng.normal(v, 0.05) for line, v in BLUEBERRY["weak"].items()}}
    t = templates["classes"][cls]
    mean, weak = np.asarray(t["mean"]), t["weak"]
    chol = np.linalg.cholesky(np.asarray(t["cov"]) + 1e-6 * np.eye(len(RATIOS)))
    target = CENTRAL_BPT[cls]
    for _ in range(50):
        draws = mean + rng.standard_normal((16, len(RATIOS))) @ chol.T
        for d in draws:
            r = dict(zip(RATIOS, d))
            # Physical bounds of the [SII] doublet (low- and high-density limits).
            r["log_sii_6718_6732"] = float(np.clip(r["log_sii_6718_6732"], -0.35, 0.17))
            if _bpt_class(r, margin) == target:
                return {**r, "weak": {line: rng.normal(w["median"], w["std"]) for line, w in weak.items()}}
    raise BlueberryError(f"the {cls!r} template never lands in the {target!r} region of the BPT diagrams")


def _spectrum(r: dict, channels) -> np.ndarray:
    """Intrinsic line fluxes relative to Ha (= 1) in ``channels`` order, from ratio draw ``r``."""
    hb = 1.0 / CASE_B["Ha-6564"]
    s = {name: v * hb for name, v in CASE_B.items()}
    s["OIII-5008"] = hb * 10 ** r["log_oiii_hb"]
    s["NII-6585"] = 10 ** r["log_nii_ha"]
    s["OI-6302"] = 10 ** r["log_oi_ha"]
    sii, rho = 10 ** r["log_sii_ha"], 10 ** r["log_sii_6718_6732"]
    s["SII-6718"], s["SII-6732"] = sii * rho / (1 + rho), sii / (1 + rho)
    for line, ref in WEAK_LINES.items():
        s[line] = 10 ** r["weak"][line] * (s["OIII-5008"] if ref == "OIII-5008" else hb)
    for weak, (strong, ratio) in DOUBLETS.items():
        s[weak] = s[strong] * ratio
    return np.array([s[c] for c in channels])
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


def _extension_spec(name: str, channels: tuple) -> dict:
    """Channel names and header keys of each MAPS extension, as the DAP writes them."""
    specs = {
        "SPX_ELLCOO": dict(channels=("Elliptical radius", "R/Re", "Elliptical azimuth"),
                           units=("arcsec", "", "degrees")),
        "SPX_SNR": {},
        "BINID": dict(channels=("Binned spectra", "Stellar continua", "Em. line moments",
                                "Em. line models", "Spectral indices")),
        "EMLINE_GFLUX": dict(channels=channels, bunit=FLUX_UNIT,
                             extra=[("ERRDATA", "EMLINE_GFLUX_IVAR", "Associated inv. variance extension"),
                                    ("QUALDATA", "EMLINE_GFLUX_MASK", "Associated quality extension")]),
        "EMLINE_GFLUX_IVAR": dict(channels=channels, bunit=f"({FLUX_UNIT})^{{-2}}", hduclas2="ERROR",
                                  extra=[("HDUCLAS3", "INVMSE", "Value is inverse mean-square error"),
                                         ("SCIDATA", "EMLINE_GFLUX", "Associated data extension"),
                                         ("QUALDATA", "EMLINE_GFLUX_MASK", "Associated quality extension")]),
        "EMLINE_GFLUX_MASK": dict(channels=channels, hduclas2="QUALITY",
                                  extra=[("HDUCLAS3", "FLAG32BIT", "32-bit mask"),
                                         ("SCIDATA", "EMLINE_GFLUX", "Associated data extension"),
                                         ("ERRDATA", "EMLINE_GFLUX_IVAR", "Associated inv. variance extension")]),
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
    hdr["MASKNAME"] = "MANGA_DAPPIXMASK"
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


def write_maps_file(path, *, galaxy_id: str, mangaid: str, ra: float, dec: float, z: float,
                    channels, flux, ivar, mask, binid=None, snr=None, pixscale: float = 0.5,
                    daptype: str = "SYNTH-GAU-BLUEBERRY", versdap: str = "blueberry-synth-1",
                    pa: float = 0.0, ellipticity: float = 0.0, reff: float | None = None,
                    extra_header=None) -> Path:
    """Write a MaNGA DAP ``MAPS`` file (gzip-compressed when ``path`` ends in ``.gz``).

    ``flux``, ``ivar`` and ``mask`` are ``(C, ny, nx)`` in the order of ``channels`` (DAP
    names such as ``core.lines.DR15_CHANNELS``); flux in 1E-17 erg/s/cm^2/spaxel; ``mask``
    holds ``MANGA_DAPPIXMASK`` bits. ``binid`` is ``(ny, nx)`` or ``(5, ny, nx)``; by
    default every covered spaxel (NOCOV unset in any channel) is its own bin, -1 elsewhere.
    ``snr`` is the continuum S/N map ``SPX_SNR`` (zeros by default). ``pa``,
    ``ellipticity`` and ``reff`` (arcsec) define ``SPX_ELLCOO`` and the ``ECOOPA``,
    ``ECOOELL`` and ``REFF`` keys. ``extra_header`` (a dict) adds primary header keys.
    The write is atomic and deterministic (the same inputs give the same bytes).
    """
    path = Path(path)
    channels = tuple(channels)
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
        covered = ~np.all(mask & (1 << NOCOV), axis=0).astype(bool)
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

    plate, _, ifu = str(galaxy_id).partition("-")
    primary = fits.Header()
    primary["AUTHOR"] = "Blueberry synthetic survey (core.synth)"
    primary["MASKNAME"] = ("MANGA_DAPPIXMASK", "Bits in sdssMaskbits.par used by mask extension")
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

    parts = [fits.PrimaryHDU(header=primary).header.tostring().encode("ascii")]
    for name, data in (("SPX_ELLCOO", ellcoo(nx, ny, pixscale, pa, ellipticity, reff)), ("SPX_SNR", snr),
                       ("BINID", binid), ("EMLINE_GFLUX", flux), ("EMLINE_GFLUX_IVAR", ivar),
                       ("EMLINE_GFLUX_MASK", mask)):
        parts.append(_extension_bytes(name, np.ascontiguousarray(data), ra, dec, pixscale, channels))
    data = b"".join(parts)
    if path.name.endswith(".gz"):
        # mtime=0: the same galaxy gives the same bytes, so checksums are reproducible.
        data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------
# One galaxy


@dataclass
class SynthGalaxy:
    """One synthetic galaxy: its maps (as the MAPS file stores them) and its truth."""

    galaxy_id: str  # plate-ifudesign, e.g. "90003-12704"
    mangaid: str
    channels: tuple  # DAP channel names, the order of the first axis of the maps
    model: np.ndarray  # (C, ny, nx) noiseless observed flux, 1E-17 erg/s/cm^2/spaxel
    flux: np.ndarray  # (C, ny, nx) model + noise, zero where nothing was observed
    ivar: np.ndarray  # (C, ny, nx) inverse variance of the noise; 0 where nothing was observed
    mask: np.ndarray  # (C, ny, nx) int32 MANGA_DAPPIXMASK bits
    snr: np.ndarray  # (ny, nx) continuum S/N (SPX_SNR)
    binid: np.ndarray  # (ny, nx) one bin per covered spaxel, -1 elsewhere
    ra: float
    dec: float
    z: float
    pa: float  # major axis, degrees east of north
    ellipticity: float  # 1 - b/a
    reff: float  # effective radius, arcsec
    header: dict  # extra primary-header keys (PSF FWHM ...)
    truth: dict  # the truth-table row

    def write(self, path) -> Path:
        return write_maps_file(
            path, galaxy_id=self.galaxy_id, mangaid=self.mangaid, ra=self.ra, dec=self.dec, z=self.z,
            channels=self.channels, flux=self.flux, ivar=self.ivar, mask=self.mask, binid=self.binid,
            snr=self.snr, pa=self.pa, ellipticity=self.ellipticity, reff=self.reff, extra_header=self.header)


def survey_file_name(galaxy_id: str) -> str:
    """The MAPS file name of a synthetic galaxy, patterned on the DAP's."""
    return f"manga-{galaxy_id}-MAPS-SYNTH-GAU.fits.gz"


def _ids(index: int, fibres: int) -> tuple[str, str]:
    # Plates from 90000 up: no real MaNGA plate has such a number, so ids never collide.
    # A plate carries 17 IFUs; the design number starts with the bundle size as MaNGA's do.
    plate, slot = 90000 + index // 17, index % 17 + 1
    return f"{plate}-{fibres * 100 + slot}", f"90-{index:06d}"


def _psf_matrix(n: int, pad: int, sigma_pix: float) -> np.ndarray:
    """(n, n + 2 pad) Gaussian blur matrix from the padded grid to the map: K @ M @ K.T."""
    d = np.arange(n)[:, None] + pad - np.arange(n + 2 * pad)[None, :]
    return np.exp(-0.5 * (d / sigma_pix) ** 2) / (math.sqrt(2 * math.pi) * sigma_pix)


def _hex_radius(x, y):
    """The 'radius' of a hexagon with vertices on the x axis: a point is inside one of
    circumradius R where this is <= R (MaNGA's bundles point their corners east-west)."""
    ax, ay = np.abs(x), np.abs(y)
    return np.maximum(ay * 2 / math.sqrt(3), ax + ay / math.sqrt(3))


def _uniform(rng, lo, hi):
    return float(rng.uniform(lo, hi))


_BLAS = None


def _one_blas_thread():
    """A context that keeps BLAS on one thread: the blur matrices are tiny, and threaded
    BLAS on a busy machine makes them 10 to 100 times slower."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def make_galaxy(index: int, seed: int, truth_class: str, release: str = "dr15",
                config: SynthConfig = SynthConfig()) -> SynthGalaxy:
    """Galaxy number ``index`` of the survey with ``seed``, of class ``truth_class``.

    Everything random comes from ``SeedSequence(seed, spawn_key=(index,))``, so a galaxy
    does not depend on which process makes it or on the other galaxies.
    """
    with _one_blas_thread():
        return _make_galaxy(index, seed, truth_class, release, config)


def _observe(model, cont, radius, sigma_gal, early, channels, rng, config):
    """Footprint, noise and masks: what the DAP would write for noiseless maps ``model``.

    ``cont`` is the continuum (peak 1) seen through the PSF. Returns flux, ivar, mask,
    the continuum S/N map, the bin ids and whether a star and a dead fibre were added.
    """
    pix = config.pixscale
    n = model.shape[-1]
    xo = -(np.arange(n) - n // 2)[None, :] * pix
    yo = (np.arange(n) - n // 2)[:, None] * pix
    hexr = _hex_radius(xo, yo)
    covered = hexr <= radius
    lowcov = ~covered & (hexr <= radius + 0.75)
    snr_peak = 10 ** rng.normal(math.log10(80 if early else 40), 0.2)
    snr = snr_peak * cont * np.sqrt(1.05 / (cont + 0.05))  # photon noise of starlight plus sky
    blue = np.where(np.array([wavelength(c) for c in channels]) < 4000, config.blue_noise, 1.0)
    sigma = sigma_gal * blue[:, None, None] * np.sqrt(1 + config.noise_continuum * cont)[None]
    flux = model + sigma * rng.standard_normal(model.shape)
    ivar = 1.0 / sigma**2

    bits = np.zeros((n, n), np.int64)
    bits[~covered & ~lowcov] |= (1 << NOCOV) | (1 << LOWCOV) | (1 << DONOTUSE)
    bits[lowcov] |= (1 << LOWCOV) | (1 << DONOTUSE)
    bits[covered & (snr < config.unreliable_snr)] |= 1 << UNRELIABLE
    nodata = ~covered
    has_dead = bool(rng.random() < config.dead_fibre_probability)
    if has_dead:
        # Fibres sit on a hexagonal lattice of pitch 2.5"; a dead one leaves a 2" hole.
        jj, ii = np.mgrid[-7:8, -7:8]
        fx, fy = 2.5 * ii + 1.25 * (jj % 2), 2.5 * jj * math.sqrt(3) / 2
        inside = _hex_radius(fx, fy) <= radius - 1.25
        pick = rng.integers(int(inside.sum()))
        dead = covered & (np.hypot(xo - fx[inside][pick], yo - fy[inside][pick]) <= 1.0)
        bits[dead] |= (1 << DEADFIBER) | (1 << DONOTUSE)
        nodata |= dead
    has_star = bool(rng.random() < config.star_probability)
    if has_star:
        # A foreground star: its spectrum ruins the continuum subtraction, which leaves
        # spurious line residuals; the DAP flags the spaxels.
        dist, ang = _uniform(rng, 3.0, max(radius - 1.0, 3.5)), _uniform(rng, 0, 2 * math.pi)
        star = covered & (np.hypot(xo - dist * math.sin(ang), yo - dist * math.cos(ang)) <= _uniform(rng, 1.5, 2.5))
        bits[star] |= (1 << FORESTAR) | (1 << DONOTUSE)
        flux[:, star] += rng.normal(0, 5 * sigma_gal, (len(channels), 1))
    flux[:, nodata] = 0.0
    ivar[:, nodata] = 0.0
    mask = np.broadcast_to(bits.astype(np.int32), model.shape).copy()
    binid = np.full((n, n), -1, np.int32)
    binid[covered] = np.arange(int(covered.sum()), dtype=np.int32)
    return flux, ivar, mask, snr, binid, has_star, has_dead


def _bundle(rng, truth_class: str, config: SynthConfig) -> int:
    """The bundle (fibres) of a galaxy: the first draw from its random generator."""
    weights = dict(config.bundle_weights)
    if truth_class == "blueberry":  # dwarfs: MaNGA gives small galaxies small bundles
        weights = {b: w for b, w in weights.items() if b <= 37} or weights
    sizes = list(weights)
    return int(sizes[rng.choice(len(sizes), p=np.array(list(weights.values()), float) / sum(weights.values()))])


def _make_galaxy(index, seed, truth_class, release, config) -> SynthGalaxy:
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; choose one of {', '.join(RELEASES)}")
    if truth_class not in NORMAL_CLASSES + ANOMALY_KINDS:
        raise ValueError(f"unknown class {truth_class!r}; choose one of {NORMAL_CLASSES + ANOMALY_KINDS}")
    templates = load_templates(config.templates)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    channels = RELEASES[release]
    ch = {name: i for i, name in enumerate(channels)}
    pix = config.pixscale
    host = {"blueberry": "blueberry", "offnuclear": "sf", "cones": "seyfert"}.get(truth_class, truth_class)
    early = host in ("liner", "retired")

    # --- the bundle, the PSF and the grid -------------------------------------------
    fibres = _bundle(rng, truth_class, config)
    radius = BUNDLES[fibres] / 2
    n = int(round(BUNDLES[fibres] / pix)) + 8  # bundle plus a margin, like the DRP cubes
    psf = float(np.clip(rng.normal(config.psf_fwhm, config.psf_scatter), 0.6 * config.psf_fwhm, 1.5 * config.psf_fwhm))
    sigma_pix = psf / 2.3548 / pix
    pad = int(math.ceil(3 * sigma_pix))
    kern = _psf_matrix(n, pad, sigma_pix).astype(np.float32)  # float32: 5x faster, ample precision
    off = (np.arange(n + 2 * pad) - (pad + n // 2)) * pix
    xe, yn = -off[None, :], off[:, None]  # arcsec east and north of the centre (RA runs right to left)

    # --- structure --------------------------------------------------------------------
    re = _uniform(rng, 0.3, 0.9) if host == "blueberry" else radius / _uniform(rng, 1.2, 2.6)
    q0 = 0.15  # intrinsic thickness of disks
    if early:
        ba = _uniform(rng, 0.45, 1.0)
    else:
        ba = math.sqrt(q0**2 + (1 - q0**2) * _uniform(rng, 0.15, 1.0) ** 2)  # cos(i) uniform: random orientations
    inclination = math.degrees(math.acos(math.sqrt(max(ba**2 - q0**2, 0.0) / (1 - q0**2))))
    pa = _uniform(rng, 0.0, 180.0)
    bt = {"sf": (0.0, 0.3), "comp": (0.15, 0.5), "seyfert": (0.2, 0.6), "liner": (0.4, 0.9),
          "retired": (0.5, 0.95), "blueberry": (0.0, 0.0)}[host]
    bt = _uniform(rng, *bt)
    re_bulge = re * _uniform(rng, 0.12, 0.3)
    sp, cp = math.sin(math.radians(pa)), math.cos(math.radians(pa))
    major, minor = xe * sp + yn * cp, xe * cp - yn * sp
    r_disk = np.hypot(major, minor / ba)  # radius in the plane of the disk
    disk = np.exp(-r_disk / (re / 1.678))
    r_bulge = np.hypot(major, minor / _uniform(rng, max(ba, 0.6), 1.0))
    bulge = np.exp(-7.669 * ((np.hypot(r_bulge, _BULGE_SOFTENING) / re_bulge) ** 0.25 - 1))
    stellar = bt * bulge / bulge.sum() + (1 - bt) * disk / disk.sum()

    # HII regions: PSF-sized blobs scattered like the disk light, in the plane of the disk.
    n_clumps = int(rng.integers(10, 45))
    rad = np.minimum(rng.gamma(2.0, re / 1.678, n_clumps), 2.5 * re)
    theta = rng.uniform(0, 2 * math.pi, n_clumps)
    ca, cb = rad * np.cos(theta), rad * np.sin(theta) * ba
    cx, cy = ca * sp + cb * cp, ca * cp - cb * sp
    csig = rng.uniform(0.3, 0.8, n_clumps)
    lum = rng.lognormal(0.0, 0.6, n_clumps)
    gx = np.exp(-0.5 * ((xe - cx[:, None]) / csig[:, None]) ** 2)  # (k, nx): Gaussians are separable
    gy = np.exp(-0.5 * ((yn[:, 0][None, :] - cy[:, None]) / csig[:, None]) ** 2)
    clumps = (gy * (lum / csig**2)[:, None]).T @ gx
    clump_fraction = _uniform(rng, 0.25, 0.6)
    gas = (1 - clump_fraction) * disk / disk.sum() + clump_fraction * clumps / clumps.sum()
    # Bulgy disks often lack star formation in the centre.
    hole = _uniform(rng, 0.0, 0.8) * min(bt / 0.3, 1.0)
    gas *= 1 - hole * np.exp(-((r_disk / (0.4 * re)) ** 2))
    nucleus = np.zeros_like(disk)
    nucleus[pad + n // 2, pad + n // 2] = 1.0

    # --- anomalies' extra geometry ----------------------------------------------------
    extra = {"anomaly_x": np.nan, "anomaly_y": np.nan, "anomaly_size": np.nan, "anomaly_angle": np.nan,
             "cone_half_angle": np.nan, "anomaly_ionisation": ""}
    if truth_class == "offnuclear":
        dist = _uniform(rng, max(0.4 * radius, 4.0), 0.75 * radius)
        ang = _uniform(rng, 0, 2 * math.pi)
        size = _uniform(rng, 0.5, 1.2)
        bx, by = dist * math.sin(ang), dist * math.cos(ang)
        blob = np.exp(-0.5 * ((xe - bx) ** 2 + (yn - by) ** 2) / size**2)
        extra.update(anomaly_x=bx, anomaly_y=by, anomaly_size=size, anomaly_angle=math.degrees(ang))
    elif truth_class == "cones":
        axis = _uniform(rng, 0, 180)
        half = _uniform(rng, 25, 45)
        length = _uniform(rng, 0.6, 1.0) * radius
        r_sky = np.hypot(xe, yn)
        az = np.degrees(np.arctan2(xe, yn))  # east of north
        dphi = np.abs((az - axis + 90) % 180 - 90)  # angle to the axis, either cone
        near = np.abs((az - axis + 180) % 360 - 180) < 90
        shade = np.where(near, 1.0, _uniform(rng, 0.3, 0.8))  # the far cone sits behind the disk
        cone = (shade * np.exp(-((dphi / half) ** 6)) * np.exp(-((r_sky / length) ** 4))
                / np.hypot(r_sky, 1.0))  # dilution of the AGN's radiation, partly offset by denser gas
        extra.update(anomaly_size=length, anomaly_angle=axis, anomaly_x=0.0, anomaly_y=0.0)
        extra["cone_half_angle"] = half

    # --- lines, dust, PSF, amplitudes --------------------------------------------------
    k_lines = calzetti_k([wavelength(c) for c in channels])
    ha = ch[BPT_LINES["ha"]]
    yo = (np.arange(n) - n // 2) * pix
    in_aperture = np.hypot(yo[:, None], yo[None, :]) <= APERTURE
    rr = np.minimum(r_disk / re, 3.0)

    def blur(maps):
        return np.matmul(np.matmul(kern, maps), kern.T)

    def cube(m, r, grads=None):
        """Observed (dust, PSF) cube of a component: map ``m`` with line ratios ``r``."""
        s = _spectrum(r, channels)
        stack = [m] + [m * 10**g for g in (grads or {}).values()]
        blurred = blur(np.stack(stack).astype(np.float32))
        out = blurred[0][None] * s[:, None, None]
        for b, group in zip(blurred[1:], (grads or {})):
            rows = [ch[line] for line in GRADIENT_GROUPS[group] if line in ch]
            out[rows] = b[None] * s[rows, None, None]
        return out * transmission

    margin = config.bpt_margin
    for _attempt in range(20):
        main = _draw_ratios(rng, templates, host, margin)
        av = float(av_from_balmer(main["log_ha_hb"]))
        av_map = av * (0.35 + 0.65 * np.exp(-r_disk / (1.5 * re))) * (0.8 + 0.4 * clumps / clumps.max())
        av_obs = blur(av_map[None])[0] / blur(np.ones((1,) + av_map.shape))[0]
        transmission = 10 ** (-0.4 * av_obs[None] * k_lines[:, None, None] / R_V)

        g = rng.normal(-0.08, 0.03)  # metallicity gradient, dex per Re in log [NII]/Ha
        disk_grads = {"log_nii_ha": g * rr, "log_oiii_hb": -1.5 * g * rr, "log_sii_ha": 0.04 * rr,
                      "log_oi_ha": 0.06 * rr}
        # Components: name -> observed cube with Ha = 1 somewhere. In the central aperture
        # the nuclear ones ("core", "nucleus") give a fraction f_nuc of the Ha, the
        # extended ones the rest; the anomalies' ("blob", "cones") total Ha is f_total
        # times the disk's.
        comps = {}
        f_nuc, f_total, f_sf = 0.0, 0.0, 0.0
        if host in ("sf", "comp", "seyfert"):
            disk_r = main if host == "sf" else _draw_ratios(rng, templates, "sf", margin)
            comps["disk"] = cube(gas, disk_r, disk_grads)
        if host == "comp":
            comps["core"] = cube(bulge, main)
            f_nuc = _uniform(rng, 0.55, 0.85)
        elif host == "seyfert":
            comps["nucleus"] = cube(nucleus, main)
            # An ionisation cone's nucleus is often itself obscured: less dominant.
            f_nuc = _uniform(rng, 0.4, 0.7) if truth_class == "cones" else _uniform(rng, 0.6, 0.9)
        elif host in ("liner", "retired"):
            comps["diffuse"] = cube(stellar, main)
            if host == "liner":
                comps["nucleus"] = cube(nucleus, main)
                f_nuc = _uniform(rng, 0.3, 0.7)
                if rng.random() < 0.3:  # some LINERs live in spirals with star formation
                    comps["disk"] = cube(gas, _draw_ratios(rng, templates, "sf", margin), disk_grads)
                    f_sf = _uniform(rng, 0.05, 0.15)
        elif host == "blueberry":
            comps["starburst"] = cube(disk, main)
        if truth_class == "offnuclear":
            kind = "seyfert" if rng.random() < 0.5 else "liner"
            extra["anomaly_ionisation"] = kind
            comps["blob"] = cube(blob, _draw_ratios(rng, templates, kind, margin))
            f_total = _uniform(rng, 0.15, 0.4)
        elif truth_class == "cones":
            comps["cones"] = cube(cone, main, {"log_oiii_hb": -0.25 * np.minimum(np.hypot(xe, yn) / length, 1.5)})
            f_total = _uniform(rng, 0.6, 1.4)

        ap = {name: c[:, in_aperture].sum(axis=1) for name, c in comps.items()}
        for _boost in range(8):
            amp = {c: f_nuc / ap[c][ha] for c in ("core", "nucleus") if c in comps}
            if host == "liner":
                amp["diffuse"] = (1 - f_nuc - f_sf) / ap["diffuse"][ha]
                if "disk" in comps:
                    amp["disk"] = f_sf / ap["disk"][ha]
            else:
                extended = next(c for c in ("disk", "diffuse", "starburst") if c in comps)
                amp[extended] = (1 - f_nuc) / ap[extended][ha]
            for c in ("blob", "cones"):
                if c in comps:
                    amp[c] = f_total * amp["disk"] * comps["disk"][ha].sum() / comps[c][ha].sum()
            sums = sum(amp[c] * ap[c] for c in comps)
            central = {"log_nii_ha": math.log10(sums[ch["NII-6585"]] / sums[ha]),
                       "log_oiii_hb": math.log10(sums[ch["OIII-5008"]] / sums[ch["Hb-4862"]]),
                       "log_sii_ha": math.log10((sums[ch["SII-6718"]] + sums[ch["SII-6732"]]) / sums[ha]),
                       "log_oi_ha": math.log10(sums[ch["OI-6302"]] / sums[ha])}
            got = _bpt_class(central, margin / 2)
            if host == "blueberry" or got == CENTRAL_BPT[host]:
                break
            # Too diluted by the disk: let the nucleus (or the LIER gas) dominate more.
            f_nuc, f_sf = (1 + f_nuc) / 2, f_sf / 2
        else:
            continue
        break
    else:
        raise BlueberryError(f"galaxy {index} (seed {seed}, {truth_class}) never reached its BPT class")

    # --- brightness ------------------------------------------------------------------
    tpl = BLUEBERRY if host == "blueberry" else templates["classes"][host]
    lc = tpl["log_ha_cen"]
    ha_cen = 10 ** rng.normal(lc["median"], lc["std"])
    model = sum(amp[c] * comps[c] for c in comps)
    sigma_gal = config.noise * 10 ** rng.normal(0, config.noise_scatter)
    floor = config.min_ha_snr * sigma_gal / model[ha].max()
    feature = {"blueberry": "starburst", "offnuclear": "blob", "cones": "cones"}.get(truth_class)
    if feature:
        # An anomaly lost in the noise is no anomaly: its [OIII] peaks at >= 15 sigma.
        floor = max(floor, 15 * sigma_gal / (amp[feature] * comps[feature][ch["OIII-5008"]].max()))
    ha_cen = max(ha_cen, floor)
    model *= ha_cen
    for weak, (strong, ratio) in DOUBLETS.items():
        if weak in ch and strong in ch:
            model[ch[weak]] = model[ch[strong]] * ratio

    cont = blur(stellar[None])[0]
    flux, ivar, mask, snr, binid, has_star, has_dead = _observe(
        model, cont / cont.max(), radius, sigma_gal, early, channels, rng, config)

    # --- identity and truth ------------------------------------------------------------
    galaxy_id, mangaid = _ids(index, fibres)
    z = _uniform(rng, 0.02, 0.05) if host == "blueberry" else float(np.clip(10 ** rng.normal(math.log10(0.035), 0.2), 0.01, 0.15))
    ra = _uniform(rng, 0, 360)
    dec = math.degrees(math.asin(_uniform(rng, math.sin(math.radians(-10)), math.sin(math.radians(70)))))
    measured = {f"cen_{k}": v for k, v in central.items()}
    truth = {
        "galaxy_id": galaxy_id, "mangaid": mangaid, "file": survey_file_name(galaxy_id), "index": index,
        "truth_class": truth_class, "truth_anomaly": truth_class in ANOMALY_KINDS,
        "host_class": host, "release": release, "n_fibres": fibres, "bundle_arcsec": BUNDLES[fibres],
        "map_size": n, "ra": ra, "dec": dec, "z": z, "psf_fwhm": psf, "inclination": inclination,
        "ba": ba, "pa": pa, "re_arcsec": re, "bulge_fraction": bt, "bulge_re_arcsec": re_bulge,
        "n_clumps": n_clumps if "disk" in comps else 0, "clump_fraction": clump_fraction if "disk" in comps else 0.0,
        "a_v": av, "metallicity_gradient": g if "disk" in comps else 0.0, "nuclear_fraction": f_nuc,
        "ha_cen": float(ha_cen), "noise": sigma_gal,
        **{f"tpl_{k}": float(main[k]) for k in RATIOS},
        **measured, "cen_bpt": got, **extra,
        "has_star": has_star, "has_dead_fibre": has_dead,
    }
    header = {"RFWHM": (psf, "Reconstructed FWHM in r-band (arcsec)"),
              "GFWHM": (psf * 1.04, "Reconstructed FWHM in g-band (arcsec)"),
              "SYNSEED": (int(seed), "Seed of the synthetic survey"),
              "SYNINDEX": (int(index), "Index of the galaxy in the synthetic survey")}
    return SynthGalaxy(galaxy_id, mangaid, channels, model.astype(np.float32), flux.astype(np.float32),
                       ivar.astype(np.float32), mask, snr.astype(np.float32), binid, ra, dec, z, pa,
                       1 - ba, re, header, truth)


# --------------------------------------------------------------------------------------
# The survey


def _apportion(total: int, weights: dict) -> dict:
    """Split ``total`` into whole numbers in proportion to ``weights`` (largest remainder)."""
    names = list(weights)
    w = np.array([weights[k] for k in names], dtype=float)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def class_counts(n: int, config: SynthConfig = SynthConfig()) -> dict:
    """How many galaxies of each class a survey of ``n`` holds: exact, not sampled."""
    n_anomalies = int(round(config.anomaly_fraction * n))
    return {**_apportion(n - n_anomalies, config.class_mix), **_apportion(n_anomalies, config.anomaly_mix)}


def assign_classes(n: int, seed: int, config: SynthConfig = SynthConfig()) -> list[str]:
    """The class of every galaxy of the survey: :func:`class_counts`, in a seeded random order."""
    labels = [name for name, count in class_counts(n, config).items() for _ in range(count)]
    # A spawn key of length 2 never collides with the galaxies' own (index,) keys.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n, 0xC1A55)))
    return [labels[i] for i in rng.permutation(n)]


def _write_one(task) -> dict:
    index, seed, truth_class, release, config, out_dir = task
    galaxy = make_galaxy(index, seed, truth_class, release, config)
    galaxy.write(Path(out_dir) / galaxy.truth["file"])
    return galaxy.truth


def generate_survey(out_dir, n: int, seed: int, release: str = "dr15", workers: int | None = None,
                    progress: bool = True, config: SynthConfig = SynthConfig()):
    """Write ``n`` synthetic MaNGA galaxies as MAPS files into ``out_dir``, plus ``truth.csv``.

    Returns the truth table (one row per galaxy, in index order): ``galaxy_id``,
    ``truth_class``, ``truth_anomaly`` and the parameters that made the galaxy. The files
    depend only on ``(seed, index)``, not on ``workers`` (processes; default: all cores).
    ``synth.json`` beside them records the call, so the survey can be made again.
    Worker processes are spawned, so a script calling this with ``workers > 1`` needs the
    usual ``if __name__ == "__main__":`` guard. A folder that holds other MAPS files is
    refused: an ingest of it would mix them in.
    """
    import multiprocessing

    import pandas as pd
    from tqdm.auto import tqdm

    if n < 1:
        raise BlueberryError(f"the survey needs at least one galaxy, got n={n}")
    if release not in RELEASES:
        raise BlueberryError(f"unknown release {release!r}; choose one of {', '.join(RELEASES)}")
    load_templates(config.templates)  # fail before starting processes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = assign_classes(n, seed, config)
    tasks = [(i, seed, c, release, config, str(out)) for i, c in enumerate(classes)]
    # Ids depend on the bundle, drawn per galaxy: make the cheap part of each to name its file.
    ours = {survey_file_name(_ids(i, _bundle(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))),
                                               c, config))[0]) for i, c in enumerate(classes)}
    others = sorted(p.name for p in out.glob("manga-*-MAPS-*.fits*") if p.name not in ours)
    if others:
        raise BlueberryError(f"{out}: holds {len(others)} MAPS files that are not part of this survey "
                             f"(e.g. {others[0]}); write into an empty folder or remove them")
    workers = min(os.cpu_count() or 1, n) if workers is None else max(1, min(int(workers), n))
    rows = []
    with tqdm(total=n, desc="synth", unit="galaxy", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                rows.append(_write_one(task))
                bar.update()
        else:
            # spawn, not fork: the parent may hold torch or BLAS threads that fork would copy.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for row in pool.imap(_write_one, tasks, chunksize=max(1, min(16, n // (4 * workers)))):
                    rows.append(row)
                    bar.update()
    truth = pd.DataFrame(rows)
    with atomic_path(out / "truth.csv") as tmp:
        truth.to_csv(tmp, index=False)
    write_json(out / "synth.json", {"n": n, "seed": seed, "release": release, "config": asdict(config),
                                    "templates": str(config.templates or TEMPLATES_PATH.name),
                                    "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return truth
