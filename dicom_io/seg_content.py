"""What a SEG says besides its pixels: segment descriptions, coding schemes, equipment, stamps.

Split from :mod:`dicom_io.seg` to keep both modules readable; everything here works on the
highdicom objects :func:`dicom_io.seg.build_seg` creates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, DT, TM

from dicom_io.codes import LOCAL_SCHEME, LOCAL_SCHEME_NAME, CodedTarget
from dicom_io.uids import child_uid

if TYPE_CHECKING:
    from dicom_io.seg import AlgorithmInfo

__all__ = ["character_set", "clean_text", "coding_schemes", "describe_segment", "finish", "plain_dataset"]

_LABEL_MAX = 64  # SegmentLabel is LO
_DESCRIPTION_MAX = 1024  # SegmentDescription is ST
# IHE AI Results profile code for the model's ContributingEquipment item (MONAI Deploy writes it too).
_PROCESSING_ALGORITHM = hd.sr.CodedConcept("Newcode1", "99IHE", "Processing Algorithm")


def clean_text(text: str) -> str:
    # Backslash separates values in LO (the label); control characters are not allowed in LO or ST.
    return " ".join("".join(" " if c == "\\" or not c.isprintable() else c for c in text).split())


def describe_segment(
    number: int, prompt: str, target: CodedTarget, algorithm: AlgorithmInfo
) -> hd.seg.SegmentDescription:
    text = clean_text(prompt)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=text[:_LABEL_MAX],
        segmented_property_category=target.category,
        segmented_property_type=target.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name,
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm.version,
            source=algorithm.source,
        ),
    )
    description.SegmentDescription = text[:_DESCRIPTION_MAX]
    if target.type_modifier is not None:
        # PS3.3 C.8.20.4: the modifier (baseline CID 244 Laterality) sits inside the type item.
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(target.type_modifier)
        ]
    return description


def coding_schemes(targets: Sequence[CodedTarget]) -> list[CodingSchemeIdentificationItem]:
    schemes = [CodingSchemeIdentificationItem("99IHE", name="IHE (AI Results profile)")]
    if any(t.uses_local_codes for t in targets):
        schemes.append(CodingSchemeIdentificationItem(LOCAL_SCHEME, name=LOCAL_SCHEME_NAME))
    return schemes


def character_set(texts: Sequence[str], source: Dataset) -> str | list[str] | None:
    # Patient names etc. are copied from the source, so keep its character set; switch to UTF-8
    # when a prompt is not ASCII (pydicom re-encodes the copied, already decoded names).
    if not all(t.isascii() for t in texts):
        return "ISO_IR 192"
    current = source.get("SpecificCharacterSet")
    return current if current is None or isinstance(current, str) else list(current)


def finish(
    seg: Dataset,
    patient_orientation: Sequence[str],
    algorithm: AlgorithmInfo,
    when: dt.datetime,
    sop_uid: str,
) -> None:
    """Make the output deterministic and complete where highdicom stamps "now" or random UIDs."""
    seg.InstanceCreationDate = DA(when.date())
    seg.InstanceCreationTime = TM(when.time())
    dimension_uid = child_uid(sop_uid, "dimension-organization")
    seg.DimensionOrganizationSequence[0].DimensionOrganizationUID = dimension_uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = dimension_uid
    for item in seg.ContributingEquipmentSequence:
        if "ContributionDateTime" in item and item.get("ManufacturerModelName") == "highdicom":
            item.ContributionDateTime = DT(when)
    seg.ContributingEquipmentSequence.append(_model_equipment(algorithm, when))

    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared:
        # General Image: Patient Orientation is Type 2C when there is no plane orientation.
        seg.PatientOrientation = list(patient_orientation)
        measures = shared.get("PixelMeasuresSequence")
        if measures and any(float(v) <= 0 for v in measures[0].get("PixelSpacing") or ()):
            del shared.PixelMeasuresSequence  # e.g. a CR that says PixelSpacing 0\0


def _model_equipment(algorithm: AlgorithmInfo, when: dt.datetime) -> Dataset:
    item = Dataset()
    item.Manufacturer = (algorithm.source or algorithm.name)[:64]
    item.ManufacturerModelName = algorithm.name[:64]
    item.SoftwareVersions = algorithm.version[:64]
    item.ContributionDateTime = DT(when)
    item.ContributionDescription = "AI model that produced the segments"
    item.PurposeOfReferenceCodeSequence = [_PROCESSING_ALGORITHM]
    return item


def plain_dataset(seg: hd.seg.Segmentation) -> Dataset:
    # Callers get a plain pydicom Dataset: the highdicom object's lookup tables would be stale
    # after strip_synthetic_geometry, and nothing downstream should rely on them.
    out = Dataset(seg)
    out.file_meta = seg.file_meta
    out.preamble = b"\x00" * 128  # so that a plain save_as() writes a DICOM Part 10 file too
    return out
