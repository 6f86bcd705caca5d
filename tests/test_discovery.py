"""The discovery loop in the app, without a server: labels, n / p, the queue, re-ranking, saved
selections, comparisons, the views' wiring, and ``explore()`` for notebooks.

Every test works on its own copy of a fake run, because labels and rankings are written into
the run folder. Expected values are computed here from the catalogue and the label store,
independently of the app's code.
"""
from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.document import Document

from core.labels import LabelStore
from core.rank import LABELLED_ACQUISITION, rank, read_ranking, write_ranking
from dashboard import explore
from dashboard.app import build_app
from dashboard.args import parse_app_args
from dashboard.compare import MAX_MAP_GALAXIES, compare_rows, mean_residuals
from dashboard.data import open_app_data
from dashboard.discovery import CURRENT, REST, check_name
from dashboard.state import DashboardState
from tests.fakerun import make_fake_run


def run_click(handler) -> None:
    """Run an async click handler to its end, on its own event loop in its own thread.

    Not ``asyncio.run`` in this thread: the browser tests' Playwright (sync API) keeps an event
    loop running in the main thread for the whole session when they run first.
    """
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, handler(None)).result()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("disco") / "fake-run", n=300)


@pytest.fixture
def run_path(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "fake-run"))


@pytest.fixture
def data(run_path):
    return open_app_data(run_path)


@pytest.fixture
def state(data) -> DashboardState:
    return DashboardState(data)


def ids(data, rows) -> list[str]:
    return data.catalogue["galaxy_id"].to_numpy()[np.asarray(rows, dtype=np.int64)].tolist()


def anomaly_order(data) -> np.ndarray:
    return np.argsort(-data.catalogue["anomaly_score"].to_numpy(), kind="stable")


# ------------------------------------------------------------------ labels


def test_a_label_is_stored_with_its_history_and_seen_by_another_session_and_after_a_restart(state, data, run_path):
    d = state.discovery
    d.user = "ada"
    galaxy = state.galaxy
    d.label(2, "a ring?")
    d.label(4, "a ring!")
    history = LabelStore(run_path).history(galaxy)
    assert history["interest"].tolist() == [2, 4] and history["note"].tolist() == ["a ring?", "a ring!"]
    assert set(history["user"]) == {"ada"}
    assert d.interest_of() == 4
    # Another session of the same server, and a session after a restart (the run opened afresh).
    other = DashboardState(data, galaxy=galaxy)
    assert other.discovery.interest_of() == 4
    restarted = DashboardState(open_app_data(run_path), galaxy=galaxy)
    assert restarted.discovery.labels()[["galaxy_id", "interest"]].values.tolist() == [[galaxy, 4]]


def test_bad_labels_are_refused_and_nothing_is_written(state, run_path):
    d = state.discovery
    for bad in (6, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="interest"):
            d.label(bad)
    with pytest.raises(ValueError, match="no galaxy 'nope'"):
        d.label(3, galaxy="nope")
    assert len(LabelStore(run_path).latest()) == 0
    assert not (run_path / "labels.sqlite").exists(), "reading and refusing must not create the store"


def test_the_table_gains_the_interest_column_once_something_is_labelled(state, data):
    state.select_box(-20, 20, -20, 20)
    assert "interest" not in state.table_frame().columns
    state.discovery.label(5, galaxy=ids(data, [7])[0])
    table = state.table_frame()
    assert table.loc[7, "interest"] == 5 and table["interest"].isna().sum() == len(table) - 1


# ------------------------------------------------------------------ n / p and the queue


