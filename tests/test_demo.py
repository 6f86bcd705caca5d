"""`python -m train demo` at a tiny size: every stage runs once, then every stage is skipped."""
from __future__ import annotations

import re

from core.io import read_json
from core.run import open_run
from train.cli import main

STAGES = ("synth", "ingest", "fit", "embed", "evaluate")


def test_demo_end_to_end_then_instant(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["demo", "--out", str(out), "--n", "40", "--epochs", "1", "--workers", "1"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    for i, stage in enumerate(STAGES, 1):
        assert re.search(rf"\[{i}/5\] {stage}\s+done in \d+\.\d s", first), stage
    run = open_run(out / "demo")
    skipped = len(run.dataset.manifest.skipped) + len(run.dataset.manifest.duplicates)
    assert len(run.catalogue) + skipped == 40 and len(run.catalogue) >= 30
    assert set(run.manifest.stages) >= set(STAGES[2:])
    assert run.manifest.train_config["epochs"] == 1
    evaluation = read_json(out / "demo" / "evaluation.json")
    assert evaluation["tasks"][0]["task"] == "anomaly" and "ROC-AUC" in first

    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("already done, skipped") == 5 and "done in" not in second
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files

    # a lost cache file is rebuilt by its stage, reproducibly: the same catalogue bytes, so the
    # evaluation of it stays valid and only embed runs
    (out / "demo" / "neighbours.npy").unlink()
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert re.search(r"\[4/5\] embed\s+done in", third) and third.count("already done, skipped") == 4
    assert read_json(out / "demo" / "manifest.json")["checksums"] == run.manifest.checksums

    # other settings against the same folders: refused, nothing overwritten
    assert main(["demo", "--out", str(out), "--n", "50", "--epochs", "1"]) == 2
    assert "other settings" in capsys.readouterr().err
