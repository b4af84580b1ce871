"""One connection of the tail server: uvicorn's httptools protocol with the timers, caps and
JSON error answers of :mod:`isplit.deploy.server.limits` (which says why)."""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from isplit.deploy.server.limits import Limits, error_response


class _HeadTooLarge(Exception):
    pass


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`~isplit.deploy.server.limits.Limits`
    (:func:`~isplit.deploy.server.limits.protocol` makes one with the limits and metrics)."""

    limits: Limits
    metrics = None  # Metrics

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._head_bytes, self._head_parsed, self._in_head = 0, 0, True
        if self.metrics is not None:
            self.metrics.connections.inc()
        if len(self.connections) > self.limits.max_connections:
            msg = f"this server holds at most {self.limits.max_connections} connections; retry"
            self._refuse(503, msg, "connection cap", {"retry-after": "1"})
        else:
            self._arm_head()

    def connection_lost(self, exc) -> None:
        self._cancel()
        if self.metrics is not None:
            self.metrics.connections.dec()
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
        if self._head_parsed > self.limits.max_header_bytes:
            raise _HeadTooLarge  # httptools stops parsing and raises it from feed_data
        super().on_header(name, value)

    def _head_too_large(self) -> bool:
        return self._in_head and self._head_bytes > self.limits.max_header_bytes

    def _refuse_head(self) -> None:
        msg = f"the request's head exceeds {self.limits.max_header_bytes} bytes"
        self._refuse(431, msg, "head too large")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._in_head = False
        self._arm(self.limits.body_timeout_s, "body timeout", "the request's body")

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
        self._arm(self.limits.header_timeout_s, "head timeout", "the request's head")

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
            if self.metrics is not None:
                self.metrics.responses.labels(str(status)).inc()
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's answer, if any, goes nowhere
            cycle.message_event.set()
        self._close(reason)

    def _close(self, reason: str) -> None:
        self._cancel()
        if self.metrics is not None:
            self.metrics.closed.labels(reason).inc()
        self.transport.close()
