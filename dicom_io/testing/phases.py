"""Generated 4D series: the same volume acquired several times in one series (multi-phase CT, dynamic
or multi-echo MR, diffusion b-values), each time told apart by one attribute."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.uids import seeded_uid

__all__ = ["phased_series"]


def phased_series(
    values: Sequence[Any] = (1, 2, 3),
    *,
    attribute: str | None = "TemporalPositionIdentifier",
    seed: int = 0,
    announce: bool = False,
    numbered_by_position: bool = False,
    **volume: Any,
) -> list[Dataset]:
    """One series holding ``len(values)`` copies of :func:`volume_phantom`'s volume, phase ``k`` with
    ``attribute = values[k]`` (None: nothing tells them apart). Each phase has its own noise (seed)
    and SOP Instance UIDs. InstanceNumber runs on across phases, volume by volume as most scanners
    number them, or position by position (``numbered_by_position``); ``announce`` sets
    NumberOfTemporalPositions, as GE does for an EPI series that names no temporal attribute."""
    first = volume_phantom(seed=seed, **volume)
    series_uid = str(first.datasets[0].SeriesInstanceUID)
    out: list[Dataset] = []
    for k, value in enumerate(values):
        phase = first if k == 0 else volume_phantom(seed=seed, noise_sd=2.0 + k, **volume)
        for n, source in enumerate(phase.datasets):
            ds = copy.deepcopy(source)
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = seeded_uid(seed, "phase", k, source.SOPInstanceUID)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            count = len(phase.datasets)
            ds.InstanceNumber = n * len(values) + k + 1 if numbered_by_position else k * count + n + 1
            if attribute is not None:
                setattr(ds, attribute, value)
            if announce:
                ds.NumberOfTemporalPositions = len(values)
            out.append(ds)
    return out
