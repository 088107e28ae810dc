"""The smallest Segmentation Storage file a sender needs: the senders read its file meta, and send it."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage, generate_uid

__all__ = ["minimal_seg_file"]


def minimal_seg_file(folder: Path, **attributes: object) -> Path:
    """``folder/seg.dcm``: SOP class and instance, Modality SEG, the given attributes, Part 10 meta."""
    ds = Dataset()
    ds.SOPClassUID = SegmentationStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SEG"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "seg.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
