"""A worker process of the multi-process workload (``python -m tiered_session.bench.worker``).

It is started once per run with the run's environment as one JSON argument,
then serves tasks: a JSON line on stdin names a backend, the shared sessions
and the number of turns; it answers ``ready``, waits for ``go``, runs its chat
turns and prints one JSON line with its timings. ``quit`` ends it.

Example:
    $ python -m tiered_session.bench.worker '{"namespace": "ab12cd", "tmpdir": "/tmp"}'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from .backends import make_backend
from .env import Backend, BenchEnv
from .throughput import worker_turn

__all__ = ["main"]


async def _task(backend: Backend, task: dict[str, Any], readline: Any) -> dict[str, Any]:
    w, nt, sids = task["worker"], task["turns"], task["sessions"]
    sessions = [backend.session(sid) for sid in sids]
    batches = [worker_turn(w, t) for t in range(nt)]
    print("ready", flush=True)
    await readline()
    lat: list[int] = []
    pc = time.perf_counter_ns
    start = time.time()
    for t in range(nt):
        s = sessions[(w + t) % len(sessions)]
        t0 = pc()
        await s.get_items(limit=20)
        await s.add_items(batches[t])
        lat.append(pc() - t0)
    return {"start": start, "end": time.time(), "lat_ns": lat}


async def _serve(env: BenchEnv) -> None:
    loop = asyncio.get_running_loop()

    async def readline() -> str:
        line: str = await loop.run_in_executor(None, sys.stdin.readline)
        return line

    backends: dict[str, Backend] = {}
    try:
        while True:
            line = (await readline()).strip()
            if not line or line == "quit":
                return
            if line == "go":  # the answer to a task that failed before it started
                continue
            task = json.loads(line)
            try:
                b = backends.get(task["backend"])
                if b is None:
                    b = make_backend(task["backend"], env, owner=False)
                    await b.open()
                    backends[task["backend"]] = b
                out = await _task(b, task, readline)
            except Exception as e:
                print("ready", flush=True)  # never leave the parent waiting
                out = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            print(json.dumps(out), flush=True)
    finally:
        for b in backends.values():
            await b.close()


def main() -> None:
    """Serve tasks until ``quit``."""
    asyncio.run(_serve(BenchEnv(**json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
