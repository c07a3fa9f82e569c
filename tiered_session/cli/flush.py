r"""``tiered-session flush``: a standalone flusher worker.

It shares the outbox shards fairly with every other live flusher (processes
or in-process), runs until SIGTERM or SIGINT, then drains what it holds within
``--drain-timeout`` seconds, releases its leases and exits 0. ``--once``
drains the shards it can take and exits (1 if that took longer than
``--drain-timeout``). ``--metrics-port`` serves Prometheus metrics while it
runs; ``--log-format json`` writes one JSON object a log line.

Example:
    $ tiered-session flush --redis-url redis://localhost:6379/0 \\
          --sql-url postgresql+asyncpg://postgres@localhost/agents --metrics-port 9464
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any

import click

from .._config import default
from .._errors import MissingDependencyError, StorageUnavailableError
from ..outbox.flusher import Flusher
from ..store import TieredStore
from .common import ExitCode, Target
from .logs import LOG_FORMATS
from .options import set_log_format, storage_options

__all__ = ["register"]

log = logging.getLogger("tiered_session.cli.flush")
log.setLevel(logging.INFO)  # its start and stop records pass at every verbosity

#: the default of --max-delay-ms: the store's flush_interval
_DELAY_MS = round(default("flush_interval") * 1000)
ENV_METRICS_PORT = "TIERED_SESSION_METRICS_PORT"
ENV_METRICS_HOST = "TIERED_SESSION_METRICS_HOST"
ENV_LOG_FORMAT = "TIERED_SESSION_LOG_FORMAT"
_PROMETHEUS_HINT = 'pip install "tiered-session[prometheus]"'


def register(group: click.Group) -> None:
    """Add the ``flush`` command."""
    group.add_command(flush)


def _shard_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        shards = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not shards or min(shards) < 0:
        raise click.BadParameter(f"{value!r}: give shard numbers from 0 up")
    return shards


def _log_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    set_log_format(ctx, value)
    return value


@click.command(
    short_help="Run a flusher worker (Redis outbox -> SQL).",
    epilog="Exit codes: 0 stopped after draining; 1 --once could not drain in time.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=default("flush_batch_size"),
    show_default=True,
    help="Outbox entries per SQL transaction.",
)
@click.option(
    "--max-delay-ms",
    type=click.IntRange(min=0),
    default=_DELAY_MS,
    show_default=True,
    help="Longest wait for new entries before polling again.",
)
@click.option("--once", is_flag=True, help="Drain what is there now, then exit.")
@click.option(
    "--own-shards",
    metavar="LIST",
    callback=_shard_list,
    help="Comma-separated shard numbers to take whole (default: share every shard "
    "fairly with the other flushers).",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1),
    default=default("lease_ttl"),
    show_default=True,
    help="Seconds a shard lease lasts unless renewed.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    default=default("max_attempts"),
    show_default=True,
    help="Deliveries of an entry before it is dead-lettered.",
)
@click.option(
    "--inflight-timeout",
    type=click.FloatRange(min=0),
    default=default("inflight_timeout"),
    show_default=True,
    help="Seconds before finishing a write-through operation whose writer vanished.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to drain after a stop signal (or with --once).",
)
@click.option("--create-tables", is_flag=True, help="Create missing SQL tables.")
@click.option(
    "--replica-acks",
    type=click.IntRange(0, 64),
    default=default("replica_acks"),
    show_default=True,
    help="Commit only entries this many replicas hold (WAIT after each read; see the "
    "writers' replica_acks).",
)
@click.option(
    "--replica-ack-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=default("replica_ack_timeout"),
    show_default=True,
    help="Seconds --replica-acks waits for the replicas.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar=ENV_METRICS_PORT,
    show_envvar=True,
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port; "
    f"needs {_PROMETHEUS_HINT}).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    envvar=ENV_METRICS_HOST,
    show_envvar=True,
    show_default=True,
    help="Address the metrics endpoint listens on (0.0.0.0: every interface).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar=ENV_LOG_FORMAT,
    show_envvar=True,
    callback=_log_format,
    is_eager=True,
    help="Log lines as text, or one JSON object a line.",
)
@storage_options("data")
def flush(target: Target, **opts: Any) -> int:
    """Run a flusher worker: move write-behind entries from Redis into SQL.

    Runs until SIGTERM or SIGINT, then drains within --drain-timeout and exits 0.
    """
    store = target.store(
        write_mode="behind",
        run_flusher=False,
        flush_batch_size=opts["batch_size"],
        lease_ttl=opts["lease_ttl"],
        max_attempts=opts["max_attempts"],
        inflight_timeout=opts["inflight_timeout"],
        create_tables=opts["create_tables"],
        replica_acks=opts["replica_acks"],
        replica_ack_timeout=opts["replica_ack_timeout"],
    )
    flusher = Flusher(
        store,
        shards=opts["own_shards"],
        batch_size=opts["batch_size"],
        interval=opts["max_delay_ms"] / 1000,
    )
    flusher.drain_timeout = opts["drain_timeout"]
    return asyncio.run(_run(store, flusher, target, opts))


@contextlib.contextmanager
def _metrics(store: TieredStore, port: int | None, host: str) -> Iterator[None]:
    """Serve the store's metrics while the block runs (nothing when ``port`` is None)."""
    if port is None:
        yield
        return
    try:
        from ..metrics import serve_prometheus
    except ImportError as e:
        raise MissingDependencyError("tiered_session.metrics", "prometheus") from e
    server = serve_prometheus(store, port, host)
    _event("metrics at %s", server.url, url=server.url)
    try:
        yield
    finally:
        server.close()


def _event(msg: str, *args: Any, **fields: Any) -> None:
    log.info(msg, *args, extra=fields)


async def _run(store: TieredStore, flusher: Flusher, target: Target, opts: dict[str, Any]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    code = ExitCode.OK
    try:
        try:
            await store.start()
        except StorageUnavailableError as e:  # a server down: start anyway, retry with backoff
            log.warning("not started cleanly, retrying as the flusher runs: %s", e)
        with _metrics(store, opts["metrics_port"], opts["metrics_host"]):
            _event(
                "worker %s started (%s)",
                flusher.token,
                target.describe(),
                event="started",
                token=flusher.token,
            )
            if opts["once"]:
                try:
                    await flusher.drain(timeout=opts["drain_timeout"])
                except TimeoutError as e:
                    log.error("%s", e)
                    code = ExitCode.NOT_FOUND
                finally:
                    await flusher.release()
            else:
                await flusher.run(stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await store.aclose()
    c = store.counters
    _event(
        "worker %s stopped; %d entries in %d batches, %d failed attempts",
        flusher.token,
        c.flushed_entries,
        c.flush_batches,
        c.flush_errors,
        event="stopped",
        token=flusher.token,
        entries=c.flushed_entries,
        batches=c.flush_batches,
        failed_attempts=c.flush_errors,
    )
    return code
