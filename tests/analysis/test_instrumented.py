"""The trace of a model kept between analyze() calls: reused when nothing it depends on
changed, made anew when the model's structure did, and never keeping the model alive."""

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from isplit.analysis import analyze, instrumented
from tiny_nets import small_rgb as small_net


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(24, 3, 16, 16, generator=g), torch.arange(24) % 3)


@pytest.fixture
def traces(monkeypatch):
    """Counts the models traced."""
    made = []
    real = instrumented.ModelGraph

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(instrumented, "ModelGraph", counting)
    return made


def run(model, data, **kw):
    return analyze(model, data, batch_size=8, predictors="cui", **kw)


def test_a_second_analysis_of_the_same_model_reuses_its_trace(data, traces):
    torch.manual_seed(0)
    model = small_net()
    first, second = run(model, data), run(model, data)
    assert len(traces) == 1
    np.testing.assert_array_equal(first.cui, second.cui)
    # other points and budgets on the same trace: restricted as in a fresh run
    narrow = run(model, data, max_bytes=min(p.bytes for p in first.points if p.admissible))
    assert len(traces) == 1
    assert sum(p.admissible for p in narrow.points) < sum(p.admissible for p in first.points)
    assert [p.admissible for p in run(model, data).points] == [p.admissible for p in first.points]
    # another input size is another trace
    big = TensorDataset(torch.randn(8, 3, 24, 24), torch.arange(8) % 3)
    run(model, big)
    assert len(traces) == 2


def test_a_replaced_layer_or_parameter_is_traced_anew(data, traces):
    torch.manual_seed(0)
    model = small_net()
    before = run(model, data)
    torch.manual_seed(1)
    model[2] = nn.Conv2d(8, 8, 3, padding=1)  # a new layer: the old trace would still run it
    after = run(model, data)
    assert len(traces) == 2
    np.testing.assert_allclose(after.cui, run(_copy(model), data).cui, rtol=1e-6)
    assert not np.allclose(after.cui, before.cui)
    model[0].bias = nn.Parameter(torch.ones(8))  # a new parameter in the same layer
    run(model, data)
    assert len(traces) == 4  # the copy's trace, and this one


def test_weights_changed_in_place_are_seen_without_a_new_trace(data, traces):
    torch.manual_seed(0)
    model = small_net()
    before = run(model, data)
    with torch.no_grad():
        model[5].weight.mul_(-2.0)
    after = run(model, data)
    assert len(traces) == 1
    np.testing.assert_allclose(after.cui, run(_copy(model), data).cui, rtol=1e-6)
    assert not np.allclose(after.cui, before.cui)


def test_the_kept_trace_does_not_keep_the_model_alive(data):
    model = small_net()
    run(model, data)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def _copy(model: nn.Module) -> nn.Module:
    new = small_net()
    new.load_state_dict(model.state_dict())
    return new.eval()
