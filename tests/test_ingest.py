"""Ingest: MAPS files -> dataset folder, with bad files skipped and recorded, and work reused."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from core import sharpness
from core.dataset import open_dataset
from core.errors import DatasetError
from core.ingest import IngestOptions, ingest, looks_current
from core.lines import DEFAULT_LINES, DR15_CHANNELS, DR17_CHANNELS
from core.synth import write_maps_file
from core.maps import DAPPIXMASK_BITS, preprocess
from train.cli import main

NOCOV, DONOTUSE = DAPPIXMASK_BITS["NOCOV"], DAPPIXMASK_BITS["DONOTUSE"]


def blob_galaxy(path, galaxy_id, channels=DR15_CHANNELS, n=34, seed=0, dead_line=None, header=None):
    """A round galaxy with a Gaussian profile in every line, NOCOV outside a disc; ``header`` adds primary keys."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    r2 = x**2 + y**2
    profile = 20.0 * np.exp(-r2 / (2 * (n / 6) ** 2)) + 0.5
    strength = rng.uniform(0.2, 3.0, len(channels))
    flux = strength[:, None, None] * profile  # (C, n, n)
    flux = flux + rng.normal(0, 0.05, flux.shape)
    ivar = np.full(flux.shape, 400.0)
    mask = np.zeros(flux.shape, np.int32)
    mask[:, r2 > (n / 2 - 1) ** 2] |= 1 << NOCOV
    if dead_line is not None:
        mask[channels.index(dead_line)] |= 1 << DONOTUSE
    write_maps_file(path, galaxy_id=galaxy_id, mangaid=f"9-{galaxy_id}", ra=150.0, dec=2.0, z=0.03,
                    channels=channels, flux=flux, ivar=ivar, mask=mask, extra_header=header)
    return path


@pytest.fixture
def survey(tmp_path):
    src = tmp_path / "maps"
    src.mkdir()
    for i in range(4):
        blob_galaxy(src / f"manga-9000{i}-1901-MAPS-SYNTH-GAU.fits.gz", f"9000{i}-1901", seed=i,
                    header={"RFWHM": 2.5})
    # no PSF in its header, so no score_sharp
    blob_galaxy(src / "manga-90009-1901-MAPS-SYNTH-GAU.fits.gz", "90009-1901", channels=DR17_CHANNELS, seed=9)
    return src


def test_ingest_writes_a_consistent_dataset(survey, tmp_path):
    report = ingest([survey], tmp_path / "ds", IngestOptions(size=16), workers=2, progress=False)
    assert report.n_ingested == 5 and not report.skipped
    ds = open_dataset(tmp_path / "ds")
    assert ds.flux.shape == (5, 19, 16, 16) and ds.mask.shape == (5, 19, 16, 16) and ds.bpt_map.shape == (5, 16, 16)
    assert ds.lines == DEFAULT_LINES
    assert list(ds.catalogue.galaxy_id) == ["90000-1901", "90001-1901", "90002-1901", "90003-1901", "90009-1901"]
    # masked cells hold no invented value, good ones are finite
    assert np.isnan(ds.flux[ds.mask]).all() and np.isfinite(ds.flux[~ds.mask]).all()
    assert (ds.ivar[ds.mask] == 0).all()
    for col in ("ra", "dec", "z", "source", "sha256", "scale", "good_frac", "log_nii_ha", "bpt_class"):
        assert col in ds.catalogue.columns, col
    assert {s["galaxy_id"] for s in ds.manifest.sources} == set(ds.catalogue.galaxy_id)


def test_ingest_and_score_share_one_preprocessing(survey, tmp_path):
    """The dataset's arrays are what ``preprocess`` makes of each file with the options in its manifest."""
    opts = IngestOptions(size=16, norm="asinh", lines=("Hb-4862", "OIII-5008", "Ha-6564", "NII-6585"))
    ingest([survey], tmp_path / "ds", opts, workers=1, progress=False)
    ds = open_dataset(tmp_path / "ds")
    assert ds.manifest.options == opts
    for i, source in enumerate(ds.catalogue.source):
        grid = preprocess(source, ds.manifest.options).grid
        np.testing.assert_array_equal(ds.mask[i], grid.mask)
        np.testing.assert_array_equal(ds.flux[i], grid.flux.astype(np.float32))
        np.testing.assert_array_equal(ds.ivar[i], grid.ivar.astype(np.float32))
        # and the noise of a sum of its cells, which the census needs and the arrays cannot give
        assert ds.catalogue.noise_factor[i] == pytest.approx(grid.noise_factor) and grid.noise_factor >= 1
        # and score_sharp, of the native maps in the run's lines, which the grid cannot give either
        p = preprocess(source, ds.manifest.options)
        expected = sharpness.measure(p.maps, p.grid.lines)
        assert ds.catalogue[sharpness.COLUMN][i] == pytest.approx(expected.score, nan_ok=True)
        if ds.catalogue.galaxy_id[i] == "90009-1901":
            assert np.isnan(p.maps.psf_fwhm) and np.isnan(expected.score)
        else:  # a smooth round galaxy: about 1
            assert p.maps.psf_fwhm == 2.5 and 1 <= expected.score < 2


