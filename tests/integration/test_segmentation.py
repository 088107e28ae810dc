"""One series through one model against the mock endpoint over HTTP: SEGs that are valid and right."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from config.settings import EndpointSettings
from dicom_io.nifti3d import NiftiLayout
from dicom_io.reading import scan
from dicom_io.seg import AlgorithmInfo, SegmentationType
from dicom_io.series import Series, SeriesKind, assemble
from dicom_io.testing import cr_dx_image, write_datasets
from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.phases import phased_series
from dicom_io.windows import ModelKind
from service.mock_endpoint import MockEndpointServer
from tests.helpers import dciodvfy_errors, written_series
from workers.endpoint.client import EndpointClient, JobContext
from workers.jobs import Stage
from workers.segmentation import PhaseChoice, PromptGroup, SegmentationTask, segment_series

pytestmark = pytest.mark.integration
WHEN = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
ALGORITHM = AlgorithmInfo("MedImageParse (mock)", "test")


@pytest.fixture(scope="module")
def mock() -> Iterator[MockEndpointServer]:
    with MockEndpointServer() as server:
        yield server


def _client(mock: MockEndpointServer, model: str) -> EndpointClient:
    return EndpointClient(f"segmentation-{model}", EndpointSettings(url=mock.score_url, model=model))


def _written(result_dataset: object, folder: Path) -> hd.seg.Segmentation:
    path = folder / "seg.dcm"
    result_dataset.save_as(path, enforce_file_format=True)  # type: ignore[attr-defined]
    assert dciodvfy_errors(path) == []
    return hd.seg.segread(path)


def test_3d_series_gives_one_valid_seg_with_volumes(tmp_path: Path, mock: MockEndpointServer) -> None:
    series = written_series(volume_phantom(slices=12, seed=2), tmp_path / "ct")
    task = SegmentationTask(
        "ct-abdomen",
        ModelKind.THREE_D,
        (PromptGroup(("liver", "spleen"), "soft_tissue"),),
        layout=NiftiLayout.XYZ,
    )
    seconds: dict[Stage, float] = defaultdict(float)

    def timer(stage: Stage, spent: float) -> None:
        seconds[stage] += spent

    with _client(mock, "3d") as client:
        outcome = segment_series(
            series, task, client, algorithm=ALGORITHM, content_datetime=WHEN, software_version="t",
            context=JobContext("job-1", series.series_instance_uid), timer=timer,
        )  # fmt: skip
    (result,) = outcome.segs
    assert result.dataset is not None
    seg = _written(result.dataset, tmp_path)
    assert [s.prompt for s in result.segments] == ["liver", "spleen"]
    stats = [s for s in result.segments if not s.empty]
    assert stats
    assert all(s.volume_ml is not None and s.volume_ml > 0 for s in stats)
    assert seg.SeriesDescription == task.series_description
    assert set(seconds) == {Stage.CONVERT, Stage.INFER, Stage.IMPORT, Stage.SEG}


def test_2d_radiograph_gives_a_seg_on_the_source_image(tmp_path: Path, mock: MockEndpointServer) -> None:
    phantom = cr_dx_image(monochrome1=True)
    series = written_series(phantom, tmp_path / "cr")
    task = SegmentationTask("cr-chest", ModelKind.TWO_D, (PromptGroup(("left lung", "right lung"), "voi"),))
    with _client(mock, "2d") as client:
        outcome = segment_series(
            series, task, client, algorithm=ALGORITHM, content_datetime=WHEN, software_version="t",
            context=JobContext("job-2"),
        )  # fmt: skip
    (result,) = outcome.segs
    assert result.dataset is not None
    seg = _written(result.dataset, tmp_path)
    uid = series.instances[0].sop_instance_uid
    pixels = seg.get_pixels_by_source_instance([uid], combine_segments=False)
    assert pixels.shape[1:3] == (series.instances[0].rows, series.instances[0].columns)
    assert outcome.categories == ("lung", "lung")


def test_every_segment_empty_means_no_findings(tmp_path: Path, mock: MockEndpointServer) -> None:
    # a flat series: the mock finds no foreground in any slice
    phantom = volume_phantom(slices=4, noise_sd=0.0)
    for ds in phantom.datasets:
        ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()
    series = written_series(phantom, tmp_path / "flat")
    task = SegmentationTask(
        "flat", ModelKind.TWO_D, (PromptGroup(("liver",), "abdomen"),), SegmentationType.BINARY
    )
    with _client(mock, "2d") as client:
        outcome = segment_series(
            series, task, client, algorithm=ALGORITHM, content_datetime=WHEN, software_version="t",
            context=JobContext("job-3"),
        )  # fmt: skip
    assert outcome.no_findings
    assert all(s.empty for s in outcome.segs[0].segments)


def _phased(folder: Path) -> Series:
    write_datasets(phased_series((1, 2), rows=48, columns=40, slices=12, seed=2), folder)
    (series,) = assemble(scan([folder]).instances)
    assert series.kind is SeriesKind.PHASES
    return series


@pytest.mark.parametrize("model", [ModelKind.THREE_D, ModelKind.TWO_D])
@pytest.mark.parametrize(("choice", "chosen"), [(PhaseChoice.ALL, [0, 1]), (PhaseChoice.LAST, [1])])
def test_a_4d_series_gives_one_seg_per_chosen_phase_in_one_seg_series(
    tmp_path: Path, mock: MockEndpointServer, choice: PhaseChoice, chosen: list[int], model: ModelKind
) -> None:
    """2D too: one SEG holding two phases would put two frames on one plane, which a SEG cannot."""
    series = _phased(tmp_path / "dce")
    task = SegmentationTask("mr-dynamic", model, (PromptGroup(("liver",), "percentile"),), phases=choice)
    with _client(mock, str(model)) as client:
        outcome = segment_series(
            series, task, client, algorithm=ALGORITHM, content_datetime=WHEN, software_version="t",
            context=JobContext("job-4d", series.series_instance_uid),
        )  # fmt: skip
    assert len(outcome.segs) == len(chosen)
    seg_series = set()
    for n, (result, k) in enumerate(zip(outcome.segs, chosen, strict=True), start=1):
        assert result.dataset is not None
        (tmp_path / f"seg{n}").mkdir()
        seg = _written(result.dataset, tmp_path / f"seg{n}")
        referenced = {
            item.ReferencedSOPInstanceUID
            for ref in seg.ReferencedSeriesSequence
            for item in ref.ReferencedInstanceSequence
        }
        assert referenced == {f.sop_instance_uid for f in series.phases[k].frames}  # that phase only
        assert seg.InstanceNumber == n
        assert seg.ContentDescription.startswith(f"TemporalPositionIdentifier {k + 1}; ")  # which phase
        seg_series.add(seg.SeriesInstanceUID)
    assert len(seg_series) == 1
    assert len({r.dataset.SOPInstanceUID for r in outcome.segs if r.dataset is not None}) == len(chosen)


def test_a_3d_task_on_a_4d_series_asks_the_endpoint_once_per_phase(
    tmp_path: Path, mock: MockEndpointServer
) -> None:
    series = _phased(tmp_path / "dce")
    before = mock.stats()["requests"]
    task = SegmentationTask("mr-dynamic", ModelKind.THREE_D, (PromptGroup(("liver",), "percentile"),))
    with _client(mock, "3d") as client:
        segment_series(
            series, task, client, algorithm=ALGORITHM, content_datetime=WHEN, software_version="t",
            context=JobContext("job-4d-count"),
        )  # fmt: skip
    assert mock.stats()["requests"] - before == 2  # the module's tests run one at a time on this mock
