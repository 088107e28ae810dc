"""The DICOM listener: C-ECHO and C-STORE SCP in front of the spool and the intake.

    listener = DicomListener(settings, intake, DataDir(settings.data_dir))
    listener.start()          # binds; listener.port is the real port (settings may say 0)
    ...
    listener.stop()           # stop accepting, finish the instance in flight, abort, join

Per association: the request is admitted or refused with a named A-ASSOCIATE-RJ
(:mod:`service.scp_admission`); once accepted, the intake is told (``association_opened``);
every C-STORE data set is validated, written durably and reported to the intake
(:meth:`store`, run by :class:`service.scp_dimse.StoreReceiver`) before its answer is sent; a
release tells the intake (``association_released``, which may complete series); an abort does
not: its series are left to the idle timer. An instance whose C-STORE names one of the gateway's own
AE titles as its Move Originator was asked for by a pull job (C-MOVE): it is stored the same way but
not reported to the intake, since the pull job, not a new one, processes its series. Logs carry the
association id, calling AE and UIDs, never patient data. Every storage SOP class pynetdicom knows
(Segmentation included) is accepted in the transfer syntaxes of :data:`TRANSFER_SYNTAXES`, stored as
received.
"""

from __future__ import annotations

import ssl
import threading
import time

import structlog
from pydicom import uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from config.settings import ListenerSettings, Settings
from service.intake import Intake
from service.scp_admission import AssociationRequest, admission
from service.scp_counters import ListenerCounters
from service.scp_dimse import ReceivedInstance
from service.scp_status import InstanceRefusedError, StoreOutcome
from service.scp_store import IncomingInstance
from service.scp_transport import ListenerAssociation, ListenerServer
from service.spool import free_bytes
from workers.dicom_identity import identify
from workers.jobs import Route
from workers.storage import DataDir

__all__ = ["TRANSFER_SYNTAXES", "DicomListener"]

log = structlog.get_logger(__name__)

TRANSFER_SYNTAXES = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
]


