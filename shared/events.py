"""Every message on sendrail's bus, as pydantic models: one contract for all services.

Events are named in the past tense. `sendrail schema` writes their JSON Schemas so
that upstream systems in any language can validate what they publish. Each model
carries `schema_version`; a change that breaks readers raises it.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sendrail.errors import ConfigurationError
from sendrail.throttle.policy import (
    MAX_BATCH_SIZE,
    MAX_BATCH_WAIT_S,
    MAX_RECIPIENTS_PER_MESSAGE,
    MAX_WINDOW_LIMIT,
    MIN_BATCH_WAIT_S,
    BatchSetting,
    LimitOverrides,
)
from sendrail.validation import EmailAddress, ExtraHeaders, HeaderValue, Identifier

SEND_ID_NAMESPACE = uuid.UUID("5e7d2a1c-0b1d-4c8e-9a51-6f4f3c2d9b10")


def send_id_for(tenant_id: str, idempotency_key: str) -> uuid.UUID:
    """Stable for a tenant's idempotency key, so a repeated request is the same send."""
    return uuid.uuid5(SEND_ID_NAMESPACE, f"{tenant_id}/{idempotency_key}")


IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[!-~]+$")]
"""Chosen by the upstream system; with the tenant it identifies a send (printable ASCII)."""


class _Event(BaseModel):
    # Fields may be added within a schema version (README, "Events"): a reader ignores the
    # fields it does not know; a newer `schema_version` is refused by its Literal.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Source(StrEnum):
    """Where a send request comes from; the add-ons force their own provider's channel."""

    WEB = "web"
    API = "api"
    CAMPAIGN = "campaign"
    GMAIL_ADDON = "gmail_addon"
    OUTLOOK_ADDIN = "outlook_addin"


class ChannelKind(StrEnum):
    GMAIL = "gmail"
    EXCHANGE_ONLINE = "exchange_online"
    EXCHANGE_ONPREM = "exchange_onprem"
    CUSTOM_SMTP = "custom_smtp"
    TEAM_SMTP = "team_smtp"
    LEGACY = "legacy"


OAUTH_CHANNELS = frozenset({ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE})
"""Connected by OAuth2; the only channels whose inbox the bounce watcher reads."""

OAUTH_ONLY_SMTP_HOSTS = frozenset({"smtp.gmail.com", "smtp.googlemail.com", "smtp.office365.com",
                                   "smtp-mail.outlook.com"})
"""Gmail and Exchange Online are connected by OAuth, never as SMTP servers with a password."""


# --- send requests -----------------------------------------------------------------


class EmailRequested(_Event):
    """An upstream system asks sendrail to send one email on behalf of a user."""

    schema_version: Literal[1] = 1
    idempotency_key: IdempotencyKey
    tenant_id: Identifier
    user_id: Identifier
    identity: EmailAddress
    """The from-address; one of the user's verified identities."""
    source: Source
    campaign_id: Identifier | None = None
    template_id: Identifier | None = None
    to: Annotated[list[EmailAddress], Field(min_length=1, max_length=1000)]
    cc: Annotated[list[EmailAddress], Field(max_length=1000)] = []
    bcc: Annotated[list[EmailAddress], Field(max_length=1000)] = []
    subject: HeaderValue
    text: str | None = None
    html: str | None = None
    headers: ExtraHeaders = {}
    """Extra header fields: names unique ignoring case, at most 100, 32 KiB in all."""
    requested_at: AwareDatetime

    @model_validator(mode="after")
    def _has_body(self) -> EmailRequested:
        if self.text is None and self.html is None:
            raise ValueError("a request needs a text or an html body")
        return self

    @functools.cached_property
    def send_id(self) -> uuid.UUID:
        """Computed once per request: the router and the senders ask for it several times."""
        return send_id_for(self.tenant_id, self.idempotency_key)

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


class EmailRouted(_Event):
    """The router chose a connection for a request; the channel's sender takes it from here."""

    schema_version: Literal[1] = 1
    send_id: uuid.UUID
    channel: ChannelKind
    connection_id: Identifier
    request: EmailRequested
    routed_at: AwareDatetime


# --- delivery outcomes ---------------------------------------------------------------


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    SUPPRESSED = "suppressed"
    """Refused: a recipient is on the tenant's suppression list."""
    DUPLICATE = "duplicate"
    """Not sent: the same tenant and idempotency key as a send already finished
    (`duplicate_of` says where); that send's own events tell its outcome."""


FINAL_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.DEAD_LETTERED,
                            DeliveryStatus.SUPPRESSED})


