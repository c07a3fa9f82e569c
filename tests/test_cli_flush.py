"""``tiered-session flush`` as an operator runs it: JSON logs, a metrics endpoint, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import Backend

pytestmark = [pytest.mark.servers, pytest.mark.processes]

ROOT = Path(__file__).resolve().parent.parent


def flush_cmd(b: Backend, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tiered_session", "flush", *b.cli_args(), *extra]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_SESSION_")}
    return {**out, **extra}


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(args, env=env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


async def backlog(b: Backend, n: int) -> None:
    store = b.store(write_mode="behind", run_flusher=False)
    await store.start()
    for i in range(n):
        await store.session(f"s{i % 3}").add_items([{"n": i}])
    assert (await store.stats())["backlog"] == n


async def test_flush_once_with_json_logs(real_backend: Backend) -> None:
    await backlog(real_backend, 12)
    done = await asyncio.to_thread(
        subprocess.run,
        flush_cmd(real_backend, "--once"),
        env=env(TIERED_SESSION_LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert line["time"].endswith("Z")
    events = {line.get("event"): line for line in lines}
    assert events["started"]["logger"] == "tiered_session.cli.flush"
    assert events["started"]["token"] == events["stopped"]["token"]
    assert events["stopped"]["entries"] == 12
    assert "12 entries" in events["stopped"]["message"]
    assert f"redis={real_backend.redis_url}" in events["started"]["message"]


async def test_flush_serves_metrics_until_stopped(real_backend: Backend, tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    await backlog(real_backend, 5)
    log = tmp_path / "flush.log"
    proc = await asyncio.to_thread(start, flush_cmd(real_backend, "--metrics-port", "0"), log)
    try:
        deadline = time.monotonic() + 30
        url = ""
        while not url:
            text = log.read_text()
            for line in text.splitlines():
                if "metrics at http://" in line:
                    url = line.split("metrics at ")[1].strip()
            assert proc.poll() is None and time.monotonic() < deadline, text
            await asyncio.sleep(0.05)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        assert b"tiered_session_" in body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "started" in text and "stopped; 5 entries" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("blocked", ["prometheus_client", "tiered_session.metrics"])
async def test_metrics_port_without_the_extra(real_backend: Backend, blocked: str) -> None:
    await backlog(real_backend, 1)  # (creates the tables)
    args = [*real_backend.cli_args(), "--metrics-port", "0", "--once"]
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None  # as if not installed\n"
        "from tiered_session.cli import main\n"
        f"sys.exit(main(['flush', *{args!r}]))\n"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tiered-session: error: ")
    assert "pip install 'tiered-session[prometheus]'" in last
