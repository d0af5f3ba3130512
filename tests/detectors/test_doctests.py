"""The usage examples in the module and class docstrings run."""
import doctest
import importlib
import pkgutil

import pytest

import detectors

MODULES = sorted(m.name for m in pkgutil.iter_modules(detectors.__path__, "detectors."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_examples_exist():
    finder = doctest.DocTestFinder()
    with_examples = {n for n in MODULES if any(t.examples for t in finder.find(importlib.import_module(n)))}
    assert {"detectors.engine", "detectors.alerts", "detectors.sequential", "detectors.sketches",
            "detectors.profile", "detectors.calibration", "detectors.state", "detectors.columns"} <= with_examples
