"""The data directory every process shares: received instances, work files, SEGs, the embedded databases.

    <data>/incoming/<study UID>/<series UID>/<SOP UID>.dcm   received instances (listener, STOW, pulls)
    <data>/work/<job id>/...                                  a job's intermediates, removed at its end
    <data>/seg/<study UID>/<SEG series UID>/<SOP UID>.dcm     SEGs, kept for delivery and its retries
    <data>/mipgw.sqlite3, <data>/broker.sqlite3               embedded job store and broker

Tasks carry paths *relative* to the data directory, so workers on other machines that mount the same
volume find the same files. Every file appears whole or not at all (temp file in the same folder,
fsync, rename): a reader on another node never sees half a SEG. UIDs are checked against the UID
grammar before they touch a path, so nothing from a DICOM header can climb out of the tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_io.uids import is_valid_uid

__all__ = [
    "DataDir",
    "SpoolError",
    "StoredInstance",
    "atomic_write_bytes",
    "fsync_directory",
    "make_durable_dirs",
    "publish_directory",
    "staging_directory",
    "store_instance",
]


def fsync_directory(folder: Path) -> None:
    """Make the names in ``folder`` durable: a rename is only on disk once its directory is synced
    (ext4 and XFS keep it in the journal until the next commit, seconds later)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable_dirs(folder: Path) -> None:
    """``mkdir -p`` whose new directories survive a power cut: each new one's parent is synced."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    if not missing:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_directory(created.parent)


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    if fsync:
        make_durable_dirs(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_directory(final: Path) -> Path:
    """A hidden sibling of ``final`` to fill before :func:`publish_directory` swaps it in."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))


def publish_directory(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging`` (a reader sees the old folder or the new one, never half)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def _uid(value: str, what: str) -> str:
    if not is_valid_uid(value):
        raise ValueError(f"{what} {value!r} is not a valid DICOM UID")
    return value


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    def resolve(self, relative: str | Path) -> Path:
        """The absolute path of a task's relative path, refusing anything outside the data directory."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative} lies outside the data directory")
        return path

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.root.resolve()))

    def incoming_study(self, study_uid: str) -> Path:
        return self.root / "incoming" / _uid(study_uid, "StudyInstanceUID")

    def incoming_series(self, study_uid: str, series_uid: str) -> Path:
        return self.incoming_study(study_uid) / _uid(series_uid, "SeriesInstanceUID")

    def incoming_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.incoming_series(study_uid, series_uid) / f"{_uid(sop_uid, 'SOPInstanceUID')}.dcm"

    def work(self, job_id: str) -> Path:
        if not job_id or not all(c.isalnum() or c == "-" for c in job_id):
            raise ValueError(f"job id {job_id!r} is not a plain identifier")
        return self.root / "work" / job_id

    def seg(self, study_uid: str, seg_series_uid: str, seg_sop_uid: str) -> Path:
        return (
            self.root
            / "seg"
            / _uid(study_uid, "StudyInstanceUID")
            / _uid(seg_series_uid, "SEG SeriesInstanceUID")
            / f"{_uid(seg_sop_uid, 'SEG SOPInstanceUID')}.dcm"
        )

    def database_path(self, name: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / name

    def remove_work(self, job_id: str) -> None:
        shutil.rmtree(self.work(job_id), ignore_errors=True)

    def expire(self, older_than_days: float, *, now: float | None = None) -> int:
        """Delete received series and SEG series folders untouched for longer than the retention."""
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        removed = 0
        for area in ("incoming", "seg"):
            for study in (self.root / area).glob("*"):
                for series in study.glob("*"):
                    if series.is_dir() and series.stat().st_mtime < cutoff:
                        shutil.rmtree(series, ignore_errors=True)
                        removed += 1
                if study.is_dir() and not any(study.iterdir()):
                    study.rmdir()
        return removed


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
        make_durable_dirs(final.parent)
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
            fsync_directory(final.parent)  # the new name too, before the caller says "stored"
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SpoolError(f"cannot store instance {sop_uid}: {exc.strerror or exc}") from exc
    return StoredInstance(study_uid, series_uid, sop_uid, final, size, repeated)
