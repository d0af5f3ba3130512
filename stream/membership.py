"""The consumer-group membership a batch was fetched under, read from librdkafka's group metadata.

A batch's input offsets are committed inside its Kafka transaction together with the group
metadata (KIP-447). The group coordinator refuses that commit when the metadata names a member
that left or a generation the group has moved past, so a worker whose partitions went to another
worker cannot commit them too. Metadata with no member and generation -1, which librdkafka hands
out while a consumer is between memberships (after a lost session, during a rejoin), is not
checked at all: a commit made with it is accepted whoever owns the partitions. The worker
therefore commits a batch only with metadata taken when it was fetched, and only if that metadata
names a member.

``Consumer.consumer_group_metadata()`` returns librdkafka's serialised form
(``rd_kafka_consumer_group_metadata_write``): the magic ``CGMDv2:``, the generation as a
native-endian int32, then the group id and the member id, each NUL-terminated, and a flag byte
(followed by the group instance id when the flag is 0).

>>> GroupMembership.from_metadata(b"CGMDv2:" + (3).to_bytes(4, "little") + b"g\\x00rdkafka-1\\x00\\x01")
GroupMembership(generation=3, member_id='rdkafka-1')
>>> GroupMembership.from_metadata(b"CGMDv2:\\xff\\xff\\xff\\xffg\\x00\\x00\\x01").active
False
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

MAGIC = b"CGMDv2:"
_GENERATION = struct.Struct("<i" if sys.byteorder == "little" else ">i")


@dataclass(frozen=True)
class GroupMembership:
    """A consumer's place in its group: the generation and the member id it was given."""

    generation: int
    member_id: str

    @property
    def active(self) -> bool:
        """Whether an offset commit made with this membership is fenced by the coordinator."""
        return self.generation >= 0 and bool(self.member_id)

    @classmethod
    def from_metadata(cls, blob: bytes) -> GroupMembership | None:
        """Parse ``Consumer.consumer_group_metadata()``; ``None`` when the format is not one this
        module knows (a librdkafka that changed it), so that the caller can say so."""
        if not isinstance(blob, bytes) or not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _GENERATION.size:
            return None
        (generation,) = _GENERATION.unpack_from(blob, len(MAGIC))
        fields = blob[len(MAGIC) + _GENERATION.size:].split(b"\x00", 2)
        if len(fields) < 3:
            return None
        try:
            member_id = fields[1].decode()
        except UnicodeDecodeError:
            return None
        return cls(generation, member_id)
