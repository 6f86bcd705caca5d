"""Why a galaxy is odd (dashboard/views/why.py), its pure parts in core (ratio maps, normalised residuals),
and the header's injection summary: all without a server, on the fake run."""
from __future__ import annotations

import numpy as np
import panel as pn
import pytest
from astropy.io import fits
from bokeh.document import Document

from core import bpt, census, mixing, scoring, sharpness
from core.io import file_stamp, write_json
from core.maps import CELL_SPAXELS, MANGA_NOISE_SIGMA, NOISE_SIGMA, preprocess
from core.run import INJECTION_FILE, Injection, RunManifest, mark_stage
from dashboard.data import injection_figures, open_app_data
from dashboard.state import DashboardState
from dashboard.views import Header, WhyOdd
from dashboard.views.why import RATIO_MAPS, TOP_LINES, components, explain, summary_html, where_text
from tests.fakerun import make_fake_run
from tests.test_ingest import blob_galaxy


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("why") / "fake-run", n=120)


def test_ratio_maps_follow_log_ratios_and_mask_what_cannot_be_a_ratio():
    lines = ["Hb-4862", "OIII-5008", "NII-6585", "Ha-6564", "SII-6718", "SII-6732"]
    cube = np.ones((len(lines), 2, 2))
    cube[lines.index("NII-6585")] = 10.0
    cube[lines.index("OIII-5008"), 0, 0] = -1.0  # non-positive
    mask = np.zeros(cube.shape, bool)
    mask[lines.index("Ha-6564"), 1, 1] = True  # masked Ha: no ratio over Ha there
    maps = bpt.ratio_maps(cube, lines, mask)
    assert maps["log_nii_ha"][0, 1] == pytest.approx(1.0) and maps["log_sii_ha"][0, 1] == pytest.approx(np.log10(2))
    assert np.isnan(maps["log_oiii_hb"][0, 0]) and maps["log_oiii_hb"][1, 0] == pytest.approx(0.0)
    assert np.isnan(maps["log_nii_ha"][1, 1]) and np.isnan(maps["log_sii_ha"][1, 1])
    assert np.isnan(maps["log_oi_ha"]).all()  # no [OI] among the lines
    ivar = np.full(cube.shape, 1e-4)  # S/N 0.01: below the cut everywhere
    assert np.isnan(bpt.ratio_maps(cube, lines, mask, ivar)["log_nii_ha"]).all()


def test_normalised_residual_is_in_units_of_the_scores_error():
    x, recon = np.array([3.0, 5.0, np.nan, 1.0]), np.array([1.0, 5.0, 1.0, 0.0])
    ivar = np.array([1.0, 4.0, 1.0, 0.0])
    out = scoring.normalised_residual(x, recon, ivar, 0.0, model_error=0.0)
    assert out[0] == 2.0 and out[1] == 0.0 and np.isnan(out[2]) and np.isnan(out[3])
    assert scoring.normalised_residual(x, recon, ivar, np.sqrt(3.0), model_error=0.0)[0] == pytest.approx(1.0)
    assert scoring.normalised_residual(x, recon, ivar, np.sqrt(2.0), model_error=1.0)[0] == pytest.approx(1.0)
    # its square, weighted as the score weights cells, is the score's sum
    rng = np.random.default_rng(0)
    flux, rec = rng.normal(5, 1, (1, 2, 4, 4)), rng.normal(5, 1, (1, 2, 4, 4))
    iv, mask = rng.uniform(0.5, 2, flux.shape), np.zeros(flux.shape, bool)
    lines = ["Hb-4862", "Ha-6564"]
    floor = scoring.ERROR_FLOOR * scoring.floor_peaks(flux, mask, lines)[:, None, None, None]
    score, _ = scoring.galaxy_errors(rec, flux, mask, iv, lines)
    assert np.mean(scoring.normalised_residual(flux, rec, iv, floor) ** 2) == pytest.approx(score[0])


