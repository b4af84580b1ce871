"""timm models by name (``timm:NAME``): building, preprocessing, weights, classifier, errors.

timm's ``test_*`` models (a few hundred thousand parameters, 160 px by default) keep these fast.
"""

from __future__ import annotations

import json
import sys
import textwrap
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from PIL import Image

from isplit.cli import main
from isplit.data import Preprocess
from isplit.data.preprocess import to_model_input
from isplit.errors import IsplitError
from isplit.models import load_model, load_recorded, replace_final_layer, save_weights

pytestmark = pytest.mark.skipif(find_spec("timm") is None, reason="needs isplit[timm]")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """The Hugging Face Hub unreachable and its cache empty, at once (no retries)."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _folder(root):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


# --- building and preprocessing --------------------------------------------------------------


def test_fixed_size_model_is_built_for_the_size_fed_and_seeded():
    lm = load_model("timm:test_vit", "none", image_size=64)
    assert lm.source == "timm" and lm.name == "timm:test_vit" and lm.weights == "none"
    assert lm.num_classes == 1000 and not lm.model.training
    assert all(not p.requires_grad for p in lm.model.parameters())
    # test_vit's pretrained_cfg: mean/std 0.5, bicubic, crop_pct 0.95 (resize 64 / 0.95 -> 67)
    pp = lm.preprocess
    assert (pp.size, pp.resize, pp.interpolation) == (64, 67, "bicubic")
    assert pp.mean == (0.5, 0.5, 0.5) and pp.std == (0.5, 0.5, 0.5)
    assert tuple(lm.model.patch_embed.img_size) == (64, 64)  # built for 64 px, not 160
    assert lm.model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    again = load_model("timm:TEST_VIT", "none", image_size=64)
    assert again.fingerprint() == lm.fingerprint()
    assert load_model("timm:test_vit", "none", image_size=64, seed=1).fingerprint() != (
        lm.fingerprint()
    )


def test_default_preprocess_comes_from_the_pretrained_cfg():
    lm = load_model("timm:test_resnet", "none")
    pp = lm.preprocess  # test_resnet: 160 px, crop_pct 0.95, bilinear, mean/std 0.5
    assert (pp.size, pp.resize, pp.interpolation, pp.channels) == (160, 168, "bilinear", 3)
    assert pp.mean == (0.5, 0.5, 0.5)
    small = load_model("timm:test_resnet", "none", image_size=64, mean=[0.1, 0.2, 0.3])
    assert (small.preprocess.size, small.preprocess.resize) == (64, 67)  # the crop kept
    assert small.preprocess.mean == (0.1, 0.2, 0.3)


def test_the_run_record_rebuilds_the_same_network():
    lm = load_model("timm:test_vit", "none", image_size=64, seed=3)
    record = lm.record()
    assert record["model"] == "timm:test_vit" and record["preprocess"]["size"] == 64
    again = load_recorded(record)
    assert again.source == "timm" and again.preprocess == lm.preprocess
    assert again.fingerprint() == lm.fingerprint()


def test_interpolation_is_part_of_the_preprocess():
    pp = Preprocess(size=8, channels=3, mean=(0.5,), std=(0.5,), interpolation="bicubic")
    assert Preprocess.from_json(json.loads(json.dumps(pp.to_json()))) == pp
    plain = Preprocess(size=8, channels=3, mean=(0.5,), std=(0.5,))
    assert "interpolation" not in plain.to_json()  # records without it read as before
    x = torch.zeros(3, 16, 16)
    x[:, ::2] = 1.0  # stripes: bicubic overshoots, and is clamped back into [0, 1]
    a, b = to_model_input(x, pp), to_model_input(x, plain)
    assert not torch.allclose(a, b) and a.min() >= -1 and a.max() <= 1
    with pytest.raises(IsplitError, match="interpolation"):
        Preprocess(size=8, channels=3, mean=(0.5,), std=(0.5,), interpolation="lanczos")


# --- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_with_another_class_count(tmp_path, suffix):
    trained = load_model("timm:test_resnet", "none", num_classes=3, seed=5)
    path = tmp_path / f"w{suffix}"
    save_weights(trained.model, str(path), {"model": "timm:test_resnet"})
    lm = load_model("timm:test_resnet", str(path))
    assert lm.num_classes == 3 and lm.weights == str(path)
    assert lm.fingerprint() == trained.fingerprint()
    with pytest.raises(IsplitError, match="does not fit"):
        load_model("timm:test_vit", str(path))


def test_pretrained_weights_offline_is_a_clear_error(offline):
    for weights in (None, "DEFAULT", "r160_in1k"):
        with pytest.raises(IsplitError, match="--weights none") as e:
            load_model("timm:test_resnet", weights)
        assert "timm/test_resnet.r160_in1k" in str(e.value)
    with pytest.raises(IsplitError, match="r160_in1k"):  # the tags there are
        load_model("timm:test_resnet", "in22k")


def test_pretrained_weights_are_recorded_by_tag_with_their_class_names(monkeypatch):
    import timm.models._builder as builder

    def fake_download(model, *args, **kwargs):  # "pretrained": every parameter 0.01
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.01)

    monkeypatch.setattr(builder, "load_pretrained", fake_download)
    lm = load_model("timm:test_vit", image_size=64)
    assert lm.weights == "r160_in1k" and lm.source == "timm"  # the tag, not "none"
    assert all(torch.all(p == 0.01) for p in lm.model.parameters())
    assert lm.classes is not None and len(lm.classes) == 1000 and lm.classes[0] == "tench"
    again = load_recorded(lm.record())
    assert again.fingerprint() == lm.fingerprint() and again.weights == "r160_in1k"
    with pytest.raises(IsplitError, match="1000 classes, not 3"):
        load_model("timm:test_vit", "DEFAULT", num_classes=3)


def test_pretrained_offline_from_the_command_line(offline, cli_error):
    err = cli_error("points", "--model", "timm:test_resnet")
    assert "cannot get the pretrained weights" in err and "--weights none" in err


# --- the classifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, layer", [("timm:test_vit", "head"), ("timm:test_convnext", "head.fc")]
)
def test_classifier_resized_with_reset_classifier(name, layer):
    lm = load_model(name, "none", image_size=64)
    assert replace_final_layer(lm.model, 4) == layer
    assert lm.model.num_classes == 4
    assert lm.model(torch.zeros(2, 3, 64, 64)).shape == (2, 4)


# --- bad input -------------------------------------------------------------------------------


def test_unknown_timm_name_suggests_close_ones(cli_error):
    with pytest.raises(IsplitError, match="did you mean resnet10t"):
        load_model("timm:resnet10", "none")
    err = cli_error("points", "--model", "timm:create_model")  # was a raw TypeError
    assert "unknown timm model 'create_model'" in err
    with pytest.raises(IsplitError, match="did you mean timm:test_vit"):
        load_model("test_vit", "none")


def test_timm_not_installed(monkeypatch, cli_error):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(IsplitError, match=r"pip install 'isplit\[timm\]'"):
        load_model("timm:test_vit", "none")
    assert "isplit[timm]" in cli_error("points", "--model", "timm:resnet50", "--weights", "none")
    with pytest.raises(IsplitError, match="unknown model"):  # the hint needs no timm
        load_model("resnet10t", "none")


def test_size_a_fixed_size_model_cannot_take():
    with pytest.raises(IsplitError, match="fixed input size .160 px. .* 40 px"):
        load_model("timm:test_maxvit", "none", image_size=40)
    with pytest.raises(IsplitError, match="divisible by patch size"):
        load_model("timm:test_vit", "none", image_size=20)


FACTORIES = """
def needs(name, size):
    raise AssertionError("never called")

