"""The rows x columns grid through window partitions undone by an opaque function (timm's
``window_reverse``), NesT's blocks (``blockify`` traced, ``deblockify`` opaque) and Swin's patch
merging (a space-to-depth by reshape / permute / flatten): every such point's layout is known,
its map is put back in image order (``Layout.image_grid``), and its CUI is the hook reference's.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx as fx
from torch import nn

from importance.test_architectures import reference_cui
from isplit.graph import ModelGraph
from isplit.graph.axis_algebra import CHANNEL_AXIS, reshape_axes
from isplit.graph.layout import BATCH, POSITION, Axis
from isplit.graph.opaque import rearranged_axes
from isplit.importance import GradCAM
from isplit.importance.gradcam import channels_and_positions


def window_reverse(windows: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Windows [N * windows, size, size, C] back to the image [N, h, w, C] (timm Swin's)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // size, w // size, size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def deblockify(x: torch.Tensor, block: int) -> torch.Tensor:
    """Blocks [N, T, block * block, C] back to the image [N, H, W, C] (timm NesT's)."""
    b, t, _, c = x.shape
    grid = int(math.sqrt(t))  # what torch.fx cannot trace
    x = x.reshape(b, grid, grid, block, block, c)
    return x.transpose(2, 3).reshape(b, grid * block, grid * block, c)


# rearrangements of N x 8 x 8 x C, each traced in one network and opaque in another
REARRANGEMENTS = {
    "transpose": lambda x: x.transpose(1, 2),
    "tokens": lambda x: x.flatten(1, 2),
    "windows in the batch": lambda x: (
        x.view(-1, 4, 2, 4, 2, x.shape[-1]).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, x.shape[-1])
    ),
    "windows in a row": lambda x: (
        x.view(-1, 4, 2, 4, 2, x.shape[-1]).permute(0, 1, 3, 2, 4, 5).reshape(x.shape[0], 64, -1)
    ),
    "blocks": lambda x: (
        x.reshape(-1, 2, 4, 2, 4, x.shape[-1]).transpose(2, 3).reshape(-1, 4, 16, x.shape[-1])
    ),
    "space to depth": lambda x: (
        x.reshape(-1, 4, 2, 4, 2, x.shape[-1]).permute(0, 1, 3, 4, 2, 5).flatten(3)
    ),
}


def rearrange(x: torch.Tensor, how: str) -> torch.Tensor:
    return REARRANGEMENTS[how](x)


# called as one node each, as timm's not-traceable functions are
torch.fx.wrap("window_reverse")
torch.fx.wrap("deblockify")
torch.fx.wrap("rearrange")


class Windows(nn.Module):
    """Partition into windows (traced), mix each window's tokens' channels, reverse (opaque)."""

    def __init__(self, width: int, size: int):
        super().__init__()
        self.size, self.mix = size, nn.Linear(width, width)

    def forward(self, x):
        b, h, w, c = x.shape
        s = self.size
        x = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        return window_reverse(self.mix(x).view(-1, s, s, c), s, h, w)


