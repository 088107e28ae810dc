"""Modality-specific parts of the Enhanced CT and Enhanced MR Image IODs.

The frames are ORIGINAL, so the acquisition macros that PS3.3 makes conditional on it are present
with plausible fixed values: a reader that checks them finds them, and nothing depends on them.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_io.testing.geometry import PlaneGeometry, as_ds, as_ds_vector
from dicom_io.testing.volume import VolumeSpec

__all__ = [
    "ACQUISITION_DATETIME",
    "IMAGE_TYPE",
    "code_item",
    "ct_frame_groups",
    "ct_image_module",
    "ct_per_frame",
    "item",
    "mr_frame_groups",
    "mr_image_module",
]

ACQUISITION_DATETIME = "20240102101500"
IMAGE_TYPE = ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")


def item(**keywords: object) -> Dataset:
    """A sequence item from DICOM keywords."""
    ds = Dataset()
    for keyword, value in keywords.items():
        setattr(ds, keyword, value)
    return ds


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def ct_image_module(ds: Dataset, spec: VolumeSpec) -> None:
    """Enhanced CT Image and CT Series attributes beyond the shared ones."""
    ds.IsocenterPosition = list(spec.center)
    _image_description(ds)


def ct_frame_groups(shared: Dataset, spec: VolumeSpec, irradiation_event_uid: str) -> None:
    """The CT functional groups, all shared since every frame is acquired alike."""
    shared.PixelValueTransformationSequence = Sequence(
        [item(RescaleIntercept=spec.intercept, RescaleSlope=spec.rescale_slope, RescaleType="HU")]
    )
    shared.CTImageFrameTypeSequence = Sequence(
        [
            item(
                FrameType=list(IMAGE_TYPE),
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
            )
        ]
    )
    shared.IrradiationEventIdentificationSequence = Sequence(
        [item(IrradiationEventUID=irradiation_event_uid)]
    )
    shared.CTAcquisitionTypeSequence = Sequence(
        [item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")]
    )
    shared.CTAcquisitionDetailsSequence = Sequence(
        [
            item(
                DataCollectionDiameter=500,
                GantryDetectorTilt=spec.gantry_tilt_deg,
                TableHeight=150,
                RotationDirection="CW",
                RevolutionTime=0.5,
                SingleCollimationWidth=0.625,
                TotalCollimationWidth=40,
            )
        ]
    )
    shared.CTTableDynamicsSequence = Sequence(
        [item(TableSpeed=40, TableFeedPerRotation=20, SpiralPitchFactor=0.5)]
    )
    shared.CTGeometrySequence = Sequence(
        [item(DistanceSourceToDetector=1040, DistanceSourceToDataCollectionCenter=570)]
    )
    shared.CTReconstructionSequence = Sequence(
        [
            item(
                ReconstructionAlgorithm="FILTER_BACK_PROJ",
                ConvolutionKernel="STANDARD",
                ConvolutionKernelGroup="SOFT_TISSUE",
                ReconstructionDiameter=round(spec.rows * spec.pixel_spacing[0], 3),
                ReconstructionAngle=360,
                ReconstructionPixelSpacing=list(spec.pixel_spacing),
                ImageFilter="NONE",
            )
        ]
    )
    shared.CTExposureSequence = Sequence(
        [
            item(
                ExposureTimeInms=500,
                XRayTubeCurrentInmA=200,
                ExposureInmAs=100,
                ExposureModulationType="NONE",
                CTDIvol=10,
                CTDIPhantomTypeCodeSequence=Sequence(
                    [code_item("113691", "DCM", "IEC Body Dosimetry Phantom")]
                ),
            )
        ]
    )
    shared.CTXRayDetailsSequence = Sequence(
        [item(KVP=120, FocalSpots=[0.7], FilterType="BODY", FilterMaterial=["ALUMINUM"])]
    )


def ct_per_frame(frame: Dataset, plane: PlaneGeometry) -> None:
    """CT Position: where the table and the reconstruction centre were for this frame."""
    centre = as_ds_vector(
        np.asarray(plane.position)
        + (plane.columns - 1) / 2 * plane.pixel_spacing[1] * np.asarray(plane.row_direction)
        + (plane.rows - 1) / 2 * plane.pixel_spacing[0] * np.asarray(plane.column_direction)
    )
    frame.CTPositionSequence = Sequence(
        [
            item(
                TablePosition=as_ds(-centre[2]),
                ReconstructionTargetCenterPatient=list(centre),
                DataCollectionCenterPatient=list(centre),
            )
        ]
    )


def _image_description(ds: Dataset) -> None:
    """The image-level summary of the frame types (Common CT/MR Image Description macro)."""
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"


def mr_image_module(ds: Dataset, spec: VolumeSpec) -> None:
    """Enhanced MR Image, MR Image and Spectroscopy Instance and MR Pulse Sequence attributes."""
    _image_description(ds)
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "T1"
    ds.ResonantNucleus = "1H"
    ds.MagneticFieldStrength = 1.5
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.PulseSequenceName = "SE"
    ds.MRAcquisitionType = "2D"
    ds.EchoPulseSequence = "SPIN"
    ds.MultipleSpinEcho = "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.NumberOfKSpaceTrajectories = 1
    ds.RectilinearPhaseEncodeReordering = "LINEAR"


def mr_frame_groups(shared: Dataset, spec: VolumeSpec) -> None:
    """The MR functional groups, all shared since every frame is acquired alike."""
    shared.PixelValueTransformationSequence = Sequence(
        [item(RescaleIntercept=0, RescaleSlope=1, RescaleType="US")]
    )
    shared.MRImageFrameTypeSequence = Sequence(
        [
            item(
                FrameType=list(IMAGE_TYPE),
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
                ComplexImageComponent="MAGNITUDE",
                AcquisitionContrast="T1",
            )
        ]
    )
    shared.MRTimingAndRelatedParametersSequence = Sequence(
        [
            item(
                RepetitionTime=500,
                FlipAngle=90,
                EchoTrainLength=1,
                RFEchoTrainLength=1,
                GradientEchoTrainLength=0,
                OperatingModeSequence=Sequence(
                    [
                        item(OperatingModeType=kind, OperatingMode="IEC_NORMAL")
                        for kind in ("STATIC FIELD", "RF", "GRADIENT")
                    ]
                ),
                SpecificAbsorptionRateSequence=Sequence(
                    [
                        item(
                            SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                            SpecificAbsorptionRateValue=0.5,
                        )
                    ]
                ),
            )
        ]
    )
    shared.MREchoSequence = Sequence([item(EffectiveEchoTime=15)])
    shared.MRAveragesSequence = Sequence([item(NumberOfAverages=1)])
    shared.MRModifierSequence = Sequence(
        [
            item(
                InversionRecovery="NO",
                FlowCompensation="NONE",
                T2Preparation="NO",
                SpectrallySelectedExcitation="NONE",
                SpatialPresaturation="NONE",
                PartialFourier="NO",
                ParallelAcquisition="NO",
            )
        ]
    )
    shared.MRImagingModifierSequence = Sequence(
        [
            item(
                PixelBandwidth=130,
                TransmitterFrequency=63.87,
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
            )
        ]
    )
    shared.MRReceiveCoilSequence = Sequence(
        [
            item(
                ReceiveCoilName="BODY",
                ReceiveCoilManufacturerName="",
                ReceiveCoilType="BODY",
                QuadratureReceiveCoil="YES",
            )
        ]
    )
    shared.MRTransmitCoilSequence = Sequence(
        [item(TransmitCoilName="BODY", TransmitCoilManufacturerName="", TransmitCoilType="BODY")]
    )
    shared.MRFOVGeometrySequence = Sequence(
        [
            item(
                InPlanePhaseEncodingDirection="ROW",
                MRAcquisitionFrequencyEncodingSteps=spec.columns,
                MRAcquisitionPhaseEncodingStepsInPlane=spec.rows,
                PercentSampling=100,
                PercentPhaseFieldOfView=100,
            )
        ]
    )
