"""Hub configuration: one pydantic model, filled from arguments and `AGENTHUB_*` environment variables."""

from __future__ import annotations

import ipaddress
import re
import uuid
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agenthub.hub.trust.principal import Role


class HubSettings(BaseSettings):
    """Everything a hub process can be told. Env: AGENTHUB_<FIELD>, e.g. AGENTHUB_PORT=50051."""

    model_config = SettingsConfigDict(env_prefix="AGENTHUB_", extra="ignore")

    host: str = Field("127.0.0.1", description="interface the gRPC and HTTP servers bind")
    port: int = Field(
        50051, ge=0, le=65535, description="gRPC port (A2A, registry, threads); 0 = any free port"
    )
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (agent cards); 0 = any free port")
    public_host: str | None = Field(None, description="host written into agent cards (default: host)")
    data_dir: Path = Field(Path(".agenthub"), description="where the embedded log and the SQLite store live")
    threads_url: str | None = Field(
        None,
        description="thread store URL: postgresql://user@host/db or sqlite:///path (default in data_dir)",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="the hub's event loop: uvloop (faster) or asyncio; auto = uvloop where installed"
    )
    log: Literal["embedded", "kafka"] = Field(
        "embedded", description="log backend: embedded (SQLite) or kafka"
    )
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers host:port[,...] (log=kafka)")
    replication_factor: int = Field(1, ge=1, description="replicas of each Kafka topic the hub creates")
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        "auto", description="idempotent Kafka producer: on, off, or auto (where the broker supports it)"
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1000, description="Kafka consumer-group session timeout (also how fast groups form)"
    )
    kafka_static_membership: bool = Field(
        False,
        description="join Kafka consumer groups as static members (a quick restart causes no rebalance;"
        " off by default: the Tansu test broker handles it slowly)",
    )
    kafka_metadata_max_age_ms: int = Field(
        1_000, ge=100, description="how often the recorder looks for new Kafka topics"
    )
    topic_prefix: str = Field("agenthub", pattern=r"^[A-Za-z0-9_-]+$", description="prefix of every topic")
    partitions: int = Field(4, ge=1, description="partitions of each routing topic")
    instance_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], description="this hub instance")
    fetch_wait_ms: int = Field(20, ge=0, description="Kafka: longest time the broker holds an empty fetch")
    max_message_bytes: int = Field(1_048_576, ge=1024, description="largest A2A request accepted")
    max_attempts: int = Field(
        6,
        ge=1,
        description="attempts of a request (while its agent is reachable) before it is dead-lettered",
    )
    retry_backoff_s: float = Field(
        0.5, ge=0, description="first retry delay; doubles each attempt (jittered)"
    )
    retry_backoff_cap_s: float = Field(8.0, ge=0, description="longest delay between two attempts")
    retry_window_s: float = Field(
        120.0, gt=0, description="longest time one request is retried before it is dead-lettered"
    )
    breaker_threshold: int = Field(
        3, ge=0, description="consecutive unreachable calls that open an agent's circuit (0 = never)"
    )
    breaker_probe_s: float = Field(
        1.0, gt=0, description="seconds between probes of an agent whose circuit is open"
    )
    record_linger_ms: int = Field(
        20, ge=0, description="how long the recorder lets a batch grow before writing it (a read cuts it)"
    )
    commit_interval_ms: int = Field(
        100, ge=1, description="how often offsets of finished work (requests, recorded records) are committed"
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, description="longest wait for in-flight requests when partitions move to another instance"
    )
    task_deadline_s: float = Field(
        900.0,
        ge=0,
        description="a task with no update for this long and no live delivery is ended as failed (0 = never)",
    )
    join_timeout_s: float = Field(
        30.0, gt=0, description="how long readiness waits for consumer groups before reporting them down"
    )
    produce_timeout_s: float = Field(
        5.0, gt=0, description="longest a send waits for the log before it is refused as UNAVAILABLE"
    )
    agent_call_timeout_s: float = Field(300.0, gt=0, description="longest one agent call may take")
    max_in_flight: int = Field(64, ge=1, description="requests dispatched concurrently per agent")
    default_agent: str | None = Field(None, description="agent for requests that name no tenant")
    health_interval_s: float = Field(5.0, ge=0, description="seconds between agent health checks (0 = off)")
    push_attempts: int = Field(5, ge=1, description="POSTs tried per task update before a webhook gives up")
    push_backoff_s: float = Field(
        0.5, ge=0, description="first delay between two POSTs to a webhook; doubles each time (jittered)"
    )

    # ---- trust (README "Security") -----------------------------------------------------------
    auth: bool = Field(
        False,
        description="require credentials (API key or JWT) on every call but discovery and health;"
        " `agenthub up` turns it on",
    )
    admin_key_file: Path | None = Field(
        None, description="where the hub keeps its bootstrap admin key (default: data_dir/admin.key)"
    )
    jwt_issuer: str | None = Field(None, description="accept JWTs from this issuer (OIDC `iss`)")
    jwt_audience: str | None = Field(None, description="JWT audience (`aud`) the hub expects")
    jwt_jwks: str | None = Field(None, description="the issuer's key set: a JWKS file path or https URL")
    jwt_role_claim: str = Field("roles", description="JWT claim holding the role (string or list)")
    jwt_agent_claim: str = Field("agent", description="JWT claim naming an agent token's agent")
    jwt_name_claim: str = Field("sub", description="JWT claim naming the principal")
    policy_default: Literal["allow", "deny"] = Field(
        "allow", description="whether a call no policy rule matches may reach its agent"
    )
    rate_limit_per_s: float = Field(0.0, ge=0, description="calls per second per principal (0 = no limit)")
    rate_limit_burst: int = Field(50, ge=1, description="calls a principal may make at once above its rate")
    max_in_flight_per_principal: int = Field(
        0, ge=0, description="sends one principal may have waiting for answers at once (0 = no limit)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="web origins allowed to call the HTTP heads from a browser"
    )
    insecure: bool = Field(
        False, description="serve on a non-loopback address without authentication (not recommended)"
    )

    @property
    def binds_loopback(self) -> bool:
        """Whether the hub listens on this machine only ("localhost" or a loopback address)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def admin_key_path(self) -> Path:
        return self.admin_key_file or self.data_dir / "admin.key"

    # ---- outbound calls (README "Security", "Outbound calls") ---------------------------------
    outbound_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs and host names (`hooks.corp`, `*.corp`) card fetches and webhooks may reach"
        " although private, link-local or reserved; comma-separated in AGENTHUB_OUTBOUND_ALLOW",
    )
    outbound_loopback: Literal["auto", "allow", "refuse"] = Field(
        "auto",
        description="may card fetches and webhooks reach loopback: auto = only when the hub binds loopback",
    )
    secret_key: str | None = Field(
        None,
        repr=False,
        description="Fernet key that encrypts push configs in the log (the same on every instance);"
        " default: generated once into data_dir/secret.key",
    )

    @field_validator("outbound_allow", mode="before")
    @classmethod
    def _split_allow(cls, value: object) -> object:
        """Comma-separated entries (as env gives them) become a list; each must be a CIDR or a host name."""
        entries = [e.strip() for e in value.split(",") if e.strip()] if isinstance(value, str) else value
        for entry in entries if isinstance(entries, list) else []:
            if not _is_network(entry) and not _HOST_NAME.match(str(entry)):
                raise ValueError(f"{entry!r} is neither a CIDR nor a host name")
        return entries

    @property
    def card_host(self) -> str:
        return self.public_host or self.host

    # ---- TLS (README "Security", "TLS") -------------------------------------------------------
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain the gRPC and HTTP listeners present (TLS on with tls_key)"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA(s) client certificates must chain to: set, every connection needs one"
        " (mTLS), and on gRPC its CN is the caller when it sends no bearer credential",
    )
    tls_client_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*=user"],
        description="role of a client certificate by its CN: `pattern=role` entries, first match wins"
        " (`agent` makes the CN an agent name); comma-separated in AGENTHUB_TLS_CLIENT_ROLES",
    )

    @field_validator("tls_client_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        """`pattern=role` entries (comma-separated from env); each role must be one the hub knows."""
        entries = [e.strip() for e in value.split(",") if e.strip()] if isinstance(value, str) else value
        for entry in entries if isinstance(entries, list) else []:
            pattern, _, role = str(entry).partition("=")
            if not pattern.strip() or role.strip() not in set(Role):
                raise ValueError(f"{entry!r} is not `pattern=role` with role one of {', '.join(Role)}")
        return entries

    @property
    def tls(self) -> bool:
        """Whether the listeners serve TLS (the cards then say https://)."""
        return self.tls_cert is not None


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")  # a name, or `*.suffix` for its subdomains


def _is_network(entry: object) -> bool:
    try:
        ipaddress.ip_network(str(entry), strict=False)
    except ValueError:
        return False
    return True
