"""Serve the tail of an exported split over the Open Inference Protocol (KServe v2 REST).

Built on FastAPI + uvicorn (see the README for why not the KServe model server). Endpoints:

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     liveness, readiness (no token needed)
    GET  /v2/models/{name}[/versions/1]        model metadata (inputs, outputs)
    GET  /v2/models/{name}[/versions/1]/ready  model readiness
    POST /v2/models/{name}[/versions/1]/infer  inference, JSON or binary tensor data

Two models are served (:mod:`isplit.deploy.manifest`): ``<name>`` (float32 tensor) and
``<name>-int8`` (8-bit code, scale and zero point). Every request is checked against the
manifest (:func:`isplit.deploy.wire.decode_request`); the body is capped; a malformed request
gets a 4xx answer with a JSON ``{"error": ...}`` body and the server goes on. Requests that
arrive together are run as one batch (:class:`Batcher`); the response's ``parameters`` say how
long the tail took (``tail_ms``), in how big a batch (``batch_size``), and how long the request
waited (``queue_ms``).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, and
# `Request` is imported inside create_app (the serving stack is optional).
import asyncio
import hmac
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isplit.deploy.manifest import MANIFEST, Manifest, TensorSpec, sha256_file
from isplit.deploy.parts import TAIL, TAIL_INT8, require
from isplit.deploy.runtime import Runner, load_programs
from isplit.deploy.wire import HEADER, WireError, decode_request, encode_response
from isplit.errors import IsplitError

log = logging.getLogger("isplit")

DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
SERVER_NAME = "isplit"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# --------------------------------------------------------------------------------------------
# Dynamic batching
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    arrays: list[np.ndarray]
    n: int
    future: asyncio.Future
    queued: float


class Batcher:
    """Runs the jobs that are waiting together as one batch of at most ``max_batch`` images.

    After taking a job it takes every job already queued; while more requests for the model are
    arriving (received, not yet queued: :meth:`arriving`) it waits for them, at most ``wait_s``.
    So a lone client never waits, and concurrent ones are batched. A job larger than
    ``max_batch`` runs alone; ``max_batch`` 1 turns batching off. The model runs in
    ``executor``, off the event loop."""

    def __init__(self, run: Runner, max_batch: int, wait_s: float, executor) -> None:
        self.run, self.max_batch, self.wait_s, self.executor = run, max_batch, wait_s, executor
        self.queue: asyncio.Queue | None = None
        self.incoming = 0  # requests being received and checked, not yet queued
        self._getter: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        for t in (self._task, self._getter):
            if t is not None:
                t.cancel()

    @contextmanager
    def arriving(self):
        """Marks a request that is being received for this model (see the class docstring)."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    def enqueue(self, arrays: list[np.ndarray], n: int) -> asyncio.Future:
        """Queue a job of ``n`` images; the future gives ``(outputs, parameters)``."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(arrays, n, future, time.perf_counter()))
        return future

    async def submit(self, arrays: list[np.ndarray], n: int) -> tuple[np.ndarray, dict]:
        return await self.enqueue(arrays, n)

    async def _next(self, timeout: float | None) -> _Job | None:
        """The next job, waiting at most ``timeout`` seconds (None: for ever; 0: only a job
        already queued). A pending get is kept for the next call, so that no job is lost."""
        if self._getter is None:
            try:
                return self.queue.get_nowait()
            except asyncio.QueueEmpty:
                if timeout is not None and timeout <= 0:
                    return None
                self._getter = asyncio.ensure_future(self.queue.get())
        if not self._getter.done():
            if timeout is not None and timeout <= 0:
                return None
            await asyncio.wait({self._getter}, timeout=timeout)
            if not self._getter.done():
                return None
        job, self._getter = self._getter.result(), None
        return job

    async def _loop(self) -> None:
        carry: _Job | None = None
        loop = asyncio.get_running_loop()
        while True:
            job = carry or await self._next(None)
            carry = None
            jobs, n = [job], job.n
            deadline = loop.time() + self.wait_s
            while n < self.max_batch:
                wait = deadline - loop.time() if self.incoming > 0 else 0.0
                nxt = await self._next(wait)
                if nxt is None:
                    break
                if n + nxt.n > self.max_batch:
                    carry = nxt
                    break
                jobs.append(nxt)
                n += nxt.n
            jobs = [j for j in jobs if not j.future.done()]  # clients that went away
            if jobs:
                await self._run(jobs, loop)

    async def _run(self, jobs: list[_Job], loop) -> None:
        started = time.perf_counter()
        try:
            arrays = (
                jobs[0].arrays
                if len(jobs) == 1
                else [np.concatenate(parts) for parts in zip(*(j.arrays for j in jobs))]
            )
            out, seconds = await loop.run_in_executor(self.executor, self._timed, arrays)
        except Exception as e:  # the model failed: every job of the batch gets the error
            log.exception("the tail failed on a batch of %d", sum(j.n for j in jobs))
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        batch = sum(j.n for j in jobs)
        offset = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(
                    (
                        out[offset : offset + j.n],
                        {
                            "tail_ms": 1e3 * seconds,
                            "batch_size": batch,
                            "queue_ms": 1e3 * (started - j.queued),
                        },
                    )
                )
            offset += j.n

    def _timed(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        out = self.run(*arrays)
        return out, time.perf_counter() - t


# --------------------------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------------------------


@dataclass
class _Served:
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batcher: Batcher


class _TailService:
    """What the routes share: the served models, the token, and the answers to each request."""

    def __init__(
        self,
        folder: Path,
        token: str | None,
        max_batch: int,
        wait_s: float,
        max_request_bytes: int,
        runtime: str,
        device: str,
    ) -> None:
        self.manifest = Manifest.load(folder)
        self.runtime = _pick_runtime(runtime, device)
        programs = load_programs(folder, self.manifest, [TAIL, TAIL_INT8], self.runtime, device)
        self.manifest_sha = sha256_file(folder / MANIFEST)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isplit-tail")
        self.served = {
            model: _Served(
                model,
                self.manifest.inputs(model),
                self.manifest.outputs(),
                Batcher(programs[part], max_batch, wait_s, self.executor),
            )
            for model, part in ((self.manifest.name, TAIL), (self.manifest.int8_name, TAIL_INT8))
        }
        self.secret = token.encode() if token else None
        self.max_request_bytes = max_request_bytes

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

    def model(self, request, name: str, version: str | None) -> _Served:
        self.authorize(request)
        s = self.served.get(name)
        if s is None:
            raise ApiError(
                404, f"unknown model {name!r}; this server serves {', '.join(self.served)}"
            )
        if version is not None and version != "1":
            raise ApiError(404, f"model {name!r} has no version {version!r}; it has version 1")
        return s

    def metadata(self, s: _Served) -> dict:
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
            },
        }

    async def infer(self, request, s: _Served):
        from fastapi.responses import Response

        with s.batcher.arriving():
            body = await _read_body(request, self.max_request_bytes)
            try:
                req = decode_request(body, request.headers.get(HEADER), s.inputs, s.outputs)
            except WireError as e:
                raise ApiError(e.status, str(e)) from None
            future = s.batcher.enqueue(req.arrays, req.batch)
        logits, params = await future
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


def create_app(
    folder: str | Path,
    *,
    token: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    runtime: str = "auto",
    device: str = "cpu",
):
    """The FastAPI application serving the tail of the export in ``folder``."""
    require("fastapi", "uvicorn")
    from fastapi import FastAPI

    from isplit import __version__

    if max_batch < 1:
        raise IsplitError(f"--max-batch must be at least 1, not {max_batch}")
    if batch_wait_ms < 0:
        raise IsplitError(f"--batch-wait-ms must be 0 or more, not {batch_wait_ms}")
    if max_request_bytes < 1024:
        raise IsplitError(f"--max-request-bytes must be at least 1024, not {max_request_bytes}")
    service = _TailService(
        Path(folder), token, max_batch, batch_wait_ms / 1e3, max_request_bytes, runtime, device
    )
    app = FastAPI(title="isplit tail server", version=__version__, lifespan=service.lifespan)
    app.state.manifest = service.manifest
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app) -> None:
    """Every error answers with the JSON body ``{"error": message}``."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def error(status: int, message: str, headers: dict | None = None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e):
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e):
        return error(400, f"bad request: {e.errors()[:1]}")

    @app.exception_handler(Exception)
    async def _internal_error(request, e):
        log.exception("internal error")
        return error(500, f"internal server error ({type(e).__name__})")


