"""The errors ``dicom_io`` raises.

Every error names what it is about (instance, series, path) so that a log line or a job record
is enough to find the offending object::

    DicomIOError
     ├── InvalidInstanceError        one file/instance cannot be used
     │    ├── NotDicomError           the file is not DICOM at all
     │    └── UnsupportedPixelDataError  the pixel data cannot be decoded
     ├── InvalidSeriesError          a series cannot be used for what was asked
     │    └── GeometryError           its geometry does not allow it (not a volume, gaps, grid mismatch)
     ├── MaskError                   a model output does not fit its input (shape, dtype, grid)
     └── SegBuildError               a DICOM SEG could not be built
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DicomIOError",
    "GeometryError",
    "InvalidInstanceError",
    "InvalidSeriesError",
    "MaskError",
    "NotDicomError",
    "SegBuildError",
    "UnsupportedPixelDataError",
]


class DicomIOError(Exception):
    """Base of every error raised by ``dicom_io``."""

    def __init__(
        self,
        reason: str,
        *,
        sop_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        path: Path | str | None = None,
    ) -> None:
        self.reason = reason
        self.sop_instance_uid = sop_instance_uid
        self.series_instance_uid = series_instance_uid
        self.path = None if path is None else Path(path)
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.series_instance_uid:
            where.append(f"series {self.series_instance_uid}")
        if self.sop_instance_uid:
            where.append(f"instance {self.sop_instance_uid}")
        if self.path is not None:
            where.append(f"file {self.path}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class InvalidInstanceError(DicomIOError):
    """One instance (file) cannot be used: truncated, missing tags, invalid UIDs, absurd sizes."""


class NotDicomError(InvalidInstanceError):
    """The file is not a DICOM file."""


class UnsupportedPixelDataError(InvalidInstanceError):
    """The pixel data is in a form that cannot be decoded here."""

    def __init__(
        self,
        reason: str,
        *,
        transfer_syntax_uid: str,
        sop_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        path: Path | str | None = None,
    ) -> None:
        self.transfer_syntax_uid = transfer_syntax_uid
        super().__init__(
            reason, sop_instance_uid=sop_instance_uid, series_instance_uid=series_instance_uid, path=path
        )


class InvalidSeriesError(DicomIOError):
    """A series cannot be used for the requested operation."""


class GeometryError(InvalidSeriesError):
    """The series' geometry does not allow the operation (or two grids do not match)."""


class MaskError(DicomIOError):
    """A segmentation output does not fit the image it claims to segment."""


class SegBuildError(DicomIOError):
    """A DICOM Segmentation object could not be built."""
