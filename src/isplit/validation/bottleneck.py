"""The compressing bottleneck inserted at a split point: head -> encoder | link | decoder -> tail.

The default is an undercomplete convolutional autoencoder (as in the authors' code): the encoder
divides the channel count by ``ratio`` (default 8) and can also halve the spatial size; the
decoder restores the point's exact shape. What crosses the link is the encoder's output. It works
along the point's channel axis whatever the layout (:mod:`~isplit.validation.arrange`): the
encoder starts by arranging the tensor as a map N x C x H x W (or N x C x P x 1 for tokens and
partitions), the decoder ends by arranging it back. With ``halve`` at a vision transformer's
tokens, the patch tokens are halved as their image grid and the class / register tokens cross
compressed alone, in place (:class:`~isplit.validation.arrange.TokenGrid`).

8-bit codes use affine uint8 quantisation with one scale and one zero point per image, as ONNX
``QuantizeLinear`` / ``DequantizeLinear`` define it (``x = (q - zero_point) * scale``; the range
always holds 0). :func:`quantize_uint8` and :func:`dequantize_uint8` are the one implementation:
validation measures the accuracy with them and the deployment client and server use them.

A trained bottleneck is saved as safetensors (:func:`save_bottleneck`) with the settings that made
it in the header, and loaded back with :func:`load_bottleneck`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from isplit.deploy.manifest import INT8_HEADER_BYTES
from isplit.errors import IsplitError
from isplit.graph.layout import Layout
from isplit.models import apply_state_dict, load_state_dict_file, read_metadata, save_weights
from isplit.validation.arrange import (
    FromMap,
    MapForm,
    TokenGrid,
    ToMap,
    halve_refusal,
    map_form,
    token_grid,
)


class Encoder(nn.Module):
    """The point's tensor (arranged as a map unless it is one) to the code. With ``tokens``
    (halving at a token point) the patch tokens go through the convolution as their image grid
    and the extra tokens through their own 1 x 1 one, and the code holds them in place."""

    def __init__(
        self, form: MapForm, code_channels: int, halve: bool, tokens: TokenGrid | None = None
    ) -> None:
        super().__init__()
        channels, k = form.map_shape[0], 3 if tokens else form.kernel
        self.arrange = None if form.identity else ToMap(form)
        self.conv = nn.Conv2d(channels, code_channels, k, stride=2 if halve else 1, padding=k // 2)
        self.bn = nn.BatchNorm2d(code_channels)
        self.tokens = tokens
        if tokens is not None:
            self.extra = nn.Sequential(
                nn.Conv2d(channels, code_channels, 1), nn.BatchNorm2d(code_channels), nn.ReLU()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arrange is not None:
            x = self.arrange(x)
        if self.tokens is None:
            return F.relu(self.bn(self.conv(x)))
        grid, extra = self.tokens.split(x)
        return self.tokens.halved().join(F.relu(self.bn(self.conv(grid))), self.extra(extra))


class Decoder(nn.Module):
    """The code back to the point's tensor, its exact shape and layout (the grid upsampled
    back, and with ``tokens`` the extra tokens decoded alone and put back in place)."""

    def __init__(self, code_channels: int, form: MapForm, tokens: TokenGrid | None = None) -> None:
        super().__init__()
        channels, k = form.map_shape[0], 3 if tokens else form.kernel
        self.size = (tokens.rows, tokens.cols) if tokens else form.map_shape[1:]
        self.conv1 = nn.Conv2d(code_channels, channels, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, k, padding=k // 2)
        self.arrange = None if form.identity else FromMap(form)
        self.tokens = tokens
        if tokens is not None:
            self.extra = nn.Sequential(
                nn.Conv2d(code_channels, channels, 1),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.Conv2d(channels, channels, 1),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        extra = None
        if self.tokens is not None:
            z, extra = self.tokens.halved().split(z)
        if tuple(z.shape[-2:]) != self.size:
            z = F.interpolate(z, size=self.size, mode="nearest")
        z = self.conv2(F.relu(self.bn(self.conv1(z))))
        if extra is not None:
            z = self.tokens.join(z, self.extra(extra))
        return z if self.arrange is None else self.arrange(z)


class Bottleneck(nn.Module):
    """Encoder + decoder for an activation of ``shape`` (per image, or [1, ...]) laid out as
    ``layout`` (default N x C x H x W). ``halve``: also halve H and W where the point has an
    image grid (:func:`~isplit.validation.arrange.halve_refusal` says why not elsewhere:
    :attr:`halve` is then False and :attr:`not_halved` holds the reason)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        ratio: int = 8,
        halve: bool = False,
        layout: Layout | None = None,
    ) -> None:
        super().__init__()
        form = map_form(shape, layout)
        c = form.map_shape[0]
        if ratio < 1:
            raise IsplitError(f"--ratio must be at least 1, not {ratio}")
        if ratio > c:
            raise IsplitError(
                f"--ratio {ratio} is larger than the {c} channels at this point; use at most {c}"
            )
        self.shape, self.form = form.shape, form
        self.ratio = int(ratio)
        self.not_halved = halve_refusal(form) if halve else None
        self.halve = halve and self.not_halved is None
        self.tokens = token_grid(form) if self.halve else None
        self.code_channels = c // ratio
        self.encoder = Encoder(form, self.code_channels, self.halve, self.tokens)
        self.decoder = Decoder(self.code_channels, form, self.tokens)

    @property
    def layout(self) -> Layout:
        """The point's layout."""
        return self.form.layout

    @property
    def code_shape(self) -> tuple[int, int, int]:
        """What crosses the link, per image: C x H x W, or C x P x 1 (tokens, partitions; halved
        tokens: the extra tokens and the patch tokens of the halved grid)."""
        _, h, w = self.form.map_shape
        if self.tokens is not None:
            h = self.tokens.halved().tokens
        elif self.halve:
            h, w = (h + 1) // 2, (w + 1) // 2
        return (self.code_channels, h, w)

    @property
    def code_layout(self) -> Layout:
        """The layout of the code (see :attr:`code_shape`)."""
        if self.tokens is None:
            return self.form.code_layout(self.code_shape)
        halved = self.tokens.halved()
        return self.form.code_layout(self.code_shape, (halved.rows, halved.cols))

    @property
    def encoded_bytes(self) -> int:
        """Bytes on the link per image as float32."""
        return 4 * math.prod(self.code_shape)

    @property
    def encoded_bytes_int8(self) -> int:
        """Bytes on the link per image with 8-bit affine quantisation (per-tensor scale/zero)."""
        return math.prod(self.code_shape) + INT8_HEADER_BYTES

    @staticmethod
    def quantise(code: torch.Tensor) -> torch.Tensor:
        """The code after 8-bit affine quantisation and back (:func:`quantize_uint8`)."""
        return dequantize_uint8(*quantize_uint8(code))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def quantize_uint8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, scale, zero_point)``: ``x`` [N, ...] as uint8 codes, one float32 scale and one uint8
    zero point per image (shape [N, 1]), so that ``(q - zero_point) * scale`` is within half a
    step of ``x`` (ONNX ``QuantizeLinear`` semantics: round half to even, saturate)."""
    flat = x.detach().flatten(1).float()
    lo = flat.min(1, keepdim=True).values.clamp(max=0.0)
    hi = flat.max(1, keepdim=True).values.clamp(min=0.0)
    scale = ((hi - lo) / 255).clamp_min(1e-12)
    zero_point = torch.round(-lo / scale).clamp(0, 255)
    q = torch.round(flat / scale + zero_point).clamp(0, 255)
    return q.to(torch.uint8).view(x.shape), scale, zero_point.to(torch.uint8)


def dequantize_uint8(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor
) -> torch.Tensor:
    """``(q - zero_point) * scale`` with one scale and zero point per image ([N] or [N, 1])."""
    view = (q.shape[0],) + (1,) * (q.dim() - 1)
    return (q.float() - zero_point.float().reshape(view)) * scale.float().reshape(view)


def save_bottleneck(
    bottleneck: Bottleneck,
    path: str | Path,
    metadata: dict[str, Any],
    tail: nn.Module | None = None,
) -> None:
    """Write the bottleneck's weights (and a fine-tuned ``tail``'s, under ``tail.``) to a
    ``.safetensors`` file, with its shape, ratio and halving and ``metadata`` in the header."""
    state = {f"bottleneck.{k}": v for k, v in bottleneck.state_dict().items()}
    if tail is not None:
        state.update({f"tail.{k}": v for k, v in tail.state_dict().items()})
    header = {
        **metadata,
        "shape": list(bottleneck.shape),
        "ratio": bottleneck.ratio,
        "halve": bottleneck.halve,
        "code_shape": list(bottleneck.code_shape),
        "layout": bottleneck.layout.to_json(),
        "code_layout": bottleneck.code_layout.to_json(),
        "finetuned_tail": tail is not None,
    }
    save_weights(state, str(path), header)


def load_bottleneck(path: str | Path) -> tuple[Bottleneck, dict[str, torch.Tensor] | None, dict]:
    """``(bottleneck, tail_state, metadata)`` from a file :func:`save_bottleneck` wrote;
    ``tail_state`` is the fine-tuned tail's state dict, or None when the tail was frozen."""
    md = read_metadata(str(path))
    try:
        layout = Layout.from_json(md["layout"]) if md.get("layout") else None
        bottleneck = Bottleneck(tuple(md["shape"]), int(md["ratio"]), bool(md["halve"]), layout)
    except (KeyError, TypeError, ValueError) as e:
        raise IsplitError(
            f"{path} is not a bottleneck saved by `isplit validate` (its header lacks {e}); "
            "rerun the validation"
        ) from None
    state = load_state_dict_file(str(path))
    own = {k[len("bottleneck.") :]: v for k, v in state.items() if k.startswith("bottleneck.")}
    apply_state_dict(bottleneck, own, str(path), "the bottleneck")
    tail = {k[len("tail.") :]: v for k, v in state.items() if k.startswith("tail.")} or None
    return bottleneck.eval(), tail, md
