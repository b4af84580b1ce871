"""CAM methods other than Grad-CAM: Grad-CAM++ against pytorch-grad-cam and against the paper's
formula written here with plain hooks; a CAM class (or its name) reaching ``analyze``, its
settings, its trace cache and the report's maps."""

import re
import types
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from analysis.test_self_checks import HAVE_FMNIST
from isplit.analysis import AnalysisSettings, analyze
from isplit.errors import IsplitError
from isplit.graph import ModelGraph
from isplit.importance import GradCAM, GradCAMPlusPlus
from isplit.importance.registry import CAMS, cam_class, cam_name, recorded_cam
from tiny_nets import small_rgb, vit

RESNET_POINTS = {
    "layer1.1.relu_1": "layer1",
    "layer2.1.relu_1": "layer2",
    "layer4.1.relu_1": "layer4",
}


class DoubledCAM(GradCAM):
    """A user's Grad-CAM that overrides one step: every channel weight doubled."""

    def channel_weights(self, activation, gradient):
        return 2 * super().channel_weights(activation, gradient)


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=7).eval()


def _frozen(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _gradcampp_by_hooks(model, modules, x, y, drop_tokens=0):
    """The paper's Grad-CAM++ (eq. 19, with pytorch-grad-cam's eps) in float64 from plain forward
    hooks and ``torch.autograd.grad``: the maps [N, positions] before any reduction over the
    channels is scaled (their channel sum, ReLU), and the channel count. Tokens N x L x D: the
    first ``drop_tokens`` tokens left out, D the channels."""
    acts = []
    handles = [m.register_forward_hook(lambda _m, _i, out: acts.append(out)) for m in modules]
    try:
        x = x.clone().requires_grad_(True)
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), acts)
    out = []
    for a, g in zip(acts, grads):
        a, g = a.detach().double(), g.double()
        if a.dim() == 3:  # tokens: N x L x D -> N x D x positions
            a, g = a[:, drop_tokens:].transpose(1, 2), g[:, drop_tokens:].transpose(1, 2)
        a, g = a.flatten(2), g.flatten(2)
        g2, g3 = g**2, g**3
        aij = g2 / (2 * g2 + a.sum(2, keepdim=True) * g3 + 1e-6)
        aij = torch.where(g != 0, aij, 0.0)
        alpha = (aij * g.clamp_min(0)).sum(2)  # [N, C]
        out.append((torch.relu((alpha[:, :, None] * a).sum(1)), a.shape[1]))
    return out


def _close(ours, ref):
    ref = torch.as_tensor(ref, dtype=torch.float64)
    torch.testing.assert_close(
        ours.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()), check_device=False
    )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradcampp_maps_and_cui_equal_pytorch_grad_cam(reduction):
    pgc = pytest.importorskip("pytorch_grad_cam")
    model = _resnet()
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 4, 6])
    layers = [model.get_submodule(m) for m in RESNET_POINTS.values()]
    # pytorch-grad-cam's own pipeline up to its weighted channel sum (its __call__ then resizes
    # the map to the input and scales it to [0, 1], which isplit does only in the report)
    ref = pgc.GradCAMPlusPlus(model, layers)
    logits = ref.activations_and_grads(x.clone().requires_grad_(True))
    logits.gather(1, y[:, None]).sum().backward()
    per_layer = [
        ref.get_cam_image(x, layer, None, a.numpy(), g.numpy())
        for layer, a, g in zip(
            layers, ref.activations_and_grads.activations, ref.activations_and_grads.gradients
        )
    ]
    ref.activations_and_grads.release()
    cam = GradCAMPlusPlus(ModelGraph(_frozen(model), (3, 64, 64)), list(RESNET_POINTS), reduction)
    out = cam(x, y, keep_maps=True)
    for k, theirs in enumerate(per_layer):
        m = torch.relu(torch.from_numpy(theirs).double())
        if reduction == "mean":
            m = m / layers[k][-1].conv2.out_channels
        _close(out.maps[k], m)
        _close(out.cui[:, k], m.flatten(1).mean(1))
    assert (out.cui > 0).all()


def test_gradcampp_equals_the_papers_formula_by_hooks_on_cnn_and_tokens():
    model = _resnet()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 5])
    ref = _gradcampp_by_hooks(model, [model.get_submodule(m) for m in RESNET_POINTS.values()], x, y)
    out = GradCAMPlusPlus(ModelGraph(_frozen(model), (3, 64, 64)), list(RESNET_POINTS))(
        x, y, keep_maps=True
    )
    for k, (m, channels) in enumerate(ref):
        _close(out.maps[k].flatten(1), m / channels)  # the default reduction: mean
        _close(out.cui[:, k], (m / channels).mean(1))
    # tokens N x L x D with a class token (left out of the map), and the patch grid N x C x H x W
    torch.manual_seed(1)
    net = vit().eval()
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 8])
    (tokens, d), (grid, c) = _gradcampp_by_hooks(
        net, [net.encoder.layers.encoder_layer_0, net.conv_proj], x, y, drop_tokens=1
    )
    points = ["conv_proj", "permute", "encoder.layers.encoder_layer_0.add_1"]
    out = GradCAMPlusPlus(ModelGraph(_frozen(net), (1, 28, 28)), points, "sum")(
        x, y, keep_maps=True
    )
    _close(out.maps[0].flatten(1), grid)
    _close(out.maps[1].flatten(1), grid)  # a permuted copy: the same map
    _close(out.maps[2].flatten(1), tokens)


