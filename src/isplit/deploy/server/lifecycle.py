"""Running the tail server: uvicorn in a background thread with the server's limits, TLS, and a
graceful stop. On SIGTERM or SIGINT (:meth:`TailServer.serve_forever`) the readiness probe turns
not-ready first, the port closes after ``drain_delay_s``, the requests already accepted are
finished (within ``drain_timeout_s``), and the call returns; a second signal stops at once."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from pathlib import Path

from isplit.deploy.server.app import create_app
from isplit.deploy.server.limits import Limits, protocol
from isplit.errors import IsplitError

log = logging.getLogger("isplit")


def check_tls(certfile: str | None, keyfile: str | None) -> bool:
    """Whether TLS is on; a clear error for a certificate and key that cannot be used."""
    if (certfile is None) != (keyfile is None):
        raise IsplitError("TLS needs both --ssl-certfile and --ssl-keyfile")
    if certfile is None:
        return False
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise IsplitError(
            f"cannot use the certificate {certfile} with the key {keyfile} ({e}); pass a PEM "
            "certificate and its private key"
        ) from None
    return True


def exposure_warnings(host: str, token: str | None, tls: bool) -> list[str]:
    """What to warn about when the server listens beyond this machine."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if loopback:
        return []
    if not token:
        return [
            f"listening on {host} without a token: anyone who reaches this port can use it "
            "(pass --token or set ISPLIT_TOKEN)"
        ]
    if not tls:
        return [
            f"listening on {host} without TLS: the token travels in clear text (pass "
            "--ssl-certfile and --ssl-keyfile, or put a TLS proxy in front)"
        ]
    return []


class TailServer:
    """The tail server on ``host:port`` (0: a free port) in a background thread.

    ``with TailServer("exported/") as server: Client("exported/", server.url)``. ``limits``:
    :class:`~isplit.deploy.server.limits.Limits`; ``ssl_certfile`` and ``ssl_keyfile``: serve
    HTTPS; other options as :func:`~isplit.deploy.server.app.create_app`."""

    def __init__(
        self,
        folder: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: Limits | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        **options,
    ):
        self.limits = limits or Limits()
        self.tls = check_tls(ssl_certfile, ssl_keyfile)
        self.app = create_app(folder, **options)
        self.service = self.app.state.service
        import uvicorn

        metrics = self.app.state.metrics
        config = uvicorn.Config(
            metrics.counting(self.app), host=host, port=port, log_level="warning",
            lifespan="on", access_log=False, interface="asgi3",
            http=protocol(self.limits, metrics), timeout_keep_alive=self.limits.keep_alive_s,
            timeout_graceful_shutdown=self.limits.drain_timeout_s,
            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.host = host
        self.port: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self, timeout: float = 60.0) -> TailServer:
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
        """Close the port, finish the requests accepted (within the drain timeout), stop."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.limits.drain_timeout_s + 10)

    def drain(self) -> None:
        """Turn not-ready, keep serving for ``drain_delay_s``, then :meth:`stop`."""
        self.service.ready = False
        if self.limits.drain_delay_s > 0:
            time.sleep(self.limits.drain_delay_s)
        self.stop()

    def serve_forever(self) -> None:
        """Serve until SIGTERM or SIGINT (from the main thread), then :meth:`drain`."""
        signalled = threading.Event()

        def on_signal(signum, frame) -> None:
            if signalled.is_set():  # a second signal: stop now
                self.server.force_exit = True
            signalled.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while self._thread.is_alive() and not signalled.wait(0.2):
                pass
            if self._thread.is_alive():
                log.warning("stopping: finishing the requests accepted (at most %g s)",
                            self.limits.drain_delay_s + self.limits.drain_timeout_s)  # fmt: skip
                self.drain()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> TailServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
