"""Hypothesis strategies for hostile JSON: what a producer who wants to break a parser sends.

Leaves include lone surrogates, integers past 64 bits, NaN and ±Infinity, empty and long strings;
documents are serialized by Python's ``json`` (NaN literals, ``\\ud800`` escapes), by orjson,
or as CESU-style bytes holding raw surrogates (invalid UTF-8). ``mutated`` takes a valid
document and breaks one position of it: a value replaced by a hostile one, a key removed or
renamed, a subtree buried in deep nesting or a huge array.
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import strategies as st

LONE_SURROGATE = st.characters(categories=["Cs"])
BIG_INTS = st.one_of(
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**30)]),
    st.integers(min_value=2**64, max_value=2**400), st.integers(min_value=-(2**400), max_value=-(2**63) - 1))


def _with_surrogate(parts: tuple[str, str, str]) -> str:
    return parts[0] + parts[1] + parts[2]


SURROGATE_TEXT = st.tuples(st.text(max_size=4), LONE_SURROGATE, st.text(max_size=4)).map(_with_surrogate)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=12), SURROGATE_TEXT, st.just(""), st.sampled_from(["NaN", "Infinity", "stable", "canary", "\x00"]),
    st.integers(min_value=1, max_value=3000).map(lambda n: "x" * n))
HOSTILE_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]))
HOSTILE_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), BIG_INTS,
                            HOSTILE_FLOATS, HOSTILE_TEXT)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4)


HOSTILE_VALUES = st.recursive(HOSTILE_SCALARS, _containers, max_leaves=12)


def deep(depth: int, kind: str = "[") -> Any:
    """A value nested ``depth`` levels deep (lists or single-key objects)."""
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "[" else {"a": value}
    return value


STRUCTURAL = st.one_of(
    st.integers(min_value=1, max_value=3000).flatmap(lambda d: st.sampled_from([deep(d, "["), deep(d, "{")])),
    st.integers(min_value=0, max_value=40_000).map(lambda n: [0] * n),
    st.integers(min_value=0, max_value=2_000).map(lambda n: {f"k{i}": i for i in range(n)}))
MUTANTS = st.one_of(HOSTILE_VALUES, STRUCTURAL)
SMALL_STRUCTURAL = st.one_of(  # for parsers written in Python (YAML), where 40,000 items take seconds
    st.integers(min_value=1, max_value=200).flatmap(lambda d: st.sampled_from([deep(d, "["), deep(d, "{")])),
    st.integers(min_value=0, max_value=300).map(lambda n: [0] * n))
SMALL_MUTANTS = st.one_of(HOSTILE_VALUES, SMALL_STRUCTURAL)
SERIALIZERS = ("json_ascii", "json_raw", "orjson", "json_compact")


def serialize(doc: Any, style: str) -> bytes:
    """Bytes of ``doc`` as a given writer would produce them (never raises for JSON-like input)."""
    if style == "orjson":
        try:
            return orjson.dumps(doc)
        except (TypeError, orjson.JSONEncodeError):
            style = "json_ascii"
    try:
        if style == "json_raw":  # raw surrogates survive as CESU-8 bytes: invalid UTF-8
            return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if style == "json_compact":
            return json.dumps(doc, separators=(",", ":")).encode()
        return json.dumps(doc).encode()
    except (RecursionError, ValueError):  # too deep for json, or an int too long for str()
        return b"[" * 5000 + b"]" * 5000


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) >= 12:  # mutants nest thousands deep: positions below this one are not worth a recursion
        return out
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _replace(doc: Any, path: tuple, op: str, value: Any) -> Any:
    if not path:
        return value if op == "set" else doc
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        out = dict(doc)
        if not rest and op == "delete":
            out.pop(head, None)
        elif not rest and op == "rename":
            out[value if isinstance(value, str) else str(value)] = out.pop(head)
        else:
            out[head] = _replace(doc[head], rest, op, value)
        return out
    out = list(doc)
    if not rest and op == "delete":
        del out[head]
    else:
        out[head] = _replace(doc[head], rest, op, value) if not (op == "rename" and not rest) else value
    return out


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy, mutations: int = 3,
            values: st.SearchStrategy = MUTANTS) -> Any:
    """A valid document from ``documents`` with one to ``mutations`` positions broken (by ``values``)."""
    doc = draw(documents)
    for _ in range(draw(st.integers(min_value=1, max_value=mutations))):
        paths = _paths(doc)
        first = 0 if len(paths) == 1 or draw(st.integers(0, 9)) == 0 else 1  # the root itself: now and then
        path = paths[draw(st.integers(min_value=first, max_value=len(paths) - 1))]
        op = draw(st.sampled_from(["set", "set", "set", "delete", "rename"]))
        value = draw(HOSTILE_TEXT if op == "rename" else values)
        doc = _replace(doc, path, op, value)
    return doc


@st.composite
def hostile_bytes(draw: st.DrawFn, documents: st.SearchStrategy) -> bytes | None:
    """Raw message bytes: arbitrary, a tombstone, or a (mutated) document serialized by some writer."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "valid", "binary", "tombstone", "truncated"]))
    if kind == "tombstone":
        return None
    if kind == "binary":
        return draw(st.binary(max_size=300))
    doc = draw(documents if kind == "valid" else mutated(documents))
    raw = serialize(doc, draw(st.sampled_from(SERIALIZERS)))
    if kind == "truncated":
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw)))]
    return raw


def finite_or_nan_equal(a: Any, b: Any) -> bool:
    """Equality that counts NaN equal to NaN (for round-trip checks)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(finite_or_nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(finite_or_nan_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
