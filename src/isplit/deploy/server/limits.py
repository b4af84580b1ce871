"""What one connection may hold: the server's time and connection limits, enforced in uvicorn's
HTTP protocol (httptools) where uvicorn has no setting for them.

uvicorn 0.54 offers ``timeout_keep_alive`` (idle time between requests, used as is) and
``limit_concurrency``, which counts requests, not connections, and answers in plain text; it has
no timeout for reading a request's head or body (a connection that sends nothing, half a head or
half a body is held for ever) and no bound on the head's size with httptools. :func:`protocol`
adds the smallest correct version of each to uvicorn's protocol, and answers framing errors
(a negative Content-Length, a body longer than declared, ...) with the JSON ``{"error": ...}``
body every other error has, instead of uvicorn's plain text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

from isplit.errors import IsplitError


@dataclass(frozen=True)
class Limits:
    """Time and size limits of the server (seconds, bytes)."""

    header_timeout_s: float = 10.0  # connection (or the last answer) -> the request's whole head
    body_timeout_s: float = 30.0  # the head -> the whole body
    keep_alive_s: float = 5.0  # an idle connection between requests is closed after this
    max_connections: int = 256  # more are answered 503 and closed
    max_header_bytes: int = 64 * 1024  # a longer head is answered 431
    drain_timeout_s: float = 30.0  # SIGTERM: the most time to finish accepted requests
    drain_delay_s: float = 0.0  # SIGTERM: how long to answer not-ready before closing the port

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise IsplitError(f"{flag} must be more than 0 seconds, not {getattr(self, name)}")
        if self.max_connections < 1:
            raise IsplitError(f"--max-connections must be at least 1, not {self.max_connections}")
        if self.drain_timeout_s < 0 or self.drain_delay_s < 0:
            raise IsplitError("--drain-timeout and --drain-delay must be 0 seconds or more")


def error_response(status: int, message: str, headers: dict | None = None) -> bytes:
    """A whole HTTP/1.1 response with the JSON body ``{"error": message}`` that closes the
    connection (for errors answered outside the application)."""
    body = json.dumps({"error": message}).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def protocol(limits: Limits, metrics=None) -> type:
    """uvicorn's httptools protocol with :class:`Limits` (see the module docstring); ``metrics``
    (:class:`~isplit.deploy.server.metrics.Metrics`) counts connections and what was refused."""
    from isplit.deploy.server.connection import BoundedProtocol

    return type("BoundedProtocol", (BoundedProtocol,), {"limits": limits, "metrics": metrics})
