"""Fetching a study (or one series) from a named source node into the spool: WADO-RS, C-GET or C-MOVE.

Used by the ``mipgw.pull`` task behind ``POST /jobs``. Each instance is written durably into the data
directory as it arrives (never the whole study in memory), and the caller learns which series came
in with how many instances. One attempt per call; a retryable failure raises DeliveryError with
``retryable=True`` (the same classification as sending).

C-MOVE does not bring the instances back on its own association: the source opens one to the
move destination — this gateway's AE title, i.e. its listener — and stores them there, naming our
AE as the Move Originator, which is how the listener knows not to start a job of its own for them
(:mod:`service.scp`). The final C-MOVE response comes after the last sub-operation, and the listener
answers each only once the instance is durable, so by then the series is in the shared spool.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import requests
import structlog
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from config.settings import DicomNode, DicomWebNode
from dicom_io.uids import is_valid_uid
from workers.delivery.base import public_url
from workers.errors import DeliveryError
from workers.part10 import part10_header
from workers.storage import DataDir, SpoolError, store_instance

__all__ = ["Pulled", "pull", "series_in_study"]

log = structlog.get_logger(__name__)

_STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
_STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
_STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
# storage classes proposed with the SCP role on a C-GET association: at most 128 contexts, one is the C-GET
PULL_STORAGE_CONTEXTS = 127


@dataclass(frozen=True, slots=True)
class Pulled:
    study_instance_uid: str
    series: dict[str, int]  # series UID → instances stored
    how: str  # "WADO-RS from <url>" / "C-GET from AE@host:port" / "C-MOVE from AE@host:port"


def pull(
    name: str,
    node: DicomNode | DicomWebNode,
    study: str,
    series: str | None,
    data: DataDir,
    *,
    calling_ae: str,
    move_destination: str | None = None,
) -> Pulled:
    """``move_destination``: the AE title a C-MOVE source stores to (the gateway's listener)."""
    if isinstance(node, DicomWebNode):
        return _wado(name, node, study, series, data)
    if node.retrieve == "c-move":
        return _cmove(name, node, study, series, data, calling_ae=calling_ae, destination=move_destination)
    return _cget(name, node, study, series, data, calling_ae=calling_ae)


def series_in_study(name: str, node: DicomNode | DicomWebNode, study: str, *, calling_ae: str) -> list[str]:
    """The series UIDs a source node holds for a study (QIDO-RS or C-FIND at SERIES level)."""
    if isinstance(node, DicomWebNode):
        try:
            return _series_of(_dicomweb(node), study)
        except requests.RequestException as exc:
            raise DeliveryError(
                f"QIDO-RS at {public_url(str(node.url))} failed: {type(exc).__name__}",
                destination=name,
                retryable=not isinstance(exc, requests.HTTPError) or _retryable(exc),
            ) from exc
    return _cfind_series(name, node, study, calling_ae=calling_ae)


def _retryable(exc: requests.HTTPError) -> bool:
    status = exc.response.status_code if exc.response is not None else 0
    return status in (408, 429) or status >= 500


def _dicomweb(node: DicomWebNode) -> Any:
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if node.username is not None and node.password is not None:
        session.auth = (node.username, node.password.get_secret_value())
    token = node.token.get_secret_value() if node.token else None
    if node.token_file is not None:
        token = node.token_file.read_text(encoding="utf-8").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = DICOMwebClient(str(node.url), session=session, headers=headers, timeout=node.timeout_s)
    client.set_http_retry_params(retry=False)  # one attempt: the task layer backs off and retries
    return client


def _cfind_series(name: str, node: DicomNode, study: str, *, calling_ae: str) -> list[str]:
    from pynetdicom import AE

    from workers.dicom_identity import identify
    from workers.dimse_reactor import pause_safely

    ae = identify(AE(ae_title=node.calling_ae_title or calling_ae))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout_s
    ae.add_requested_context(_STUDY_ROOT_FIND)
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study
    query.SeriesInstanceUID = ""
    where = f"{node.ae_title}@{node.host}:{node.port}"
    assoc = pause_safely(ae.associate(node.host, node.port, ae_title=node.ae_title))
    if not assoc.is_established:
        raise DeliveryError(f"C-FIND at {where}: association not accepted", destination=name, retryable=True)
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, _STUDY_ROOT_FIND):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(str(identifier.SeriesInstanceUID))
    finally:
        assoc.release()
    return found


def _store(data: DataDir, ds: Dataset, counts: Counter[str], name: str) -> None:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    try:
        store_instance(
            data,
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            buffer.getvalue(),
        )
    except SpoolError as exc:
        raise DeliveryError(
            f"cannot store a pulled instance: {exc}", destination=name, retryable=True
        ) from exc
    counts[str(ds.SeriesInstanceUID)] += 1


