"""The documentation: docstring examples run, and the docs site covers what it should.

``mkdocs build --strict`` (in ``.ci/run``) checks every link, anchor and docstring of the
site; these tests check what it cannot: that the navigation and the files under ``docs/``
agree, that the README's links land in the site, and that the API reference and the option
tables cover the public surface.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown.extensions.toc import slugify

import tiered_session
from tests import structure

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()

MODULES = sorted(m for m in structure.load() if not m.endswith("__main__"))  # runs the CLI


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def nav_pages() -> list[str]:
    def walk(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [page for item in node for page in walk(item)]
        assert isinstance(node, dict), node
        return [page for value in node.values() for page in walk(value)]

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def anchors(page: Path) -> set[str]:
    """The heading ids mkdocs gives a page (its toc extension's slugs)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, re.M)
    return {slugify(re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", h), "-") for h in headings}


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    pages = nav_pages()
    assert len(pages) == len(set(pages)), "a page is in the nav twice"
    for page in pages:
        assert (DOCS / page).is_file(), f"nav entry {page} has no file under docs/"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == set(pages), f"pages outside the nav: {sorted(on_disk - set(pages))}"


def test_the_site_has_the_pages_the_readme_leaves_out() -> None:
    pages = set(nav_pages())
    assert {
        "index.md",
        "getting-started.md",
        "sdk.md",
        "configuration.md",
        "guarantees.md",
        "operations.md",
        "cli.md",
        "metrics.md",
        "architecture.md",
        "storage.md",
        "performance.md",
        "benchmarks.md",
        "testing.md",
        "api.md",
        "changelog.md",
    } <= pages


def test_readme_links_resolve() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    into_docs = set()
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # an absolute URL
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to {link}, which does not exist"
        if path.startswith("docs/"):
            page = path.removeprefix("docs/")
            assert page in nav_pages(), f"README links to {link}, which is not in the nav"
            into_docs.add(page)
            if anchor:
                assert anchor in anchors(target), f"README links to {link}: no such heading"
    # the README keeps what a newcomer needs and points to the rest
    assert {
        "guarantees.md",
        "operations.md",
        "cli.md",
        "storage.md",
        "benchmarks.md",
        "architecture.md",
        "api.md",
        "testing.md",
    } <= into_docs


def test_api_reference_covers_every_public_name() -> None:
    api = (DOCS / "api.md").read_text()
    documented = re.findall(r"^::: tiered_session\.(\w+)$", api, re.M)
    assert sorted(documented) == sorted(tiered_session.__all__)


def test_option_tables_cover_every_store_config_field() -> None:
    fields = {f.name for f in dataclasses.fields(tiered_session.StoreConfig)}
    for name, text in (
        ("README.md", README),
        ("docs/configuration.md", (DOCS / "configuration.md").read_text()),
    ):
        rows = re.findall(r"^\| (`.+?`) \|", text, re.M)
        listed = {n for row in rows for n in re.findall(r"`(\w+)`", row)}
        assert fields <= listed, f"{name} lacks options {sorted(fields - listed)}"


def test_stats_table_covers_every_store_stats_field() -> None:
    fields = set(typing.get_type_hints(tiered_session.StoreStats))
    rows = re.findall(r"^\| (`.+?`) \|", (DOCS / "operations.md").read_text(), re.M)
    listed = {n for row in rows for n in re.findall(r"`(\w+)`", row)}
    assert fields <= listed, f"docs/operations.md lacks stats fields {sorted(fields - listed)}"


def test_snippets_include_repository_files_that_exist() -> None:
    included = {
        (page.name, m)
        for page in DOCS.rglob("*.md")
        for m in re.findall(r'^--8<-- "([^"]+)"$', page.read_text(), re.M)
    }
    for _, path in included:
        assert (ROOT / path).is_file(), path
    # the checked-in numbers, the compose file and the changelog appear as they are
    assert ("benchmarks.md", "benchmarks/results/results.md") in included
    assert ("getting-started.md", "docker-compose.yml") in included
    assert ("changelog.md", "CHANGELOG.md") in included


def test_benchmarks_page_shows_the_checked_in_chart() -> None:
    page = (DOCS / "benchmarks.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert images, "the benchmarks page has no chart"
    for image in images:
        assert (DOCS / image).resolve() == (ROOT / "benchmarks/results/results.png").resolve()
