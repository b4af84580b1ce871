"""The two settings objects of an analysis: what decides the result (AnalysisSettings, recorded
and fingerprinted) and how it runs (RunOptions); analyze() takes either, or their fields as
keywords; leaf modules reach the tracer and the record only when given, from the API and from
the command line (--leaf-module)."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from gated_model import Gate, Gated
from isplit import IsplitError
from isplit.analysis import AnalysisSettings, RunOptions, analyze
from isplit.cli import main


@pytest.fixture(scope="module")
def gated():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(24, 2, 8, 8, generator=g), torch.randint(0, 3, (24,)))
    return Gated(channels=2).eval(), data


def test_settings_objects_and_keywords_give_the_same_run(gated):
    model, data = gated
    by_keywords = analyze(model, data, batch_size=8, limit=16, leaf_modules=["Gate"])
    settings = AnalysisSettings(batch_size=4, limit=16, leaf_modules=("Gate",))
    by_objects = analyze(model, data, settings, RunOptions(device="cpu"), batch_size=8)
    assert by_objects.fingerprint == by_keywords.fingerprint
    assert by_objects.settings == by_keywords.settings
    np.testing.assert_array_equal(by_objects.per_image, by_keywords.per_image)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        analyze(model, data, batchsize=8)


def test_leaf_modules_reach_the_tracer_and_the_record_only_when_given(gated):
    model, data = gated
    found = analyze(model, data, batch_size=8)  # Gate is kept whole automatically
    assert found.settings["auto_leaf_modules"] == found.leaf_modules == ["gated_model.Gate"]
    assert "leaf_modules" not in found.settings and "gate" in found.point_names
    run = analyze(model, data, batch_size=8, leaf_modules="Gate")  # one name is one module
    assert (
        run.settings["leaf_modules"] == run.leaf_modules == ["Gate"] and "gate" in run.point_names
    )
    assert "auto_leaf_modules" not in run.settings and run.fingerprint != found.fingerprint
    np.testing.assert_array_equal(run.cui, found.cui)  # the same graph
    assert "leaf_modules" not in AnalysisSettings().record("cpu")  # fingerprints as before
    typed = AnalysisSettings(leaf_modules=[Gate]).record("cpu")["leaf_modules"]
    assert typed == ["gated_model.Gate"]


def test_what_decides_the_result_is_apart_from_how_it_runs():
    decides = {"target", "reduction", "points", "batch_size", "limit", "precision", "predictors"}
    runs = {"device", "workers", "progress", "checkpoint", "checkpoint_every", "channels_last"}
    assert decides <= set(AnalysisSettings.__dataclass_fields__)
    assert runs <= set(RunOptions.__dataclass_fields__)
    assert not set(AnalysisSettings.__dataclass_fields__) & set(RunOptions.__dataclass_fields__)
    assert AnalysisSettings(select_by="probe").predictors == ("cui", "pca-probe", "probe")
    assert AnalysisSettings(predictors="cui", select_by="probe").predictors == ("cui", "probe")
    assert AnalysisSettings().predictors == AnalysisSettings(predictors=None).predictors
    assert AnalysisSettings(predictors="cui").predictors == ("cui",)  # CUI alone
    with pytest.raises(IsplitError, match="--checkpoint-every must be at least 1"):
        RunOptions(checkpoint_every=0)


def test_cli_leaf_module_reaches_points_and_analyze(capsys, caplog, tmp_path):
    model = ["--model", "gated_model:make", "--image-size", "8"]
    with caplog.at_level("WARNING", logger="isplit"):
        assert main(["points", *model, "--json"]) == 0  # works, and says what it kept whole
    found = capsys.readouterr()
    assert "cannot trace into gated_model.Gate (1x: gate)" in caplog.text
    caplog.clear()
    assert main(["points", *model, "--leaf-module", "Gate", "--json"]) == 0
    given = capsys.readouterr()
    assert given.out == found.out and "cannot trace" not in caplog.text
    names = [p["name"] for p in json.loads(given.out)["points"]]
    assert names[:3] == ["r1", "gate", "r2"]
    out = tmp_path / "run"
    argv = ["analyze", *model, "--data", "digits", "--limit", "20", "--quiet", "--out", str(out)]
    assert main([*argv, "--leaf-module", "Gate", "--leaf-module", "Gate"]) == 0
    curves = json.loads((out / "curves.json").read_text())
    assert curves["settings"]["leaf_modules"] == ["Gate", "Gate"]
    assert "gate" in [p["name"] for p in curves["points"]]
