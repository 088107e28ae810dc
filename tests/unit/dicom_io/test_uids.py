from __future__ import annotations

import uuid

import pytest

from dicom_io.uids import child_uid, is_valid_uid, seg_instance_uid, seg_series_uid

SOURCE_SERIES = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
SOURCES = [f"1.2.840.113619.2.55.3.604688119.969.1268071029.{n}" for n in range(321, 331)]


@pytest.mark.parametrize(
    "value",
    ["0", "1.2", "1.2.840.10008.1.2.1", "2.25.0", "2.25." + "9" * 59, "1.0.3"],
)
def test_valid_uids(value: str) -> None:
    assert is_valid_uid(value)


@pytest.mark.parametrize(
    "value",
    ["", "1.02", "01.2", "1..2", ".1", "1.", "1.2a", "1.2 ", " 1.2", "2.25." + "9" * 60, "1,2", "-1.2"],
)
def test_invalid_uids(value: str) -> None:
    assert not is_valid_uid(value)


def test_series_uid_is_deterministic_valid_and_in_the_2_25_arc() -> None:
    uid = seg_series_uid(SOURCE_SERIES, "abdomen-ct", "MedImageParse", "2024.1")
    assert uid == seg_series_uid(SOURCE_SERIES, "abdomen-ct", "MedImageParse", "2024.1")
    assert is_valid_uid(uid)
    assert uid.startswith("2.25.")
    # the integer is a real (version 5, RFC 4122 variant) UUID, as ISO/IEC 9834-8 expects
    parsed = uuid.UUID(int=int(uid.removeprefix("2.25.")))
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "changed",
    [
        ("1.2.3.4", "abdomen-ct", "MedImageParse", "2024.1"),
        (SOURCE_SERIES, "chest-ct", "MedImageParse", "2024.1"),
        (SOURCE_SERIES, "abdomen-ct", "MedImageParse3D", "2024.1"),
        (SOURCE_SERIES, "abdomen-ct", "MedImageParse", "2024.2"),
    ],
)
def test_any_changed_series_input_changes_the_series_uid(changed: tuple[str, str, str, str]) -> None:
    assert seg_series_uid(*changed) != seg_series_uid(SOURCE_SERIES, "abdomen-ct", "MedImageParse", "2024.1")


def test_inputs_are_length_prefixed_so_shifted_boundaries_differ() -> None:
    assert seg_series_uid(SOURCE_SERIES, "a", "bc", "1") != seg_series_uid(SOURCE_SERIES, "ab", "c", "1")
    assert seg_series_uid(SOURCE_SERIES, "a:b", "c", "1") != seg_series_uid(SOURCE_SERIES, "a", "b:c", "1")
    series = seg_series_uid(SOURCE_SERIES, "r", "m", "1")
    assert seg_instance_uid(series, ["1.2", "3.4"]) != seg_instance_uid(series, ["1.23.4"])


def test_instance_uid_depends_on_the_set_of_sources_only() -> None:
    series = seg_series_uid(SOURCE_SERIES, "abdomen-ct", "MedImageParse", "2024.1")
    uid = seg_instance_uid(series, SOURCES)
    assert is_valid_uid(uid)
    assert seg_instance_uid(series, list(reversed(SOURCES))) == uid
    assert seg_instance_uid(series, SOURCES + SOURCES[:3]) == uid
    assert seg_instance_uid(series, iter(SOURCES)) == uid
    assert seg_instance_uid(series, SOURCES[:-1]) != uid
    # the same sources asked other questions under the same rule name: another object
    assert seg_instance_uid(series, SOURCES, ["BINARY", "liver"]) != seg_instance_uid(
        series, SOURCES, ["BINARY"]
    )
    assert seg_instance_uid(series, SOURCES, ["liver", "x"]) != seg_instance_uid(series, SOURCES, ["liverx"])
    other_series = seg_series_uid(SOURCE_SERIES, "abdomen-ct", "MedImageParse", "2024.2")
    assert seg_instance_uid(other_series, SOURCES) != uid


def test_series_and_instance_uids_never_coincide_for_the_same_strings() -> None:
    # the purpose tag separates the two derivations
    series = seg_series_uid(SOURCE_SERIES, "r", "m", "v")
    assert seg_instance_uid(series, [SOURCE_SERIES]) != series
    assert child_uid(series, "dimension-organization") not in {series, seg_instance_uid(series, [series])}


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="source_series_uid"):
        seg_series_uid("1.02.3", "r", "m", "v")
    series = seg_series_uid(SOURCE_SERIES, "r", "m", "v")
    with pytest.raises(ValueError, match="at least one"):
        seg_instance_uid(series, [])
    with pytest.raises(ValueError, match="source SOP Instance UID"):
        seg_instance_uid(series, ["1.2.3", "not-a-uid"])
    with pytest.raises(ValueError, match="seg_series_uid"):
        seg_instance_uid("x", SOURCES)


def test_uid_length_is_bounded() -> None:
    # 2.25. + at most 39 digits (2**128 - 1): always within the 64-character limit
    longest = f"2.25.{2**128 - 1}"
    assert len(longest) == 44
    assert all(len(seg_series_uid(SOURCE_SERIES, str(n), "m", "v")) <= 44 for n in range(200))