def _add_routes(app, service: _TailService) -> None:
    """The Open Inference Protocol's routes: health, metadata, readiness, inference."""
    from fastapi import Request

    from isplit import __version__

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata(request: Request):
        service.authorize(request)
        return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    async def model_metadata(request: Request, name: str):
        return service.metadata(service.model(request, name, None))

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(request: Request, name: str, version: str):
        return service.metadata(service.model(request, name, version))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(request: Request, name: str):
        return {"name": service.model(request, name, None).name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(request: Request, name: str, version: str):
        return {"name": service.model(request, name, version).name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def model_infer(request: Request, name: str):
        return await service.infer(request, service.model(request, name, None))

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def model_version_infer(request: Request, name: str, version: str):
        return await service.infer(request, service.model(request, name, version))


async def _read_body(request, cap: int) -> bytes:
    """The request body, refused (413) beyond ``cap`` bytes before or while reading it."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if declared > cap:
            raise ApiError(413, f"the body has {declared} bytes; this server takes at most {cap}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"the body exceeds {cap} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)


def _pick_runtime(runtime: str, device: str) -> str:
    """``auto``: onnxruntime, unless the device is a GPU that this onnxruntime cannot use."""
    if runtime != "auto":
        return runtime
    from isplit.models import resolve_device

    if resolve_device(device).type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "torch"
    return "onnxruntime"


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------


class TailServer:
    """The tail server on ``host:port`` (0: a free port) in a background thread.

    ``with TailServer("exported/") as server: Client("exported/", server.url)``. Options as
    :func:`create_app`."""

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0, **options):
        self.app = create_app(folder, **options)
        import uvicorn

        config = uvicorn.Config(
            self.app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.host = host
        self.port: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "TailServer":
        self._thread = threading.Thread(target=self.server.run, name="isplit-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise IsplitError(
                    f"the server did not start on {self.host}:{self.server.config.port} (is the "
                    "port in use? see the messages above)"
                )
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> "TailServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
