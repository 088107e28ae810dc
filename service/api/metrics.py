"""``GET /metrics``: Prometheus text, read at scrape time from the process, the job store and the broker.

    mipgw_instances_received_total{route,calling_ae}   instances stored (this process: STOW, listener)
    mipgw_received_bytes_total{route,calling_ae}       their bytes
    mipgw_jobs{state}                                  jobs per state (job store)
    mipgw_stage_duration_seconds{stage}                histogram of finished stage attempts (job_stages)
    mipgw_endpoint_latency_seconds{endpoint}           histogram of the infer stage per endpoint
    mipgw_endpoint_failed_jobs{endpoint}               jobs failed at the infer stage
    mipgw_endpoint_waiting_jobs{endpoint}              jobs queued again after a retryable endpoint error
    mipgw_deliveries{destination,state}                deliveries per state (failed = delivery failures)
    mipgw_queue_depth{queue}                           messages waiting (Redis LLEN / SQLite broker rows)
    mipgw_http_requests_total{method,route,status}     requests this API answered
    mipgw_scrape_ok{source}                            1 when the store / broker could be read

A source that cannot be read leaves its metrics out and sets ``mipgw_scrape_ok`` to 0: the scrape
itself never fails. The store-backed histograms are counted in SQL (one query per family), so the
scrape costs the same with a thousand jobs or a million.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from service.api.auth import Scope, require_key
from service.api.health import BrokerProbe
from service.api.problems import problem_responses
from service.metrics import ReceiveCounters
from workers.celery_app import DELIVERY_QUEUE, INFERENCE_QUEUES
from workers.jobs import DeliveryState, JobState, Stage
from workers.store import Store
from workers.store.models import Delivery, Job, JobStage

__all__ = ["STAGE_BUCKETS", "ApiMetrics", "router"]

log = structlog.get_logger(__name__)

STAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
QUEUES = (*INFERENCE_QUEUES, DELIVERY_QUEUE)


class ApiMetrics:
    """The API's own registry: a collector over the sources above and the HTTP request counter."""

    def __init__(
        self,
        store: Store,
        broker: BrokerProbe,
        counters: ReceiveCounters,
        collectors: Sequence[Collector] = (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_GatewayCollector(store, broker, counters))
        for collector in collectors:
            self.registry.register(collector)
        self.http_requests = Counter(
            "mipgw_http_requests",
            "HTTP requests answered by the API",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GatewayCollector(Collector):
    def __init__(self, store: Store, broker: BrokerProbe, counters: ReceiveCounters) -> None:
        self.store = store
        self.broker = broker
        self.counters = counters

    def describe(self) -> list[Metric]:
        return []  # families are known only at collect time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._received()
        scrape_ok = GaugeMetricFamily("mipgw_scrape_ok", "1 when the source could be read", labels=["source"])
        try:
            families = list(self._store_families())
            scrape_ok.add_metric(["store"], 1)
            yield from families
        except Exception as exc:  # a scrape reports a broken source, it never fails
            log.warning("metrics.store_unreadable", error=str(exc).splitlines()[0][:200])
            scrape_ok.add_metric(["store"], 0)
        try:
            depths = self.broker.queue_depths(QUEUES)
            queue = GaugeMetricFamily("mipgw_queue_depth", "messages waiting in the queue", labels=["queue"])
            for name, depth in depths.items():
                queue.add_metric([name], depth)
            scrape_ok.add_metric(["broker"], 1)
            yield queue
        except Exception as exc:
            log.warning("metrics.broker_unreadable", error=str(exc).splitlines()[0][:200])
            scrape_ok.add_metric(["broker"], 0)
        yield scrape_ok

    def _received(self) -> Iterator[Metric]:
        labels = ["route", "calling_ae"]
        instances = CounterMetricFamily(
            "mipgw_instances_received", "instances stored durably, per route and calling AE", labels=labels
        )
        size = CounterMetricFamily("mipgw_received_bytes", "bytes of the instances stored", labels=labels)
        for tally in self.counters.snapshot():
            instances.add_metric([str(tally.route), tally.calling_ae], tally.instances)
            size.add_metric([str(tally.route), tally.calling_ae], tally.bytes)
        yield instances
        yield size

    def _store_families(self) -> Iterator[Metric]:
        with self.store.session(readonly=True) as s:
            counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            jobs = GaugeMetricFamily("mipgw_jobs", "jobs per state", labels=["state"])
            for state in JobState:
                jobs.add_metric([str(state)], counts.get(state, 0))
            yield jobs

            stages = HistogramMetricFamily(
                "mipgw_stage_duration_seconds", "finished stage attempts", labels=["stage"]
            )
            for row in s.execute(_histogram_query(JobStage.stage)):
                stages.add_metric([str(Stage(row[0]))], *_buckets(row))
            yield stages

            latency = HistogramMetricFamily(
                "mipgw_endpoint_latency_seconds", "the infer stage per endpoint", labels=["endpoint"]
            )
            infer = _histogram_query(Job.endpoint).join(Job, Job.id == JobStage.job_id)
            for row in s.execute(infer.where(JobStage.stage == Stage.INFER)):
                latency.add_metric([row[0] or ""], *_buckets(row))
            yield latency

            yield from _endpoint_errors(s)

            deliveries = GaugeMetricFamily(
                "mipgw_deliveries", "deliveries per destination and state", labels=["destination", "state"]
            )
            query = select(Delivery.destination, Delivery.state, func.count())
            grouped = query.group_by(Delivery.destination, Delivery.state)
            for destination, delivery_state, count in s.execute(grouped):
                deliveries.add_metric([destination, str(DeliveryState(delivery_state))], count)
            yield deliveries


def _histogram_query(label: Any) -> Any:
    seconds = JobStage.seconds
    buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in STAGE_BUCKETS]
    return (
        select(label, func.count(), func.coalesce(func.sum(seconds), 0.0), *buckets)
        .where(seconds.is_not(None))
        .group_by(label)
    )


def _buckets(row: Any) -> tuple[list[tuple[str, float]], float]:
    count, total, cumulative = row[1], row[2], row[3:]
    buckets = [(repr(bound), float(n or 0)) for bound, n in zip(STAGE_BUCKETS, cumulative, strict=True)]
    return [*buckets, ("+Inf", float(count))], float(total or 0.0)


def _endpoint_errors(session: Any) -> Iterator[Metric]:
    query = (
        select(Job.endpoint, Job.state, func.count())
        .where(Job.error_stage == Stage.INFER, Job.state.in_([JobState.FAILED, JobState.QUEUED]))
        .group_by(Job.endpoint, Job.state)
    )
    failed = GaugeMetricFamily(
        "mipgw_endpoint_failed_jobs", "jobs failed at the infer stage", labels=["endpoint"]
    )
    waiting = GaugeMetricFamily(
        "mipgw_endpoint_waiting_jobs",
        "jobs queued again after a retryable endpoint error",
        labels=["endpoint"],
    )
    for endpoint, state, count in session.execute(query):
        (failed if state is JobState.FAILED else waiting).add_metric([endpoint or ""], count)
    yield failed
    yield waiting


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus text exposition",
    response_class=Response,
    dependencies=[Depends(require_key(Scope.API))],
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4.split(";")[0]: {}}}, **problem_responses(401, 403)},
)
def metrics(request: Request) -> Response:
    body = request.app.state.context.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
