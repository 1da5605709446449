"""The provider interface, cut into small capability protocols, and the neutral types the engine speaks.

A provider implements only what it has and declares it in :class:`Capabilities`; the engine
reads the capabilities and never asks which provider it holds. :func:`check_provider` refuses a
provider that declares a capability without implementing its protocol. Providers are found
through :data:`IMPLEMENTATIONS`, a plain name -> "module:Class" table.

| protocol | what | providers (by their documents) |
| --- | --- | --- |
| :class:`ListPush` | create, rename, delete lists; list the account's lists | Postacell, Euromsg |
| :class:`MappedLists` | lists made in the provider's panel, mapped per connection | MailMasterPlus, Postatr |
| :class:`MemberPush` | upsert and remove members | Postacell, Euromsg, MailMasterPlus, Postatr |
| :class:`StatusPull` | unsubscribes, bounces, complaints | Postacell (full scan), Euromsg, MailMasterPlus (full scan) |
| :class:`ConsentPull` | İYS consent states | Euromsg (as the tenant's İYS integrator) |
| :class:`ReportPull` | campaigns and per-recipient results | Postacell, Euromsg, Postatr |
| :class:`ActivityPull` | conversations, messages, calls by phone | WapCRM |
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from sync.emails import IdnReading, address_problem
from sync.errors import ConfigurationError, RejectedRow

#: Statuses pulled from providers, strongest first; a weaker one never replaces a stronger one.
SUPPRESSION_RANK = {"complaint": 4, "unsubscribed": 3, "hard_bounce": 2, "soft_bounce": 1}


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do and how hard it may be pushed: limits are data."""

    #: Largest batch of members one push takes.
    max_batch: int = 1000
    #: Members the engine plans and hands to ONE ``upsert_members`` call, between two checkpoints
    #: (None: ``max_batch``). A client that splits a push into its own requests of at most
    #: ``max_batch`` members and groups them (Postacell: one request per exact list set) sends
    #: fewer, fuller requests from a larger window.
    push_window: int | None = None
    #: Members go through an asynchronous bulk import (post, poll a job, read per-row results).
    async_bulk_import: bool = False
    #: "create": the daemon creates, renames and deletes lists (ListPush); "mapped": lists are made
    #: in the provider's panel and the connection maps each CRM list to one (MappedLists); "none":
    #: the provider has no lists to push (pull-only).
    lists: Literal["create", "mapped", "none"] = "create"
    supports_list_rename: bool = True
    supports_list_delete: bool = True
    #: Members are pushed (MemberPush).
    pushes_members: bool = True
    #: A contact can be pushed as unsubscribed (a suppression from another provider, İYS RET).
    supports_unsubscribe: bool = True
    #: What a removal (KVKK erasure, leaving the last list) becomes at the provider: "delete";
    #: "unsubscribe" (the provider cannot delete: the contact is unsubscribed, and anonymised where
    #: the provider allows); "none" (the provider can do neither: recorded locally and reported);
    #: "unlist" (a member who left every list or changed address is only taken off OUR lists, its
    #: card kept with the tenant's own lists and the provider's record of an opt-out; only a KVKK
    #: erasure deletes it: Euromsg Express).
    member_removal: Literal["delete", "unsubscribe", "none", "unlist"] = "delete"
    #: "email": contacts are keyed by address (a changed address is another contact: the old one
    #: is removed); "crm_id": keyed by our member id (a changed address is an update).
    member_key: Literal["email", "crm_id"] = "email"
    #: "contact": one contact holding a set of lists; "per_list": one record per (list, member).
    membership_model: Literal["contact", "per_list"] = "contact"
    concurrency: int = 4
    rate_per_s: float | None = None
    #: "incremental": ``pull_statuses(since)`` returns only changes after ``since``;
    #: "full_scan": the provider cannot list changes since a time, every pull reads every
    #: suppressed contact; "none": no status pull (StatusPull not implemented).
    status_pull: Literal["incremental", "full_scan", "none"] = "incremental"
    #: İYS consent states are pulled (ConsentPull).
    pulls_consents: bool = False
    #: Campaigns and per-recipient results are pulled (ReportPull).
    has_campaign_reports: bool = False
    #: Activity (conversations, messages) is pulled into the CRM's tables (ActivityPull).
    pulls_activity: bool = False
    #: Members carry custom fields (``MemberSnapshot.fields``, from the connection's ``fields``
    #: mapping of extra CRM columns); a mapping on a provider without them is refused.
    custom_fields: bool = False

    @property
    def supports_list_create(self) -> bool:
        return self.lists == "create"

    @property
    def supports_member_delete(self) -> bool:
        return self.member_removal in ("delete", "unlist")


