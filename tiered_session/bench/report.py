"""Render benchmark results: terminal table, Markdown, JSON and a PNG chart.

Example:
    >>> fmt_num(1234.5), fmt_num(None), fmt_ratio(1.234)
    ('1,234', '-', '1.23x')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiered_session import MissingDependencyError

__all__ = ["chart", "fmt_num", "fmt_ratio", "markdown", "terminal", "write_outputs"]

_NOTE = (
    "p50/p99: latency per call (per turn for chat turns; flush lag for `flushlag`). "
    "`x redis` / `x asyncpg`: time per operation relative to the raw redis-py / asyncpg "
    "floor measured in the same repeat (median of per-repeat ratios of p50; of ops/s for "
    "throughput rows); lower is better. A row marked WRONG returned wrong data and is not ranked."
)


def fmt_num(x: float | None, digits: int = 0) -> str:
    """Format a number with thousands separators, or ``-``."""
    return "-" if x is None else f"{x:,.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    """Format a ratio as ``1.23x``, or ``-``."""
    return "-" if x is None else f"{x:.2f}x"


def _rows(w: dict[str, Any]) -> list[list[str]]:
    cells = w["cells"]
    lag = w["kind"] == "lag"
    ranked = sorted(
        (n for n in cells if cells[n]["ok"]),
        key=lambda n: (
            cells[n]["x_redis"] if cells[n]["x_redis"] is not None else float("inf"),
            -(cells[n]["ops_s"] or 0),
        ),
    )
    wrong = [n for n in cells if not cells[n]["ok"]]
    rows = []
    for n in ranked:
        c = cells[n]
        p50, p99 = c["p50_us"], c["p99_us"]
        if lag:
            p50, p99 = (p50 or 0) / 1000, (p99 or 0) / 1000
        rows.append(
            [
                n,
                fmt_num(p50, 1) + (" ms" if lag else ""),
                fmt_num(p99, 1) + (" ms" if lag else ""),
                fmt_num(c["ops_s"]),
                fmt_ratio(c["x_redis"]),
                fmt_ratio(c["x_asyncpg"]),
                "ok",
            ]
        )
    for n in wrong:
        rows.append([n, "-", "-", "-", "-", "-", "WRONG: " + cells[n]["error"][:80]])
    return rows


_HEAD = ["backend", "p50 us", "p99 us", "ops/s", "x redis", "x asyncpg", "check"]


def _unit_head(w: dict[str, Any]) -> list[str]:
    head = list(_HEAD)
    head[3] = f"{w['unit']}s/s"
    if w["kind"] == "lag":
        head[1], head[2] = "lag p50", "lag p99"
    return head


def _target_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in doc["targets"]:
        v = t["value"]
        value = "-" if v is None else (f"{v:,.0f}" if t["limit"] >= 100 else f"{v:.2f}")
        state = {True: "reached", False: "MISSED", None: "not measured"}[t["reached"]]
        rows.append([t["name"], value, f"{t['cmp']} {t['limit']:,}", state])
    return rows


def terminal(doc: dict[str, Any]) -> str:
    """Return plain-text tables for the terminal."""
    out = []
    for name, w in doc["workloads"].items():
        out.append(f"\n{name}: {w['title']}")
        out.append(_table(_unit_head(w), _rows(w)))
    out.append("\ntargets")
    out.append(_table(["target", "measured", "goal", ""], _target_rows(doc)))
    return "\n".join(out)


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(head))]
    lines.append("  ".join("-" * x for x in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.rjust(widths[i]) if 0 < i < 6 else c.ljust(widths[i]) for i, c in enumerate(r)
            )
        )
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """Return the Markdown report (the README's table)."""
    m = doc["meta"]
    out = [
        f"Run {m['date']} on {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"{m['repeats']} repeats{' (quick)' if m['quick'] else ''}, {m['seconds']:.0f} s: "
        f"`{m['command']}`",
        "",
        "**Targets**",
        "",
        _md_table(["target", "measured", "goal", ""], _target_rows(doc)),
    ]
    for name, w in doc["workloads"].items():
        out += ["", f"**{name}**: {w['title']}", "", _md_table(_unit_head(w), _rows(w))]
    out += ["", _NOTE]
    if m["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in m["skipped"].items())]
    return "\n".join(out) + "\n"


def chart(doc: dict[str, Any], path: Path) -> None:
    """Draw ratios to the Redis floor per workload (log scale) into a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependencyError("matplotlib", "bench") from e
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    wls = [
        (n, w)
        for n, w in doc["workloads"].items()
        if any(c["x_redis"] is not None for c in w["cells"].values())
    ]
    cols = 3
    rows = (len(wls) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, w) in zip(axes.flat, wls, strict=False):
        cells = w["cells"]
        names = [n for n in cells if cells[n]["ok"] and cells[n]["x_redis"] is not None]
        names.sort(key=lambda n: cells[n]["x_redis"])
        vals = [cells[n]["x_redis"] for n in names]
        colors = [
            "#2b8a3e" if n.startswith("tiered") else "#868e96" if "floor" in n else "#1c7ed6"
            for n in names
        ]
        ax.barh(names, vals, color=colors)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_title(f"{name}: {w['title']}", fontsize=9)
        ax.tick_params(labelsize=7)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.2f}x", va="center", fontsize=6)
    for ax in list(axes.flat)[len(wls) :]:
        ax.axis("off")
    m = doc["meta"]
    fig.suptitle(
        f"time per operation relative to raw redis-py (lower is better) - {m['date']}, "
        f"{m['cores']} cores {m['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out_dir: Path, *, png: bool = True) -> list[Path]:
    """Write results.json, results.md and (optionally) results.png; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "results.md"]
    paths[0].write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    paths[1].write_text(markdown(doc))
    if png:
        chart(doc, out_dir / "results.png")
        paths.append(out_dir / "results.png")
    return paths
