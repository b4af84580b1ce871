"""What the routes share: the served models, the token, the caps, and the answer to an inference
request (read the body within its cap, check it against the manifest, refuse more images than
the export's ``max_batch_size``, run it through the model's batcher)."""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from isplit.deploy.manifest import MANIFEST, Manifest, TensorSpec, sha256_file
from isplit.deploy.names import TAIL, TAIL_INT8
from isplit.deploy.runtime import device_type, load_programs
from isplit.deploy.server.batching import Batcher
from isplit.deploy.server.memory import return_large_blocks
from isplit.deploy.wire import HEADER, WireError, decode_request, encode_response

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: the most bytes one value takes in a JSON body ("-1.2345678901234567e-05, ")
JSON_VALUE_BYTES = 32


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Served:
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batcher: Batcher


class TailService:
    """The served models of the export in ``folder`` and the answers to each request."""

    def __init__(
        self,
        folder: Path,
        token: str | None,
        max_batch: int,
        wait_s: float,
        max_request_bytes: int | None,
        runtime: str,
        device: str,
        metrics=None,
    ) -> None:
        return_large_blocks()
        self.manifest = m = Manifest.load(folder, preprocess=False)
        self.runtime = pick_runtime(runtime, device)
        programs = load_programs(folder, m, [TAIL, TAIL_INT8], self.runtime, device)
        self.manifest_sha = sha256_file(folder / MANIFEST)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isplit-tail")
        self.metrics = metrics
        self.served = {
            model: Served(
                model,
                m.inputs(model),
                m.outputs(),
                Batcher(programs[part], max_batch, wait_s, self.executor, self._observer(model)),
            )
            for model, part in ((m.name, TAIL), (m.int8_name, TAIL_INT8))
        }
        self.secret = token.encode() if token else None
        self.max_images = m.max_batch_size
        # What max_images images take as JSON: more is refused before it is read.
        needed = 64 * 1024 + self.max_images * (m.transmitted_numel + 2) * JSON_VALUE_BYTES
        self.max_request_bytes = max_request_bytes or min(DEFAULT_MAX_REQUEST_BYTES, needed)
        self.ready = True  # False while draining (SIGTERM)

    def _observer(self, model: str):
        return None if self.metrics is None else self.metrics.observer(model)

    @asynccontextmanager
    async def lifespan(self, app):
        for s in self.served.values():
            s.batcher.start()
        yield
        for s in self.served.values():
            await s.batcher.stop()
        self.executor.shutdown(wait=False)

    def authorize(self, request) -> None:
        if self.secret is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self.secret
        ):
            raise ApiError(
                401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="isplit"'}
            )

    def model(self, request, name: str, version: str | None) -> Served:
        self.authorize(request)
        s = self.served.get(name)
        if s is None:
            raise ApiError(
                404, f"unknown model {name!r}; this server serves {', '.join(self.served)}"
            )
        if version is not None and version != "1":
            raise ApiError(404, f"model {name!r} has no version {version!r}; it has version 1")
        return s

    def metadata(self, s: Served) -> dict:
        return {
            "name": s.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx" if self.runtime == "onnxruntime" else "pytorch_torch",
            "inputs": [t.to_json() for t in s.inputs],
            "outputs": [t.to_json() for t in s.outputs],
            "parameters": {
                "point": self.manifest.point,
                "classes": self.manifest.classes,
                "manifest_sha256": self.manifest_sha,
                "max_batch_size": self.max_images,
            },
        }

    async def infer(self, request, s: Served):
        from fastapi.responses import Response

        with s.batcher.arriving():
            body = await read_body(request, self.max_request_bytes)
        try:
            req = decode_request(body, request.headers.get(HEADER), s.inputs, s.outputs)
        except WireError as e:
            raise ApiError(e.status, str(e)) from None
        del body
        if req.batch > self.max_images:
            raise ApiError(
                413,
                f"the request holds {req.batch} images; this server takes at most "
                f"{self.max_images} per request (the export's max_batch_size): send them in "
                "several requests",
            )
        logits, params = await s.batcher.submit(req.arrays, req.batch)
        if self.metrics is not None:
            self.metrics.images.labels(s.name).inc(req.batch)
        payload, header_length = encode_response(
            s.name,
            [(s.outputs[0], logits)],
            binary=req.binary_output,
            parameters=params,
            request_id=req.request_id,
        )
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={HEADER: str(header_length)},
        )


async def read_body(request, cap: int) -> bytes:
    """The request body, refused (413) beyond ``cap`` bytes before or while reading it."""
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if declared > cap:
            raise ApiError(413, f"the body has {declared} bytes; this server takes at most {cap}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise ApiError(413, f"the body exceeds {cap} bytes, the most this server takes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or the body timed out: nobody reads the answer
        raise ApiError(408, "the connection closed before the body was read") from None
    return b"".join(chunks)


def pick_runtime(runtime: str, device: str) -> str:
    """``auto``: onnxruntime, unless the device is a GPU that this onnxruntime cannot use."""
    if runtime != "auto":
        return runtime
    if device_type(device) == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "torch"
    return "onnxruntime"