class MemberKey(NamedTuple):
    """Which record of a member: its id and, in the per-list model, the list ("" for a contact).
    A named tuple, not a dataclass: it is built and hashed several times per member in a run
    (a frozen dataclass costs about two and a half times as much for both)."""

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
    #: Custom fields: provider field -> typed value (sync/fields.py), from the connection's mapping.
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: The address as the CRM holds it (``email`` is normalised: lower-case, trimmed). A provider
    #: that keeps the local part's spelling sends this one when it normalises to ``email``.
    email_as_written: str | None = None


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
    #: The link is provisional (written before an earlier run's request, never answered: a crash
    #: between the provider's answer and our commit). The provider may hold this contact already;
    #: a client that can look it up writes only what differs (Postacell does; others ignore it).
    unconfirmed: bool = False


@dataclass(frozen=True)
class MemberDelete:
    """Delete (KVKK) or take out of a list, by remote id."""

    key: MemberKey
    email: str
    remote_id: str | None
    remote_lists: tuple[str, ...] = ()
    #: Why: "deleted in the CRM" (a KVKK erasure), "left the list", "left every list", "e-mail changed".
    reason: str = ""


@dataclass(frozen=True)
class PushOutcome:
    """What became of one item. ``suppressed``: the provider holds this contact as unsubscribed,
    bounced or complained and NOTHING was written (the engine records the status and waits for a
    newer CRM consent); it is neither a success nor a reject."""

    key: MemberKey
    remote_id: str | None = None
    rejected: RejectedRow | None = None
    suppressed: RemoteStatus | None = None
    #: For a removal: what the provider did ("deleted", "unsubscribed", "anonymised", or
    #: LEFT_UNSUBSCRIBED: the record was found unsubscribed and kept, the provider's proof of the
    #: opt-out).
    action: str = "deleted"
    #: For an unconfirmed upsert: the provider already held exactly what we would send, and
    #: nothing was written (counted as ``members_confirmed``).
    confirmed: bool = False


#: ``PushOutcome.action`` of a removal that found the record unsubscribed and left it so.
LEFT_UNSUBSCRIBED = "left_unsubscribed"


@dataclass(frozen=True)
class RemoteList:
    remote_id: str
    name: str
    #: Provider attributes of a mapped list (MailMasterPlus form ids, Postatr member groups).
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteConsent:
    """An İYS permission state, as a provider acting as İYS integrator reports it."""

    recipient: str                                   # normalised e-mail (or phone for MESAJ/ARAMA)
    channel: Literal["EPOSTA", "MESAJ", "ARAMA"]
    recipient_type: Literal["BIREYSEL", "TACIR"]
    status: Literal["ONAY", "RET"]
    consent_date: dt.datetime
    source: str | None = None


@dataclass(frozen=True)
class RemoteStatus:
    """A suppression as the provider reports it. ``remote_list``: a provider that unsubscribes per
    list (MailMasterPlus) says which list; such an unsubscribe blocks that list only. A complaint
    or a hard bounce blocks every list and every provider of the tenant, whatever the list."""

    email: str
    status: Literal["unsubscribed", "hard_bounce", "soft_bounce", "complaint"]
    occurred_at: dt.datetime
    remote_id: str | None = None
    remote_list: str = ""
    #: False: the provider gives no time for this status and ``occurred_at`` is when this pull saw
    #: it. The engine keeps the time it first stored for the address (in the same list scope): an
    #: undated status seen again is no news, unless we pushed the contact active after that time
    #: (a re-subscribe): then it is a new one. Not keyed on the record id: Euromsg re-activates
    #: the same card.
    dated: bool = True


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
    #: Our member id, where the provider reports by it (Postatr's Memberid).
    crm_member_id: str | None = None
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


@runtime_checkable
class Provider(Protocol):
    """What every provider has. Every method of every protocol raises only ``sync.errors`` types."""

    name: str
    capabilities: Capabilities


@runtime_checkable
class ListPush(Protocol):
    """Lists the daemon creates, renames and deletes (``capabilities.lists == "create"``)."""

    async def find_lists(self, name: str) -> list[RemoteList]:
        """Existing lists with exactly this name (so a crash after create never creates twice)."""

    async def all_lists(self) -> list[RemoteList]:
        """Every list the account has (to find linked lists deleted in the provider's panel)."""

    async def create_list(self, name: str) -> RemoteList: ...

    async def rename_list(self, remote_id: str, name: str) -> None: ...

    async def delete_list(self, remote_id: str) -> None: ...


