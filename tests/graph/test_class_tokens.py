"""A class token split off the patches and concatenated back (PiT, CoaT, the class-attention
tails of CaiT, XCiT and VOLO): the patches keep their grid, the class token alone holds no image
position (not admissible), and the re-concatenated tokens are image positions with one extra
token again, with the CUI of the hook reference (layout written by hand)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from importance.test_architectures import reference_cui
from isplit.graph import ModelGraph
from isplit.importance import GradCAM

SIZE, PATCH, DIM = 32, 4, 8  # an 8 x 8 grid of patches


class Mix(nn.Module):
    """Attention over all tokens, so that the class token depends on the image."""

    def __init__(self, dim: int):
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return x + self.proj(attn @ v)


class Split(nn.Module):
    """``cls, t = x[:, :1], x[:, 1:]`` (or ``x.split``), ``f`` on the patches, a Linear on the
    class token, then ``cat([cls, t])``."""

    def __init__(self, dim: int, f: str, by: str, side: int):
        super().__init__()
        self.f, self.by, self.side = f, by, side
        self.fc = nn.Linear(dim, dim)
        self.conv = nn.Conv2d(dim, dim, 3, stride=2 if f == "pool" else 1, padding=1)
        self.lin = nn.Linear(dim, dim)

    def forward(self, x):
        if self.by == "slice":
            cls, t = x[:, :1], x[:, 1:]
        else:
            cls, t = x.split([1, x.shape[1] - 1], dim=1)
        if self.f == "linear":
            t = self.lin(t)
        else:  # CoaT's position encoding (a conv on NCHW and back), PiT's strided pooling
            b, _, c = t.shape
            feat = t.transpose(1, 2).reshape(b, c, self.side, self.side)
            feat = self.conv(feat) + (feat if self.f == "conv" else 0)
            t = feat.flatten(2).transpose(1, 2)
        return torch.cat([self.fc(cls), t], dim=1)


class SplitAndConcat(nn.Module):
    """A tiny transformer whose class token is split off and concatenated back twice."""

    def __init__(self, f: str = "linear", by: str = "slice"):
        super().__init__()
        self.embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        self.mix1, self.mix2, self.mix3 = Mix(DIM), Mix(DIM), Mix(DIM)
        side = SIZE // PATCH
        self.split1 = Split(DIM, f, by, side)
        self.split2 = Split(DIM, f, by, side // 2 if f == "pool" else side)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 4)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.split1(self.mix1(x))
        x = self.split2(self.mix2(x))
        x = self.mix3(x)
        return self.head(self.norm(x).mean(1))


class ClassTokenTail(nn.Module):
    """PiT's end: the class token alone is split off, normalised and classified."""

    def __init__(self):
        super().__init__()
        self.body = SplitAndConcat("pool")
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 4)

    def forward(self, x):
        b = self.body
        x = b.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([b.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = b.split1(b.mix1(x))
        cls = self.norm(b.mix2(x)[:, :1])
        return self.head(cls[:, 0])


class ClassAttention(nn.Module):
    """CaiT's / XCiT's / VOLO's tail: blocks that update the class token only, from all tokens
    (``u = cat(cls, x)``; the query is the class token's row), then ``cat(cls, x)``."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.mix = Mix(DIM)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        self.q, self.kv = nn.Linear(DIM, DIM), nn.Linear(DIM, 2 * DIM)
        self.fc, self.norm, self.head = nn.Linear(DIM, DIM), nn.LayerNorm(DIM), nn.Linear(DIM, 4)

    def forward(self, x):
        x = self.mix(self.embed(x).flatten(2).transpose(1, 2))
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for _ in range(2):
            u = torch.cat([cls, x], dim=1)
            q = self.q(u[:, 0]).unsqueeze(1)
            k, v = self.kv(u).chunk(2, dim=-1)
            cls = cls + (q @ k.transpose(-2, -1)).softmax(-1) @ v
            cls = cls + self.fc(cls)
        x = self.norm(torch.cat([cls, x], dim=1))
        return self.head(x[:, 0] + x[:, 1:].mean(1))  # patches too: a CUI that is not 0


def _model(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


@pytest.mark.parametrize(
    "f,by,grids",
    [
        ("linear", "slice", [(8, 8), (8, 8)]),
        ("conv", "slice", [(8, 8), (8, 8)]),
        ("pool", "slice", [(4, 4), (2, 2)]),
        ("linear", "split", [(8, 8), (8, 8)]),
    ],
)
def test_re_concatenated_tokens_keep_their_grid_and_the_hook_cui(f, by, grids):
    torch.manual_seed(0)
    model = _model(SplitAndConcat(f, by))
    graph = ModelGraph(model, (3, SIZE, SIZE))
    for name, grid in zip(("split1.cat", "split2.cat"), grids):
        layout = graph.layout(name)
        assert layout.describe() == "NLC (+1 token)", (name, layout.describe())
        assert layout.grid == grid
        assert graph.point(name).admissible, name
    points = {"split1.cat": ("split1", "NLC+1"), "mix2.add": ("mix2", "NLC+1")}
    x, y = (
        torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)),
        torch.tensor([0, 2, 3]),
    )
    ours = GradCAM(graph, list(points))(x, y).cui
    ref = reference_cui(model, dict(points.values()), x, y)
    assert (ref > 0).float().mean() > 0.3
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)


def test_the_class_token_alone_is_not_admissible():
    torch.manual_seed(0)
    graph = ModelGraph(_model(ClassTokenTail()), (3, SIZE, SIZE), granularity="all")
    layout, point = graph.layout("norm"), graph.point("norm")
    assert layout.known and layout.grid_positions(point.shape) == 0
    assert not point.admissible
    assert graph.point("body.split1.cat").admissible


def test_class_attention_tail_keeps_the_patches_grid():
    torch.manual_seed(0)
    model = _model(ClassAttention())
    graph = ModelGraph(model, (3, SIZE, SIZE))
    layout = graph.layout("norm")
    assert layout.describe() == "NLC (+1 token)" and layout.grid == (8, 8)
    assert graph.point("norm").admissible
    x, y = (
        torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)),
        torch.tensor([0, 2, 3]),
    )
    ours = GradCAM(graph, ["norm"])(x, y).cui
    ref = reference_cui(model, {"norm": "NLC+1"}, x, y)
    assert (ref > 0).float().mean() > 0.3
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)


# name: (input size, points that must be admissible with their grid, {point: (hooked module,
# hand layout)} for the CUI, points that carry the class token alone)
TIMM = {
    "coat_lite_tiny": (
        64,
        {"serial_blocks1.1.add_1": (16, 16), "serial_blocks3.0.add_1": (4, 4)},
        {
            "serial_blocks1.0.add_1": ("serial_blocks1.0", "NLC+1"),
            "serial_blocks2.1.add_1": ("serial_blocks2.1", "NLC+1"),
        },
        (),
    ),
    "pit_ti_224": (
        64,
        {"transformers.1.blocks.5.add_1": (4, 4), "transformers.2.norm": (2, 2)},
        {
            "transformers.1.blocks.1.add_1": ("transformers.1.blocks.1", "NLC+1"),
            "transformers.2.blocks.0.add_1": ("transformers.2.blocks.0", "NLC+1"),
        },
        ("norm",),
    ),
    "cait_xxs24_224": (64, {"norm": (4, 4)}, {"blocks.5.add_1": ("blocks.5", "NLC")}, ()),
    "xcit_nano_12_p16_224": (
        64,
        {"cls_attn_blocks.0.cat_1": (4, 4), "norm": (4, 4)},
        {"cls_attn_blocks.0.add_1": ("cls_attn_blocks.0", "NLC+1")},
        (),
    ),
    "volo_d1_224": (
        64,
        {"post_network.0.cat": (4, 4), "norm": (4, 4)},
        {"post_network.0.cat": ("post_network.0", "NLC+1")},
        (),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM)
def test_timm_class_tokens_split_off_and_back(name):
    import timm

    size, grids, hooked, alone = TIMM[name]
    torch.manual_seed(0)
    model = _model(timm.create_model(name, pretrained=False, num_classes=4, img_size=size))
    graph = ModelGraph(model, (3, size, size))
    for point, grid in grids.items():
        layout = graph.layout(point)
        assert (layout.describe(), layout.grid) == ("NLC (+1 token)", grid), point
        assert graph.point(point).admissible, point
    for point in alone:
        assert graph.layout(point).describe() == "NPC (+1 token)"
        assert not graph.point(point).admissible
    lost = [p.name for p in graph.points if not p.admissible and len(p.shape) > 2]
    assert lost == list(alone)  # every point before the head's pooled vector, but those
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2, 3])
    ours = GradCAM(graph, list(hooked))(x, y).cui
    ref = reference_cui(model, dict(hooked.values()), x, y)
    assert (ref > 0).float().mean() > 0.3
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)
