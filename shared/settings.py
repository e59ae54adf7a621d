"""Settings, one class per concern, read from SENDRAIL_* environment variables.

`make run` writes the local stack's values to `.cache/local.env`; the `sendrail`
command reads that file too, so commands typed in another terminal reach the
running stack. Real environment variables always win over the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_ENV_FILE = Path(".cache/local.env")

_DAY_S = 24 * 3600.0
Wait_s = Annotated[float, Field(gt=0, le=30 * _DAY_S, allow_inf_nan=False)]
"""A wait or timeout: finite and positive, so no setting can make a loop spin (0 would)."""
Interval_s = Annotated[float, Field(ge=0.01, le=30 * _DAY_S, allow_inf_nan=False)]
"""How often a loop runs: at least 10 ms."""
Age_s = Annotated[float, Field(ge=0, le=365 * _DAY_S, allow_inf_nan=False)]
"""An age or window that may be zero (e.g. never reuse an idle session)."""
Port = Annotated[int, Field(ge=0, le=65535)]
"""0: any free port."""


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENDRAIL_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    replication_factor: int = 1
    """For topics sendrail creates; 3 on a production cluster."""


class SecretSettings(BaseSettings):
    """The Fernet key that encrypts refresh tokens and passwords on the bus."""

    model_config = SettingsConfigDict(env_prefix="SENDRAIL_", extra="ignore")

    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None


class TlsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENDRAIL_TLS_", extra="ignore")

    ca_file: Path | None = None
    """Extra CA certificates to trust besides the system's (the local sandbox's CA)."""


class OAuthSettings(BaseSettings):
    """sendrail's registered OAuth2 apps and the providers' token endpoints."""

    model_config = SettingsConfigDict(env_prefix="SENDRAIL_OAUTH_", extra="ignore")

    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_client_id: str = "sendrail"
    google_client_secret: SecretStr = SecretStr("")
    microsoft_token_url: str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    microsoft_client_id: str = "sendrail"
    microsoft_client_secret: SecretStr = SecretStr("")
    token_timeout_s: Wait_s = 15.0


class HttpSettings(BaseSettings):
    """Where a service serves /metrics and /healthz."""

    model_config = SettingsConfigDict(env_prefix="SENDRAIL_HTTP_", extra="ignore")

    host: str = "127.0.0.1"
    port: Port = 9400


class SenderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENDRAIL_SENDER_", extra="ignore")

    smtp_timeout_s: Wait_s = 30.0
    connections_per_server: Annotated[int, Field(ge=1, le=100)] = 4
    """Upper bound per SMTP server or mailbox; a provider's own lower cap wins."""
    session_idle_s: Age_s = 30.0
    """Reuse an SMTP session only if it was used this recently (servers drop idle ones)."""
    retry_backoff_base_s: Wait_s = 1.0
    retry_backoff_max_s: Annotated[float, Field(gt=0, le=_DAY_S, allow_inf_nan=False)] = 60.0
    """At most a day: a connection looks at its queue at least daily (see max_queued_age_s)."""
    max_queued_age_s: Annotated[float, Field(gt=0, le=5 * _DAY_S, allow_inf_nan=False)] = 3 * _DAY_S
    """A message still unsent this long after it was routed (throttled, or retried after
    temporary failures) fails as expired. At most 5 days: with at most a day more until its
    connection looks again, it is failed before the outbound topics' 7-day retention."""
    commit_interval_s: Interval_s = 1.0
    loaded_per_connection: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Messages per connection kept decoded in memory, while `max_decoded_messages` allows;
    the rest of a backlog stays in Kafka, read again in chunks this large as it is sent."""
    max_decoded_messages: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    """Messages kept decoded by all connections together (about 5 KB each); the rest are
    offsets, read again when their connection's turn comes."""
    max_queued_messages: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000
    """Stop reading ahead past this many queued messages (each costs a few dozen bytes)."""
    messages_per_session_turn: Annotated[int, Field(ge=1, le=1_000)] = 4
    """How many messages one SMTP session takes per turn of its connection."""
    max_concurrent_turns: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Connections whose turns run at once; the rest wait their turn in order of due time, so
    thousands of connections falling due together never flood the producer or the servers."""
    quota_probe_s: Annotated[float, Field(gt=0, le=_DAY_S, allow_inf_nan=False)] = 3600.0
    """After a quota reply the history does not explain (mail sent outside sendrail), try again
    after this long."""
    held_expiry_s: Wait_s = 3 * 24 * 3600.0
    """Mail held for a broken connection fails this long after it was routed."""
    held_recheck_s: Interval_s = 30.0
    """How often the router looks over the held mail it keeps: what expired fails, and a
    connection found healthy without a registry change saying so (a deleted health record)
    gets its mail back. A reconnect announced in the registry releases mail at once."""


class WatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENDRAIL_WATCHER_", extra="ignore")

    idle_timeout_s: Annotated[float, Field(ge=1, le=29 * 60, allow_inf_nan=False)] = 600.0
    """Re-issue IDLE well before RFC 2177's 29 minutes."""
    poll_interval_s: Interval_s = 30.0
    """For servers without IDLE."""
    connect_timeout_s: Wait_s = 30.0
    reconnect_backoff_base_s: Wait_s = 1.0
    reconnect_backoff_max_s: Wait_s = 300.0
    """A failing mailbox (or a bus that cannot be reached) is retried after a capped
    exponential backoff with jitter, per mailbox."""
    login_interval_s: Age_s = 60.0
    """While a mailbox is failing it logs in at most once this often, whatever the backoff
    says: every retry refreshes a token and logs in, and providers lock out login storms."""
    fetch_batch: Annotated[int, Field(ge=1, le=1_000)] = 50
    parse_processes: Annotated[int, Field(ge=1, le=64)] = 2
    """Processes that parse fetched messages, shared by all mailboxes: what hostile mail
    can take is bounded by this many cores."""
    soft_bounces_to_suppress: Annotated[int, Field(ge=0, le=1_000)] = 0
    """Soft bounces of one address within the window that put it on the suppression list;
    0 never does (hard bounces always do)."""
    soft_bounce_window_s: Wait_s = 30 * 24 * 3600.0


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENDRAIL_ROUTER_", extra="ignore")

    max_request_bytes: Annotated[int, Field(ge=1024, le=900 * 1024)] = 900 * 1024
    """Larger requests are refused (`failed`) before anything is built. At most 900 KiB: the
    routed email wraps the request, and Kafka's default record limit is 1 MiB."""


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENDRAIL_", extra="ignore")

    state_dir: Path = Path(".cache/state")
    """Local table state (RocksDB), one directory per process; rebuilt from Kafka, never backed up."""


