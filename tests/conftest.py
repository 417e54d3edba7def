"""Shared fixtures, and the two markers of the suite.

- `unit`: runs in the test process with no process group, no subprocess and no training run
  (`pytest -m unit`, well under a minute).
- `ranks`: forks ranks with `tests/ranks.py:run_ranks`, starts a subprocess, or trains.

The marker is set from what a test does: a test whose body, fixtures or the module's helper
functions it calls call `run_ranks(` or start a subprocess is `ranks`, every other test is
`unit`. Nothing has to be remembered when a test is added.
"""

import inspect

import pytest
from golden_run import write_data

HEAVY = ("run_ranks(", "subprocess.", "golden_numbers")
"""Calls that make a test a `ranks` test."""


def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _helpers_called(function) -> list:
    """The functions defined in `function`'s module that its source calls by name (one level;
    imported functions are not read)."""
    source = _source(function)
    module = inspect.getmodule(function)
    return [
        value
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and value.__module__ == module.__name__
        and value is not function
        and f"{name}(" in source
    ]


def _is_heavy(item) -> bool:
    sources = [_source(item.function)]
    sources += [_source(helper) for helper in _helpers_called(item.function)]
    for name in item.fixturenames:
        for definition in item._fixtureinfo.name2fixturedefs.get(name, ()):
            sources.append(_source(definition.func))
    return any(call in source for source in sources for call in HEAVY)


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.ranks if _is_heavy(item) else pytest.mark.unit)


@pytest.fixture(autouse=True)
def _in_an_empty_directory(tmp_path, monkeypatch):
    """Every test runs in its own empty working directory, so a run that keeps the preset's
    relative --save (runs/tiny_cpu/checkpoints) never writes into the checkout, where the
    user's default run lives."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def corpus_data(tmp_path_factory):
    """48 training and 16 held-out corpus documents as indexed datasets with the shipped
    tokenizer (the golden run's data): `DIR/train`, `DIR/valid`. One copy per test module, since
    runs cache difficulty scores beside it."""
    return write_data(tmp_path_factory.mktemp("corpus_data"))
