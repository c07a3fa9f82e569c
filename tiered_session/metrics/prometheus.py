"""``serve_prometheus(store, port)``: the store's metrics over HTTP, in the Prometheus text format.

Needs ``pip install "tiered-session[prometheus]"``. The endpoint runs on a
daemon thread with a registry of its own (the store's metrics and the
process's CPU and memory); each scrape reads the store's counters and, through
the store's event loop, its backlog figures in Redis. Meant for standalone
flushers (``tiered-session flush --metrics-port N``) and any process that
prefers scraping to pushing.

Example:
    >>> import urllib.request
    >>> from tiered_session import TieredStore
    >>> server = serve_prometheus(TieredStore(), 0, host="127.0.0.1")
    >>> body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read()
    >>> b"# TYPE tiered_session_flushed_entries_total counter" in body
    True
    >>> server.close()
    >>> server.close()  # idempotent
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .._errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    from ..store import TieredStore

__all__ = ["PrometheusServer", "serve_prometheus"]

#: seconds ``close`` waits for the serving thread
_JOIN_TIMEOUT = 5.0
#: how often the serving thread looks for ``close`` (seconds)
_POLL_INTERVAL = 0.05


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape, none left behind at exit."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing (a scrape is not an event)."""


class PrometheusServer:
    """A running metrics endpoint; ``close()`` stops it (idempotent).

    Example:
        >>> from tiered_session import TieredStore
        >>> with serve_prometheus(TieredStore(), 0) as server:
        ...     server.port > 0
        True
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self.closed = False

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one picked when asked for port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where to scrape it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_JOIN_TIMEOUT)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_prometheus(
    store: TieredStore, port: int, host: str = "127.0.0.1", *, timeout: float = 2.0
) -> PrometheusServer:
    """Serve the store's metrics at ``http://host:port/metrics`` until ``close()``.

    Args:
        store: the store whose counters and backlog to serve.
        port: the TCP port (0: any free one, see ``.port``).
        host: the address to listen on (``"0.0.0.0"``: every interface).
        timeout: seconds a scrape waits for the backlog read from Redis
            (past it, the backlog gauges are left out of that scrape).

    Raises:
        MissingDependencyError: ``prometheus-client`` is not installed.
        ConfigurationError: a bad port, or the address cannot be listened on.
    """
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
    except ImportError as e:
        raise MissingDependencyError("prometheus-client", "prometheus") from e
    from .collector import StoreCollector

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics port must be an int from 0 to 65535, got {port!r}")
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, timeout=timeout))
    ProcessCollector(registry=registry)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(
            host, port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler
        )
    except OSError as e:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    thread = threading.Thread(
        target=server.serve_forever,
        args=(_POLL_INTERVAL,),
        name="tiered-session-metrics",
        daemon=True,
    )
    thread.start()
    return PrometheusServer(server, thread)
