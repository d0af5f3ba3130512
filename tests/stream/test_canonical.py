"""RFC 8785 canonical JSON: the published test vectors, member order, refusals, round trips."""
import doctest
import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream.canonical
from stream.canonical import jcs, number

# RFC 8785 appendix B: IEEE-754 bit patterns and their ECMAScript form
RFC_NUMBERS = {
    "0000000000000000": "0", "8000000000000000": "0", "0000000000000001": "5e-324", "8000000000000001": "-5e-324",
    "7fefffffffffffff": "1.7976931348623157e+308", "ffefffffffffffff": "-1.7976931348623157e+308",
    "4340000000000000": "9007199254740992", "c340000000000000": "-9007199254740992",
    "4430000000000000": "295147905179352830000", "44b52d02c7e14af5": "9.999999999999997e+22",
    "44b52d02c7e14af6": "1e+23", "44b52d02c7e14af7": "1.0000000000000001e+23",
    "444b1ae4d6e2ef4e": "999999999999999700000", "444b1ae4d6e2ef4f": "999999999999999900000",
    "444b1ae4d6e2ef50": "1e+21", "3eb0c6f7a0b5ed8c": "9.999999999999997e-7", "3eb0c6f7a0b5ed8d": "0.000001",
    "41b3de4355555553": "333333333.3333332", "41b3de4355555554": "333333333.33333325",
    "41b3de4355555555": "333333333.3333333", "41b3de4355555556": "333333333.3333334",
    "41b3de4355555557": "333333333.33333343", "becbf647612f3696": "-0.0000033333333333333333",
    "43143ff3c1cb0959": "1424953923781206.2",
}


@pytest.mark.parametrize("bits,expected", sorted(RFC_NUMBERS.items()))
def test_rfc8785_number_vectors(bits, expected):
    assert number(struct.unpack(">d", bytes.fromhex(bits))[0]) == expected


def test_rfc8785_sample_object():
    doc = {"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
           "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"/", "literals": [None, True, False]}
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert jcs(doc) == expected.encode("utf-8")


def test_members_sort_by_utf16_code_units():
    names = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = json.loads(jcs({n: i for i, n in enumerate(names)}))
    assert list(out) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_integers_and_integral_floats_share_a_form():
    assert jcs({"a": 100, "b": 100.0, "c": -0.0, "d": 2**53}) == b'{"a":100,"b":100,"c":0,"d":9007199254740992}'


def test_integers_beyond_2_53_take_the_form_of_the_double_json_readers_make_of_them():
    """RFC 8785 numbers are IEEE-754 doubles: any JCS library parses 2**53 + 1 to 2**53."""
    assert jcs({"n": 2**53 + 1, "m": -(2**53 + 1)}) == b'{"m":-9007199254740992,"n":9007199254740992}'
    assert jcs([2**56 + 5]) == jcs([float(2**56 + 5)]) == b"[72057594037927940]"


@pytest.mark.parametrize("value,where", [({"x": math.nan}, r"\$\.x"), ([1, math.inf], r"\$\[1\]"),
                                         ({"n": 10**400}, "range of a double"), ({"s": "\ud800"}, "lone surrogate"),
                                         ({1: "x"}, "non-string member"), ({"o": object()}, "not JSON")])
def test_refusals_name_the_problem(value, where):
    with pytest.raises(ValueError, match=where):
        jcs(value)


def test_nesting_is_bounded():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        jcs(deep)


@settings(max_examples=500)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_double_round_trips(x):
    text = number(x)
    assert float(text) == x
    assert json.loads(jcs([x]), parse_int=float) == [x]  # an integral double is written as an integer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=5).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)), children, max_size=3),
    max_leaves=12)


@settings(max_examples=300)
@given(json_values)
def test_canonical_form_is_json_and_a_fixed_point(value):
    raw = jcs(value)
    assert json.loads(raw, parse_int=float) == value
    assert jcs(json.loads(raw, parse_int=float)) == raw


def test_docstring_example():
    assert doctest.testmod(stream.canonical).failed == 0