class Blocks(nn.Module):
    """A NesT level: blockify (traced), mix channels, deblockify (opaque)."""

    def __init__(self, width: int, block: int):
        super().__init__()
        self.block, self.mix = block, nn.Linear(width, width)

    def forward(self, x):
        b, h, w, c = x.shape
        k = self.block
        x = x.reshape(b, h // k, k, w // k, k, c).transpose(2, 3)
        return deblockify(self.mix(x.reshape(b, -1, k * k, c)), k)


class PatchMerging(nn.Module):
    """timm Swin's: the 2 x 2 neighbours of each position merged into its channels."""

    def __init__(self, width: int):
        super().__init__()
        self.reduction = nn.Linear(4 * width, 2 * width)

    def forward(self, x):
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(x)


class Net(nn.Module):
    """Patch embedding, windows, blocks of 2 x 2, patch merging, one block (NesT's last level),
    tokens; N x H x W x C throughout."""

    def __init__(self, width: int = 4, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 2, stride=2)
        self.windows = Windows(width, 2)
        self.act = nn.GELU()
        self.blocks = Blocks(width, 2)
        self.merge = PatchMerging(width)
        self.last = Blocks(2 * width, 4)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.act(self.windows(self.stem(x).permute(0, 2, 3, 1)))
        x = self.last(self.merge(self.blocks(x)))
        return self.head(x.flatten(1, 2).mean(1))


SIZE = 16  # an 8 x 8 grid after the stem, 4 x 4 after the merge


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _copying(net: nn.Module) -> nn.Module:
    """Every channel of every layer's output is channel 0 of its input at the kernel's first
    element: the network only moves the input's numbers around."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.zero_()
                m.bias.zero_()
                m.weight.view(m.weight.shape[0], -1)[:, 0] = 1
    net.act = nn.Identity()
    return net


def _positions(n: int, size: int) -> torch.Tensor:
    """Images whose pixels hold their own row-major position (image k: offset by k * size^2)."""
    pos = torch.arange(n * size * size, dtype=torch.float32).reshape(n, 1, size, size)
    return pos.expand(n, 3, size, size).contiguous()


def _values(graph: ModelGraph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensor at every point of ``graph`` for the input ``x``."""
    values: dict[str, torch.Tensor] = {}
    names = {graph.node(p.name): p.name for p in graph.points}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in names:
                values[names[n]] = out
            return out

    Recorder(graph.gm).run(x)
    return values


def test_windows_blocks_and_patch_merging_keep_the_grid():
    graph = ModelGraph(_net(), (3, SIZE, SIZE), granularity="all")
    grids = {p.name: p.layout.grid for p in graph.points if p.admissible}
    assert grids["windows.window_reverse"] == (8, 8)
    assert grids["blocks.mix"] == (8, 8)  # windows of 2 x 2 in 4 x 4 blocks
    assert grids["blocks.deblockify"] == (8, 8)
    assert grids["merge.reduction"] == (4, 4)  # a space-to-depth: a coarser grid
    assert grids["last.deblockify"] == (4, 4)  # one block: the whole image
    assert graph.layout("merge.flatten").describe() == "NHWC"
    assert all(p.layout.grid is not None for p in graph.points if p.admissible)
    assert len(grids) >= 10


def test_every_map_is_put_back_in_image_order():
    """A map whose value at each position is that position's row-major index in the image:
    ``image_grid`` must give it back sorted (after a space-to-depth: the coarse positions')."""
    graph = ModelGraph(_copying(_net()), (3, SIZE, SIZE), granularity="all")
    values = _values(graph, _positions(2, SIZE))
    checked = 0
    for p in graph.points:
        if not p.admissible:
            continue
        a, _ = channels_and_positions(p.layout, values[p.name], values[p.name])
        m = p.layout.image_grid(a[:, 0])
        assert tuple(m.shape[1:]) == p.layout.grid, p.name
        assert (m.flatten(1).diff(dim=1) > 0).all(), (p.name, m[0])
        checked += 1
    assert checked >= 8


def test_cui_after_windows_blocks_and_patch_merging_equals_the_hook_reference():
    net = _net(1)
    graph = ModelGraph(net, (3, SIZE, SIZE), granularity="all")
    points = {
        "windows.window_reverse": ("windows", "NHWC"),
        "blocks.mix": ("blocks.mix", "NGPC"),
        "blocks.deblockify": ("blocks", "NHWC"),
        "merge.reduction": ("merge", "NHWC"),
        "last.deblockify": ("last", "NHWC"),
    }
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 3, SIZE, SIZE, generator=g), torch.tensor([0, 1, 2])
    cui = GradCAM(graph, list(points))(x, y).cui
    expected = reference_cui(net, dict(points.values()), x, y)
    assert (expected > 0).sum() > 10
    torch.testing.assert_close(cui, expected, rtol=1e-5, atol=1e-12)


def test_positions_merged_into_channels_are_channels_and_leave_a_coarser_grid():
    rows, cols = Axis(POSITION, ("h",)), Axis(POSITION, ("w",))
    axes = (Axis(BATCH), rows, cols, CHANNEL_AXIS)
    split = reshape_axes(axes, (1, 8, 8, 4), (1, 4, 2, 4, 2, 4))
    assert [a.grid for a in split[1:5]] == [("h.0",), ("h.1",), ("w.0",), ("w.1",)]
    merged = reshape_axes(
        (split[0], split[1], split[3], split[4], split[2], split[5]),
        (1, 4, 4, 2, 2, 4),
        (1, 4, 4, 16),
    )
    assert merged == (Axis(BATCH), rows, cols, CHANNEL_AXIS)


class Rearranged(nn.Module):
    """A patch embedding to N x 8 x 8 x 4, then one of :data:`REARRANGEMENTS`, traced or
    opaque."""

    def __init__(self, how: str, opaque: bool):
        super().__init__()
        self.how, self.opaque = how, opaque
        self.stem = nn.Conv2d(3, 4, 2, stride=2)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = rearrange(x, self.how) if self.opaque else REARRANGEMENTS[self.how](x)
        return x.mean()


@pytest.mark.parametrize("how", list(REARRANGEMENTS))
def test_an_opaque_rearrangement_has_the_axes_of_the_same_ops_traced(how):
    found = []
    for opaque in (False, True):
        graph = ModelGraph(Rearranged(how, opaque), (3, SIZE, SIZE), granularity="all")
        last = graph.logits_node.args[0]  # what the mean is taken of
        found.append(graph.axes.axes[last])
    assert found[1] == found[0]
    assert found[0][0].kind == BATCH or found[0][0].merged


