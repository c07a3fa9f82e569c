"""Optional metrics: OpenTelemetry instruments and a Prometheus endpoint.

Nothing here is imported by the store: a store that is never instrumented
pays nothing (its session calls check one attribute for ``None``). The
optional dependencies are imported only by the functions that need them,
which raise :class:`~tiered_session.MissingDependencyError` with the
``pip install`` line when they are missing.

* :func:`instrument` (``tiered-session[otel]``): counters, gauges and
  histograms on an OpenTelemetry meter.
* :func:`serve_prometheus` (``tiered-session[prometheus]``): an HTTP endpoint
  in the Prometheus text format, read from the store on each scrape.

Example:
    >>> import urllib.request
    >>> from tiered_session import TieredStore
    >>> from tiered_session.metrics import serve_prometheus
    >>> store = TieredStore()
    >>> with serve_prometheus(store, 0) as server:  # port 0: any free port
    ...     url = f"http://127.0.0.1:{server.port}/metrics"
    ...     text = urllib.request.urlopen(url).read().decode()
    >>> "tiered_session_cache_hits_total 0.0" in text
    True
"""

from __future__ import annotations

from .otel import instrument
from .prometheus import PrometheusServer, serve_prometheus

__all__ = ["PrometheusServer", "instrument", "serve_prometheus"]
