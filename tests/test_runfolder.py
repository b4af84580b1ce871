"""The run folder: its file names, the format every JSON result is upgraded to, the checkpoint
layouts of older versions, and the results of another analysis set aside."""

import json

import numpy as np
import pytest

from isplit import IsplitError
from isplit.runfolder import FORMAT, RunFolder, upgrade, upgrade_checkpoint


def test_files_are_named_in_one_place(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.curves == tmp_path / RunFolder.CURVES == tmp_path / "curves.json"
    assert folder.checkpoint.name == "checkpoint.npz" and folder.plan.name == "plan.json"
    assert not folder.is_analysis()


def test_every_result_is_read_in_the_current_format_and_a_newer_one_is_refused(tmp_path):
    (tmp_path / "curves.json").write_text(json.dumps({"model": "m"}))
    assert RunFolder(tmp_path).read("curves.json") == {"model": "m", "format": FORMAT}
    with pytest.raises(IsplitError, match="upgrade isplit"):
        upgrade("curves.json", {"format": FORMAT + 1})


def test_a_checkpoint_from_before_pca_probe_gets_the_probe_widths():
    old = {"predictor/probe/n": np.array(3), "predictor/probe/sx0": 0, "predictor/probe/sx1": 0}
    new = upgrade_checkpoint(old)
    np.testing.assert_array_equal(new["predictor/probe/widths"], [0, 0])
    assert upgrade_checkpoint(new) is new and "predictor/probe/widths" not in old


def test_results_of_another_analysis_are_set_aside(tmp_path):
    folder = RunFolder(tmp_path)
    folder.curves.write_text(json.dumps({"fingerprint": "a"}))
    folder.validation.write_text("{}")
    folder.set_aside_stale("a")  # the same analysis: what was derived from it holds
    assert folder.validation.exists()
    folder.set_aside_stale("b")
    assert not folder.validation.exists()
    assert (tmp_path / RunFolder.PREVIOUS / RunFolder.VALIDATION).exists()
