"""The few header elements the listener needs, read straight from a received data set's bytes.

A C-STORE data set arrives encoded in the context's transfer syntax. The listener needs only the
UIDs that place the file and the elements completion looks at, all in groups 0008-0028 (and
whether an enhanced object carries PerFrameFunctionalGroupsSequence); everything past
(5200,9230) — pixel data above all — is never touched. Elements are walked at the top level;
sequences are skipped by their length, or item by item when their length is undefined.
Deflated data sets are inflated only as far as needed. The stored file keeps the bytes received.

Raises :class:`HeaderError` (a ``ValueError``) for a data set that cannot be walked that far.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from service.completion import ArrivalFacts
from workers.jobs import Route

__all__ = ["HeaderError", "HeaderIncompleteError", "InstanceHeader", "read_header"]

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
IMAGE_POSITION = 0x00200032
IMAGE_ORIENTATION = 0x00200037
IMAGES_IN_ACQUISITION = 0x00201002
NUMBER_OF_FRAMES = 0x00280008
PER_FRAME_GROUPS = 0x52009230
_WANTED = frozenset(
    {
        SOP_CLASS_UID,
        SOP_INSTANCE_UID,
        STUDY_INSTANCE_UID,
        SERIES_INSTANCE_UID,
        IMAGE_POSITION,
        IMAGE_ORIENTATION,
        IMAGES_IN_ACQUISITION,
        NUMBER_OF_FRAMES,
        PER_FRAME_GROUPS,
    }
)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 32
_FIRST_INFLATE = 256 * 1024


class HeaderError(ValueError):
    """The data set cannot be read as far as its UIDs."""


class HeaderIncompleteError(HeaderError):
    """The bytes given end inside the header (more fragments may complete it)."""


class _NeedMoreError(Exception):
    """The bytes at hand end inside the header."""


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """UIDs (None when absent or empty) and the raw elements completion reads."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    elements: dict[int, tuple[bytes | None, bytes]]  # tag -> (VR or None when implicit, value)
    implicit_vr: bool
    little_endian: bool

    def arrival_facts(self, *, route: Route, calling_ae: str | None, association: str | None) -> ArrivalFacts:
        """What :func:`service.completion.facts_from_header` says of :meth:`dataset`, without pydicom.

        Decoding the elements through pydicom costs ~0.9 ms per instance, more than parsing the
        whole header; tests/unit/service/test_scp_header.py keeps the two in agreement.
        """
        frames = _integer(self.elements.get(NUMBER_OF_FRAMES)) or 1
        announced = _integer(self.elements.get(IMAGES_IN_ACQUISITION))
        if frames > 1 and PER_FRAME_GROUPS in self.elements:
            announced = 1  # an enhanced multi-frame object is a whole acquisition in one instance
        return ArrivalFacts(
            study_instance_uid=self.study_instance_uid or "",
            series_instance_uid=self.series_instance_uid or "",
            sop_instance_uid=self.sop_instance_uid or "",
            route=route,
            calling_ae=calling_ae,
            association=association,
            announced=announced if announced and announced > 0 else None,
            position=self._position(),
        )

    def _position(self) -> float | None:
        """Image Position (Patient) along the slice normal, as completion defines it."""
        iop = _decimals(self.elements.get(IMAGE_ORIENTATION))
        ipp = _decimals(self.elements.get(IMAGE_POSITION))
        if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
            return None
        (rx, ry, rz), (cx, cy, cz) = iop[:3], iop[3:]
        normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
        norm = math.hypot(*normal)
        if not all(math.isfinite(v) for v in normal) or norm < 1e-6:
            return None
        return sum(p * n for p, n in zip(ipp, normal, strict=True)) / norm

    def dataset(self) -> Dataset:
        """The elements as a pydicom data set (decoded lazily, as pydicom does for a file)."""
        return Dataset(
            {
                Tag(tag): RawDataElement(
                    Tag(tag),
                    vr.decode("ascii") if vr else None,
                    len(value),
                    value,
                    0,
                    self.implicit_vr,
                    self.little_endian,
                    True,
                    False,
                )
                for tag, (vr, value) in self.elements.items()
            }
        )