def _swap(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


@pytest.mark.parametrize(
    "call",
    [lambda x: x * 2, lambda x: x.cumsum(1), lambda x: x + x.flip(1), lambda x: x.sum(1)],
)
def test_an_opaque_function_that_computes_is_not_followed(call):
    axes = (Axis(BATCH), Axis(POSITION, ("h",)), Axis(POSITION, ("w",)), CHANNEL_AXIS)
    recorded = call(torch.zeros(1, 4, 4, 3))
    assert rearranged_axes(call, axes, (1, 4, 4, 3), recorded) is None


def test_positions_reversed_are_positions_of_no_grid_and_images_reversed_are_not_followed():
    rows, cols = Axis(POSITION, ("h",)), Axis(POSITION, ("w",))
    axes = (Axis(BATCH), rows, cols, CHANNEL_AXIS)
    flipped = rearranged_axes(lambda x: x.flip(1), axes, (1, 4, 6, 3), torch.zeros(1, 4, 6, 3))
    assert flipped == [(Axis(BATCH), Axis(POSITION), cols, CHANNEL_AXIS)]
    assert rearranged_axes(lambda x: x.flip(0), axes, (1, 4, 6, 3), torch.zeros(1, 4, 6, 3)) is None


def test_an_opaque_rearrangement_is_followed():
    rows, cols = Axis(POSITION, ("h",)), Axis(POSITION, ("w",))
    axes = (Axis(BATCH), rows, cols, CHANNEL_AXIS)
    found = rearranged_axes(_swap, axes, (1, 4, 6, 3), torch.zeros(1, 6, 4, 3))
    assert found == [(Axis(BATCH), cols, rows, CHANNEL_AXIS)]


# timm models whose grid went through opaque functions or patch merging: name -> options
TIMM = {
    "nest_tiny": {"img_size": 64},
    "swin_tiny_patch4_window7_224": {"img_size": 64, "window_size": 4},
    "mvitv2_tiny": {"img_size": 64},
    "davit_tiny": {},
}


def _passing_on(model: nn.Module) -> nn.Module:
    """Every block's branches (attention, MLP, convolutional position encoding) output zero, so
    that a block passes its input on and only the patch embedding and the downsampling layers
    (all local) move numbers between positions."""
    with torch.no_grad():
        for name, m in model.named_modules():
            ends = name.endswith(("attn.proj", "mlp.fc2"))
            if ends or ".cpe" in name and name.endswith(".proj"):
                for p in m.parameters():
                    p.zero_()
    return model


def _centre(m: torch.Tensor) -> torch.Tensor:
    """The (row, column) centre of mass of a map [rows, columns]."""
    rows, cols = torch.meshgrid(torch.arange(m.shape[0]), torch.arange(m.shape[1]), indexing="ij")
    return torch.stack([(rows * m).sum(), (cols * m).sum()]) / m.sum()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TIMM))
def test_timm_grids_are_known_and_in_image_order(name):
    """Every admissible point has a grid; a change of one 4 x 4 pixel patch shows up, in the
    point's map put in image order, where the patch is on the image (checked near each
    corner but one: a transposed or window-ordered map would put it elsewhere)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **TIMM[name]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    graph = ModelGraph(_passing_on(model), (3, 64, 64))
    admissible = [p for p in graph.points if p.admissible]
    assert len(admissible) >= 0.9 * len(graph.points)
    assert all(p.layout.grid is not None for p in admissible)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = _values(graph, x)
    for r, c in ((4, 4), (4, 52), (52, 4)):
        changed = x.clone()
        changed[..., r : r + 4, c : c + 4] += 3
        after = _values(graph, changed)
        for p in admissible:
            d = (after[p.name] - before[p.name]).abs()
            d, _ = channels_and_positions(p.layout, d, d)
            m = p.layout.image_grid(d.sum(1))[0]
            rows, cols = p.layout.grid
            where = torch.tensor([(r + 2) * rows // 64, (c + 2) * cols // 64])  # its cell
            error = float((_centre(m) - where).abs().max())
            assert error <= 0.5 + 0.15 * max(rows, cols), (p.name, r, c, error)


# timm model -> {point: (hooked module, hand layout)}: NesT's last level (one block), Swin's
# patch merging
REFERENCE = {
    "nest_tiny": {
        "levels.2.transformer_encoder.7.add_1": ("levels.2.transformer_encoder.7", "NGPC"),
        "levels.2.permute_1": ("levels.2", "NCHW"),
    },
    "swin_tiny_patch4_window7_224": {
        "layers.1.downsample.reduction": ("layers.1.downsample", "NHWC"),
        "layers.3.downsample.reduction": ("layers.3.downsample", "NHWC"),
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REFERENCE))
def test_timm_cui_after_deblockify_and_patch_merging_equals_the_hook_reference(name):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **TIMM[name]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    points = REFERENCE[name]
    graph = ModelGraph(model, (3, 64, 64))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 64, 64, generator=g), torch.tensor([1, 3])
    cui = GradCAM(graph, list(points))(x, y).cui
    expected = reference_cui(model, dict(points.values()), x, y)
    assert (expected > 0).any()
    torch.testing.assert_close(cui, expected, rtol=1e-5, atol=1e-12)
