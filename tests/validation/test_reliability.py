"""Whether a bottleneck learned, and statistics over those that did not marked as unreliable."""

import json
import logging

import numpy as np
import pytest

from isplit.cli import main
from isplit.report import write_report


def test_not_learned_thresholds():
    from isplit.validation import chance_accuracy, not_learned

    assert chance_accuracy(np.arange(10).repeat(5)) == pytest.approx(0.1)  # balanced: 1/classes
    assert chance_accuracy(np.array([0, 0, 0, 1])) == pytest.approx(0.75)  # the majority class
    assert "chance" in not_learned(0.14, unsplit=0.9, chance=0.1)  # within 0.05 of chance
    assert "margin" in not_learned(0.31, unsplit=0.9, chance=0.1)  # keeps 26 % of 0.8
    assert not_learned(0.6, unsplit=0.9, chance=0.1) is None  # keeps 62 %
    assert not_learned(0.5, unsplit=0.5, chance=0.1) is None  # as good as the unsplit model
    assert not_learned(0.12, unsplit=0.12, chance=0.1) is not None  # all at chance


def test_statistics_over_bottlenecks_that_did_not_learn_are_marked(tmp_path, capsys, caplog):

    run = tmp_path / "run"
    assert (
        main(["analyze", "--limit", "64", "--batch-size", "64", "--out", str(run), "--quiet"]) == 0
    )
    argv = ["validate", "--analysis", str(run), "--points", "features.13", "features.42"]
    # a learning rate of ~0: the bottlenecks stay as initialised, as after far too little training
    argv += ["--lr", "1e-12", "--epochs", "1", "--train-limit", "64", "--test-limit", "64"]
    argv += ["--bootstrap", "20", "--batch-size", "32", "--quiet"]
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="isplit"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads((run / "validation.json").read_text())
    assert doc["unsplit_accuracy"] > 0.7  # the demo network is trained; its bottlenecks are not
    rel = doc["reliability"]
    assert rel["reliable"] is False and rel["not_learned"] == ["features.13", "features.42"]
    assert "did not learn at 2 of 2 point(s)" in rel["reason"] and "--epochs" in rel["reason"]
    assert rel["chance_accuracy"] >= 0.1 and rel["thresholds"]["chance_margin"] == 0.05
    for p in doc["points"]:
        assert p["learned"] is False and p["not_learned_reason"]
    assert all(r["reliable"] is False for r in doc["regret"])
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not reliable" in w and "features.13, features.42" in w for w in warning)
    assert sum(line.endswith("  did not learn") for line in out.splitlines()) == 2
    assert "NOT RELIABLE" in out and "(unreliable)" in out
    section = write_report(run, samples=0).read_text(encoding="utf-8")
    section = section.split('<section id="validation">')[1].split("</section>")[0]
    assert 'class="warn"' in section and "not reliable" in section
    assert section.count("(did not learn)") == 2 and 'class="ours unreliable"' in section