class AnalyticsSettings(BaseSettings):
    """Where the analytics service serves its JSON API and web page (apart from /metrics)."""

    model_config = SettingsConfigDict(env_prefix="SENDRAIL_ANALYTICS_", extra="ignore")

    host: str = "127.0.0.1"
    port: Port = 8480
    allowed_hosts: str | None = None
    """Comma-separated Host header values served (`name` or `name:port`); unset: the loopback
    names and `host`, bare and with `port`. Anything else is refused (DNS rebinding)."""
    trust_proxy_header: str | None = None
    """Only behind an authenticating proxy: the header in which it names the request's tenant.
    Bearer tokens are then not asked for (`sendrail service analytics --trust-proxy`)."""


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    secrets: SecretSettings
    tls: TlsSettings
    oauth: OAuthSettings
    http: HttpSettings
    sender: SenderSettings
    watcher: WatcherSettings
    analytics: AnalyticsSettings
    router: RouterSettings = field(default_factory=RouterSettings)
    store: StoreSettings = field(default_factory=StoreSettings)

    @classmethod
    def load(cls, env_file: Path | None = LOCAL_ENV_FILE) -> Settings:
        """Environment variables, then `env_file` (if it exists) for what they leave unset."""
        file = env_file if env_file is not None and env_file.exists() else None
        return cls(
            kafka=KafkaSettings(_env_file=file),
            secrets=SecretSettings(_env_file=file),
            tls=TlsSettings(_env_file=file),
            oauth=OAuthSettings(_env_file=file),
            http=HttpSettings(_env_file=file),
            sender=SenderSettings(_env_file=file),
            watcher=WatcherSettings(_env_file=file),
            analytics=AnalyticsSettings(_env_file=file),
            router=RouterSettings(_env_file=file),
            store=StoreSettings(_env_file=file),
        )