class DeliveryEvent(_Event):
    """What happened to a send; the provider's reply is kept verbatim when there was one."""

    schema_version: Literal[1] = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    status: DeliveryStatus
    send_id: uuid.UUID | None
    """None only for a request too malformed to have one."""
    tenant_id: str | None = None
    user_id: str | None = None
    identity: str | None = None
    campaign_id: str | None = None
    template_id: str | None = None
    channel: ChannelKind | None = None
    connection_id: str | None = None
    recipients: list[str] = []
    message_id: str | None = None
    reply_code: int | None = None
    reply_text: str | None = None
    reason: str | None = None
    """A sentence a person can act on."""
    next_attempt_at: AwareDatetime | None = None
    duplicate_of: str | None = None
    """For a `duplicate`: where the original is (topic/partition/offset)."""
    occurred_at: AwareDatetime

    @classmethod
    def for_routed(cls, routed: EmailRouted, status: DeliveryStatus, occurred_at: datetime,
                   **outcome: object) -> DeliveryEvent:
        request = routed.request
        fields: dict[str, object] = {
            "status": status, "send_id": routed.send_id, "tenant_id": request.tenant_id,
            "user_id": request.user_id, "identity": request.identity,
            "campaign_id": request.campaign_id, "template_id": request.template_id,
            "channel": routed.channel, "connection_id": routed.connection_id,
            "recipients": request.recipients, "occurred_at": occurred_at,
        }
        fields.update(outcome)
        return cls.model_validate(fields)


class RequestDeadLettered(_Event):
    """A record a consumer could not use, kept with where it came from and why it was refused.

    Its original bytes are kept whole up to 256 KiB, else their start with `truncated`, and
    always their size and SHA-256, so the entry itself always fits in a Kafka record.
    """

    schema_version: Literal[1] = 1
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str
    original_bytes: int | None = None
    original_sha256: str | None = None
    truncated: bool = False
    kind: str | None = None
    """undecodable, invalid, newer_schema, mismatched or handling_failed."""
    consumer: str | None = None
    """The service that refused it."""
    reason: str
    occurred_at: AwareDatetime


# --- bounces -------------------------------------------------------------------------


class _MailboxFinding(_Event):
    """What the bounce watcher found in a sender's inbox, tied to a send when it can be."""

    schema_version: Literal[1] = 1
    tenant_id: str
    connection_id: str
    channel: ChannelKind
    correlated: bool
    send_id: uuid.UUID | None = None
    user_id: str | None = None
    identity: str | None = None
    campaign_id: str | None = None
    template_id: str | None = None
    detected_at: AwareDatetime


class AutoReplyDetected(_MailboxFinding):
    """An automatic reply (RFC 3834: out of office, vacation) to a send: not a bounce."""

    event: Literal["auto_reply"] = "auto_reply"
    finding_id: uuid.UUID
    address: str
    """Who replied."""


class ComplaintDetected(_MailboxFinding):
    """A spam complaint about a send (ARF, RFC 5965): not a bounce."""

    event: Literal["complaint"] = "complaint"
    finding_id: uuid.UUID
    address: str
    """Who complained."""


class BounceDetected(_Event):
    """A bounce found in a sender's inbox, tied to its send when the evidence allows."""

    event: Literal["bounce"] = "bounce"
    schema_version: Literal[1] = 1
    bounce_id: uuid.UUID
    """Derived from the mailbox position, so a re-read message yields the same id."""
    tenant_id: str
    connection_id: str
    channel: ChannelKind
    recipient: str
    status: str | None
    reply_code: str | None
    diagnostic: str | None
    reason: str
    hard: bool
    correlated: bool
    send_id: uuid.UUID | None = None
    user_id: str | None = None
    identity: str | None = None
    campaign_id: str | None = None
    template_id: str | None = None
    detected_at: AwareDatetime


AnalyticsEvent = Annotated[
    BounceDetected | AutoReplyDetected | ComplaintDetected, Field(discriminator="event")
]
"""What the analytics topic carries, told apart by `event`."""


class AddressSuppressed(_Event):
    """An address the tenant no longer sends to: a hard bounce, repeated soft ones, an admin."""

    schema_version: Literal[1] = 1
    tenant_id: Identifier
    address: EmailAddress
    source: Literal["hard_bounce", "soft_bounces", "admin"]
    reason: str
    bounce_id: uuid.UUID | None = None
    suppressed_at: AwareDatetime


class WatcherCheckpoint(_Event):
    """How far the bounce watcher has read one mailbox (RFC 3501 UIDVALIDITY and UID)."""

    schema_version: Literal[1] = 1
    tenant_id: str
    connection_id: str
    uidvalidity: int
    last_uid: int


