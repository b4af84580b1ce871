"""Independent computations for the trained-model tier (tests/trained/): what isplit's numbers
are checked against, written without isplit's preprocessing, graph or importance code.

- the image folder the tests write (Fashion-MNIST from its IDX files, as PNG);
- the network: ``timm.create_model`` and the weights file's tensors (safetensors), nothing else;
- the inputs: PIL opens the file, PIL resizes with the preset's interpolation, a centre crop,
  division by 255, the preset's mean and std;
- Grad-CAM's CUI by forward/backward hooks on the network's modules;
- the bytes a request really sends: a loopback HTTP proxy between ``isplit infer`` and
  ``isplit serve`` that counts each request body.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import http.server
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: Fashion-MNIST's classes by label, as folder names (its own names hold a "/")
CLASS_FOLDERS = [
    "tshirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]  # fmt: skip
_IDX = {"train": "train", "test": "t10k"}
_PIL = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped) as an array of its shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_image_folder(root: Path, per_class: dict[str, int]) -> None:
    """``root/<split>/<class>/<index>.png``: the first ``per_class[split]`` images of each class
    of Fashion-MNIST's split (``train`` or ``test``)."""
    for split, n in per_class.items():
        images = read_idx(FASHION_MNIST / f"{_IDX[split]}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION_MNIST / f"{_IDX[split]}-labels-idx1-ubyte.gz")
        for label, name in enumerate(CLASS_FOLDERS):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in np.flatnonzero(labels == label)[:n]:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def image_files(folder: Path) -> tuple[list[Path], list[str], np.ndarray]:
    """The images of a ``<class>/<image>`` folder in the order an image folder is read (classes
    and files sorted by name), the class names, and the labels."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        for p in sorted((folder / name).iterdir()):
            files.append(p)
            labels.append(label)
    return files, classes, np.array(labels)


def write_plain_folder(root: Path, split_folder: Path) -> None:
    """``root/<class>/<split>-<image>.png``: every image of ``split_folder`` (``train/`` and
    ``test/`` sub-folders) in one folder without split sub-folders, as a user's own folder."""
    for split in ("train", "test"):
        for path in sorted((split_folder / split).glob("*/*.png")):
            target = root / path.parent.name / f"{split}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def held_out(relative: str, share: float = 0.2) -> bool:
    """The README's rule for a folder without split sub-folders: a file is held out for testing
    when the first 8 bytes of the sha256 of its path below the folder fall below ``share`` of
    their range."""
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def timm_net(arch: str, weights: Path, size: int, classes: int) -> torch.nn.Module:
    """``timm.create_model(arch)`` for ``size`` px inputs, with the tensors of ``weights``
    (strict), in eval mode."""
    import timm
    from safetensors.torch import load_file

    fixed = timm.models.get_pretrained_cfg(arch).to_dict().get("fixed_input_size")
    net = timm.create_model(arch, num_classes=classes, **({"img_size": size} if fixed else {}))
    net.load_state_dict(load_file(str(weights)))
    return net.eval()


@dataclass(frozen=True)
class Geometry:
    """How an image becomes ``size x size``: resize the shorter side to ``resize`` (None:
    straight to ``size x size``) with ``interpolation``, then crop the centre."""

    size: int
    resize: int | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def pil_input(path: Path, g: Geometry) -> torch.Tensor:
    """One image file -> the normalised ``[3, size, size]`` float input, by PIL alone."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        mode = _PIL[g.interpolation]
        if g.resize is None:
            img = img.resize((g.size, g.size), mode)
        else:
            w, h = img.size
            short = min(w, h)
            img = img.resize((round(w * g.resize / short), round(h * g.resize / short)), mode)
            w, h = img.size
            left, top = int(round((w - g.size) / 2)), int(round((h - g.size) / 2))
            img = img.crop((left, top, left + g.size, top + g.size))
        x = np.asarray(img, dtype=np.float32) / 255.0
    mean = np.asarray(g.mean, np.float32)
    std = np.asarray(g.std, np.float32)
    return torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy())


def pil_inputs(paths: list[Path], g: Geometry) -> torch.Tensor:
    return torch.stack([pil_input(p, g) for p in paths])


def predict(net: torch.nn.Module, x: torch.Tensor, batch: int = 100) -> np.ndarray:
    """The predicted class of every input."""
    with torch.no_grad():
        return torch.cat([net(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]).numpy()


def gradcam_cui(
    net: torch.nn.Module, x: torch.Tensor, labels: np.ndarray, modules: list[str]
) -> dict[str, np.ndarray]:
    """Per-image CUI at the outputs of ``modules`` (N x C x H x W tensors): Grad-CAM of the true
    class's logit with the channel mean (alpha_c = mean over positions of the gradient;
    M = ReLU(mean_c alpha_c A_c); CUI = mean over positions of M)."""
    outputs: dict[str, torch.Tensor] = {}
    named = dict(net.named_modules())
    hooks = [
        named[name].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
        for name in modules
    ]
    try:
        with torch.enable_grad():
            logits = net(x.clone().requires_grad_(True))
            score = logits.gather(1, torch.as_tensor(labels)[:, None]).sum()
            grads = torch.autograd.grad(score, [outputs[name] for name in modules])
    finally:
        for h in hooks:
            h.remove()
    cui = {}
    for name, grad in zip(modules, grads):
        a = outputs[name].detach()
        assert a.dim() == 4, (name, a.shape)
        alpha = grad.mean((2, 3), keepdim=True)
        cam = torch.relu((alpha * a).mean(1))
        cui[name] = cam.mean((1, 2)).numpy()
    return cui


class BodyCounter:
    """A loopback HTTP proxy in front of ``target`` (http://host:port) that records the method,
    path and body length of every request it forwards (``requests``)."""

    def __init__(self, target: str) -> None:
        host, port = target.split("://")[1].rsplit(":", 1)
        self.requests: list[tuple[str, str, int]] = []
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                assert "chunked" not in self.headers.get("Transfer-Encoding", ""), self.headers
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                counter.requests.append((self.command, self.path, len(body or b"")))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> BodyCounter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def within(a: float, b: float, pp: float = 0.5) -> bool:
    """Two accuracies (fractions) within ``pp`` percentage points."""
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= pp / 100 + 1e-12
