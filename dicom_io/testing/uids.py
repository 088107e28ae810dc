"""Seeded UIDs for generated test data.

A generator that drew UIDs from the clock or ``uuid4`` would make two runs of the same test differ
byte for byte; these UIDs are a name-based (version 5) UUID of the seed and of everything else that
shapes the object, written as a ``2.25`` UID (PS3.5 B.2). So the same call gives the same UIDs and
two different calls (other orientation, other modality) never share one by accident.

``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` would not do: with no prefix it ignores
the entropy sources and returns a random UUID.
"""

from __future__ import annotations

import uuid

from pydicom.uid import UID

__all__ = ["seeded_uid"]

# Keeps our names apart from anyone else who derives UUIDs from small integers.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "mip-gateway.dicom_io.testing")


def seeded_uid(seed: int, *parts: object) -> UID:
    """A ``2.25.<int>`` UID that depends only on ``seed`` and the ``str()`` of each part."""
    name = "\x1f".join([str(seed), *(str(part) for part in parts)])
    return UID(f"2.25.{uuid.uuid5(_NAMESPACE, name).int}")
