"""The contracts of the two folders: typed, versioned manifests, and when a run stage is up to date."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from core.dataset import ARRAYS, DatasetManifest, IngestOptions, open_dataset
from core.errors import DatasetError, RunError
from core.io import read_json, sha256_file, write_json
from core.run import (STAGE_OUTPUTS, Evaluation, RunManifest, ScoreInfo, Split, dataset_path, is_done, mark_stage,
                      trained_before_dataset)
from tests.fakerun import make_fake_run


@pytest.fixture
def fake(tmp_path):
    return make_fake_run(tmp_path / "run", n=40, n_lines=3, size=4)


def full_run_manifest() -> RunManifest:
    return RunManifest(
        name="r", dataset="/data/ds", lines=["Hb-4862", "Ha-6564"], size=32, norm="asinh", model="vae",
        config="demo", model_args={"kind": "vae", "latent_dim": 8}, train_config={"epochs": 2, "seed": 3},
        split=Split(val_fraction=0.2, seed=3), versions={"python": "3.12"}, n_train=8, n_val=2, parameters=1234,
        metrics={"best_val_loss": 0.5, "epochs_run": 2}, stages={"fit": "t0", "embed": "t1", "evaluate": "t2"},
        checksums={"catalogue.parquet": "abc"}, n_galaxies=10,
        score=ScoreInfo(definition="d", pct_definition="p", normalisation="asinh", median=1.0, p90=2.0, mean=1.2,
                        max=5.0, flag_pct=90.0, flag_threshold=2.0, n_flagged=1),
        umap={"n_neighbors": 9}, neighbours={"k": 5}, embed={"seconds": 1.0},
        evaluation=Evaluation(task="anomaly", model={"roc_auc": 0.9, "average_precision": 0.5},
                              pca={"roc_auc": 0.7, "average_precision": 0.3},
                              iforest={"roc_auc": 0.6, "average_precision": 0.2}, seconds=0.5,
                              catalogue_sha256="abc"))


def test_run_manifest_round_trip(tmp_path):
    manifest = full_run_manifest()
    manifest.write(tmp_path)
    assert RunManifest.read(tmp_path) == manifest
    # The JSON keeps the layout the README and the dashboard describe.
    obj = read_json(tmp_path / "manifest.json")
    assert obj["format"] == "blueberry-run/1"
    assert obj["score"]["median"] == 1.0 and obj["score"]["p90"] == 2.0
    assert obj["evaluation"]["model"] == {"roc_auc": 0.9, "average_precision": 0.5}
    assert obj["split"] == {"val_fraction": 0.2, "seed": 3} and obj["stages"]["fit"] == "t0"
    for key in ("checksums", "model_args", "train_config", "lines", "size", "norm", "dataset"):
        assert obj[key] == getattr(manifest, key), key


def test_run_manifest_before_embed_has_no_empty_sections(tmp_path):
    manifest = RunManifest(name="r", dataset="d", lines=["Ha-6564"], size=8, norm="none", model="ae",
                           config="demo", model_args={}, train_config={}, split=Split(0.1, 0))
    manifest.write(tmp_path)
    obj = read_json(tmp_path / "manifest.json")
    assert not {"score", "evaluation", "metrics", "umap"} & set(obj)
    assert RunManifest.read(tmp_path) == manifest


def test_dataset_manifest_round_trip(tmp_path):
    manifest = DatasetManifest(
        options=IngestOptions(lines=("Hb-4862", "Ha-6564"), size=16, norm="asinh", bad_bits=("NOCOV",), min_good=0.3),
        n_galaxies=2, sources=[{"path": "a.fits", "sha256": "x", "galaxy_id": "1-1"}],
        skipped=[{"path": "b.fits", "reason": "broken"}], duplicates=[{"galaxy_id": "1-1", "kept": "a", "dropped": "c"}])
    manifest.write(tmp_path)
    assert DatasetManifest.read(tmp_path) == manifest
    obj = read_json(tmp_path / "manifest.json")
    assert (obj["lines"], obj["size"], obj["norm"], obj["bad_bits"]) == (["Hb-4862", "Ha-6564"], 16, "asinh", ["NOCOV"])
    assert obj["options"]["min_good"] == 0.3


def test_fake_run_manifests_read_back(fake):
    manifest = RunManifest.read(fake)
    scores = pd.read_parquet(fake / "catalogue.parquet").anomaly_score
    assert manifest.score.median == pytest.approx(np.median(scores))
    assert manifest.score.n_flagged == (scores >= manifest.score.flag_threshold).sum()
    assert dataset_path(fake, manifest) == (fake / "dataset").resolve()
    assert DatasetManifest.read(fake / "dataset").lines == tuple(manifest.lines)


@pytest.mark.parametrize("fmt", ["blueberry-run/2", "blueberry-run/0", None])
def test_unknown_run_format_says_how_to_rebuild(tmp_path, fmt):
    full_run_manifest().write(tmp_path)
    obj = read_json(tmp_path / "manifest.json")
    obj["format"] = fmt
    write_json(tmp_path / "manifest.json", obj)
    with pytest.raises(RunError, match=f"format {fmt!r}, but this version of Blueberry reads 'blueberry-run/1'") as info:
        RunManifest.read(tmp_path)
    assert "python -m train fit --data DATASET --run NEW_RUN" in str(info.value)


def test_unknown_dataset_format_says_how_to_rebuild(fake):
    path = fake / "dataset"
    obj = read_json(path / "manifest.json")
    write_json(path / "manifest.json", {**obj, "format": "blueberry-dataset/2"})
    with pytest.raises(DatasetError, match="'blueberry-dataset/2'") as info:
        open_dataset(path)
    assert f"python -m train ingest INPUTS --out {path}" in str(info.value)


def test_older_manifests_open_when_they_can_be_read_faithfully(tmp_path):
    # A dataset written before the options were recorded: lines, size and norm at the top.
    write_json(tmp_path / "manifest.json", {"format": "blueberry-dataset/1", "n_galaxies": 3,
                                            "lines": ["Ha-6564"], "size": 8, "norm": "none"})
    assert DatasetManifest.read(tmp_path).options == IngestOptions(lines=("Ha-6564",), size=8)
    # A run fitted before the parameter count was recorded.
    full_run_manifest().write(tmp_path)
    obj = read_json(tmp_path / "manifest.json")
    del obj["parameters"]
    write_json(tmp_path / "manifest.json", obj)
    assert RunManifest.read(tmp_path).parameters is None
    # A run without its split cannot be read faithfully: a clear error.
    del obj["split"]
    write_json(tmp_path / "manifest.json", obj)
    with pytest.raises(RunError, match="incomplete manifest.*python -m train fit"):
        RunManifest.read(tmp_path)


def _record_embed(run):
    """Stamp embed with the checksums of the run's files, as ``embed`` does."""
    sums = {f: sha256_file(run / f) for f in (*STAGE_OUTPUTS["embed"], "model.pt")}
    return mark_stage(run, "embed", True, checksums=sums)


