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


class _HeadTooLarge(Exception):
    pass


def protocol(limits: Limits, metrics=None) -> type:
    """uvicorn's httptools protocol with :class:`Limits` (see the module docstring); ``metrics``
    (:class:`~isplit.deploy.server.metrics.Metrics`) counts connections and what was refused."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._timer = None
            self._head_bytes, self._head_parsed, self._in_head = 0, 0, True
            if metrics is not None:
                metrics.connections.inc()
            if len(self.connections) > limits.max_connections:
                msg = f"this server holds at most {limits.max_connections} connections; retry"
                self._refuse(503, msg, "connection cap", {"retry-after": "1"})
            else:
                self._arm_head()

        def connection_lost(self, exc) -> None:
            self._cancel()
            if metrics is not None:
                metrics.connections.dec()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            if self._in_head:
                self._head_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as e:
                if isinstance(e.__context__, _HeadTooLarge) or self._head_too_large():
                    self._refuse_head()
                else:
                    msg = f"this is not a valid HTTP/1.1 request ({e}): check its framing"
                    msg += " (Content-Length, chunks, the body's length)"
                    self._refuse(400, msg, "framing")
                return
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
            if self._head_too_large():  # still incomplete
                self._refuse_head()

        def on_url(self, url: bytes) -> None:
            self._head_parsed += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_parsed += len(name) + len(value) + 4
            if self._head_parsed > limits.max_header_bytes:
                raise _HeadTooLarge  # httptools stops parsing and raises it from feed_data
            super().on_header(name, value)

        def _head_too_large(self) -> bool:
            return self._in_head and self._head_bytes > limits.max_header_bytes

        def _refuse_head(self) -> None:
            msg = f"the request's head exceeds {limits.max_header_bytes} bytes"
            self._refuse(431, msg, "head too large")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._in_head = False
            self._arm(limits.body_timeout_s, "body timeout", "the request's body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._cancel()
            self._head_bytes, self._head_parsed, self._in_head = 0, 0, True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._in_head and not self.pipeline and not self.transport.is_closing():
                self._arm_head()

        # -- the timer and the answers --------------------------------------------------------
        def _arm_head(self) -> None:
            self._arm(limits.header_timeout_s, "head timeout", "the request's head")

        def _arm(self, seconds: float, reason: str, what: str) -> None:
            self._cancel()
            self._timer = self.loop.call_later(seconds, self._expire, seconds, reason, what)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self, seconds: float, reason: str, what: str) -> None:
            self._timer = None
            if self._in_head and self._head_bytes == 0:  # idle: nothing to answer
                self._close(reason)
            else:
                self._refuse(408, f"{what} did not arrive within {seconds:g} s", reason)

        def _refuse(self, status: int, message: str, reason: str, headers=None) -> None:
            """Answer ``status`` with the JSON error and close, unless an answer is under way
            on this connection (then only close)."""
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or not cycle.response_started or cycle.response_complete:
                self.transport.write(error_response(status, message, headers))
                if metrics is not None:
                    metrics.responses.labels(str(status)).inc()
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the application's answer, if any, goes nowhere
                cycle.message_event.set()
            self._close(reason)

        def _close(self, reason: str) -> None:
            self._cancel()
            if metrics is not None:
                metrics.closed.labels(reason).inc()
            self.transport.close()

    return BoundedProtocol