def test_explain_names_the_lines_and_maps_of_a_galaxy(run_path):
    data = open_app_data(run_path)
    row = int(data.order[0])
    e = explain(data, row)
    s = data.run.dataset.size
    shares = [(ln, data.catalogue[f"err_{ln}"].iat[row]) for ln in data.lines]
    assert [ln for ln, _ in e["lines"][:TOP_LINES]] == [ln for ln, _ in sorted(shares, key=lambda t: -t[1])][:TOP_LINES]
    assert e["where"].shape == (TOP_LINES + 3, s, s) and e["ratios"].shape == (2 * len(RATIO_MAPS), s, s)
    # no consistency, mixing or sharpness detector in this run: their panels are empty and unlabelled
    assert np.isnan(e["where"][TOP_LINES:]).all() and e["where_labels"][TOP_LINES:] == ["", "", ""]
    # with the mixing detector's calibration, the last panel is where the galaxy departs most from its own mix
    ds = data.run.dataset
    # a real MaNGA file's shared noise, on cells of 0.7 to 2 spaxels: each galaxy's matched filters count it
    data.catalogue[CELL_SPAXELS] = np.linspace(0.7, 2.0, data.n)
    data.catalogue[NOISE_SIGMA] = MANGA_NOISE_SIGMA
    factors = mixing.catalogue_factors(data.catalogue)
    assert factors[:, 0] == pytest.approx(1) and np.all(factors[:, 1:] > 2)
    stats = mixing.block_statistics(ds.flux, ds.ivar, ds.mask, data.lines, factors=factors)
    snr = mixing.signal_to_noise(ds.flux, ds.ivar, ds.mask, data.lines)
    calibration = mixing.calibrate(stats, snr=snr)
    assert np.asarray(calibration["median"]).ndim == 3  # by signal-to-noise
    data.run.manifest.score.components[mixing.COLUMN] = {"statistics": calibration}
    e = explain(data, row)
    resid = mixing.residuals(ds.flux[row:row + 1], ds.ivar[row:row + 1], ds.mask[row:row + 1], data.lines)[0]
    group, sigma, expected = mixing.departure(resid, data.lines, calibration, factors[row], snr[row])
    # embed's mixing_group
    assert group == mixing.galaxy_scores(stats[row:row + 1], calibration, data.lines, snr[row:row + 1])[1][0]
    assert e["where_labels"][TOP_LINES + 1] == f"mix: {'all' if group == mixing.ALL_LINES else group}, {sigma:g}"
    np.testing.assert_allclose(e["where"][TOP_LINES + 1], expected, rtol=1e-5, equal_nan=True)
    g, t = [name for name, _ in mixing.groups(data.lines)].index(group), mixing.SCALES.index(sigma)
    assert np.nanmax(np.abs(expected)) == pytest.approx(stats[row, g, t], rel=1e-5)  # the map's peak is the statistic
    mask = np.asarray(data.run.dataset.mask[row])
    top = data.lines.index(e["lines"][0][0])
    assert np.isnan(e["where"][0][mask[top]]).all()  # masked cells stay masked
    assert e["components"] == [("anomaly_score", pytest.approx(data.catalogue["anomaly_score"].iat[row]),
                                pytest.approx(data.catalogue["anomaly_pct"].iat[row], abs=0.01))]
    assert "anomaly_score" in summary_html(data, row) and e["lines"][0][0] in summary_html(data, row)
    # where on the galaxy, each value placed in the run
    cat = data.catalogue
    far = int(np.nanargmax(cat["resid_offset"].to_numpy()))
    text = where_text(cat, far)
    assert f"centroid {cat['resid_offset'].iat[far]:.2f} half-widths from the centre (100th pct)" in text
    assert text in summary_html(data, far)
    assert where_text(cat.drop(columns=["resid_offset"]), far) == ""  # a run embedded before the columns


def test_explain_draws_the_consistency_map_where_the_run_has_one(run_path, tmp_path):
    import shutil

    from core.errors import RunError
    from core.run import CONSISTENCY_LINES_FILE, CONSISTENCY_MAP_FILE, open_run

    copy = tmp_path / "run"
    shutil.copytree(run_path, copy)
    run = open_run(copy)
    n, s = len(run.catalogue), run.dataset.size
    cells = np.random.default_rng(0).uniform(0, 9, (n, s, s)).astype(np.float32)
    cells[:, 0, 0] = np.nan  # no line measured there
    np.save(copy / CONSISTENCY_MAP_FILE, cells)
    shares = np.full((n, len(run.lines)), 0.1 / (len(run.lines) - 1), np.float32)
    shares[:, 4] = 0.9  # one line makes nine tenths of every galaxy's score_consistency
    np.save(copy / CONSISTENCY_LINES_FILE, shares)
    mark_stage(copy, "embed", True, files={**run.manifest.files, **{
        f: file_stamp(copy / f) for f in (CONSISTENCY_MAP_FILE, CONSISTENCY_LINES_FILE)}})
    data = open_app_data(copy)
    e = explain(data, 3)
    assert e["where_labels"][TOP_LINES] == "cross-line"
    np.testing.assert_allclose(e["where"][TOP_LINES], np.sqrt(cells[3]), rtol=1e-6)  # RMS misfit in sigma
    text = summary_html(data, 3)
    assert "cross-line" in text and f"disagree most with the others (score_consistency): {run.lines[4]} 90 %" in text
    assert "disagree most" not in summary_html(open_app_data(run_path), 3)  # a run without them says nothing
    data.catalogue[mixing.GROUP_COLUMN] = "SII"
    assert (f"depart most from a mix of {mixing.RANK} spectra ({mixing.COLUMN}, against galaxies measured as well): "
            "SII.") in summary_html(data, 3)
    data.catalogue[census.FEATURE_COLUMN] = "OIII-4960 ratio"
    assert (f"out of step with the survey's galaxies ({census.COLUMN}): OIII-4960 ratio (its total over Hα's)"
            in summary_html(data, 3))
    # a map of the wrong shape is refused, naming the file
    np.save(copy / CONSISTENCY_MAP_FILE, cells[:, :-1])
    mark_stage(copy, "embed", True, files={**RunManifest.read(copy).files,
                                           CONSISTENCY_MAP_FILE: file_stamp(copy / CONSISTENCY_MAP_FILE)})
    with pytest.raises(RunError, match=CONSISTENCY_MAP_FILE):
        open_run(copy)


