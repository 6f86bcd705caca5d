"""The label store (core.labels) and `python -m train labels`: persistence, history, two writers, CSV errors."""
from __future__ import annotations

import multiprocessing

import pandas as pd
import pytest

from core.errors import LabelsError
from core.labels import LABEL_COLUMNS, LABELS_FILE, LabelStore, check_interest, read_labels_csv, write_labels_csv
from tests.fakerun import make_fake_run
from train.cli import main

WRITES_PER_PROCESS = 150


def _write_many(args):
    run_dir, prefix = args
    store = LabelStore(run_dir)
    for i in range(WRITES_PER_PROCESS):
        store.set(f"{prefix}-{i}", i % 6, note=prefix, user=prefix)
        store.set("shared", i % 6, note=prefix, user=prefix)  # both processes write the same galaxy too


def test_two_processes_writing_at_once_lose_no_label(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_write_many, [(str(tmp_path), "a"), (str(tmp_path), "b")])
    store = LabelStore(tmp_path)
    latest = store.latest()
    assert len(latest) == 2 * WRITES_PER_PROCESS + 1
    assert set(latest["galaxy_id"]) == {f"{p}-{i}" for p in "ab" for i in range(WRITES_PER_PROCESS)} | {"shared"}
    row = latest.set_index("galaxy_id").loc["a-7"]
    assert (row["interest"], row["note"], row["user"]) == (7 % 6, "a", "a")
    assert len(store.history("shared")) == 2 * WRITES_PER_PROCESS  # every write kept, none lost


def test_a_change_keeps_the_earlier_value_and_latest_has_one_row_per_galaxy(tmp_path):
    store = LabelStore(tmp_path)
    assert store.latest().empty and list(store.latest().columns) == list(LABEL_COLUMNS)
    assert not (tmp_path / LABELS_FILE).exists()  # reading creates nothing
    store.set("g1", 2, "faint ring")
    store.set("g2", 0)
    store.set("g1", 5, "a ring galaxy!", user="alice")
    latest = store.latest().set_index("galaxy_id")
    assert latest.loc["g1", "interest"] == 5 and latest.loc["g1", "user"] == "alice"
    assert latest.loc["g2", "user"]  # the OS user by default
    history = store.history("g1")
    assert list(history["interest"]) == [2, 5] and list(history["note"]) == ["faint ring", "a ring galaxy!"]
    assert history["time"].is_monotonic_increasing
    store.remove("g2")
    assert list(store.latest()["galaxy_id"]) == ["g1"]
    assert len(store.history("g2")) == 2  # the removal is in the history


def test_the_stamp_changes_with_every_write_from_any_store_object(tmp_path):
    """Readers cache what they read until the stamp changes: every write must change it."""
    reader, writer = LabelStore(tmp_path), LabelStore(tmp_path)
    stamps = [reader.stamp()]
    assert stamps[0] == (None, None)  # no store yet
    for write in (lambda: writer.set("1-1", 3), lambda: writer.set("1-1", 3), lambda: writer.remove("1-1"),
                  lambda: writer.save_selection("a", ["1-1"]), lambda: writer.delete_selection("a")):
        write()
        stamps.append(reader.stamp())
        assert stamps[-1] != stamps[-2]
    assert reader.stamp() == stamps[-1]  # reading changes nothing
    reader.latest()
    assert reader.stamp() == stamps[-1]


@pytest.mark.parametrize("bad", [6, -1, 2.5, "3", True, None])
def test_interest_outside_0_to_5_is_refused_naming_the_value(tmp_path, bad):
    with pytest.raises(ValueError, match=repr(bad) if not isinstance(bad, int) or isinstance(bad, bool) else str(bad)):
        LabelStore(tmp_path).set("g1", bad)
    assert LabelStore(tmp_path).latest().empty
    assert check_interest(4.0) == 4


def test_selections_are_saved_listed_and_deleted(tmp_path):
    store = LabelStore(tmp_path)
    assert store.selections().empty
    store.save_selection("rings", ["g1", "g2", "g3"], user="alice")
    store.save_selection("odd ones", ["g9"])
    assert store.selection("rings") == ["g1", "g2", "g3"]
    sel = store.selections().set_index("name")
    assert sel.loc["rings", "n"] == 3 and sel.loc["rings", "user"] == "alice"
    store.save_selection("rings", ["g4"])  # replaced
    assert store.selection("rings") == ["g4"]
    store.delete_selection("rings")
    with pytest.raises(KeyError, match="rings"):
        store.selection("rings")
    with pytest.raises(KeyError, match="nope"):
        store.delete_selection("nope")
    with pytest.raises(ValueError, match="empty"):
        store.save_selection("  ", ["g1"])


