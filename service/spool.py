"""Received instances into the data directory: durable, atomic, UID-checked, idempotent.

An instance is acknowledged (C-STORE success, STOW ReferencedSOPSequence) only after
:func:`store_instance` returned: the bytes are on disk (fsync), under their final name (rename),
in the folder of their study and series. A repeated SOP Instance UID replaces the file — the same
object sent twice is stored once — and the caller learns it was a repeat.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dicom_io.uids import is_valid_uid
from workers.storage import DataDir

__all__ = ["SpoolError", "StoredInstance", "free_bytes", "store_instance"]


class SpoolError(Exception):
    """The instance could not be stored (a bad UID, a full or failing disk): never acknowledge it."""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    path: Path
    size: int
    repeated: bool  # the SOP Instance UID was already there (the file was replaced)


def store_instance(
    data: DataDir, study_uid: str, series_uid: str, sop_uid: str, chunks: bytes | list[bytes]
) -> StoredInstance:
    """Write one Part 10 file (``chunks`` joined) durably; raises SpoolError instead of half-storing."""
    for keyword, value in (
        ("StudyInstanceUID", study_uid),
        ("SeriesInstanceUID", series_uid),
        ("SOPInstanceUID", sop_uid),
    ):
        if not is_valid_uid(value):
            raise SpoolError(f"{keyword} {value!r} is not a valid UID")
    final = data.incoming_instance(study_uid, series_uid, sop_uid)
    parts = [chunks] if isinstance(chunks, bytes) else chunks
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        repeated = final.exists()
        fd, tmp = tempfile.mkstemp(prefix=f".{sop_uid}.", suffix=".part", dir=final.parent)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                for part in parts:
                    fh.write(part)
                    size += len(part)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SpoolError(f"cannot store instance {sop_uid}: {exc.strerror or exc}") from exc
    return StoredInstance(study_uid, series_uid, sop_uid, final, size, repeated)


def free_bytes(data: DataDir) -> int:
    """Free space where the spool lives (the data directory, created if needed)."""
    data.root.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(data.root).free
