"""The ``Examples:`` blocks of the package's docstrings run, and give what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import radioactive


def _modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(radioactive.__path__, "radioactive.")]
    return sorted(name for name in names if not name.endswith("__main__"))


def _with_examples() -> list[str]:
    finder = doctest.DocTestFinder()

    def runs(test: doctest.DocTest) -> bool:  # illustrations marked +SKIP (they need a real suspect) do not
        return any(not example.options.get(doctest.SKIP) for example in test.examples)

    return [name for name in _modules() if any(runs(t) for t in finder.find(importlib.import_module(name)))]


def test_some_docstrings_have_examples():
    assert len(_with_examples()) >= 5


@pytest.mark.parametrize("name", _with_examples())
def test_docstring_examples_run(name: str):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                      verbose=False, report=True)
    assert tried > 0 and failures == 0