def boom():
    raise RuntimeError("kaput")
"""


@pytest.mark.parametrize(
    "attr, message",
    [
        ("needs", "needs arguments .*'name'.* with none"),
        ("boom", r"boom\(\) raised RuntimeError: kaput"),
    ],
)
def test_factory_needing_arguments_or_raising(tmp_path, monkeypatch, cli_error, attr, message):
    name = "isplit_test_timm_factories"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(IsplitError, match=message):
        load_model(f"{name}:{attr}")
    err = cli_error("points", "--model", f"{name}:{attr}")
    assert f"{name}:{attr}" in err


def test_factory_module_raising_on_import(tmp_path, monkeypatch):
    (tmp_path / "isplit_test_bad_module.py").write_text("raise ValueError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(IsplitError, match="raised ValueError: half written"):
        load_model("isplit_test_bad_module:make")


def test_timm_factory_with_arguments_from_the_command_line(cli_error):
    err = cli_error("points", "--model", "timm.models:create_model")
    assert "needs arguments" in err and "timm:NAME" in err


# --- the command line, end to end -------------------------------------------------------------


def test_points_from_the_command_line(capsys):
    argv = ["points", "--model", "timm:test_resnet", "--weights", "none", "--image-size", "64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "layer4.0.act2" in out and "1x96x2x2" in out


@pytest.mark.parametrize(
    "name, size, resize",  # resize: size / crop_pct (0.95, 0.9)
    [("test_resnet", 48, 50), ("vit_tiny_patch16_224", 32, 35)],  # the ViT built for 32 px
)
def test_analyze_a_timm_model_on_an_image_folder(capsys, tmp_path, name, size, resize):
    data, out = _folder(tmp_path / "imgs"), tmp_path / "run"
    argv = ["analyze", "--model", f"timm:{name}", "--weights", "none", "--data", str(data)]
    argv += ["--split", "all", "--image-size", str(size), "--out", str(out), "--workers", "0"]
    argv += ["--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    doc = json.loads((out / "curves.json").read_text())
    assert doc["model"] == f"timm:{name}" and doc["dataset"]["images"] == 6
    assert doc["settings"]["preprocess"]["resize"] == resize
    loaded = load_recorded({"model": doc["model"], **doc["settings"]})
    assert loaded.source == "timm" and loaded.preprocess.size == size
    assert any(p["admissible"] and p["cui"] > 0 for p in doc["points"])