def test_components_name_every_detector_of_the_run(run_path):
    data = open_app_data(run_path)
    n = len(data.catalogue)
    data.catalogue["score_recon"] = np.arange(n, dtype=float)
    data.catalogue["score_consistency"] = np.arange(n, dtype=float)[::-1]
    data.catalogue["score_mixing"] = np.arange(n, dtype=float)
    comps = components(data, 0)
    assert {c[0] for c in comps} == {"anomaly_score", "score_consistency", "score_mixing", "score_recon"}
    assert comps[0][0] == "score_consistency" and comps[0][2] == 100.0 and comps[-1][0] == "score_recon"


def test_the_sharpness_sentence_only_for_the_flagged_tail(run_path):
    """The why view says where the maps are sharper than the PSF allows only for a galaxy that score_sharp puts in
    the run's flagged tail: every galaxy's noise breaks the bound a little somewhere."""
    data = open_app_data(run_path)
    n = len(data.catalogue)
    data.catalogue[sharpness.COLUMN] = np.arange(1, n + 1, dtype=float)
    data.catalogue[sharpness.LINE_COLUMN] = "OIII-5008"
    data.catalogue[sharpness.DX_COLUMN], data.catalogue[sharpness.DY_COLUMN] = 2.5, -1.0
    odd, plain = summary_html(data, n - 1), summary_html(data, 0)
    assert "Sharper than the PSF" in odd and "most in OIII-5008, 2.5\" right and 1.0\" down" in odd
    assert "Sharper than the PSF" not in plain


