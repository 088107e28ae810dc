"""Pulling a study from a real Orthanc into the spool: WADO-RS and C-GET."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from config.rules_file import default_rules_path
from config.settings import Settings
from dicom_io.testing.phantoms import volume_phantom
from tests.helpers import IntakeQueue
from tests.peers import Orthanc, free_ports
from workers.context import build_deps
from workers.errors import DeliveryError
from workers.jobs import JobState, Route
from workers.pull import pull, series_in_study
from workers.pull_jobs import pull_job
from workers.rules_loader import RulesSource
from workers.storage import DataDir
from workers.store import create_job, get_job, open_store

pytestmark = pytest.mark.integration
OUR_AE = "MIPGW"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, list[pydicom.Dataset]]]:
    # our AE must be a known modality for Orthanc to answer its C-GET (the port is never dialled)
    with Orthanc(tmp_path_factory.mktemp("orthanc"), {"mipgw": (OUR_AE, free_ports(1)[0])}) as orthanc:
        first = volume_phantom(slices=6, seed=1)
        other_study = volume_phantom(slices=4, seed=2)  # must not come along
        datasets = list(first.datasets) + list(other_study.datasets)
        folder = tmp_path_factory.mktemp("upload")
        for n, ds in enumerate(datasets):
            path = folder / f"{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            orthanc.client.post("/instances", content=path.read_bytes()).raise_for_status()
        yield orthanc, list(first.datasets)


@pytest.mark.parametrize("how", ["wado", "cget"])
def test_a_study_is_pulled_series_by_series(
    tmp_path: Path, pacs: tuple[Orthanc, list[pydicom.Dataset]], how: str
) -> None:
    orthanc, sent = pacs
    node = orthanc.dicomweb_node() if how == "wado" else orthanc.dicom_node()
    study = sent[0].StudyInstanceUID
    data = DataDir(tmp_path)
    pulled = pull("pacs", node, study, None, data, calling_ae=OUR_AE)
    assert pulled.series == {sent[0].SeriesInstanceUID: 6}
    assert ("WADO-RS" if how == "wado" else "C-GET") in pulled.how
    folder = data.incoming_series(study, sent[0].SeriesInstanceUID)
    stored = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in folder.glob("*.dcm")}
    for ds in sent:
        assert (stored[ds.SOPInstanceUID].pixel_array == ds.pixel_array).all()


def test_an_unknown_study_pulls_nothing_and_a_dead_node_is_retryable(
    tmp_path: Path, pacs: tuple[Orthanc, list[pydicom.Dataset]]
) -> None:
    orthanc, _ = pacs
    assert (
        pull("pacs", orthanc.dicomweb_node(), "1.2.3.4.5", None, DataDir(tmp_path), calling_ae=OUR_AE).series
        == {}
    )
    dead = orthanc.dicomweb_node(url=f"http://127.0.0.1:{free_ports(1)[0]}/dicom-web")
    with pytest.raises(DeliveryError) as err:
        pull("pacs", dead, "1.2.3", None, DataDir(tmp_path), calling_ae=OUR_AE)
    assert err.value.retryable


@pytest.mark.parametrize("how", ["qido", "cfind"])
def test_the_series_of_a_study_are_found(pacs: tuple[Orthanc, list[pydicom.Dataset]], how: str) -> None:
    orthanc, sent = pacs
    node = orthanc.dicomweb_node() if how == "qido" else orthanc.dicom_node()
    found = series_in_study("pacs", node, sent[0].StudyInstanceUID, calling_ae=OUR_AE)
    assert found == [sent[0].SeriesInstanceUID]


def test_a_pull_job_is_filled_then_queued(
    tmp_path: Path, pacs: tuple[Orthanc, list[pydicom.Dataset]]
) -> None:
    orthanc, sent = pacs
    settings = Settings(data_dir=tmp_path / "data", sources={"pacs": orthanc.dicomweb_node().model_dump()})
    queue = IntakeQueue()
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}", migrate=True)
    deps = build_deps(settings, store, queue, actor="test", rules=RulesSource(default_rules_path()))
    with store.session() as s:
        job = create_job(
            s,
            actor="api",
            source="pacs",
            route=Route.API,
            study_instance_uid=sent[0].StudyInstanceUID,
            series_instance_uid=sent[0].SeriesInstanceUID,
            instance_count=0,
        )
        missing = create_job(
            s,
            actor="api",
            source="pacs",
            route=Route.API,
            study_instance_uid=sent[0].StudyInstanceUID,
            series_instance_uid="1.2.3.999",
            instance_count=0,
        )
    assert pull_job(job.id, deps) is JobState.QUEUED
    assert queue.processed == [job.id]
    with store.session() as s:
        pulled = get_job(s, job.id)
    assert pulled.completion_reason == f"pulled by WADO-RS from {orthanc.dicomweb_url}: 6 instance(s)"
    assert len(list(deps.data.resolve(pulled.spool_path or "").glob("*.dcm"))) == 6
    assert pull_job(job.id, deps) is JobState.QUEUED  # a redelivered task pulls nothing twice
    assert pull_job(missing.id, deps) is JobState.FAILED
