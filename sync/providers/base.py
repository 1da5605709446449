"""The one interface every provider implements, and the neutral types the engine speaks.

The engine reads :class:`Capabilities` and never asks which provider it holds. Providers
are found through :data:`IMPLEMENTATIONS`, a plain name -> "module:Class" table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sync.errors import ConfigurationError, RejectedRow

#: Statuses pulled from providers, strongest first; a weaker one never replaces a stronger one.
SUPPRESSION_RANK = {"complaint": 4, "unsubscribed": 3, "hard_bounce": 2, "soft_bounce": 1}


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do and how hard it may be pushed: limits are data."""

    max_batch: int
    async_bulk_import: bool
    supports_list_create: bool
    supports_list_rename: bool
    supports_list_delete: bool
    supports_unsubscribe: bool
    supports_member_delete: bool
    has_campaign_reports: bool
    #: "contact": one contact holding a set of lists; "per_list": one record per (list, member).
    membership_model: Literal["contact", "per_list"]
    concurrency: int = 4
    rate_per_s: float | None = None
    #: "incremental": ``pull_statuses(since)`` returns only changes after ``since``;
    #: "full_scan": the provider cannot list changes since a time, every pull reads every
    #: suppressed contact (the cost is reported as ``status_pull_requests``).
    status_pull: Literal["incremental", "full_scan"] = "incremental"


@dataclass(frozen=True)
class MemberKey:
    crm_member_id: str
    crm_list_id: str = ""   # "" for the contact model


@dataclass(frozen=True)
class MemberSnapshot:
    """What the CRM says about a member, in provider-neutral terms."""

    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    city: str | None
    status: Literal["active", "unsubscribed"]
    consent_status: str | None = None
    consent_date: dt.datetime | None = None
    consent_source: str | None = None
    recipient_type: str | None = None


@dataclass(frozen=True)
class MemberUpsert:
    """One contact (or one per-list record) to create or update at the provider."""

    key: MemberKey
    email: str
    payload: Mapping[str, Any]
    remote_lists: tuple[str, ...]
    previous_remote_lists: tuple[str, ...] = ()
    remote_id: str | None = None
    #: The engine decided to make this contact active again although the provider reported it
    #: unsubscribed, bounced or complained (the CRM holds a newer consent).
    resubscribe: bool = False


@dataclass(frozen=True)
class MemberDelete:
    """Delete (KVKK) or take out of a list, by remote id."""

    key: MemberKey
    email: str
    remote_id: str | None
    remote_lists: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushOutcome:
    """What became of one item. ``suppressed``: the provider holds this contact as unsubscribed,
    bounced or complained and NOTHING was written (the engine records the status and waits for a
    newer CRM consent); it is neither a success nor a reject."""

    key: MemberKey
    remote_id: str | None = None
    rejected: RejectedRow | None = None
    suppressed: RemoteStatus | None = None


@dataclass(frozen=True)
class RemoteList:
    remote_id: str
    name: str


@dataclass(frozen=True)
class RemoteStatus:
    email: str
    status: Literal["unsubscribed", "hard_bounce", "soft_bounce", "complaint"]
    occurred_at: dt.datetime
    remote_id: str | None = None


@dataclass(frozen=True)
class RemoteCampaign:
    remote_id: str
    name: str
    status: str
    sent_at: dt.datetime | None
    updated_at: dt.datetime | None
    #: The provider says its results will not change any more.
    final: bool


@dataclass
class RecipientResult:
    email: str
    sent_at: dt.datetime | None = None
    opened_at: dt.datetime | None = None
    open_count: int = 0
    clicked_at: dt.datetime | None = None
    clicked_link: str | None = None
    bounce_type: str | None = None
    bounce_reason: str | None = None
    unsubscribed_at: dt.datetime | None = None
    complained_at: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """What the engine calls. Every method raises only ``sync.errors`` types."""

    name: str
    capabilities: Capabilities

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        """The provider-shaped member record (without lists); its hash decides whether to push."""

    async def find_lists(self, name: str) -> list[RemoteList]:
        """Existing lists with exactly this name (so a crash after create never creates twice)."""

    async def all_lists(self) -> list[RemoteList]:
        """Every list the account has (to find linked lists deleted in the provider's panel)."""

    async def create_list(self, name: str) -> RemoteList: ...

    async def rename_list(self, remote_id: str, name: str) -> None: ...

    async def delete_list(self, remote_id: str) -> None: ...

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """Create or update; one outcome per item, rejected items carry the provider's reason."""

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]: ...

    def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """Unsubscribes, bounces and complaints changed since ``since`` (all when None); a
        ``full_scan`` provider ignores ``since`` and yields every suppressed contact."""

    def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Right before the engine updates contacts in these lists: the suppressions that may have
        appeared since the last pull, as cheaply as the provider can tell (nothing when it can tell
        nothing changed). Closes the window in which a recipient's unsubscribe made during a run
        would be overwritten by the run's own update."""

    def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]: ...

    async def pull_campaign_results(self, campaign: RemoteCampaign) -> list[RecipientResult]: ...


#: Provider name -> "module:Class". Providers without sync code yet are absent here, and
#: the runner says so instead of pretending.
IMPLEMENTATIONS: dict[str, str] = {
    "postacell": "sync.providers.postacell.client:PostacellProvider",
}


def provider_class(name: str) -> type[Any]:
    try:
        module_name, _, class_name = IMPLEMENTATIONS[name].partition(":")
    except KeyError:
        raise ConfigurationError(
            f"provider {name!r} has no sync implementation in this version "
            f"(implemented: {', '.join(sorted(IMPLEMENTATIONS))})"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def build_provider(name: str, http_factory: Any, credentials: Mapping[str, str],
                   settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> Provider:
    """Instantiate a provider; ``http_factory(capabilities, auth)`` returns its ProviderHTTP."""
    cls = provider_class(name)
    return cls.create(http_factory, credentials, settings, integrator)  # type: ignore[no-any-return]


def payload_hash(payload: Mapping[str, Any], remote_lists: Sequence[str]) -> str:
    """Stable hash of what would be pushed: equal hash, nothing to send."""
    blob = json.dumps({"p": payload, "l": sorted(remote_lists)}, sort_keys=True, ensure_ascii=False,
                      default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


__all__ = [
    "IMPLEMENTATIONS",
    "SUPPRESSION_RANK",
    "Capabilities",
    "MemberDelete",
    "MemberKey",
    "MemberSnapshot",
    "MemberUpsert",
    "Provider",
    "PushOutcome",
    "RecipientResult",
    "RemoteCampaign",
    "RemoteList",
    "RemoteStatus",
    "build_provider",
    "payload_hash",
    "provider_class",
]