def test_the_sharp_panel_reads_the_galaxys_file(run_path, tmp_path):
    """The last "where" panel is the galaxy's sharpness map, measured again on its MAPS file: a spike the
    file has is where the panel is bright; a file that is gone leaves the panel blank and says so."""
    data = open_app_data(run_path)
    options = data.run.dataset.manifest.options
    path = blob_galaxy(tmp_path / "manga-90000-1901-MAPS-SYNTH-GAU.fits.gz", "90000-1901", header={"RFWHM": 2.5})
    with fits.open(path) as hdul:  # a cosmic ray: one spaxel of Halpha half as bright again, near the centre
        flux, names = hdul["EMLINE_GFLUX"].data.copy(), [hdul["EMLINE_GFLUX"].header[f"C{k + 1:02d}"]
                                                          for k in range(hdul["EMLINE_GFLUX"].data.shape[0])]
        flux[names.index("Ha-6564"), 15, 19] *= 1.5
        hdul["EMLINE_GFLUX"].data = flux
        hdul.writeto(tmp_path / "spiked.fits", overwrite=True)
    data.catalogue[sharpness.COLUMN] = 1.0
    data.catalogue.loc[0, "source"] = str(tmp_path / "spiked.fits")
    e = explain(data, 0)
    assert e["where_labels"][-1] == "sharp"
    panel = e["where"][-1]
    p = preprocess(tmp_path / "spiked.fits", options)
    x0, y0, x1, _ = p.grid.crop
    side = (x1 - x0) / data.run.dataset.size
    cell = (int((15.5 - y0) // side), int((19.5 - x0) // side))
    assert np.nanargmax(panel) == np.ravel_multi_index(cell, panel.shape) and np.nanmax(panel) > 20
    data.catalogue.loc[0, "source"] = str(tmp_path / "gone.fits")
    e = explain(data, 0)
    assert e["where_labels"][-1] == "sharp: no file" and np.isnan(e["where"][-1]).all()


def test_why_view_redraws_on_inspect(run_path):
    data = open_app_data(run_path)
    state = DashboardState(data)
    view = WhyOdd(state=state)
    pn.panel(view).get_root(Document())
    assert view._fig.name == "why"
    state.inspect(7)
    e = explain(data, 7)
    np.testing.assert_array_equal(view._images["ratios"].data_source.data["image"][0], e["ratios"][0])
    assert view._labels["where"].data["text"] == e["where_labels"]


def test_header_shows_the_injection_summary_when_there_is_one(run_path):
    data = open_app_data(run_path)
    assert injection_figures(data) is None
    result = {"headline": {"anomaly_score": {"strength": 0.5, "median_pct": 61.0, "flagged": 0.15,
                                             "control_pct": 54.5}},
              "rows": [{"kind": "none", "family": "control", "strength": 0.0,
                        "anomaly_score": {"median_pct": 54.5, "flagged": 0.1}},
                       {"kind": "stripe", "family": "artefact", "strength": 0.5,
                        "anomaly_score": {"median_pct": 69.3, "flagged": 0.125}},
                       {"kind": "nii_patch", "family": "ratio", "strength": 0.5,
                        "anomaly_score": {"median_pct": 54.7, "flagged": 0.25}}]}
    write_json(run_path / INJECTION_FILE, result)
    catalogue = RunManifest.read(run_path).checksums.get("catalogue.parquet")
    mark_stage(run_path, "inject", True, files={**RunManifest.read(run_path).files,
                                                 INJECTION_FILE: file_stamp(run_path / INJECTION_FILE)},
               injection=Injection(strength=0.5, median_pct=61.0, flagged=0.15, control_pct=54.5, n_kinds=2,
                                   seconds=1.0, catalogue_sha256=catalogue))
    data = open_app_data(run_path)
    text, detail = injection_figures(data)
    assert text == "median percentile 61 at strength 0.5, 15 % flagged over 2 kinds (untouched 54)"
    assert detail == ["stripe (artefact): 69, 12 % flagged", "nii_patch (ratio): 55, 25 % flagged"]
    html = pn.panel(Header(state=DashboardState(data))).get_root(Document()).text
    assert "Injection benchmark" in html and "stripe (artefact)" in html

    # a second detector measured beside the anomaly score: its figures follow the score's
    result["scores"] = ["anomaly_score", "score_consistency"]
    result["headline"]["score_consistency"] = {"strength": 0.5, "median_pct": 65.2, "flagged": 0.15, "control_pct": 46.2}
    for row, (pct, flagged) in zip(result["rows"], ((46.2, 0.07), (89.0, 0.375), (93.4, 0.625))):
        row["score_consistency"] = {"median_pct": pct, "flagged": flagged}
    write_json(run_path / INJECTION_FILE, result)
    mark_stage(run_path, "inject", True, files={**RunManifest.read(run_path).files,
                                                 INJECTION_FILE: file_stamp(run_path / INJECTION_FILE)})
    text, detail = injection_figures(open_app_data(run_path))
    assert text.endswith("(untouched 54); score_consistency 65, 15 % flagged (untouched 46)")
    assert detail[1] == "nii_patch (ratio): 55, 25 % flagged; score_consistency 93, 62 % flagged"

    # some of the changes below the noise: the figures over the others follow, and each kind says how many
    result["headline"]["anomaly_score"]["detectable"] = {"median_pct": 80.0, "kinds": 2, "kinds_at_90": 0,
                                                         "share": 0.75, "flagged": 0.25}
    result["rows"][2].update(n=8, n_detectable=2)
    result["rows"][1].update(n=8, n_detectable=8)
    write_json(run_path / INJECTION_FILE, result)
    mark_stage(run_path, "inject", True, files={**RunManifest.read(run_path).files,
                                                 INJECTION_FILE: file_stamp(run_path / INJECTION_FILE)})
    text, detail = injection_figures(open_app_data(run_path))
    assert "(untouched 54); over the 75 % of changes plain in the noise 80, 25 % flagged; score_consistency" in text
    assert detail == ["stripe (artefact): 69, 12 % flagged; score_consistency 89, 38 % flagged",
                      "nii_patch (ratio): 55, 25 % flagged (2 of 8 plain in the noise); score_consistency 93, 62 % flagged"]
