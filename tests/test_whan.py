"""The Halpha equivalent width: read from MAPS files, written by the synthetic survey, the WHAN classes."""
from __future__ import annotations

import gzip
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


#: sha256 of the bytes of every extension before the equivalent widths (PRIMARY ... EMLINE_GFLUX_MASK,
#: uncompressed) of galaxies written before the equivalent widths existed: (index, seed, class, release, sha256).
OLD_EXTENSIONS = [
    (0, 1, "sf", "dr15", "f74576f7d6a6dbc9e58446f0c663df4ba6d66b974708fc77a840bd49d05b0ed8"),
    (5, 1, "retired", "dr15", "73a57dfa1f668486d0aa150bddc7baed0472251ed22067cae7c408a135a05b53"),
    (8, 1, "seyfert", "dr15", "170b66a589ab6cfddd4675175d88bebb27808fbe9681cab216fc062515d17d4e"),
    (0, 7, "cones", "dr17", "6cfe0e467f2958d567e81fde71998d79213aada4fd89e6f07f476a52baac0350"),
    (20, 7, "blueberry", "dr17", "d1d3d4581d889aa729dfb7bf224fb9cc76308b6826e8db006f2f54ebab2bf1ec"),
]


@pytest.mark.parametrize("index, seed, cls, release, sha", OLD_EXTENSIONS)
def test_the_existing_extensions_stay_byte_identical(tmp_path, index, seed, cls, release, sha):
    """The equivalent widths draw from a stream of their own: the survey's other bytes do not move."""
    path = make_galaxy(index, seed, cls, release).write(tmp_path / "g.fits.gz")
    raw = gzip.decompress(path.read_bytes())
    with fits.open(path) as hdul:
        assert [h.name for h in hdul][-3:] == list(EW_EXTENSIONS)
        end = hdul[EW_EXTENSIONS[0]].fileinfo()["hdrLoc"]
    assert hashlib.sha256(raw[:end]).hexdigest() == sha
