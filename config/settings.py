"""The gateway's settings: one pydantic-settings model, env (``MIPGW_…``, ``__`` for nesting) over an
optional YAML file over defaults. Secrets come only from the environment or from secret files.

Nothing reads settings at import time: call :func:`get_settings` at an entry point and pass what is
needed down explicitly.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "ApiSettings",
    "Destination",
    "DicomNode",
    "DicomWebNode",
    "EndpointSettings",
    "ListenerSettings",
    "Settings",
    "WebhookSettings",
    "get_settings",
]


class EndpointSettings(BaseModel):
    """One segmentation endpoint (an Azure ML / Foundry online endpoint, or the mock)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl = Field(
        description="full scoring URL, e.g. https://<name>.<region>.inference.ml.azure.com/score"
    )
    model: Literal["2d", "3d"]
    model_name: str = "MedImageParse"
    model_version: str = "unknown"
    key: SecretStr | None = Field(default=None, description="endpoint key (prefer key_file or the env)")
    key_file: Path | None = Field(
        default=None, description="file holding the endpoint key (a mounted secret)"
    )
    deployment: str | None = Field(
        default=None, description="azureml-model-deployment header, pins a deployment"
    )
    entra: bool = Field(default=False, description="authenticate with a Microsoft Entra token (extra: azure)")
    entra_scope: str = "https://ml.azure.com/.default"
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # The platform cuts requests at 180 s; 3D volumes need most of it.
    read_timeout_s: float | None = Field(
        default=None, gt=0, description="default: 120 s for 2D, 180 s for 3D"
    )
    max_attempts: int = Field(default=6, ge=1, le=20)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    max_images_per_request: int = Field(default=16, ge=1, le=256)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    max_in_flight: int = Field(default=2, ge=1, le=64, description="concurrent requests per worker process")
    breaker_threshold: int = Field(
        default=8, ge=1, description="consecutive failed attempts that open the circuit"
    )
    breaker_cooldown_s: float = Field(default=30.0, ge=0)
    fallback: str | None = Field(default=None, description="endpoint to use when this one is unavailable")

    @field_validator("headers")
    @classmethod
    def _no_auth_in_headers(cls, value: dict[str, str]) -> dict[str, str]:
        if any(name.lower() == "authorization" for name in value):
            raise ValueError("put credentials in key, key_file or entra, not in headers")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> EndpointSettings:
        if sum((self.key is not None, self.key_file is not None, self.entra)) > 1:
            raise ValueError("choose one of key, key_file and entra")
        return self

    @property
    def read_timeout(self) -> float:
        return self.read_timeout_s or (120.0 if self.model == "2d" else 180.0)

    def api_key(self) -> str | None:
        """The key, read from its secret file when one is configured (so a rotated key is picked up)."""
        if self.key_file is not None:
            return self.key_file.read_text(encoding="utf-8").strip() or None
        return self.key.get_secret_value() if self.key is not None else None