def test_next_and_previous_walk_the_table_order(state, data):
    d, order = state.discovery, anomaly_order(data)
    # Nothing selected: the walk is every galaxy, most anomalous first; the app opens on the first.
    assert state.row == order[0]
    assert d.next_galaxy() == order[1] and state.row == order[1]
    assert d.next_galaxy() == order[2]
    assert d.previous_galaxy() == order[1]
    assert d.previous_galaxy() == order[0]
    assert d.previous_galaxy() is None and state.row == order[0] and "start" in d.status
    # A selection: its rows in the table's order; a galaxy outside it steps to its first row.
    x = data.catalogue["umap_x"].to_numpy()
    state.select_box(-20, float(np.median(x)), -20, 20)
    rows = state.table_frame().index.to_numpy()
    assert state.row not in rows or rows[0] == state.row
    state.inspect(int(np.setdiff1d(np.arange(data.n), rows)[0]))
    assert d.next_galaxy() == rows[0]
    state.inspect(int(rows[-1]))
    assert d.next_galaxy() is None and "end" in d.status


def test_unlabelled_first_and_a_walk_that_labelling_does_not_derail(state, data):
    d, order = state.discovery, anomaly_order(data)
    state.select_box(-20, 20, -20, 20)
    d.label(1, galaxy=ids(data, [order[1]])[0])
    d.unlabelled_first = True
    table = state.table_frame()
    assert table.index[-1] == order[1] and table["interest"].iloc[:-1].isna().all()
    # Label the first row, then n goes to the row after it as the table showed it, although
    # the label has moved it to the end.
    state.inspect(int(table.index[0]))
    d.label(3)
    assert state.table_frame().index[0] == table.index[1]
    assert d.next_galaxy() == table.index[1]


def test_label_next_walks_the_queue_then_says_when_it_is_empty(state, data, run_path):
    d = state.discovery
    first = d.label_next()
    assert first == anomaly_order(data)[0], "before any ranking the queue is the anomaly order"
    assert d.unlabelled_first and d.order_by == "anomaly_score"
    d.label(5)
    assert d.label_next() == anomaly_order(data)[1]
    d.rerank()
    ranking = read_ranking(run_path)
    acquisition = ranking["acquisition"].to_numpy()
    labelled = d.labels()["galaxy_id"].tolist()
    assert (acquisition[data.rows_of(labelled)] == LABELLED_ACQUISITION).all()
    expected = int(np.argsort(-acquisition, kind="stable")[0])
    assert d.label_next() == expected and d.order_by == "acquisition"
    # A small selection, all labelled: the queue is empty and says so.
    state.select_rows(data.rows_of(labelled), "latent")
    assert d.label_next() is None and "every galaxy" in d.status
    assert d.queue_text().startswith("0 to label · 1 labelled in the run")


# ------------------------------------------------------------------ re-ranking


def test_rerank_writes_the_ranking_colours_by_relevance_and_orders_the_table(state, data, run_path):
    d = state.discovery
    assert "relevance" not in state.param.colour_by.objects and list(d.param.order_by.objects) == ["anomaly_score"]
    top = anomaly_order(data)
    for row, value in zip(top[:6], (5, 0, 4, 0, 1, 0)):
        d.label(value, galaxy=ids(data, [row])[0])
    d.rerank()
    ranking = read_ranking(run_path)
    assert ranking is not None and ranking["galaxy_id"].tolist() == data.catalogue["galaxy_id"].tolist()
    assert state.colour_by == "relevance" and "relevance" in data.colour_options
    np.testing.assert_array_equal(data.colour_frame("relevance")["v"].to_numpy(), ranking["relevance"].to_numpy())
    assert set(d.param.order_by.objects) == {"anomaly_score", "relevance", "acquisition"}
    assert d.status.startswith("re-ranked on 6 labels in ")
    d.order_by = "relevance"
    state.select_box(-20, 20, -20, 20)
    table = state.table_frame()
    expected = np.argsort(-ranking["relevance"].to_numpy(), kind="stable")
    assert table["relevance"].is_monotonic_decreasing
    assert set(table.index[:20]) == set(expected[:20]) or np.allclose(table["relevance"].to_numpy()[:20],
                                                                      ranking["relevance"].to_numpy()[expected[:20]])
    # A restarted server reads the ranking back, and offers it at once.
    again = DashboardState(open_app_data(run_path))
    assert "relevance" in again.param.colour_by.objects and again.discovery.loop.ranking is not None


