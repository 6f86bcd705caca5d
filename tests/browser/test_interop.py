"""The served app's way out and in: the inspector's links, the search box, FITS / VOTable downloads, SAMP button."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from playwright.sync_api import expect

from tests.browser.test_app import INSPECTED, WAIT_MS, by_score, catalogue, open_app, wait_count  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser
SEARCH = "input[placeholder^='plate-IFU']"


def search(page, text: str) -> None:
    box = page.locator(SEARCH).first
    box.fill(text)
    box.press("Enter")


def test_inspector_links_open_marvin_skyserver_and_legacy_surveys(page, server, catalogue):
    galaxy = catalogue["galaxy_id"].iat[17]
    open_app(page, server, f"?galaxy={galaxy}")
    expect(page.locator(INSPECTED).first).to_have_text(galaxy, timeout=WAIT_MS)
    links = page.locator(".bb-links a")
    expect(links).to_have_count(3, timeout=WAIT_MS)
    hrefs = {links.nth(i).inner_text(): links.nth(i).get_attribute("href") for i in range(3)}
    ra, dec = catalogue["ra"].iat[17], catalogue["dec"].iat[17]
    assert hrefs["Marvin"] == f"https://dr17.sdss.org/marvin/galaxy/{galaxy}/"
    assert hrefs["SkyServer"] == (f"https://skyserver.sdss.org/dr17/en/tools/chart/navi.aspx?ra={ra:.6f}"
                                  f"&dec={dec:.6f}")
    assert hrefs["Legacy Surveys"].startswith(f"https://www.legacysurvey.org/viewer?ra={ra:.6f}&dec={dec:.6f}")
    for i in range(3):
        assert links.nth(i).get_attribute("target") == "_blank"
        assert "noopener" in links.nth(i).get_attribute("rel")


def test_search_inspects_one_selects_a_plate_and_says_when_nothing_matches(page, server, catalogue):
    open_app(page, server)
    galaxy = catalogue["galaxy_id"].iat[42]
    search(page, galaxy)
    expect(page.locator(INSPECTED).first).to_have_text(galaxy, timeout=WAIT_MS)
    wait_count(page, 1)
    plate = galaxy.split("-")[0] + "-"
    search(page, plate)
    expected = by_score(catalogue, catalogue["galaxy_id"].str.startswith(plate).to_numpy())
    assert len(expected) > 1
    wait_count(page, len(expected))
    expect(page.locator(".bb-search-message").first).to_contain_text(f"{len(expected)} galaxies", timeout=WAIT_MS)
    search(page, "no-such-plate")
    expect(page.locator(".bb-search-message").first).to_contain_text("No galaxy", timeout=WAIT_MS)
    wait_count(page, len(expected))  # a miss changes nothing
    ra, dec = catalogue["ra"].iat[5], catalogue["dec"].iat[5]
    search(page, f"{ra:.6f} {dec:.6f} 2arcsec")
    expect(page.locator(INSPECTED).first).to_have_text(catalogue["galaxy_id"].iat[5], timeout=WAIT_MS)


@pytest.mark.parametrize("button, fmt, ext", [("FITS", "fits", "fits"), ("VOTable", "votable", "vot")])
def test_export_buttons_download_valid_fits_and_votable(page, server, catalogue, button, fmt, ext):
    open_app(page, server)
    plate = catalogue["galaxy_id"].iat[0].split("-")[0] + "-"
    search(page, plate)
    expected = by_score(catalogue, catalogue["galaxy_id"].str.startswith(plate).to_numpy())
    wait_count(page, len(expected))
    with page.expect_download() as info:
        page.get_by_role("button", name=button, exact=True).click()
    download = info.value
    assert re.fullmatch(rf"fake-run_\d{{8}}-\d{{6}}\.{ext}", download.suggested_filename)
    table = Table.read(Path(download.path()), format=fmt)
    assert list(table["galaxy_id"]) == expected
    assert set(table.colnames) == set(catalogue.columns) and str(table["ra"].unit) == "deg"
    np.testing.assert_allclose(np.asarray(table["ra"], float),
                               catalogue.set_index("galaxy_id").loc[expected, "ra"].to_numpy())


def test_samp_button_is_there_and_says_whether_it_can_send(page, server):
    open_app(page, server)
    button = page.get_by_role("button", name="Send to TOPCAT / Aladin")
    expect(button).to_have_count(1)
    if button.is_disabled():  # the usual case on a test machine: no TOPCAT, so no hub
        expect(page.locator(".bb-samp-note").first).to_contain_text("no SAMP hub")
