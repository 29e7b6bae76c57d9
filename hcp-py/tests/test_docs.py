"""The examples in the package's docstrings run as doctests."""

from __future__ import annotations

import doctest
import types

import pytest

import hcp
from hcp import _aio, _api, errors

MODULES = [hcp, _api, _aio, errors]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module: types.ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0


def test_the_examples_are_there() -> None:
    attempted = sum(doctest.testmod(m, optionflags=doctest.ELLIPSIS, report=False).attempted for m in (hcp, _api))
    assert attempted >= 20
