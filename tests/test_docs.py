"""Every docstring example in the package runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests import structure

MODULES = sorted(m for m in structure.load() if not m.endswith("__main__"))  # runs the CLI


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
