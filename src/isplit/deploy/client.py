"""The device side: run the head, send the tensor over the Open Inference Protocol, read the class.

:class:`Client` runs the head (+ encoder) of an export locally (onnxruntime, or PyTorch),
quantises the transmitted tensor to 8 bits (affine, one scale and zero point per image; or sends
float32 with ``quantize=False``), posts it with the binary tensor extension to the tail server
(``isplit serve``, Triton, KServe, ...) and returns the predicted class with the head time, the
bytes of the HTTP body, the round trip, and the tail time the server reports.
The HTTP side is the standard library's ``http.client`` with one kept-alive connection.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import torch

from isplit.deploy.manifest import LOGITS, Manifest, TensorSpec, served_inputs
from isplit.deploy.parts import HEAD
from isplit.deploy.runtime import load_programs
from isplit.deploy.wire import HEADER, decode_response, encode_request
from isplit.errors import IsplitError
from isplit.validation.bottleneck import quantize_uint8


@dataclass
class Prediction:
    """One image's answer and what it cost."""

    image: str
    class_name: str
    index: int
    bytes: int  # the HTTP request body
    head_ms: float
    rtt_ms: float  # request sent -> response read (includes the server's tail_ms)
    tail_ms: float | None  # as the server reports it (None: the server does not say)

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "class": self.class_name,
            "index": self.index,
            "bytes": self.bytes,
            "head_ms": self.head_ms,
            "rtt_ms": self.rtt_ms,
            "tail_ms": self.tail_ms,
        }


@dataclass
class Result:
    """One request's answer: logits [N, classes] and its costs."""

    logits: np.ndarray
    bytes: int
    head_ms: float
    rtt_ms: float
    parameters: dict  # the response's parameters (tail_ms, batch_size, queue_ms from isplit)

    @property
    def indices(self) -> np.ndarray:
        return self.logits.argmax(1)


def request_tensors(activation: np.ndarray, quantize: bool) -> list[tuple[TensorSpec, np.ndarray]]:
    """The ``(spec, array)`` inputs that carry ``activation`` [N, ...]: float32, or its 8-bit
    code with one scale and zero point per image."""
    specs = served_inputs(tuple(activation.shape[1:]), quantize)
    if not quantize:
        return [(specs[0], np.ascontiguousarray(activation, dtype=np.float32))]
    code = quantize_uint8(torch.from_numpy(np.ascontiguousarray(activation, dtype=np.float32)))
    return list(zip(specs, (t.numpy() for t in code)))


def request_bytes(shape: Sequence[int], quantize: bool, batch: int = 1) -> int:
    """Bytes of the HTTP body the client sends for ``batch`` tensors of ``shape`` (C, H, W)."""
    zeros = np.zeros((batch, *shape), np.float32)
    return len(encode_request(request_tensors(zeros, quantize))[0])


