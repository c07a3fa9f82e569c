"""Helpers shared by the test modules: sample items and local ports."""

from __future__ import annotations

import socket
import time
from typing import Any


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