class DicomNode(BaseModel):
    """A DICOM peer reached by C-STORE (a PACS, a viewer, a router)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dicom"] = "dicom"
    ae_title: str = Field(min_length=1, max_length=16, pattern=r"^[ -~]*[!-~][ -~]*$")
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = Field(
        default=None, max_length=16, description="default: the gateway's AE title"
    )
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_s: float = Field(default=5.0, ge=0)
    backoff_max_s: float = Field(default=600.0, ge=0)
    # as a source of POST /jobs
    retrieve: Literal["c-get", "c-move"] = Field(
        default="c-get",
        description=(
            "how a pull retrieves: C-GET on the query association, or C-MOVE to the gateway's own "
            "listener (the node must know the gateway's AE title with the listener's host and port; "
            "its instances are recognised by their Move Originator and never start a job of their own)"
        ),
    )
    retrieve_timeout_s: float = Field(
        default=600.0, gt=0, description="longest wait for the next C-GET / C-MOVE response"
    )


class DicomWebNode(BaseModel):
    """A DICOMweb server reached by STOW-RS (``{url}/studies``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dicomweb"] = "dicomweb"
    url: HttpUrl = Field(description="the DICOMweb root, e.g. http://pacs:8042/dicom-web")
    token: SecretStr | None = Field(default=None, description="bearer token")
    token_file: Path | None = None
    username: str | None = Field(default=None, description="basic auth")
    password: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_s: float = Field(default=5.0, ge=0)
    backoff_max_s: float = Field(default=600.0, ge=0)


Destination = Annotated[DicomNode | DicomWebNode, Field(discriminator="kind")]


WebhookEvent = Literal["done", "no_findings", "failed", "rejected", "delivery_failed"]


class WebhookSettings(BaseModel):
    """POSTs the job's result JSON on done / failed, signed with HMAC-SHA256 (X-Mipgw-Signature)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    secret: SecretStr | None = None
    events: tuple[WebhookEvent, ...] = ("done", "failed")
    timeout_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)


class ListenerSettings(BaseModel):
    """The DICOM listener (C-ECHO, C-STORE SCP)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    # calling AE titles allowed to associate; empty: everyone (logged as a warning at start)
    allowed_calling_aes: tuple[str, ...] = ()
    check_called_ae: bool = True
    max_associations: int = Field(default=10, ge=1)
    max_pending_connections: int = Field(
        default=16,
        ge=1,
        description=(
            "TCP connections beyond max_associations (not yet associated, or about to be refused with "
            "a reason): past that, new connections are closed at once, before any thread is started"
        ),
    )
    max_pdu: int = Field(default=0, ge=0, description="0: unlimited (fastest receive)")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(default=None, description="require client certificates from this CA")
    spool_reserve_bytes: int = Field(default=2 * 1024**3, ge=0, description="refuse associations below this")
    completion_idle_s: float = Field(default=30.0, gt=0)


class ApiSettings(BaseModel):
    """The HTTP API (STOW-RS, jobs, health, metrics)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    keys: tuple[SecretStr, ...] = Field(default=(), description="bearer keys for every route but health")
    keys_file: Path | None = Field(default=None, description="one key per line")
    stow_keys: tuple[SecretStr, ...] = Field(default=(), description="extra keys for the STOW route only")
    max_request_bytes: int = Field(default=8 * 1024**3, ge=1024, description="largest STOW request")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MIPGW_",
        env_nested_delimiter="__",
        extra="forbid",
        secrets_dir=os.environ.get("MIPGW_SECRETS_DIR") or None,
    )

    data_dir: Path = Path("/var/lib/mip-gateway")
    ae_title: str = Field(default="MIPGW", min_length=1, max_length=16)
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    # Redis in production (redis://host:6379/0); unset: a durable SQLite broker under data_dir
    broker_url: str | None = None
    # PostgreSQL in production (postgresql+psycopg://...); unset: SQLite (WAL) under data_dir
    database_url: str | None = None
    rules_file: Path | None = Field(default=None, description="default: the packaged config/rules.yaml")
    endpoints: dict[str, EndpointSettings] = Field(default_factory=dict)
    destinations: dict[str, Destination] = Field(default_factory=dict)
    # nodes POST /jobs may pull a study from: DICOMweb (WADO-RS) or DICOM (C-GET or C-MOVE)
    sources: dict[str, Destination] = Field(default_factory=dict)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    retention_days: float = Field(default=7.0, ge=0, description="received studies and SEGs kept this long")
    # a task not acknowledged within this time is handed to another worker (Redis); keep it far above
    # the longest job. The sweeper also re-queues jobs idle this long (the SQLite broker forgets).
    visibility_timeout_s: float = Field(default=6 * 3600.0, ge=10)
    job_retries: int = Field(default=8, ge=0, description="retries of a job the endpoint keeps refusing")
    sweep_interval_s: float = Field(
        default=60.0, gt=0, description="how often each worker looks for lost work"
    )

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> Settings:
        for name, endpoint in self.endpoints.items():
            if endpoint.fallback is not None:
                if endpoint.fallback not in self.endpoints:
                    raise ValueError(f"endpoint {name!r}: fallback {endpoint.fallback!r} is not configured")
                if self.endpoints[endpoint.fallback].model != endpoint.model:
                    raise ValueError(
                        f"endpoint {name!r}: fallback {endpoint.fallback!r} serves another model"
                    )
        return self

    def move_originators(self) -> frozenset[str]:
        """The calling AE titles of this gateway's C-MOVE requests: an instance whose C-STORE names one
        as its Move Originator was asked for by a pull job, not sent to start one."""
        titles = {self.ae_title.strip()}
        titles.update(
            (node.calling_ae_title or self.ae_title).strip()
            for node in self.sources.values()
            if isinstance(node, DicomNode) and node.retrieve == "c-move"
        )
        return frozenset(titles)

    def move_sources(self) -> frozenset[str]:
        """The AE titles of C-MOVE sources: they store into the listener, so its allow-list admits them."""
        return frozenset(
            node.ae_title.strip()
            for node in self.sources.values()
            if isinstance(node, DicomNode) and node.retrieve == "c-move"
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("MIPGW_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


@lru_cache(maxsize=1)
def get_settings(**overrides: Any) -> Settings:
    """The process's settings, read once (env over ``$MIPGW_CONFIG`` YAML over defaults)."""
    return Settings(**overrides)
