"""The layout inference (isplit.graph.axes) checked against a second, independent method: how
each split point's shape changes with the batch and with the image's rows and columns
(tests/shape_axes.py says what is measured and which fixed axes count as positions).

Every valid cut with a known layout is compared, admissible or not, and no admissible point may
hold a pooled vector. CI runs hand-written modules (NCHW, NHWC, window partitions, tokens with a
class token) and a few torchvision models, one per layout kind; the slow tier runs every
torchvision classifier and a handful of timm models. Models whose traced graph runs at one
image size only (a fixed position embedding, a token-mixing Linear, a size assertion) are
checked at two batch sizes only: ``BATCH_ONLY`` lists them, and a model that is not listed
must run at every size. What the shapes cannot see: a layout the inference leaves unknown (such
a point is not admissible), and a Linear over a position axis (it fixes that axis's size, so the
graph runs at one size only).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import timm
import torch
import torchvision
from torch import nn

from analysis.test_every_torchvision_model import torchvision_model
from isplit.graph import ModelGraph
from isplit.graph.layout import Layout
from shape_axes import Measured, check_graph, disagreements, input_sizes, measure

# -- hand-written modules -----------------------------------------------------------------------


class Tokens(nn.Module):
    """NCHW, NHWC, 2 x 2 windows (N x windows x 4 x C), tokens (N x L x C) with a class token."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(c)
        self.window = nn.Linear(c, c)
        self.cls = nn.Parameter(torch.randn(1, 1, c))
        self.mix = nn.Linear(c, c)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        n, c, h, w = x.shape
        x = self.norm(x.permute(0, 2, 3, 1))
        x = x.view(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        x = self.window(x.reshape(n, (h // 2) * (w // 2), 4, c))
        x = x.view(n, h // 2, w // 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h * w, c)
        x = self.mix(torch.cat([self.cls.expand(n, -1, -1), x], 1))
        return self.head(x[:, 0])


class Copies(nn.Module):
    """A 1 x 1 map at 16 x 24 pixels that an adaptive pooling copies to 3 x 3 (issue 28 item 8,
    AlexNet's avgpool at 64 px)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze = nn.MaxPool2d(16)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Linear(72, 4)

    def forward(self, x):
        return self.head(self.pool(self.squeeze(torch.relu(self.conv(x)))).flatten(1))


def _check(model: nn.Module, h: int, w: int, dh: int = 0, dw: int = 0):
    """The graph of ``model`` traced at h x w, its measured shapes and the disagreements."""
    graph = ModelGraph(model.eval(), (3, h, w), "all")
    measured = measure(graph, input_sizes(h, w, dh, dw))
    return graph, measured, check_graph(graph, measured)


def _known(graph: ModelGraph, measured: Measured) -> int:
    return sum(graph.point(name).layout.known for name in measured.shapes)


def test_hand_written_layouts_agree_with_their_shapes():
    torch.manual_seed(0)
    graph, measured, found = _check(Tokens(), 16, 24, 8)
    assert not measured.batch_only and found == {}
    described = {graph.point(n).layout.describe() for n in measured.shapes}
    assert {"NCHW", "NHWC", "NPPC", "NLC (+1 token)"} <= described
    assert _known(graph, measured) == len(measured.shapes)


def test_a_wrongly_inferred_layout_fails_the_check():
    """The whole check, from the graph: the inferred axes of the stem (NCHW) reordered to NHWC,
    and the class token of the tokens forgotten, are both reported."""
    torch.manual_seed(0)
    graph = ModelGraph(Tokens().eval(), (3, 16, 24), "all")
    measured = measure(graph, input_sizes(16, 24, 8))
    n, c, h, w = graph.axes.axes[graph.node("stem")]
    graph.axes.axes[graph.node("stem")] = (n, h, w, c)
    n, tokens, c = graph.axes.axes[graph.node("mix")]
    graph.axes.axes[graph.node("mix")] = (n, replace(tokens, lead=0), c)
    for p in graph.points:
        p.layout = graph.axes.layout(graph.node(p.name))
    assert graph.point("stem").layout.describe() == "NHWC"
    assert set(check_graph(graph, measured)) == {"stem", "mix"}


def test_an_adaptive_pooling_that_copies_one_vector_is_not_admissible():
    torch.manual_seed(0)
    _, measured, found = _check(Copies(), 16, 24, 16)
    assert measured.shapes["squeeze"]["base"] == (1, 8, 1, 1)
    assert measured.shapes["squeeze"]["both"] == (1, 8, 2, 2)
    assert found == {}


# -- the comparison catches wrong layouts ----------------------------------------------------------
# the shapes of one NCHW point (8 channels, 8 x 12 at 16 x 24 px, stride 2) and of one token
# point (a class token and 8 x 12 patches), as Tokens' stem and mix have them
NCHW = {"base": (1, 8, 8, 12), "batch": (2, 8, 8, 12), "rows": (1, 8, 12, 12)}
NCHW |= {"cols": (1, 8, 8, 16), "both": (1, 8, 12, 16)}
NLC = {"base": (1, 97, 8), "batch": (2, 97, 8), "rows": (1, 145, 8), "cols": (1, 129, 8)}
NLC |= {"both": (1, 193, 8)}
RIGHT_NCHW = Layout("NCHW", (1,), (2, 3), grid=(8, 12), parts=(("h", 8), ("w", 12)))
RIGHT_NLC = Layout("NLC", (2,), (1,), extra=(1, 1, 0), grid=(8, 12), parts=(("h", 8), ("w", 12)))
WRONG = {
    "channels and positions swapped": (
        NCHW,
        Layout("NHWC", (3,), (1, 2), grid=(8, 8), parts=(("h", 8), ("w", 8))),
    ),
    "rows and columns swapped": (
        NCHW,
        Layout("NCWH", (1,), (2, 3), grid=(12, 8), parts=(("w", 8), ("h", 12))),
    ),
    "batch not on axis 0": (NCHW, Layout("CNHW", (0,), (2, 3), grid=(8, 12))),
    "the token grid transposed": (
        NLC,
        Layout("NLC", (2,), (1,), extra=(1, 1, 0), grid=(12, 8), parts=(("h", 12), ("w", 8))),
    ),
    "the class token missed": (NLC, Layout("NLC", (2,), (1,), grid=None)),
    "two extra tokens": (NLC, Layout("NLC", (2,), (1,), extra=(1, 2, 0))),
    "tokens taken for channels": (NLC, Layout("NCC", (1, 2))),
}


def test_the_right_layouts_agree():
    assert disagreements(RIGHT_NCHW, NCHW) == []
    assert disagreements(RIGHT_NLC, NLC) == []


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_layout_is_caught(case):
    shapes, layout = WRONG[case]
    assert disagreements(layout, shapes), case


def test_a_fixed_axis_is_not_taken_for_positions():
    """A 7 x 7 map that stays 7 x 7 at every size (an adaptive pooling's output) is accepted as
    positions only beside the pooling's input that grows."""
    fixed = {run: (shape[0], 8, 7, 7) for run, shape in NCHW.items()}
    layout = Layout("NCHW", (1,), (2, 3), grid=(7, 7), parts=(("h", 7), ("w", 7)))
    assert disagreements(layout, fixed)
    assert disagreements(layout, fixed, pool_input=NCHW) == []


def test_the_batch_alone_is_checked_where_the_image_size_is_fixed():
    batch_only = {run: NCHW[run] for run in ("base", "batch")}
    assert disagreements(RIGHT_NCHW, batch_only) == []
    assert disagreements(WRONG["channels and positions swapped"][1], batch_only) == []
    assert disagreements(WRONG["batch not on axis 0"][1], batch_only)


# -- torchvision --------------------------------------------------------------------------------
TV_MODELS = torchvision.models.list_models(module=torchvision.models)
# (H, W, dH, dW) of the base input and the growth of H and W (dW = dH where 0); 64 x 96 grown
# by 32 otherwise; dH = 0: the model runs at one (square) size only
TV_SIZES = {
    "alexnet": (224, 256, 32, 0),  # its adaptive pooling shrinks 6 x 7 to 6 x 6
    "inception_v3": (96, 128, 32, 0),
    "maxvit_t": (224, 224, 0, 0),  # partitions of 7 x 7 at stride 32
    "vit_b_16": (32, 32, 0, 0),
    "vit_b_32": (64, 64, 0, 0),
    "vit_l_16": (32, 32, 0, 0),
    "vit_l_32": (64, 64, 0, 0),
    "vit_h_14": (28, 28, 0, 0),
}
TV_CI = {"resnet18", "mobilenet_v3_small", "convnext_tiny", "swin_t", "vit_b_32"}


@pytest.mark.parametrize(
    "name", [m if m in TV_CI else pytest.param(m, marks=pytest.mark.slow) for m in TV_MODELS]
)
def test_torchvision_layouts_agree_with_their_shapes(name):
    h, w, dh, dw = TV_SIZES.get(name, (64, 96, 32, 0))
    graph, measured, found = _check(torchvision_model(name, h), h, w, dh, dw)
    assert measured.batch_only == (dh == 0)
    assert _known(graph, measured) > 0
    assert found == {}


def test_alexnet_at_64_px_offers_no_copies_of_one_vector():
    """Its features end 1 x 1 at 64 x 80 px, and avgpool copies them to 6 x 6 (item 8)."""
    graph, measured, found = _check(torchvision_model("alexnet", 64), 64, 80, 32)
    assert measured.pool_inputs["avgpool"]["base"] == (1, 256, 1, 1)
    assert found == {} and not graph.point("avgpool").admissible


# -- timm ------------------------------------------------------------------------------------------
# name: (timm options, (H, W, dH, dW))
TIMM = {
    "convnext_atto": ({}, (64, 96, 32, 0)),
    "efficientnet_b0": ({}, (64, 96, 32, 0)),
    "swin_tiny_patch4_window7_224": (
        {"img_size": (64, 96), "window_size": 4, "strict_img_size": False},
        (64, 96, 32, 0),
    ),
    "pvt_v2_b0": ({}, (64, 96, 32, 0)),
    "vit_tiny_patch16_224": (
        {"img_size": (64, 96), "dynamic_img_size": True, "reg_tokens": 2},
        (64, 96, 32, 0),
    ),  # a class token and two register tokens
    "davit_tiny": ({}, (64, 96, 32, 0)),
    "maxvit_nano_rw_256": ({"img_size": (64, 96)}, (64, 96, 64, 96)),  # windows of 2 x 3
    # one size only
    "levit_128s": ({"img_size": 64}, (64, 64, 0, 0)),
    "deit_tiny_distilled_patch16_224": ({"img_size": 64}, (64, 64, 0, 0)),
    "mixer_b16_224": ({"img_size": 64}, (64, 64, 0, 0)),
    "resmlp_12_224": ({"img_size": 64}, (64, 64, 0, 0)),
    "coat_lite_tiny": ({"img_size": 64}, (64, 64, 0, 0)),
    "pit_ti_224": ({"img_size": 64}, (64, 64, 0, 0)),
    "nest_tiny": ({"img_size": 64}, (64, 64, 0, 0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TIMM))
def test_timm_layouts_agree_with_their_shapes(name):
    options, (h, w, dh, dw) = TIMM[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **options)
    graph, measured, found = _check(model, h, w, dh, dw)
    assert measured.batch_only == (dh == 0)
    assert _known(graph, measured) > 0
    assert found == {}
