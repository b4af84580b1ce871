"""Serve the tail of an exported split over the Open Inference Protocol (KServe v2 REST).

Built on FastAPI + uvicorn (see the README for why not the KServe model server). Endpoints:

    GET  /v2/health/live, /v2/health/ready     liveness, readiness (no token needed)
    GET  /v2                                   server metadata
    GET  /v2/models/{name}[/versions/1]        model metadata (inputs, outputs)
    GET  /v2/models/{name}[/versions/1]/ready  model readiness
    POST /v2/models/{name}[/versions/1]/infer  inference, JSON or binary tensor data
    GET  /metrics                              Prometheus metrics
    GET  /docs, /redoc, /openapi.json          API pages, only with docs=True (--docs)

Two models are served (:mod:`isplit.deploy.manifest`): ``<name>`` (float32 tensor) and
``<name>-int8`` (8-bit code, scale and zero point). Every request is checked against the
manifest (:func:`isplit.deploy.wire.decode_request`); the body is capped, and so are the images
per request (the export's ``max_batch_size``, Triton's too); a malformed request gets a 4xx
answer with a JSON ``{"error": ...}`` body and the server goes on. Everything a client can hold
is bounded (:mod:`~isplit.deploy.server.limits`): the time to send a request's head and body,
idle connections, open connections, the head's size. Requests that arrive together run as one
batch, large ones in chunks (:mod:`~isplit.deploy.server.batching`); the response's
``parameters`` say how long the tail took (``tail_ms``), in how big a batch (``batch_size``),
and how long the request waited (``queue_ms``). SIGTERM drains
(:mod:`~isplit.deploy.server.lifecycle`).

The modules, along the data flow: :mod:`~isplit.deploy.server.limits` (the connection),
:mod:`~isplit.deploy.server.app` (routes, errors), :mod:`~isplit.deploy.server.service` (the
request), :mod:`~isplit.deploy.server.batching` (the tail), :mod:`~isplit.deploy.server.metrics`,
:mod:`~isplit.deploy.server.lifecycle` (starting and stopping).
"""

from isplit.deploy.server.app import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_BATCH,
    SERVER_NAME,
    create_app,
)
from isplit.deploy.server.batching import Batcher
from isplit.deploy.server.lifecycle import TailServer, check_tls, exposure_warnings
from isplit.deploy.server.limits import Limits
from isplit.deploy.server.service import DEFAULT_MAX_REQUEST_BYTES, ApiError

__all__ = [
    "DEFAULT_BATCH_WAIT_MS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_REQUEST_BYTES",
    "SERVER_NAME",
    "ApiError",
    "Batcher",
    "Limits",
    "TailServer",
    "check_tls",
    "create_app",
    "exposure_warnings",
]
