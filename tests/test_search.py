"""The search box (core.search, DashboardState.find) and the inspector's links (core.links)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core import links
from core.links import DEFAULT_LINKS, LinksError, galaxy_links, links_html, load_links
from core.search import DEFAULT_RADIUS_ARCSEC, IdIndex, parse_position, search, separation_deg
from dashboard.data import open_app_data
from dashboard.state import DashboardState
from tests.fakerun import make_fake_run
from train.cli import main


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    """Plate-IFUs of two plates and MaNGA-IDs, three galaxies close together near (150.1, 2.2)."""
    return pd.DataFrame({
        "galaxy_id": ["7815-12701", "7815-1901", "7815-3702", "8140-12701", "78150-1901", "9999-1902"],
        "mangaid": ["1-593159", "1-59315", "12-1234", "1-000001", "1-42", "1-43"],
        "ra": [150.1, 150.1 + 3 / 3600, 150.1, 10.0, 200.0, np.nan],
        "dec": [2.2, 2.2, 2.2 + 20 / 3600, -5.0, 45.0, np.nan],
    })


def test_an_exact_id_wins_over_longer_ids_that_start_with_it(catalogue):
    assert search(catalogue, "7815-1901").rows.tolist() == [1]
    assert search(catalogue, "1-59315").rows.tolist() == [1], "the exact MaNGA-ID, not 1-593159 too"
    result = search(catalogue, "  7815-12701 ")
    assert result.rows.tolist() == [0] and result.kind == "id"


def test_a_prefix_lists_a_plate_or_mangaids(catalogue):
    assert sorted(search(catalogue, "7815-").rows.tolist()) == [0, 1, 2]
    assert sorted(search(catalogue, "7815").rows.tolist()) == [0, 1, 2, 4]
    assert sorted(search(catalogue, "1-5931").rows.tolist()) == [0, 1]
    assert "3 galaxies" in search(catalogue, "7815-").message


def test_no_match_and_unreadable_input_say_so(catalogue):
    for text, words in [("7816-", "No galaxy's plate-IFU or MaNGA-ID"), ("", "Type a plate-IFU"),
                        ("foo bar", "Cannot read 'foo bar'"), ("400 2", "RA 400 is outside"),
                        ("1 95", "Dec 95 is outside"), ("150.1 2.2 0arcsec", "radius"), ("x" * 500, "at most")]:
        result = search(catalogue, text)
        assert len(result.rows) == 0 and words in result.message, (text, result.message)


@pytest.mark.parametrize("text", ["150.1 2.2", "150.1, 2.2", "10h00m24s +02d12m", "10:00:24 +02:12:00",
                                  "10 00 24 +02 12 00", "150d06m00s 2d12m00s"])
def test_positions_in_degrees_and_sexagesimal(catalogue, text):
    ra, dec, radius = parse_position(text)
    assert ra == pytest.approx(150.1) and dec == pytest.approx(2.2) and radius == pytest.approx(5 / 3600)
    result = search(catalogue, text)
    # Rows 0 (at the position) and 1 (3 arcsec east): both within the default 5 arcsec, nearest first.
    assert result.kind == "position" and result.rows.tolist() == [0, 1]


def test_a_radius_widens_the_cone_and_galaxies_without_a_position_never_match(catalogue):
    assert search(catalogue, "150.1 2.2 30arcsec").rows.tolist() == [0, 1, 2]
    assert search(catalogue, "150.1 2.2 0.5arcmin").rows.tolist() == [0, 1, 2]
    assert search(catalogue, "150.1 2.2 2arcsec").rows.tolist() == [0]
    assert search(catalogue, "10h00m24s +02d12m 1deg").rows.tolist() == [0, 1, 2]
    assert parse_position("1 2 3\"")[2] == pytest.approx(3 / 3600)
    assert "No galaxy within 5 arcsec" in search(catalogue, "0 0").message
    assert DEFAULT_RADIUS_ARCSEC == 5.0


def test_separation_matches_astropy():
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50)
    expected = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(150.1 * u.deg, 2.2 * u.deg)).deg
    np.testing.assert_allclose(separation_deg(ra, dec, 150.1, 2.2), expected, atol=1e-9)


def test_id_index_at_scale_is_two_binary_searches():
    ids = [f"{7000 + i // 17}-{1901 + i % 17}" for i in range(20_000)]
    index = IdIndex(pd.DataFrame({"galaxy_id": ids}))
    rows = index.find("7005-")
    assert sorted(rows.tolist()) == [i for i, g in enumerate(ids) if g.startswith("7005-")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return open_app_data(make_fake_run(tmp_path_factory.mktemp("search") / "fake-run", n=120))


def test_state_find_inspects_one_selects_several_and_leaves_a_miss_alone(data):
    state = DashboardState(data)
    cat = data.catalogue
    target = str(cat["galaxy_id"].iat[7])
    message = state.find(target)
    assert state.galaxy == target and state.selection.tolist() == [7] and state.selection_source == "search"
    assert target in message
    plate = target.split("-")[0] + "-"
    state.find(plate)
    expected = set(np.flatnonzero(cat["galaxy_id"].str.startswith(plate)))
    assert set(state.selection.tolist()) == expected and len(expected) > 1
    assert state.galaxy == target, "several found: selected, the inspected galaxy stays"
    assert "search" in state.count_text
    before = state.selection.copy()
    assert "No galaxy" in state.find("no-such-galaxy")
    assert np.array_equal(state.selection, before)
    ra, dec = cat["ra"].iat[30], cat["dec"].iat[30]
    state.find(f"{ra} {dec}")
    assert state.galaxy == cat["galaxy_id"].iat[30]


# ------------------------------------------------------------------ links


def test_default_links_of_a_galaxy():
    row = pd.Series({"galaxy_id": "8485-1901", "mangaid": "1-209232", "ra": 232.544703, "dec": 48.6902125})
    urls = dict(galaxy_links(row, DEFAULT_LINKS))
    assert urls == {
        "Marvin": "https://dr17.sdss.org/marvin/galaxy/8485-1901/",
        "SkyServer": "https://skyserver.sdss.org/dr17/en/tools/chart/navi.aspx?ra=232.544703&dec=48.690213",
        "Legacy Surveys": "https://www.legacysurvey.org/viewer?ra=232.544703&dec=48.690213&layer=ls-dr10&zoom=16",
    }


def test_links_escape_hostile_ids_and_skip_missing_positions(monkeypatch):
    monkeypatch.setattr(links, "_active", (dict(DEFAULT_LINKS), ""))
    row = pd.Series({"galaxy_id": '"><script>x</script>/../a b', "ra": np.nan, "dec": 1.0})
    urls = dict(galaxy_links(row, DEFAULT_LINKS))
    assert list(urls) == ["Marvin"], "no position: no sky links"
    assert urls["Marvin"] == "https://dr17.sdss.org/marvin/galaxy/%22%3E%3Cscript%3Ex%3C%2Fscript%3E%2F..%2Fa%20b/"
    text = links_html(row)
    assert "<script>" not in text and 'target="_blank"' in text and 'rel="noopener noreferrer"' in text


def test_links_from_a_file_the_environment_or_the_defaults(tmp_path, monkeypatch):
    path = tmp_path / "links.json"
    path.write_text(json.dumps({"NED": "https://ned.ipac.caltech.edu/conesearch?ra={ra}&dec={dec}"}))
    try:
        links.configure(str(path))
        assert list(links.active()[0]) == ["NED"]
        links.configure(None)
        assert links.active() == (DEFAULT_LINKS, "")
        links.configure.__globals__["_active"] = None  # not configured: the environment's file
        monkeypatch.setenv("BLUEBERRY_LINKS", str(path))
        assert list(links.active()[0]) == ["NED"]
    finally:
        links.configure(None)
    for content, words in [("[1]", "expected a JSON object"), ('{"a": "ftp://x/{ra}"}', "http"),
                           ('{"a": "https://x/{name}"}', "uses name"), ('{"a": "https://x/{ra"}', "bad brace"),
                           ("{", "not a JSON file")]:
        path.write_text(content)
        with pytest.raises(LinksError, match=words) as error:
            load_links(path)
        assert str(path) in str(error.value)
    with pytest.raises(LinksError, match="cannot read"):
        load_links(tmp_path / "missing.json")


def test_a_bad_links_file_shows_its_problem_where_the_links_go(tmp_path, monkeypatch):
    path = tmp_path / "links.json"
    path.write_text("[]")
    links.configure(str(path))
    try:
        text = links_html(pd.Series({"galaxy_id": "1-2", "ra": 1.0, "dec": 2.0}))
        assert "expected a JSON object" in text and "href" not in text
    finally:
        links.configure(None)
    assert "Marvin" in links_html(pd.Series({"galaxy_id": "1-2", "ra": 1.0, "dec": 2.0}))


def test_serve_passes_a_checked_links_file_to_the_app(tmp_path, capsys):
    path = tmp_path / "links.json"
    path.write_text(json.dumps({"Marvin": DEFAULT_LINKS["Marvin"]}))
    assert main(["serve", "--run", str(tmp_path), "--links", str(path), "--dry-run"]) == 0
    assert f"--args --run {tmp_path} --links {path}" in capsys.readouterr().out
    path.write_text('{"a": "javascript:alert(1)"}')
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--run", str(tmp_path), "--links", str(path), "--dry-run"])
    assert exit_.value.code == 2 and "http" in capsys.readouterr().err
