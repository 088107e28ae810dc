"""A push parser for ``multipart/related`` (RFC 2046 §5.1, RFC 2387) that never holds a part in memory.

Sans-IO: feed it the body as it arrives, get events back, in order::

    parser = MultipartParser(boundary)
    for chunk in body:
        for event in parser.feed(chunk):
            ...            # PartStart(headers) · PartData(bytes) · PartEnd()
    parser.close()         # raises MultipartError if the body stopped before the closing boundary

What it keeps between calls is bounded whatever the part sizes: the bytes of an unfinished header
block (at most ``max_header_bytes``) or, inside a body, the few bytes that could still be the start of
a delimiter split across two chunks (``len("\\r\\n--" + boundary) - 1``). A ``PartData`` never holds more
than the chunk that was fed plus that tail.

The grammar it accepts: a preamble (ignored) up to the first ``--boundary`` (at the very start of the
body or after a CRLF); after each delimiter optional transport padding (spaces, tabs) and CRLF; a
header block ended by an empty line (it may be empty: a part without headers); the part's octets up
to ``CRLF--boundary``; the close delimiter ``--boundary--``; an epilogue (ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

__all__ = [
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "parse_media_type",
]

_CRLF = b"\r\n"
_MAX_BOUNDARY = 70  # RFC 2046: 1 to 70 characters
_MAX_PADDING = 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart body (or stopped before its closing boundary)."""


@dataclass(frozen=True, slots=True)
class PartStart:
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


class _State(Enum):
    PREAMBLE = auto()
    AFTER_DELIMITER = auto()
    HEADERS = auto()
    BODY_START = auto()
    BODY = auto()
    EPILOGUE = auto()


class MultipartParser:
    def __init__(self, boundary: str, *, max_header_bytes: int = 16 * 1024) -> None:
        if not 1 <= len(boundary) <= _MAX_BOUNDARY or not boundary.isascii():
            raise MultipartError(f"boundary must be 1 to {_MAX_BOUNDARY} ASCII characters")
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._max_header_bytes = max_header_bytes
        self._state = _State.PREAMBLE
        # A virtual CRLF in front of the body lets the first delimiter sit at byte 0.
        self._buffer = bytearray(_CRLF)
        self.parts = 0

    @property
    def in_part(self) -> bool:
        return self._state in (_State.BODY_START, _State.BODY)

    @property
    def finished(self) -> bool:
        return self._state is _State.EPILOGUE

    def feed(self, chunk: bytes) -> list[Event]:
        if self._state is _State.EPILOGUE:
            return []
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        """The body has ended: fine only after the closing boundary."""
        if self._state is _State.EPILOGUE:
            return
        if self._state is _State.PREAMBLE:
            raise MultipartError("no boundary delimiter found in the body")
        what = "a part" if self.in_part else "a part's headers"
        raise MultipartError(f"the body ended inside {what}, before the closing boundary")

    def _step(self, events: list[Event]) -> bool:
        """Consume what the buffer allows; True if another step may make progress."""
        buffer, delimiter = self._buffer, self._delimiter
        if self._state is _State.BODY:
            index = buffer.find(delimiter)
            if index < 0:
                keep = _partial_suffix(buffer, delimiter)
                if len(buffer) > keep:
                    events.append(PartData(_take(buffer, len(buffer) - keep)))
                return False
            if index:
                events.append(PartData(_take(buffer, index)))
            events.append(PartEnd())
            del buffer[: len(delimiter)]
            self._state = _State.AFTER_DELIMITER
            return True
        if self._state is _State.PREAMBLE:
            index = buffer.find(delimiter)
            if index < 0:
                del buffer[: len(buffer) - _partial_suffix(buffer, delimiter)]
                return False
            del buffer[: index + len(delimiter)]
            self._state = _State.AFTER_DELIMITER
            return True
        if self._state is _State.BODY_START:
            return self._body_start(events)
        if self._state is _State.AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state is _State.HEADERS:
            return self._headers(events)
        buffer.clear()  # epilogue
        return False

    def _after_delimiter(self) -> bool:
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        if buffer[:2] == b"--":
            self._state = _State.EPILOGUE
            buffer.clear()
            return False
        padding = len(buffer) - len(buffer.lstrip(b" \t"))
        if padding > _MAX_PADDING:
            raise MultipartError("too much padding after a boundary delimiter")
        rest = buffer[padding:]
        if len(rest) < 2:
            return False
        if rest[:2] != _CRLF:
            raise MultipartError("a boundary delimiter is not followed by CRLF or '--'")
        del buffer[: padding + 2]
        self._state = _State.HEADERS
        return True

    def _headers(self, events: list[Event]) -> bool:
        buffer, delimiter = self._buffer, self._delimiter
        if buffer.startswith(delimiter):  # a part with neither headers nor octets
            events += (PartStart({}), PartEnd())
            self.parts += 1
            del buffer[: len(delimiter)]
            self._state = _State.AFTER_DELIMITER
            return True
        if len(buffer) < len(delimiter) and delimiter.startswith(bytes(buffer)):
            return False  # not yet decidable
        if buffer[:2] == _CRLF:  # no header fields: the empty line comes at once
            block, consumed = b"", 2
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._max_header_bytes:
                    raise MultipartError(f"a part's headers exceed {self._max_header_bytes} bytes")
                return False
            block, consumed = bytes(buffer[:end]), end + 4
        if consumed > self._max_header_bytes:
            raise MultipartError(f"a part's headers exceed {self._max_header_bytes} bytes")
        del buffer[:consumed]
        events.append(PartStart(_parse_headers(block)))
        self.parts += 1
        self._state = _State.BODY_START
        return True

    def _body_start(self, events: list[Event]) -> bool:
        # "headers CRLF --boundary": the empty line's CRLF is the delimiter's, the part has no octets
        # (RFC 2046: body-part := MIME-part-headers [CRLF *OCTET]); any other octets are content
        buffer, dash_boundary = self._buffer, self._delimiter[2:]
        if buffer.startswith(dash_boundary):
            events.append(PartEnd())
            del buffer[: len(dash_boundary)]
            self._state = _State.AFTER_DELIMITER
            return True
        if len(buffer) < len(dash_boundary) and dash_boundary.startswith(bytes(buffer)):
            return False
        self._state = _State.BODY
        return True