def test_a_ranking_written_elsewhere_reaches_the_next_session(state, data, run_path):
    assert state.discovery.loop.ranking is None
    write_ranking(run_path, rank(data.run, None))  # as `python -m train rank` or another server process does
    other = DashboardState(data)
    assert other.discovery.loop.ranking is not None and "relevance" in other.param.colour_by.objects
    np.testing.assert_allclose(other.discovery.ranking_frame()["relevance"], data.catalogue["anomaly_pct"] / 100)


def test_a_damaged_ranking_is_ignored_with_a_note(run_path):
    (run_path / "ranking.parquet").write_bytes(b"not parquet")
    state = DashboardState(open_app_data(run_path))
    assert state.discovery.loop.ranking is None
    assert "ranking.parquet" in state.discovery.queue_text()


# ------------------------------------------------------------------ saved selections


def test_save_and_open_a_selection_by_name(state, data, run_path):
    d = state.discovery
    state.select_box(-20, float(np.median(data.x)), -20, 20)
    saved = ids(data, state.selection)
    assert d.save_selection("  left half ") == len(saved)
    assert d.selection_name == "left half" and state.count_text.endswith("saved selection “left half”")
    assert LabelStore(run_path).selection("left half") == saved
    state.clear_selection()
    assert d.selection_name == "", "a gesture makes a selection that is no longer the saved one"
    # Opening by name (what ?selection= in the URL does) selects the same galaxies.
    d.selection_name = "left half"
    assert ids(data, state.selection) == saved and state.selection_source == "saved"
    other = DashboardState(data)
    assert other.discovery.open_selection("left half") == len(saved)
    d.delete_selection("left half")
    assert d.selection_name == "" and "left half" not in set(d.saved_selections()["name"])


def test_the_bar_deletes_the_saved_selection_it_shows(state, data):
    from dashboard.views import DiscoveryBar

    bar = DiscoveryBar(state=state)
    assert bar._delete.disabled, "nothing to delete before a selection is chosen"
    state.select_box(-20, float(np.median(data.x)), -20, 20)
    bar._name.value = "left half"
    bar._save.clicks += 1
    assert bar._picker.options == ["", "left half"] and bar._picker.value == "left half"
    assert not bar._delete.disabled
    bar._delete.clicks += 1
    assert "left half" not in set(state.discovery.saved_selections()["name"])
    assert bar._picker.options == [""] and bar._delete.disabled
    assert "deleted the saved selection 'left half'" in state.discovery.status
    assert len(state.selection), "the galaxies stay selected"


def test_bad_selection_names_and_unknown_selections(state, data):
    d = state.discovery
    with pytest.raises(ValueError, match="nothing is selected"):
        d.save_selection("empty")
    for bad, match in (("", "give the selection a name"), ("x" * 61, "at most 60"), ("tab\there", "cannot name"),
                       (CURRENT, "cannot name")):
        with pytest.raises(ValueError, match=match):
            check_name(bad)
    before = state.selection.copy()
    d.selection_name = "no such thing"  # a stale link
    assert "no saved selection 'no such thing'" in d.status
    np.testing.assert_array_equal(state.selection, before)
    with pytest.raises(ValueError, match="no saved selection"):
        d.open_selection("no such thing")


# ------------------------------------------------------------------ comparison


