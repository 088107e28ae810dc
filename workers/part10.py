"""The Part 10 header of a received instance, written from a fixed template plus its UIDs.

Used wherever the gateway stores an instance as it arrived on the wire: the listener's C-STORE path
and a pull's C-GET.

pydicom's file meta writer costs more per instance than the rest of the receive path together
(docs: performance.md §5); the group is small and fixed, so it is built here byte by byte
(PS3.10 §7.1: 128-byte preamble, ``DICM``, group 0002 in Explicit VR Little Endian with its group
length). The data set that follows is the received bytes, unchanged.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from workers.dicom_identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "part10_header"]


_PREAMBLE = b"\0" * 128 + b"DICM"
_SHORT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_LONG = struct.Struct("<HH2s2xI")  # group, element, VR, reserved, 32-bit length


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    return _SHORT.pack(0x0002, element, vr, len(value)) + value


@lru_cache(maxsize=1024)
def _tail(transfer_syntax_uid: str, source_ae: str | None) -> bytes:
    """The elements after the instance's own UIDs: the same for a whole association."""
    parts = [
        _element(0x0010, b"UI", _padded(transfer_syntax_uid, b"\0")),
        _element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\0")),
        _element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
    ]
    if source_ae and source_ae.strip():
        parts.append(_element(0x0016, b"AE", _padded(source_ae.strip(), b" ")))
    return b"".join(parts)


_VERSION = _LONG.pack(0x0002, 0x0001, b"OB", 2) + b"\x00\x01"


def part10_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str | None = None
) -> bytes:
    """Preamble, ``DICM`` and the file meta group; the received data set follows it unchanged.

    ``source_ae`` (the calling AE title) goes into Source Application Entity Title (0002,0016).
    UIDs must be ASCII (they are checked against the UID grammar before this is called).
    """
    body = b"".join(
        (
            _VERSION,
            _element(0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _element(0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _tail(transfer_syntax_uid, source_ae),
        )
    )
    return _PREAMBLE + _SHORT.pack(0x0002, 0x0000, b"UL", 4) + struct.pack("<I", len(body)) + body