def _store_as_received(data: DataDir, event: Any, counts: Counter[str], name: str, *, source_ae: str) -> None:
    """A C-STORE on the C-GET association into the spool as the bytes arrived (no decode, no re-encode:
    the Part 10 header is written from a template, as the listener does); only the UIDs that name its
    path are read. A deflated data set is decoded instead (it cannot be read in place)."""
    syntax = UID(str(event.context.transfer_syntax))
    if syntax.is_deflated:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        _store(data, dataset, counts, name)
        return
    raw = event.encoded_dataset(include_meta=False)
    try:
        ids = read_dataset(
            io.BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian, stop_when=_after_series_uid
        )
        study, series, sop = (
            str(ids[keyword].value) for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        )
    except (KeyError, ValueError, EOFError) as exc:
        raise DeliveryError(
            f"a pulled instance has no readable UIDs: {exc}", destination=name, retryable=False
        ) from exc
    sop_class = str(event.request.AffectedSOPClassUID)
    if not all(map(is_valid_uid, (study, series, sop, sop_class))):  # before any names a path
        raise DeliveryError(
            f"a pulled instance has an invalid UID (SOP {sop[:64]!r})", destination=name, retryable=False
        )
    try:
        store_instance(data, study, series, sop, part10_header(sop_class, sop, str(syntax), source_ae) + raw)
    except SpoolError as exc:
        raise DeliveryError(
            f"cannot store a pulled instance: {exc}", destination=name, retryable=True
        ) from exc
    counts[series] += 1


def _after_series_uid(tag: BaseTag, vr: str | None, length: int) -> bool:
    return bool(tag > 0x0020000E)


def _wado(name: str, node: DicomWebNode, study: str, series: str | None, data: DataDir) -> Pulled:
    client = _dicomweb(node)
    counts: Counter[str] = Counter()
    where = public_url(str(node.url))
    try:
        uids = [series] if series else _series_of(client, study)
        for uid in uids:
            for ds in client.iter_series(study, uid):
                _store(data, ds, counts, name)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise DeliveryError(
            f"WADO-RS from {where} answered {status}", destination=name, retryable=_retryable(exc)
        ) from exc
    except requests.RequestException as exc:
        raise DeliveryError(
            f"WADO-RS from {where} failed: {type(exc).__name__}", destination=name, retryable=True
        ) from exc
    log.info("pull.done", source=name, study_instance_uid=study, instances=sum(counts.values()))
    return Pulled(study, dict(counts), f"WADO-RS from {where}")


def _series_of(client: Any, study: str) -> list[str]:
    found = client.search_for_series(study_instance_uid=study, get_remaining=True)
    return [item["0020000E"]["Value"][0] for item in found if "0020000E" in item]


