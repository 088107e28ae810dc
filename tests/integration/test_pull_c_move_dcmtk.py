"""C-MOVE pulls against a second real archive, dcmtk's ``dcmqrscp``, into the gateway's real listener.

The listener (in process, with its intake and idle timer running) is the move destination. What
the archive stores for one of our C-MOVEs names us as Move Originator and must never start a job of
its own; what it stores for somebody else's C-MOVE (a viewer sending a study to the gateway) is an
ordinary arrival. An unknown destination is 0xA801 from dcmqrscp: final, with what to configure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from config.settings import DicomNode, ListenerSettings, Settings
from dicom_io.testing.modules import StudyInfo
from dicom_io.testing.phantoms import volume_phantom
from service.completion import CompletionTracker
from service.intake import Intake
from service.scp import DicomListener
from tests.helpers import IntakeQueue
from tests.peers import QueryRetrieveSCP
from workers.errors import DeliveryError
from workers.jobs import Route
from workers.pull import Pulled, pull
from workers.storage import DataDir
from workers.store import JobView, Store, list_jobs, open_store

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
OUR_AE = "MIPGW"
ARCHIVE_AE = "DCMQRSCP"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
WAIT_S = 30.0  # a bound for what happens in the background, never a timing assertion


@dataclass
class Setup:
    archive: QueryRetrieveSCP
    listener: DicomListener
    intake: Intake
    store: Store
    data: DataDir
    series: dict[str, list[pydicom.Dataset]]

    @property
    def study(self) -> str:
        return str(next(iter(self.series.values()))[0].StudyInstanceUID)

    def jobs(self) -> list[JobView]:
        with self.store.session(readonly=True) as s:
            return list_jobs(s)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    settings = Settings(
        data_dir=tmp_path / "data",
        ae_title=OUR_AE,
        # the archive is not on the allow-list: as a C-MOVE source it is let in to store
        listener=ListenerSettings(
            bind=LOOPBACK,
            port=0,
            allowed_calling_aes=("STORESCU",),
            spool_reserve_bytes=0,
            completion_idle_s=0.5,
        ),
        sources={
            "archive": DicomNode(ae_title=ARCHIVE_AE, host=LOOPBACK, port=1, retrieve="c-move"),
        },
    )
    data = DataDir(settings.data_dir)
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'jobs.sqlite3'}", migrate=True)
    intake = Intake(data, store, IntakeQueue(), CompletionTracker(idle_s=0.5), actor="scp", tick_s=0.1)
    listener = DicomListener(settings, intake, data, grace_s=5)
    listener.start()
    intake.start()
    try:
        info = StudyInfo.seeded(
            31, patient_name="MOVE^TEST", patient_id="MOVE1", study_description="CT MOVE", key="move"
        )
        phantoms = [
            volume_phantom(slices=4, seed=31, study=info, series_number=1),
            volume_phantom(slices=3, seed=32, study=info, series_number=2),
        ]
        with QueryRetrieveSCP(tmp_path / "archive", {"mipgw": (OUR_AE, listener.port)}) as archive:
            files = [path for n, p in enumerate(phantoms) for path in p.write(tmp_path / f"series{n}")]
            archive.add([Path(f) for f in files])
            series = {str(p.datasets[0].SeriesInstanceUID): list(p.datasets) for p in phantoms}
            yield Setup(archive, listener, intake, store, data, series)
    finally:
        listener.stop()
        intake.stop()
        store.close()


def settle(setup: Setup) -> None:
    """Let the archive's association end and the idle timer (0.5 s) have its chance."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (setup.intake.tracker.pending() or setup.listener._live()):
        time.sleep(0.05)
    time.sleep(1.0)


def move(setup: Setup, series: str | None, destination: str = OUR_AE) -> Pulled:
    """What a pull job does: C-MOVE from the archive, as our AE, to ``destination``."""
    node = setup.archive.dicom_node(retrieve="c-move")
    return pull(
        "archive", node, setup.study, series, setup.data, calling_ae=OUR_AE, move_destination=destination
    )


def spooled(setup: Setup, series: str) -> dict[str, pydicom.Dataset]:
    folder = setup.data.incoming_series(setup.study, series)
    return {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, sorted(folder.glob("*.dcm")))}


def test_a_series_moved_for_a_pull_lands_in_the_spool_and_starts_no_job(setup: Setup) -> None:
    series, sent = sorted(setup.series.items())[0]
    pulled = move(setup, series)
    assert pulled.series == {series: len(sent)}
    assert pulled.how == f"C-MOVE from {ARCHIVE_AE}@127.0.0.1:{setup.archive.port}"
    stored = spooled(setup, series)
    assert set(stored) == {str(ds.SOPInstanceUID) for ds in sent}
    for ds in sent:
        assert (stored[str(ds.SOPInstanceUID)].pixel_array == ds.pixel_array).all()
    settle(setup)
    assert setup.jobs() == []
    assert setup.intake.tracker.pending() == 0


def test_a_whole_study_moved_for_a_pull_is_counted_per_series(setup: Setup) -> None:
    pulled = move(setup, None)
    assert pulled.series == {uid: len(sent) for uid, sent in setup.series.items()}
    settle(setup)
    assert setup.jobs() == []


def test_somebody_elses_c_move_to_the_gateway_is_an_ordinary_arrival(setup: Setup) -> None:
    """A viewer moving a series to the gateway wants it processed: its AE is the Move Originator."""
    series, sent = sorted(setup.series.items())[1]
    viewer = AE("VIEWER")
    viewer.add_requested_context(STUDY_ROOT_MOVE)
    assoc = viewer.associate(LOOPBACK, setup.archive.port, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = setup.study
    query.SeriesInstanceUID = series
    try:
        statuses = [status.Status for status, _ in assoc.send_c_move(query, OUR_AE, STUDY_ROOT_MOVE)]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    deadline = time.monotonic() + WAIT_S
    while not setup.jobs() and time.monotonic() < deadline:
        time.sleep(0.05)
    (job,) = setup.jobs()
    assert (job.series_instance_uid, job.route, job.instance_count) == (series, Route.DIMSE, len(sent))
    assert job.source == ARCHIVE_AE  # the calling AE of the association that stored it


def test_a_destination_the_archive_does_not_know_is_a_final_a801(setup: Setup) -> None:
    series = sorted(setup.series)[0]
    with pytest.raises(DeliveryError) as caught:
        move(setup, series, "NOBODY")
    assert caught.value.retryable is False
    assert caught.value.reason == (
        f"C-MOVE from {ARCHIVE_AE}@127.0.0.1:{setup.archive.port} refused with 0xA801, the move "
        "destination is unknown to it: add AE 'NOBODY' (this gateway's listener, its host and port) to "
        "archive's DICOM nodes"
    )
    assert not setup.data.incoming_series(setup.study, series).exists()