def test_a_damaged_store_is_a_clear_error(tmp_path):
    (tmp_path / LABELS_FILE).write_bytes(b"not a database at all" * 100)
    with pytest.raises(LabelsError, match=LABELS_FILE):
        LabelStore(tmp_path).latest()


# ------------------------------------------------------------------------ the CSV format


def _csv(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, problem", [
    ("galaxy_id,interest\ng1,3\nnope,2\ng2,1\n", r"not in the run on line\(s\) 3 \('nope'\)"),
    ("galaxy_id,interest\ng1,3\ng2,7\ng3,x\ng4,2.5\n", r"not a whole number 0 to 5 on line\(s\) 3, 4, 5"),
    ("galaxy_id,interest\ng1,3\ng2,1\ng1,4\n", r"more than once on line\(s\) 2, 4 \('g1'\)"),
    ("galaxy_id,score\ng1,3\n", "missing column"),
    ("galaxy_id,interest\ng1,\n", r"line\(s\) 2"),
    ("", "empty file"),
])
def test_a_bad_labels_file_names_the_file_and_lines(tmp_path, text, problem):
    path = _csv(tmp_path / "labels.csv", text)
    with pytest.raises(LabelsError, match=problem) as exc:
        read_labels_csv(path, ["g1", "g2", "g3", "g4"])
    assert str(path) in str(exc.value)


def test_header_only_is_no_labels_and_notes_survive_the_spreadsheet_quoting(tmp_path):
    assert read_labels_csv(_csv(tmp_path / "empty.csv", "galaxy_id,interest,note\n"), ["g1"]).empty
    df = pd.DataFrame({"galaxy_id": ["g1", "g2"], "interest": [5, 0], "note": ["=1+1 looks odd", ""]})
    write_labels_csv(df, tmp_path / "out.csv")
    assert "'=1+1" in (tmp_path / "out.csv").read_text()  # safe in a spreadsheet
    back = read_labels_csv(tmp_path / "out.csv", ["g1", "g2"])
    pd.testing.assert_frame_equal(back, df)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("labels") / "run", n=120, size=8)


def test_cli_export_import_round_trip(run_dir, tmp_path, capsys):
    ids = pd.read_parquet(run_dir / "catalogue.parquet")["galaxy_id"].tolist()
    store = LabelStore(run_dir)
    store.set(ids[0], 5, "beautiful bar")
    store.set(ids[1], 1)
    store.set(ids[0], 4, "nice bar")
    assert main(["labels", "export", "--run", str(run_dir), "--out", str(tmp_path / "l.csv")]) == 0
    exported = pd.read_csv(tmp_path / "l.csv", dtype={"galaxy_id": str}, keep_default_na=False)
    assert list(exported.columns) == list(LABEL_COLUMNS) and len(exported) == 2

    other = make_fake_run(tmp_path / "other", n=120, size=8)  # the same ids
    assert main(["labels", "import", "--run", str(other), str(tmp_path / "l.csv"), "--user", "bob"]) == 0
    assert "imported 2 label(s)" in capsys.readouterr().out
    got = LabelStore(other).latest()
    assert set(got["user"]) == {"bob"}
    cols = ["galaxy_id", "interest", "note"]
    pd.testing.assert_frame_equal(got[cols].sort_values("galaxy_id").reset_index(drop=True),
                                  store.latest()[cols].sort_values("galaxy_id").reset_index(drop=True))


def test_cli_import_of_a_bad_file_says_which_rows_and_writes_nothing(run_dir, tmp_path, capsys):
    ids = pd.read_parquet(run_dir / "catalogue.parquet")["galaxy_id"].tolist()
    before = LabelStore(run_dir).latest()
    bad = _csv(tmp_path / "bad.csv", f"galaxy_id,interest\n{ids[5]},3\n9999-1,2\n{ids[6]},9\n")
    assert main(["labels", "import", "--run", str(run_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line(s) 3" in err and "line(s) 4" in err and "nothing imported" in err
    assert "Traceback" not in err
    pd.testing.assert_frame_equal(LabelStore(run_dir).latest(), before)
