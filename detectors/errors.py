"""Exceptions raised by the detection core."""
from __future__ import annotations


class StateFormatError(ValueError):
    """Serialized detector state is corrupt, hostile, of an unknown version or made for another spec."""


class ProfileFormatError(ValueError):
    """A reference profile dictionary is malformed or does not match the model spec."""
