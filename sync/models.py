"""The daemon's own tables (SQLAlchemy 2). Migrations in ``migrations/`` must equal these.

Portable to SQLite, PostgreSQL and MariaDB: times are stored as naive UTC with microseconds
(:class:`UTCDateTime`), JSON as text (:class:`JSONText`), identifiers as bounded strings so
that composite unique keys fit MariaDB's index limit.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ID = 128      # CRM and provider identifiers
EMAIL = 254   # RFC 5321 path limit
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def Key(length: int) -> sa.types.TypeEngine[str]:
    """An identifier or e-mail column compared byte for byte everywhere.

    MariaDB's default utf8mb4 collation treats 'Öz@' and 'oz@' (and trailing spaces) as equal,
    which would merge distinct CRM ids and e-mails in unique keys; the binary collation does not.
    """
    return sa.String(length).with_variant(mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; stored naive UTC with microseconds."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


class JSONText(sa.TypeDecorator[Any]):
    """JSON kept in a TEXT column: identical on all three databases."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Any:
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(), dict[str, Any]: JSONText(), list[Any]: JSONText(),
    }


class Tenant(Base):
    """An end user of the CRM (Son Kullanıcı); ``crm_tenant_id`` is the id its CRM rows carry."""

    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(64), unique=True)
    crm_tenant_id: Mapped[str] = mapped_column(Key(ID), unique=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    connections: Mapped[list[Connection]] = relationship(back_populates="tenant", cascade="all, delete-orphan")


class IntegratorCredential(Base):
    """Credentials of the integrator itself (Euromsg's clientName/password): one per provider."""

    __tablename__ = "integrator_credentials"
    provider: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    credentials_encrypted: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Connection(Base):
    """One tenant x one provider: encrypted credentials, settings, schedule and the run lease."""

    __tablename__ = "connections"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "provider"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(sa.String(32))
    credentials_encrypted: Mapped[str] = mapped_column(sa.Text)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    base_url: Mapped[str] = mapped_column(sa.String(512))
    enabled: Mapped[bool] = mapped_column(default=True)
    schedule: Mapped[str | None] = mapped_column(sa.String(64))
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[dt.datetime | None]
    #: Endpoint -> the reading its answers last came in (``sync.providers.readings``), as
    #: ``connection test`` and the runs saw them; NULL until either has read something.
    readings: Mapped[dict[str, Any] | None] = mapped_column(JSONText())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    tenant: Mapped[Tenant] = relationship(back_populates="connections")


class ListLink(Base):
    """A CRM list and its twin at the provider."""

    __tablename__ = "list_links"
    __table_args__ = (sa.UniqueConstraint("connection_id", "crm_list_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    crm_list_id: Mapped[str] = mapped_column(Key(ID))
    remote_list_id: Mapped[str] = mapped_column(Key(ID))
    name_pushed: Mapped[str] = mapped_column(sa.String(255))
    pushed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: The list existed at the provider (made in its panel) and was adopted by name: never deleted.
    adopted: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class ListReplan(Base):
    """A CRM list whose members a run must plan again: its link was made, re-made (the list was
    deleted in the provider's panel, or the provider lost its state), re-mapped or dropped. Written
    in the transaction that changes the list link; deleted by the one that commits a completed
    members phase. So a run that dies in between leaves the re-plan to the next run (before, it
    lived only in the dying run: the re-created list was never refilled).

    ``remote_list_id``: the remote list that went away (deleted by us, or missing at the provider),
    whose links are corrected; ``lost``: it was missing at the provider, so the contacts in it are
    pushed again even when their hash is unchanged."""

    __tablename__ = "list_replans"
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    crm_list_id: Mapped[str] = mapped_column(Key(ID))
    remote_list_id: Mapped[str | None] = mapped_column(Key(ID))
    lost: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MemberLink(Base):
    """A CRM member (or, for per-list providers, a member in one list) and its twin at the provider.

    ``crm_list_id`` is ``""`` for providers that keep one contact with a set of lists.
    ``payload_hash`` is the hash of what was last accepted by the provider; equal hash, no push.
    """

    __tablename__ = "member_links"
    __table_args__ = (sa.UniqueConstraint("connection_id", "crm_member_id", "crm_list_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    crm_member_id: Mapped[str] = mapped_column(Key(ID))
    crm_list_id: Mapped[str] = mapped_column(Key(ID), default="")
    email: Mapped[str] = mapped_column(Key(EMAIL), index=True)
    remote_id: Mapped[str | None] = mapped_column(Key(ID))
    remote_lists: Mapped[list[Any]] = mapped_column(default=list)
    payload_hash: Mapped[str] = mapped_column(sa.String(64))
    pushed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: The status we last sent ("active" / "unsubscribed"): our own unsubscribe pulled back is an echo.
    status_pushed: Mapped[str | None] = mapped_column(sa.String(16))
    #: The CRM state (row, live lists, connection settings: sync.crm.source_digest) the member was
    #: last reconciled from; NULL until then. A backfill plans only members whose digest differs.
    source_digest: Mapped[str | None] = mapped_column(sa.String(32))
    #: Addresses a push in flight moves this record to (a provider keyed by our member id, where
    #: an update moves the one record): written before the push, cleared when its answer is
    #: recorded. After a crash in between the record holds ``email`` or one of these, so a panel
    #: action asked for on it names them too. NULL: none in doubt.
    unconfirmed_emails: Mapped[list[Any] | None] = mapped_column(default=None)


class Watermark(Base):
    """How far a stream of a connection has been fully processed and committed."""

    __tablename__ = "watermarks"
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(255))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncRun(Base):
    """One run of one connection: what it did, how long it took, how it ended."""

    __tablename__ = "sync_runs"
    __table_args__ = (sa.Index(None, "connection_id", "started_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    connection_id: Mapped[int | None] = mapped_column(sa.ForeignKey("connections.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(sa.String(16))      # sync | backfill | dry-run
    #: running, or one of sync.engine.runner.RUN_STATUSES (``succeeded_with_rejects`` needs 22)
    status: Mapped[str] = mapped_column(sa.String(32))
    worker: Mapped[str] = mapped_column(sa.String(128))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class Reject(Base):
    """A row the provider or our validation refused; retried by later runs until resolved."""

    __tablename__ = "rejects"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "crm_member_id", "crm_list_id"),
        sa.Index(None, "connection_id", "resolved_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sync_runs.id", ondelete="SET NULL"))
    crm_member_id: Mapped[str] = mapped_column(Key(ID))
    crm_list_id: Mapped[str] = mapped_column(Key(ID), default="")
    email: Mapped[str | None] = mapped_column(sa.String(EMAIL))
    provider_code: Mapped[str | None] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=1)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]
    #: An operator dismissed it (``rejects dismiss``): who, when and why. Dismissal also sets
    #: ``resolved_at``, so the engine stops retrying it.
    dismissed_at: Mapped[dt.datetime | None]
    dismissed_by: Mapped[str | None] = mapped_column(sa.String(128))
    dismiss_reason: Mapped[str | None] = mapped_column(sa.Text)


class Erasure(Base):
    """One KVKK erasure sent to one provider: what was asked, what the provider did, when. The
    address is kept only as its SHA-256 (of the normalised e-mail): the audit proves which address
    was erased without keeping it. Printed by ``crm-esp-sync erasure report``."""

    __tablename__ = "erasures"
    #: (connection_id, remote_id): a status pull tells our erasure's "unsubscribed" by it.
    __table_args__ = (sa.Index(None, "tenant_id", "sent_at"), sa.Index(None, "connection_id", "remote_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    #: Kept when the connection is removed later (the provider's name stays in ``provider``).
    connection_id: Mapped[int | None] = mapped_column(sa.ForeignKey("connections.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sync_runs.id", ondelete="SET NULL"))
    provider: Mapped[str] = mapped_column(sa.String(32))
    crm_member_id: Mapped[str] = mapped_column(Key(ID))
    crm_list_id: Mapped[str] = mapped_column(Key(ID), default="")
    email_sha256: Mapped[str] = mapped_column(sa.String(64))
    remote_id: Mapped[str | None] = mapped_column(Key(ID))
    #: deleted | unsubscribed | anonymised (done by the provider); not_supported (the provider can do
    #: none of these: an open reject asks a person to act in its panel); failed (the provider
    #: refused: retried by the next run, which records another row).
    action: Mapped[str] = mapped_column(sa.String(16))
    answer: Mapped[str] = mapped_column(sa.Text, default="")
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MemberStatus(Base):
    """A suppression pulled from a provider: unsubscribed, bounced or complained.

    Never overwritten by a weaker status: an unsubscribe stays an unsubscribe.
    """

    __tablename__ = "member_statuses"
    __table_args__ = (sa.UniqueConstraint("connection_id", "email", "remote_list_id"),
                      sa.Index(None, "tenant_id", "email"))
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(Key(EMAIL))
    #: "" = the whole provider account; else the one remote list a per-list provider reported it for.
    remote_list_id: Mapped[str] = mapped_column(Key(ID), default="", server_default="")
    remote_id: Mapped[str | None] = mapped_column(Key(ID))
    status: Mapped[str] = mapped_column(sa.String(16))   # unsubscribed | hard_bounce | soft_bounce | complaint
    occurred_at: Mapped[dt.datetime]
    pulled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IysConsent(Base):
    """An İYS permission state pulled from a provider acting as the tenant's İYS integrator."""

    __tablename__ = "iys_consents"
    __table_args__ = (sa.UniqueConstraint("connection_id", "recipient", "consent_type", "recipient_type"),
                      sa.Index(None, "tenant_id", "recipient"))
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(Key(EMAIL))
    consent_type: Mapped[str] = mapped_column(sa.String(8))     # EPOSTA | MESAJ | ARAMA
    recipient_type: Mapped[str] = mapped_column(sa.String(8))   # BIREYSEL | TACIR
    status: Mapped[str] = mapped_column(sa.String(4))           # ONAY | RET
    consent_date: Mapped[dt.datetime]
    source: Mapped[str | None] = mapped_column(sa.String(32))   # HS_WEB, HS_FIZIKSEL_ORTAM, ...
    pulled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Campaign(Base):
    """A campaign sent from a provider's panel; ``final`` once its results stop changing."""

    __tablename__ = "campaigns"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(Key(ID))
    name: Mapped[str] = mapped_column(sa.String(512))
    status: Mapped[str] = mapped_column(sa.String(32))
    sent_at: Mapped[dt.datetime | None]
    remote_updated_at: Mapped[dt.datetime | None]
    final: Mapped[bool] = mapped_column(default=False)
    results_pulled_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CampaignResult(Base):
    """What happened to one recipient of one campaign."""

    __tablename__ = "campaign_results"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(Key(EMAIL))
    sent_at: Mapped[dt.datetime | None]
    opened_at: Mapped[dt.datetime | None]
    open_count: Mapped[int] = mapped_column(default=0)
    clicked_at: Mapped[dt.datetime | None]
    clicked_link: Mapped[str | None] = mapped_column(sa.String(1024))
    bounce_type: Mapped[str | None] = mapped_column(sa.String(8))   # soft | hard
    bounce_reason: Mapped[str | None] = mapped_column(sa.String(1024))
    unsubscribed_at: Mapped[dt.datetime | None]
    complained_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


PHONE = 16   # a normalised Turkish number is 12 digits (905XXXXXXXXX)


class WapcrmUser(Base):
    """A WapCRM user (an agent), refreshed each run; conversations name them by ``userName``."""

    __tablename__ = "wapcrm_users"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(Key(ID))
    name: Mapped[str] = mapped_column(sa.String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    refreshed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WapcrmInstance(Base):
    """A WapCRM instance ("Hesap"): a channel (WhatsApp line, PBX line) and its number."""

    __tablename__ = "wapcrm_instances"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(Key(ID))
    name: Mapped[str] = mapped_column(sa.String(255))
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    refreshed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WapcrmCallResult(Base):
    """A selectable call result: a top result (``parent_remote_id`` None) or one of its sub-results."""

    __tablename__ = "wapcrm_call_results"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(Key(ID))
    parent_remote_id: Mapped[str | None] = mapped_column(Key(ID))
    name: Mapped[str] = mapped_column(sa.String(255))
    refreshed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WapcrmMemberPhone(Base):
    """A CRM member's normalised phone, as the activity step last read it: how conversations and
    messages are linked to members. ``messages_due``: the member's message list is to be read
    (a new or changed number, or activity seen in a conversation)."""

    __tablename__ = "wapcrm_member_phones"
    __table_args__ = (sa.UniqueConstraint("connection_id", "crm_member_id"), sa.Index(None, "connection_id", "phone"),
                      sa.Index(None, "connection_id", "messages_due"))
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    crm_member_id: Mapped[str] = mapped_column(Key(ID))
    phone: Mapped[str] = mapped_column(Key(PHONE))
    messages_due: Mapped[bool] = mapped_column(default=True)
    messages_pulled_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WapcrmConversation(Base):
    """A WapCRM conversation (call) report row, de-duplicated by its id. ``phone`` is normalised
    (None when WapCRM's number is not a usable Turkish number: the raw one is in ``details``)."""

    __tablename__ = "wapcrm_conversations"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"), sa.Index(None, "connection_id", "phone"),
                      sa.Index(None, "connection_id", "occurred_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(Key(ID))
    occurred_at: Mapped[dt.datetime | None]
    phone: Mapped[str | None] = mapped_column(Key(PHONE))
    #: conversationResultDirection: 1 outgoing, 2 incoming, 3 incoming missed, 4 outgoing not reached.
    direction: Mapped[int | None]
    ring_seconds: Mapped[int | None]
    call_seconds: Mapped[int | None]
    transferred: Mapped[bool] = mapped_column(default=False)
    transferred_to: Mapped[str | None] = mapped_column(sa.String(255))
    result: Mapped[str | None] = mapped_column(sa.String(255))
    sub_result: Mapped[str | None] = mapped_column(sa.String(255))
    user_name: Mapped[str | None] = mapped_column(sa.String(255))
    list_name: Mapped[str | None] = mapped_column(sa.String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pulled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WapcrmMessage(Base):
    """A WapCRM message exchanged with one phone. WapCRM gives no message id: ``remote_id`` is the
    hash of the message's fields (sync.providers.wapcrm.client.message_key)."""

    __tablename__ = "wapcrm_messages"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"), sa.Index(None, "connection_id", "phone"))
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(Key(64))
    phone: Mapped[str] = mapped_column(Key(PHONE))
    channel: Mapped[str | None] = mapped_column(sa.String(32))
    direction: Mapped[str] = mapped_column(sa.String(8))   # ME (the agent) | CUSTOMER
    text: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[dt.datetime | None]
    pulled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExportCursor(Base):
    """A named position in an export of pulled rows (``suppressions export --cursor NAME``, ``reports
    export --cursor NAME``): the (time, id) key of the last row handed out, moved only once a whole
    export was written (sync/ops/pulled.py). ``filters``: the --tenant/--provider it was made with;
    a later export of it must give the same ones."""

    __tablename__ = "export_cursors"
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(sa.String(32), primary_key=True)   # suppressions | campaign_results
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    position_at: Mapped[dt.datetime | None]
    position_id: Mapped[int | None]
    rows_exported: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
