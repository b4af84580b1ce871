"""The weights fingerprint costs a pass over the weights: an analysis used in memory does not
pay it, a saved or checkpointed one records it exactly, and weights changed or freed before it
is computed are never fingerprinted as the ones analysed."""

import gc
import json

import pytest
import torch
from torch.utils.data import TensorDataset

import isplit.models.digest as digest
from gated_model import Gated
from isplit.analysis import analyze
from isplit.models import weights_fingerprint


@pytest.fixture()
def counted(monkeypatch):
    """How many times the fingerprint was computed."""
    calls = []

    def counting(state):
        calls.append(1)
        return weights_fingerprint(state)

    monkeypatch.setattr(digest, "weights_fingerprint", counting)
    return calls


@pytest.fixture()
def small():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(16, 2, 8, 8, generator=g), torch.randint(0, 3, (16,)))
    return Gated(channels=2).eval(), data


def test_in_memory_analysis_computes_the_fingerprint_only_when_read(small, counted):
    model, data = small
    a = analyze(model, data, batch_size=8)
    assert a.best is not None and a.cui.shape and a.timing["setup_seconds"] >= 0
    assert counted == []  # curves, best split, timing: no pass over the weights
    assert a.settings["weights_sha256"] == weights_fingerprint(model)
    assert counted == [1] and a.fingerprint and counted == [1]  # once, for both fields


def test_saved_run_records_the_analysed_weights(small, counted, tmp_path):
    model, data = small
    a = analyze(model, data, batch_size=8)
    a.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert doc["settings"]["weights_sha256"] == weights_fingerprint(model)
    assert doc["fingerprint"] == a.fingerprint and counted == [1]


def test_checkpointed_run_computes_it_beside_the_set_up(small, counted, tmp_path):
    model, data = small
    a = analyze(model, data, batch_size=8, checkpoint=tmp_path / "ckpt.npz", checkpoint_every=1)
    assert counted == [1]  # in the background, once: the checkpoints and the result share it
    assert a.settings["weights_sha256"] == weights_fingerprint(model) and counted == [1]


def test_weights_changed_after_the_analysis_are_not_fingerprinted_as_analysed(small, caplog):
    model, data = small
    a = analyze(model, data, batch_size=8)
    before = weights_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert a.settings["weights_sha256"] is None  # never the new weights' sha256
    assert "was changed after the analysis" in caplog.text
    assert weights_fingerprint(model) != before


def test_freed_model_leaves_the_fingerprint_unknown(small, caplog):
    _, data = small
    a = analyze(Gated(channels=2).eval(), data, batch_size=8)
    gc.collect()
    assert a.fingerprint and a.settings["weights_sha256"] is None
    assert "was freed after the analysis" in caplog.text


def test_moving_the_model_does_not_count_as_a_change(small):
    model, data = small
    a = analyze(model, data, batch_size=8)
    want = weights_fingerprint(model)
    model.to(torch.float64).to(torch.float32)
    assert a.settings["weights_sha256"] == want
