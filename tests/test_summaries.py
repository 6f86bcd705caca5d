"""DAPall and DRPall joined at ingest: by plate-IFU, the galaxy's own DAPTYPE first, channels by name."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from core.dataset import open_dataset
from core.errors import DatasetError
from core.ingest import IngestOptions, ingest
from core.lines import DAPQUAL_BITS, DR17_CHANNELS
from core.summaries import SummaryFiles, read_columns, scalar_table, select_rows
from tests.conftest import SHARED_DATA
from tests.test_ingest import blob_galaxy, survey  # noqa: F401 (survey: a fixture)
from train.cli import main

DAPALL_SUBSET = SHARED_DATA / "catalogs" / "dapall-dr17-subset664.fits"
CRITICAL = 1 << DAPQUAL_BITS["CRITICAL"]
#: The daptype blob_galaxy's files carry (core.synth.writer's default).
OWN = "SYNTH-GAU-BLUEBERRY"


def dapall_file(path, rows, channels=DR17_CHANNELS, header_names=True):
    """A DAPall-shaped FITS file: one table, the joined columns, EMLINE_GEW_1RE as per-channel vectors.

    ``rows``: (plateifu, daptype, sfr_tot, dapqual, halpha_ew). With ``header_names`` the primary
    header names the channels (ELG01 ...) in ``channels``' order, as the DAP writes them.
    """
    n = len(rows)
    gew = np.full((n, len(channels)), 7.0, np.float32)  # (rows, channels): other lines 7, never picked
    gew[:, channels.index("Ha-6564")] = [r[4] for r in rows]
    sfr = np.array([r[2] for r in rows], np.float32)
    cols = [fits.Column("PLATEIFU", "12A", array=[r[0] for r in rows]),
            fits.Column("DAPTYPE", "30A", array=[r[1] for r in rows]),
            fits.Column("SFR_TOT", "E", array=sfr), fits.Column("SFR_1RE", "E", array=sfr / 2),
            fits.Column("DAPQUAL", "K", array=[r[3] for r in rows]),
            fits.Column("EMLINE_GEW_1RE", f"{len(channels)}E", array=gew)]
    cols += [fits.Column(name, "E", array=np.arange(n, dtype=np.float32) + k)
             for k, name in enumerate(("NSA_SERSIC_N", "NSA_ELPETRO_BA", "NSA_ELPETRO_TH50_R", "STELLAR_SIGMA_1RE"))]
    primary = fits.PrimaryHDU()
    if header_names:
        for i, ch in enumerate(channels):
            primary.header[f"ELG{i + 1:02d}"] = ch
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="DAPALL")]).writeto(path)
    return path


def drpall_file(path, plateifus, masses):
    """DRPall's layout: a MANGA table of galaxies, then a MASTAR table of stars without their columns."""
    cols = [fits.Column("PLATEIFU", "12A", array=plateifus), fits.Column("NSA_ELPETRO_MASS", "D", array=masses)]
    stars = fits.BinTableHDU.from_columns([fits.Column("MANGAID", "10A", array=["3-1"])], name="MASTAR")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="MANGA"), stars]).writeto(path)
    return path


def test_join_prefers_own_daptype_finds_halpha_by_name_and_fills_gaps(survey, tmp_path, capsys):
    # The header lists the channels in reverse: reading Halpha by DR17's index would take another line.
    channels = DR17_CHANNELS[::-1]
    dapall = dapall_file(tmp_path / "dapall.fits", [
        ("90000-1901", "OTHER-TYPE", 9.0, 0, 99.0),
        ("90000-1901", OWN, 1.5, 0, 11.0),  # the galaxy's own DAPTYPE: this row wins
        ("90001-1901", "OTHER-TYPE", -999.0, 0, 12.0),  # the only row: taken; -999 is no measurement
        ("90002-1901", OWN, 3.0, CRITICAL, 13.0),
        ("77777-1901", OWN, 4.0, 0, 14.0),  # no such galaxy
    ], channels=channels)
    drpall = drpall_file(tmp_path / "drpall.fits", ["90000-1901", "90003-1901"], [1e10, 3e9])
    out = tmp_path / "ds"
    assert main(["ingest", str(survey), "--out", str(out), "--size", "8", "--workers", "1", "--quiet",
                 "--dapall", str(dapall), "--drpall", str(drpall)]) == 0
    printed = capsys.readouterr().out
    assert "3 of 5 galaxies matched a row of its 5" in printed and "2 of 5 galaxies matched a row of its 2" in printed
    cat = open_dataset(out).catalogue.set_index("galaxy_id")
    assert cat.loc["90000-1901", "sfr_tot"] == 1.5 and cat.loc["90000-1901", "emline_gew_1re_ha"] == 11.0
    assert np.isnan(cat.loc["90001-1901", "sfr_tot"]) and cat.loc["90001-1901", "emline_gew_1re_ha"] == 12.0
    assert np.isnan(cat.loc["90003-1901", "sfr_1re"]) and pd.isna(cat.loc["90003-1901", "dapqual"])
    assert str(cat["dapqual"].dtype) == "Int64" and cat.loc["90002-1901", "dapqual"] == CRITICAL
    assert cat.loc["90003-1901", "nsa_elpetro_mass"] == 3e9 and np.isnan(cat.loc["90001-1901", "nsa_elpetro_mass"])
    joins = open_dataset(out).manifest.joins
    assert [j["kind"] for j in joins] == ["dapall", "drpall"] and joins[0]["matched"] == 3
    assert len(joins[0]["sha256"]) == 64 and "emline_gew_1re_ha" in joins[0]["columns"]


