"""The package's public names: each resolves to its module's object on first use."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import detectors


def test_every_public_name_resolves_to_its_module_object() -> None:
    assert detectors.__all__
    for name in detectors.__all__:
        module = importlib.import_module(f"detectors.{detectors._EXPORTS[name]}")
        assert getattr(detectors, name) is getattr(module, name)
        assert name in dir(detectors)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        detectors.Nothing  # noqa: B018


def test_star_import_and_from_import_work_in_a_fresh_interpreter() -> None:
    code = ("from detectors import *; from detectors import Engine, SIGNALS; import sys; "
            "print(MonitorSpec.__name__, Engine.__name__, 'detectors.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.split() == ["MonitorSpec", "Engine", "True"]
