"""The package's layout rules, checked: sizes, private reaches, mixins, cycles and layers.

Dependencies run one way (see the README's "Architecture"):
cli/bench -> store/session -> ops -> outbox -> hot, cold -> leaves.
Every import counts, lazy and ``TYPE_CHECKING`` ones included.
"""

from __future__ import annotations

import pytest

from tests import structure

MODS = structure.load()

#: the one module allowed to touch redis-py internals (see its docstring)
ADAPTER = "tiered_session.hot.wire"

LEAVES = {
    "tiered_session._errors",
    "tiered_session._config",
    "tiered_session._codec",
    "tiered_session._stats",
    "tiered_session._time",
    "tiered_session._progress",
    "tiered_session._workload",
}
LAYERS = {  # package (or module) -> layer; a module may import only layers <= its own
    "tiered_session.hot": 1,
    "tiered_session.cold": 1,
    "tiered_session.outbox": 2,
    "tiered_session.ops": 3,
    "tiered_session.store": 4,
    "tiered_session.session": 4,
    "tiered_session.advanced": 4,
    "tiered_session.metrics": 4,
    "tiered_session.cli": 5,
    "tiered_session.bench": 5,
    "tiered_session": 6,
    "tiered_session.__main__": 6,
}


def layer_of(name: str) -> tuple[int, str]:
    if name in LEAVES:
        return 0, "leaves"
    best = ""
    for prefix in LAYERS:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"module {name} belongs to no layer: add it to tests/test_structure.py"
    return LAYERS[best], best


def test_every_module_has_a_layer() -> None:
    for name in MODS:
        layer_of(name)


def test_dependencies_run_one_way() -> None:
    wrong = []
    for name, mod in MODS.items():
        mine, group = layer_of(name)
        for target in mod.imports:
            theirs, their_group = layer_of(target)
            if target == "tiered_session" and mine == 5:
                continue  # the tools use the public API, as a user would
            if theirs > mine or (mine == 1 and their_group != group and theirs == 1):
                wrong.append(f"{name} ({group}) imports {target} ({their_group})")
    assert not wrong, "wrong-way imports:\n" + "\n".join(wrong)


def test_hot_and_cold_never_import_each_other() -> None:
    for name, mod in MODS.items():
        for a, b in (("hot", "cold"), ("cold", "hot")):
            if name.startswith(f"tiered_session.{a}"):
                bad = [t for t in mod.imports if t.startswith(f"tiered_session.{b}")]
                assert not bad, f"{name} imports {bad}"


def test_no_module_over_400_lines() -> None:
    big = {m.name: m.lines for m in MODS.values() if m.lines > 400}
    assert not big, big


def test_no_class_over_300_lines() -> None:
    lengths = structure.class_lengths(MODS)
    assert lengths[0][0] <= 300, lengths[:3]


def test_no_mixins() -> None:
    assert structure.mixins(MODS) == []


def test_no_private_member_reached_on_another_object() -> None:
    reaches = [r for r in structure.private_reaches(MODS) if not r.startswith(ADAPTER + ":")]
    assert reaches == []


def test_the_adapter_is_the_only_place_with_dependency_internals() -> None:
    # Its reaches exist (so the exemption is real) and stay few.
    mine = [r for r in structure.private_reaches(MODS) if r.startswith(ADAPTER + ":")]
    assert 0 < len(mine) <= 12, mine


def test_the_only_import_cycle_is_session_and_store() -> None:
    found = structure.cycles(MODS)
    # the public objects: a store makes sessions, a session may make its store
    allowed = {"tiered_session.session", "tiered_session.store", "tiered_session.advanced"}
    assert all(set(c) <= allowed for c in found), found


@pytest.mark.parametrize("name", sorted(MODS))
def test_every_module_opens_with_a_docstring(name: str) -> None:
    import ast

    assert ast.get_docstring(MODS[name].tree), f"{name} has no module docstring"
