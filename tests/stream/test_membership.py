"""GroupMembership reads librdkafka's serialised group metadata, as a real consumer hands it out."""
from __future__ import annotations

import doctest
import sys

from confluent_kafka import Consumer
from hypothesis import given
from hypothesis import strategies as st

import stream.membership
from stream.membership import MAGIC, GroupMembership

_names = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)


def _blob(generation: int, group: str, member: str, instance: str | None) -> bytes:
    """The layout of ``rd_kafka_consumer_group_metadata_write``."""
    out = MAGIC + generation.to_bytes(4, sys.byteorder, signed=True) + group.encode() + b"\x00" + member.encode() + b"\x00"
    return out + (b"\x01" if instance is None else b"\x00" + instance.encode() + b"\x00")


@given(st.integers(-(2 ** 31), 2 ** 31 - 1), _names, _names, st.none() | _names)
def test_generation_and_member_read_back_whatever_the_names(generation, group, member, instance):
    got = GroupMembership.from_metadata(_blob(generation, group, member, instance))
    assert got == GroupMembership(generation, member)
    assert got.active == (generation >= 0 and member != "")


def test_a_consumer_that_never_joined_has_no_membership():
    """What librdkafka itself hands out before a join (and after a lost session): generation -1, no member."""
    consumer = Consumer({"group.id": "membership-test", "bootstrap.servers": "127.0.0.1:1"})
    try:
        got = GroupMembership.from_metadata(consumer.consumer_group_metadata())
    finally:
        consumer.close()
    assert got == GroupMembership(-1, "")
    assert not got.active


def test_other_formats_are_not_guessed_at():
    assert GroupMembership.from_metadata(b"CGMDv3:" + _blob(1, "g", "m", None)[len(MAGIC):]) is None
    assert GroupMembership.from_metadata(MAGIC + b"\x01\x00") is None  # cut inside the generation
    assert GroupMembership.from_metadata(MAGIC + b"\x01\x00\x00\x00g") is None  # no member field
    assert GroupMembership.from_metadata(MAGIC + b"\x01\x00\x00\x00g\x00\xff\xfe\x00\x01") is None
    assert GroupMembership.from_metadata("CGMDv2:") is None  # type: ignore[arg-type]


def test_doctests():
    assert doctest.testmod(stream.membership).failed == 0
