"""A conversation's structure, read off its items: turns, message types, tool names.

The same rules as the Agents SDK's ``AdvancedSQLiteSession``: an item with
``role == "user"`` opens a turn (items before the first are turn 0; several
user items in one batch are several turns); the message type is ``user``,
``assistant``, the item's ``type``, or ``other``; tool names come from the
item's ``name`` (with its ``namespace``), an MCP server label, or the tool
type. A branch's turn numbers are fixed by its items, so they never need
renumbering: a branch copies the items before a turn, a pop removes the last.

Example:
    >>> items = [{"role": "user", "content": "hi"}, {"type": "function_call", "name": "f"}]
    >>> [(s.turn, s.kind, s.tool) for s in structure(items)]
    [(1, 'user', None), (1, 'function_call', 'f')]
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..cold.advanced_tables import UsageRow, parse_details

__all__ = [
    "ItemShape",
    "branch_answers",
    "content_preview",
    "dump",
    "conversation_by_turns",
    "find_turns",
    "is_user",
    "message_type",
    "stamp",
    "structure",
    "tool_name",
    "tool_usage",
    "turn_answers",
    "turn_of_last",
    "usage_answer",
    "usage_parts",
    "user_turns",
]

#: tool types without a ``name``: the type is the tool
_NAMELESS_TOOLS = frozenset(
    {
        "computer_call",
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "shell_call",
        "apply_patch_call",
        "tool_search_call",
        "tool_search_output",
    }
)
#: the message types counted as tool calls by ``get_tool_usage``
TOOL_CALL_TYPES = frozenset(
    {
        "tool_call",
        "function_call",
        "computer_call",
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "tool_search_call",
        "custom_tool_call",
        "mcp_call",
        "mcp_approval_request",
        "shell_call",
        "apply_patch_call",
    }
)


def is_user(item: Any) -> bool:
    """Whether the item opens a turn."""
    return isinstance(item, dict) and item.get("role") == "user"


def message_type(item: Any) -> str:
    """``user``, ``assistant``, the item's ``type``, or ``other``."""
    if isinstance(item, dict):
        role = item.get("role")
        if role == "user":
            return "user"
        if role == "assistant":
            return "assistant"
        if item.get("type"):
            return str(item.get("type"))
    return "other"


def tool_name(item: Any) -> str | None:
    """The tool an item calls or answers, or None."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind in {"mcp_call", "mcp_approval_request"} and "server_label" in item:
        label, name = item.get("server_label"), item.get("name")
        if name and label:
            return f"{label}.{name}"
        if label:
            return str(label)
        return str(name) if name else None
    if kind in _NAMELESS_TOOLS:
        return "tool_search" if kind in {"tool_search_call", "tool_search_output"} else str(kind)
    if "name" in item:
        name = item.get("name")
        if name is None:
            return None
        text = str(name)
        namespace = item.get("namespace")
        ns = str(namespace) if namespace is not None else None
        if text and ns and ns != text:
            return f"{ns}.{text}"
        return text
    return None


@dataclass(frozen=True, slots=True)
class ItemShape:
    """One item's place in its branch."""

    #: position in the branch (0-based)
    index: int
    #: user turn (0 before the first user item)
    turn: int
    kind: str
    tool: str | None
    item: Any


def structure(items: Sequence[Any]) -> Iterator[ItemShape]:
    """Each item's turn, type and tool name, in order."""
    turn = 0
    for i, item in enumerate(items):
        if is_user(item):
            turn += 1
        yield ItemShape(i, turn, message_type(item), tool_name(item), item)


def turn_of_last(items: Sequence[Any]) -> int:
    """The turn the newest item belongs to (0 when there are no user items)."""
    return sum(1 for item in items if is_user(item))


