"""Painting pixel-space scenes and naming the series they belong to (shared by the 2D generators)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dicom_io.testing.modules import SeriesInfo, StudyInfo
from dicom_io.testing.scene import Shape2D, pixel_grid
from dicom_io.testing.uids import seeded_uid

__all__ = ["Identity", "paint"]


def paint(
    shapes: tuple[Shape2D, ...],
    *,
    rows: int,
    columns: int,
    frames: int,
    background: tuple[int, ...],
    noise_sd: float,
    max_value: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.uint16]:
    """``[frames, rows, columns, samples]`` stored values: shapes painted in order over the
    background, plus rounded Gaussian noise, clipped to ``0..max_value``."""
    samples = len(background)
    grid = pixel_grid(rows, columns)
    image = np.empty((frames, rows, columns, samples), dtype=np.float64)
    for frame in range(frames):
        image[frame] = background
        for shape in shapes:
            image[frame][shape.contains(grid, frame)] = shape.value
    image += rng.normal(0.0, noise_sd, image.shape)
    painted: npt.NDArray[np.uint16] = np.clip(np.rint(image), 0, max_value).astype(np.uint16)
    return painted


@dataclass(frozen=True, slots=True)
class Identity:
    """Who and what a 2D image is: the keyword arguments every 2D generator shares."""

    modality: str
    seed: int
    patient_id: str
    patient_name: str | None
    study_description: str | None
    series_description: str | None
    body_part_examined: str | None
    series_number: int
    study: StudyInfo | None

    def study_info(self, key: object) -> StudyInfo:
        if self.study is not None:
            return self.study
        return StudyInfo.seeded(
            self.seed,
            patient_name=self.patient_name or f"PHANTOM^{self.modality}",
            patient_id=self.patient_id,
            study_description=self.study_description
            or f"{self.modality} {self.body_part_examined or ''}".strip(),
            key=key,
        )

    def series_info(self, key: object, study: StudyInfo, default_description: str) -> SeriesInfo:
        return SeriesInfo(
            modality=self.modality,
            series_instance_uid=seeded_uid(self.seed, "series", key, study.study_instance_uid),
            series_description=self.series_description or default_description,
            body_part_examined=self.body_part_examined,
            series_number=self.series_number,
            # Type 2C: when no body part says the anatomy is unpaired, Laterality must be present.
            laterality="" if self.body_part_examined is None else None,
        )
