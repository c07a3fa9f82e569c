"""Realistic agent items for the demo and the benchmarks.

A turn is what ``Runner.run`` stores: the user's message, sometimes a tool
call with its output, and the assistant's answer (a few hundred bytes of
``output_text``).

Example:
    >>> items = turn_items(session=3, turn=0)
    >>> [i.get("type", i.get("role")) for i in items]
    ['message', 'message', 'message']
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["assistant_message", "function_call", "function_output", "turn_items", "user_message"]

_WORDS = [
    "the",
    "agent",
    "checks",
    "the",
    "order",
    "status",
    "and",
    "replies",
    "with",
    "a",
    "concise",
    "summary",
    "of",
    "shipping",
    "options",
    "refunds",
    "inventory",
    "weather",
    "forecast",
    "booking",
    "details",
    "invoice",
    "totals",
    "and",
    "next",
    "steps",
]


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words))


def user_message(rng: random.Random, turn: int) -> dict[str, Any]:
    """A user message of ~100-300 bytes."""
    return {"role": "user", "type": "message", "content": f"[{turn}] " + _text(rng, 20 + turn % 20)}


def assistant_message(rng: random.Random, turn: int) -> dict[str, Any]:
    """An assistant output message with ~300-700 bytes of output_text."""
    return {
        "id": f"msg_{rng.getrandbits(64):016x}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {
                "type": "output_text",
                "text": f"[{turn}] " + _text(rng, 50 + rng.randrange(60)),
                "annotations": [],
            }
        ],
    }


def function_call(rng: random.Random, turn: int) -> dict[str, Any]:
    """A function call item."""
    return {
        "type": "function_call",
        "id": f"fc_{rng.getrandbits(64):016x}",
        "call_id": f"call_{turn}_{rng.getrandbits(32):08x}",
        "name": "lookup_order",
        "arguments": f'{{"order_id": "A{rng.randrange(10**6):06d}", "verbose": true}}',
        "status": "completed",
    }


def function_output(rng: random.Random, call: dict[str, Any]) -> dict[str, Any]:
    """The output of a function call."""
    return {
        "type": "function_call_output",
        "call_id": call["call_id"],
        "output": (
            f'{{"status": "shipped", "eta_days": {rng.randrange(1, 9)}, '
            f'"carrier": "{rng.choice(["ups", "dhl", "fedex"])}"}}'
        ),
    }


def turn_items(session: int, turn: int) -> list[dict[str, Any]]:
    """The items one agent turn adds: 3 items, every third turn with a tool call."""
    rng = random.Random(session * 1_000_003 + turn)
    if turn % 3 == 2:
        call = function_call(rng, turn)
        return [user_message(rng, turn), call, function_output(rng, call)]
    return [user_message(rng, turn), assistant_message(rng, turn), assistant_message(rng, turn)]
