"""Split points: admissibility, the points an analysis looks at, and the user's restrictions."""

import pytest
import torchvision

from isplit import IsplitError
from isplit.graph import ModelGraph, no_admissible_message, restrict, select_points


@pytest.fixture(scope="module")
def graph():
    return ModelGraph(torchvision.models.vgg11(), (3, 32, 32))


def test_only_image_grid_maps_are_admissible(graph):
    for p in graph.points:
        copies = p.name == "avgpool"  # at 32 px: the 1 x 1 map resized to 7 x 7 copies of it
        grid = p.shape[2] * p.shape[3] if len(p.shape) == 4 and not copies else 1
        assert p.admissible == (grid > 1)
        if len(p.shape) == 4:
            assert p.layout.axes == ("NC11" if copies else "NCHW")
    flat = graph.point("flatten")  # 512 x 7 x 7 flattened: channels and positions mixed
    assert flat.layout.axes == "N?" and "flatten" in flat.layout.reason
    assert graph.point("classifier.1").layout.axes == "NC"  # a Linear makes them channels
    assert not graph.points[-1].admissible  # the classifier's vectors


def test_select_points_in_network_order_or_the_authors(graph):
    assert select_points(graph, None, "default", "vgg11") == graph.points
    chosen = select_points(graph, ["features.5", "features.2"], "default", "vgg11")
    assert [p.name for p in chosen] == ["features.2", "features.5"]
    with pytest.raises(IsplitError, match="listed twice"):
        select_points(graph, ["features.2", "features.2"], "default", "vgg11")
    official = select_points(graph, None, "official", "vgg11")
    assert len(official) == 8 + 5  # vgg11: 8 convolutions and 5 max-pools


def test_restrict_narrows_the_admissible_points_and_says_why_none_is_left(graph):
    points = select_points(graph, None, "default", "vgg11")
    restrict(points, first="features.2", last="features.10", max_bytes=16384)
    names = [p.name for p in points if p.admissible]
    assert names and all(graph.point(n).bytes <= 16384 for n in names)
    order = [p.name for p in points]
    lo, hi = order.index("features.2"), order.index("features.10")
    assert all(lo <= order.index(n) <= hi for n in names)
    with pytest.raises(IsplitError, match="--first 'features.99' is not one of the analysed"):
        restrict(points, first="features.99")
    budget = {"max_bytes": 1, "max_head_flops": None, "first": None, "last": None}
    restrict(points, **budget)
    assert not any(p.admissible for p in points)
    message = no_admissible_message(points, budget)
    assert message.startswith("no split point is admissible under --max-bytes 1")
    assert "the smallest spatial point sends" in message
