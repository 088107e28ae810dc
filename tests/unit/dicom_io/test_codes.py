from __future__ import annotations

import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_io import codes as codes_module
from dicom_io.codes import (
    ENDPOINT_CATEGORIES,
    LOCAL_SCHEME,
    UNSPECIFIED_CATEGORY,
    CodedTarget,
    coded_target,
    normalise_prompt,
)

ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")


def _sct(code: Code) -> tuple[str, str]:
    return (code.scheme_designator, code.value)


@pytest.mark.parametrize(
    ("prompt", "category", "type_value"),
    [
        ("liver", ANATOMY, "10200004"),
        ("spleen", ANATOMY, "78961009"),
        ("pancreas", ANATOMY, "15776009"),
        ("kidney", ANATOMY, "64033007"),
        ("gallbladder", ANATOMY, "28231008"),
        ("stomach", ANATOMY, "69695003"),
        ("aorta", ANATOMY, "15825003"),
        ("lung", ANATOMY, "39607008"),
        ("heart", ANATOMY, "80891009"),
        ("brain", ANATOMY, "12738006"),
        ("urinary bladder", ANATOMY, "89837001"),
        ("bladder", ANATOMY, "89837001"),
        ("prostate", ANATOMY, "41216001"),
        ("esophagus", ANATOMY, "32849002"),
        ("duodenum", ANATOMY, "38848004"),
        ("adrenal gland", ANATOMY, "23451007"),
        ("postcava", ANATOMY, "64131007"),
        ("inferior vena cava", ANATOMY, "64131007"),
        ("uterus", ANATOMY, "35039007"),
        ("left heart ventricle", ANATOMY, "87878005"),
        ("right heart ventricle", ANATOMY, "53085002"),
        ("left heart atrium", ANATOMY, "82471001"),
        ("right heart atrium", ANATOMY, "73829009"),
        ("myocardium", ANATOMY, "74281007"),
        ("optic disc", ANATOMY, "81016008"),
        ("vessel", ANATOMY, "59820001"),
        ("tumor", ABNORMAL, "108369006"),
        ("neoplasm", ABNORMAL, "108369006"),
        ("nodule", ABNORMAL, "27925004"),
        ("cyst", ABNORMAL, "367643001"),
        ("lesion", ABNORMAL, "52988006"),
        ("edema", ABNORMAL, "79654002"),
        ("polyp", ABNORMAL, "41329004"),
        ("cells", TISSUE, "4421005"),
    ],
)
def test_known_targets_are_coded_with_snomed(prompt: str, category: Code, type_value: str) -> None:
    target = coded_target(prompt)
    assert target.category == category
    assert target.category.meaning == category.meaning
    assert _sct(target.type) == ("SCT", type_value)
    assert target.type_modifier is None
    assert not target.uses_local_codes


@pytest.mark.parametrize(
    ("prompt", "organ", "side"),
    [
        ("left kidney", "64033007", LEFT),
        ("right kidney", "64033007", RIGHT),
        ("left lung", "39607008", LEFT),
        ("Right Lung", "39607008", RIGHT),
        ("left adrenal gland", "23451007", LEFT),
        ("right adrenal gland in abdomen CT", "23451007", RIGHT),
        ("left kidneys", "64033007", LEFT),
    ],
)
def test_laterality_is_a_cid_244_modifier_on_the_organ(prompt: str, organ: str, side: Code) -> None:
    target = coded_target(prompt)
    assert target.category == ANATOMY
    assert _sct(target.type) == ("SCT", organ)
    assert target.type_modifier == side
    assert target.type_modifier.meaning == side.meaning


@pytest.mark.parametrize(
    ("prompt", "normalised"),
    [
        ("liver in abdomen CT", "liver"),
        ("CT scan of the pancreas in the abdominal region", "pancreas"),
        ("gallbladder in abdomen MRI", "gallbladder"),
        ("  Left   KIDNEY ", "left kidney"),
        ("neoplastic cells in breast pathology", "neoplastic cells"),
        ("MRI of the brain", "brain"),
        ("the spleen", "spleen"),
        ("liver CT", "liver"),
        ("COVID-19 infection", "covid 19 infection"),
        ("lower-grade glioma", "lower grade glioma"),
        ("X-ray image of the lungs", "lungs"),
        ("Œdème péri-tumoral", "œdème péri tumoral"),
    ],
)
def test_normalisation_strips_case_whitespace_and_modality_context(prompt: str, normalised: str) -> None:
    assert normalise_prompt(prompt) == normalised