def test_embed_is_done_until_an_output_or_the_model_changes(fake):
    (fake / "model.pt").write_bytes(b"weights")
    assert is_done(fake, "fit")
    assert not is_done(fake, "embed")  # stamped, but no checksums recorded
    _record_embed(fake)
    assert is_done(fake, "embed")
    recon = np.load(fake / "recon.npy")
    recon[0] += 1.0
    np.save(fake / "recon.npy", recon)
    assert not is_done(fake, "embed")
    _record_embed(fake)
    (fake / "model.pt").write_bytes(b"other weights")
    assert not is_done(fake, "embed")
    _record_embed(fake)
    (fake / "neighbours.npy").unlink()
    assert not is_done(fake, "embed")


def test_evaluate_is_done_for_the_catalogue_it_evaluated(fake):
    (fake / "model.pt").write_bytes(b"weights")
    manifest = _record_embed(fake)
    assert not is_done(fake, "evaluate")  # the fake evaluation names no catalogue and has no file
    write_json(fake / "evaluation.json", {"tasks": []})
    evaluation = Evaluation(task="anomaly", model={}, pca={}, iforest={}, seconds=0.1,
                            catalogue_sha256=manifest.checksums["catalogue.parquet"])
    mark_stage(fake, "evaluate", True, evaluation=evaluation)
    assert is_done(fake, "evaluate")
    # a re-embed that writes another catalogue makes the evaluation stale
    cat = open_dataset(fake / "dataset").catalogue
    cat.to_parquet(fake / "catalogue.parquet")
    _record_embed(fake)
    assert is_done(fake, "embed") and not is_done(fake, "evaluate")


def test_fit_is_done_with_its_model_and_knows_a_rebuilt_dataset(fake):
    assert not is_done(fake, "fit")  # stamped, but no model.pt: an interrupted fit
    (fake / "model.pt").write_bytes(b"weights")
    assert is_done(fake, "fit") and not trained_before_dataset(fake)
    mark_stage(fake, "fit", False)
    assert not is_done(fake, "fit")
    later = (fake / "model.pt").stat().st_mtime + 10
    os.utime(fake / "dataset" / "manifest.json", (later, later))
    assert trained_before_dataset(fake)  # rebuilt, and embed recorded nothing to compare with
    # ingested again with the same arrays (a newer version that adds catalogue columns): the model still fits it
    files = open_dataset(fake / "dataset").manifest.files
    recorded = {f: stamp["sha256"] for f, stamp in files.items()}
    assert all(recorded.get(f"{a}.npy") for a in ARRAYS)
    mark_stage(fake, "embed", True, embed={"dataset_sha256": {**recorded, "catalogue.parquet": "0" * 64}})
    assert not trained_before_dataset(fake)
    mark_stage(fake, "embed", True, embed={"dataset_sha256": {**recorded, "flux.npy": "0" * 64}})
    assert trained_before_dataset(fake)  # other fluxes: train again


def test_embed_is_not_done_for_a_dataset_ingested_again(fake):
    """embed scored one dataset; ingested again since (a new catalogue column), the run must be embedded again,
    or open_run would refuse it."""
    (fake / "model.pt").write_bytes(b"weights")
    _record_embed(fake)
    recorded = {f: stamp["sha256"] for f, stamp in open_dataset(fake / "dataset").manifest.files.items()}
    mark_stage(fake, "embed", True, embed={"dataset_sha256": recorded})
    assert is_done(fake, "embed")
    mark_stage(fake, "embed", True, embed={"dataset_sha256": {**recorded, "catalogue.parquet": "0" * 64}})
    assert not is_done(fake, "embed")
    assert not is_done(fake.parent / "nowhere", "fit")
    with pytest.raises(ValueError, match="unknown stage"):
        is_done(fake, "frobnicate")