def test_drop_critical_rerun_and_changed_catalogue(survey, tmp_path):
    rows = [(f"9000{i}-1901", OWN, 1.0 + i, CRITICAL if i == 2 else 0, 5.0) for i in range(4)]
    dapall = dapall_file(tmp_path / "dapall.fits", rows)
    out = tmp_path / "ds"
    files = SummaryFiles(dapall=str(dapall), drop_critical=True)
    report = ingest([survey], out, IngestOptions(size=8), workers=1, progress=False, catalogues=files)
    assert report.n_ingested == 4  # of 5: 90009-1901 has no row and stays
    assert [s["reason"] for s in report.skipped] == ["DAPall DAPQUAL has the CRITICAL bit set (--drop-critical)"]
    assert "90002-1901" not in set(open_dataset(out).catalogue.galaxy_id)
    # the same files and catalogue: nothing to do; without --drop-critical: joined again, all five kept
    assert ingest([survey], out, IngestOptions(size=8), workers=1, progress=False, catalogues=files).reused == 5
    again = ingest([survey], out, IngestOptions(size=8), workers=1, progress=False,
                   catalogues=SummaryFiles(dapall=str(dapall)))
    assert again.n_ingested == 5 and open_dataset(out).manifest.joins[0]["drop_critical"] is False
    # a plain ingest of the same folder removes the joined columns
    ingest([survey], out, IngestOptions(size=8), workers=1, progress=False)
    assert "sfr_tot" not in open_dataset(out).catalogue and not open_dataset(out).manifest.joins


def test_bad_catalogues_are_refused_with_what_is_wrong(survey, tmp_path, capsys):
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("PLATEIFU", "12A", array=["90000-1901"])])]).writeto(tmp_path / "thin.fits")
    with pytest.raises(DatasetError, match=r"thin.fits: extension .* has no column SFR_TOT.*its columns are PLATEIFU"):
        ingest([survey], tmp_path / "ds", IngestOptions(size=8), workers=1, progress=False,
               catalogues=SummaryFiles(dapall=str(tmp_path / "thin.fits")))
    (tmp_path / "text.fits").write_text("not fits")
    assert main(["ingest", str(survey), "--out", str(tmp_path / "ds"), "--quiet", "--dapall", str(tmp_path / "text.fits")]) == 2
    assert "text.fits: not a FITS file" in capsys.readouterr().err
    # 30 channels and no names in the header: no release has 30, so the Halpha channel is unknown
    dapall_file(tmp_path / "odd.fits", [("90000-1901", OWN, 1.0, 0, 5.0)], channels=DR17_CHANNELS[:30],
                header_names=False)
    with pytest.raises(DatasetError, match="EMLINE_GEW_1RE has 30 channels and the header does not name them"):
        read_columns(tmp_path / "odd.fits", (), (("EMLINE_GEW_1RE", "Ha-6564"),))
    assert main(["ingest", str(survey), "--out", str(tmp_path / "ds"), "--quiet", "--drop-critical"]) == 2
    assert "give --dapall" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ingest", str(survey), "--out", str(tmp_path / "ds"), "--dapall", str(tmp_path / "absent.fits")])
    assert "absent.fits: no such file" in capsys.readouterr().err


@pytest.fixture
def dapall_subset():
    if not DAPALL_SUBSET.is_file():
        pytest.skip(f"real DAPall subset not found at {DAPALL_SUBSET} (../shared/data beside the repository)")
    return DAPALL_SUBSET


def test_real_dapall_subset(dapall_subset, tmp_path):
    real = fits.getdata(dapall_subset, 1)
    src = tmp_path / "maps"
    src.mkdir()
    ids = [str(p).strip() for p in real["PLATEIFU"][:3]]
    for i, gid in enumerate(ids):
        blob_galaxy(src / f"manga-{gid}-MAPS-SYNTH-GAU.fits.gz", gid, seed=i)
    blob_galaxy(src / "manga-90000-1901-MAPS-SYNTH-GAU.fits.gz", "90000-1901", seed=5)  # not in DAPall
    report = ingest([src], tmp_path / "ds", IngestOptions(size=8), workers=1, progress=False,
                    catalogues=SummaryFiles(dapall=str(dapall_subset)))
    assert report.joins[0]["rows"] == 664 and report.joins[0]["matched"] == 3
    cat = open_dataset(tmp_path / "ds").catalogue.set_index("galaxy_id")
    # DR17's Halpha is channel 24 of 35 (core.lines.DR17_CHANNELS); the subset's header does not name them
    for i, gid in enumerate(ids):
        assert cat.loc[gid, "emline_gew_1re_ha"] == pytest.approx(float(real["EMLINE_GEW_1RE"][i][23]))
        assert cat.loc[gid, "nsa_sersic_n"] == pytest.approx(float(real["NSA_SERSIC_N"][i]))
        assert cat.loc[gid, "dapqual"] == int(real["DAPQUAL"][i])
    assert np.isnan(cat.loc["90000-1901", "sfr_tot"])


def test_where_selects_rows_and_names_columns_when_wrong(dapall_subset):
    table = scalar_table(dapall_subset)
    picked = select_rows(table, "Z < 0.03 and NSA_ELPETRO_BA > 0.5", dapall_subset)
    assert 0 < len(picked) < len(table) and (picked["Z"] < 0.03).all()
    assert len(select_rows(table, "PLATEIFU == '7495-1902'", dapall_subset)) == 1
    for bad in ("ZED < 3", "Z <", "__import__('os')", "@x > 1", "Z + 1"):
        with pytest.raises(DatasetError, match="NSA_ELPETRO_BA"):
            select_rows(table, bad, dapall_subset)
