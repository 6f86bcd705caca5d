"""The discovery loop in headless Chromium: label with the keyboard, reload and see the label,
re-rank, open a saved selection from its URL and save one from the page.

A server of its own (``--user tester``) on a run of its own, since these tests write labels,
a ranking and selections into the run. Expected values come from the run's files.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect

from core.labels import LabelStore
from tests.browser.conftest import serve
from tests.browser.test_app import INSPECTED, TABLE_IDS, WAIT_MS, open_app, table_ids
from tests.fakerun import make_fake_run

pytestmark = pytest.mark.browser

ACTIVE = ".bk-btn-group button.bk-active"
STATUS = ".bb-discovery-status"


@pytest.fixture(scope="module")
def disco_run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("disco-browser") / "disco-run", n=300)


@pytest.fixture(scope="module")
def disco_server(disco_run, tmp_path_factory):
    yield from serve(disco_run, tmp_path_factory.mktemp("disco-server"), "--user", "tester")


@pytest.fixture(scope="module")
def catalogue(disco_run) -> pd.DataFrame:
    return pd.read_parquet(disco_run / "catalogue.parquet")


def anomaly_ids(catalogue) -> list[str]:
    return catalogue["galaxy_id"].to_numpy()[np.argsort(-catalogue["anomaly_score"].to_numpy(), kind="stable")].tolist()


def test_label_with_the_keyboard_walk_with_n_and_see_the_label_after_a_reload(page, disco_server, disco_run,
                                                                              catalogue, artifacts):
    first, second = anomaly_ids(catalogue)[:2]
    open_app(page, disco_server)
    expect(page.locator(INSPECTED).first).to_have_text(first, timeout=WAIT_MS)
    expect(page.locator(".bk-btn-group").first).to_be_visible(timeout=WAIT_MS)
    page.locator("body").click(position={"x": 5, "y": 5})  # the focus on the page, not in a box
    page.keyboard.press("4")
    expect(page.locator(ACTIVE).first).to_have_text("4", timeout=WAIT_MS)
    latest = LabelStore(disco_run).latest()
    assert latest[["galaxy_id", "interest", "user"]].values.tolist() == [[first, 4, "tester"]]

    # Digits typed into the note box are text, not labels.
    note = page.get_by_placeholder("note (Enter saves it with the label)")
    note.fill("2 arms")
    note.press("Enter")
    expect(page.locator(".bb-history").first).to_contain_text("2 arms", timeout=WAIT_MS)
    assert LabelStore(disco_run).history(first)["interest"].tolist() == [4, 4]

    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("n")
    expect(page.locator(INSPECTED).first).to_have_text(second, timeout=WAIT_MS)
    expect(page.locator(ACTIVE)).to_have_count(0, timeout=WAIT_MS)
    page.keyboard.press("p")
    expect(page.locator(INSPECTED).first).to_have_text(first, timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "dashboard-labels.png"))

    # A reload is a new session: it reads the label from the run.
    page.reload()
    page.wait_for_url(re.compile(rf"galaxy={re.escape(first)}"))
    expect(page.locator(INSPECTED).first).to_have_text(first, timeout=WAIT_MS)
    expect(page.locator(ACTIVE).first).to_have_text("4", timeout=WAIT_MS)
    expect(page.locator(".bb-history").first).to_contain_text("tester", timeout=WAIT_MS)


def test_rerank_recolours_the_map_and_orders_the_table(page, disco_server, disco_run, catalogue):
    store = LabelStore(disco_run)
    ids = anomaly_ids(catalogue)
    store.set_many([(ids[0], 5, ""), (ids[1], 0, ""), (ids[2], 4, "")], user="tester")
    open_app(page, disco_server)
    page.get_by_role("button", name="Re-rank").click()
    expect(page.locator(STATUS).first).to_contain_text("re-ranked on", timeout=WAIT_MS)
    page.wait_for_function("""() => Bokeh.index.query_one(v => v.model && v.model.name === 'latent-map')
                                .model.title.text.endsWith('coloured by relevance')""", timeout=WAIT_MS)
    ranking = pd.read_parquet(disco_run / "ranking.parquet")
    assert len(ranking) == len(catalogue)

    # Everything selected, ordered by relevance: the table's first row is the most relevant galaxy.
    open_app(page, disco_server)  # a new session: the ranking's orders are offered from the start
    page.locator("select").filter(has_text="label next").first.select_option(label="relevance")
    best = ranking.sort_values("relevance", ascending=False, kind="stable")["galaxy_id"].tolist()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("n")  # with nothing selected, n walks every galaxy in the table's order
    expect(page.locator(INSPECTED).first).to_have_text(best[0], timeout=WAIT_MS)


def test_a_saved_selection_opens_from_its_url_and_saving_one_names_it_in_the_url(page, disco_server, disco_run,
                                                                                catalogue):
    chosen = catalogue["galaxy_id"].iloc[[3, 30, 90, 150, 210]].tolist()
    LabelStore(disco_run).save_selection("five", chosen, user="someone")
    galaxy = chosen[2]
    open_app(page, disco_server, f"?selection=five&galaxy={galaxy}")
    page.locator("text=/^5 selected · saved selection “five”/").first.wait_for(timeout=WAIT_MS)
    expect(page.locator(INSPECTED).first).to_have_text(galaxy, timeout=WAIT_MS)
    assert sorted(table_ids(page)) == sorted(chosen)
    assert "selection=five" in page.url

    page.get_by_placeholder("name").fill("copy of five")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(re.compile(r"selection=copy(\+|%20)of(\+|%20)five"), timeout=WAIT_MS)
    assert sorted(LabelStore(disco_run).selection("copy of five")) == sorted(chosen)
    expect(page.locator(TABLE_IDS).first).to_be_visible()
