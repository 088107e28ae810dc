"""The errors the pipeline layer raises; tasks turn them into retry-or-fail in one place.

    GatewayError
     ├── PromptError                   a prompt the endpoint cannot take (empty, contains '&')
     ├── EndpointError(retryable)      the segmentation endpoint did not give a usable answer
     │    ├── EndpointRejectedError     400/401/403/404/413: the request or its credentials, never retried
     │    ├── EndpointUnavailableError  transient trouble that outlived the retries, or the circuit is open
     │    └── EndpointResponseError     an answer that breaks the contract (items, shape, dtype, base64)
     └── DeliveryError(retryable)      a result could not be delivered

Messages name the endpoint and, where known, the job and series; they never carry keys or tokens.
"""

from __future__ import annotations

__all__ = [
    "DeliveryError",
    "EndpointError",
    "EndpointRejectedError",
    "EndpointResponseError",
    "EndpointUnavailableError",
    "GatewayError",
    "PromptError",
]


class GatewayError(Exception):
    """Base of the pipeline's errors."""

    retryable: bool = False


class PromptError(GatewayError, ValueError):
    """A prompt cannot be sent (caught at rule-validation time, before any request)."""


class EndpointError(GatewayError):
    """``retryable`` says whether the same request may succeed later; subclasses fix a default."""

    retryable_by_default = False

    def __init__(
        self,
        reason: str,
        *,
        endpoint: str,
        retryable: bool | None = None,
        status: int | None = None,
        job_id: str | None = None,
        series_instance_uid: str | None = None,
    ) -> None:
        self.reason = reason
        self.endpoint = endpoint
        self.retryable = self.retryable_by_default if retryable is None else retryable
        self.status = status
        self.job_id = job_id
        self.series_instance_uid = series_instance_uid
        where = [f"endpoint {endpoint}"]
        if job_id:
            where.append(f"job {job_id}")
        if series_instance_uid:
            where.append(f"series {series_instance_uid}")
        super().__init__(f"{', '.join(where)}: {reason}")


class EndpointRejectedError(EndpointError):
    """The endpoint refused the request itself (bad key, no deployment, bad payload): never retried."""


class EndpointUnavailableError(EndpointError):
    """Throttling, timeouts, 5xx or dropped connections that outlasted our retries; worth trying later."""

    retryable_by_default = True


class EndpointResponseError(EndpointError):
    """The answer does not fit what was asked; retrying the same request would not help."""


class DeliveryError(GatewayError):
    def __init__(self, reason: str, *, destination: str, retryable: bool) -> None:
        self.reason = reason
        self.destination = destination
        self.retryable = retryable
        super().__init__(f"destination {destination}: {reason}")
