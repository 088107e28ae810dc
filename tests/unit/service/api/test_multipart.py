"""The streaming multipart/related parser on adversarial input."""

from __future__ import annotations

import itertools
import random
import tracemalloc
from collections.abc import Iterable

import pytest

from service.api.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    parse_media_type,
)

BOUNDARY = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"


def body(
    parts: Iterable[bytes], *, boundary: str = BOUNDARY, preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    out = bytearray(preamble)
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    out += f"--{boundary}--".encode() + epilogue
    return bytes(out)


def parse(chunks: Iterable[bytes], boundary: str = BOUNDARY) -> list[tuple[dict[str, str], bytes]]:
    """Feed the chunks; the parts as (headers, octets)."""
    parser = MultipartParser(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    current: bytearray | None = None
    headers: dict[str, str] = {}
    for chunk in chunks:
        for event in parser.feed(chunk):
            if isinstance(event, PartStart):
                headers, current = event.headers, bytearray()
            elif isinstance(event, PartData):
                assert current is not None
                current += event.data
            else:
                assert isinstance(event, PartEnd)
                assert current is not None
                parts.append((headers, bytes(current)))
                current = None
    parser.close()
    return parts


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# payloads that look like the delimiter, or a piece of it, in awkward places
TRICKY = [
    b"",
    b"\r",
    b"\r\n",
    b"\r\n-",
    b"\r\n--",
    f"\r\n--{BOUNDARY[:-1]}".encode(),
    b"-" + f"--{BOUNDARY}".encode(),  # the boundary without its CRLF is content
    b"x" * 1000 + b"\r\n\r\n" + b"\r" * 50,
    bytes(range(256)) * 40,
]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 4096, 10**6])
def test_parts_survive_any_chunking(chunk_size: int) -> None:
    data = body(
        TRICKY, preamble=b"This is a preamble.\r\n", epilogue=b"\r\nan epilogue --" + BOUNDARY.encode()
    )
    parts = parse(split_every(data, chunk_size))
    assert [octets for _, octets in parts] == TRICKY
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in parts)


def test_random_chunk_boundaries() -> None:
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randrange(0, 3000)) + b"\r\n--" + BOUNDARY[:20].encode() for _ in range(20)]
    data = body(payloads)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        chunks = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
        assert [octets for _, octets in parse(chunks)] == payloads


def test_first_delimiter_at_byte_zero_and_padding_after_delimiters() -> None:
    data = f"--{BOUNDARY} \t\r\nContent-Type: application/dicom\r\n\r\nabc\r\n--{BOUNDARY}--  \r\n".encode()
    assert parse([data]) == [({"content-type": "application/dicom"}, b"abc")]


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_parts_without_headers_and_empty_parts(chunk_size: int) -> None:
    data = (
        f"--{BOUNDARY}\r\n\r\nno headers\r\n"
        f"--{BOUNDARY}\r\n\r\n"  # neither headers nor octets
        f"--{BOUNDARY}\r\nContent-Type: a/b\r\n\r\n\r\n"  # headers, empty octets
        f"--{BOUNDARY}\r\nContent-Type: c/d\r\n\r\n"  # headers, no empty line's worth of octets
        f"--{BOUNDARY}--"
    ).encode()
    assert parse(split_every(data, chunk_size)) == [
        ({}, b"no headers"),
        ({}, b""),
        ({"content-type": "a/b"}, b""),
        ({"content-type": "c/d"}, b""),
    ]


def test_header_folding_and_case() -> None:
    data = (
        f"--{BOUNDARY}\r\nCONTENT-TYPE: application/dicom;\r\n transfer-syntax=1.2.840.10008.1.2.1\r\n"
        f"Content-Location: a\r\n\r\nX\r\n--{BOUNDARY}--"
    ).encode()
    ((headers, octets),) = parse([data])
    assert headers == {
        "content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
        "content-location": "a",
    }
    assert octets == b"X"


def test_missing_closing_boundary_is_an_error_and_the_part_stays_open() -> None:
    parser = MultipartParser(BOUNDARY)
    events = parser.feed(f"--{BOUNDARY}\r\n\r\ncut".encode())
    assert isinstance(events[0], PartStart)
    assert parser.in_part
    with pytest.raises(MultipartError, match="before the closing boundary"):
        parser.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"no delimiter here at all", "no boundary delimiter"),
        (f"--{BOUNDARY}\r\nContent-Type: application/dicom".encode(), "headers, before the closing"),
        (f"--{BOUNDARY}X\r\n\r\n".encode(), "not followed by CRLF"),
        (f"--{BOUNDARY}\r\nnot a header line\r\n\r\n".encode(), "malformed part header"),
        (f"--{BOUNDARY}\r\nX-Big: {'a' * 20000}\r\n\r\n".encode(), "headers exceed"),
    ],
)
def test_malformed_bodies(data: bytes, message: str) -> None:
    def feed_all() -> None:
        parser = MultipartParser(BOUNDARY)
        parser.feed(data)
        parser.close()

    with pytest.raises(MultipartError, match=message):
        feed_all()


def test_bytes_after_the_close_delimiter_are_ignored() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(body([b"a"]))
    assert parser.finished
    assert parser.feed(b"--" + BOUNDARY.encode() + b"\r\n\r\nmore") == []
    parser.close()


def test_boundary_length_is_checked() -> None:
    with pytest.raises(MultipartError):
        MultipartParser("")
    with pytest.raises(MultipartError):
        MultipartParser("b" * 71)


def test_a_huge_part_streams_with_bounded_memory() -> None:
    """256 MiB through the parser in 64 KiB chunks: what it holds never grows with the part."""
    chunk = bytes(range(256)) * 256  # 64 KiB, no CR LF pair that could start a delimiter... mostly
    parser = MultipartParser(BOUNDARY)
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    total = 0
    tracemalloc.start()
    try:
        parser.feed(head)
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(4096):
            for event in parser.feed(chunk):
                if isinstance(event, PartData):
                    total += len(event.data)
        peak = tracemalloc.get_traced_memory()[1] - baseline
        events = parser.feed(f"\r\n--{BOUNDARY}--".encode())
    finally:
        tracemalloc.stop()
    total += sum(len(e.data) for e in events if isinstance(e, PartData))
    parser.close()
    assert total == 4096 * len(chunk)
    assert peak < 4 * len(chunk), f"parser peak {peak} bytes for 64 KiB chunks"


def test_parse_media_type() -> None:
    media, params = parse_media_type('Multipart/Related; type="application/dicom"; boundary="a;b\\"c"')
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": 'a;b"c'}
    assert parse_media_type("application/dicom;transfer-syntax=*") == (
        "application/dicom",
        {"transfer-syntax": "*"},
    )
    for bad in ("", "text", "a/b; c", 'a/b; c="open'):
        with pytest.raises(ValueError, match=r"."):
            parse_media_type(bad)
