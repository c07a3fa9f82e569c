"""Helpers shared by the test modules: sample items and local ports."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

#: the repository (worker processes run from there)
ROOT = Path(__file__).resolve().parent.parent


def message(i: Any, role: str = "user") -> dict[str, Any]:
    """A message item as the SDK stores one."""
    return {"role": role, "content": f"message {i}", "type": "message"}


def short(i: int) -> dict[str, Any]:
    """A small user item (its content names it: ``m<i>``)."""
    return {"role": "user", "content": f"m{i}"}


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, up: bool, limit: float = 15.0) -> None:
    """Wait until something listens on the loopback ``port`` (or, ``up=False``, nothing)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} did not go {'up' if up else 'down'}")
        time.sleep(0.02)


def worker_config(backend: Any, **fields: Any) -> dict[str, Any]:
    """A worker process's config: the backend's servers and names, plus ``fields``."""
    return {
        "redis_url": backend.redis_url,
        "sql_url": backend.sql_url,
        "prefix": backend.prefix,
        "sessions_table": backend.sessions_table,
        "messages_table": backend.messages_table,
        **fields,
    }


async def run_worker_processes(
    module: str, configs: list[dict[str, Any]], limit: float
) -> list[Any]:
    """Run ``python -m <module> '<config json>'`` once per config at once; their JSON reports."""
    import asyncio
    import json
    import sys

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            json.dumps(cfg),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for cfg in configs
    ]
    reports = []
    for p in procs:
        out, err = await asyncio.wait_for(p.communicate(), limit)
        assert p.returncode == 0, err.decode()[-3000:]
        reports.append(json.loads(out))
    return reports


def worker_store(cfg: dict[str, Any]) -> Any:
    """The store a worker process builds from its :func:`worker_config`."""
    from tiered_session import TieredStore

    return TieredStore.from_url(
        cfg["redis_url"],
        cfg["sql_url"],
        key_prefix=cfg["prefix"],
        sessions_table=cfg["sessions_table"],
        messages_table=cfg["messages_table"],
        write_mode=cfg["mode"],
        hot_items=cfg["hot_items"],
        run_flusher=cfg["run_flusher"],
    )
