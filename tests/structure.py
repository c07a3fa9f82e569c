"""Measure the package's structure: module and class sizes, private reaches, imports.

Used by ``tests/test_structure.py``; run it directly for a report:
``python -m tests.structure``. Every import counts, lazy and ``TYPE_CHECKING``
ones included.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tiered_session"
NAME = "tiered_session"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: set[str] = field(default_factory=set)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load() -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = module_name(path)
        mods[name] = Module(name, path, ast.parse(text), len(text.splitlines()))
    for mod in mods.values():
        mod.imports = _imports(mod, mods)
    return mods


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.name.split(".")
    if mod.path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: Module, mods: dict[str, Module]) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(NAME):
                    out.add(_nearest(alias.name, mods))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node)
            if not target.startswith(NAME):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in mods else _nearest(target, mods))
    out.discard(mod.name)
    return out


def _nearest(name: str, mods: dict[str, Module]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def class_lengths(mods: dict[str, Module]) -> list[tuple[int, str]]:
    out = []
    for mod in mods.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ClassDef):
                end = node.end_lineno or node.lineno
                out.append((end - node.lineno + 1, f"{mod.name}.{node.name}"))
    return sorted(out, reverse=True)


def mixins(mods: dict[str, Module]) -> list[str]:
    out = []
    for mod in mods.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ClassDef) and (
                node.name.endswith("Mixin")
                or any(isinstance(b, ast.Name) and b.id.endswith("Mixin") for b in node.bases)
            ):
                out.append(f"{mod.name}.{node.name}")
    return out


def _own_names(cls: ast.ClassDef) -> set[str]:
    """Names a class defines itself: methods, class attributes, ``self.x = ...`` targets."""
    names: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def private_reaches(mods: dict[str, Module]) -> list[str]:
    """Private members used where they are not one's own.

    ``x._name`` where ``x`` is not ``self``/``cls``; and ``self._name`` inside a
    class that never defines ``_name`` (a base class's private, e.g. of a
    dependency; a private of one of the package's own base classes is fine).
    Dunders are public protocol.
    """
    ours: set[str] = set()
    for mod in mods.values():
        for cls in ast.walk(mod.tree):
            if isinstance(cls, ast.ClassDef):
                ours |= _own_names(cls)
    out = []
    for mod in mods.values():
        for node in ast.walk(mod.tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
                continue
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if own and attr in ours:
                continue
            out.append(f"{mod.name}:{node.lineno} .{attr}")
    return out


def cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Every import cycle: the strongly connected components of more than one module."""
    return [c for c in _components(mods) if len(c) > 1]


def largest_cycle(mods: dict[str, Module]) -> list[str]:
    """The largest import cycle (empty when there is none)."""
    found = sorted(cycles(mods), key=len, reverse=True)
    return found[0] if found else []


def _components(mods: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of the import graph (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in mods[v].imports:
            if w not in mods:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    for v in mods:
        if v not in index:
            visit(v)
    return comps


def report() -> None:
    mods = load()
    big = sorted(((m.lines, m.name) for m in mods.values() if m.lines > 400), reverse=True)
    print("modules over 400 lines:", big)
    print("longest classes:", class_lengths(mods)[:5])
    reaches = private_reaches(mods)
    print("private reaches:", len(reaches))
    for r in reaches:
        print("   ", r)
    print("mixins:", mixins(mods))
    print("import cycles:", cycles(mods))


if __name__ == "__main__":
    report()