def read_header(
    chunks: Sequence[bytes | memoryview], transfer_syntax_uid: str, *, complete: bool = True
) -> InstanceHeader:
    """Read the header of a data set given as the fragments it arrived in.

    ``complete``: the fragments are the whole data set (else running out of bytes before
    (5200,9230) raises :class:`HeaderIncompleteError` rather than meaning "not present").
    """
    implicit = transfer_syntax_uid == ImplicitVRLittleEndian
    little = transfer_syntax_uid != ExplicitVRBigEndian
    deflated = transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    if not chunks:
        raise HeaderError("the data set is empty")
    attempts: list[tuple[bytes, bool]] = [(b"".join(chunks), complete)]
    if deflated:
        attempts = [(_inflate(chunks, _FIRST_INFLATE), False), (_inflate(chunks, None), complete)]
    elif len(chunks) > 1:
        attempts.insert(0, (bytes(chunks[0]), False))
    for buffer, whole in attempts:
        try:
            elements = _Scanner(buffer, implicit, little, whole).top_level()
            break
        except _NeedMoreError:
            continue
        except (struct.error, IndexError) as exc:
            raise HeaderError(f"malformed data set: {exc}") from exc
    else:
        raise HeaderIncompleteError("the data set ends inside its header")
    return InstanceHeader(
        sop_class_uid=_uid(elements.get(SOP_CLASS_UID)),
        sop_instance_uid=_uid(elements.get(SOP_INSTANCE_UID)),
        study_instance_uid=_uid(elements.get(STUDY_INSTANCE_UID)),
        series_instance_uid=_uid(elements.get(SERIES_INSTANCE_UID)),
        elements=elements,
        implicit_vr=implicit,
        little_endian=little,
    )


def _inflate(chunks: Sequence[bytes | memoryview], limit: int | None) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    try:
        for chunk in chunks:
            out += inflater.decompress(chunk)
            if limit is not None and len(out) >= limit:
                break
        else:
            out += inflater.flush()
    except zlib.error as exc:
        raise HeaderError(f"the deflated data set does not inflate: {exc}") from exc
    return bytes(out)


def _text(element: tuple[bytes | None, bytes] | None) -> str | None:
    if element is None:
        return None
    return element[1].decode("ascii", "replace").strip("\0 ")


def _integer(element: tuple[bytes | None, bytes] | None) -> int | None:
    text = _text(element)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _decimals(element: tuple[bytes | None, bytes] | None) -> list[float] | None:
    text = _text(element)
    try:
        return [float(v) for v in text.split("\\")] if text else None
    except ValueError:
        return None


def _uid(element: tuple[bytes | None, bytes] | None) -> str | None:
    if element is None:
        return None
    try:
        value = element[1].decode("ascii").rstrip("\0 ").lstrip(" ")
    except UnicodeDecodeError:
        return "\ufffd"  # present but not ASCII: the grammar check refuses it
    return value or None


class _Scanner:
    def __init__(self, buffer: bytes, implicit: bool, little: bool, whole: bool) -> None:
        self.buffer = buffer
        self.whole = whole
        self.implicit = implicit
        self.order = "<" if little else ">"
        self.tag_length = struct.Struct(f"{self.order}HHI")
        self.short_length = struct.Struct(f"{self.order}H")
        self.long_length = struct.Struct(f"{self.order}I")

    def top_level(self) -> dict[int, tuple[bytes | None, bytes]]:
        found: dict[int, tuple[bytes | None, bytes]] = {}
        buffer, pos, end = self.buffer, 0, len(self.buffer)
        while pos < end:
            tag, vr, length, pos = self._element_header(pos, self.implicit)
            if tag > PER_FRAME_GROUPS:
                return found
            if length == _UNDEFINED:
                if tag == PER_FRAME_GROUPS:
                    found[tag] = (vr, b"")
                    return found
                pos = self._skip_items(pos, self.implicit or vr == b"UN", 1)
                continue
            if pos + length > end:
                raise _NeedMoreError
            if tag in _WANTED:
                found[tag] = (vr, buffer[pos : pos + length])
            pos += length
        if not self.whole:
            raise _NeedMoreError  # the bytes end before the header does: more may follow
        return found

    def _element_header(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR, value length, position of the value)."""
        if pos + 8 > len(self.buffer):
            raise _NeedMoreError
        group, element, length = self.tag_length.unpack_from(self.buffer, pos)
        tag = group << 16 | element
        if implicit or group == 0xFFFE:
            return tag, None, length, pos + 8
        vr = self.buffer[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(self.buffer):
                raise _NeedMoreError
            return tag, vr, self.long_length.unpack_from(self.buffer, pos + 8)[0], pos + 12
        if not vr.isalpha() or not vr.isupper():
            raise HeaderError(f"element ({group:04X},{element:04X}) has no valid VR ({vr!r})")
        return tag, vr, self.short_length.unpack_from(self.buffer, pos + 6)[0], pos + 8

    def _skip_items(self, pos: int, implicit: bool, depth: int) -> int:
        """Past an undefined-length value: items (each defined or delimited) up to its delimiter."""
        if depth > _MAX_DEPTH:
            raise HeaderError("sequences nested too deeply")
        while True:
            tag, _, length, pos = self._element_header(pos, True)
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise HeaderError(f"expected an item, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            pos = self._skip_item(pos, implicit, depth) if length == _UNDEFINED else pos + length

    def _skip_item(self, pos: int, implicit: bool, depth: int) -> int:
        while True:
            tag, vr, length, pos = self._element_header(pos, implicit)
            if tag == _ITEM_END:
                return pos
            if length == _UNDEFINED:
                pos = self._skip_items(pos, implicit or vr == b"UN", depth + 1)
            else:
                pos += length
            if pos > len(self.buffer):
                raise _NeedMoreError
