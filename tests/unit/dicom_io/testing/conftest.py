"""Fixtures for the test-data generators' own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest


@pytest.fixture(autouse=True)
def strict_writing() -> Iterator[None]:
    """Make pydicom refuse to write an invalid value (a DS over 16 characters, a bad UID) instead of
    warning, so a generator that produces one fails here."""
    saved = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
    yield
    pydicom.config.settings.writing_validation_mode = saved