def _take(buffer: bytearray, count: int) -> bytes:
    """The first ``count`` bytes, removed from ``buffer`` (one copy)."""
    with memoryview(buffer) as view:
        data = bytes(view[:count])
    del buffer[:count]
    return data


def _partial_suffix(buffer: bytearray, delimiter: bytes) -> int:
    """Length of the longest suffix of ``buffer`` that is a proper prefix of ``delimiter``."""
    start = max(0, len(buffer) - len(delimiter) + 1)
    index = buffer.find(b"\r", start)
    while index >= 0:
        tail = bytes(buffer[index:])
        if delimiter.startswith(tail):
            return len(tail)
        index = buffer.find(b"\r", index + 1)
    return 0


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for raw in block.split(_CRLF):
        line = raw.decode("latin-1")
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        last = name.lower()
        headers[last] = value.strip()
    return headers


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"; boundary=x'`` → the type and its parameters.

    The type and parameter names are lower-cased; quoted values are unquoted (RFC 9110 §5.6.4).
    Raises ValueError on a malformed value.
    """
    media, _, rest = value.partition(";")
    media = media.strip().lower()
    if media.count("/") != 1 or not all(media.split("/")):
        raise ValueError(f"not a media type: {value[:100]!r}")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise ValueError(f"parameter without a value in {value[:100]!r}")
        name = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            chars: list[str] = []
            i += 1
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                raise ValueError(f"unterminated quoted parameter in {value[:100]!r}")
            i += 1
            params[name] = "".join(chars)
        else:
            end = rest.find(";", i)
            end = n if end < 0 else end
            params[name] = rest[i:end].strip()
            i = end
        if not name:
            raise ValueError(f"empty parameter name in {value[:100]!r}")
    return media, params
