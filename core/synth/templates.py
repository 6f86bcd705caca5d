"""The class templates of the synthetic survey, from the central fluxes of the DR17 DAPall.

:func:`derive_templates` made the committed ``assets/synth_templates.json``;
:func:`load_templates` reads it (or another file named by ``SynthConfig.templates``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from core.bpt import RATIOS as BPT_RATIOS
from core.bpt import classify, log_ratios
from core.errors import BlueberryError
from core.io import sha256_file
from core.lines import BPT_LINES, DR17_CHANNELS, wavelength
from core.synth.config import NORMAL_CLASSES
from core.synth.spectra import R_V, RATIOS, WEAK_LINES, av_from_balmer, calzetti_k

TEMPLATES_PATH = Path(__file__).resolve().parents[2] / "assets" / "synth_templates.json"


def _round(x, digits: int = 5):
    return float(np.format_float_positional(float(x), precision=digits, unique=False, fractional=False))


def _read_dapall(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``EMLINE_GFLUX_CEN`` (NaN where the DAP measured nothing) and ``EMLINE_GEW_1RE``, (N, 35)."""
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
    return flux, ew


def _weak_line(rel: np.ndarray) -> dict:
    """Median and scatter (dex) of one weak line's dereddened ratios to its reference line."""
    rel = rel[np.isfinite(rel)]
    # The median of the signed ratios is robust to noise; the floor keeps logs finite
    # where a line is undetected in the class.
    med = max(float(np.median(rel)), 1e-3)
    pos = np.log10(rel[rel > 0]) if np.any(rel > 0) else np.array([np.log10(med)])
    scatter = min(0.5 * float(np.subtract(*np.percentile(pos, [84, 16]))), 0.3)
    return {"median": _round(np.log10(med)), "std": _round(scatter)}


def _log_ew(ew: np.ndarray) -> dict:
    """Median and scatter (dex) of a class's Ha equivalent widths (Angstrom, floored at 0.05 A)."""
    log_ew = np.log10(np.clip(ew[np.isfinite(ew)], 0.05, None))
    return {"median": _round(np.median(log_ew)), "std": _round(np.std(log_ew))}


def derive_templates(dapall_path) -> dict:
    """Per-class line-ratio templates from the central fluxes of a MaNGA DR17 DAPall file.

    Classes: the Kewley et al. 2006 BPT class (:func:`core.bpt.classify`) of
    ``EMLINE_GFLUX_CEN``, with Ha equivalent width inside 1 Re (``EMLINE_GEW_1RE``)
    >= 3 A for ``sf``, ``comp`` and ``seyfert``; ``liner`` takes every BPT LINER and
    ``retired`` the BPT LINERs with EW(Ha) < 3 A (Cid Fernandes et al. 2011: LINER-like
    ratios from old stars). Needs the BPT lines detected (positive, Hb > 1E-17).

    Returns a JSON-ready dict: per class the mean and covariance of :data:`RATIOS`, the
    median and scatter of log Ha central flux, the median and scatter of every
    :data:`WEAK_LINES` ratio, dereddened with the galaxy's Balmer decrement, from the
    brighter half (in Hb) of the class, and the median and scatter of log EW(Ha)
    (``log_ew_ha``; for ``liner`` only the LINERs above 3 A, the others being retired).
    """
    path = Path(dapall_path)
    flux, ew = _read_dapall(path)
    col = {name: i for i, name in enumerate(DR17_CHANNELS)}

    def f(name):
        return flux[:, col[name]]

    ha, hb = f(BPT_LINES["ha"]), f(BPT_LINES["hb"])
    ok = (hb > 1.0) & np.all([f(name) > 0 for name in BPT_LINES.values()], axis=0)
    bpt_ratios = log_ratios({name: f(name) for name in BPT_LINES.values()})
    with np.errstate(divide="ignore", invalid="ignore"):
        # (N, 6): the columns of RATIOS.
        ratios = np.column_stack([bpt_ratios[k] for k in BPT_RATIOS] + [
            np.log10(ha / hb), np.log10(f(BPT_LINES["sii_a"]) / f(BPT_LINES["sii_b"]))])
    bpt = np.where(ok, classify(*(bpt_ratios[k] for k in BPT_RATIOS)), "invalid")
    ew_ha = ew[:, col[BPT_LINES["ha"]]]
    members = {
        "sf": (bpt == "sf") & (ew_ha >= 3), "comp": (bpt == "comp") & (ew_ha >= 3),
        "seyfert": (bpt == "seyfert") & (ew_ha >= 3), "liner": bpt == "liner",
        "retired": (bpt == "liner") & (ew_ha < 3),
    }
    # Equivalent widths: the star-forming and AGN classes from their members above 3 A (the
    # LINERs with less are retired galaxies), the retired ones below.
    with np.errstate(invalid="ignore"):
        ew_members = {name: sel & (ew_ha >= 3) for name, sel in members.items()} | {"retired": members["retired"]}
    k = calzetti_k([wavelength(n) for n in DR17_CHANNELS])
    av = av_from_balmer(ratios[:, 4])

    classes = {}
    for name, sel in members.items():
        sel = sel & np.all(np.isfinite(ratios), axis=1)
        r = ratios[sel]
        bright = sel & (hb >= np.median(hb[sel]))
        # Deredden: the synthetic galaxies apply their own dust.
        weak = {line: _weak_line(f(line)[bright] / f(ref)[bright]
                                 * 10 ** (0.4 * av[bright] * (k[col[line]] - k[col[ref]]) / R_V))
                for line, ref in WEAK_LINES.items()}
        classes[name] = {
            "n": int(sel.sum()),
            "mean": [_round(v) for v in r.mean(axis=0)],
            "cov": [[_round(v) for v in row] for row in np.cov(r, rowvar=False)],
            "log_ha_cen": {"median": _round(np.median(np.log10(ha[sel]))),
                           "std": _round(np.std(np.log10(ha[sel])))},
            "weak": weak,
            "log_ew_ha": _log_ew(ew_ha[ew_members[name] & np.all(np.isfinite(ratios), axis=1)]),
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
