"""RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes a rollback signature covers.

A signature must be checkable by a deployment controller in any language, so the signed bytes
follow a published standard rather than one library's output: object members sorted by the
UTF-16 code units of their names, no whitespace, strings escaped as ECMAScript's
``JSON.stringify`` does (only ``"``, ``\\``, and control characters), UTF-8, and numbers in
ECMAScript's shortest round-trip form (``4.50`` is ``4.5``, ``1E30`` is ``1e+30``, ``1.0`` is
``1``). JSON has no NaN or Infinity, so a non-finite number raises ``ValueError``, as does a
string that is not valid Unicode (a lone surrogate). JCS numbers are IEEE-754 doubles: an integer
beyond 2**53 in magnitude (a source position of any topic but the first) is written as the double
every JSON reader, and so every JCS library, makes of it; its lowest bits are not signed. Libraries implementing RFC 8785 exist for Go, Java, JavaScript, .NET
and Python.

>>> jcs({"b": [4.50, 1E30, 2e-3], "a": "\u20ac\\n", "c": None})
b'{"a":"\\xe2\\x82\\xac\\\\n","b":[4.5,1e+30,0.002],"c":null}'
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 64
MAX_SAFE_INTEGER = 2**53


def number(x: float) -> str:
    """ECMAScript ``Number.prototype.toString`` of a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(x):
        raise ValueError("non-finite number")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")  # shortest round-trip digits, as ECMAScript's
    whole, _, frac = mantissa.partition(".")
    raw = whole + frac
    digits = raw.lstrip("0")
    n = len(whole) + int(exp or 0) - (len(raw) - len(digits))  # value = 0.DIGITS x 10**n
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if e >= 0 else '-'}{abs(e)}"


def _string(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string is not valid Unicode (lone surrogate)") from None
    return json.dumps(s, ensure_ascii=False)  # the same escapes as JSON.stringify for valid strings


def _write(v: Any, out: list[str], depth: int, path: str) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} at {path}")
    if v is None:
        out.append("null")
    elif v is True or v is False:
        out.append("true" if v else "false")
    elif isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, numbers.Integral) and not isinstance(v, bool):
        i = int(v)
        if abs(i) <= MAX_SAFE_INTEGER:
            out.append(str(i))
        else:
            try:
                out.append(number(float(i)))
            except OverflowError:
                raise ValueError(f"integer beyond the range of a double at {path}") from None
    elif isinstance(v, numbers.Real):
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"non-finite number at {path}")
        out.append(number(f))
    elif isinstance(v, Mapping):
        if not all(isinstance(k, str) for k in v):
            raise ValueError(f"non-string member name at {path}")
        out.append("{")
        for i, k in enumerate(sorted(v, key=lambda name: name.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_string(k))
            out.append(":")
            _write(v[k], out, depth + 1, f"{path}.{k}")
        out.append("}")
    elif isinstance(v, (list, tuple)) or (hasattr(v, "tolist") and not isinstance(v, numbers.Number)):
        items = v.tolist() if hasattr(v, "tolist") else v
        out.append("[")
        for i, x in enumerate(items):
            if i:
                out.append(",")
            _write(x, out, depth + 1, f"{path}[{i}]")
        out.append("]")
    else:
        raise ValueError(f"{type(v).__name__} is not JSON at {path}")


def jcs(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``; ``ValueError`` names the first offending path."""
    out: list[str] = []
    _write(value, out, 0, "$")
    return "".join(out).encode("utf-8")
