"""BPT demarcation lines, classification, line ratios and per-galaxy columns (core/bpt.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

from core import bpt
from core.lines import BPT_LINES, DR17_CHANNELS

DAPALL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "catalogs" / "dapall-dr17-subset664.fits"

HYPERBOLAE = [  # (function, asymptote)
    (bpt.kauffmann03_nii, 0.05),
    (bpt.kewley01_nii, 0.47),
    (bpt.kewley01_sii, 0.32),
    (bpt.kewley01_oi, -0.59),
]
STRAIGHT = [bpt.kewley06_sii, bpt.kewley06_oi, bpt.schawinski07_nii, bpt.cidfernandes10_nii]
ALL_LINES = [f for f, _ in HYPERBOLAE] + STRAIGHT


# --------------------------------------------------------------------------- lines


@pytest.mark.parametrize("line, x0", HYPERBOLAE)
def test_hyperbola_is_nan_at_and_beyond_its_asymptote(line, x0):
    assert math.isnan(line(x0))
    assert np.all(np.isnan(line(np.array([x0 + 1e-9, x0 + 0.3, x0 + 5.0]))))
    left = line(np.array([x0 - 3.0, x0 - 1.0, x0 - 0.1, x0 - 1e-6]))
    assert np.all(np.isfinite(left))
    # The left branch falls towards -inf at the asymptote.
    assert np.all(np.diff(left) < 0)
    assert left[-1] < -1e4


def test_lines_cross_where_the_papers_draw_them():
    # Crossings read off the published figures (and used as the drawing limits by Marvin's
    # bpt_kewley06): Ka03 meets Ke01 near log([NII]/Ha) = -1.28; the Kewley 2006 Seyfert/LINER
    # lines start on Ke01 near -0.31 ([SII]) and -1.12 ([OI]); Schawinski 2007 near -0.18.
    def cross(f, g, a, b):
        return brentq(lambda x: f(x) - g(x), a, b)

    assert cross(bpt.kauffmann03_nii, bpt.kewley01_nii, -2.0, -0.5) == pytest.approx(-1.28, abs=0.01)
    assert cross(bpt.kewley06_sii, bpt.kewley01_sii, -1.0, 0.3) == pytest.approx(-0.31, abs=0.01)
    assert cross(bpt.kewley06_oi, bpt.kewley01_oi, -2.0, -0.6) == pytest.approx(-1.12, abs=0.01)
    assert cross(bpt.schawinski07_nii, bpt.kewley01_nii, -0.5, 0.4) == pytest.approx(-0.18, abs=0.01)
    # Cid Fernandes et al. 2010 transposes the Kewley 2006 division and lies close to
    # Schawinski et al. 2007 over the AGN branch, slightly above it at high [NII]/Ha.
    x = np.linspace(-0.2, 0.8, 11)
    assert np.all(np.abs(bpt.cidfernandes10_nii(x) - bpt.schawinski07_nii(x)) < 0.05)


@pytest.mark.parametrize("line", ALL_LINES)
def test_lines_take_scalars_and_any_shape(line):
    x = np.linspace(-2.0, -0.7, 12).reshape(3, 4)  # left of every asymptote
    y = line(x)
    assert isinstance(y, np.ndarray) and y.shape == (3, 4)
    scalar = line(float(x[1, 2]))
    assert isinstance(scalar, float) and not isinstance(scalar, np.ndarray)
    assert scalar == y[1, 2]
    assert line([float(v) for v in x[0]]).tolist() == y[0].tolist()
    assert math.isnan(line(float("nan")))


def test_straight_lines_follow_their_slopes():
    for line in STRAIGHT:
        x = np.array([-1.0, 0.0, 1.0])
        y = line(x)
        assert y[2] - y[1] == pytest.approx(y[1] - y[0])
    assert bpt.kewley06_sii(1.0) - bpt.kewley06_sii(0.0) == pytest.approx(1.89)
    assert bpt.kewley06_oi(1.0) - bpt.kewley06_oi(0.0) == pytest.approx(1.18)
    assert bpt.schawinski07_nii(1.0) - bpt.schawinski07_nii(0.0) == pytest.approx(1.05)
    assert bpt.cidfernandes10_nii(1.0) - bpt.cidfernandes10_nii(0.0) == pytest.approx(1.01)


# --------------------------------------------------------------------------- single diagrams


def test_classify_nii_on_each_side_of_each_line():
    x = -0.5
    ka, ke = bpt.kauffmann03_nii(x), bpt.kewley01_nii(x)
    assert ka < ke
    assert bpt.classify_nii(x, ka - 0.05) == "sf"
    assert bpt.classify_nii(x, (ka + ke) / 2) == "comp"
    assert bpt.classify_nii(x, ka) == "comp"  # on the line counts as above it
    # Above Ke01: split by Schawinski et al. 2007.
    x = 0.2
    assert bpt.kewley01_nii(x) < bpt.schawinski07_nii(x)
    assert bpt.classify_nii(x, bpt.schawinski07_nii(x) + 0.05) == "seyfert"
    assert bpt.classify_nii(x, bpt.schawinski07_nii(x) - 0.05) == "liner"


def test_classify_nii_beyond_asymptotes_counts_as_above():
    # Right of the Ka03 asymptote but left of Ke01's: composite even far down the diagram.
    assert bpt.classify_nii(0.1, bpt.kewley01_nii(0.1) - 0.5) == "comp"
    # Right of both asymptotes: AGN whatever [OIII]/Hb is.
    assert bpt.classify_nii(0.6, -1.5) == "liner"
    assert bpt.classify_nii(0.6, 2.0) == "seyfert"
    assert bpt.classify_nii(0.47, -3.0) == "liner"  # exactly at the Ke01 asymptote


def test_classify_nii_agn_split_choice():
    x = 0.3
    lo, hi = sorted([bpt.schawinski07_nii(x), bpt.cidfernandes10_nii(x)])
    y = (lo + hi) / 2
    sch = bpt.classify_nii(x, y, agn_split="schawinski07")
    cid = bpt.classify_nii(x, y, agn_split="cid10")
    assert {sch, cid} == {"seyfert", "liner"}
    assert cid == ("seyfert" if y > bpt.cidfernandes10_nii(x) else "liner")
    with pytest.raises(ValueError, match="agn_split"):
        bpt.classify_nii(x, y, agn_split="kewley")


@pytest.mark.parametrize(
    "classify, ke01, ke06, x_sf, x_agn, x0",
    [
        (bpt.classify_sii, bpt.kewley01_sii, bpt.kewley06_sii, -0.6, 0.0, 0.32),
        (bpt.classify_oi, bpt.kewley01_oi, bpt.kewley06_oi, -1.5, -0.5, -0.59),
    ],
)
def test_classify_sii_and_oi_on_each_side(classify, ke01, ke06, x_sf, x_agn, x0):
    assert classify(x_sf, ke01(x_sf) - 0.05) == "sf"
    assert classify(x_sf, ke01(x_sf) + 0.05) in ("seyfert", "liner")
    assert classify(x_agn, ke06(x_agn) + 0.05) == "seyfert"
    assert classify(x_agn, ke06(x_agn) - 0.05) == "liner"
    # Beyond the Ke01 asymptote a point is never star-forming.
    assert classify(x0 + 0.01, -2.0) == "liner"
    assert classify(x0, 3.0) == "seyfert"
    assert classify(np.nan, 0.0) == "invalid"
    assert classify(x_sf, np.nan) == "invalid"


# --------------------------------------------------------------------------- Kewley 2006


# Per-diagram positions at two heights of log([OIII]/Hb); each is checked against the lines
# in test_kewley06_test_points_are_where_we_think.
SF_Y, SEY_Y = 0.0, 1.0
NII_SF, NII_COMP, NII_AGN = -0.6, -0.1, 0.3  # at y = 0
NII_SF_HIGH = -2.2  # star-forming at y = 1
SII_SF, SII_LIN = -0.6, 0.1  # at y = 0
SII_SEY = -0.3  # at y = 1
OI_SF, OI_LIN = -1.5, -0.5  # at y = 0
OI_SEY, OI_SF_HIGH = -1.0, -3.0  # at y = 1


def test_kewley06_test_points_are_where_we_think():
    y = SF_Y
    assert y < bpt.kauffmann03_nii(NII_SF)
    assert bpt.kauffmann03_nii(NII_COMP) <= y < bpt.kewley01_nii(NII_COMP)
    assert y > bpt.kewley01_nii(NII_AGN)
    assert y < bpt.kewley01_sii(SII_SF)
    assert bpt.kewley01_sii(SII_LIN) < y < bpt.kewley06_sii(SII_LIN)
    assert y < bpt.kewley01_oi(OI_SF)
    assert OI_LIN > -0.59 and y < bpt.kewley06_oi(OI_LIN)  # beyond the Ke01 asymptote
    y = SEY_Y
    assert y > bpt.kewley01_nii(NII_AGN) and y < bpt.kauffmann03_nii(NII_SF_HIGH)
    assert bpt.kewley01_sii(SII_SEY) < y and y > bpt.kewley06_sii(SII_SEY)
    assert bpt.kewley01_oi(OI_SEY) < y and y > bpt.kewley06_oi(OI_SEY)
    assert y < bpt.kewley01_oi(OI_SF_HIGH)


@pytest.mark.parametrize(
    "nii, y, sii, oi, expected",
    [
        (NII_SF, SF_Y, SII_SF, OI_SF, "sf"),
        (NII_COMP, SF_Y, SII_SF, OI_SF, "comp"),
        (NII_AGN, SEY_Y, SII_SEY, OI_SEY, "seyfert"),
        (NII_AGN, SF_Y, SII_LIN, OI_LIN, "liner"),
        # The diagrams disagree (Kewley et al. 2006, class v).
        (NII_AGN, SF_Y, SII_SF, OI_SF, "ambiguous"),
        (NII_AGN, SF_Y, SII_LIN, OI_SF, "ambiguous"),
        (NII_COMP, SF_Y, SII_LIN, OI_LIN, "ambiguous"),
        (NII_SF, SF_Y, SII_SF, OI_LIN, "ambiguous"),
        (NII_SF_HIGH, SEY_Y, SII_SEY, OI_SEY, "ambiguous"),
        (NII_AGN, SEY_Y, SII_SEY, OI_SF_HIGH, "ambiguous"),
    ],
)
def test_classify_kewley06(nii, y, sii, oi, expected):
    assert bpt.classify(nii, y, sii, oi) == expected


def test_classify_seyfert_in_one_diagram_liner_in_the_other_is_ambiguous():
    # At y = 0.5, log([SII]/Ha) = -0.3 is a Seyfert and log([OI]/Ha) = -0.5 a LINER.
    y = 0.5
    assert bpt.classify_sii(-0.3, y) == "seyfert" and bpt.classify_oi(-0.5, y) == "liner"
    assert bpt.classify(NII_AGN, y, -0.3, -0.5) == "ambiguous"
    assert bpt.classify(NII_AGN, y, -0.3) == "seyfert"


def test_classify_without_oi_uses_nii_and_sii():
    assert bpt.classify(NII_SF, SF_Y, SII_SF) == "sf"
    assert bpt.classify(NII_COMP, SF_Y, SII_SF) == "comp"
    assert bpt.classify(NII_AGN, SEY_Y, SII_SEY) == "seyfert"
    assert bpt.classify(NII_AGN, SF_Y, SII_LIN) == "liner"
    assert bpt.classify(NII_AGN, SF_Y, SII_SF) == "ambiguous"
    # [OI] makes this one ambiguous; without it, it is star-forming.
    assert bpt.classify(NII_SF, SF_Y, SII_SF, OI_LIN) == "ambiguous"
    # An unusable [OI] value drops the [OI] diagram for that point only.
    got = bpt.classify([NII_SF, NII_SF], SF_Y, [SII_SF, SII_SF], [np.nan, OI_LIN])
    assert got.tolist() == ["sf", "ambiguous"]


def test_classify_invalid_inputs():
    ok = (NII_SF, SF_Y, SII_SF, OI_SF)
    for i in range(3):
        for bad in (np.nan, np.inf, -np.inf):
            args = list(ok)
            args[i] = bad
            assert bpt.classify(*args) == "invalid", (i, bad)
            assert bpt.classify(*args[:3]) == "invalid", (i, bad)
    # A non-finite [OI] only removes the [OI] diagram.
    for bad in (np.nan, np.inf, -np.inf):
        assert bpt.classify(NII_SF, SF_Y, SII_SF, bad) == "sf"
    assert bpt.classify(np.nan, np.nan, np.nan, np.nan) == "invalid"


def test_classify_agrees_with_the_single_diagrams_everywhere():
    rng = np.random.default_rng(1)
    n = 20000
    nii, sii, oi = rng.uniform(-2, 1, n), rng.uniform(-1.5, 1, n), rng.uniform(-2.5, 0.5, n)
    y = rng.uniform(-1.5, 1.5, n)
    got = bpt.classify(nii, y, sii, oi)
    n_cls, s_cls, o_cls = bpt.classify_nii(nii, y), bpt.classify_sii(sii, y), bpt.classify_oi(oi, y)
    n_agn = np.isin(n_cls, ["seyfert", "liner"])
    expected = np.full(n, "ambiguous", dtype=object)
    expected[(n_cls == "sf") & (s_cls == "sf") & (o_cls == "sf")] = "sf"
    expected[(n_cls == "comp") & (s_cls == "sf") & (o_cls == "sf")] = "comp"
    expected[n_agn & (s_cls == "seyfert") & (o_cls == "seyfert")] = "seyfert"
    expected[n_agn & (s_cls == "liner") & (o_cls == "liner")] = "liner"
    assert got.tolist() == expected.tolist()
    assert set(np.unique(got)) == {"sf", "comp", "seyfert", "liner", "ambiguous"}


def test_vectorised_and_scalar_calls_agree():
    rng = np.random.default_rng(2)
    pts = rng.uniform([-2, -1.5, -1.5, -2.5], [1, 1.5, 1, 0.5], size=(300, 4))
    pts[::17, 0] = np.nan
    pts[::23, 3] = np.nan
    nii, y, sii, oi = pts.T
    grid = bpt.classify(nii.reshape(15, 20), y.reshape(15, 20), sii.reshape(15, 20), oi.reshape(15, 20))
    assert grid.shape == (15, 20)
    flat = grid.ravel()
    for i in range(len(pts)):
        one = bpt.classify(nii[i], y[i], sii[i], oi[i])
        assert isinstance(one, str)
        assert one == flat[i]
        assert bpt.classify_nii(nii[i], y[i]) == bpt.classify_nii(nii, y)[i]
        assert bpt.classify_sii(sii[i], y[i]) == bpt.classify_sii(sii, y)[i]
        assert bpt.classify_oi(oi[i], y[i]) == bpt.classify_oi(oi, y)[i]
    # Broadcasting: one [OIII]/Hb for a row of [NII]/Ha.
    row = bpt.classify_nii(np.array([NII_SF, NII_COMP, NII_AGN]), SF_Y)
    assert row.tolist() == ["sf", "comp", bpt.classify_nii(NII_AGN, SF_Y)]


def test_class_codes_round_trip():
    assert bpt.CLASSES == ("sf", "comp", "seyfert", "liner", "ambiguous", "invalid")
    assert sorted(bpt.CLASS_CODES.values()) == list(range(len(bpt.CLASSES)))
    names = np.array([["sf", "liner"], ["invalid", "ambiguous"]])
    codes = bpt.class_codes(names)
    assert codes.dtype == np.int8 and codes.shape == (2, 2)
    assert bpt.class_names(codes).tolist() == names.tolist()
    assert bpt.class_names(np.int8(bpt.CLASS_CODES["comp"])) == "comp"
    with pytest.raises(ValueError):
        bpt.class_names(np.array([len(bpt.CLASSES)]))
    with pytest.raises(ValueError):
        bpt.class_codes(["agn"])


# --------------------------------------------------------------------------- log_ratios


def _fluxes(value=1.0, **override):
    f = {name: np.full(4, float(value)) for name in BPT_LINES.values()}
    for k, v in override.items():
        f[BPT_LINES[k]] = np.asarray(v, dtype=float)
    return f


def test_log_ratios_values():
    f = _fluxes(ha=[10.0] * 4, hb=[2.0] * 4, nii=[5.0] * 4, oiii=[6.0] * 4, oi=[0.5] * 4,
                sii_a=[1.0] * 4, sii_b=[2.0] * 4)
    r = bpt.log_ratios(f)
    assert set(r) == {"log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha"}
    np.testing.assert_allclose(r["log_nii_ha"], np.log10(0.5))
    np.testing.assert_allclose(r["log_oiii_hb"], np.log10(3.0))
    np.testing.assert_allclose(r["log_sii_ha"], np.log10(0.3))
    np.testing.assert_allclose(r["log_oi_ha"], np.log10(0.05))
    scalar = bpt.log_ratios({k: float(v[0]) for k, v in f.items()})
    assert isinstance(scalar["log_nii_ha"], float) and scalar["log_nii_ha"] == pytest.approx(np.log10(0.5))


def test_log_ratios_bad_flux_is_nan():
    f = _fluxes(10.0, nii=[5.0, 0.0, -1.0, np.nan], ha=[10.0, 10.0, 10.0, 10.0])
    r = bpt.log_ratios(f)
    assert np.isfinite(r["log_nii_ha"][0]) and np.all(np.isnan(r["log_nii_ha"][1:]))
    f = _fluxes(10.0, ha=[10.0, 0.0, -3.0, np.inf])
    r = bpt.log_ratios(f)
    for key in ("log_nii_ha", "log_sii_ha", "log_oi_ha"):
        assert np.isfinite(r[key][0]) and np.all(np.isnan(r[key][1:])), key
    assert np.all(np.isfinite(r["log_oiii_hb"]))


def test_log_ratios_snr_cut():
    f = _fluxes(10.0)
    sigma = np.array([10.0 / 2.9, 10.0 / 3.1, 10.0 / 50.0, 1.0])  # S/N 2.9, 3.1, 50, 10
    iv = {name: np.full(4, 1e6) for name in f}
    iv[BPT_LINES["nii"]] = 1.0 / sigma**2
    r = bpt.log_ratios(f, iv)
    assert np.isnan(r["log_nii_ha"][0]) and np.all(np.isfinite(r["log_nii_ha"][1:]))
    # Per-line thresholds: only [NII] gets the strict cut.
    r = bpt.log_ratios(f, iv, snr={BPT_LINES["nii"]: 20.0})
    assert np.isnan(r["log_nii_ha"][:2]).all() and np.isfinite(r["log_nii_ha"][2])
    assert np.isnan(r["log_nii_ha"][3])
    assert np.all(np.isfinite(r["log_oiii_hb"]))
    # No ivar, no cut.
    assert np.all(np.isfinite(bpt.log_ratios(f)["log_nii_ha"]))
    # A bad ivar invalidates the line.
    iv[BPT_LINES["nii"]] = np.array([0.0, -1.0, np.nan, 1.0])
    r = bpt.log_ratios(f, iv)
    assert np.isnan(r["log_nii_ha"][:3]).all() and np.isfinite(r["log_nii_ha"][3])


def test_log_ratios_sii_uses_the_snr_of_the_sum():
    f = _fluxes(10.0)
    iv = {name: np.full(4, 1e6) for name in f}
    # Each doublet line at S/N 2.5: too weak alone, the sum has S/N 2.5 * sqrt(2) > 3.
    for k in ("sii_a", "sii_b"):
        iv[BPT_LINES[k]] = np.full(4, (2.5 / 10.0) ** 2)
    r = bpt.log_ratios(f, iv)
    np.testing.assert_allclose(r["log_sii_ha"], np.log10(20.0 / 10.0))
    r = bpt.log_ratios(f, iv, snr=3.6)
    assert np.all(np.isnan(r["log_sii_ha"]))
    # A missing doublet member or a bad ivar on it invalidates [SII].
    g = dict(f)
    del g[BPT_LINES["sii_b"]]
    assert np.all(np.isnan(bpt.log_ratios(g)["log_sii_ha"]))
    iv[BPT_LINES["sii_b"]] = np.array([0.0, 1.0, 1.0, 1.0])
    r = bpt.log_ratios(f, iv)
    assert np.isnan(r["log_sii_ha"][0]) and np.all(np.isfinite(r["log_sii_ha"][1:]))


def test_log_ratios_missing_lines_are_nan():
    f = _fluxes(10.0)
    del f[BPT_LINES["oi"]]
    r = bpt.log_ratios(f)
    assert r["log_oi_ha"].shape == (4,) and np.all(np.isnan(r["log_oi_ha"]))
    assert np.all(np.isfinite(r["log_nii_ha"]))


# --------------------------------------------------------------------------- cubes

LINES = ("Hb-4862", "OIII-4960", "OIII-5008", "OI-6302", "Ha-6564", "NII-6585", "SII-6718", "SII-6732")

# log ratios (nii/ha, oiii/hb, sii/ha, oi/ha) of a Seyfert nucleus and a star-forming disk
SEYFERT = (0.0, 0.8, -0.2, -1.0)
STARFORMING = (-0.6, -0.3, -0.5, -1.6)


def _cube(n=11, ha_core=10.0, ha_disk=100.0):
    """A Seyfert core of radius 3 px in a brighter star-forming disk, corners uncovered.

    Returns flux, ivar, mask and the good core and good footprint (boolean maps).
    """
    yy, xx = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2
    r = np.hypot(xx - c, yy - c)
    core = r <= 3.0
    covered = r <= c + 0.5
    ha = np.where(core, ha_core, ha_disk)
    ratios = np.where(core[None], np.array(SEYFERT)[:, None, None], np.array(STARFORMING)[:, None, None])
    nii, oiii_hb, sii, oi = 10.0 ** ratios
    hb = ha / 2.86
    maps = {
        "Ha-6564": ha, "Hb-4862": hb, "NII-6585": nii * ha, "OIII-5008": oiii_hb * hb,
        "OIII-4960": oiii_hb * hb / 2.98, "OI-6302": oi * ha,
        "SII-6718": 0.55 * sii * ha, "SII-6732": 0.45 * sii * ha,
    }
    flux = np.stack([maps[name] for name in LINES])
    ivar = np.full_like(flux, 1e4)
    mask = np.broadcast_to(~covered, flux.shape).copy()
    ivar[mask] = 0.0
    # Two flagged spaxels (one in the core, one in the disk) with fine-looking ivar.
    flagged = np.zeros_like(core)
    flagged[5, 7] = flagged[1, 5] = True
    mask[:, flagged] = True
    # Garbage under the mask: it must never leak into any sum or class.
    flux[mask] = 1e6
    flux[LINES.index("OIII-5008"), flagged] = 1e9
    return flux, ivar, mask, core & ~flagged, covered & ~flagged, (c, c)


def _log_sum(flux, region, num, den):
    i, j = LINES.index(num), LINES.index(den)
    return np.log10(flux[i][region].sum() / flux[j][region].sum())


def test_spaxel_classes_on_a_constructed_cube():
    flux, ivar, mask, core, covered, _ = _cube()
    codes = bpt.spaxel_classes(flux, ivar, mask, LINES)
    assert codes.dtype == np.int8 and codes.shape == core.shape
    names = bpt.class_names(codes)
    assert np.all(names[core] == "seyfert")
    assert np.all(names[covered & ~core] == "sf")
    assert np.all(names[~covered] == "invalid")
    assert names[5, 7] == names[1, 5] == "invalid"  # flagged
    # Low S/N in [OIII] in one spaxel makes that spaxel invalid.
    ivar[LINES.index("OIII-5008"), 5, 0] = 1e-8
    assert bpt.class_names(bpt.spaxel_classes(flux, ivar, mask, LINES))[5, 0] == "invalid"
    # Without ivar no S/N cut is applied.
    assert bpt.class_names(bpt.spaxel_classes(flux, None, mask, LINES))[5, 0] == "sf"


def test_galaxy_bpt_aperture_versus_total():
    flux, ivar, mask, core, covered, center = _cube()
    out = bpt.galaxy_bpt(flux, ivar, mask, LINES, center=center, pixscale=0.5, aperture=1.5)
    expected_keys = {
        "log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha", "bpt_nii", "bpt_sii", "bpt_oi",
        "bpt_class", "bpt_class_total", "frac_sf", "frac_comp", "frac_seyfert", "frac_liner",
        "frac_ambiguous",
    }
    assert set(out) == expected_keys
    # 1.5 arcsec at 0.5 arcsec/px is the 3 px core.
    assert out["log_nii_ha"] == pytest.approx(_log_sum(flux, core, "NII-6585", "Ha-6564"))
    assert out["log_oiii_hb"] == pytest.approx(_log_sum(flux, core, "OIII-5008", "Hb-4862"))
    assert out["log_oi_ha"] == pytest.approx(_log_sum(flux, core, "OI-6302", "Ha-6564"))
    sii = flux[LINES.index("SII-6718")][core].sum() + flux[LINES.index("SII-6732")][core].sum()
    assert out["log_sii_ha"] == pytest.approx(np.log10(sii / flux[LINES.index("Ha-6564")][core].sum()))
    assert out["bpt_class"] == "seyfert"
    assert (out["bpt_nii"], out["bpt_sii"], out["bpt_oi"]) == ("seyfert", "seyfert", "seyfert")
    # Over the whole footprint the bright star-forming disk dominates the sums.
    total = bpt.classify(
        _log_sum(flux, covered, "NII-6585", "Ha-6564"), _log_sum(flux, covered, "OIII-5008", "Hb-4862"),
        np.log10((flux[LINES.index("SII-6718")][covered].sum() + flux[LINES.index("SII-6732")][covered].sum())
                 / flux[LINES.index("Ha-6564")][covered].sum()),
        _log_sum(flux, covered, "OI-6302", "Ha-6564"),
    )
    assert out["bpt_class_total"] == total == "sf"
    assert out["frac_seyfert"] == pytest.approx(core.sum() / covered.sum())
    assert out["frac_sf"] == pytest.approx((covered & ~core).sum() / covered.sum())
    assert out["frac_comp"] == out["frac_liner"] == out["frac_ambiguous"] == 0.0
    # Without ivar there is no S/N cut; these lines are bright, so nothing changes.
    no_ivar = bpt.galaxy_bpt(flux, None, mask, LINES, center=center, pixscale=0.5, aperture=1.5)
    assert no_ivar == pytest.approx(out)
    # An aperture that covers everything gives the total.
    wide = bpt.galaxy_bpt(flux, ivar, mask, LINES, center=center, pixscale=0.5, aperture=100.0)
    assert wide["bpt_class"] == out["bpt_class_total"]
    # An off-centre aperture on the disk sees star formation.
    edge = bpt.galaxy_bpt(flux, ivar, mask, LINES, center=(center[0], 0.0), pixscale=0.5, aperture=0.5)
    assert edge["bpt_class"] == "sf"
    # A tiny aperture still holds the central spaxel.
    off = (center[0] + 0.3, center[1] - 0.2)
    tiny = bpt.galaxy_bpt(flux, ivar, mask, LINES, center=off, pixscale=0.5, aperture=0.01)
    assert tiny["bpt_class"] == "seyfert"


def test_galaxy_bpt_snr_of_the_sums():
    flux, ivar, mask, core, covered, center = _cube()
    oi = LINES.index("OI-6302")
    # Per-spaxel S/N 0.5 in [OI]: sum over n spaxels has S/N 0.5 * sqrt(n).
    ivar[oi] = np.where(covered, (0.5 / flux[oi]) ** 2, 0.0)
    out = bpt.galaxy_bpt(flux, ivar, mask, LINES, center=center, pixscale=0.5, aperture=1.5)
    assert 0.5 * np.sqrt(core.sum()) >= 2.0  # so the aperture sum passes a cut of 2 ...
    assert 0.5 * np.sqrt(core.sum()) < 3.0  # ... and fails the default 3
    assert math.isnan(out["log_oi_ha"]) and out["bpt_oi"] == "invalid"
    assert out["bpt_class"] == "seyfert"  # [NII] and [SII] still decide
    low = bpt.galaxy_bpt(flux, ivar, mask, LINES, center=center, pixscale=0.5, aperture=1.5,
                         snr={"OI-6302": 2.0})
    assert low["bpt_oi"] == "seyfert" and math.isfinite(low["log_oi_ha"])


def test_galaxy_bpt_missing_lines():
    flux, ivar, mask, core, covered, center = _cube()
    keep = [i for i, name in enumerate(LINES) if name != "OI-6302"]
    lines = [LINES[i] for i in keep]
    out = bpt.galaxy_bpt(flux[keep], ivar[keep], mask[keep], lines, center=center, pixscale=0.5)
    assert math.isnan(out["log_oi_ha"]) and out["bpt_oi"] == "invalid"
    assert out["bpt_class"] == "seyfert" and out["bpt_class_total"] == "sf"

    keep = [i for i, name in enumerate(LINES) if name != "Hb-4862"]
    lines = [LINES[i] for i in keep]
    out = bpt.galaxy_bpt(flux[keep], ivar[keep], mask[keep], lines, center=center, pixscale=0.5)
    assert math.isnan(out["log_oiii_hb"])
    assert out["bpt_class"] == out["bpt_class_total"] == out["bpt_nii"] == "invalid"
    assert out["frac_sf"] == out["frac_seyfert"] == 0.0  # good Ha spaxels, all invalid

    keep = [i for i, name in enumerate(LINES) if name != "Ha-6564"]
    lines = [LINES[i] for i in keep]
    out = bpt.galaxy_bpt(flux[keep], ivar[keep], mask[keep], lines, center=center, pixscale=0.5)
    assert out["bpt_class"] == "invalid" and math.isnan(out["frac_sf"])


def test_galaxy_bpt_rejects_mismatched_shapes():
    flux, ivar, mask, *_ = _cube()
    with pytest.raises(ValueError, match="lines"):
        bpt.galaxy_bpt(flux, ivar, mask, LINES[:-1], center=(5, 5), pixscale=0.5)
    with pytest.raises(ValueError, match="mask"):
        bpt.galaxy_bpt(flux, ivar, mask[:, :-1], LINES, center=(5, 5), pixscale=0.5)


# --------------------------------------------------------------------------- real DAPall


def _reference_class(nii, oiii, sii, oi):
    """Kewley et al. 2006 written out for one galaxy, straight from the equations."""
    if any(math.isnan(v) for v in (nii, oiii, sii)):
        return "invalid"

    def nii_side():
        if nii < 0.05 and oiii < 0.61 / (nii - 0.05) + 1.30:
            return "sf"
        if nii < 0.47 and oiii < 0.61 / (nii - 0.47) + 1.19:
            return "comp"
        return "agn"

    def side(x, a, x0, b, slope, icpt):
        if x < x0 and oiii < a / (x - x0) + b:
            return "sf"
        return "seyfert" if oiii > slope * x + icpt else "liner"

    votes = [side(sii, 0.72, 0.32, 1.30, 1.89, 0.76)]
    if not math.isnan(oi):
        votes.append(side(oi, 0.73, -0.59, 1.33, 1.18, 1.30))
    n = nii_side()
    if n in ("sf", "comp") and all(v == "sf" for v in votes):
        return n
    if n == "agn" and votes[0] != "sf" and all(v == votes[0] for v in votes):
        return votes[0]
    return "ambiguous"


@pytest.mark.skipif(not DAPALL.exists(), reason=f"real DAPall subset not found at {DAPALL} (../shared is absent)")
def test_dapall_subset_classes_follow_the_equations():
    from astropy.io import fits

    with fits.open(DAPALL) as hdul:
        table = hdul[1].data
        columns = set(table.columns.names)
        cen = np.asarray(table["EMLINE_GFLUX_CEN"], dtype=float)
        # The DAPall has no flux errors for these apertures in this subset; use them if present.
        ivar_col = "EMLINE_GFLUX_CEN_IVAR" if "EMLINE_GFLUX_CEN_IVAR" in columns else None
        cen_ivar = np.asarray(table[ivar_col], dtype=float) if ivar_col else None
    assert cen.shape[1] == len(DR17_CHANNELS)
    channel = {name: i for i, name in enumerate(DR17_CHANNELS)}
    flux = {name: cen[:, channel[name]] for name in BPT_LINES.values()}
    ivar = None if cen_ivar is None else {name: cen_ivar[:, channel[name]] for name in BPT_LINES.values()}
    r = bpt.log_ratios(flux, ivar)

    def direct(num, den):
        out = np.full(len(cen), np.nan)
        for i in range(len(cen)):
            a, b = float(num[i]), float(den[i])
            if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b):
                out[i] = math.log10(a / b)
        return out

    f = {role: flux[name] for role, name in BPT_LINES.items()}
    if ivar is None:
        np.testing.assert_allclose(r["log_nii_ha"], direct(f["nii"], f["ha"]), equal_nan=True)
        np.testing.assert_allclose(r["log_oiii_hb"], direct(f["oiii"], f["hb"]), equal_nan=True)
        np.testing.assert_allclose(r["log_oi_ha"], direct(f["oi"], f["ha"]), equal_nan=True)
        both = (f["sii_a"] > 0) & (f["sii_b"] > 0)  # the -999 sentinels must not enter a sum
        np.testing.assert_allclose(r["log_sii_ha"][both], direct(f["sii_a"] + f["sii_b"], f["ha"])[both])

    got = bpt.classify(r["log_nii_ha"], r["log_oiii_hb"], r["log_sii_ha"], r["log_oi_ha"])
    ref = [_reference_class(*(float(r[k][i]) for k in bpt.RATIOS)) for i in range(len(cen))]
    assert got.tolist() == ref
    # The sentinel -999 fluxes in the catalogue end up invalid, never classified.
    sentinel = np.any(cen[:, [channel[n] for n in ("Hb-4862", "OIII-5008", "Ha-6564", "NII-6585")]] <= -999, axis=1)
    assert np.all(got[sentinel] == "invalid")
    # Real galaxies populate every class of the scheme.
    assert set(got.tolist()) >= {"sf", "comp", "seyfert", "liner", "ambiguous"}
    nii_only = bpt.classify_nii(r["log_nii_ha"], r["log_oiii_hb"])
    assert np.all(nii_only[got == "sf"] == "sf")
    assert np.all(nii_only[got == "comp"] == "comp")
