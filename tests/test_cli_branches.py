"""``sessions branches``, ``sessions usage`` and ``sessions show --branch``, as subprocesses."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from agents.usage import Usage

from .conftest import Backend
from .test_cli_ops import cli

pytestmark = pytest.mark.servers


def result(requests: int) -> SimpleNamespace:
    usage = Usage(requests=requests, input_tokens=5, output_tokens=7, total_tokens=12)
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))


async def test_branches_usage_and_show_branch(real_backend: Backend) -> None:
    b = real_backend
    store = b.store(write_mode="behind", create_tables=True)
    s = store.advanced_session("conv")
    await s.add_items([{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}])
    await s.store_run_usage(result(1))
    await s.add_items([{"role": "user", "content": "two"}])
    await s.store_run_usage(result(2))
    await s.create_branch_from_turn(2, "retry")
    await s.add_items([{"role": "user", "content": "two, again"}])
    await store.flush()
    args = b.cli_args()

    code, out, _ = await cli("sessions", "branches", "conv", "--json", *args)
    assert code == 0
    listed = {x["branch_id"]: x for x in json.loads(out)}
    assert listed["retry"]["is_current"] and listed["main"]["message_count"] == 3
    code, out, _ = await cli("sessions", "branches", "conv", *args)
    assert code == 0 and "* retry" in out

    code, out, _ = await cli("sessions", "usage", "conv", "--json", *args)
    assert code == 0 and json.loads(out)["requests"] == 3
    code, out, _ = await cli("sessions", "usage", "conv", "--by-turn", "--branch", "main", *args)
    assert code == 0 and len(out.strip().splitlines()) == 3  # header + 2 turns

    code, out, _ = await cli("sessions", "show", "conv", "--branch", "retry", "--json", *args)
    assert code == 0
    assert [x["content"] for x in json.loads(out)] == ["one", "1", "two, again"]

    code, _, err = await cli("sessions", "show", "conv", "--branch", "nope", *args)
    assert code == 1 and "branch 'nope'" in err
    code, _, err = await cli("sessions", "branches", "missing", *args)
    assert code == 1 and "not found" in err
    code, _, err = await cli("sessions", "usage", "missing", *args)
    assert code == 1 and "not found" in err
