"""A worker process of the multi-process workload (``python -m tiered_session._bench._worker``).

It receives its task as one JSON argument, prints ``ready``, waits for ``go``
on stdin, runs its chat turns and prints one JSON line with its timings.

Example:
    $ python -m tiered_session._bench._worker '{"backend": "redis-floor", ...}'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from ._backends import BenchEnv, make_backend
from ._workloads import worker_turn

__all__ = ["main"]


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    env = BenchEnv(**spec["env"])
    backend = make_backend(spec["backend"], env, owner=False)
    await backend.open()
    try:
        w, nt, sids = spec["worker"], spec["turns"], spec["sessions"]
        sessions = [backend.session(sid) for sid in sids]
        batches = [worker_turn(w, t) for t in range(nt)]
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        lat: list[int] = []
        pc = time.perf_counter_ns
        start = time.time()
        for t in range(nt):
            s = sessions[(w + t) % len(sessions)]
            t0 = pc()
            await s.get_items(limit=20)
            await s.add_items(batches[t])
            lat.append(pc() - t0)
        end = time.time()
        return {"start": start, "end": end, "lat_ns": lat}
    finally:
        await backend.close()


def main() -> None:
    """Run one worker."""
    spec = json.loads(sys.argv[1])
    try:
        out = asyncio.run(_run(spec))
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        print("ready", flush=True)  # unblock the parent if we failed before starting
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
