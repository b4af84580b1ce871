"""The FastAPI application: the Open Inference Protocol's routes, health and readiness,
``/metrics``, the optional API pages, and the JSON ``{"error": ...}`` body of every error."""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, and
# `Request` is imported inside the functions (the serving stack is optional).
import logging
from pathlib import Path

from isplit.deploy.names import require
from isplit.deploy.server.metrics import Metrics
from isplit.deploy.server.service import ApiError, TailService
from isplit.errors import IsplitError

log = logging.getLogger("isplit")

DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WAIT_MS = 2.0
SERVER_NAME = "isplit"


def create_app(
    folder: str | Path,
    *,
    token: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_request_bytes: int | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    docs: bool = False,
):
    """The FastAPI application serving the tail of the export in ``folder``.

    ``max_request_bytes``: the largest body (default: what the export's ``max_batch_size``
    images take as JSON, at most 64 MiB). ``docs``: serve ``/docs``, ``/redoc`` and
    ``/openapi.json`` (behind the token, when there is one); off by default."""
    require("fastapi", "uvicorn", "httptools", "prometheus_client")
    from fastapi import FastAPI

    from isplit import __version__

    if max_batch < 1:
        raise IsplitError(f"--max-batch must be at least 1, not {max_batch}")
    if batch_wait_ms < 0:
        raise IsplitError(f"--batch-wait-ms must be 0 or more, not {batch_wait_ms}")
    if max_request_bytes is not None and max_request_bytes < 1024:
        raise IsplitError(f"--max-request-bytes must be at least 1024, not {max_request_bytes}")
    metrics = Metrics()
    service = TailService(
        Path(folder), token, max_batch, batch_wait_ms / 1e3, max_request_bytes, runtime, device,
        metrics,
    )  # fmt: skip
    app = FastAPI(
        title="isplit tail server",
        version=__version__,
        lifespan=service.lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.manifest, app.state.service, app.state.metrics = service.manifest, service, metrics
    _add_error_handlers(app)
    _add_routes(app, service)
    if docs:
        _add_docs(app, service)
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


def _add_routes(app, service: TailService) -> None:
    """The Open Inference Protocol's routes: health, metadata, readiness, inference; metrics."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response

    from isplit import __version__

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if not service.ready:  # draining: load balancers stop sending here
            return JSONResponse({"ready": False, "error": "shutting down"}, status_code=503)
        return {"ready": True}

    @app.get("/metrics")
    async def metrics(request: Request):
        service.authorize(request)
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

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
        return {"name": service.model(request, name, None).name, "ready": service.ready}

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(request: Request, name: str, version: str):
        return {"name": service.model(request, name, version).name, "ready": service.ready}

    @app.post("/v2/models/{name}/infer")
    async def model_infer(request: Request, name: str):
        return await service.infer(request, service.model(request, name, None))

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def model_version_infer(request: Request, name: str, version: str):
        return await service.infer(request, service.model(request, name, version))


def _add_docs(app, service: TailService) -> None:
    """``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, behind the token if any."""
    from fastapi import Request
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        service.authorize(request)
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request):
        service.authorize(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        service.authorize(request)
        return get_redoc_html(openapi_url="/openapi.json", title=app.title)