class DicomListener:
    def __init__(self, settings: Settings, intake: Intake, data: DataDir, *, grace_s: float = 20.0) -> None:
        self.settings = settings
        self.listener: ListenerSettings = settings.listener
        self.intake = intake
        self.data = data
        self.grace_s = grace_s
        self.counters = ListenerCounters()
        self._associations: dict[str, ListenerAssociation] = {}
        self._lock = threading.Lock()
        self._draining = threading.Event()
        self._server: ListenerServer | None = None
        self._thread: threading.Thread | None = None
        # instances a pull job asked for by C-MOVE: stored, never tracked into a job of their own
        self._move_originators = settings.move_originators()
        self._move_sources = settings.move_sources()
        self._next_drop_log = 0.0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the listener is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        ae = identify(AE(self.settings.ae_title))
        ae.maximum_pdu_size = self.listener.max_pdu
        ae.maximum_associations = self.listener.max_associations
        ae.require_called_aet = False  # decided by service.scp_admission, with named reasons
        ae.require_calling_aet = []
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        server = ae.make_server(
            (self.listener.bind, self.listener.port),
            ssl_context=_ssl_context(self.listener),
            evt_handlers=[
                (evt.EVT_REQUESTED, self._on_requested),
                (evt.EVT_ACCEPTED, self._on_accepted),
                (evt.EVT_RELEASED, self._on_released),
                (evt.EVT_C_ECHO, _on_echo),
                (evt.EVT_C_STORE, _on_stock_store),
            ],
            server_class=ListenerServer,
            hooks=self,
            max_connections=self.listener.max_associations + self.listener.max_pending_connections,
        )
        assert isinstance(server, ListenerServer)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="mipgw-scp", daemon=True
        )
        self._thread.start()
        if not self.listener.allowed_calling_aes:
            log.warning("scp.open_to_any_calling_ae", hint="set listener.allowed_calling_aes")
        log.info(
            "scp.listening",
            ae_title=self.settings.ae_title,
            bind=self.listener.bind,
            port=self.port,
            tls=self.listener.tls_cert_file is not None,
        )

    def stop(self) -> None:
        """Stop accepting; let each association finish the instance it is receiving, then abort it."""
        if self._server is None:
            return
        self._draining.set()
        server, self._server = self._server, None
        server.stop_accepting()
        deadline = time.monotonic() + self.grace_s
        while live := self._live():
            late = time.monotonic() >= deadline
            for assoc in live:
                if late or not assoc.receiving:
                    assoc.abort()
            time.sleep(0.01)
        for thread in server.request_threads():
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("scp.stopped", **_totals(self.counters))

    def _live(self) -> list[ListenerAssociation]:
        with self._lock:
            return list(self._associations.values())

    # -- association life cycle (pynetdicom event handlers and the transport's end hook) --

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        assert isinstance(assoc, ListenerAssociation)
        request = assoc.requestor.primitive
        assert request is not None
        assoc.calling_ae = str(request.calling_ae_title).strip()
        assoc.log = log.bind(association=assoc.association_id, calling_ae=assoc.calling_ae)
        with self._lock:
            refusal = admission(
                AssociationRequest(
                    assoc.calling_ae,
                    str(request.called_ae_title),
                    active_associations=len(self._associations),
                ),
                listener=self.listener,
                ae_title=self.settings.ae_title,
                free_bytes=lambda: free_bytes(self.data),
                draining=self._draining.is_set(),
                move_sources=self._move_sources,
            )
            if refusal is None:
                assoc.admitted = True
                self._associations[assoc.association_id] = assoc
        if refusal is not None:
            self.counters.refused(refusal)
            assoc.log.warning(
                "scp.association_refused",
                reason=refusal.name,
                detail=refusal.describe(),
                called_ae=str(request.called_ae_title).strip(),
                peer=assoc.requestor.address,
            )
            assoc.acse.send_reject(*refusal.fields)
            assoc.kill()  # as pynetdicom's own rejections do: waits until the A-ASSOCIATE-RJ is out

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        assert isinstance(assoc, ListenerAssociation)
        assoc.accepted = True
        self.counters.accepted()
        self.intake.association_opened(assoc.association_id, assoc.calling_ae or None)
        assoc.log.info("scp.association_accepted", peer=assoc.requestor.address)

    def _on_released(self, event: Event) -> None:
        assoc = event.assoc
        assert isinstance(assoc, ListenerAssociation)
        assoc.released = True
        try:
            jobs = self.intake.association_released(assoc.association_id)
        except Exception:  # the database may be down: the idle timer retries the series later
            assoc.log.exception("scp.release_completion_failed")
            return
        for job in jobs:
            assoc.log.info("scp.series_completed", job_id=job.id, series=job.series_instance_uid)

    def connection_dropped(self, peer: str) -> None:
        self.counters.connection_dropped()
        now = time.monotonic()
        if now >= self._next_drop_log:  # a flood of connections must not flood the log too
            self._next_drop_log = now + 10.0
            log.warning(
                "scp.connection_dropped",
                peer=peer,
                reason="too many open connections",
                limit=self.listener.max_associations + self.listener.max_pending_connections,
                dropped_total=self.counters.snapshot().dropped_connections,
            )

    def association_ended(self, assoc: ListenerAssociation) -> None:
        assoc.receiver.abandon()  # an instance cut off by an abort: its temp file goes
        with self._lock:
            self._associations.pop(assoc.association_id, None)
        if not assoc.accepted:
            return
        if not assoc.released:
            self.intake.association_aborted(assoc.association_id)  # its series go to the idle timer
        stats = assoc.receiver.stats
        assoc.log.info(
            "scp.association_ended",
            ended="released" if assoc.released else "aborted",
            instances=stats.instances,
            bytes=stats.bytes,
            failures=stats.failures,
            seconds=round(time.monotonic() - stats.started, 3),
        )

    # -- the instance sink (called by StoreReceiver in the association's DUL thread) --

    def accepting(self) -> bool:
        return not self._draining.is_set()

    def fragment(self, assoc: object, instance: ReceivedInstance) -> None:
        if instance.state is None:
            assert isinstance(assoc, ListenerAssociation)
            instance.state = IncomingInstance(self.data, instance, calling_ae=assoc.calling_ae)
        try:
            instance.state.take()
        except Exception:  # store() answers for it: the instance is refused there
            log.exception("scp.fragment_failed", sop_instance_uid=instance.affected_sop_instance_uid)
            instance.state.abandon()
            instance.state.refusal = InstanceRefusedError(StoreOutcome.PROCESSING_FAILURE, "unexpected error")

    def abandon(self, instance: ReceivedInstance) -> None:
        if isinstance(instance.state, IncomingInstance):
            instance.state.abandon()

    def store(self, assoc: object, instance: ReceivedInstance) -> tuple[StoreOutcome, str | None]:
        assert isinstance(assoc, ListenerAssociation)
        incoming = instance.state
        try:
            if not isinstance(incoming, IncomingInstance):
                raise RuntimeError("no fragment of the data set was taken")
            result = incoming.finish()
        except InstanceRefusedError as exc:
            return self._refused(assoc, instance, exc.outcome, exc.detail)
        except Exception:  # never success for an instance we did not handle
            assoc.log.exception("scp.store_failed", sop_instance_uid=instance.affected_sop_instance_uid)
            self.abandon(instance)
            return self._refused(assoc, instance, StoreOutcome.PROCESSING_FAILURE, "unexpected error")
        stored = result.stored
        uids = {
            "study": stored.study_instance_uid,
            "series": stored.series_instance_uid,
            "sop_instance_uid": stored.sop_instance_uid,
        }
        retrieved = instance.move_originator in self._move_originators
        if not retrieved:
            try:
                facts = result.header.arrival_facts(
                    route=Route.DIMSE, calling_ae=assoc.calling_ae or None, association=assoc.association_id
                )
                self.intake.received(facts)
            except Exception:  # stored, but its series could not be tracked: let the sender retry
                assoc.log.exception("scp.intake_failed", **uids)
                return self._refused(
                    assoc, instance, StoreOutcome.PROCESSING_FAILURE, "stored but not tracked"
                )
        self.counters.stored(assoc.calling_ae, instance.size, repeated=stored.repeated)
        assoc.receiver.stats.instances += 1
        assoc.receiver.stats.bytes += instance.size
        if retrieved:  # the pull job that sent the C-MOVE takes the series on from here
            assoc.log.debug("scp.instance_retrieved", move_originator=instance.move_originator, **uids)
        elif stored.repeated:
            assoc.log.info("scp.instance_repeated", **uids)
        else:
            assoc.log.debug("scp.instance_stored", size=stored.size, **uids)
        return StoreOutcome.STORED, None

    def _refused(
        self, assoc: ListenerAssociation, instance: ReceivedInstance, outcome: StoreOutcome, detail: str
    ) -> tuple[StoreOutcome, str | None]:
        self.counters.failed(outcome)
        assoc.receiver.stats.failures += 1
        assoc.log.warning(
            "scp.instance_refused",
            outcome=outcome.name,
            status=f"0x{outcome.status:04X}",
            detail=detail,
            sop_instance_uid=instance.affected_sop_instance_uid,
        )
        return outcome, detail


def _on_echo(event: Event) -> int:
    return 0x0000


def _on_stock_store(event: Event) -> int:
    # Only a C-STORE request without a data set reaches pynetdicom's own path.
    return StoreOutcome.UNREADABLE_DATA_SET.status


def _ssl_context(listener: ListenerSettings) -> ssl.SSLContext | None:
    if listener.tls_cert_file is None and listener.tls_key_file is None:
        if listener.tls_ca_file is not None:
            raise ValueError("listener.tls_ca_file needs listener.tls_cert_file and tls_key_file")
        return None
    if listener.tls_cert_file is None or listener.tls_key_file is None:
        raise ValueError("listener TLS needs both tls_cert_file and tls_key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(listener.tls_cert_file), str(listener.tls_key_file))
    if listener.tls_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(listener.tls_ca_file))
    return context


def _totals(counters: ListenerCounters) -> dict[str, object]:
    snap = counters.snapshot()
    return {
        "instances": snap.total_instances,
        "bytes": sum(snap.bytes.values()),
        "associations": snap.associations,
        "failures": sum(snap.failures.values()),
        "refusals": sum(snap.refusals.values()),
        "dropped_connections": snap.dropped_connections,
    }
