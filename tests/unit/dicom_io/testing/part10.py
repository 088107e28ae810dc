"""Round trips through Part 10 bytes, as a reader on the other side of a file would see a dataset."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset


def part10_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def reread(ds: Dataset) -> Dataset:
    """``ds`` after a trip through a Part 10 file."""
    return pydicom.dcmread(io.BytesIO(part10_bytes(ds)))
