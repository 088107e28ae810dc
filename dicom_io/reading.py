"""Files and folders → instance headers, with the checks that make later stages safe.

Only the header is parsed here (``stop_before_pixels``); pixel data is read later, per frame, by
:mod:`dicom_io.pixels`. For native (uncompressed) transfer syntaxes the byte offset of the Pixel Data
value is kept so pixels can be read straight from the file without parsing it again.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_io.errors import DicomIOError, InvalidInstanceError, NotDicomError
from dicom_io.uids import is_valid_uid

__all__ = [
    "NON_IMAGE_SOP_CLASS_PREFIXES",
    "Instance",
    "ReadLimits",
    "ScanResult",
    "SkippedFile",
    "iter_files",
    "read_dataset",
    "read_instance",
    "scan",
]

logger = logging.getLogger(__name__)

# SOP classes that are never segmented even when they carry pixel data (RT Dose, SEG).
NON_IMAGE_SOP_CLASS_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report / key object selection",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "segmentation / registration / raw data",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.67": "real world value mapping",
    "1.2.840.10008.5.1.4.1.1.68.": "surface",
    "1.2.840.10008.5.1.4.1.1.200.": "protocol",
}

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_NATIVE_LE = {UID("1.2.840.10008.1.2"), UID("1.2.840.10008.1.2.1")}
_REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID")


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Sizes beyond which an instance is refused before any pixel is decoded."""

    max_rows: int = 16384
    max_columns: int = 16384
    max_frames: int = 20000
    max_pixel_bytes: int = 4 * 1024**3


@dataclass(frozen=True, slots=True)
class Instance:
    """One DICOM instance: its header and the facts the pipeline keeps asking for."""

    path: Path
    header: Dataset
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    modality: str
    rows: int
    columns: int
    number_of_frames: int
    samples_per_pixel: int
    bits_allocated: int
    has_pixel_data: bool
    # Offset of the Pixel Data value in the file; set only for native little-endian syntaxes.
    pixel_data_offset: int | None

    @property
    def is_image(self) -> bool:
        return self.has_pixel_data and self.non_image_kind is None and self.rows > 0 and self.columns > 0

    @property
    def non_image_kind(self) -> str | None:
        for prefix, kind in NON_IMAGE_SOP_CLASS_PREFIXES.items():
            if self.sop_class_uid.startswith(prefix):
                return kind
        return None

    @property
    def transfer_syntax_name(self) -> str:
        return UID(self.transfer_syntax_uid).name

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: Path
    reason: str
    error: DicomIOError


@dataclass(frozen=True, slots=True)
class ScanResult:
    instances: tuple[Instance, ...]
    skipped: tuple[SkippedFile, ...]


def iter_files(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Every regular file under ``paths`` (recursively), in a stable order; hidden files skipped."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


def scan(
    paths: Iterable[Path | str],
    limits: ReadLimits | None = None,
    on_instance: Callable[[Instance], None] | None = None,
) -> ScanResult:
    """Read the headers of every file under ``paths``; bad files are skipped with the reason.

    ``on_instance`` sees each good instance as soon as it is read (to start work on it early).
    """
    instances: list[Instance] = []
    skipped: list[SkippedFile] = []
    for path in iter_files(paths):
        try:
            instance = read_instance(path, limits)
        except DicomIOError as exc:
            logger.warning("skipping %s", exc)
            skipped.append(SkippedFile(path, exc.reason, exc))
            continue
        instances.append(instance)
        if on_instance is not None:
            on_instance(instance)
    return ScanResult(tuple(instances), tuple(skipped))


def read_instance(path: Path | str, limits: ReadLimits | None = None) -> Instance:
    """Read and check one file's header. Raises NotDicomError or InvalidInstanceError."""
    path = Path(path)
    limits = limits or ReadLimits()
    try:
        header, pixel_tag_pos, file_size = _read_header(path)
    except DicomIOError:
        raise
    except (InvalidDicomError, EOFError, struct.error, ValueError, KeyError, TypeError, OverflowError) as exc:
        # pydicom reports truncation and garbage in many shapes; all mean "unreadable header"
        raise InvalidInstanceError(f"unreadable DICOM header ({exc})", path=path) from exc
    return _check(path, header, pixel_tag_pos, file_size, limits)


def read_dataset(path: Path | str) -> Dataset:
    """The whole dataset, pixel data included, from any of the file layouts :func:`read_instance` accepts."""
    path = Path(path)
    with path.open("rb") as fh:
        return _parse(fh, path, stop_before_pixels=False)[0]


def _read_header(path: Path) -> tuple[Dataset, int | None, int]:
    """Parse everything before the pixel data; returns (header, file offset of the pixel tag, size)."""
    with path.open("rb") as fh:
        header, pixel_pos = _parse(fh, path, stop_before_pixels=True)
    return header, pixel_pos, path.stat().st_size


def _parse(fh: BinaryIO, path: Path, *, stop_before_pixels: bool) -> tuple[Dataset, int | None]:
    head = fh.read(132)
    fh.seek(0)
    shift, force = 0, False
    if head[128:132] != b"DICM":
        if head[:4] == b"DICM":
            # Part 10 meta information without the 128-byte preamble: give pydicom one.
            fh, shift = io.BytesIO(b"\0" * 128 + fh.read()), -128
        elif _looks_like_raw_dataset(head):
            force = True
        else:
            raise NotDicomError("not a DICOM file (no DICM prefix, no dataset at byte 0)", path=path)
    ds = pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels, force=force)
    pos = fh.tell()
    tag_bytes = fh.read(4)
    pixel_pos: int | None = None
    if stop_before_pixels and len(tag_bytes) == 4:
        for order in ("<HH", ">HH"):  # explicit VR big endian still exists in the wild
            group, element = struct.unpack(order, tag_bytes)
            if (group << 16 | element) in _PIXEL_TAGS:
                pixel_pos = pos + shift
    return ds, pixel_pos