def test_line_ratios_survive_gridding(survey, tmp_path):
    """Total Ha/Hb of the gridded galaxy equals that of the file, DR15 and DR17 layouts alike."""
    ingest([survey], tmp_path / "ds", IngestOptions(size=16), workers=1, progress=False)
    ds = open_dataset(tmp_path / "ds")
    ha, hb = ds.lines.index("Ha-6564"), ds.lines.index("Hb-4862")
    for i, src in enumerate(ds.catalogue.source):
        with fits.open(src) as hdul:
            names = [hdul["EMLINE_GFLUX"].header[f"C{k + 1:02d}"] for k in range(hdul["EMLINE_GFLUX"].data.shape[0])]
            flux = hdul["EMLINE_GFLUX"].data
            good = (hdul["EMLINE_GFLUX_MASK"].data & (1 << NOCOV)) == 0
        native = flux[names.index("Ha-6564")][good[0]].sum() / flux[names.index("Hb-4862")][good[0]].sum()
        gridded = np.nansum(ds.flux[i, ha]) / np.nansum(ds.flux[i, hb])
        assert gridded == pytest.approx(native, rel=0.03)


def test_bad_files_are_skipped_with_reasons(survey, tmp_path):
    good = sorted(survey.iterdir())[0]
    (survey / "manga-1-1-MAPS-notfits.fits.gz").write_bytes(b"this is not a FITS file at all" * 10)
    raw = good.read_bytes()
    (survey / "manga-1-2-MAPS-truncated.fits.gz").write_bytes(raw[: len(raw) // 2])
    corrupt = bytearray(raw)
    corrupt[len(raw) // 2: len(raw) // 2 + 64] = b"\x00" * 64
    (survey / "manga-1-3-MAPS-corrupt.fits.gz").write_bytes(bytes(corrupt))
    with fits.open(good) as hdul:
        del hdul["EMLINE_GFLUX_IVAR"]
        hdul.writeto(survey / "manga-1-4-MAPS-noivar.fits.gz")
    blob_galaxy(survey / "manga-1-5-MAPS-deadha.fits.gz", "1-5", dead_line="Ha-6564")

    report = ingest([survey], tmp_path / "ds", IngestOptions(size=16), workers=2, progress=False)
    assert report.n_ingested == 5
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert set(reasons) == {"manga-1-1-MAPS-notfits.fits.gz", "manga-1-2-MAPS-truncated.fits.gz",
                            "manga-1-3-MAPS-corrupt.fits.gz", "manga-1-4-MAPS-noivar.fits.gz",
                            "manga-1-5-MAPS-deadha.fits.gz"}
    assert "EMLINE_GFLUX_IVAR" in reasons["manga-1-4-MAPS-noivar.fits.gz"]
    assert "Ha-6564" in reasons["manga-1-5-MAPS-deadha.fits.gz"]
    manifest = open_dataset(tmp_path / "ds").manifest
    assert {Path(s["path"]).name for s in manifest.skipped} == set(reasons)


def test_rerun_reuses_work_and_new_files_are_added(survey, tmp_path):
    out = tmp_path / "ds"
    first = ingest([survey], out, IngestOptions(size=16), workers=1, progress=False)
    flux_before = np.array(open_dataset(out).flux)
    again = ingest([survey], out, IngestOptions(size=16), workers=1, progress=False)
    assert again.reused == first.n_ingested == again.n_ingested
    np.testing.assert_array_equal(np.array(open_dataset(out).flux), flux_before)

    blob_galaxy(survey / "manga-90005-1901-MAPS-SYNTH-GAU.fits.gz", "90005-1901", seed=5)
    third = ingest([survey], out, IngestOptions(size=16), workers=1, progress=False)
    assert third.n_ingested == 6 and third.reused == 5
    ds = open_dataset(out)
    row = list(ds.catalogue.galaxy_id).index("90001-1901")
    np.testing.assert_array_equal(np.array(ds.flux[row]), flux_before[1])

    other = ingest([survey], out, IngestOptions(size=8), workers=1, progress=False)
    assert other.reused == 0 and open_dataset(out).size == 8


def test_another_code_version_ingests_again(survey, tmp_path, monkeypatch):
    """What a file becomes may change between versions (the gridding's variances did): nothing is reused."""
    import core.dataset

    out = tmp_path / "ds"
    first = ingest([survey], out, IngestOptions(size=16), workers=1, progress=False)
    assert ingest([survey], out, IngestOptions(size=16), workers=1, progress=False).reused == first.n_ingested
    monkeypatch.setattr(core.dataset, "__version__", "99.0")
    later = ingest([survey], out, IngestOptions(size=16), workers=1, progress=False)
    assert later.reused == 0 and later.n_ingested == first.n_ingested


def test_duplicates_are_reported(survey, tmp_path):
    shutil.copy(survey / "manga-90000-1901-MAPS-SYNTH-GAU.fits.gz", survey / "manga-90000-1901-MAPS-copy.fits.gz")
    report = ingest([survey], tmp_path / "ds", IngestOptions(size=16), workers=1, progress=False)
    assert report.n_ingested == 5
    assert [d["galaxy_id"] for d in report.duplicates] == ["90000-1901"]


def test_truth_columns_are_joined(survey, tmp_path):
    pd.DataFrame({"galaxy_id": ["90000-1901", "90001-1901"], "truth_class": ["sf", "blueberry"],
                  "truth_anomaly": [False, True], "inclination": [30.0, 60.0]}).to_csv(survey / "truth.csv", index=False)
    ingest([survey], tmp_path / "ds", IngestOptions(size=16), workers=1, progress=False)
    cat = open_dataset(tmp_path / "ds").catalogue.set_index("galaxy_id")
    assert cat.loc["90001-1901", "truth_class"] == "blueberry"
    assert cat.loc["90000-1901", "truth_inclination"] == 30.0
    assert pd.isna(cat.loc["90002-1901", "truth_class"])


def test_cli_reports_nothing_ingested(tmp_path, capsys):
    bad = tmp_path / "manga-1-1-MAPS-x.fits.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"SIMPLE  =                    T" + b" " * 50)
    assert main(["ingest", str(bad), "--out", str(tmp_path / "ds"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no galaxy could be ingested" in err and str(bad) in err


def test_cli_rejects_unknown_line_and_missing_input(survey, tmp_path, capsys):
    assert main(["ingest", str(survey), "--out", str(tmp_path / "ds"), "--lines", "Ha-6564", "Xx-1234"]) == 2
    assert "Xx-1234" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="nowhere"):
        ingest([tmp_path / "nowhere"], tmp_path / "ds")


def test_real_dr15_file_with_synthetic_ones(survey, tmp_path, real_maps_file):
    REAL = real_maps_file
    shutil.copy(REAL, survey / REAL.name)
    report = ingest([survey], tmp_path / "ds", IngestOptions(size=32), workers=2, progress=False)
    assert report.n_ingested == 6 and not report.skipped
    ds = open_dataset(tmp_path / "ds")
    row = list(ds.catalogue.galaxy_id).index("7815-3702")
    assert ds.catalogue.mangaid[row] == "1-113540"
    with fits.open(REAL) as hdul:
        hdr = hdul["EMLINE_GFLUX"].header
        names = [hdr[f"C{k + 1:02d}"] for k in range(hdr["NAXIS3"])]
        flux, ivar = hdul["EMLINE_GFLUX"].data, hdul["EMLINE_GFLUX_IVAR"].data
        bits = hdul["EMLINE_GFLUX_MASK"].data
    bad = (bits & sum(1 << DAPPIXMASK_BITS[b] for b in ("NOCOV", "UNRELIABLE", "DONOTUSE"))) != 0
    good = lambda name: ~bad[names.index(name)] & (ivar[names.index(name)] > 0)  # noqa: E731
    ha, hb = ds.lines.index("Ha-6564"), ds.lines.index("Hb-4862")
    native = flux[names.index("Ha-6564")][good("Ha-6564")].sum() / flux[names.index("Hb-4862")][good("Hb-4862")].sum()
    gridded = np.nansum(ds.flux[row, ha]) / np.nansum(ds.flux[row, hb])
    assert gridded == pytest.approx(native, rel=0.05)


def test_a_dataset_of_another_version_does_not_look_current(survey, tmp_path):
    """``make demo`` skips ingest when the dataset looks current: not when an earlier Blueberry wrote it, since
    what a file becomes may have changed (0.4.0 added score_sharp)."""
    ingest([survey], tmp_path / "ds", IngestOptions(size=16), workers=1, progress=False)
    assert looks_current(tmp_path / "ds", [survey])
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    manifest["code_version"] = "0.3.0"
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    assert not looks_current(tmp_path / "ds", [survey])