@runtime_checkable
class MappedLists(Protocol):
    """Lists made in the provider's panel (``capabilities.lists == "mapped"``)."""

    def mapped_lists(self) -> Mapping[str, RemoteList]:
        """CRM list id -> the remote list the connection maps it to, with its provider attributes
        (validated when the connection is added). A CRM list absent here is reported, not skipped."""


@runtime_checkable
class MemberPush(Protocol):
    """Members pushed to the provider (``capabilities.pushes_members``)."""

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        """The provider-shaped member record (without lists); its hash decides whether to push.
        May raise RejectedRow for this one member (a value the provider cannot take)."""

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """Create or update; one outcome per item, rejected items carry the provider's reason."""

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        """Remove, as ``capabilities.member_removal`` says (delete, or unsubscribe/anonymise); the
        outcome's ``action`` says what was done."""


@runtime_checkable
class StatusPull(Protocol):
    """Unsubscribes, bounces, complaints (``capabilities.status_pull != "none"``)."""

    def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """Unsubscribes, bounces and complaints changed since ``since`` (all when None); a
        ``full_scan`` provider ignores ``since`` and yields every suppressed contact."""

    def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Right before the engine updates contacts in these lists: the suppressions that may have
        appeared since the last pull, as cheaply as the provider can tell (nothing when it can tell
        nothing changed). Closes the window in which a recipient's unsubscribe made during a run
        would be overwritten by the run's own update."""


@runtime_checkable
class ConsentPull(Protocol):
    """İYS consent states (``capabilities.pulls_consents``)."""

    def pull_consents(self, since: dt.datetime | None) -> AsyncIterator[RemoteConsent]: ...


@dataclass(frozen=True)
class ReportContext:
    """What a result pull may need from our side, given lazily: a provider that reports by member id
    (Postatr's ReportMembers takes a capped number of them) asks for them in chunks."""

    #: CRM member ids linked on this connection, in chunks of at most ``size``, streamed from the
    #: database (never all of them in memory).
    member_ids: Callable[[int], Iterator[list[str]]]


