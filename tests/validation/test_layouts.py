"""Validation at points whose tensor is not N x C x H x W: the bottleneck works along the point's
channel axis wherever its layout puts it (N x C x H x W exactly as before), the probe pools over
image positions only, a point whose layout is unknown is refused with the reason; and on a tiny
ConvNeXt (a channels-last point) and a tiny ViT (a token point), trained on Fashion-MNIST, the
bottleneck learns. With ``halve`` at tokens, the patch tokens are halved as their image grid and
the class token crosses alone, in place; where there is no image grid, halving is refused, and
said."""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import isplit
from isplit import IsplitError
from isplit.analysis import Analysis
from isplit.graph import ModelGraph
from isplit.graph.layout import Layout
from isplit.validation import bottleneck_file, linear_probe
from isplit.validation.arrange import FromMap, ToMap, map_form
from isplit.validation.bottleneck import Bottleneck, load_bottleneck
from isplit.validation.points import choose_points, warn_not_halved

NHWC = Layout("NHWC", (3,), (1, 2), grid=(5, 6))
TOKENS = Layout("NLC", (2,), (1,), extra=(1, 1, 0), grid=(4, 4))  # a class token first
HEADS = Layout("NCLC", (1, 3), (2,), extra=(2, 1, 0), grid=(2, 2))  # heads x dim: one channel axis
PARTITIONS = Layout("NPPC", (3,), (1, 2))  # window x position in the window


#: layout -> the map [N, C, H, W] of x, written by hand
MAPS = {
    None: lambda x: x,
    NHWC: lambda x: x.permute(0, 3, 1, 2),
    TOKENS: lambda x: x.transpose(1, 2)[..., None],
    HEADS: lambda x: x.permute(0, 1, 3, 2).reshape(len(x), 8, 5, 1),
    PARTITIONS: lambda x: x.permute(0, 3, 1, 2).reshape(len(x), 8, 36, 1),
}


@pytest.mark.parametrize(
    "shape,layout,map_shape",
    [((8, 5, 6), None, (8, 5, 6)), ((5, 6, 8), NHWC, (8, 5, 6)), ((17, 8), TOKENS, (8, 17, 1)),
     ((2, 5, 4), HEADS, (8, 5, 1)), ((4, 9, 8), PARTITIONS, (8, 36, 1))],
)  # fmt: skip
def test_the_map_puts_the_channels_on_axis_1_and_arranges_back(shape, layout, map_shape):
    form = map_form(shape, layout)
    assert form.map_shape == map_shape and form.kernel == (3 if map_shape[2] > 1 else 1)
    assert form.identity == (layout is None)
    x = torch.randn(3, *shape)
    m = ToMap(form)(x)
    assert torch.equal(m, MAPS[layout](x))
    assert torch.equal(FromMap(form)(m), x)