def test_a_cam_class_or_its_name_reaches_analyze_and_its_settings():
    data = TensorDataset(torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                         torch.arange(16) % 3)  # fmt: skip
    torch.manual_seed(0)
    model = small_rgb()

    def run(**kw):
        return analyze(model, data, batch_size=8, predictors="cui", **kw)

    plain, doubled = run(), run(cam=DoubledCAM)
    by_class, by_name = run(cam=GradCAMPlusPlus), run(cam="gradcam++")
    again = run()  # the cached instrumentation of another class is not reused
    # ReLU(2 x) = 2 ReLU(x): the user's override doubles every CUI
    np.testing.assert_allclose(doubled.cui, 2 * plain.cui, rtol=1e-6)
    np.testing.assert_array_equal(again.cui, plain.cui)
    np.testing.assert_array_equal(by_class.cui, by_name.cui)
    assert not np.allclose(by_name.cui, plain.cui)
    assert "cam" not in plain.settings  # the default is recorded as before
    assert by_class.settings["cam"] == by_name.settings["cam"] == "gradcam++"
    assert doubled.settings["cam"] == f"{__name__}.DoubledCAM"
    with pytest.raises(IsplitError, match=re.escape("unknown CAM method 'gradcam+'")):
        run(cam="gradcam+")
    with pytest.raises(IsplitError, match="GradCAM subclass"):
        AnalysisSettings(cam=nn.Module)


def test_the_trace_cache_keeps_a_gradcam_per_class():
    from isplit.analysis.instrumented import instrument

    model = small_rgb()
    shape = (3, 16, 16)
    made = [
        instrument(model, shape, AnalysisSettings(cam=cam), "m")[2]
        for cam in ("gradcam", DoubledCAM, DoubledCAM, "gradcam++", "gradcam")
    ]
    assert [type(c) for c in made] == [GradCAM, DoubledCAM, DoubledCAM, GradCAMPlusPlus, GradCAM]
    assert made[1] is made[2] and made[0] is not made[4]


def test_the_report_draws_the_maps_of_the_class_the_analysis_recorded():
    from isplit.report.maps import _gradcam

    torch.manual_seed(0)
    model = small_rgb()
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 2])
    points = ["1", "3"]

    def maps(cam):
        settings = {"input_shape": [3, 16, 16], "reduction": "mean"} | ({"cam": cam} if cam else {})
        run = types.SimpleNamespace(settings=settings, leaf_modules=[])
        return _gradcam(run, model, points, x, y).cui

    plain = maps(None)
    torch.testing.assert_close(maps(f"{__name__}.DoubledCAM"), 2 * plain)
    expected = GradCAMPlusPlus(ModelGraph(model, (3, 16, 16)), points)(x, y).cui
    torch.testing.assert_close(maps("gradcam++"), expected)
    with pytest.warns(UserWarning, match="plain Grad-CAM's"):
        torch.testing.assert_close(maps("gone.module.Cam"), plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps("gradcam")


def test_the_registry_names_and_loads_the_cam_methods():
    assert list(CAMS) == ["gradcam", "gradcam++"]
    assert cam_class("gradcam++") is GradCAMPlusPlus and cam_class(DoubledCAM) is DoubledCAM
    assert cam_name(GradCAM) == "gradcam" and cam_name(GradCAMPlusPlus) == "gradcam++"
    assert recorded_cam(None) == (GradCAM, None)
    assert recorded_cam("local.<locals>.Cam")[0] is GradCAM


def test_analyze_takes_cam_on_the_command_line():
    from isplit.cli import build_parser

    assert build_parser().parse_args(["analyze", "--cam", "gradcam++"]).cam == "gradcam++"
    assert build_parser().parse_args(["analyze"]).cam == "gradcam"


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist not installed")
def test_gradcampp_on_the_trained_demo_network_equals_the_papers_formula():
    """On trained weights (the packaged demo-vgg16, 94 % on Fashion-MNIST) and real images,
    where the gradients are those of a network that decides: the same numbers as the formula."""
    from isplit.data import load_dataset
    from isplit.models import load_model

    loaded = load_model("demo-vgg16")
    data = load_dataset("fashion-mnist", "test", loaded.preprocess)
    x = torch.stack([data[i][0] for i in range(8)])
    y = torch.tensor([int(data[i][1]) for i in range(8)])
    model = _frozen(loaded.model.eval())
    points = ["features.5", "features.19"]
    ref = _gradcampp_by_hooks(model, [model.get_submodule(p) for p in points], x, y)
    out = GradCAMPlusPlus(ModelGraph(model, tuple(x.shape[1:])), points)(x, y, keep_maps=True)
    for k, (m, channels) in enumerate(ref):
        assert (m > 0).any()
        _close(out.maps[k].flatten(1), m / channels)
        _close(out.cui[:, k], (m / channels).mean(1))
    assert (out.logits.argmax(1) == y).float().mean() >= 0.75  # a network that decides
