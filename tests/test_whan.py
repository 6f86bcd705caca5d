"""The Halpha equivalent width: read from MAPS files, written by the synthetic survey, the WHAN classes."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from core.maps import EW_EXTENSIONS, read_maps
from core.synth.galaxy import make_galaxy
from core.whan import CLASSES, EW_RETIRED, cidfernandes11_ew_ha, cidfernandes11_nii_ha, classify_whan, galaxy_whan

HA, NII = "Ha-6564", "NII-6585"


def test_whan_classes_on_either_side_of_each_line():
    # Cid Fernandes et al. 2011, section 6: one point inside each class, and the boundaries.
    x = np.array([-0.6, 0.0, 0.0, 0.0, -0.6, 0.0, np.nan, 0.0, np.nan])
    ew = np.array([20.0, 10.0, 4.0, 1.0, 0.3, 2.9, 10.0, np.nan, 1.0])
    ew_nii = np.array([5.0, 5.0, 2.0, 1.0, 0.2, 2.0, 2.0, 1.0, 1.0])
    got = classify_whan(x, ew, ew_nii)
    assert list(got) == ["SF", "sAGN", "wAGN", "retired", "passive", "retired", "unknown", "unknown", "retired"]
    assert set(got) <= set(CLASSES)
    assert classify_whan(0.0, 6.0) == "sAGN" and classify_whan(0.0, 3.0) == "wAGN" and classify_whan(-0.5, 3.0) == "SF"
    assert classify_whan(0.0, 0.4) == "passive"  # without EW([NII]): on Halpha alone
    assert classify_whan(0.0, 0.4, 0.8) == "retired"  # [NII] still has an equivalent width
    assert isinstance(classify_whan(-0.5, 30.0), str)


def test_whan_lines():
    assert cidfernandes11_nii_ha(-0.3) and not cidfernandes11_nii_ha(-0.5) and not cidfernandes11_nii_ha(np.nan)
    np.testing.assert_array_equal(cidfernandes11_ew_ha(np.array([-1.0, 0.2])), [3.0, 6.0])
    assert np.isnan(cidfernandes11_ew_ha(np.nan))


def test_galaxy_whan_without_equivalent_widths_is_unknown():
    out = galaxy_whan(None, [HA, NII], (5, 5), 0.5, log_nii_ha=-0.5)
    assert np.isnan(out["ew_ha_cen"]) and np.isnan(out["ew_nii_cen"]) and out["whan_class"] == "unknown"


def test_equivalent_widths_read_from_a_real_maps_file(real_maps_file):
    g = read_maps(real_maps_file, lines=(HA, NII))
    assert g.ew is not None and g.ew.shape == g.flux.shape and g.ew.dtype == np.float32
    with fits.open(real_maps_file) as hdul:
        names = [hdul["EMLINE_GEW"].header[f"C{i + 1:02d}"] for i in range(hdul["EMLINE_GEW"].data.shape[0])]
        raw = hdul["EMLINE_GEW"].data[names.index(HA)]
        bad = (hdul["EMLINE_GEW_MASK"].data[names.index(HA)] & (1 << 30)) != 0  # DONOTUSE
    good = np.isfinite(g.ew[0])
    np.testing.assert_array_equal(g.ew[0][good], raw[good])  # found by channel name, values as in the file
    assert not good[bad].any()
    out = galaxy_whan(g.ew, g.lines, g.center, g.pixscale, log_nii_ha=-0.4)
    assert 3 < out["ew_ha_cen"] < 300 and out["whan_class"] in CLASSES


def test_synthetic_galaxies_carry_equivalent_widths_and_retired_ones_stay_below_3_angstrom(tmp_path):
    for index, cls in enumerate(("retired", "sf", "retired", "seyfert")):
        galaxy = make_galaxy(index, 11, cls)
        path = galaxy.write(tmp_path / f"g{index}.fits.gz")
        with fits.open(path) as hdul:
            assert [h.name for h in hdul][-3:] == list(EW_EXTENSIONS)
            assert hdul["EMLINE_GEW"].header["BUNIT"] == "ang"
        g = read_maps(path, lines=(HA, NII))
        out = galaxy_whan(g.ew, g.lines, g.center, g.pixscale, log_nii_ha=galaxy.truth["cen_log_nii_ha"])
        assert out["ew_ha_cen"] == pytest.approx(galaxy.truth["ew_ha_cen"], rel=0.25)
        if cls == "retired":
            assert out["ew_ha_cen"] < EW_RETIRED and out["whan_class"] in ("retired", "passive")
        else:
            assert out["ew_ha_cen"] > EW_RETIRED and out["whan_class"] in ("SF", "sAGN", "wAGN")


#: Every extension before the equivalent widths (PRIMARY ... EMLINE_GFLUX_MASK) of galaxies written before the
#: equivalent widths existed, as (name, sha256 of its header cards, sum and sum of squares of its data):
#: (index, seed, class, release, extensions). Not the bytes: the fluxes go through BLAS, whose kernels differ in the
#: last bit from one CPU to another (OpenBLAS's AVX-512 kernels against its AVX2 ones: 1e-9 of the sums), while a
#: shared random stream would move every value.
OLD_EXTENSIONS = [
    (0, 1, 'sf', 'dr15', [
        ('PRIMARY', 'fa7265810950878b', 0.0, 0.0),
        ('SPX_ELLCOO', 'b9765500807851a2', 763096.7050504833, 156345669.82229578),
        ('SPX_SNR', 'd3218b7594364e63', 10213.272566399537, 104227.3461298389),
        ('BINID', '91683b4671e968b9', 9020035.0, 11440702965.0),
        ('EMLINE_GFLUX', '1b0fe6e7f4168bed', 2219.3650593591674, 1252.1188979741764),
        ('EMLINE_GFLUX_IVAR', '26fba23559484268', 4599280.365692139, 566951019.6238393),
        ('EMLINE_GFLUX_MASK', 'c1b27b87e20f750e', 45898168463510.0, 4.928278290205334e+22),
    ]),
    (5, 1, 'retired', 'dr15', [
        ('PRIMARY', '1dab1230f2e7ae42', 0.0, 0.0),
        ('SPX_ELLCOO', 'f99ed94f9947323b', 336999.04842209816, 72657482.38756992),
        ('SPX_SNR', 'fd68ca4f1ddeb760', 12208.853479370475, 362760.7307380568),
        ('BINID', 'a491eed68a9ad643', 1373160.0, 682246280.0),
        ('EMLINE_GFLUX', 'f42ce641ed213372', 1292.3640175447672, 1100.4289069191998),
        ('EMLINE_GFLUX_IVAR', '841bd54d0569bbcd', 3718976.0339050293, 950692866.2750674),
        ('EMLINE_GFLUX_MASK', '257b86ce1e424d40', 24118388914510.0, 2.58969229735357e+22),
    ]),
    (8, 1, 'seyfert', 'dr15', [
        ('PRIMARY', '6a8a55d90c010ff4', 0.0, 0.0),
        ('SPX_ELLCOO', '44003673d0a6cde4', 203668.03624123335, 41732360.6251663),
        ('SPX_SNR', '6e8b5d9f176f8bbf', 5175.398051202297, 103901.03013842633),
        ('BINID', 'a23731551ad0859f', 351145.0, 88952615.0),
        ('EMLINE_GFLUX', '9166cc55971ebb00', 3858.1949954647243, 16913.77937687128),
        ('EMLINE_GFLUX_IVAR', '13a7f13041fb185e', 552258.3575286865, 41680809.684378706),
        ('EMLINE_GFLUX_MASK', '2c4f8cb183e0a8f4', 15283641184614.0, 1.64106847839292e+22),
    ]),
    (0, 7, 'cones', 'dr17', [
        ('PRIMARY', 'ddd3aca1aad44dad', 0.0, 0.0),
        ('SPX_ELLCOO', '620525fa5506872f', 1008144.3364454266, 222391425.23732576),
        ('SPX_SNR', '79a18fcf7a89df06', 33381.79277727008, 555829.324969492),
        ('BINID', 'c0b7b3cc495a6443', 17497220.0, 30893321740.0),
        ('EMLINE_GFLUX', '0cec9853aee22e98', 63629.92814226961, 594534.5766407927),
        ('EMLINE_GFLUX_IVAR', '4bd33c67e9d3daeb', 46663893.10202026, 25939330374.581886),
        ('EMLINE_GFLUX_MASK', 'e5465d48ee74cb84', 95342905518035.0, 1.0237366555122415e+23),
    ]),
    (20, 7, 'blueberry', 'dr17', [
        ('PRIMARY', '6805f51ec60b46fe', 0.0, 0.0),
        ('SPX_ELLCOO', '7216127aeedb1a85', 228397.9815673828, 41846568.76483835),
        ('SPX_SNR', 'e08ac15b28ee6896', 3819.369059000895, 147022.60287982778),
        ('BINID', 'f0615be86082e8d5', 351145.0, 88952615.0),
        ('EMLINE_GFLUX', '48d05002ba1a85ca', 3782.8511224574527, 55665.71764381809),
        ('EMLINE_GFLUX_IVAR', '9da68e4ad9680b7f', 3568456.5430755615, 1074965800.0011888),
        ('EMLINE_GFLUX_MASK', 'f891572c46d76b07', 24314883879755.0, 2.6107907610796462e+22),
    ]),
]


@pytest.mark.parametrize("index, seed, cls, release, extensions", OLD_EXTENSIONS)
def test_the_existing_extensions_stay_the_same(tmp_path, index, seed, cls, release, extensions):
    """The equivalent widths draw from a stream of their own: the survey's other extensions do not move."""
    path = make_galaxy(index, seed, cls, release).write(tmp_path / "g.fits.gz")
    with fits.open(path) as hdul:
        assert [h.name for h in hdul][-3:] == list(EW_EXTENSIONS)
        found = []
        for hdu in hdul[:len(extensions)]:
            cards = "".join(str(c) for c in hdu.header.cards if c.keyword not in ("CHECKSUM", "DATASUM"))
            data = np.zeros(0) if hdu.data is None else np.asarray(hdu.data, np.float64)
            found.append((hdu.name, hashlib.sha256(cards.encode()).hexdigest()[:16], np.nansum(data),
                          np.nansum(data**2)))
        assert hdul[len(extensions)].name == EW_EXTENSIONS[0]
    assert [f[:2] for f in found] == [e[:2] for e in extensions]
    np.testing.assert_allclose([f[2:] for f in found], [e[2:] for e in extensions], rtol=1e-6)