def _looks_like_raw_dataset(head: bytes) -> bool:
    """An ACR-NEMA style stream without meta header starts with a group 0x0002..0x0010 tag."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    length: int = struct.unpack("<I", head[4:8])[0]
    return length < 1024


def _check(path: Path, ds: Dataset, pixel_pos: int | None, file_size: int, limits: ReadLimits) -> Instance:
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_uid and not any(k in ds for k in ("SOPClassUID", "Modality", "StudyInstanceUID")):
        raise NotDicomError("not a DICOM file (no SOP identification)", path=path)
    for keyword in _REQUIRED_UIDS:
        value = str(ds.get(keyword, "") or "")
        if not value:
            raise InvalidInstanceError(f"missing {keyword}", sop_instance_uid=sop_uid or None, path=path)
        if not is_valid_uid(value):
            raise InvalidInstanceError(
                f"{keyword} {value!r} is not a valid UID", sop_instance_uid=sop_uid or None, path=path
            )
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or _guess_ts(ds)
    # A deflated dataset is read from an inflated copy, so the file offset says nothing there.
    has_pixels = pixel_pos is not None or (ts == DeflatedExplicitVRLittleEndian and "Rows" in ds)
    rows = int(ds.get("Rows", 0) or 0)
    columns = int(ds.get("Columns", 0) or 0)
    frames = _int_or(ds.get("NumberOfFrames", 1), 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 0) or 0)

    def bad(reason: str) -> InvalidInstanceError:
        return InvalidInstanceError(
            reason, sop_instance_uid=sop_uid, series_instance_uid=str(ds.SeriesInstanceUID), path=path
        )

    if has_pixels:
        if rows <= 0 or columns <= 0:
            raise bad(f"pixel data without valid Rows/Columns ({rows}x{columns})")
        if rows > limits.max_rows or columns > limits.max_columns:
            raise bad(f"image size {rows}x{columns} exceeds the limit {limits.max_rows}x{limits.max_columns}")
        if not 1 <= frames <= limits.max_frames:
            raise bad(f"NumberOfFrames {frames} outside 1..{limits.max_frames}")
        if spp not in (1, 3) or bits not in (1, 8, 16, 32, 64):
            raise bad(f"unsupported pixel layout (SamplesPerPixel {spp}, BitsAllocated {bits})")
        if "PhotometricInterpretation" not in ds:
            raise bad("missing PhotometricInterpretation")
        expected = (rows * columns * frames * spp * bits + 7) // 8
        if expected > limits.max_pixel_bytes:
            raise bad(f"{expected / 1024**3:.1f} GiB of pixel data exceeds the limit")
        if pixel_pos is not None and ts in (*_NATIVE_LE, "1.2.840.10008.1.2.2"):
            available = file_size - pixel_pos
            if available < expected:  # tag+length header is at most 12 bytes; the value must follow in full
                raise bad(f"truncated file: {available} bytes left for {expected} bytes of pixel data")
    offset = _native_value_offset(path, pixel_pos, ts) if has_pixels and pixel_pos is not None else None
    return Instance(
        path=path,
        header=ds,
        sop_instance_uid=sop_uid,
        sop_class_uid=str(ds.SOPClassUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        transfer_syntax_uid=ts,
        modality=str(ds.get("Modality", "") or "OT").upper(),
        rows=rows,
        columns=columns,
        number_of_frames=frames,
        samples_per_pixel=spp,
        bits_allocated=bits,
        has_pixel_data=has_pixels,
        pixel_data_offset=offset,
    )


def _native_value_offset(path: Path, pixel_pos: int, ts: str) -> int | None:
    """Offset of the Pixel Data *value* when it can be read raw (native little endian, defined length)."""
    if ts not in _NATIVE_LE:
        return None
    with path.open("rb") as fh:
        fh.seek(pixel_pos)
        head = fh.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
        return None
    if ts == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        length, start = struct.unpack("<I", head[4:8])[0], pixel_pos + 8
    elif head[4:6] in (b"OB", b"OW", b"UN"):
        length, start = struct.unpack("<I", head[8:12])[0], pixel_pos + 12
    else:
        return None
    return None if length == 0xFFFFFFFF else start


def _guess_ts(ds: Dataset) -> str:
    # Raw datasets carry no meta header; pydicom decided while reading them.
    implicit = getattr(ds, "is_implicit_VR", True)
    little = getattr(ds, "is_little_endian", True)
    if not little:
        return "1.2.840.10008.1.2.2"
    return "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"


def _int_or(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default
