"""Spooling and handing complete series over as jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.testing.phantoms import volume_phantom
from service.completion import CompletionTracker, facts_from_header
from service.intake import Intake
from service.spool import SpoolError, store_instance
from tests.helpers import IntakeQueue
from workers.jobs import JobState, Route
from workers.storage import DataDir
from workers.store import get_job, open_store


def _encoded(ds: object) -> bytes:
    import io

    import pydicom

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_spool_is_atomic_idempotent_and_refuses_bad_uids(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    ds = volume_phantom(slices=1).datasets[0]
    first = store_instance(data, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, _encoded(ds))
    again = store_instance(data, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, _encoded(ds))
    assert (first.repeated, again.repeated) == (False, True)
    assert [p.name for p in first.path.parent.iterdir()] == [f"{ds.SOPInstanceUID}.dcm"]  # no leftovers
    with pytest.raises(SpoolError, match="not a valid UID"):
        store_instance(data, "1.2", "../../etc", "1.2.3", b"x")


def test_a_complete_series_becomes_one_queued_job_and_a_repeat_does_not(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}", migrate=True)
    queue = IntakeQueue()
    intake = Intake(data, store, queue, CompletionTracker(), actor="test")
    phantom = volume_phantom(slices=5, seed=4)

    def send(association: str) -> None:
        intake.association_opened(association)
        for ds in phantom.datasets:
            store_instance(data, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, _encoded(ds))
            intake.received(
                facts_from_header(ds, route=Route.DIMSE, calling_ae="CT1", association=association)
            )

    send("a1")
    (job,) = intake.association_released("a1")
    send("a2")  # the PACS sends the same series again
    (repeat,) = intake.association_released("a2")
    assert repeat.id == job.id
    assert queue.processed == [job.id]
    with store.session() as s:
        stored = get_job(s, job.id)
    assert stored.state is JobState.QUEUED
    assert stored.instance_count == 5
    assert stored.calling_ae_title == "CT1"
    assert "association released" in (stored.completion_reason or "")
    assert data.resolve(stored.spool_path or "") == data.incoming_series(
        phantom.datasets[0].StudyInstanceUID, phantom.datasets[0].SeriesInstanceUID
    )
