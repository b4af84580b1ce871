"""Analysis protocols. ``default``: this project's definitions (the true label's logit, every
valid cut after a layer's activation; see the README). ``official``: the choices of the authors'
published code, so results can be set side by side with theirs.

The authors' code differentiates the predicted class and hooks:
- VGG16: the output of every convolution and max-pooling layer of ``features`` (13 + 5 points,
  their ``block1_conv1`` ... ``block5_pool``);
- ResNet-50: ``conv1``, ``bn1``, ``relu``, ``maxpool`` and the output of every residual block of
  ``layer1`` ... ``layer4`` (4 + 16 points).
Here the same rule is applied to any model of the same structure (a ``features`` Sequential, or
``layer1`` ... ``layer4`` of blocks), the demo networks included.
"""

from __future__ import annotations

from torch import nn

from isplit.errors import IsplitError

PROTOCOLS = ("default", "official")


def official_points(graph, model_name: str) -> list[str]:
    """The authors' split points for a VGG- or ResNet-style model, as node names."""
    gm = graph.gm
    names = [graph.names[n] for n in graph.nodes]
    modules = {
        graph.names[n]: gm.get_submodule(n.target) for n in graph.nodes if n.op == "call_module"
    }
    if all(hasattr(gm, f"layer{i}") for i in range(1, 5)):
        points = [n for n in ("conv1", "bn1", "relu", "maxpool") if n in names]
        for i in range(1, 5):
            for block, _ in getattr(gm, f"layer{i}").named_children():
                prefix = f"layer{i}.{block}."
                inside = [n for n in names if n.startswith(prefix)]
                if inside:
                    points.append(inside[-1])
    elif isinstance(getattr(gm, "features", None), nn.Module):
        points = [
            n
            for n, m in modules.items()
            if n.startswith("features.") and isinstance(m, (nn.Conv2d, nn.MaxPool2d))
        ]
    else:
        raise IsplitError(
            f"--protocol official knows the authors' layers of VGG-style (a `features` "
            f"Sequential) and ResNet-style (`layer1`..`layer4`) models, not {model_name}; "
            "use --protocol default or list the points with --points"
        )
    for p in points:
        graph.node(p)  # each must be a valid cut
    return points
