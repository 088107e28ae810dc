"""One Enhanced CT or Enhanced MR Image instance holding a whole phantom stack.

Frames are a single stack (StackID "1") whose InStackPositionNumber counts frames in file order,
so with ``reverse_order`` it runs against the position along the normal, as InstanceNumber does
in the classic series. The dimension organisation is (StackID, InStackPositionNumber).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import EnhancedCTImageStorage, EnhancedMRImageStorage

from dicom_io.testing.enhanced_macros import (
    ACQUISITION_DATETIME,
    IMAGE_TYPE,
    code_item,
    ct_frame_groups,
    ct_image_module,
    ct_per_frame,
    item,
    mr_frame_groups,
    mr_image_module,
)
from dicom_io.testing.geometry import PlaneGeometry
from dicom_io.testing.modules import StudyInfo, add_common_modules
from dicom_io.testing.uids import seeded_uid
from dicom_io.testing.volume import VolumeSpec, VolumeUIDs

__all__ = ["enhanced_dataset"]

_FRAME_CONTENT = Tag("FrameContentSequence")


def enhanced_dataset(
    spec: VolumeSpec,
    study: StudyInfo,
    uids: VolumeUIDs,
    planes: tuple[PlaneGeometry, ...],
    stored: npt.NDArray[np.integer],
) -> Dataset:
    """The enhanced instance for ``planes`` (in frame order) and ``stored`` ``[frames, rows, cols]``."""
    ds = Dataset()
    is_ct = spec.modality == "CT"
    add_common_modules(
        ds,
        study=study,
        series=uids.series_info(spec),
        sop_class_uid=EnhancedCTImageStorage if is_ct else EnhancedMRImageStorage,
        sop_instance_uid=seeded_uid(uids.seed, "instance", uids.series, "enhanced"),
        instance_number=1,
    )
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = ACQUISITION_DATETIME
    ds.AcquisitionDuration = 1.0
    ds.AcquisitionContextSequence = Sequence()
    ds.ContentQualification = "RESEARCH"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ImageType = list(IMAGE_TYPE)
    if is_ct:
        ct_image_module(ds, spec)
    else:
        mr_image_module(ds, spec)
    spec.add_pixel_module(ds, stored)
    ds.NumberOfFrames = len(planes)

    ds.DimensionOrganizationSequence = Sequence([item(DimensionOrganizationUID=uids.dimension_organization)])
    if _is_regular(spec):
        ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence(
        [
            item(
                DimensionOrganizationUID=uids.dimension_organization,
                DimensionIndexPointer=Tag("StackID"),
                FunctionalGroupPointer=_FRAME_CONTENT,
                DimensionDescriptionLabel="Stack ID",
            ),
            item(
                DimensionOrganizationUID=uids.dimension_organization,
                DimensionIndexPointer=Tag("InStackPositionNumber"),
                FunctionalGroupPointer=_FRAME_CONTENT,
                DimensionDescriptionLabel="In-Stack Position Number",
            ),
        ]
    )

    first = planes[0]
    shared = item(
        PixelMeasuresSequence=Sequence(
            [item(PixelSpacing=list(first.pixel_spacing), SliceThickness=spec.slice_spacing)]
        ),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=first.image_orientation_patient)]),
        FrameAnatomySequence=Sequence(
            [
                item(
                    AnatomicRegionSequence=Sequence([code_item("818981001", "SCT", "Abdomen")]),
                    FrameLaterality="U",
                )
            ]
        ),
        FrameVOILUTSequence=Sequence(
            [item(WindowCenter=40, WindowWidth=400) if is_ct else item(WindowCenter=800, WindowWidth=1600)]
        ),
    )
    if is_ct:
        ct_frame_groups(shared, spec, seeded_uid(uids.seed, "irradiation", uids.series))
    else:
        mr_frame_groups(shared, spec)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [_per_frame(plane, number, is_ct) for number, plane in enumerate(planes, start=1)]
    )
    return ds


def _per_frame(plane: PlaneGeometry, in_stack_position: int, is_ct: bool) -> Dataset:
    frame = item(
        FrameContentSequence=Sequence(
            [
                item(
                    FrameAcquisitionNumber=1,
                    FrameReferenceDateTime=ACQUISITION_DATETIME,
                    FrameAcquisitionDateTime=ACQUISITION_DATETIME,
                    FrameAcquisitionDuration=1.0,
                    StackID="1",
                    InStackPositionNumber=in_stack_position,
                    DimensionIndexValues=[1, in_stack_position],
                )
            ]
        ),
        PlanePositionSequence=Sequence([item(ImagePositionPatient=list(plane.position))]),
    )
    if is_ct:
        ct_per_frame(frame, plane)
    return frame


def _is_regular(spec: VolumeSpec) -> bool:
    """Evenly spaced parallel planes along their normal: what "3D" organisation promises."""
    return not spec.missing_slices and spec.gantry_tilt_deg == 0.0
