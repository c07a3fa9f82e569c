"""The command line without servers: options, environment, usage errors, exit codes.

Commands run in-process through ``tiered_session.cli.main`` (the console
script's function), which returns the exit code; a few run as
``python -m tiered_session`` to check the entry point itself.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tiered_session import __version__
from tiered_session.cli import main
from tiered_session.cli.common import ExitCode, format_duration, parse_duration

ENV = [
    "TIERED_SESSION_REDIS_URL",
    "TIERED_SESSION_SQL_URL",
    "TIERED_SESSION_KEY_PREFIX",
    "TIERED_SESSION_SESSIONS_TABLE",
    "TIERED_SESSION_MESSAGES_TABLE",
    "TIERED_SESSION_SHARDS",
    "TIERED_SESSION_METRICS_PORT",
    "TIERED_SESSION_LOG_FORMAT",
]
#: servers nothing listens on: commands that must fail before connecting get these
NOWHERE = ["--redis-url", "redis://127.0.0.1:1/0", "--sql-url", "sqlite+aiosqlite:///nowhere.db"]

#: every command that works on existing data, with the arguments it needs besides servers
DATA_COMMANDS = [
    ["stats"],
    ["dead-letters", "list"],
    ["dead-letters", "replay", "--all"],
    ["sessions", "list"],
    ["sessions", "show", "u1"],
    ["sessions", "stats", "u1"],
    ["sessions", "delete", "u1"],
    ["sessions", "cleanup", "--older-than", "30d"],
    ["sessions", "export", "out.jsonl"],
    ["sessions", "import", "__FILE__"],
    ["import-sqlite", "__FILE__"],
    ["import-sdk", "--source-url", "sqlite+aiosqlite:///x.db"],
    ["flush"],
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tiered-session: error: "), err
    assert "Traceback" not in err
    return lines[0]


def an_sdk_file(path: Path) -> Path:
    sqlite3.connect(path).close()
    return path


# ---------------------------------------------------------------------- basics
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, _ = run(capsys, flag)
    assert code == ExitCode.OK == 0
    assert out.startswith(f"tiered-session {__version__} (Python ")


def test_entry_point_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tiered_session", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith(f"tiered-session {__version__}")


def test_help_lists_every_command_and_each_command_has_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    commands = ["bench", "dead-letters", "demo", "flush", "import-sdk", "import-sqlite"]
    commands += ["migrate", "schema", "sessions", "stats"]
    listing = out.split("Commands:")[1]
    assert "..." not in listing  # the short descriptions fit
    for name in commands:
        assert f"  {name} " in listing
        code, text, _ = run(capsys, *name.split(), "--help")
        assert code == 0 and "Usage: tiered-session " + name in text


def test_help_shows_every_connection_option_with_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "sessions", "list", "-h")
    assert code == 0
    for name in ENV[:6]:
        assert name in out
    assert "(required)" in out and "fakeredis" not in out
    assert "[required]" not in out  # satisfied by the environment too
    _, demo, _ = run(capsys, "demo", "--help")
    assert "in-process Redis" in demo and "(required)" not in demo
    _, flush, _ = run(capsys, "flush", "--help")
    assert "TIERED_SESSION_METRICS_PORT" in flush and "TIERED_SESSION_LOG_FORMAT" in flush


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == ExitCode.USAGE == 2 and "Commands:" in err


# ---------------------------------------------------------------------- servers are required
@pytest.mark.parametrize("args", DATA_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_data_commands_refuse_to_run_without_servers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    args = [str(an_sdk_file(tmp_path / "f.db")) if a == "__FILE__" else a for a in args]
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "needs a Redis and a SQL database" in line
    assert "--redis-url (or TIERED_SESSION_REDIS_URL)" in line
    assert "--sql-url (or TIERED_SESSION_SQL_URL)" in line


def test_the_error_names_only_what_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERED_SESSION_REDIS_URL", "redis://127.0.0.1:1/0")
    line = one_error_line(run(capsys, "stats")[2])
    assert "needs a SQL database: set --sql-url (or TIERED_SESSION_SQL_URL)" in line
    assert "redis-url" not in line


def test_an_empty_variable_counts_as_unset(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERED_SESSION_REDIS_URL", "")
    monkeypatch.setenv("TIERED_SESSION_SQL_URL", "")
    code, _, err = run(capsys, "sessions", "list")
    assert code == 2 and "needs a Redis and a SQL database" in err


@pytest.mark.parametrize("command", ["schema", "migrate"])
def test_schema_commands_need_only_sql(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = run(capsys, command)
    assert code == 2
    line = one_error_line(err)
    assert "needs a SQL database: set --sql-url (or TIERED_SESSION_SQL_URL)" in line
    code, _, err = run(capsys, command, "--redis-url", "redis://x")
    assert code == 2 and "no such option" in err.lower()


def test_demo_wants_both_servers_or_neither(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "demo", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 2
    assert "--sql-url (or TIERED_SESSION_SQL_URL) is missing" in one_error_line(err)


# ---------------------------------------------------------------------- usage errors
def test_the_same_bad_limit_is_worded_the_same_everywhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    messages = set()
    for cmd in (["sessions", "list"], ["sessions", "show", "u1"], ["dead-letters", "list"]):
        code, _, err = run(capsys, *cmd, "--limit", "0", *NOWHERE)
        assert code == 2
        line = one_error_line(err)
        messages.add(line.split(" (see ")[0])
        assert f"(see 'tiered-session {' '.join(cmd[:2])} --help')" in line
    assert messages == {
        "tiered-session: error: Invalid value for '--limit': 0 is not in the range x>=1."
    }


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--sessions", "-3"],
        ["demo", "--turns", "0"],
        ["demo", "--hot-items", "0"],
        ["demo", "--write-mode", "sideways"],
        ["sessions", "list", "--offset", "-1", *NOWHERE],
        ["sessions", "cleanup", "--older-than", "soon", *NOWHERE],
        ["sessions", "list", "--shards", "0", *NOWHERE],
        ["sessions", "lst", *NOWHERE],
        ["stats", "--no-such-option"],
        ["bench", "--backends", "redis-floor,nope"],
        ["bench", "--sql-url", "sqlite+aiosqlite://"],
        ["flush", "--own-shards", "1,x", *NOWHERE],
        ["flush", "--metrics-port", "70000", *NOWHERE],
        ["flush", "--log-format", "xml", *NOWHERE],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    one_error_line(err)


def test_a_bad_duration_says_how_to_write_one(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = run(capsys, "sessions", "cleanup", "--older-than", "soon", *NOWHERE)
    assert "invalid duration 'soon': use a number and a unit s, m, h, d or w" in err


def test_durations_read_and_print_alike() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert [format_duration(parse_duration(t)) for t in ("0s", "90s", "36h", "2w")] == [
        "0s",
        "1m30s",
        "1d12h",
        "14d",
    ]
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("10 minutes")


def test_dead_letter_references_are_checked_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "dead-letters", "replay", "3:abc", *NOWHERE)
    assert code == 2 and "is not a reference SHARD:ID" in one_error_line(err)
    code, _, err = run(capsys, "dead-letters", "replay", *NOWHERE)
    assert code == 2 and "give SHARD:ID references" in one_error_line(err)
    code, _, err = run(capsys, "dead-letters", "replay", "1:1-0", "--all", *NOWHERE)
    assert code == 2 and "not both" in one_error_line(err)


# ---------------------------------------------------------------------- options anywhere, env
def test_verbose_is_accepted_anywhere_and_shows_tracebacks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(sql: object) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr("tiered_session.cli.schema.ddl_statements", boom)
    base = ["schema", "--print", "--sql-url", "sqlite+aiosqlite://"]
    code, _, err = run(capsys, *base)
    assert code == 2
    line = one_error_line(err)
    assert line.endswith("RuntimeError: boom (run with -v for the traceback)")
    for args in (["-v", *base], [*base, "-v"], ["-v", "schema", "-v", *base[1:]]):
        code, _, err = run(capsys, *args)
        assert code == 2, args
        assert "Traceback (most recent call last)" in err, args
        assert err.strip().splitlines()[-1] == "tiered-session: error: RuntimeError: boom"
    assert not any(h.get_name() == "tiered-session-cli" for h in logging.getLogger().handlers)


def test_connection_options_come_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERED_SESSION_SQL_URL", "sqlite+aiosqlite://")
    monkeypatch.setenv("TIERED_SESSION_SESSIONS_TABLE", "env_s")
    monkeypatch.setenv("TIERED_SESSION_MESSAGES_TABLE", "env_m")
    code, out, _ = run(capsys, "schema", "--print")
    assert code == 0
    assert "CREATE TABLE env_s (" in out and "CREATE TABLE env_m (" in out
    # the command line wins over the environment
    code, out, _ = run(capsys, "schema", "--print", "--messages-table", "cli_m")
    assert code == 0 and "CREATE TABLE cli_m (" in out and "env_m" not in out
    monkeypatch.setenv("TIERED_SESSION_SESSIONS_TABLE", "bad-name")
    code, _, err = run(capsys, "schema", "--print")
    assert code == 2 and "'bad-name' is not a valid table name" in one_error_line(err)
    monkeypatch.setenv("TIERED_SESSION_SHARDS", "0")
    code, _, err = run(capsys, "sessions", "list", *NOWHERE)
    assert code == 2 and "'--shards'" in one_error_line(err)


# ---------------------------------------------------------------------- schema on SQLite
def test_schema_print_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema", "--print", "--json", "--sql-url", "sqlite+aiosqlite://")
    assert code == 0
    doc = json.loads(out)
    assert doc["dialect"] == "sqlite"
    assert [s.split(" (")[0] for s in doc["statements"][:2]] == [
        "CREATE TABLE agent_sessions",
        "CREATE TABLE agent_messages",
    ]
    assert all(s.endswith(";") for s in doc["statements"])


def test_schema_reports_the_indexes_it_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ["--sql-url", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"]
    code, out, _ = run(capsys, "schema", *url, "--json")
    report = json.loads(out)
    assert code == 0 and report["created_tables"] == ["agent_sessions", "agent_messages"]
    assert "uq_agent_messages_session_seq" in report["created_indexes"]
    code, out, _ = run(capsys, "schema", *url)
    assert code == 0 and out.startswith("created tables none, indexes none at sqlite")
    code, out, _ = run(capsys, "migrate", *url)
    assert code == 0 and "is up to date; nothing to do" in out
    code, out, _ = run(capsys, "migrate", *url, "--json")
    assert code == 0 and json.loads(out)["before"]["seq_column"] is True


def test_migrate_creating_tables_lists_their_indexes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = ["--sql-url", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"]
    code, out, _ = run(capsys, "migrate", *url)
    assert code == 0 and "created indexes none" not in out
    assert "uq_agent_messages_session_seq" in out


# ---------------------------------------------------------------------- input files
def test_import_sqlite_of_a_file_that_is_not_sqlite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("not a database\n" * 100)
    code, out, err = run(capsys, "import-sqlite", str(bad), *NOWHERE)
    assert code == 2 and out == ""
    assert "is not a SQLite database" in one_error_line(err)
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = run(capsys, "import-sqlite", str(empty), *NOWHERE)
    assert code == 2 and "is an empty file" in one_error_line(err)
    code, _, err = run(capsys, "import-sqlite", str(tmp_path / "missing.db"), *NOWHERE)
    assert code == 2 and "does not exist" in one_error_line(err)
    code, _, err = run(capsys, "sessions", "import", str(tmp_path / "missing.jsonl"), *NOWHERE)
    assert code == 2 and "does not exist" in one_error_line(err)


def test_an_unreachable_server_is_one_line_and_exit_2() -> None:
    servers = ["--redis-url", "redis://127.0.0.1:1/0"]
    servers += ["--sql-url", "postgresql+asyncpg://postgres@127.0.0.1:1/none"]
    done = subprocess.run(
        [sys.executable, "-m", "tiered_session", "stats", *servers],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr  # (warnings logged on the way may come first)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tiered-session: error: Redis unreachable") and "127.0.0.1:1" in last


# ---------------------------------------------------------------------- logs and progress
def test_json_log_lines() -> None:
    from tiered_session.cli.logs import JsonFormatter

    log = logging.getLogger("tiered_session.flusher")
    rec = log.makeRecord(
        log.name, logging.WARNING, __file__, 1, "lost %s\nagain", ("shard 3",), None,
        extra={"shards": [3], "token": "f1", "when": timedelta(seconds=2)},
    )  # fmt: skip
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert list(doc)[:4] == ["time", "level", "logger", "message"]
    assert doc["level"] == "WARNING" and doc["logger"] == "tiered_session.flusher"
    assert doc["message"] == "lost shard 3\nagain"
    assert doc["shards"] == [3] and doc["token"] == "f1" and doc["when"] == "0:00:02"
    assert doc["time"].endswith("Z") and "args" not in doc and "msg" not in doc
    try:
        raise ValueError("bad")
    except ValueError:
        rec = log.makeRecord(log.name, logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    assert "ValueError: bad" in json.loads(JsonFormatter().format(rec))["error"]


def test_progress_bar_is_silent_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tiered_session.cli.output import Bar

    with Bar("import", unit="bytes", in_bytes=True) as bar:
        assert not bar.enabled
        bar.total = 10
        bar.advance(4)
        bar.describe("still importing")
        bar.advance(6)
    assert (bar.total, bar.done, bar.label) == (10, 10, "still importing")
    assert capsys.readouterr() == ("", "")
