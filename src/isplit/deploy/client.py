"""The device side: run the head, send the tensor over the Open Inference Protocol, read the class.

:class:`Client` runs the head (+ encoder) of an export locally (onnxruntime, or PyTorch),
quantises the transmitted tensor to 8 bits (affine, one scale and zero point per image; or sends
float32 with ``quantize=False``), posts it with the binary tensor extension to the tail server
(``isplit serve``, Triton, KServe, ...) and returns the predicted class with the head time, the
bytes of the HTTP body, the round trip, and the tail time the server reports.
The HTTP side is the standard library's ``http.client`` with one kept-alive connection; a refused
or dropped connection (and a 503: a server starting or draining) is retried a bounded number of
times with exponential back-off.

Per image (:meth:`Client.predict`, :meth:`Client.predict_files`): a :class:`Prediction` for every
image as soon as it is answered, with ``error`` set where the image could not be read or its
request failed; once the server stays unreachable after the retries, the images left are reported
as not sent without trying each one again.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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

#: Failures worth another try on a fresh connection: the server is not (yet, or no longer) there.
RETRYABLE = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
)


class ServerUnreachable(IsplitError):
    """The server did not answer, retries included: no later request is likely to get through."""


@dataclass
class Prediction:
    """One image's answer and what it cost, or (``error`` set) why it has none."""

    image: str
    class_name: str | None
    index: int | None
    bytes: int  # the HTTP request body
    head_ms: float
    rtt_ms: float  # request sent -> response read (includes the server's tail_ms)
    tail_ms: float | None  # as the server reports it (None: the server does not say)
    error: str | None = None  # why this image has no class (unreadable file, failed request)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, image: str, error: str) -> Prediction:
        return cls(image, None, None, 0, 0.0, 0.0, None, error)

    def to_json(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
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
    ``retries``: further tries of a request whose connection was refused or dropped, or that got
    503, waiting ``backoff`` seconds before the first and doubling each time.
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
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise IsplitError(f"retries ({retries}) and back-off ({backoff} s) must be >= 0")
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
        self.retries, self.backoff = retries, backoff
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
        """``(status, headers, body)``. A kept-alive connection the server closed is reopened at
        once; a refused or dropped connection, or a 503, is tried again ``retries`` times with
        back-off, then :class:`ServerUnreachable`."""
        all_headers = {**self._headers, **(headers or {})}
        failures, reopened = 0, False
        while True:
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=all_headers)
                resp = conn.getresponse()
                status, got, data = resp.status, dict(resp.getheaders()), resp.read()
                if status != 503:
                    return status, got, data
                self.close()
                problem = f"503 {data[:200].decode('utf-8', 'replace')}"
            except RETRYABLE as e:
                self.close()
                if reused and not reopened:  # the server closed an idle kept-alive connection
                    reopened = True
                    continue
                problem = f"{type(e).__name__}: {e}"
            except TimeoutError:
                self.close()
                raise IsplitError(
                    f"the server at {self.url} did not answer within {self._timeout:g} s"
                ) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise IsplitError(
                    f"cannot reach the server at {self.url} ({type(e).__name__}: {e}); is "
                    "`isplit serve` running there?"
                ) from None
            failures += 1
            if failures > self.retries:
                raise ServerUnreachable(
                    f"cannot reach the server at {self.url} ({problem}; {failures} tries); is "
                    "`isplit serve` running there?"
                )
            time.sleep(self.backoff * 2 ** (failures - 1))

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

    def predict(
        self, images: np.ndarray | torch.Tensor, names: Sequence[str] | None = None
    ) -> Iterator[Prediction]:
        """One request per image (preprocessed, [N, C, H, W]); a :class:`Prediction` for each as
        soon as it is answered, ``error`` set where its request failed."""
        names = [str(i) for i in range(len(images))] if names is None else list(names)
        return self._predict_each(
            (name, lambda i=i: images[i : i + 1]) for i, name in enumerate(names)
        )

    def predict_files(self, paths: Iterable[str | Path]) -> Iterator[Prediction]:
        """Image files read with the export's preprocessing, one at a time, and classified as
        :meth:`predict` does; an unreadable file is a :class:`Prediction` with ``error`` set."""
        return self._predict_each(
            (str(p), lambda p=p: read_image(self.manifest, p)[None]) for p in paths
        )

    def _predict_each(self, items: Iterable[tuple[str, Callable]]) -> Iterator[Prediction]:
        down = None  # why the server is given up on: the images left are not sent
        for name, load in items:
            if down is not None:
                yield Prediction.failed(name, f"not sent: {down}")
                continue
            try:
                yield self._predict_one(name, load())
            except ServerUnreachable as e:
                down = str(e)
                yield Prediction.failed(name, down)
            except IsplitError as e:
                yield Prediction.failed(name, str(e))

    def _predict_one(self, name: str, x: np.ndarray | torch.Tensor) -> Prediction:
        r = self.infer(x)
        k = int(r.indices[0])
        tail = r.parameters.get("tail_ms")
        return Prediction(
            image=name,
            class_name=self.manifest.classes[k],
            index=k,
            bytes=r.bytes,
            head_ms=r.head_ms,
            rtt_ms=r.rtt_ms,
            tail_ms=float(tail) if isinstance(tail, (int, float)) else None,
        )

    def classify(
        self, images: np.ndarray | torch.Tensor, names: Sequence[str] | None = None
    ) -> list[Prediction]:
        """All of :meth:`predict`'s answers; an :class:`~isplit.errors.IsplitError` at the first
        image that fails (:meth:`predict` goes on instead)."""
        return _all_answered(self.predict(images, names))

    def classify_files(self, paths: Sequence[str | Path]) -> list[Prediction]:
        """All of :meth:`predict_files`' answers; an error at the first image that fails."""
        return _all_answered(self.predict_files(paths))


def _all_answered(predictions: Iterable[Prediction]) -> list[Prediction]:
    out = []
    for p in predictions:
        if p.error is not None:
            raise IsplitError(p.error if p.image in p.error else f"{p.image}: {p.error}")
        out.append(p)
    return out


def read_image(manifest: Manifest, path: str | Path) -> torch.Tensor:
    """One image file as the export's model input [C, H, W] (decoded as isplit's image folders
    are); a clear error for a bad file."""
    from isplit.data.folders import decode_uint8
    from isplit.data.preprocess import pixels_to_input

    if not Path(path).is_file():
        raise IsplitError(f"image {path} not found")
    pp = manifest.preprocessing()
    try:
        return pixels_to_input(decode_uint8(str(path), pp), pp)
    except Exception as e:  # the decoders raise many kinds for a file they cannot decode
        raise IsplitError(f"cannot read image {path} ({type(e).__name__}: {e})") from None


def load_images(manifest: Manifest, paths: Sequence[str | Path]) -> torch.Tensor:
    """Image files as the export's model inputs [N, C, H, W]; a clear error for a bad file."""
    if not paths:
        raise IsplitError("no images given")
    return torch.stack([read_image(manifest, p) for p in paths])
