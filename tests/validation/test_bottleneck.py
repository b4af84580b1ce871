"""The bottleneck at a split point: shapes at every valid cut, the 8-bit code, errors."""

import pytest
import torch

from isplit import IsplitError
from isplit.graph import ModelGraph
from isplit.models import load_model
from isplit.validation.bottleneck import Bottleneck


@pytest.mark.parametrize(
    "name,shape",
    [("demo-vgg16", (1, 32, 32)), ("demo-resnet50", (1, 32, 32)), ("resnet18", (3, 64, 64))],
)
def test_bottleneck_shapes_match_at_every_valid_cut(name, shape):
    model = load_model(name, "none").model
    graph = ModelGraph(model, shape, granularity="all")
    spatial = [graph.point(n) for n in graph.all_cuts if len(graph.point(n).shape) == 4]
    assert len(spatial) >= 10
    for p in spatial:
        z = torch.randn(2, *p.shape[1:])
        for halve in (False, True):
            b = Bottleneck(p.shape, ratio=min(8, p.shape[1]), halve=halve).eval()
            assert b(z).shape == z.shape, (p.name, halve)
            code = b.encoder(z)
            assert code.shape[1:] == b.code_shape
            assert b.encoded_bytes == 4 * code[0].numel()
            assert b.encoded_bytes_int8 == code[0].numel() + 5  # + scale and zero point


def test_int8_quantisation_of_the_code_is_within_half_a_step():
    code = torch.rand(3, 4, 5, 5) * torch.tensor([1.0, 10.0, 100.0])[:, None, None, None]
    back = Bottleneck.quantise(code)
    flat = code.flatten(1)  # the quantised range always holds 0
    step = (flat.max(1).values.clamp(min=0) - flat.min(1).values.clamp(max=0)) / 255
    assert ((back - code).abs().flatten(1).max(1).values <= step / 2 + 1e-6).all()
    assert len(torch.unique(back[2])) <= 256


def test_ratio_larger_than_channels_is_an_error():
    with pytest.raises(IsplitError, match="larger than the 16 channels"):
        Bottleneck((16, 8, 8), ratio=32)