def _cget(
    name: str, node: DicomNode, study: str, series: str | None, data: DataDir, *, calling_ae: str
) -> Pulled:
    from pynetdicom import AE, StoragePresentationContexts, build_role, evt

    from workers.dicom_identity import identify
    from workers.dimse_reactor import pause_safely

    counts: Counter[str] = Counter()
    failures: list[str] = []

    def on_store(event: evt.Event) -> int:
        try:
            _store_as_received(data, event, counts, name, source_ae=node.ae_title)
        except DeliveryError as exc:
            failures.append(exc.reason)
            return 0xA700  # out of resources: the node keeps the instance and reports the failure
        return 0x0000

    ae = identify(AE(ae_title=node.calling_ae_title or calling_ae))
    ae.acse_timeout = node.timeout_s
    ae.dimse_timeout = ae.network_timeout = node.retrieve_timeout_s
    ae.add_requested_context(_STUDY_ROOT_GET)
    # C-GET receives on the same association: propose storage classes with the SCP role (an
    # association holds at most 128 presentation contexts, one of them the C-GET itself)
    roles: list[Any] = []
    for context in StoragePresentationContexts[:PULL_STORAGE_CONTEXTS]:
        syntax = context.abstract_syntax
        assert syntax is not None
        ae.add_requested_context(syntax)
        roles.append(build_role(syntax, scp_role=True))
    query = _retrieve_identifier(study, series)
    where = f"{node.ae_title}@{node.host}:{node.port}"
    assoc = pause_safely(
        ae.associate(
            node.host,
            node.port,
            ae_title=node.ae_title,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
    )
    if not assoc.is_established:
        raise DeliveryError(f"C-GET from {where}: association not accepted", destination=name, retryable=True)
    try:
        statuses = [status for status, _ in _responses(assoc.send_c_get(query, _STUDY_ROOT_GET))]
    finally:
        assoc.release()
    final = statuses[-1] if statuses else None
    if final is None or final.Status not in (0x0000, 0xB000):
        code = f"0x{final.Status:04X}" if final is not None else "no response"
        raise DeliveryError(f"C-GET from {where} ended with {code}", destination=name, retryable=True)
    if failures:
        raise DeliveryError(failures[0], destination=name, retryable=True)
    log.info("pull.done", source=name, study_instance_uid=study, instances=sum(counts.values()))
    return Pulled(study, dict(counts), f"C-GET from {where}")


def _responses(
    responses: Iterator[tuple[Dataset, Dataset | None]],
) -> Iterator[tuple[Dataset, Dataset | None]]:
    for status, identifier in responses:
        if status:  # an empty status means the association broke
            yield status, identifier


def _retrieve_identifier(study: str, series: str | None) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES" if series else "STUDY"
    query.StudyInstanceUID = study
    if series:
        query.SeriesInstanceUID = series
    return query


# C-MOVE final statuses (PS3.4 C.4.2.1.5) a person can act on, and whether trying again may help
_MOVE_REFUSALS = {
    0xA701: ("out of resources (cannot count the matches)", True),
    0xA702: ("out of resources (cannot start the sub-operations)", True),
    0xA801: ("the move destination is unknown to it", False),
    0xA900: ("the identifier does not match the SOP class", False),
    0xFE00: ("the retrieve was cancelled", True),
}


def _cmove(
    name: str,
    node: DicomNode,
    study: str,
    series: str | None,
    data: DataDir,
    *,
    calling_ae: str,
    destination: str | None,
) -> Pulled:
    from pynetdicom import AE

    from workers.dicom_identity import identify
    from workers.dimse_reactor import pause_safely

    originator = node.calling_ae_title or calling_ae
    destination = destination or calling_ae
    ae = identify(AE(ae_title=originator))
    ae.acse_timeout = node.timeout_s
    ae.dimse_timeout = ae.network_timeout = node.retrieve_timeout_s
    ae.add_requested_context(_STUDY_ROOT_MOVE)
    where = f"{node.ae_title}@{node.host}:{node.port}"
    assoc = pause_safely(ae.associate(node.host, node.port, ae_title=node.ae_title))
    if not assoc.is_established:
        raise DeliveryError(
            f"C-MOVE from {where}: association not accepted", destination=name, retryable=True
        )
    try:
        statuses = [
            status
            for status, _ in _responses(
                assoc.send_c_move(_retrieve_identifier(study, series), destination, _STUDY_ROOT_MOVE)
            )
        ]
    finally:
        assoc.release()
    final = statuses[-1] if statuses else None
    if final is None or final.Status in (0xFF00, 0xFF01):
        raise DeliveryError(
            f"C-MOVE from {where}: no final response (association broken)", destination=name, retryable=True
        )
    code = int(final.Status)
    completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
    warned = int(final.get("NumberOfWarningSuboperations", 0) or 0)
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    if code in _MOVE_REFUSALS:
        meaning, retryable = _MOVE_REFUSALS[code]
        hint = (
            f": add AE {destination!r} (this gateway's listener, its host and port) to {name}'s DICOM nodes"
            if code == 0xA801
            else ""
        )
        raise DeliveryError(
            f"C-MOVE from {where} refused with 0x{code:04X}, {meaning}{hint}",
            destination=name,
            retryable=retryable,
        )
    if code & 0xF000 == 0xC000 and not completed + warned + failed:
        # Orthanc, for one, answers 0xC000 both for a destination it does not know and for one it
        # cannot reach, and says no more
        raise DeliveryError(
            f"C-MOVE from {where} failed with 0x{code:04X} (unable to process) before sending anything: "
            f"does {name} know AE {destination!r} (this gateway's listener, its host and port), and is "
            "the listener up?",
            destination=name,
            retryable=True,
        )
    if failed or code not in (0x0000, 0xB000):
        raise DeliveryError(
            f"C-MOVE from {where} to {destination!r} ended with 0x{code:04X}: {failed} of "
            f"{completed + warned + failed} sub-operation(s) failed (the gateway's listener log names "
            "each instance it refused)",
            destination=name,
            retryable=True,
        )
    moved = completed + warned
    # what the listener stored (a series that was already in the spool counts whole)
    counts = _spooled(data, study, series) if moved else {}
    if sum(counts.values()) < moved:
        # the instances went to an AE that is not this listener, or to one on another data directory
        raise DeliveryError(
            f"C-MOVE from {where} sent {moved} instance(s) to {destination!r} but the spool holds "
            f"{sum(counts.values())}: is {destination!r} this gateway's listener, on the same data "
            "directory?",
            destination=name,
            retryable=True,
        )
    log.info("pull.done", source=name, study_instance_uid=study, instances=moved, how="C-MOVE")
    return Pulled(study, counts, f"C-MOVE from {where}")


def _spooled(data: DataDir, study: str, series: str | None) -> dict[str, int]:
    """Instances in the spool per series: of the one series, or of every series of the study."""
    try:
        if series is not None:
            folders = [data.incoming_series(study, series)]
        else:
            folders = [path for path in data.incoming_study(study).iterdir() if path.is_dir()]
        return {folder.name: n for folder in folders if (n := sum(1 for _ in folder.glob("*.dcm")))}
    except (OSError, ValueError):
        return {}
