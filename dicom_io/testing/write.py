"""Writing generated datasets as DICOM Part 10 files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["write_datasets"]


def write_datasets(datasets: Iterable[Dataset], directory: Path, *, stem: str = "IM") -> list[Path]:
    """Write each dataset to ``directory/IM0001.dcm``… (preamble, File Meta Information, its own
    transfer syntax) in the given order; the directory is created if needed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(datasets, start=1):
        path = directory / f"{stem}{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
