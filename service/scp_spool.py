"""A received instance written into the spool while it arrives: the streaming form of ``store_instance``.

Same guarantees as :func:`service.spool.store_instance` — a temp file in the instance's own folder,
fsync, atomic rename over ``incoming/<study>/<series>/<sop>.dcm``, the caller told whether the SOP
Instance UID was already there, :class:`~service.spool.SpoolError` instead of a half-stored file —
but the bytes go to disk fragment by fragment as the network delivers them, so by the time the last
fragment arrives only the fsync and the rename are left (bench/receive.py: store_instance on the
joined fragments cost ~1 ms more per 512 KB instance). UIDs are checked by
:meth:`DataDir.incoming_instance` before any path is built.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from service.spool import SpoolError, StoredInstance
from workers.storage import DataDir, fsync_directory, make_durable_dirs

__all__ = ["SpoolWriter"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class SpoolWriter:
    """One instance's temp file; ``write`` fragments, then ``commit`` (durable) or ``abandon``."""

    def __init__(self, data: DataDir, study_uid: str, series_uid: str, sop_uid: str) -> None:
        try:
            self.final = data.incoming_instance(study_uid, series_uid, sop_uid)
        except ValueError as exc:
            raise SpoolError(str(exc)) from exc
        self._uids = (study_uid, series_uid, sop_uid)
        self._tmp = self.final.with_name(f".{sop_uid}.{secrets.token_hex(4)}.part")
        self.size = 0
        try:
            try:
                fd = os.open(self._tmp, _FLAGS, 0o600)
            except FileNotFoundError:  # first instance of the series (or its folder was expired)
                make_durable_dirs(self.final.parent)
                fd = os.open(self._tmp, _FLAGS, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot store instance {sop_uid}: {exc.strerror or exc}") from exc
        self._file = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed by commit() or abandon()

    def write(self, chunk: bytes | memoryview) -> None:
        try:
            view = memoryview(chunk)
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError as exc:
            self.abandon()
            raise SpoolError(f"cannot store instance {self._uids[2]}: {exc.strerror or exc}") from exc
        self.size += len(chunk)

    def commit(self) -> StoredInstance:
        """fsync, rename over the final name, fsync the folder: only then may the instance be acknowledged."""
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            repeated = self.final.exists()
            os.replace(self._tmp, self.final)
            fsync_directory(self.final.parent)  # the new name too: only now is the instance on disk
        except OSError as exc:
            self.abandon()
            raise SpoolError(f"cannot store instance {self._uids[2]}: {exc.strerror or exc}") from exc
        return StoredInstance(*self._uids, path=self.final, size=self.size, repeated=repeated)

    def abandon(self) -> None:
        """Close and remove the temp file (an aborted association, a refused or failed instance)."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

    @property
    def temp_path(self) -> Path:
        return self._tmp