def content_preview(content: Any, max_length: int | None = None) -> str:
    """A user message's content as a string, cut to ``max_length`` characters + ``...``."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if max_length is not None and len(text) > max_length:
        return text[:max_length] + "..."
    return text


def user_turns(items: Sequence[Any]) -> list[tuple[int, Any, int]]:
    """``(turn, content, index)`` of each user item."""
    return [
        (s.turn, s.item.get("content", ""), s.index) for s in structure(items) if s.kind == "user"
    ]


def find_turns(items: Sequence[Any], term: str) -> list[tuple[int, Any, int]]:
    """:func:`user_turns` whose text holds ``term`` (ASCII letters in any case).

    A string content is searched; a list content's parts' ``text`` are.
    """
    pattern = re.compile(re.escape(term), re.IGNORECASE | re.ASCII)
    found = []
    for turn, content, index in user_turns(items):
        try:
            texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        except (AttributeError, TypeError):
            continue
        if any(isinstance(t, str) and pattern.search(t) for t in texts):
            found.append((turn, content, index))
    return found


def conversation_by_turns(items: Sequence[Any]) -> dict[int, list[dict[str, str | None]]]:
    """Each turn's items as ``{"type", "tool_name"}``, in order."""
    turns: dict[int, list[dict[str, str | None]]] = {}
    for s in structure(items):
        turns.setdefault(s.turn, []).append({"type": s.kind, "tool_name": s.tool})
    return turns


def tool_usage(items: Sequence[Any]) -> list[tuple[str | None, int, int]]:
    """``(tool_name, calls, turn)`` in turn order, then by name (None first).

    Tool calls count once each; a ``tool_search_output`` counts when its turn
    has no ``tool_search_call`` of the same tool.
    """
    shapes = list(structure(items))
    searched = {(s.turn, s.tool) for s in shapes if s.kind == "tool_search_call"}
    counts: dict[tuple[int, str | None], int] = {}
    for s in shapes:
        if s.kind in TOOL_CALL_TYPES:
            name = s.tool
            if name is None and s.kind in {"shell_call", "apply_patch_call"}:
                name = s.kind
        elif s.kind == "tool_search_output" and (s.turn, s.tool) not in searched:
            name = s.tool
        else:
            continue
        counts[(s.turn, name)] = counts.get((s.turn, name), 0) + 1
    ordered = sorted(
        counts.items(), key=lambda kv: (kv[0][0], kv[0][1] is not None, kv[0][1] or "")
    )
    return [(name, n, turn) for (turn, name), n in ordered]


def usage_answer(u: UsageRow) -> dict[str, Any]:
    """One turn's usage as ``get_turn_usage`` answers it (details parsed)."""
    return {
        "requests": u.requests,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "input_tokens_details": parse_details(u.input_tokens_details),
        "output_tokens_details": parse_details(u.output_tokens_details),
    }


def stamp(when: dt.datetime | None) -> str:
    """A time as SQLite's ``CURRENT_TIMESTAMP`` text (the SDK's answers carry that)."""
    when = when or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def dump(details: Any) -> dict[str, Any] | None:
    """Token details as a dict (a pydantic model's dump, a dataclass's fields, a dict)."""
    if details is None:
        return None
    if hasattr(details, "model_dump"):
        return dict(details.model_dump(mode="json"))
    if isinstance(details, dict):
        return dict(details)
    return dict(vars(details))


def turn_answers(
    turns: Sequence[tuple[int, Any, int]], times: Sequence[dt.datetime], cut: int | None
) -> list[dict[str, Any]]:
    """User turns as ``get_conversation_turns`` answers them (``times``: per item index)."""
    return [
        {
            "turn": turn,
            "content": content_preview(content, cut),
            "full_content": content,
            "timestamp": stamp(times[index] if index < len(times) else None),
            "can_branch": True,
        }
        for turn, content, index in turns
    ]


def usage_parts(
    usage: Any,
) -> tuple[tuple[int, int, int, int], tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """A run's ``Usage`` as (requests, input, output, total) and its two token details."""
    r, i, o, t = (int(getattr(usage, f, 0) or 0) for f in _COUNTS)
    details = (
        dump(getattr(usage, "input_tokens_details", None)),
        dump(getattr(usage, "output_tokens_details", None)),
    )
    return (r, i, o, t), details


_COUNTS = ("requests", "input_tokens", "output_tokens", "total_tokens")


def branch_answers(found: list[tuple[str, list[Any], str]], current: str) -> list[dict[str, Any]]:
    """``(branch, items, created_at)`` as ``list_branches`` answers, oldest first."""
    return [
        {
            "branch_id": branch,
            "message_count": len(items),
            "user_turns": sum(1 for item in items if message_type(item) == "user"),
            "is_current": branch == current,
            "created_at": created,
        }
        for branch, items, created in sorted(found, key=lambda f: (f[2], f[0]))
    ]
