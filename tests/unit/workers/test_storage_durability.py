"""Durable names: new folders and renamed files have their directory synced after the content.

``os.fsync`` is wrapped to record what each call synced; the real call still runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.storage import DataDir, atomic_write_bytes, make_durable_dirs, store_instance

UID = "1.2.826.0.1.3680043.8.498"


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was fsynced: 'file' or the directory's path, in order."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        path = Path(f"/proc/self/fd/{fd}").resolve()
        seen.append(str(path) if path.is_dir() else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_new_folders_have_their_parents_synced(tmp_path: Path, synced: list[str]) -> None:
    make_durable_dirs(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert synced == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    synced.clear()
    make_durable_dirs(tmp_path / "a" / "b" / "c")  # already there: nothing to sync
    assert synced == []


def test_a_stored_instance_is_synced_then_its_name(tmp_path: Path, synced: list[str]) -> None:
    data = DataDir(tmp_path)
    data.root.joinpath("incoming").mkdir(parents=True)
    stored = store_instance(data, f"{UID}.1", f"{UID}.2", f"{UID}.3", b"DICM")
    series = stored.path.parent
    assert synced[-2:] == ["file", str(series)]  # content first, then the rename's directory
    assert str(series.parent) in synced  # the new series folder's own name


def test_atomic_writes_sync_the_rename(tmp_path: Path, synced: list[str]) -> None:
    (tmp_path / "out").mkdir()
    atomic_write_bytes(tmp_path / "out" / "x.json", b"{}")
    assert synced == ["file", str(tmp_path / "out")]
    synced.clear()
    atomic_write_bytes(tmp_path / "out" / "y.json", b"{}", fsync=False)
    assert synced == []