def test_channels_last_is_the_channels_first_bottleneck_on_the_permuted_tensor():
    torch.manual_seed(0)
    first = Bottleneck((8, 5, 6), ratio=2, halve=True).eval()
    assert first.encoder.arrange is None and first.decoder.arrange is None  # as before layouts
    assert first.code_layout.axes == "NCHW" and first.code_shape == (4, 3, 3)
    torch.manual_seed(0)
    last = Bottleneck((5, 6, 8), ratio=2, halve=True, layout=NHWC).eval()
    assert last.state_dict().keys() == first.state_dict().keys()
    assert last.code_shape == first.code_shape and last.code_layout == first.code_layout
    z = torch.randn(4, 5, 6, 8)
    with torch.no_grad():
        want = first(z.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        assert torch.allclose(last(z), want, atol=1e-6)
        assert torch.allclose(last.encoder(z), first.encoder(z.permute(0, 3, 1, 2)))


def test_at_tokens_each_token_is_compressed_alone_class_token_included():
    torch.manual_seed(0)
    b = Bottleneck((17, 8), ratio=4, layout=TOKENS).eval()
    assert b.code_shape == (2, 17, 1) and not b.halve and b.encoded_bytes == 4 * 2 * 17
    assert b.code_layout == Layout("NCL1", (1,), (2,), extra=(2, 1, 0), grid=(4, 4))
    z = torch.randn(2, 17, 8)
    moved = z.clone()
    moved[:, 0] += 5.0  # only the class token changes
    with torch.no_grad():
        out, out_moved = b(z), b(moved)
    assert out.shape == z.shape
    assert torch.equal(out[:, 1:], out_moved[:, 1:]) and not torch.equal(out[:, 0], out_moved[:, 0])
    assert Bottleneck((2, 5, 4), ratio=8, layout=HEADS).code_shape == (
        1,
        5,
        1,
    )  # 2 heads x 4 = 8 channels


def test_halved_tokens_are_the_patch_grid_halved_like_a_map_and_the_class_token_alone():
    torch.manual_seed(0)
    b = Bottleneck((17, 8), ratio=4, halve=True, layout=TOKENS).eval()
    assert b.halve and b.not_halved is None
    assert b.code_shape == (2, 1 + 2 * 2, 1) and b.encoded_bytes == 4 * 2 * 5
    assert b.encoded_bytes_int8 == 2 * 5 + 5
    assert b.code_layout == Layout("NCL1", (1,), (2,), extra=(2, 1, 0), grid=(2, 2))
    z = torch.randn(3, 17, 8)
    with torch.no_grad():
        code, out = b.encoder(z), b(z)
        grid = z[:, 1:].transpose(1, 2).reshape(3, 8, 4, 4)  # the patch tokens, row-major
        want = F.relu(b.encoder.bn(b.encoder.conv(grid)))
        cls = b.encoder.extra(z[:, 0, :, None, None])
    assert b.encoder.conv.stride == (2, 2) and b.encoder.conv.kernel_size == (3, 3)
    assert code.shape == (3, 2, 5, 1) and torch.allclose(code[:, :, 0], cls[..., 0])
    assert torch.allclose(code[:, :, 1:, 0], want.flatten(2))
    assert out.shape == z.shape
    moved = z.clone()
    moved[:, 0] += 5.0  # only the class token changes: only the class token's output does
    with torch.no_grad():
        out_moved = b(moved)
    assert torch.equal(out[:, 1:], out_moved[:, 1:]) and not torch.equal(out[:, 0], out_moved[:, 0])
    moved = z.clone()
    moved[:, 1] += 5.0  # the first patch: the class token's output does not change
    with torch.no_grad():
        out_moved = b(moved)
    assert torch.equal(out[:, 0], out_moved[:, 0]) and not torch.equal(out[:, 1:], out_moved[:, 1:])
    # 5 x 3 patches, two extra tokens in front and one behind: a ceil(H/2) x ceil(W/2) grid
    odd = Layout("NLC", (2,), (1,), extra=(1, 2, 1), grid=(5, 3))
    b = Bottleneck((18, 8), ratio=2, halve=True, layout=odd).eval()
    assert b.code_shape == (4, 2 + 3 * 2 + 1, 1)
    assert b.code_layout == Layout("NCL1", (1,), (2,), extra=(2, 2, 1), grid=(3, 2))
    assert b(torch.randn(2, 18, 8)).shape == (2, 18, 8)


@pytest.mark.parametrize(
    "shape,layout,why",
    [((4, 9, 8), PARTITIONS, r"36 positions \(laid out NPPC\) do not form the image grid"),
     ((17, 8), Layout("NLC", (2,), (1,), extra=(1, 1, 0)), "do not form the image grid"),
     ((8, 1, 6), None, "image grid is 1 x 6"),
     ((5, 8), Layout("NLC", (2,), (1,), extra=(1, 1, 0), grid=(1, 4)), "image grid is 1 x 4")],
)  # fmt: skip
def test_halving_without_an_image_grid_is_refused_with_the_reason(shape, layout, why):
    b = Bottleneck(shape, ratio=2, halve=True, layout=layout)
    assert not b.halve and re.search(why, b.not_halved), b.not_halved
    assert b.code_shape == Bottleneck(shape, ratio=2, layout=layout).code_shape
    assert Bottleneck(shape, ratio=2, layout=layout).not_halved is None  # not asked


def test_a_sweep_warns_once_naming_the_points_it_cannot_halve(caplog):
    points = {
        "grid": SimpleNamespace(shape=(1, 8, 4, 4), layout=Layout.channels_first((1, 8, 4, 4))),
        "tokens": SimpleNamespace(shape=(1, 17, 8), layout=TOKENS),
        "windows": SimpleNamespace(shape=(1, 4, 9, 8), layout=PARTITIONS),
        "row": SimpleNamespace(shape=(1, 8, 1, 6), layout=Layout.channels_first((1, 8, 1, 6))),
    }
    analysis = SimpleNamespace(point=points.__getitem__)
    with caplog.at_level(logging.WARNING, logger="isplit"):
        refused = warn_not_halved(analysis, list(points))
    assert list(refused) == ["windows", "row"]
    (record,) = caplog.records
    assert "2 point(s)" in record.getMessage() and "windows: its 36" in record.getMessage()
    assert "row: its image grid is 1 x 6" in record.getMessage()


def test_an_unknown_layout_is_refused_with_its_reason():
    unknown = Layout("N??", reason="axis 1 (size 6) could not be followed after view")
    with pytest.raises(IsplitError, match=r"layout is unknown \(axis 1 \(size 6\) could not"):
        Bottleneck((6, 7), layout=unknown)


def test_the_probe_pools_over_image_positions_only():
    """The label is in channel 0 of the image tokens; the class token is loud noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    z = 0.1 * torch.randn(400, 17, 8, generator=g)
    z[:, 1:, 0] += (2 * y - 1)[:, None].float()
    z[:, 0] = 60 * torch.randn(400, 8, generator=g)
    score = lambda layout: linear_probe(z[:300], y[:300], z[300:], y[300:], 0, layout)  # noqa: E731
    assert score(TOKENS) == 1.0
    assert score(Layout("NLC", (2,), (1,), grid=None)) < 0.8  # the class token pooled in


# --------------------------------------------------------------------------------------------
# The tiny ConvNeXt and ViT (conftest's tiny_runs)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["convnext", "vit"])
def test_the_bottleneck_learns_at_a_channels_last_and_a_token_point(tiny_runs, name):
    tiny = tiny_runs[name]
    report = json.loads((tiny.validation / "validation.json").read_text())
    (row,) = report["points"]
    unsplit = report["unsplit_accuracy"]
    chance = report["chance_accuracy"] if "chance_accuracy" in report else 0.1
    assert row["name"] == tiny.point and unsplit > 0.5
    assert row["accuracy"] > 0.5 and row["accuracy"] >= unsplit - 0.12, (row, unsplit)
    assert abs(row["accuracy_int8"] - row["accuracy"]) <= 0.03
    assert row["probe_accuracy"] > 3 * chance
    bottleneck, _, md = load_bottleneck(bottleneck_file(tiny.validation, tiny.point))
    point = Analysis.load(tiny.run).point(tiny.point)
    assert bottleneck.layout == point.layout and md["layout"] == point.layout.to_json()
    assert point.layout.axes == ("NHWC" if name == "convnext" else "NLC")
    assert bottleneck.code_shape[0] == (16 if name == "convnext" else 32) // 4  # --ratio 4
    assert row["encoded_bytes"] == bottleneck.encoded_bytes


def test_points_count_channels_along_the_layout_and_refuse_unknown_layouts(tiny_runs):
    tiny = tiny_runs["vit"]  # N x 17 x 32: the channels are the last axis
    analysis = Analysis.load(tiny.run)
    loaded = isplit.load_model(tiny.model, str(tiny.weights))
    graph = ModelGraph(loaded.model, (1, 28, 28), "all")
    assert choose_points(analysis, graph, [tiny.point], [], 32)[0] == [tiny.point]
    with pytest.raises(IsplitError, match=r"\(32 channels\).*--ratio 32 or less"):
        choose_points(analysis, graph, [tiny.point], [], 64)
    point = analysis.point(tiny.point)
    point.layout = Layout("N??", reason="axis 1 (size 17) could not be followed after roll")
    with pytest.raises(IsplitError, match=r"layout is unknown \(axis 1 \(size 17\).*roll"):
        choose_points(analysis, graph, [tiny.point], [], 4)


def test_the_halved_bottleneck_learns_at_a_token_point(tiny_runs):
    tiny = tiny_runs["vit"]
    report = json.loads((tiny.halved / "validation.json").read_text())
    plain = json.loads((tiny.validation / "validation.json").read_text())
    (row,), (full,) = report["points"], plain["points"]
    assert report["settings"]["halve"] and row["halved"] and row["not_halved"] is None
    assert not plain["settings"]["halve"] and not full["halved"]
    assert row["encoded_shape"] == [8, 1 + 2 * 2, 1] and full["encoded_shape"] == [8, 17, 1]
    assert row["encoded_bytes"] == 4 * 8 * 5
    assert row["accuracy"] > 0.5 and row["accuracy"] >= report["unsplit_accuracy"] - 0.15, row
    bottleneck, _, md = load_bottleneck(bottleneck_file(tiny.halved, tiny.point))
    assert md["halve"] and bottleneck.halve and bottleneck.code_shape == (8, 5, 1)
    assert md["code_layout"] == bottleneck.code_layout.to_json()
    assert md["code_layout"]["grid"] == [2, 2] and md["code_layout"]["extra"] == [2, 1, 0]
