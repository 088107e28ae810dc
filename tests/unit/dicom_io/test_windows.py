from __future__ import annotations

import numpy as np
import pytest

from dicom_io.windows import (
    WINDOWS_2D,
    WINDOWS_3D,
    ModelKind,
    get_window,
    percentile_to_unit_range,
    to_uint8,
    window_to_unit_range,
)


def test_reference_presets_are_exact() -> None:
    assert {k: (p.lower, p.upper) for k, p in WINDOWS_2D.items()} == {
        "abdomen": (-150, 250),
        "lung": (-1000, 1000),
        "pelvis": (-55, 200),
        "liver": (-25, 230),
        "colon": (-68, 187),
        "pancreas": (-100, 200),
    }
    assert {k: (p.width, p.level) for k, p in WINDOWS_3D.items()} == {
        "soft_tissue": (400, 40),
        "lung": (1500, -160),
        "brain": (80, 40),
        "bone": (1800, 400),
    }


def test_window_names_are_model_specific() -> None:
    assert get_window("Soft tissue", "3d").name == "soft_tissue"
    assert get_window("lung", ModelKind.TWO_D).lower == -1000
    assert get_window("lung", ModelKind.THREE_D).lower == -910
    with pytest.raises(ValueError, match="unknown 2d CT window 'brain'"):
        get_window("brain", "2d")


def test_window_min_maxes_the_clipped_values_like_the_reference() -> None:
    hu = np.array([[-1000.0, -150.0], [50.0, 3000.0]], dtype=np.float32)
    np.testing.assert_allclose(window_to_unit_range(hu, WINDOWS_2D["abdomen"]), [[0, 0], [127.5, 255]])
    # a slice that never reaches the upper bound is stretched, exactly as the reference does
    partial = np.array([-150.0, 0.0, 50.0], dtype=np.float32)
    np.testing.assert_allclose(window_to_unit_range(partial, WINDOWS_2D["abdomen"]), [0, 191.25, 255])


def test_flat_image_does_not_divide_by_zero() -> None:
    air = np.full((4, 4), -1000.0, dtype=np.float32)
    assert not window_to_unit_range(air, WINDOWS_2D["abdomen"]).any()
    assert not percentile_to_unit_range(np.zeros((4, 4), dtype=np.float32)).any()


def test_percentiles_ignore_zero_background() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((100, 100), dtype=np.float32)
    image[20:80, 20:80] = rng.uniform(100, 200, (60, 60))
    scaled = percentile_to_unit_range(image)
    inside = image[image > 0]
    low, high = np.percentile(inside, [0.5, 99.5])
    expected = (np.clip(image, low, high) - low) / (high - low) * 255
    np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-3)


def test_to_uint8_clips_and_rounds() -> None:
    values = np.array([-3.2, 0.49, 0.5001, 254.6, 260.0], dtype=np.float32)
    assert to_uint8(values).tolist() == [0, 0, 1, 255, 255]
