"""Prometheus metrics of the tail server (``GET /metrics``), with ``prometheus_client``, as
Triton and KServe expose theirs: requests by status code (framing errors and refused
connections included), images inferred, the batch sizes the tail ran, the time requests queued
and the time the tail took, and the open connections. Each server has its own registry."""

from __future__ import annotations

from isplit.deploy.server.batching import Observer

_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """The server's counters, histograms and gauges (see the module docstring)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.responses = Counter(
            "isplit_requests", "HTTP requests answered, by status code", ["code"], registry=r
        )
        self.images = Counter(
            "isplit_inference_images", "images inferred and answered, by model", ["model"],
            registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "isplit_batch_size", "images per run of the tail, by model", ["model"], registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )  # fmt: skip
        self.queue = Histogram(
            "isplit_queue_seconds", "time a request's images waited for the tail, by model",
            ["model"], registry=r, buckets=_SECONDS,
        )  # fmt: skip
        self.tail = Histogram(
            "isplit_tail_seconds", "time the tail took per batch, by model", ["model"],
            registry=r, buckets=_SECONDS,
        )  # fmt: skip
        self.connections = Gauge("isplit_open_connections", "open connections", registry=r)
        self.closed = Counter(
            "isplit_connections_closed", "connections the server closed, by reason", ["reason"],
            registry=r,
        )  # fmt: skip

    def observer(self, model: str) -> Observer:
        """What a model's :class:`~isplit.deploy.server.batching.Batcher` reports to."""
        batch, tail, queue = (m.labels(model) for m in (self.batch, self.tail, self.queue))

        def observe(size: int, tail_s: float, queued_s: list[float]) -> None:
            batch.observe(size)
            tail.observe(tail_s)
            for q in queued_s:
                queue.observe(q)

        return observe

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def counting(self, app):
        """``app`` (ASGI) counting every response by its status code."""

        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)

            async def send_counted(message):
                if message["type"] == "http.response.start":
                    self.responses.labels(str(message["status"])).inc()
                await send(message)

            return await app(scope, receive, send_counted)

        return counted
