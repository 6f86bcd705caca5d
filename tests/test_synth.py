"""The synthetic survey: real DAP-format files, deterministic, physically sound, as configured."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from core.bpt import classify, galaxy_bpt, kewley01_nii
from core.io import sha256_file
from core.lines import DR15_CHANNELS, DR17_CHANNELS
from core.maps import read_maps
from core.synth import (
    ANOMALY_KINDS, APERTURE, CASE_B, CENTRAL_BPT, DOUBLETS, NORMAL_CLASSES, TEMPLATES_PATH, SynthConfig,
    assign_classes, class_counts, derive_templates, ellcoo, generate_survey, load_templates, make_galaxy,
    write_maps_file,
)
from train.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_MAPS = SHARED / "manga" / "manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz"
DAPALL = SHARED / "catalogs" / "dapall-dr17-subset664.fits"
EXTENSIONS = ["PRIMARY", "SPX_ELLCOO", "SPX_SNR", "BINID", "EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK"]
PRIMARY_KEYS = ["PLATEIFU", "MANGAID", "OBJRA", "OBJDEC", "IFURA", "IFUDEC", "SCINPVEL", "Z", "DAPTYPE",
                "VERSDAP", "MASKNAME", "ECOOPA", "ECOOELL", "REFF", "RFWHM"]
NOCOV, LOWCOV, DEADFIBER, FORESTAR, UNRELIABLE, DONOTUSE = 0, 1, 2, 3, 5, 30
N_SURVEY, SEED = 24, 11


def idx(name, channels=DR15_CHANNELS):
    return channels.index(name)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "two-workers"
    truth = generate_survey(out, N_SURVEY, SEED, workers=2, progress=False)
    return out, truth


# ------------------------------------------------------------------ the MAPS writer


def _toy_maps(channels=DR15_CHANNELS, ny=30, nx=34, seed=0):
    rng = np.random.default_rng(seed)
    flux = rng.normal(1.0, 0.3, (len(channels), ny, nx)).astype(np.float32)
    ivar = rng.uniform(10, 20, flux.shape).astype(np.float32)
    mask = np.zeros(flux.shape, np.int32)
    mask[:, :, :4] = (1 << NOCOV) | (1 << DONOTUSE)
    mask[3, 10, 10] |= 1 << UNRELIABLE
    return flux, ivar, mask


@pytest.mark.parametrize("name", ["manga-1-2-MAPS-TOY.fits.gz", "manga-1-2-MAPS-TOY.fits"])
def test_writer_makes_a_dap_maps_file_that_plain_astropy_reads(tmp_path, name):
    flux, ivar, mask = _toy_maps()
    path = write_maps_file(tmp_path / name, galaxy_id="8000-1901", mangaid="9-1", ra=150.25, dec=-2.5,
                           z=0.031, channels=DR15_CHANNELS, flux=flux, ivar=ivar, mask=mask,
                           pa=30.0, ellipticity=0.2, reff=4.0, extra_header={"RFWHM": 2.5})
    with open(path, "rb") as fh:
        assert (fh.read(2) == b"\x1f\x8b") == name.endswith(".gz")
    with fits.open(path) as hdul:
        hdul.verify("exception")  # standard-conforming FITS, not merely readable
        assert [h.name for h in hdul] == EXTENSIONS
        head = hdul[0].header
        for key in PRIMARY_KEYS:
            assert key in head, key
        assert head["PLATEIFU"] == "8000-1901" and head["MANGAID"] == "9-1"
        assert head["PLATEID"] == 8000 and head["IFUDSGN"] == 1901
        assert head["SCINPVEL"] == pytest.approx(299792.458 * 0.031)
        assert head["Z"] == pytest.approx(0.031) and head["RFWHM"] == 2.5
        g = hdul["EMLINE_GFLUX"].header
        assert [g[f"C{i + 1:02d}"] for i in range(len(DR15_CHANNELS))] == list(DR15_CHANNELS)
        assert g["BUNIT"] == "1E-17 erg/s/cm^2/spaxel"
        assert hdul["EMLINE_GFLUX_MASK"].header["MASKNAME"] == "MANGA_DAPPIXMASK"
        np.testing.assert_array_equal(hdul["EMLINE_GFLUX"].data, flux)
        np.testing.assert_array_equal(hdul["EMLINE_GFLUX_IVAR"].data, ivar)
        np.testing.assert_array_equal(hdul["EMLINE_GFLUX_MASK"].data, mask)
        assert hdul["EMLINE_GFLUX_MASK"].data.dtype.kind == "i"
        binid = hdul["BINID"].data
        assert binid.shape == (5, 30, 34)
        assert np.all(binid[:, :, :4] == -1) and np.array_equal(np.sort(binid[0][binid[0] >= 0]), np.arange(30 * 30))
        # The celestial WCS puts the IFU centre on the DAP's centre pixel; RA grows to the left.
        wcs = WCS(g).celestial
        ra, dec = wcs.pixel_to_world_values(34 // 2, 30 // 2)
        assert (ra, dec) == (pytest.approx(150.25), pytest.approx(-2.5))
        ra_left, _ = wcs.pixel_to_world_values(34 // 2 - 1, 30 // 2)
        assert (ra_left - 150.25) * math.cos(math.radians(2.5)) * 3600 == pytest.approx(0.5, rel=1e-3)
        radius = hdul["SPX_ELLCOO"].data[0]
        assert radius[15, 17] == 0 and radius.max() > 10


def test_writer_output_is_reproducible_and_read_by_core_maps(tmp_path):
    flux, ivar, mask = _toy_maps(DR17_CHANNELS)
    kw = dict(galaxy_id="8000-1902", mangaid="9-2", ra=10.0, dec=40.0, z=0.05, channels=DR17_CHANNELS,
              flux=flux, ivar=ivar, mask=mask)
    a = write_maps_file(tmp_path / "a.fits.gz", **kw)
    b = write_maps_file(tmp_path / "b.fits.gz", **kw)
    assert sha256_file(a) == sha256_file(b)
    g = read_maps(a)
    assert g.galaxy_id == "8000-1902" and g.z == pytest.approx(0.05) and g.ra == pytest.approx(10.0)
    assert g.lines[:3] == ("Heta-3836", "NeIII-3869", "Hzet-3890")
    np.testing.assert_array_equal(g.flux[g.lines.index("Ha-6564")], flux[idx("Ha-6564", DR17_CHANNELS)])
    assert g.mask[:, :, :4].all()


def test_writer_rejects_inconsistent_input(tmp_path):
    flux, ivar, mask = _toy_maps()
    kw = dict(galaxy_id="1-2", mangaid="1", ra=0.0, dec=0.0, z=0.0, ivar=ivar, mask=mask)
    with pytest.raises(ValueError, match="flux must be"):
        write_maps_file(tmp_path / "x.fits", channels=DR15_CHANNELS[:-1], flux=flux, **kw)
    with pytest.raises(ValueError, match="unknown emission-line"):
        write_maps_file(tmp_path / "x.fits", channels=("Ha-6564", "Xx-1") + DR15_CHANNELS[2:], flux=flux, **kw)
    with pytest.raises(ValueError, match="differ"):
        write_maps_file(tmp_path / "x.fits", channels=DR15_CHANNELS, flux=flux[:, :-1], **kw)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not REAL_MAPS.is_file(), reason=f"real MaNGA file not found at {REAL_MAPS} (../shared is absent)")
def test_writer_matches_the_layout_of_a_real_dap_file(tmp_path):
    with fits.open(REAL_MAPS) as real:
        flux = real["EMLINE_GFLUX"].data
        ra, dec = real[0].header["OBJRA"], real[0].header["OBJDEC"]
        pa, ell, reff = (real[0].header[k] for k in ("ECOOPA", "ECOOELL", "REFF"))
        path = write_maps_file(tmp_path / "copy.fits.gz", galaxy_id="7815-3702", mangaid="1-113540", ra=ra,
                               dec=dec, z=0.03, channels=DR15_CHANNELS, flux=flux,
                               ivar=real["EMLINE_GFLUX_IVAR"].data, mask=real["EMLINE_GFLUX_MASK"].data,
                               pa=pa, ellipticity=ell, reff=reff)
        with fits.open(path) as ours:
            skip = {"CHECKSUM", "DATASUM", "MJD-OBS", "DATE-OBS", "AUTHOR"}
            for ext in EXTENSIONS[1:]:
                want = set(real[ext].header) - skip
                assert want == set(ours[ext].header) - skip, ext
                for key in ("CRPIX1", "CRPIX2", "PC1_1", "PC2_2", "CTYPE1", "CTYPE2", "C01", "BUNIT", "HDUCLAS2"):
                    if key in real[ext].header:
                        assert ours[ext].header[key] == pytest.approx(real[ext].header[key], rel=1e-5) \
                            if isinstance(real[ext].header[key], float) else ours[ext].header[key] == real[ext].header[key]
            # Same sky position of every spaxel (the real CRVAL is the IFU centre, ~0.01" off OBJRA).
            w_real, w_ours = WCS(real["EMLINE_GFLUX"].header).celestial, WCS(ours["EMLINE_GFLUX"].header).celestial
            a = np.array(w_real.pixel_to_world_values(np.arange(42), np.arange(42)))
            b = np.array(w_ours.pixel_to_world_values(np.arange(42), np.arange(42)))
            assert np.abs(a - b).max() * 3600 < 0.05
    # The elliptical coordinates follow the DAP's convention (0.01" of the real ones).
    radius = ellcoo(42, 42, 0.5, pa, ell, reff)
    with fits.open(REAL_MAPS) as real:
        real_radius = real["SPX_ELLCOO"].data
    assert np.abs(radius[0] - real_radius[0]).max() < 0.01
    far = real_radius[0] > 2
    assert np.abs(((radius[2] - real_radius[2] + 180) % 360 - 180)[far]).max() < 0.5  # the 0.006" centre offset


# ------------------------------------------------------------------ the survey


def test_survey_files_and_truth(survey):
    out, truth = survey
    assert len(truth) == N_SURVEY and truth["galaxy_id"].is_unique
    on_disk = pd.read_csv(out / "truth.csv", dtype={"galaxy_id": str})
    assert list(on_disk["galaxy_id"]) == list(truth["galaxy_id"])
    assert on_disk["truth_anomaly"].dtype == bool
    assert set(truth["truth_class"]) <= set(NORMAL_CLASSES + ANOMALY_KINDS)
    for col in ("n_fibres", "inclination", "pa", "re_arcsec", "bulge_fraction", "a_v", "z", "tpl_log_nii_ha",
                "tpl_log_oiii_hb", "cen_log_nii_ha", "psf_fwhm"):
        assert truth[col].notna().all(), col
    assert set(truth["n_fibres"]) <= {19, 37, 61, 91, 127}
    files = sorted(p.name for p in out.glob("manga-*-MAPS-SYNTH-GAU.fits.gz"))
    assert files == sorted(truth["file"])
    for row in truth.head(4).itertuples():
        with fits.open(out / row.file) as hdul:
            assert [h.name for h in hdul] == EXTENSIONS + ["EMLINE_GEW", "EMLINE_GEW_IVAR", "EMLINE_GEW_MASK"]
            assert hdul[0].header["PLATEIFU"] == row.galaxy_id
            g = hdul["EMLINE_GFLUX"]
            assert g.data.shape == (22, row.map_size, row.map_size)
            assert [g.header[f"C{i + 1:02d}"] for i in range(22)] == list(DR15_CHANNELS)
            assert np.isfinite(g.data).all() and np.isfinite(hdul["EMLINE_GFLUX_IVAR"].data).all()


def test_survey_is_deterministic_whatever_the_workers(survey, tmp_path):
    out, truth = survey
    again = generate_survey(tmp_path / "one-worker", N_SURVEY, SEED, workers=1, progress=False)
    pd.testing.assert_frame_equal(truth, again)
    for name in truth["file"]:
        assert sha256_file(out / name) == sha256_file(tmp_path / "one-worker" / name), name
    other = make_galaxy(0, SEED + 1, truth["truth_class"][0])
    first = make_galaxy(0, SEED, truth["truth_class"][0])
    assert first.flux.shape != other.flux.shape or not np.array_equal(first.flux, other.flux)


def test_dr17_writes_35_channels_in_dr17_order_with_the_same_galaxy(tmp_path):
    g15 = make_galaxy(3, 5, "seyfert", "dr15")
    g17 = make_galaxy(3, 5, "seyfert", "dr17")
    path = g17.write(tmp_path / g17.truth["file"])
    with fits.open(path) as hdul:
        h = hdul["EMLINE_GFLUX"].header
        assert hdul["EMLINE_GFLUX"].data.shape[0] == 35
        assert [h[f"C{i + 1:02d}"] for i in range(35)] == list(DR17_CHANNELS)
    # The same galaxy, only more lines: the noiseless maps of the shared lines agree.
    for name in DR15_CHANNELS:
        np.testing.assert_allclose(g17.model[idx(name, DR17_CHANNELS)], g15.model[idx(name)], rtol=1e-5, atol=1e-7)
    for weak, (strong, ratio) in DOUBLETS.items():
        s = g17.model[idx(strong, DR17_CHANNELS)]
        np.testing.assert_allclose(g17.model[idx(weak, DR17_CHANNELS)], s * ratio, rtol=1e-5)


def test_class_mix_and_anomaly_fraction_as_configured(survey):
    _, truth = survey
    want = class_counts(N_SURVEY)
    got = truth["truth_class"].value_counts().to_dict()
    assert {k: v for k, v in want.items() if v} == got
    assert truth["truth_anomaly"].sum() == round(0.02 * N_SURVEY) == sum(want[k] for k in ANOMALY_KINDS)
    assert (truth["truth_anomaly"] == truth["truth_class"].isin(ANOMALY_KINDS)).all()

    counts = class_counts(2000)
    assert sum(counts.values()) == 2000 and sum(counts[k] for k in ANOMALY_KINDS) == 40
    assert all(abs(counts[k] - 40 / 3) < 1 for k in ANOMALY_KINDS)
    mix = SynthConfig().class_mix
    for name, weight in mix.items():
        assert abs(counts[name] - 1960 * weight / sum(mix.values())) < 1
    assert counts["sf"] > counts["comp"] > counts["seyfert"] and counts["retired"] > counts["liner"]

    config = SynthConfig(anomaly_fraction=0.25, class_mix={"sf": 1, "retired": 1},
                         anomaly_mix={"blueberry": 1, "cones": 0, "offnuclear": 1})
    labels = assign_classes(40, 3, config)
    assert pd.Series(labels).value_counts().to_dict() == {"sf": 15, "retired": 15, "blueberry": 5, "offnuclear": 5}
    assert labels != assign_classes(40, 4, config)
    for bad in (dict(anomaly_fraction=1.5), dict(class_mix={"spiral": 1}), dict(noise=0.0)):
        with pytest.raises(ValueError):
            SynthConfig(**bad)


@pytest.mark.parametrize("cls", NORMAL_CLASSES)
def test_central_fluxes_land_on_the_right_side_of_the_bpt_lines(cls):
    valid = 0
    for i in range(5):
        g = make_galaxy(i, 21, cls)
        centre = (g.flux.shape[2] // 2, g.flux.shape[1] // 2)
        bad = (g.mask != 0) | (g.ivar <= 0)
        clean = galaxy_bpt(g.model, None, bad, g.channels, centre, 0.5, APERTURE)
        assert clean["bpt_class"] == CENTRAL_BPT[cls], (i, clean)
        noisy = galaxy_bpt(g.flux, g.ivar, bad, g.channels, centre, 0.5, APERTURE)
        if noisy["bpt_class"] != "invalid":  # faint retired galaxies can miss the S/N cut
            valid += 1
            assert noisy["bpt_class"] == CENTRAL_BPT[cls], (i, noisy)
        assert g.truth["cen_bpt"] == CENTRAL_BPT[cls]
    assert valid >= 4


def test_balmer_decrement_never_below_case_b():
    ratios, pulls = [], []
    for i, cls in enumerate(["sf", "comp", "seyfert", "cones", "sf", "liner"]):
        g = make_galaxy(i, 8, cls)
        ha, hb, hg = (g.model[idx(n)] for n in ("Ha-6564", "Hb-4862", "Hgam-4341"))
        on = hb > 1e-6
        assert np.all(ha[on] / hb[on] >= CASE_B["Ha-6564"] * (1 - 1e-5))
        assert np.all(hg[on] / hb[on] <= CASE_B["Hgam-4341"] * (1 + 1e-5))  # dust dims the bluer line
        assert (ha[on] / hb[on]).max() > 3.0 or g.truth["a_v"] < 0.1
        # With noise: where Hb is detected at S/N >= 20 the decrement is still >= 2.86, within errors.
        good = (g.mask[0] == 0) & (g.ivar[idx("Hb-4862")] > 0)
        f_ha, f_hb = g.flux[idx("Ha-6564")][good], g.flux[idx("Hb-4862")][good]
        s_ha, s_hb = 1 / np.sqrt(g.ivar[idx("Ha-6564")][good]), 1 / np.sqrt(g.ivar[idx("Hb-4862")][good])
        bright = f_hb / s_hb >= 20
        r = f_ha[bright] / f_hb[bright]
        err = r * np.hypot(s_ha[bright] / f_ha[bright], s_hb[bright] / f_hb[bright])
        ratios.append(r)
        pulls.append((r - CASE_B["Ha-6564"]) / err)
    ratios, pulls = np.concatenate(ratios), np.concatenate(pulls)
    assert len(ratios) > 200
    assert np.median(ratios) > CASE_B["Ha-6564"]
    assert np.mean(pulls < -3) < 0.01


def test_doublet_ratios_exact_without_noise_and_statistically_with_it():
    sums = {w: [0.0, 0.0, 0.0] for w in DOUBLETS if w in DR15_CHANNELS}
    for i, cls in enumerate(["seyfert", "sf", "liner", "comp", "blueberry", "cones"]):
        g = make_galaxy(i, 9, cls)
        good = (g.mask[0] == 0) & (g.ivar[0] > 0)
        for weak, (strong, ratio) in DOUBLETS.items():
            if weak not in DR15_CHANNELS:
                continue
            np.testing.assert_allclose(g.model[idx(weak)], g.model[idx(strong)] * ratio, rtol=1e-5)
            sums[weak][0] += g.flux[idx(weak)][good].sum()
            sums[weak][1] += g.flux[idx(strong)][good].sum()
            sums[weak][2] += (1 / g.ivar[idx(weak)][good]).sum() + ratio**2 * (1 / g.ivar[idx(strong)][good]).sum()
    for weak, (weak_sum, strong_sum, var) in sums.items():
        ratio = DOUBLETS[weak][1]
        # The weak member's summed flux agrees with ratio x the strong member's, within 4 sigma.
        assert abs(weak_sum - ratio * strong_sum) < 4 * math.sqrt(var), weak
        assert strong_sum > 20 * math.sqrt(var), weak  # and that is a real test, not noise


def test_footprint_noise_and_masks():
    config = SynthConfig(star_probability=1.0, dead_fibre_probability=1.0)
    g = make_galaxy(2, 4, "sf", config=config)
    bits = g.mask[0]
    nocov = (bits & (1 << NOCOV)) > 0
    covered = (bits & ((1 << NOCOV) | (1 << LOWCOV))) == 0
    radius = g.truth["bundle_arcsec"] / 2
    hexagon = 3 * math.sqrt(3) / 2 * radius**2
    assert covered.sum() * 0.25 == pytest.approx(hexagon, rel=0.05)
    assert np.all(g.flux[:, nocov] == 0) and np.all(g.ivar[:, nocov] == 0)
    assert np.all((bits[nocov] & (1 << DONOTUSE)) > 0)
    assert (g.binid >= 0).sum() == covered.sum()
    for bit in (FORESTAR, DEADFIBER):
        flagged = (bits & (1 << bit)) > 0
        assert 4 <= flagged.sum() < 100 and np.all((bits[flagged] & (1 << DONOTUSE)) > 0)
    assert np.all(g.ivar[:, (bits & (1 << DEADFIBER)) > 0] == 0)
    assert g.truth["has_star"] and g.truth["has_dead_fibre"]
    # Noise: residuals match the ivar the file states.
    use = covered & ((bits & (1 << FORESTAR)) == 0) & ((bits & (1 << DEADFIBER)) == 0)
    pull = ((g.flux - g.model) * np.sqrt(g.ivar))[:, use]
    assert abs(pull.std() - 1) < 0.05 and abs(pull.mean()) < 0.05
    # Low continuum S/N gets UNRELIABLE somewhere in a survey's galaxies, never outside the footprint.
    flagged = [((make_galaxy(i, 4, "retired").mask[0] & (1 << UNRELIABLE)) > 0).sum() for i in range(6)]
    assert sum(flagged) > 0


def spaxel_class(v):
    ha = v[idx("Ha-6564")]
    return classify(math.log10(v[idx("NII-6585")] / ha), math.log10(v[idx("OIII-5008")] / v[idx("Hb-4862")]),
                    math.log10((v[idx("SII-6718")] + v[idx("SII-6732")]) / ha), math.log10(v[idx("OI-6302")] / ha))


def test_anomalies_show_in_the_line_maps():
    o3, hb, ha, n2 = (idx(n) for n in ("OIII-5008", "Hb-4862", "Ha-6564", "NII-6585"))
    for i in range(3):
        g = make_galaxy(i, 6, "blueberry")
        m = g.model
        assert m[o3].max() > 2 * m[ha].max()  # [OIII] outshines Ha: [OIII]/Hb ~ 8
        assert m[n2].max() < 0.05 * m[ha].max()  # low metallicity
        ny, nx = m.shape[1:]
        yy, xx = np.mgrid[:ny, :nx]
        near = np.hypot(yy - ny // 2, xx - nx // 2) * 0.5 <= 3.0
        assert m[ha][near].sum() > 0.7 * m[ha].sum()  # compact

        g = make_galaxy(i, 6, "offnuclear")
        m, t = g.model, g.truth
        ny, nx = m.shape[1:]
        row, col = ny // 2 + round(t["anomaly_y"] / 0.5), nx // 2 - round(t["anomaly_x"] / 0.5)
        # The offset region is AGN- or shock-ionised (its own BPT class), the nucleus star-forming.
        assert spaxel_class(m[:, row, col]) == t["anomaly_ionisation"]
        assert spaxel_class(m[:, ny // 2, nx // 2]) == t["cen_bpt"] == "sf"

        g = make_galaxy(i, 6, "cones")
        m, t = g.model, g.truth
        ny, nx = m.shape[1:]
        r = 0.5 * t["anomaly_size"]
        theta = math.radians(t["anomaly_angle"])
        along = m[:, ny // 2 + round(r * math.cos(theta) / 0.5), nx // 2 - round(r * math.sin(theta) / 0.5)]
        across = m[:, ny // 2 - round(r * math.sin(theta) / 0.5), nx // 2 - round(r * math.cos(theta) / 0.5)]
        x_along = math.log10(along[n2] / along[ha])
        # Along the cone axis the gas is AGN-ionised (above the maximum-starburst line) ...
        assert math.log10(along[o3] / along[hb]) > kewley01_nii(x_along)
        # ... and brighter in [OIII] than across it, at the same radius.
        assert along[o3] > 2 * across[o3]


# ------------------------------------------------------------------ templates and the CLI


def test_committed_templates_are_usable():
    t = load_templates()
    assert set(t["classes"]) == set(NORMAL_CLASSES)
    for name, cls in t["classes"].items():
        assert cls["n"] >= 20, name
        cov = np.asarray(cls["cov"])
        assert np.all(np.linalg.eigvalsh(cov) > 0), name
    # The classes sit where astronomers expect them on average.
    mean = {k: dict(zip(t["ratios"], v["mean"])) for k, v in t["classes"].items()}
    assert mean["seyfert"]["log_oiii_hb"] > mean["liner"]["log_oiii_hb"] > mean["sf"]["log_oiii_hb"]
    assert mean["sf"]["log_nii_ha"] < mean["comp"]["log_nii_ha"] < mean["liner"]["log_nii_ha"]


@pytest.mark.skipif(not DAPALL.is_file(), reason=f"DAPall subset not found at {DAPALL} (../shared is absent)")
def test_committed_templates_equal_a_fresh_derivation():
    fresh = derive_templates(DAPALL)
    committed = load_templates(str(TEMPLATES_PATH))
    assert fresh["source"] == committed["source"] and fresh["ratios"] == committed["ratios"]
    for name, cls in fresh["classes"].items():
        mine = committed["classes"][name]
        assert cls["n"] == mine["n"]
        np.testing.assert_allclose(cls["mean"], mine["mean"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(cls["cov"], mine["cov"], rtol=1e-4, atol=1e-6)
        for line, w in cls["weak"].items():
            assert (w["median"], w["std"]) == (pytest.approx(mine["weak"][line]["median"], abs=1e-4),
                                               pytest.approx(mine["weak"][line]["std"], abs=1e-4))


def test_cli_writes_a_survey_and_reports_bad_input(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "3", "--seed", "2", "--workers", "1",
                 "--release", "dr17", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 galaxies" in out and "dr17" in out
    assert len(list((tmp_path / "s").glob("*.fits.gz"))) == 3 and (tmp_path / "s" / "truth.csv").is_file()
    with gzip.open(next((tmp_path / "s").glob("*.fits.gz"))) as fh:
        assert fh.read(6) == b"SIMPLE"
    # A folder with other MAPS files is refused (an ingest would mix them in); a re-run is fine.
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "2", "--seed", "2", "--workers", "1", "--quiet"]) == 2
    assert "not part of this survey" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "3", "--seed", "2", "--workers", "1",
                 "--release", "dr17", "--quiet"]) == 0
    for bad in (["--n", "0"], ["--n", "2", "--noise", "-1"]):  # argparse's usage error: exit status 2
        with pytest.raises(SystemExit) as exc:
            main(["synth", "--out", str(tmp_path / "t"), *bad])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err
