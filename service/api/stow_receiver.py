"""Parser events → temp files → :func:`~service.api.stow_parts.ingest_part`, overlapped.

A part's octets gather in memory up to 1 MiB and are then written to its temp file in
``<data>/incoming/.stow/`` from a worker thread (a CT slice of 0.5 MB never leaves memory before its
end). When the part ends, one worker-thread call writes the rest, closes the file, reads, checks,
spools and hands the instance over, and removes the temp file — while the event loop already
receives the next part. Up to :data:`IN_FLIGHT` such calls run at once per request (the spool's
fsyncs then share journal commits); outcomes are collected in the parts' order, and at most
``IN_FLIGHT + 1`` parts of a request are in hand at any time (memory: as many write batches of at
most 1 MiB; disk: as many temp files), whatever the study's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
import structlog

from service.api.multipart import MultipartError, MultipartParser, PartData, PartStart, parse_media_type
from service.api.problems import BadRequestError, PayloadTooLargeError
from service.api.stow_parts import PartOutcome, PartSink, cut_off, ingest_part, refused_media_type

__all__ = ["PartReceiver"]

log = structlog.get_logger(__name__)

WRITE_BATCH = 1024 * 1024
IN_FLIGHT = 2


class _TempPart:
    """One part's temp file, opened on the first write (from a worker thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self._file: BinaryIO | None = None

    def write(self, data: bytes | bytearray) -> None:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="part-", suffix=".part", dir=self.folder)
            self.path, self._file = Path(name), os.fdopen(fd, "wb", buffering=0)
        self._file.write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _finish(sink: PartSink, index: int, part: _TempPart, rest: bytearray, size: int) -> PartOutcome:
    """In a worker thread: the last bytes, then the whole hand-over; the temp file is always removed."""
    try:
        part.write(rest)
        part.close()
        assert part.path is not None
        return ingest_part(sink, index, part.path, size)
    finally:
        part.remove()


class PartReceiver:
    def __init__(self, sink: PartSink, temp_dir: Path) -> None:
        self.sink = sink
        self.temp_dir = temp_dir
        self.outcomes: list[PartOutcome] = []
        self.received = 0
        self._parts = 0
        self._part: _TempPart | None = None
        self._pending = bytearray()
        self._size = 0
        self._refused: str | None = None  # the media type of a part being skipped
        self._open = False
        self._pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="mipgw-stow")
        self._inflight: deque[asyncio.Future[PartOutcome]] = deque()

    async def consume(self, stream: AsyncIterator[bytes], parser: MultipartParser, limit: int) -> None:
        try:
            async for chunk in stream:
                self.received += len(chunk)
                if self.received > limit:
                    raise PayloadTooLargeError(
                        f"the body exceeds the limit of {limit} bytes (api.max_request_bytes)"
                    )
                for event in parser.feed(chunk):
                    if isinstance(event, PartData):
                        await self._data(event.data)
                    elif isinstance(event, PartStart):
                        self._start(event)
                    else:
                        await self._end()
            parser.close()
        except MultipartError as exc:
            await self._settle()
            if self._open:
                self._record(cut_off(self._parts - 1, self._size))
            if not self.outcomes:
                raise BadRequestError(f"malformed multipart body: {exc}") from exc
            log.warning("stow.malformed_body", error=str(exc), parts=len(self.outcomes))
        await self._settle()

    def _start(self, event: PartStart) -> None:
        self._open, self._size, self._refused = True, 0, None
        self._parts += 1
        self._part = _TempPart(self.temp_dir)
        media = event.content_type
        if media is not None:  # RFC 2387: without one, a part has the type of the request's root
            with contextlib.suppress(ValueError):
                media = parse_media_type(media)[0]
            if media != "application/dicom":
                self._refused = media

    async def _data(self, data: bytes) -> None:
        self._size += len(data)
        if self._refused is not None:
            return
        self._pending += data
        if len(self._pending) >= WRITE_BATCH:
            assert self._part is not None
            batch, self._pending = self._pending, bytearray()
            await anyio.to_thread.run_sync(self._part.write, batch)

    async def _end(self) -> None:
        index, part, rest = self._parts - 1, self._part, self._pending
        self._part, self._pending, self._open = None, bytearray(), False
        assert part is not None
        if self._refused is not None:
            await self._settle()  # outcomes stay in the parts' order
            self._record(refused_media_type(index, self._size, self._refused))
            return
        await self._settle(keep=IN_FLIGHT - 1)
        call = contextvars.copy_context().run  # the request's log context, in the worker thread
        future = self._pool.submit(call, _finish, self.sink, index, part, rest, self._size)
        self._inflight.append(asyncio.wrap_future(future))

    async def _settle(self, keep: int = 0) -> None:
        """Collect finished hand-overs, oldest first, until at most ``keep`` are in flight."""
        while len(self._inflight) > keep:
            self._record(await self._inflight[0])
            self._inflight.popleft()

    def _record(self, outcome: PartOutcome) -> None:
        if outcome.failure is not None:
            log.warning(
                "stow.part_failed",
                part=outcome.index,
                failure_reason=f"0x{int(outcome.failure):04X}",
                reason=outcome.reason,
                sop_instance_uid=outcome.sop_instance_uid or None,
                series_instance_uid=outcome.series_instance_uid or None,
            )
        self.outcomes.append(outcome)

    async def close(self) -> None:
        """After the request, however it ended: the hand-over in flight finishes, the part in hand goes."""
        while self._inflight:
            with contextlib.suppress(Exception):
                self._record(await self._inflight[0])
            self._inflight.popleft()
        part, self._part, self._pending = self._part, None, bytearray()
        if part is not None:
            await anyio.to_thread.run_sync(part.remove)
        self._pool.shutdown(wait=False)
