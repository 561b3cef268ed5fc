"""The docstring examples of the training-side modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["msekit.labels", "msekit.splits", "msekit.parsing", "msekit.train.config", "msekit.baseline",
           "msekit.metrics", "msekit.prompts"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