def test_compare_a_selection_with_the_rest_against_independent_numbers(state, data):
    d = state.discovery
    cat = data.catalogue
    x = cat["umap_x"].to_numpy()
    state.select_box(-20, float(np.median(x)), -20, 20)
    d.save_selection("left")
    d.label(5, galaxy=ids(data, state.selection[:1])[0])
    c = d.compare("left")
    left = x <= np.median(x)
    a, b = cat[left], cat[~left]
    assert c.names == ("left", REST)
    assert c.summary.loc["galaxies"].tolist() == [len(a), len(b)]
    assert c.summary.loc["median anomaly score", "left"] == pytest.approx(a["anomaly_score"].median())
    assert c.summary.loc["labelled"].tolist() == [1, 0] and c.summary.loc["mean interest", "left"] == 5
    bpt = c.classes["bpt_class"]
    assert bpt["left"].sum() == pytest.approx(1) and bpt[REST].sum() == pytest.approx(1)
    assert bpt.loc["liner", "left"] == pytest.approx((a["bpt_class"] == "liner").mean())
    line = data.lines[0]
    assert c.error_shares.loc[line, REST] == pytest.approx(b[f"err_{line}"].mean())
    edges, shares = c.distributions["log_nii_ha"]
    assert shares.shape == (2, len(edges) - 1)
    assert shares.sum(axis=1) == pytest.approx([1, 1]), "shares of the galaxies with a measured ratio"
    assert c.residuals.shape == (2, len(data.lines), data.run.dataset.size, data.run.dataset.size)
    assert c.residual_n == (min(len(a), MAX_MAP_GALAXIES), min(len(b), MAX_MAP_GALAXIES))


def test_the_mean_residual_map_is_the_mean_of_the_inspector_maps(data):
    rows = np.array([5, 17, 40])
    mean, n = mean_residuals(data, rows)
    maps = np.stack([data.galaxy_maps(r)["residual"] for r in rows])
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmean(maps, axis=0)  # all-NaN spaxels warn here (the app's mean stays quiet)
    np.testing.assert_allclose(mean, expected, rtol=1e-4, atol=1e-7, equal_nan=True)  # float32 sums
    assert n == 3


def test_compare_two_saved_selections_and_refuse_nonsense(state, data):
    d = state.discovery
    state.select_rows([1, 2, 3], "latent")
    d.save_selection("a")
    state.select_rows([3, 4], "latent")
    d.save_selection("b")
    c = d.compare("a", "b")
    assert [len(r) for r in c.rows] == [3, 2]
    assert d.compare(CURRENT, "a").rows[0].tolist() == [3, 4]
    with pytest.raises(ValueError, match="two different"):
        d.compare("a", "a")
    with pytest.raises(ValueError, match="no saved selection 'zz'"):
        d.compare("zz")
    state.clear_selection()
    with pytest.raises(ValueError, match="holds no galaxy"):
        compare_rows(data, [], [1], ("empty", "one"))


# ------------------------------------------------------------------ the views, without a browser


def test_the_page_with_the_discovery_views_renders_and_follows_the_state(data):
    from dashboard.views import CompareView, DiscoveryBar, LabelPanel, SelectionTable

    state, page = build_app(data)
    page.server_doc(Document())  # the whole page, the discovery views in it, renders
    assert len(page.select(pn.widgets.RadioButtonGroup)) == 1, "the interest buttons are in the page"
    panel = LabelPanel(state=state)
    pn.panel(panel).get_root(Document())
    panel._keys.pressed = "4 1"  # the key "4"
    assert state.discovery.interest_of() == 4 and panel._buttons.value == "4"
    first = state.galaxy
    panel._keys.pressed = "n 2"
    assert state.galaxy != first and panel._buttons.value is None
    panel._keys.pressed = "p 3"
    assert state.galaxy == first
    panel._buttons.value = "1"  # a click
    assert state.discovery.interest_of() == 1
    panel._note.value_input = "edge-on"
    panel._note.param.trigger("enter_pressed")
    assert state.discovery.history()["note"].iat[-1] == "edge-on"
    panel._keys.pressed = "n 4"
    assert panel._note.value_input == "", "another galaxy's label does not take this note"
    panel._keys.pressed = "2 5"
    assert state.discovery.history()["note"].iat[-1] == ""
    panel._keys.pressed = "p 6"

    bar = DiscoveryBar(state=state)
    pn.panel(bar).get_root(Document())
    run_click(bar._rerank_clicked)
    assert state.colour_by == "relevance" and "re-ranked on 2 labels" in bar._note.object
    state.select_box(-20, 20, -20, 20)
    bar._name.value_input = "all"
    bar._save.clicks += 1
    assert bar._picker.options == ["", "all"] and bar._picker.value == "all"
    table = SelectionTable(state=state)
    state.discovery.order_by = "relevance"
    assert table._table.value["relevance"].is_monotonic_decreasing
    state.clear_selection()
    assert bar._picker.value == ""
    bar._picker.value = "all"
    assert len(state.selection) == data.n

    compare = CompareView(state=state)
    pn.panel(compare).get_root(Document())
    state.select_rows([1, 2, 3], "latent")
    compare._a.value = CURRENT
    run_click(compare._compare)
    figures = [o.object.name for o in compare._out.objects if isinstance(o, pn.pane.Bokeh)]
    assert figures == ["compare-distributions", "compare-residuals"]