class ThrottleStateRecorded(_Event):
    """What a sender must remember of one connection to keep its limits across restarts,
    crashes and rebalances: its sends inside the windows, its pause, and which messages
    since the last commit are finished or in flight (so none is sent twice)."""

    schema_version: Literal[1] = 1
    tenant_id: str
    connection_id: str
    sends_at_ms: list[int] = []
    """When each send inside the longest window went (Unix ms), oldest first."""
    sends_recipients: list[int] = []
    paused_until: AwareDatetime | None = None
    pause_reason: str | None = None
    finished_offsets: list[int] = []
    """Offsets of the connection's partition done (sent, failed or held) at or after the
    commit point: skipped when read again."""
    in_flight_offsets: list[int] = []
    """Handed to the server, outcome not recorded: sent again after a crash."""
    in_flight_recipients: list[int] = []
    in_flight_since: AwareDatetime | None = None
    """When the in-flight sends started; after a crash they count as sent at this time plus
    the SMTP timeout, the latest the server can have accepted them."""
    recorded_at: AwareDatetime


# --- the channel registry (a compacted topic) ----------------------------------------


class SmtpServer(_Event):
    host: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")]
    port: Annotated[int, Field(ge=1, le=65535)]
    tls: Literal["starttls", "implicit"] = "starttls"
    """Certificate verification is always on; there is no plaintext option."""


class ImapServer(_Event):
    host: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")]
    port: Annotated[int, Field(ge=1, le=65535)] = 993


class OAuthGrant(_Event):
    refresh_token: str
    """Fernet token of the refresh token: never in clear on the bus."""
    microsoft_tenant: Identifier = "common"


class ConnectionConfigured(_Event):
    """A mailbox or server that mail can go through, with its (encrypted) credentials."""

    record: Literal["connection"] = "connection"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    connection_id: Identifier
    kind: ChannelKind
    owner_user_id: Identifier | None
    """None for team and legacy servers, which serve many users."""
    address: EmailAddress | None = None
    """The mailbox address of an OAuth connection (the SMTP user and the inbox watched)."""
    smtp: SmtpServer
    username: str | None = None
    password: str | None = None
    """Fernet token of the SMTP password."""
    oauth: OAuthGrant | None = None
    imap: ImapServer | None = None
    max_message_bytes: Annotated[int, Field(gt=0)] | None = None
    connected_at: AwareDatetime
    """When the user last (re)connected: new credentials. A rotated refresh token is
    stored without changing it, so senders keep their sessions."""
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _credentials_fit_kind(self) -> ConnectionConfigured:
        if self.kind in OAUTH_CHANNELS:
            if self.oauth is None or self.address is None:
                raise ValueError(f"a {self.kind} connection needs an OAuth grant and an address")
            if self.password is not None:
                raise ValueError(f"{self.kind} connects by OAuth, not with SMTP credentials")
        elif self.oauth is not None:
            raise ValueError(f"a {self.kind} connection uses SMTP AUTH, not OAuth")
        elif self.smtp.host.lower().rstrip(".") in OAUTH_ONLY_SMTP_HOSTS:
            raise ValueError(f"{self.smtp.host} is Gmail or Exchange Online: connect the mailbox "
                             "with OAuth (gmail / exchange-online), not as an SMTP server")
        if self.kind in {ChannelKind.TEAM_SMTP, ChannelKind.LEGACY} and self.owner_user_id:
            raise ValueError(f"a {self.kind} connection belongs to the team, not to a user")
        if self.kind not in {ChannelKind.TEAM_SMTP, ChannelKind.LEGACY} and not self.owner_user_id:
            raise ValueError(f"a {self.kind} connection belongs to one user: set owner_user_id")
        return self


class ConnectionHealthChanged(_Event):
    """A connection broke (token revoked, password changed) or came back."""

    record: Literal["connection_health"] = "connection_health"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    connection_id: Identifier
    healthy: bool
    reason: str | None = None
    changed_at: AwareDatetime


class IdentityRegistered(_Event):
    """A from-address of a user; nothing is sent from it until it is verified."""

    record: Literal["identity"] = "identity"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    user_id: Identifier
    address: EmailAddress
    verified: bool = False
    is_default: bool = False
    updated_at: AwareDatetime


class ChannelAssigned(_Event):
    """An identity's mail goes through this connection."""

    record: Literal["assignment"] = "assignment"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    user_id: Identifier
    identity: EmailAddress
    connection_id: Identifier
    updated_at: AwareDatetime


