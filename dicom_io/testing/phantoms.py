"""Seeded CT and MR volume phantoms: classic single-frame series or one enhanced multi-frame instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage

from dicom_io.testing.enhanced import enhanced_dataset
from dicom_io.testing.geometry import Orientation, PlaneGeometry, Vector, as_ds
from dicom_io.testing.modules import CONTENT_DATE, CONTENT_TIME, StudyInfo, add_common_modules
from dicom_io.testing.scene import Phantom
from dicom_io.testing.stack import place_objects, stack_planes
from dicom_io.testing.uids import seeded_uid
from dicom_io.testing.volume import VolumeSpec, VolumeUIDs, modality_to_stored

__all__ = ["volume_phantom"]

Modality = Literal["CT", "MR"]


def volume_phantom(
    *,
    modality: Modality = "CT",
    orientation: Orientation = "axial",
    rows: int = 64,
    columns: int = 48,
    slices: int = 40,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_spacing: float = 1.5,
    reverse_order: bool = False,
    gantry_tilt_deg: float = 0.0,
    enhanced: bool = False,
    missing_slices: Sequence[int] = (),
    monochrome1: bool = False,
    stored_dtype: Literal["uint16", "int16"] = "uint16",
    rescale_slope: float = 1.0,
    rescale_intercept: float | None = None,
    noise_sd: float | None = None,
    center: Vector = (-31.7, 12.3, 104.9),
    seed: int = 0,
    patient_id: str = "PHANTOM",
    patient_name: str | None = None,
    study_description: str | None = None,
    series_description: str | None = None,
    body_part_examined: str | None = "ABDOMEN",
    series_number: int = 1,
    study: StudyInfo | None = None,
) -> Phantom:
    """A CT or MR volume of a body, a target (``"liver"``) and a small ``"marker"``.

    ``pixel_spacing`` is DICOM's (between rows, between columns); ``center`` is the LPS point (mm) at
    the middle of the volume, deliberately not round. Slices are numbered by position along the
    normal ``row × column``; ``reverse_order`` makes InstanceNumber and file order run against it
    (as head-first axial series usually do). ``missing_slices`` drops those positional indices,
    leaving gaps in position and InstanceNumber. ``gantry_tilt_deg`` tilts the plane about x while
    the positions step along the untilted normal (a sheared stack, GantryDetectorTilt set).

    CT stores ``(HU - intercept) / slope``: uint16 in 12 bits with intercept -1024 by default, or
    int16 in 16 bits with intercept 0 (negative stored values); air -1000, body 40, liver 160,
    marker 300 HU. MR is uint16 (12 bits) with no rescale attributes, 0 outside the body.
    ``monochrome1`` only relabels the photometric interpretation: stored values keep their meaning,
    so a viewer shows the image inverted. ``enhanced`` gives one Enhanced CT/MR Image instance whose
    frames follow the same order; ``study`` puts the series into an existing study.
    """
    spec = VolumeSpec(
        modality=modality,
        orientation=orientation,
        rows=rows,
        columns=columns,
        slices=slices,
        pixel_spacing=pixel_spacing,
        slice_spacing=slice_spacing,
        reverse_order=reverse_order,
        gantry_tilt_deg=gantry_tilt_deg,
        enhanced=enhanced,
        missing_slices=tuple(sorted(set(missing_slices))),
        monochrome1=monochrome1,
        stored_dtype=stored_dtype,
        rescale_slope=rescale_slope,
        rescale_intercept=rescale_intercept,
        noise_sd=noise_sd,
        center=center,
        series_description=series_description,
        body_part_examined=body_part_examined,
        series_number=series_number,
    )
    spec.validate()
    if study is None:
        study = StudyInfo.seeded(
            seed,
            patient_name=patient_name or f"PHANTOM^{modality}",
            patient_id=patient_id,
            study_description=study_description or f"{modality} ABDOMEN",
            key=spec,
        )
    uids = VolumeUIDs.seeded(seed, spec, study)
    planes = stack_planes(
        orientation=orientation,
        rows=rows,
        columns=columns,
        slices=slices,
        pixel_spacing=pixel_spacing,
        slice_spacing=slice_spacing,
        gantry_tilt_deg=gantry_tilt_deg,
        center=center,
    )
    objects = place_objects(planes, spec.object_values, ("body", "liver", "marker"))
    points = np.stack([plane.pixel_to_patient() for plane in planes])
    values = np.full(points.shape[:-1], spec.background_value, dtype=np.float64)
    for obj in objects:
        values[obj.contains(points)] = obj.value
    noise = np.random.default_rng(seed).normal(0.0, spec.noise, values.shape)
    if modality == "MR":
        # MR noise stays inside the body so that "0 outside the body" holds exactly.
        noise *= objects[0].contains(points)
    stored = modality_to_stored(spec, values + noise)

    order = [k for k in range(slices) if k not in spec.missing_slices]
    if reverse_order:
        order.reverse()
    if enhanced:
        frame_planes = tuple(planes[k] for k in order)
        ds = enhanced_dataset(spec, study, uids, frame_planes, stored[order])
        return Phantom(datasets=(ds,), objects=objects, planes=(frame_planes,), target_label="liver")
    datasets = tuple(
        _classic_dataset(spec, study, uids, planes[k], stored[k], k, slices - k if reverse_order else k + 1)
        for k in order
    )
    return Phantom(
        datasets=datasets, objects=objects, planes=tuple((planes[k],) for k in order), target_label="liver"
    )


def _classic_dataset(
    spec: VolumeSpec,
    study: StudyInfo,
    uids: VolumeUIDs,
    plane: PlaneGeometry,
    stored: npt.NDArray[np.integer],
    position_index: int,
    instance_number: int,
) -> Dataset:
    ds = Dataset()
    add_common_modules(
        ds,
        study=study,
        series=uids.series_info(spec),
        sop_class_uid=CTImageStorage if spec.modality == "CT" else MRImageStorage,
        sop_instance_uid=seeded_uid(uids.seed, "instance", uids.series, position_index),
        instance_number=instance_number,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if spec.modality == "CT" else "OTHER"]
    ds.AcquisitionDate = CONTENT_DATE
    ds.AcquisitionTime = CONTENT_TIME
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = list(plane.position)
    ds.ImageOrientationPatient = plane.image_orientation_patient
    ds.PixelSpacing = list(plane.pixel_spacing)
    ds.SliceThickness = spec.slice_spacing
    ds.SliceLocation = as_ds(float(np.dot(plane.position, plane.normal)))
    spec.add_pixel_module(ds, stored)
    if spec.modality == "CT":
        ds.KVP = 120
        ds.DataCollectionDiameter = 500
        ds.ReconstructionDiameter = round(max(plane.rows * plane.pixel_spacing[0], 1.0), 3)
        ds.GantryDetectorTilt = spec.gantry_tilt_deg
        ds.TableHeight = 150
        ds.RotationDirection = "CW"
        ds.ConvolutionKernel = "STANDARD"
        ds.RescaleIntercept = spec.intercept
        ds.RescaleSlope = spec.rescale_slope
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500
        ds.EchoTime = 15
        ds.EchoTrainLength = 1
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = 1.5
        ds.SpacingBetweenSlices = spec.slice_spacing
        ds.WindowCenter = 800
        ds.WindowWidth = 1600
    return ds
