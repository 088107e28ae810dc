"""Bearer keys: every route but /healthz, STOW keys on STOW only, keys files re-read, no keys refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.settings import ApiSettings
from service.api.auth import ApiKeys, Scope
from service.api.problems import ForbiddenError, UnauthorizedError


def test_keys_and_stow_keys() -> None:
    keys = ApiKeys.from_settings(ApiSettings(keys=["general"], stow_keys=["sender"]))
    keys.check("general", Scope.API)
    keys.check("general", Scope.STOW)
    keys.check("sender", Scope.STOW)
    with pytest.raises(ForbiddenError):
        keys.check("sender", Scope.API)
    for bad in (None, "", "generalX", "Bearer general"):
        with pytest.raises(UnauthorizedError):
            keys.check(bad, Scope.STOW)


def test_a_keys_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# rotated monthly\nfirst\n\n")
    keys = ApiKeys.from_settings(ApiSettings(keys_file=path))
    assert keys.configured()
    keys.check("first", Scope.API)
    path.write_text("second\n")
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    keys.check("second", Scope.API)
    with pytest.raises(UnauthorizedError):
        keys.check("first", Scope.API)
    with pytest.raises(UnauthorizedError):
        keys.check("# rotated monthly", Scope.API)


def test_no_keys_and_a_missing_file(tmp_path: Path) -> None:
    assert not ApiKeys.from_settings(ApiSettings()).configured()
    (tmp_path / "empty").write_text("\n# nothing\n")
    assert not ApiKeys.from_settings(ApiSettings(keys_file=tmp_path / "empty")).configured()
    with pytest.raises(FileNotFoundError):
        ApiKeys.from_settings(ApiSettings(keys_file=tmp_path / "missing"))