class TenantConfigured(_Event):
    """Team-wide settings: the team SMTP channel, and whether the tenant may use legacy servers."""

    record: Literal["tenant"] = "tenant"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    legacy: bool = False
    team_connection_id: Identifier | None = None
    updated_at: AwareDatetime


class ThrottleConfigured(_Event):
    """An admin's throttle for the team (no connection_id) or for one connection.

    Gmail and Exchange Online connections are throttled by default, with the provider's
    caps and the team's batch setting; fields left None keep those defaults, a connection's
    own record wins over the team's. Other channels are throttled only when configured.
    """

    record: Literal["throttle"] = "throttle"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    connection_id: Identifier | None = None
    enabled: bool = True
    # The bounds are the throttle policy's own (sendrail.throttle.policy gives the reasons):
    # a record outside them could never become a policy, and its connection would be left
    # without limits to keep.
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] | None = None
    """Messages per batch, 1 to 10,000 (Exchange Online's whole day)."""
    batch_wait_s: Annotated[float, Field(ge=MIN_BATCH_WAIT_S, le=MAX_BATCH_WAIT_S,
                                         allow_inf_nan=False)] | None = None
    """Seconds between batches, 1 to 86,400 in whole milliseconds: no provider needs batches
    less than a second apart (the per-second cap paces sends within one), and no window is
    longer than a day."""
    daily_messages: Annotated[int, Field(ge=1, le=MAX_WINDOW_LIMIT)] | None = None
    daily_recipients: Annotated[int, Field(ge=1, le=MAX_WINDOW_LIMIT)] | None = None
    per_minute_messages: Annotated[int, Field(ge=1, le=MAX_WINDOW_LIMIT)] | None = None
    """Caps of rolling windows, at most 50,000: every send inside a connection's longest
    window is stored in one throttle-state record, which must fit in a Kafka record."""
    max_recipients_per_message: Annotated[int, Field(ge=1, le=MAX_RECIPIENTS_PER_MESSAGE)] | None = None
    """At most 1,000, Exchange Online's admin maximum (Gmail takes 100 through SMTP)."""
    gmail_plan: Literal["workspace", "workspace_trial", "consumer"] | None = None
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _batch_is_whole(self) -> ThrottleConfigured:
        if (self.batch_size is None) != (self.batch_wait_s is None):
            raise ValueError("a batch setting needs both batch_size and batch_wait_s")
        # What the senders build from this record, built once here: what it refuses (a wait
        # finer than a millisecond) is refused where the record enters, not at every turn.
        try:
            if self.batch_size is not None and self.batch_wait_s is not None:
                BatchSetting(self.batch_size, self.batch_wait_s)
            LimitOverrides(daily_messages=self.daily_messages, daily_recipients=self.daily_recipients,
                           per_minute_messages=self.per_minute_messages,
                           max_recipients_per_message=self.max_recipients_per_message)
        except ConfigurationError as error:
            raise ValueError(str(error)) from None
        return self


TokenId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
"""An analytics token's public id: 16 hexadecimal digits."""


class AnalyticsTokenIssued(_Event):
    """A bearer token that reads one tenant's analytics; only its SHA-256 is kept, never the token."""

    record: Literal["analytics_token"] = "analytics_token"
    schema_version: Literal[1] = 1
    tenant_id: Identifier
    token_id: TokenId
    """Public: shown by `sendrail analytics token list`, and the middle part of the token."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None
    """Set once revoked; the record stays, so the list shows when."""


RegistryRecord = Annotated[
    ConnectionConfigured | ConnectionHealthChanged | IdentityRegistered | ChannelAssigned
    | TenantConfigured | ThrottleConfigured | AnalyticsTokenIssued,
    Field(discriminator="record"),
]


TEAM_WIDE = "*"
"""The id part of the key of a record that applies to the whole team."""


def registry_key(record: RegistryRecord) -> str:
    """The compaction key: the latest record per key is the registry's state."""
    match record:
        case ConnectionConfigured() | ConnectionHealthChanged():
            return f"{record.record}/{record.tenant_id}/{record.connection_id}"
        case IdentityRegistered():
            return f"identity/{record.tenant_id}/{record.address}"
        case ChannelAssigned():
            return f"assignment/{record.tenant_id}/{record.identity}"
        case TenantConfigured():
            return f"tenant/{record.tenant_id}"
        case ThrottleConfigured():
            return f"throttle/{record.tenant_id}/{record.connection_id or TEAM_WIDE}"
        case AnalyticsTokenIssued():
            return f"analytics_token/{record.tenant_id}/{record.token_id}"
