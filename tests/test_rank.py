"""Re-ranking by the astronomer's interest (core.rank) and `python -m train rank`, on a small fake run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import RunError
from core.labels import LabelStore
from core.rank import (LABELLED_ACQUISITION, RANK_COLUMNS, RANKING_FILE, RankConfig, catalogue_features,
                       expected_improvement, features, rank, read_ranking, write_ranking)
from core.run import RunManifest, open_run
from core.scoring import SHAPE_COLUMNS
from tests.fakerun import make_fake_run
from train.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_run(make_fake_run(tmp_path_factory.mktemp("rank") / "run", n=300, size=8))


def _labels(run, n_per_class=6, target="seyfert"):
    """The first ``n_per_class`` galaxies of each truth class: 5 for the target class, 0 otherwise."""
    cat = run.catalogue
    picked = cat.groupby("truth_class").head(n_per_class)
    return pd.DataFrame({"galaxy_id": picked["galaxy_id"], "interest": np.where(picked["truth_class"] == target, 5, 0)})


def test_without_labels_relevance_is_the_anomaly_percentile(run):
    for labels in (None, pd.DataFrame(columns=["galaxy_id", "interest"])):
        r = rank(run, labels)
        assert list(r.columns) == list(RANK_COLUMNS)
        assert list(r["galaxy_id"]) == list(run.catalogue["galaxy_id"])  # catalogue order
        np.testing.assert_allclose(r["relevance"], run.catalogue["anomaly_pct"] / 100)
        np.testing.assert_allclose(r["acquisition"], r["relevance"])
        assert (r["uncertainty"] > 0).all()


@pytest.mark.parametrize("model", ["gp", "forest"])
def test_the_model_learns_what_the_astronomer_finds_interesting(run, model):
    labels = _labels(run)
    r = rank(run, labels, cfg=RankConfig(model=model))
    assert list(r["galaxy_id"]) == list(run.catalogue["galaxy_id"])
    labelled = r["galaxy_id"].isin(labels["galaxy_id"]).to_numpy()
    by_id = r.set_index("galaxy_id")
    np.testing.assert_allclose(by_id.loc[labels["galaxy_id"], "relevance"], labels["interest"] / 5)
    assert (r.loc[labelled, "acquisition"] == LABELLED_ACQUISITION).all()
    assert (r.loc[labelled, "uncertainty"] == 0).all()
    assert (r.loc[~labelled, "acquisition"] > LABELLED_ACQUISITION).all()
    assert np.isfinite(r[list(RANK_COLUMNS[1:])]).all().all()
    # Unlabelled Seyferts are ranked far above the rest: what the labels taught (through the fake
    # run's 19 error shares, which are noise but for the blueberries').
    seyfert = (run.catalogue["truth_class"] == "seyfert").to_numpy()
    rel = r["relevance"].to_numpy()
    assert rel[seyfert & ~labelled].mean() > rel[~seyfert & ~labelled].mean() + 0.25
    # The same seed gives the same ranking.
    pd.testing.assert_frame_equal(r, rank(run, labels, cfg=RankConfig(model=model)))


def test_all_labels_equal_still_ranks_by_similarity(run):
    """Only 5s so far (the first labels of a hunt): galaxies like them rank above the others."""
    cat = run.catalogue
    blue = cat.index[cat["truth_class"] == "blueberry"][:3]
    r = rank(run, pd.DataFrame({"galaxy_id": cat.loc[blue, "galaxy_id"], "interest": 5}))
    rest = np.ones(len(cat), bool)
    rest[blue] = False
    rel = r["relevance"].to_numpy()
    blueberry = (cat["truth_class"] == "blueberry").to_numpy()
    assert rel[blueberry & rest].mean() > rel[~blueberry].mean()


def test_labels_of_unknown_galaxies_are_refused(run):
    with pytest.raises(RunError, match="not in the run"):
        rank(run, pd.DataFrame({"galaxy_id": ["nope"], "interest": [3]}))


def test_features_are_standardised_finite_and_balanced_by_group(run):
    feats = features(run)
    x = feats.x
    assert x.shape[0] == len(run.catalogue) and np.isfinite(x).all()
    assert np.abs(x.mean(axis=0)).max() < 1e-6
    assert list(feats.groups) == ["latents", "physics", "shares", "shape"]
    assert sorted(c for cols in feats.groups.values() for c in cols) == list(range(x.shape[1]))
    assert len(feats.groups["shape"]) == len(SHAPE_COLUMNS) and len(feats.groups["shares"]) == 19
    # every group weighs about the same in a distance, however many columns it has (a column
    # with missing values, set to its mean, varies a little less than 1 before the scaling)
    weights = [x[:, list(cols)].var(axis=0).sum() for cols in feats.groups.values()]
    np.testing.assert_allclose(weights, x.shape[1] / len(weights), rtol=0.05)
    # which lines and where on the galaxy the score comes from are features, a zero share included
    cat = run.catalogue.copy()
    err = [c for c in cat.columns if c.startswith("err_")]
    cat[err[0]] = 0.0
    values, names = catalogue_features(cat)
    assert {*SHAPE_COLUMNS, *(f"log_{c}" for c in err)} <= set(names)
    assert np.isfinite(values[:, names.index(f"log_{err[0]}")]).all()


def test_expected_improvement_prefers_high_mean_and_high_uncertainty():
    ei = expected_improvement(np.array([0.2, 0.8, 0.2]), np.array([0.1, 0.1, 0.5]), best=0.8, xi=0.0)
    assert ei[1] > ei[0] and ei[2] > ei[0] and (ei >= 0).all()


def test_ranking_file_round_trip_and_staleness(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    assert read_ranking(copy) is None
    r = rank(run, _labels(run))
    write_ranking(copy, r, n_labels=12)
    pd.testing.assert_frame_equal(read_ranking(copy), r)
    manifest = RunManifest.read(copy)  # a re-embed changes the catalogue: the ranking is stale
    manifest.checksums = {**manifest.checksums, "catalogue.parquet": "0" * 64}
    manifest.write(copy)
    assert read_ranking(copy) is None
    (copy / RANKING_FILE).write_bytes(b"garbage")
    with pytest.raises(RunError, match=RANKING_FILE):
        read_ranking(copy)


def test_cli_rank_from_a_csv_and_from_the_store(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    empty = tmp_path / "empty.csv"
    empty.write_text("galaxy_id,interest,note\n")
    assert main(["rank", "--run", str(copy), "--labels", str(empty), "--out", str(tmp_path / "r0.csv")]) == 0
    r0 = pd.read_csv(tmp_path / "r0.csv", dtype={"galaxy_id": str})
    assert list(r0.columns) == list(RANK_COLUMNS) and len(r0) == len(run.catalogue)
    assert r0["relevance"].is_monotonic_decreasing  # most relevant first
    assert read_ranking(copy) is not None

    labels = _labels(run)
    LabelStore(copy).set_many(labels.assign(note="").itertuples(index=False, name=None))
    assert main(["rank", "--run", str(copy), "--out", str(tmp_path / "r1.csv")]) == 0
    assert f"from {len(labels)} label(s)" in capsys.readouterr().out
    r1 = pd.read_csv(tmp_path / "r1.csv", dtype={"galaxy_id": str}).set_index("galaxy_id")
    np.testing.assert_allclose(r1.loc[labels["galaxy_id"], "relevance"], labels["interest"] / 5)

    bad = tmp_path / "bad.csv"
    bad.write_text("galaxy_id,interest\nnope,3\n")
    assert main(["rank", "--run", str(copy), "--labels", str(bad), "--out", str(tmp_path / "r2.csv")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line(s) 2" in err and not (tmp_path / "r2.csv").exists()


def test_the_next_batch_is_chosen_as_a_diverse_set(run):
    """Near-twins of the best galaxy are not all proposed together: one label tells about all
    of them. Every galaxy outside the batch keeps its own acquisition, the batch tops the order."""
    feats = features(run)
    x = feats.x
    labels = _labels(run, n_per_class=2)
    # No score prior: the acquisition then depends on the features alone, so twins share it.
    one, ten = RankConfig(batch=1, prior="zero"), RankConfig(batch=10, prior="zero")
    free = ~run.catalogue["galaxy_id"].isin(labels["galaxy_id"]).to_numpy()
    best = int(np.argmax(np.where(free, rank(run, labels, x=feats, cfg=one)["acquisition"], -np.inf)))
    twins = np.flatnonzero(free & (np.arange(len(x)) != best))[:5]
    x[twins] = x[best] + 1e-3 * np.random.default_rng(0).normal(size=(len(twins), x.shape[1]))
    group = {best, *twins}
    plain = rank(run, labels, x=feats, cfg=one)  # a batch of one: no set to choose
    batch = rank(run, labels, x=feats, cfg=ten)
    top_plain = np.argsort(-plain["acquisition"].to_numpy(), kind="stable")[:10]
    top_batch = np.argsort(-batch["acquisition"].to_numpy(), kind="stable")[:10]
    assert len(group & set(top_plain)) == 6  # by acquisition alone the twins fill most of the batch
    assert len(group & set(top_batch)) == 1
    assert free[top_batch].all()  # labelled galaxies are never proposed
    rest = np.setdiff1d(np.arange(len(x)), top_batch)
    np.testing.assert_allclose(batch["acquisition"].to_numpy()[rest], plain["acquisition"].to_numpy()[rest])
    assert batch["acquisition"].to_numpy()[top_batch].min() > batch["acquisition"].to_numpy()[rest].max()
    np.testing.assert_allclose(batch["relevance"], plain["relevance"])  # only the order of labelling changes

def test_few_targets_known_means_part_of_the_batch_explores(run):
    """With no interesting label yet, some of the batch goes to the galaxies farthest from every labelled one."""
    feats = features(run)
    x = feats.x
    cat = run.catalogue
    labels = pd.DataFrame({"galaxy_id": cat["galaxy_id"].head(10), "interest": 0})
    r = rank(run, labels, x=feats, cfg=RankConfig(batch=10, explore=0.5))
    top = np.argsort(-r["acquisition"].to_numpy(), kind="stable")[:10]
    labelled = np.arange(10)
    nearest = np.sqrt(((x[:, None, :] - x[None, labelled, :]) ** 2).sum(-1)).min(axis=1)  # (N,)
    assert int(np.argmax(np.where(np.arange(len(x)) >= 10, nearest, -np.inf))) in top
    exploit = rank(run, labels, x=feats, cfg=RankConfig(batch=10, explore=0.0))
    assert set(top) != set(np.argsort(-exploit["acquisition"].to_numpy(), kind="stable")[:10])
