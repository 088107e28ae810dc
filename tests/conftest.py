"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SHARED_DICOM


@pytest.fixture
def shared_dicom() -> Path:
    """The real DICOM sets next to the checkout (``../shared``); tests skip cleanly without them."""
    if not SHARED_DICOM.is_dir():
        pytest.skip(f"real DICOM data not present at {SHARED_DICOM}")
    return SHARED_DICOM