# ------------------------------------------------------------------ explore() and the user


def test_explore_gives_dataframes_and_takes_a_selection_from_python(run_path):
    app = explore(run_path, user="nb")
    cat = pd.read_parquet(run_path / "catalogue.parquet")
    assert app.selection.empty and list(app.selection.columns) == list(cat.columns)
    assert list(app.labels.columns) == ["galaxy_id", "interest", "note", "user", "time"] and app.labels.empty
    ranking = app.ranking
    assert list(ranking.columns) == ["galaxy_id", "relevance", "uncertainty", "acquisition"]
    np.testing.assert_allclose(ranking["relevance"], cat["anomaly_pct"] / 100)
    chosen = cat["galaxy_id"].iloc[[10, 3, 200]].tolist()
    assert app.select(chosen) == 3
    assert app.selection["galaxy_id"].tolist() == cat["galaxy_id"].iloc[anomaly_order_of(cat, [10, 3, 200])].tolist()
    with pytest.raises(KeyError, match="not in the run fake-run: nope"):
        app.select([chosen[0], "nope"])
    assert len(app.selection) == 3, "a bad id changes nothing"
    app.label(chosen[0], 5, "from the notebook")
    assert app.labels[["galaxy_id", "interest", "user"]].values.tolist() == [[chosen[0], 5, "nb"]]
    assert len(app.rerank()) == len(cat) and app.state.colour_by == "relevance"
    app.save_selection("three")
    assert app.selections["name"].tolist() == ["three"]
    assert "3 selected" in repr(app)
    page = app.panel()
    assert app.panel() is page
    page.server_doc(Document())
    tables = page.select(pn.widgets.Tabulator)
    app.select(cat["galaxy_id"].iloc[:5])
    assert len(tables[0].value) == 5, "a selection from Python shows in the page"


def anomaly_order_of(cat, rows) -> list[int]:
    return sorted(rows, key=lambda r: -cat["anomaly_score"].iat[r])


def test_the_user_comes_from_the_server_arguments_or_the_os(monkeypatch, data):
    from train.cli import build_parser
    from train.serve import panel_command

    assert parse_app_args(["--run", "r", "--user", "Ada L"], {}).user == "Ada L"
    assert parse_app_args(["--run", "r"], {}).user is None  # then each session's Discovery takes the OS user:
    monkeypatch.setattr("dashboard.discovery.os_user", lambda: "osuser")
    assert DashboardState(data).discovery.user == "osuser"
    cmd = panel_command(build_parser().parse_args(["serve", "--run", "r", "--user", "Ada L"]))
    assert cmd[cmd.index("--args"):] == ["--args", "--run", "r", "--user", "Ada L"]
    cmd = panel_command(build_parser().parse_args(["serve", "--run", "r"]))
    assert "--user" not in cmd