@pytest.mark.parametrize(
    ("prompt", "type_value"),
    [
        ("kidneys", "64033007"),
        ("lungs", "39607008"),
        ("Liver in abdomen CT", "10200004"),
        ("CT scan of the pancreas in the abdominal region", "15776009"),
        ("tumor core", "108369006"),
        ("enhancing tumor", "108369006"),
        ("whole tumor", "108369006"),
        ("kidney cyst", "367643001"),
        ("nodules", "27925004"),
        ("masses", "4147007"),
        ("neoplastic cells in breast pathology", "4421005"),
        ("inflammatory cells", "4421005"),
        ("lower-grade glioma", "108369006"),
        ("tumour", "108369006"),
        ("oedema", "79654002"),
    ],
)
def test_phrasings_and_plurals_reach_the_table(prompt: str, type_value: str) -> None:
    assert coded_target(prompt).type.value == type_value


@pytest.mark.parametrize(
    ("endpoint_category", "expected"),
    [
        ("eye anatomies", ANATOMY),
        ("other organ", ANATOMY),
        ("vessel", ANATOMY),
        ("infection", ABNORMAL),
        ("fluid disturbance", ABNORMAL),
        ("other lesion", ABNORMAL),
        ("histology structure", TISSUE),
        ("Tumor", ABNORMAL),
        ("other", UNSPECIFIED_CATEGORY),
        ("not one of the sixteen", UNSPECIFIED_CATEGORY),
        (None, UNSPECIFIED_CATEGORY),
    ],
)
def test_unknown_prompts_take_the_category_from_the_endpoint(
    endpoint_category: str | None, expected: Code
) -> None:
    target = coded_target("optic cup", endpoint_category)
    assert target.category == expected
    assert target.type.scheme_designator == LOCAL_SCHEME
    assert target.type.meaning == "optic cup"
    assert target.uses_local_codes


def test_local_codes_are_deterministic_short_and_shared_by_equivalent_phrasings() -> None:
    one = coded_target("COVID-19 infection", "infection")
    again = coded_target("covid-19   INFECTION in chest CT", "infection")
    other = coded_target("viral pneumonia", "infection")
    assert one.type == again.type
    assert one.type.value != other.type.value
    assert len(one.type.value) <= 16  # SH
    assert one.type.value.startswith("MIP-")
    long = coded_target("a very long description of something " * 5, "other")
    assert len(long.type.meaning) <= 64  # LO


def test_known_prompt_wins_over_the_endpoint_category() -> None:
    assert coded_target("liver", "tumor").category == ANATOMY


def test_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="empty prompt"):
        coded_target("   ")


def test_the_sixteen_endpoint_categories_are_all_mapped() -> None:
    assert len(ENDPOINT_CATEGORIES) == 16


def test_categories_come_from_cid_7150_and_types_from_its_segmentation_cids() -> None:
    # the standard's value sets as pydicom ships them (generated from PS3.16)
    cid_7150 = {getattr(codes.SCT, k).value for k in cid_concepts[7150]["SCT"]}
    types: set[str] = set()
    for cid in (7151, 7152, 7154, 7155, 7160, 7192, 7194, 4209):
        types |= {getattr(codes.SCT, k).value for k in cid_concepts[cid].get("SCT", [])}
    # verified outside pydicom (SNOMED CT): myocardium 74281007, polyp 41329004; cell 4421005
    # is SCT "Cell" (CID 8135), the type under category Tissue
    outside = {"74281007", "41329004", "4421005"}
    for key, (category, type_) in codes_module._TARGETS.items():
        assert category.value in cid_7150 or category == UNSPECIFIED_CATEGORY, key
        assert type_.value in types | outside, key
    for side in (LEFT, RIGHT):
        assert side.value in {getattr(codes.SCT, k).value for k in cid_concepts[244]["SCT"]}


def test_coded_target_is_frozen() -> None:
    target = coded_target("liver")
    assert isinstance(target, CodedTarget)
    with pytest.raises(AttributeError):
        target.category = ABNORMAL  # type: ignore[misc]
