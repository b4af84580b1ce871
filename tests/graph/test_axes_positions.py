"""Where image positions go through layers that are usually about channels or about one
position: a ``Linear`` over the tokens (MLP-Mixer, ResMLP) mixes positions and keeps them
positions; ``Unfold`` makes channels x kernel offsets and positions of its sliding blocks (TNT);
a pooled vector resized, expanded or broadcast over a map holds copies of one position, not
image positions (AlexNet's ``avgpool``), while real features concatenated with it keep theirs
(ASPP). Layouts are checked, and the CUI against the hook reference (layouts written by hand)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from importance.test_architectures import check_against_reference
from isplit.graph import ModelGraph
from isplit.graph.points import why_not_admissible

SIZE = 32


def _seeded(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _check_cui(model: nn.Module, points: dict[str, tuple[str, str]], size: int = SIZE):
    return check_against_reference(model, size, points, labels=(0, 3, 1))


# -- a Linear over the tokens ---------------------------------------------------------------------
class TokenMixing(nn.Module):
    """ResMLP's block (a Linear over the tokens, ``hidden=None``) or MLP-Mixer's (an MLP over the
    tokens), then an MLP over the channels; ``residual=False`` drops the skip connections."""

    def __init__(self, tokens: int, dim: int, hidden: int | None, residual: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.tokens = (
            nn.Linear(tokens, tokens)
            if hidden is None
            else nn.Sequential(nn.Linear(tokens, hidden), nn.GELU(), nn.Linear(hidden, tokens))
        )
        self.channels = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.residual = residual

    def forward(self, x):
        y = self.tokens(self.norm(x).transpose(1, 2)).transpose(1, 2)
        x = x + y if self.residual else y
        return x + self.channels(x) if self.residual else self.channels(x)


class Mixer(nn.Module):
    """Patches of 8 x 8 (4 x 4 tokens at 32 px), two token-mixing blocks, mean over tokens."""

    def __init__(self, hidden: int | None = None, residual: bool = True, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, dim, 8, 8)
        tokens = (SIZE // 8) ** 2
        self.blocks = nn.Sequential(*(TokenMixing(tokens, dim, hidden, residual) for _ in "ab"))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x).flatten(2).transpose(1, 2)).mean(1))


def _block_outputs(residual: bool) -> list[str]:
    last = "add_1" if residual else "channels.2"
    return [f"blocks.{i}.{last}" for i in range(2)]


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
def test_a_linear_over_the_tokens_keeps_them_positions_of_their_grid(residual):
    model = _seeded(Mixer(residual=residual))
    points = {p: (f"blocks.{i}", "NLC") for i, p in enumerate(_block_outputs(residual))}
    graph = _check_cui(model, points)
    for name in points:
        assert graph.layout(name).axes == "NLC" and graph.layout(name).grid == (4, 4), name


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
def test_an_mlp_over_the_tokens_keeps_them_positions_of_no_one_grid(residual):
    """L -> 2L -> L tokens: the hidden ones are positions but not the image's 4 x 4; the
    residual around them (MLP-Mixer's) puts its sum back in the image's order."""
    model = _seeded(Mixer(hidden=32, residual=residual))
    points = {p: (f"blocks.{i}", "NLC") for i, p in enumerate(_block_outputs(residual))}
    graph = _check_cui(model, points)
    for name in points:
        layout = graph.layout(name)
        assert layout.positions == (1,), name
        if residual:
            assert layout.axes == "NLC" and layout.grid == (4, 4), name
        else:
            assert layout.axes == "NPC" and layout.grid is None, name


class ColumnMixing(nn.Module):
    """A Linear over the columns of an N x C x H x W map (no transpose, no residual)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.columns = nn.Linear(SIZE // 2, SIZE // 2)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.act(self.columns(self.conv(x))).mean((2, 3)))


def test_a_linear_over_the_columns_of_a_map_keeps_them_columns():
    """It used to make them channels: NCHC, a map over the rows only, and a wrong CUI."""
    graph = _check_cui(_seeded(ColumnMixing()), {"act": ("act", "NCHW")})
    assert graph.layout("act").axes == "NCHW" and graph.layout("act").grid == (16, 16)


class ClassTokenMixing(nn.Module):
    """A class token in front of 16 patch tokens, then a Linear over all 17 tokens: to 17
    (the class token's slot and the grid stay) or to 9 (which entries are tokens is lost)."""

    def __init__(self, out: int):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.tokens = nn.Linear(17, out)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return self.head(self.tokens(x.transpose(1, 2)).transpose(1, 2).mean(1))


def test_a_linear_over_tokens_with_a_class_token_keeps_them_only_at_the_same_number():
    same = ModelGraph(ClassTokenMixing(17).eval(), (3, SIZE, SIZE), "all")
    assert same.layout("transpose_2").describe() == "NLC (+1 token)"
    assert same.layout("transpose_2").grid == (4, 4)
    fewer = ModelGraph(ClassTokenMixing(9).eval(), (3, SIZE, SIZE), "all")
    assert not fewer.layout("transpose_2").known


# -- Unfold ---------------------------------------------------------------------------------------
class Blocks(nn.Module):
    """N x C x H x W -> N x (2 x 2 blocks) x (C x 4) tokens."""

    def __init__(self):
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=2, stride=2)

    def forward(self, x):
        return self.unfold(x).transpose(1, 2)


class Unfolded(nn.Module):
    """A convolution, ``nn.Unfold`` into tokens, a Linear over their channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.blocks = Blocks()
        self.proj = nn.Linear(32, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(torch.relu(self.proj(self.blocks(torch.relu(self.conv(x))))).mean(1))


def test_unfold_makes_channels_and_positions_of_its_blocks():
    model = _seeded(Unfolded())
    graph = _check_cui(model, {"blocks.unfold": ("blocks.unfold", "NCHW")})  # N x C x L
    layout = graph.layout("blocks.unfold")
    assert (layout.axes, layout.channels, layout.grid) == ("NCL", (1,), (8, 8))
    assert graph.layout("blocks.transpose").axes == "NLC"


class PixelPatches(nn.Module):
    """TNT's pixel embedding: ``F.unfold`` into patches, the batch and the patches merged to
    convolve each patch's pixels, then one token per patch again, batch first."""

    def __init__(self, dilation: int = 1, padding: int = 0, stride: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.options = {"dilation": dilation, "padding": padding, "stride": stride}
        self.pixels = nn.Conv2d(3, 4, 3, 1, 1)
        self.proj = nn.Linear(4 * 16, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        n = x.shape[0]
        x = F.unfold(x, 4, **self.options).transpose(1, 2)  # N x L x (3 x 4 x 4)
        length = x.shape[1]
        x = self.pixels(x.reshape(n * length, 3, 4, 4))  # every patch's 4 x 4 pixels
        return self.head(self.proj(x.reshape(n, length, -1)).mean(1))


@pytest.mark.parametrize(
    "options,grid",
    [({}, (8, 8)), ({"dilation": 2, "padding": 1, "stride": 3}, (10, 10))],
    ids=["patches", "dilated"],
)
def test_functional_unfold_gives_the_grid_of_its_blocks_and_the_batch_comes_back(options, grid):
    graph = ModelGraph(_seeded(PixelPatches(**options)), (3, SIZE, SIZE), "all")
    layout = graph.layout("transpose")
    assert (layout.axes, layout.grid) == ("NLC", grid)
    assert graph.layout("proj").axes == "NLC" and graph.layout("proj").grid == grid
    assert graph.point("proj").admissible


# -- copies of one position -----------------------------------------------------------------------
class PooledAndResized(nn.Module):
    """A map pooled to one position, then made 4 x 4 again by ``how``; convolved and pooled."""

    def __init__(self, how: str):
        super().__init__()
        torch.manual_seed(0)
        self.how = how
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.resize = nn.AdaptiveAvgPool2d(4)
        self.after = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        if self.how == "adaptive":
            x = self.resize(x)
        elif self.how == "interpolate":
            x = F.interpolate(x, size=(4, 4))
        else:
            x = x.expand(-1, -1, 4, 4)
        return self.head(torch.relu(self.after(x)).flatten(2).mean(2))


@pytest.mark.parametrize("how", ["adaptive", "interpolate", "expand"])
def test_a_pooled_vector_made_larger_holds_one_image_position(how):
    graph = ModelGraph(PooledAndResized(how).eval(), (3, SIZE, SIZE), "all")
    resized = {"adaptive": "resize", "interpolate": "interpolate", "expand": "expand"}[how]
    for name in (resized, "relu_1"):
        p = graph.point(name)
        assert p.layout.known and p.shape[2:] == (4, 4), name
        assert not p.admissible and why_not_admissible(p) == "one image position", name


class RowsPooled(nn.Module):
    """Rows pooled away and broadcast back: copies of one row beside real columns."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return F.interpolate(x.mean(2, keepdim=True), size=x.shape[2:]).flatten(1)


def test_copies_of_one_row_beside_real_columns_are_no_map():
    graph = ModelGraph(RowsPooled().eval(), (3, SIZE, SIZE), "all")
    layout = graph.layout("interpolate")
    assert not layout.known and "copies" in layout.reason


class ImagePooling(nn.Module):
    """ASPP's image pooling: the pooled vector upsampled and concatenated with the features
    along the channels; the result's positions are the features'."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        pooled = F.interpolate(self.pooled(x), size=x.shape[2:], mode="bilinear")
        return self.head(self.project(torch.cat([x, pooled], 1)).mean((2, 3)))


def test_features_concatenated_with_an_upsampled_pooled_vector_keep_their_positions():
    graph = _check_cui(_seeded(ImagePooling()), {"project.1": ("project", "NCHW")})
    layout = graph.layout("project.1")
    assert (layout.axes, layout.grid) == ("NCHW", (16, 16))


def test_alexnet_average_pool_of_a_pooled_vector_is_not_admissible():
    """At 64 px AlexNet's features end at 1 x 1; its adaptive pooling makes 6 x 6 copies."""
    torch.manual_seed(0)
    graph = ModelGraph(torchvision.models.alexnet(weights=None).eval(), (3, 64, 64))
    assert graph.point("features.11").admissible
    for name in ("features.12", "avgpool"):
        p = graph.point(name)
        assert not p.admissible and why_not_admissible(p) == "one image position", name


# -- timm ----------------------------------------------------------------------------------------
def _timm(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **options)
    nn.init.normal_(model.get_classifier().weight, std=0.5)  # a zero-initialised head: CUI 0
    return _seeded(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixer_b16_224", "resmlp_12_224"])
def test_timm_token_mixing_blocks_are_admissible_with_the_reference_cui(name):
    model = _timm(name, img_size=SIZE)
    points = {f"blocks.{i}.add_1": (f"blocks.{i}", "NLC") for i in (0, 5, 11)}
    graph = _check_cui(model, points)
    admissible = [p for p in graph.points if p.admissible]
    assert len(admissible) >= len(graph.points) - 1  # all but the pooled vector
    assert {graph.layout(p).positions for p in points} == {(1,)}


@pytest.mark.slow
def test_timm_tnt_outer_tokens_are_admissible_with_the_reference_cui():
    model = _timm("tnt_s_patch16_224", img_size=64, global_pool="avg")
    graph = _check_cui(model, {"norm": ("norm", "NLC+1")}, size=64)
    assert graph.layout("pixel_embed.unfold").grid == (4, 4)
    assert graph.layout("norm").describe() == "NLC (+1 token)"
    assert graph.layout("norm").grid == (4, 4)
