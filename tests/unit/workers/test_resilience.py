from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from config.settings import EndpointSettings
from workers.endpoint.auth import EntraTokens, HeaderSource
from workers.endpoint.resilience import CircuitBreaker, backoff_delay, retry_after_seconds


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        delays = [backoff_delay(attempt, 0.5, 20.0, rng) for _ in range(200)]
        assert min(delays) >= 0
        assert max(delays) <= min(20.0, 0.5 * 2**attempt)
    assert max(backoff_delay(10, 0.5, 20.0, rng) for _ in range(200)) > 10  # really uses the range


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # 1445412480 s after the epoch
    assert retry_after_seconds(date, now=lambda: 1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds(date, now=lambda: 1445412490.0) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


def test_breaker_opens_after_consecutive_failures_only() -> None:
    now = [100.0]
    breaker = CircuitBreaker(threshold=3, cooldown=10, clock=lambda: now[0])
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.open_for() == 0
    breaker.record_failure()
    assert breaker.open_for() == 10
    now[0] = 105.0
    assert breaker.open_for() == 5
    now[0] = 111.0
    assert breaker.open_for() == 0  # half-open: one trial may go


def test_entra_tokens_are_renewed_before_they_expire() -> None:
    now = [1000.0]
    issued: list[str] = []

    class Credential:
        def get_token(self, scope: str) -> SimpleNamespace:
            issued.append(scope)
            return SimpleNamespace(token=f"t{len(issued)}", expires_on=now[0] + 3600)

    tokens = EntraTokens("https://ml.azure.com/.default", Credential(), clock=lambda: now[0])
    settings = EndpointSettings(url="https://x/score", model="2d", entra=True, deployment="green")
    headers = HeaderSource(settings, tokens)
    assert headers.headers()["Authorization"] == "Bearer t1"
    now[0] += 3000  # 10 minutes left: still good
    assert headers.headers()["Authorization"] == "Bearer t1"
    now[0] += 400  # under 5 minutes left: renewed
    assert headers.headers()["Authorization"] == "Bearer t2"
    assert headers.headers()["azureml-model-deployment"] == "green"
    assert issued == ["https://ml.azure.com/.default"] * 2
