"""Log lines of the command line: text for people, or one JSON object a line for machines.

A JSON line holds ``time`` (UTC, ISO 8601, milliseconds), ``level``,
``logger``, ``message``, then the fields the record was given with
``extra=``, then ``error`` (the traceback) when it carries one. The
package's log messages hold session ids, shard numbers, counts and error
descriptions, never item contents, and the formatter adds nothing else.

Example:
    >>> import io, json, logging
    >>> rec = logging.LogRecord("tiered_session", logging.INFO, "", 0, "took %d", (3,), None)
    >>> rec.shards = [0, 1, 2]
    >>> line = json.loads(JsonFormatter().format(rec))
    >>> line["level"], line["logger"], line["message"], line["shards"]
    ('INFO', 'tiered_session', 'took 3', [0, 1, 2])
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["LOG_FORMATS", "JsonFormatter", "level_for", "restore_logging", "setup_logging"]

#: what ``--log-format`` takes
LOG_FORMATS = ("text", "json")
#: the text format
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the name of the one handler the command line installs on the root logger
HANDLER_NAME = "tiered-session-cli"
#: attributes every LogRecord has; anything else came with ``extra=``
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (values JSON cannot hold as their ``str``)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record to the current stderr."""
        self.stream = sys.stderr
        super().emit(record)


def level_for(verbosity: int) -> int:
    """The lowest level logged: WARNING, INFO with ``-v``, DEBUG with ``-vv``."""
    return logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG


def setup_logging(verbosity: int, fmt: str = "text") -> None:
    """Send log records to stderr as ``fmt`` lines; replace an earlier setup's handler."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_for(verbosity))


def restore_logging(level: int) -> None:
    """Remove the command line's handler and put the root level back."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.setLevel(level)