@runtime_checkable
class ReportPull(Protocol):
    """Campaigns and per-recipient results (``capabilities.has_campaign_reports``)."""

    def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]: ...

    def pull_campaign_results(self, campaign: RemoteCampaign,
                              context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        """Per-recipient results, page by page: the engine stores each page before it asks for the
        next, so a campaign is never held in memory whole (where the provider allows it). A page may
        repeat a recipient of an earlier page; the engine merges by e-mail."""


@dataclass(frozen=True)
class ReferenceItem:
    """One row of an activity provider's reference data: a user (agent), an instance (a channel
    and its number) or a call result (a two-level tree: ``parent_id`` is the top result)."""

    kind: Literal["user", "instance", "call_result"]
    remote_id: str
    name: str
    parent_id: str | None = None
    phone: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteConversation:
    """A call (or conversation) report row; ``phone`` normalised (None when unusable)."""

    remote_id: str
    occurred_at: dt.datetime | None
    phone: str | None
    direction: int | None
    ring_seconds: int | None = None
    call_seconds: int | None = None
    transferred: bool = False
    transferred_to: str | None = None
    result: str | None = None
    sub_result: str | None = None
    user_name: str | None = None
    list_name: str | None = None
    #: Everything else the provider said (raw number, note, customer name, call id, queue, ...).
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteMessage:
    """A message exchanged with a phone; ``key`` identifies it when the provider gives no id."""

    key: str
    phone: str
    direction: str                       # the provider's own term (WapCRM: ME | CUSTOMER)
    text: str | None
    sent_at: dt.datetime | None
    channel: str | None = None


@dataclass(frozen=True)
class ActivityWindow:
    """How an activity provider's conversations are read: whole days in ``time_zone``, the first
    run ``first_days`` back, later runs re-reading ``lookback_days`` before the watermark; and how
    many message lists of members without news are refreshed per run (``refresh_per_run``).

    The bounds of late data (0 = off): every ``reread_every_days`` a run re-reads the last
    ``reread_days`` of conversations in full, and every member's message list is read at least once
    within ``messages_refresh_days`` (docs/providers/wapcrm.md, "Late data")."""

    time_zone: str
    first_days: int
    lookback_days: int
    refresh_per_run: int
    reread_days: int = 0
    reread_every_days: int = 0
    messages_refresh_days: int = 0


@runtime_checkable
class ActivityPull(Protocol):
    """Conversations, messages and their reference data, by phone (``capabilities.pulls_activity``)."""

    activity_window: ActivityWindow

    async def pull_reference(self) -> list[ReferenceItem]:
        """Every user, instance and call result the account has (refreshed each run)."""

    async def pull_conversations(self, day: dt.date) -> list[RemoteConversation]:
        """The conversations of one day (in ``activity_window.time_zone``)."""

    async def pull_messages(self, phone: str) -> list[RemoteMessage]:
        """Every message exchanged with a normalised phone; raises RejectedRow for that phone only."""


#: Each capability and the protocol a provider that declares it must implement.
CAPABILITY_PROTOCOLS: tuple[tuple[str, Callable[[Capabilities], bool], type], ...] = (
    ("lists=create", lambda caps: caps.lists == "create", ListPush),
    ("lists=mapped", lambda caps: caps.lists == "mapped", MappedLists),
    ("pushes_members", lambda caps: caps.pushes_members, MemberPush),
    ("status_pull", lambda caps: caps.status_pull != "none", StatusPull),
    ("pulls_consents", lambda caps: caps.pulls_consents, ConsentPull),
    ("has_campaign_reports", lambda caps: caps.has_campaign_reports, ReportPull),
    ("pulls_activity", lambda caps: caps.pulls_activity, ActivityPull),
)


def check_provider(provider: Provider) -> Provider:
    """Refuse a provider that declares a capability without implementing its protocol."""
    missing = [f"{label} ({protocol.__name__})" for label, declared, protocol in CAPABILITY_PROTOCOLS
               if declared(provider.capabilities) and not isinstance(provider, protocol)]
    if missing:
        raise ConfigurationError(f"provider {provider.name!r} declares {', '.join(missing)} "
                                 "but does not implement it")
    return provider


#: Provider name -> "module:Class". Providers without sync code yet are absent here, and
#: the runner says so instead of pretending.
IMPLEMENTATIONS: dict[str, str] = {
    "postacell": "sync.providers.postacell.client:PostacellProvider",
    "mailmasterplus": "sync.providers.mailmasterplus.client:MailMasterPlusProvider",
    "euromsg": "sync.providers.euromsg.client:EuromsgProvider",
    "postatr": "sync.providers.postatr.client:PostatrProvider",
    "wapcrm": "sync.providers.wapcrm.client:WapcrmProvider",
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
    return check_provider(cls.create(http_factory, credentials, settings, integrator))


def payload_hash(payload: Mapping[str, Any], remote_lists: Sequence[str]) -> str:
    """Stable hash of what would be pushed: equal hash, nothing to send."""
    blob = json.dumps({"p": payload, "l": sorted(remote_lists)}, sort_keys=True, ensure_ascii=False,
                      default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


__all__ = [
    "CAPABILITY_PROTOCOLS",
    "IMPLEMENTATIONS",
    "SUPPRESSION_RANK",
    "ActivityPull",
    "ActivityWindow",
    "Capabilities",
    "ConsentPull",
    "ListPush",
    "MappedLists",
    "MemberDelete",
    "MemberKey",
    "MemberPush",
    "MemberSnapshot",
    "MemberUpsert",
    "Provider",
    "PushOutcome",
    "RecipientResult",
    "ReferenceItem",
    "RemoteCampaign",
    "RemoteConsent",
    "RemoteConversation",
    "RemoteList",
    "RemoteMessage",
    "RemoteStatus",
    "ReportContext",
    "ReportPull",
    "StatusPull",
    "build_provider",
    "check_provider",
    "payload_hash",
    "provider_class",
]


# --- field contents: the one way a client refuses a value its provider's document does not allow ----

#: ``RejectedRow.provider_code`` of a value refused before anything is sent (sync/engine/rejects.py).
VALIDATION = "validation"


def refuse_bad_address(email: str, provider: str, *, utf8_local: bool, idn: IdnReading, source: str) -> None:
    """RejectedRow naming the address, what is wrong with it and where the provider's reading comes
    from, when ``address_problem`` finds something (sync/emails.py)."""
    problem = address_problem(email, utf8_local=utf8_local, idn=idn)
    if problem is not None:
        raise RejectedRow(f"the e-mail address {email!r} {problem}; {provider}: {source}", provider_code=VALIDATION)


def refuse_too_long(field_name: str, text: str, limit: int, provider: str, source: str) -> None:
    """RejectedRow when ``text`` is longer than ``limit``: nothing is ever cut to fit."""
    if len(text) > limit:
        raise RejectedRow(f"{field_name} is {len(text)} characters long; {provider} takes at most {limit} ({source})",
                          provider_code=VALIDATION)
