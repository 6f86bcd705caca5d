"""``train annotate``: an external catalogue cross-matched into a run, in every format, refused when ambiguous."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
import astropy.units as u

from core.annotate import annotate
from core.errors import RunError
from core.io import sha256_file
from core.run import RunManifest, open_run
from tests.fakerun import make_fake_run
from train.cli import main


@pytest.fixture
def run(tmp_path):
    """A fake run of 40 galaxies whose evaluation covers the catalogue that is there."""
    path = make_fake_run(tmp_path / "run", n=40, n_lines=4, size=8)
    m = RunManifest.read(path)
    sha = sha256_file(path / "catalogue.parquet")
    replace(m, checksums={"catalogue.parquet": sha},
            evaluation=replace(m.evaluation, catalogue_sha256=sha)).write(path)
    return path


def agn_table(run, n=5):
    """The first ``n`` galaxies of the run plus one unknown, with a number, an integer, a flag and text."""
    cat = open_run(run).catalogue
    ids = [*cat["galaxy_id"][:n], "99999-1901"]
    return Table({"PLATEIFU": ids, "AGN_Lum": np.arange(n + 1) * 1.5, "n_obs": np.arange(n + 1),
                  "radio": [True, False] * ((n + 2) // 2) if (n + 1) % 2 == 0 else [True] * (n + 1),
                  "agn_type": ["Sy1", "Sy2", "LINER", "Sy2", "Sy1", "none"][: n + 1]})


@pytest.mark.parametrize("suffix", [".fits", ".csv", ".ecsv", ".parquet", ".vot"])
def test_each_format_by_plateifu(run, tmp_path, suffix, capsys):
    table = agn_table(run)
    path = tmp_path / f"agn{suffix}"
    if suffix == ".parquet":
        table.to_pandas().to_parquet(path)
    else:
        table.write(path, format={".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".vot": "votable"}.get(suffix, "fits"))
    assert main(["annotate", "--run", str(run), str(path), "--on", "plateifu"]) == 0
    assert "5 of 40 galaxies" in capsys.readouterr().out
    r = open_run(run)  # the run still opens: the catalogue's stamp was updated with it
    cat = r.catalogue
    assert list(cat.columns[-4:]) == ["agn_lum", "n_obs", "radio", "agn_type"]
    assert cat["agn_lum"][:5].tolist() == [0.0, 1.5, 3.0, 4.5, 6.0] and cat["agn_lum"][5:].isna().all()
    assert str(cat["n_obs"].dtype) == "Int64" and cat["n_obs"][5:].isna().all()
    assert cat["agn_type"][:3].tolist() == ["Sy1", "Sy2", "LINER"] and cat["agn_type"][5:].isna().all()
    # the evaluation still counts: it covers the same galaxies and scores, only columns were added
    assert r.evaluation is not None and r.manifest.checksums["catalogue.parquet"] == sha256_file(run / "catalogue.parquet")
    record = r.manifest.annotations[-1]
    assert record["matched"] == 5 and record["on"] == "plateifu" and len(record["sha256"]) == 64


def test_radec_with_radius_units_and_separation(run, tmp_path, capsys):
    cat = open_run(run).catalogue
    offset = np.array([0.5, 1.5, 3.0, 10.0]) / 3600  # degrees north of four galaxies
    table = Table({"RAJ2000": cat["ra"][:4].to_numpy() * u.deg,
                   "DEJ2000": np.radians(cat["dec"][:4].to_numpy() + offset) * u.rad,  # a unit, converted
                   "merger": [1, 1, 0, 1]})
    table.write(tmp_path / "m.fits")
    assert main(["annotate", "--run", str(run), str(tmp_path / "m.fits"), "--on", "radec", "--radius", "2arcsec",
                 "--prefix", "gz_"]) == 0
    assert "2 of 40 galaxies" in capsys.readouterr().out
    out = open_run(run).catalogue
    assert out["gz_merger"][:2].tolist() == [1, 1] and out["gz_merger"][2:].isna().all()
    assert out["gz_sep_arcsec"][:2].to_numpy() == pytest.approx([0.5, 1.5], abs=1e-3)
    # the same file again, 0.1 arcmin (6") wide: the names are taken now, so it is refused, naming them
    with pytest.raises(RunError, match=r"merger -> gz_merger.*already has; add a prefix"):
        annotate(run, tmp_path / "m.fits", on="radec", radius_arcsec=6.0, prefix="gz_")
    assert main(["annotate", "--run", str(run), str(tmp_path / "m.fits"), "--on", "radec", "--radius", "0.1arcmin",
                 "--prefix", "wide_"]) == 0
    assert "3 of 40 galaxies" in capsys.readouterr().out


def test_no_match_and_refusals_leave_the_run_untouched(run, tmp_path, capsys):
    before = sha256_file(run / "catalogue.parquet")
    Table({"plateifu": ["1-1", "2-2"], "x": [1.0, 2.0]}).write(tmp_path / "none.csv", format="ascii.csv")
    assert main(["annotate", "--run", str(run), str(tmp_path / "none.csv"), "--on", "plateifu"]) == 0
    assert "0 of 40 galaxies" in (out := capsys.readouterr().out) and "no galaxy matched" in out
    assert open_run(run).catalogue["x"].isna().all()
    before = sha256_file(run / "catalogue.parquet")

    def refused(table, *args, match, fmt="ascii.csv", name="t.csv"):
        if table is not None:
            table.write(tmp_path / name, format=fmt, overwrite=True)
        assert main(["annotate", "--run", str(run), str(tmp_path / name), *args]) == 2
        assert match in capsys.readouterr().err

    ids = open_run(run).catalogue["galaxy_id"][:2].tolist()
    refused(Table({"plateifu": ids, "Z": [0.1, 0.2]}), "--on", "plateifu", match="Z -> z would replace")
    refused(Table({"plateifu": ids, "Mass": [1, 2], "MASS": [3, 4]}), "--on", "plateifu",
            match="differ only in case are ambiguous: Mass and MASS")
    refused(Table({"name": ids, "y": [1, 2]}), "--on", "plateifu", match="no key column (looked for plateifu")
    refused(Table({"plateifu": ids, "y": [1, 2]}), "--on", "plateifu", "--key", "PIFU",
            match="no PIFU column")
    refused(Table({"alpha": [1.0], "dec": [2.0]}), "--on", "radec", match="no ra column")
    refused(Table({"ra": ["a"], "dec": ["b"]}), "--on", "radec", match="column ra holds no numbers")
    refused(Table({"ra": [1.0] * u.kg, "dec": [2.0]}), "--on", "radec", fmt="fits", name="t.fits",
            match="column ra is in 'kg', which is not an angle")
    refused(Table({"ra": [1.0], "dec": [2.0]}), "--on", "radec", "--radius", "5arcmin", match="at most 60 arcsec")
    (tmp_path / "bad.fits").write_text("not a table")
    refused(None, "--on", "plateifu", name="bad.fits", match="bad.fits: cannot be read as fits")
    (tmp_path / "t.txt").write_text("x")
    refused(None, "--on", "plateifu", name="t.txt", match="unknown table format .txt")
    for bad in ("-2arcsec", "0", "two", "2 parsecs"):
        with pytest.raises(SystemExit):
            main(["annotate", "--run", str(run), str(tmp_path / "none.csv"), "--on", "radec", "--radius", bad])
    assert "is not a radius" in capsys.readouterr().err
    assert sha256_file(run / "catalogue.parquet") == before


def test_new_columns_reach_the_app(run, tmp_path):
    """Numbers join the colour-by list (integers with gaps too), text the selection table."""
    from dashboard.data import open_app_data

    agn_table(run).write(tmp_path / "agn.fits")
    annotate(run, tmp_path / "agn.fits", on="plateifu")
    data = open_app_data(run)
    assert {"agn_lum", "n_obs"} <= set(data.numeric_colours) and "agn_type" in data.colour_options
    assert np.isnan(data.colour_frame("n_obs")["v"].to_numpy()[5:]).all()
    assert "agn_type" in data.table_base.columns and "agn_lum" not in data.table_base.columns
    from dashboard.state import DashboardState
    from dashboard.views import SelectionTable

    state = DashboardState(data)
    view = SelectionTable(state=state)
    state.select_box(-1e9, 1e9, -1e9, 1e9)
    shown = view._table.value
    assert "agn_type" in shown.columns and len(shown) == 40
    assert set(shown["agn_type"].dropna()) == {"Sy1", "Sy2", "LINER"}
    # the colouring by an annotated column paints
    state.colour_by = "agn_lum"