class Client:
    """The head of the export in ``folder``, talking to the tail server at ``server``.

    ``server``: ``http://host:port`` (a path prefix is kept: ``http://gw/ns/svc``). ``token``: a
    bearer token. ``quantize``: send the 8-bit code (default) or float32. ``runtime``:
    ``onnxruntime`` (the exported head.onnx) or ``torch`` (the network rebuilt from its weights).
    On creation the client checks that the server serves this export (model metadata)."""

    def __init__(
        self,
        folder: str | Path,
        server: str,
        *,
        token: str | None = None,
        quantize: bool = True,
        runtime: str = "onnxruntime",
        device: str = "cpu",
        timeout: float = 60.0,
    ) -> None:
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        self.head = load_programs(self.folder, self.manifest, [HEAD], runtime, device)[HEAD]
        self.quantize = quantize
        self.model = self.manifest.int8_name if quantize else self.manifest.name
        url = urlsplit(server if "://" in server else f"http://{server}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise IsplitError(f"--server {server!r}: give a URL like http://host:8000")
        self.url = server
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None
        self.check_server()

    # -- HTTP ------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict, bytes]:
        """``(status, headers, body)``; one retry on a fresh connection when a kept-alive one
        was closed by the server."""
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=all_headers)
                resp = conn.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt:
                    raise IsplitError(
                        f"the server at {self.url} closed the connection ({e})"
                    ) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise IsplitError(
                    f"cannot reach the server at {self.url} ({type(e).__name__}: {e}); is "
                    "`isplit serve` running there?"
                ) from None
        raise AssertionError("unreachable")

    def _check_status(self, status: int, body: bytes) -> None:
        if status == 200:
            return
        try:
            message = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            message = body[:200].decode("utf-8", "replace")
        if status == 401:
            hint = "pass the server's --token" if not self._headers else "check --token"
            raise IsplitError(f"the server at {self.url} refused the request ({message}); {hint}")
        raise IsplitError(f"the server at {self.url} answered {status}: {message}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------------------
    def check_server(self) -> dict:
        """The served model's metadata; an error when it does not fit this export."""
        status, _, body = self._request("GET", f"/v2/models/{quote(self.model)}")
        self._check_status(status, body)
        meta = json.loads(body)
        want = [t.to_json() for t in self.manifest.inputs(self.model)]
        got = [
            {"name": t.get("name"), "datatype": t.get("datatype"), "shape": t.get("shape")}
            for t in meta.get("inputs", [])
        ]
        if sorted(got, key=lambda t: str(t["name"])) != sorted(want, key=lambda t: t["name"]):
            raise IsplitError(
                f"the server at {self.url} serves {self.model} with inputs {got}, but this "
                f"export sends {want}: serve this export folder there"
            )
        return meta

    def infer(self, x: np.ndarray | torch.Tensor) -> Result:
        """Run the head on preprocessed images ``x`` [N, C, H, W] and the tail on the server,
        in one request."""
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != self.manifest.input_shape or x.ndim != 4:
            raise IsplitError(
                f"images of shape {list(x.shape)}; this export takes [N, "
                f"{', '.join(map(str, self.manifest.input_shape))}]"
            )
        started = time.perf_counter()
        activation = self.head(x)
        body, header_length = encode_request(request_tensors(activation, self.quantize))
        head_s = time.perf_counter() - started
        headers = {"Content-Type": "application/octet-stream"}
        if header_length is not None:
            headers[HEADER] = str(header_length)
        sent = time.perf_counter()
        status, resp_headers, resp = self._request(
            "POST", f"/v2/models/{quote(self.model)}/infer", body, headers
        )
        rtt_s = time.perf_counter() - sent
        self._check_status(status, resp)
        lower = {k.lower(): v for k, v in resp_headers.items()}
        doc, outputs = decode_response(resp, lower.get(HEADER.lower()))
        if LOGITS not in outputs or outputs[LOGITS].shape != (len(x), self.manifest.num_classes):
            raise IsplitError(f"the server at {self.url} answered without logits for each image")
        params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
        return Result(outputs[LOGITS], len(body), 1e3 * head_s, 1e3 * rtt_s, params)

    def classify(
        self, images: np.ndarray | torch.Tensor, names: Sequence[str] | None = None
    ) -> list[Prediction]:
        """One request per image (preprocessed, [N, C, H, W]); a :class:`Prediction` each."""
        out = []
        for i in range(len(images)):
            r = self.infer(images[i : i + 1])
            k = int(r.indices[0])
            tail = r.parameters.get("tail_ms")
            out.append(
                Prediction(
                    image=names[i] if names is not None else str(i),
                    class_name=self.manifest.classes[k],
                    index=k,
                    bytes=r.bytes,
                    head_ms=r.head_ms,
                    rtt_ms=r.rtt_ms,
                    tail_ms=float(tail) if isinstance(tail, (int, float)) else None,
                )
            )
        return out

    def classify_files(self, paths: Sequence[str | Path]) -> list[Prediction]:
        """Read image files with the export's preprocessing and classify each."""
        return self.classify(load_images(self.manifest, paths), [str(p) for p in paths])


def load_images(manifest: Manifest, paths: Sequence[str | Path]) -> torch.Tensor:
    """Image files as the export's model inputs [N, C, H, W]; a clear error for a bad file."""
    from isplit.data import BadImage, ImageFileDataset

    if not paths:
        raise IsplitError("no images given")
    for p in paths:
        if not Path(p).is_file():
            raise IsplitError(f"image {p} not found")
    ds = ImageFileDataset(
        "images", "files", ["?"], [(str(p), 0) for p in paths], manifest.preprocessing()
    )
    items = []
    for i in range(len(ds)):
        x, _ = ds[i]
        if isinstance(x, BadImage):
            raise IsplitError(f"cannot read image {x.path} ({x.reason})")
        items.append(x)
    return torch.stack(items)
