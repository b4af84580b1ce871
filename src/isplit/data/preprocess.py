"""Preprocessing: how an image (a tensor in [0, 1] or a PIL image) becomes a model input:
geometry (resize and crop, or pad), channels and normalisation, as a :class:`Preprocess` says.

Decoded 8-bit pixels are resized in 8 bits (as PIL and timm's loaders resize), either in one
step (:func:`pixels_to_input`, what every command's float path takes) or in two
(:func:`fit_uint8` where the images are decoded, :class:`Normalise` on the device after the
copy: 4x fewer bytes cross from the loader's workers to the model): the same input to the last
bit. A float tensor of the user's (:func:`to_model_input`) is resized as floats; it differs from
the 8-bit pixels by their rounding (bilinear: under one level of 255; bicubic: a few levels
where its overshoot meets an edge, which 8 bits round between the two passes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from isplit.errors import IsplitError

_FITS = ("resize", "pad")
#: How images are resized (torchvision's InterpolationMode values that isplit accepts).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs: geometry, channels and normalisation."""

    size: int  # final square side in pixels
    channels: int  # 1 or 3
    mean: tuple[float, ...]  # per channel; length 1 is broadcast
    std: tuple[float, ...]
    resize: int | None = None  # resize shorter side to this, then centre-crop `size`
    fit: str = "resize"  # "resize" to size x size, or "pad": centre zero-pad smaller images
    interpolation: str = "bilinear"  # of every resize: one of INTERPOLATIONS

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.size < 1 or (self.resize is not None and self.resize < self.size):
            raise IsplitError(
                f"bad image size {self.size} (resize {self.resize}): size must be >= 1 and "
                "resize, if given, >= size"
            )
        if self.channels not in (1, 3):
            raise IsplitError(f"channels must be 1 or 3, not {self.channels}")
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise IsplitError(
                    f"{what} has {len(values)} values for {self.channels} channel(s); "
                    f"give 1 value or {self.channels}"
                )
        if any(s == 0 for s in self.std):
            raise IsplitError("std values must not be 0")
        if self.fit not in _FITS:
            raise IsplitError(f"fit must be one of {', '.join(_FITS)}, not {self.fit!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise IsplitError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not "
                f"{self.interpolation!r}"
            )

    def to_json(self) -> dict:
        out = {**asdict(self), "mean": list(self.mean), "std": list(self.std)}
        if self.interpolation == "bilinear":  # the default: records stay as they were
            del out["interpolation"]
        return out

    @classmethod
    def from_json(cls, d: dict) -> Preprocess:
        return cls(
            size=int(d["size"]),
            channels=int(d["channels"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize=None if d.get("resize") is None else int(d["resize"]),
            fit=d.get("fit", "resize"),
            interpolation=d.get("interpolation", "bilinear"),
        )


def describe_preprocess(pp: Preprocess) -> str:
    """One line of what ``pp`` does to an image, in the order it does it."""
    if pp.resize is not None:
        geometry = f"resize the shorter side to {pp.resize} ({pp.interpolation}), crop {pp.size}"
    elif pp.fit == "pad":
        geometry = f"pad to {pp.size} x {pp.size} (larger images: resize, {pp.interpolation})"
    else:
        geometry = f"resize to {pp.size} x {pp.size} ({pp.interpolation})"
    colour = "greyscale" if pp.channels == 1 else "RGB"

    def numbers(values: tuple[float, ...]) -> str:
        return ", ".join(f"{v:g}" for v in values)

    return f"{geometry}, {colour}, mean {numbers(pp.mean)}, std {numbers(pp.std)}"


def _fit(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Bring ``[..., C, H, W]`` floats to ``size x size`` as ``pp`` says."""
    h, w = x.shape[-2:]
    size = pp.size
    mode = TF.InterpolationMode(pp.interpolation)
    if pp.resize is not None:
        x = _resized(TF.resize(x, [pp.resize], interpolation=mode, antialias=True), mode)
        return TF.center_crop(x, [size, size])  # (resize: the shorter side)
    if h == size and w == size:
        return x
    if pp.fit == "pad" and h <= size and w <= size:
        left, top = (size - w) // 2, (size - h) // 2
        return torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top))
    return _resized(TF.resize(x, [size, size], interpolation=mode, antialias=True), mode)


def _resized(x: torch.Tensor, mode: TF.InterpolationMode) -> torch.Tensor:
    """Bicubic overshoots: float pixels back into [0, 1], as 8-bit images saturate at 0 and
    255 (PIL, timm's loaders, torchvision's uint8 resize). 8-bit pixels are left as they are:
    clamping them to [0, 1] would make every pixel black or one level above."""
    if mode == TF.InterpolationMode.BICUBIC and x.is_floating_point():
        return x.clamp(0.0, 1.0)
    return x


def to_model_input(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Float ``[..., C, H, W]`` in [0, 1] -> normalised ``[..., channels, size, size]``."""
    return _normalised(_fit(x, pp), pp)


def pixels_to_input(x: torch.Tensor, pp: Preprocess, scale: float = 255.0) -> torch.Tensor:
    """Decoded pixels ``[..., C, H, W]`` (``scale``: the value of white) -> the model input.
    8-bit pixels (white 255) are resized and cropped in 8 bits, as PIL and timm's loaders do
    and as the 8-bit path (:func:`fit_uint8`, :class:`Normalise`) does: every command (analyze,
    train, validate, export, infer) feeds the network the same numbers, to the last bit. Other
    scales (the digits' 0-16) are resized as floats: 8 bits would round them coarsely."""
    if x.dtype == torch.uint8 and scale == 255.0:
        return _normalised(fit_uint8(x, pp).float().div_(scale), pp)
    return to_model_input(x.float().div_(scale), pp)


def _normalised(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Fitted float pixels in [0, 1] -> ``pp``'s channels, normalised (Normalise's arithmetic
    in its order)."""
    if x.shape[-3] == 1 and pp.channels == 3:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    mean = torch.tensor(pp.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pp.std, dtype=x.dtype).view(-1, 1, 1)
    return ((x - mean) / std).contiguous()


def pil_to_uint8(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    """A PIL image -> ``[channels, H, W]`` uint8 pixels in ``pp``'s colour mode."""
    return TF.pil_to_tensor(img.convert("L" if pp.channels == 1 else "RGB"))


def fit_uint8(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` -> uint8 ``[..., C, size, size]``: the geometry of
    :func:`to_model_input` on 8-bit pixels (resized pixels rounded to 8 bits; bicubic
    saturates at 0 and 255, as the float path clamps)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"fit_uint8 takes uint8 pixels, not {x.dtype}")
    return _fit(x, pp)


class Normalise:
    """The device half of the 8-bit path: uint8 ``[B, C, size, size]`` -> the normalised float32
    model input, with ``to_model_input``'s arithmetic in its order (divide by ``scale``, the
    pixel value that means white, then subtract the mean and divide by the std; one channel
    repeated where the model takes three), in place in one output tensor.

    On a CPU the output tensors are reused, two in turn (a fresh tensor of a batch's size costs
    more in page faults than the arithmetic): a batch's input stays valid until two more have
    been normalised, which is how isplit's loops use them. On a GPU every batch gets its own
    (the caching allocator makes that free, and the copy stream may run ahead)."""

    def __init__(self, pp: Preprocess, scale: float = 255.0) -> None:
        self.channels = pp.channels
        self.scale = float(scale)
        self._mean = torch.tensor(pp.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(pp.std, dtype=torch.float32).view(-1, 1, 1)
        self._ring: list[torch.Tensor] = []
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def input_shape(self, shape: torch.Size | tuple[int, ...]) -> list[int]:
        """The model input's shape ``[C, H, W]`` for one uint8 image of ``shape``."""
        return [self.channels, *shape[-2:]]

    def _output(
        self, shape: tuple[int, ...], device: torch.device, fmt: torch.memory_format
    ) -> torch.Tensor:
        def fresh() -> torch.Tensor:
            out = torch.empty(shape, device=device)
            return out.contiguous(memory_format=fmt) if out.dim() == 4 else out

        if device.type != "cpu":
            return fresh()
        ring = self._ring
        if ring and (ring[0].shape != shape or not ring[0].is_contiguous(memory_format=fmt)):
            ring.clear()
        if len(ring) < 2:
            ring.append(fresh())
        ring.append(ring.pop(0))  # the least recently handed out, to the back
        return ring[-1]

    def __call__(
        self, x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        shape = (*x.shape[:-3], self.channels, *x.shape[-2:])
        out = self._output(shape, x.device, memory_format).copy_(x)  # 1 -> 3 channels too
        mean, std = self._constants(x.device)
        return out.div_(self.scale).sub_(mean).div_(std)

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std on ``device``, copied there once (not a host-to-device copy per batch)."""
        if device not in self._on_device:
            self._on_device[device] = (self._mean.to(device), self._std.to(device))
        return self._on_device[device]
