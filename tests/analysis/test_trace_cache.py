"""The trace kept between analyze() calls is never stale: after any change of the model that
changes its traced graph (a plain attribute that a forward reads, a submodule swapped, a hook
added or removed, a forward patched on an instance or its class) the next analysis equals that of
a fresh copy of the changed model; a model left as it was reuses its trace."""

import copy
import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from isplit.analysis import analyze, instrumented


class Block(nn.Module):
    """A convolution, a ReLU and a dropout, added to its input when ``residual`` (a plain
    attribute that decides the traced graph)."""

    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(x, self.drop(self.act(self.conv(x))))

    def combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y if self.residual else y


_BLOCK_FORWARD = Block.forward


class Net(nn.Module):
    """Two blocks on 3 x 16 x 16 images, 3 classes, whose graph plain attributes decide: the
    blocks' ``order`` (a list), ``pool`` ("avg", or "corner": the top left position alone) and
    ``opts.max_pool`` (an attribute of a plain object); the logits are scaled by ``opts.scale``, a
    tensor that the trace adds to the model (torch.fx keeps it as ``_tensor_constant0``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 3)
        self.order = [0, 1]
        self.pool = "avg"
        self.opts = types.SimpleNamespace(max_pool=False, scale=torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in self.order:
            x = self.blocks[i](x)
        if self.pool == "corner":
            x = x[:, :, :1, :1]
        x = x.amax((2, 3)) if self.opts.max_pool else x.mean((2, 3))
        return self.head(x) * self.opts.scale


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(16, 3, 16, 16, generator=g), torch.arange(16) % 3)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def run(model, data):
    return analyze(model, data, batch_size=8, predictors="cui")


def same(a, b) -> bool:
    """Whether two analyses have the same points and CUI curve."""
    names = [p.name for p in a.points] == [p.name for p in b.points]
    return names and np.allclose(a.cui, b.cui, rtol=1e-6, atol=0)


def as_fresh(model, data):
    """The analysis of ``model``, checked equal to that of a fresh deep copy of it."""
    result = run(model, data)
    fresh = run(copy.deepcopy(model), data)
    assert same(result, fresh)
    return result


def kept(model):
    """The traced graph kept for ``model``."""
    return instrumented._CACHE[model][1]


def _negated(self, x):
    return -_BLOCK_FORWARD(self, x)


def test_an_unchanged_model_reuses_its_trace(net, data):
    first = run(net, data)
    graph = kept(net)
    net.pool = "".join(["a", "vg"])  # an equal value, another object
    net.blocks[0].register_forward_hook(lambda *args: None).remove()
    net.blocks[0].train()  # analysed in eval mode: the same trace
    assert same(run(net, data), first)
    assert kept(net) is graph


@pytest.mark.parametrize(
    "change",
    [
        lambda m: setattr(m, "pool", "corner"),
        lambda m: setattr(m.blocks[1], "residual", False),
        lambda m: m.order.reverse(),  # a list changed in place
        lambda m: setattr(m.opts, "max_pool", True),  # an object's attribute
    ],
    ids=["model", "submodule", "list", "object"],
)
def test_a_plain_attribute_that_forward_reads_is_traced_anew(net, data, change):
    before = run(net, data)
    change(net)
    assert not same(as_fresh(net, data), before)


def test_a_submodule_swapped_is_traced_anew(net, data):
    before = run(net, data)
    torch.manual_seed(1)
    net.blocks[1] = Block(residual=False)
    assert not same(as_fresh(net, data), before)


@pytest.mark.parametrize(
    "add",
    [
        lambda m: m.blocks[0].register_forward_hook(lambda mod, args, out: -out),
        lambda m: m.blocks[1].register_forward_pre_hook(lambda mod, args: (-args[0],)),
        lambda m: nn.modules.module.register_module_forward_hook(
            lambda mod, args, out: -out if isinstance(mod, Block) else None
        ),
    ],
    ids=["forward", "pre", "global"],
)
def test_a_hook_added_or_removed_is_traced_anew(net, data, add):
    before = run(net, data)
    handle = add(net)
    try:
        assert not same(as_fresh(net, data), before)
    finally:
        handle.remove()
    assert same(run(net, data), before)


def test_a_submodule_in_training_mode_is_analysed_in_eval_mode(net, data):
    before = run(net, data)
    net.blocks[0].train()
    assert same(as_fresh(net, data), before)  # dropout off, as in eval mode
    assert net.blocks[0].training and not net.blocks[1].training  # the user's modes kept


def test_a_forward_patched_on_an_instance_is_traced_anew(net, data):
    before = run(net, data)
    net.blocks[1].forward = types.MethodType(_negated, net.blocks[1])
    assert not same(as_fresh(net, data), before)
    del net.blocks[1].forward
    assert same(run(net, data), before)


@pytest.mark.parametrize("method", ["forward", "combine"])
def test_a_method_replaced_on_the_class_is_traced_anew(net, data, monkeypatch, method):
    before = run(net, data)
    if method == "forward":
        monkeypatch.setattr(Block, "forward", _negated)
    else:
        monkeypatch.setattr(Block, "combine", lambda self, x, y: x - y)
    assert not same(as_fresh(net, data), before)


def test_a_forgotten_model_is_traced_anew(net, data):
    run(net, data)
    graph = kept(net)
    instrumented.forget(net)
    run(net, data)
    assert kept(net) is not graph


def test_timm_vit_global_pool_set_to_avg_is_traced_anew():
    """The issue's case: a ViT analysed with its class token pooled, then with ``global_pool =
    "avg"``: the class-token graph (no gradient reaches ``norm``) must not be reused."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=32).eval()
    g = torch.Generator().manual_seed(0)
    images = TensorDataset(torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % 4)
    before = run(model, images)
    model.global_pool = "avg"
    after = as_fresh(model, images)
    assert not same(after, before)
    norm = [c for p, c in zip(after.points, after.cui, strict=True) if p.name.startswith("norm.")]
    assert norm and norm[0] > 0
