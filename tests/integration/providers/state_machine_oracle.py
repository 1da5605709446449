"""The oracle of the provider state machine (test_state_machine.py): what a provider must hold after
a completed run, from the CRM, the recipients' acts the machine made at the provider, and the
provider's capabilities. Each check adds the problems it found to ``Oracle.problems`` (empty: it
holds), so one failure names everything that is off.

Built on the shared suite's helpers (test_provider_suite.py: ``Mirror``, ``provider_of``,
``removals_stay``), extended to every address the provider holds, per list, and to the
suppressions the machine caused.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync.emails import normalize_email, valid_email
from sync.models import MemberLink, MemberStatus, Reject
from sync.providers.base import Capabilities, MappedLists
from sync.providers.postatr import api as postatr_api
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.contract_fake import ContractHarness
from tests.integration.providers.harness import Harness, PostacellHarness
from tests.integration.providers.harness_euromsg import SUITE_STATUSES, EuromsgHarness
from tests.integration.providers.harness_mailmasterplus import MailMasterPlusHarness
from tests.integration.providers.harness_postatr import PostatrHarness
from tests.integration.providers.test_provider_suite import Mirror, provider_of, remote_list_names, removals_stay

#: Statuses under which an address still receives mail (a soft bounce is information, not a block).
RECEIVING = frozenset({"active", "soft_bounce"})
#: Pulled statuses that block a member until a newer CRM consent (sync/engine/statuses.py says the same).
BLOCKING = frozenset({"unsubscribed", "complaint", "hard_bounce"})
#: Open rejects that explain an address still receiving where the CRM no longer wants it: the
#: provider cannot remove a member, or cannot unsubscribe one (a person must act in its panel).
STALE_CODES = frozenset({"removal_unsupported", "unsubscribe_unsupported"})
#: The reason of the reject of a member whose address another member holds (sync/engine/plan.py).
HELD_BY_ANOTHER = "e-mail also belongs to CRM member "
#: Engine gaps the machine found, tolerated (narrowly) so the module guards everything else until they
#: are fixed; ``STATE_MACHINE_KNOWN_GAPS=strict`` checks them too. Each: what the oracle tolerates.
KNOWN_GAPS = {
    "claimants-not-planned-together": "the engine picks an address's owner among the members it loaded with "
                                      "the chunk (the chunk, the holders of links with that address, the "
                                      "members waiting for it); a member in a list that claims it outside "
                                      "them (never pushed: a RET; in another chunk of a backfill; refused by "
                                      "the provider) is not seen: no reject shows the conflict, a reject names "
                                      "a former owner, or two members are each planned as the owner (a member "
                                      "in no list needs no address: it owns nothing while one in a list claims "
                                      "it, and is refused nothing)",
}
#: Gaps fixed since and no longer tolerated anywhere: still accepted in STATE_MACHINE_KNOWN_GAPS (a replay
#: command written while they were known checks them, as every run does now). "echo-by-address": our own
#: unsubscribe of a contact at an address taken for the recipient's; "removal-reject-resolved-by-the-new-
#: address": an update of an e-mail-keyed new record resolved the old address's removal, and at a
#: provider keyed by our member id a move whose answer a crash lost left a removal naming the old
#: address; "own-unsubscribe-with-a-lost-answer-is-no-echo": a run right after one that lost answers
#: re-sent writes; "two-addresses-left-in-one-list": at a provider keyed by e-mail that cannot remove,
#: a member's second removal reject in a list replaced its first, so the first address it left there
#: received with no reject naming it (test_state_machine_findings.py).
FIXED_GAPS = frozenset({"echo-by-address", "removal-reject-resolved-by-the-new-address",
                        "own-unsubscribe-with-a-lost-answer-is-no-echo", "two-addresses-left-in-one-list"})
#: ``STATE_MACHINE_KNOWN_GAPS=strict`` checks every gap; a comma-separated list of gap names checks those.
_STRICT_SETTING = os.environ.get("STATE_MACHINE_KNOWN_GAPS", "")
STRICT = _STRICT_SETTING == "strict"
STRICT_GAPS = set(KNOWN_GAPS) if STRICT else {name.strip() for name in _STRICT_SETTING.split(",")
                                              if name.strip() and name.strip() not in FIXED_GAPS}
assert set(KNOWN_GAPS) >= STRICT_GAPS, f"unknown gaps in STATE_MACHINE_KNOWN_GAPS: {STRICT_GAPS - set(KNOWN_GAPS)}"
#: The reasons of a reject whose write's answer was lost, or that failed on every retry (sync/http.py):
#: tried again after its backoff.
IN_FLUX = ("may have been applied", "(will retry)")


def in_flux(reason: str) -> bool:
    return any(text in reason for text in IN_FLUX)
#: A provider dates a status in whole seconds (Euromsg: the end of its second) or at the pull.
DATING_SLACK = dt.timedelta(seconds=1)


@dataclass
class Act:
    """A recipient's act the machine made at the provider."""

    kind: str                        # unsubscribed | complaint | soft_bounce
    address: str                     # normalised
    lists: frozenset[str] | None     # the list names it applies to (per-list records); None: the account
    at: dt.datetime
    pulled: bool = False             # a completed run has run since
    maybe_lost: bool = False         # the provider forgot everything before a run pulled it


@dataclass(frozen=True)
class CrmRow:
    id: str
    email: str | None
    address: str
    valid: bool
    deleted: bool
    consent_status: str
    consent_date: dt.datetime | None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def crm_rows(world: World) -> dict[str, CrmRow]:
    t = world.crm.members
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.email, t.c.deleted_at, t.c.consent_status, t.c.consent_date)
                            .where(t.c.tenant_id == TENANT)).all()
    found = {}
    for member_id, email, deleted_at, consent, consent_date in rows:
        address = normalize_email(email)
        found[member_id] = CrmRow(member_id, email, address, valid_email(address), deleted_at is not None,
                                  (consent or "").upper(), _utc(consent_date))
    return found


# --- the provider as it is ---------------------------------------------------------------------


def remote_lists(harness: Harness, caps: Capabilities) -> dict[str, dict[str, str]]:
    """Normalised address -> {list name -> status there}, from the sandbox's records where the harness
    has a reading of them (``provider_records``): a provider keyed by our member id may hold two
    contacts of one address (a removed one, unsubscribed in no list, and its new owner's), which
    ``members()`` merges into one. Else a contact's status in each of its lists, or each per-list
    record's own (``list_statuses``)."""
    view: dict[str, dict[str, str]] = defaultdict(dict)
    records = provider_records(harness)
    if records is not None:
        for email, names, status in records:
            lists = view[normalize_email(email)]
            for name in names:      # receiving wins: one record there receives
                lists[name] = status if lists.get(name) not in RECEIVING else lists[name]
        return dict(view)
    per_list = getattr(harness, "list_statuses", None) if caps.membership_model == "per_list" else None
    for email, member in harness.members().items():
        view[normalize_email(email)].update(per_list(email) if per_list is not None
                                            else dict.fromkeys(member.lists, member.status))
    return dict(view)


def receiving_lists(view: dict[str, dict[str, str]], address: str) -> set[str]:
    return {name for name, status in view.get(address, {}).items() if status in RECEIVING}


def provider_records(harness: Harness) -> list[tuple[str, frozenset[str], str]] | None:
    """Every record the provider's sandbox holds, one per contact (or per-list record): (address,
    list names it is in, status in the suite's words). The harnesses' ``members()`` are keyed by
    address, so a second record of one address would vanish there; this reads the sandbox beneath.
    None: no reading for this harness. (A ``records()`` of each harness, harness.py, would be the
    place for it.)"""
    sandbox: Any = getattr(harness, "sandbox", None)
    if isinstance(harness, PostacellHarness):
        return [(row["email"], frozenset(item["title"] for item in row["lists"]), row["status"])
                for row in sandbox.subscribers(harness.credentials["username"])]
    if isinstance(harness, EuromsgHarness):
        key = harness.credentials["api_key"]
        names = sandbox.lists(key)
        return [(row["email"], frozenset(names[str(i)] for i in row["emailListIds"]), SUITE_STATUSES[row["status"]])
                for row in sandbox.members(key)]
    if isinstance(harness, MailMasterPlusHarness):
        account = harness.credentials["username"]
        return [(row["email"], frozenset({name}), "active" if row["active"] == "1" else "unsubscribed")
                for nl_id, name in sandbox.lists(account).items() for row in sandbox.records(account, nl_id)]
    if isinstance(harness, PostatrHarness):
        return [(row["Email"], frozenset(postatr_api.list_label(i) for i in row["lists"]),
                 "active" if row["active"] else "unsubscribed")
                for row in sandbox.members(harness.credentials["username"])]
    if isinstance(harness, ContractHarness):
        return [(record.email, frozenset(sandbox.lists[x] for x in (
                    record.lists if record.list_id is None else {record.list_id}) if x in sandbox.lists),
                 record.status) for record in sandbox.records.values()]
    return None


# --- what we stored ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenReject:
    member_id: str
    list_id: str
    email: str | None
    code: str | None
    reason: str


def open_rejects(world: World) -> list[OpenReject]:
    with world.engine.connect() as conn:
        return [OpenReject(*row) for row in conn.execute(
            sa.select(Reject.crm_member_id, Reject.crm_list_id, Reject.email, Reject.provider_code, Reject.reason)
            .where(Reject.connection_id == world.connection_id, Reject.resolved_at.is_(None)))]


def stored_statuses(world: World) -> dict[tuple[str, str], tuple[str, dt.datetime]]:
    """(address, remote list id or "") -> (status, occurred_at) as the engine stored them."""
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(MemberStatus.email, MemberStatus.remote_list_id, MemberStatus.status,
                                      MemberStatus.occurred_at).where(
            MemberStatus.connection_id == world.connection_id)).all()
    return {(email, scope or ""): (status, _utc(at) or at) for email, scope, status, at in rows}


def link_addresses(world: World) -> dict[str, set[str]]:
    """member id -> the addresses its links hold (a suppression follows a member through an e-mail
    change by them: sync/engine/plan.py)."""
    found: dict[str, set[str]] = defaultdict(set)
    with world.engine.connect() as conn:
        for member_id, email in conn.execute(sa.select(MemberLink.crm_member_id, MemberLink.email).where(
                MemberLink.connection_id == world.connection_id)):
            found[member_id].add(email)
    return found


def remote_list_of_scope(world: World) -> dict[str, str]:
    """Remote list id -> its name, for the per-list suppressions (mapped lists)."""
    provider = provider_of(world)
    if not isinstance(provider, MappedLists):
        return {}
    names = remote_list_names(world)
    return {mapped.remote_id: names[crm] for crm, mapped in provider.mapped_lists().items() if crm in names}


# --- the checks ----------------------------------------------------------------------------------


@dataclass
class Expected:
    """What the provider must hold for one CRM member that owns its address."""

    member_id: str
    address: str
    receiving: set[str]          # the list names it must receive in
    exact: bool                  # False: at most these (new records in its other lists are the provider's choice)
    at_least: bool               # a provider that can remove nothing keeps it in lists it left
    suppressed: bool = False     # a suppression without a newer consent: the engine leaves it alone


class Oracle:
    """One look at the CRM, the provider and our tables after a completed run."""

    def __init__(self, world: World, caps: Capabilities) -> None:
        self.world, self.caps = world, caps
        self.crm = crm_rows(world)
        self.mirror = Mirror(world)
        self.view = remote_lists(world.harness, caps)
        self.rejects = open_rejects(world)
        self.stored = stored_statuses(world)
        self.links = link_addresses(world)
        self.scope_names = remote_list_of_scope(world)
        self.problems: list[str] = []
        self.stale_allowed = {normalize_email(r.email) for r in self.rejects if r.code in STALE_CODES and r.email}
        self.stale_reasons = " ".join(r.reason for r in self.rejects if r.code in STALE_CODES)
        # Members whose write may or may not have been applied (its answer was lost): retried after
        # the backoff (the machine's ``hours_pass``); until then their addresses may be either way.
        self.in_flux = {address for r in self.rejects if in_flux(r.reason)
                        for address in {*self.links.get(r.member_id, set()),
                                        *([self.crm[r.member_id].address] if r.member_id in self.crm else [])}}
        self.tolerated: set[str] = set()
        self.owners = self._owners()

    def known_gap(self, gap: str, address: str) -> bool:
        """Is this problem one of KNOWN_GAPS (and are they tolerated)?"""
        if gap in STRICT_GAPS:
            return False
        if gap == "claimants-not-planned-together":
            found = True
        else:
            raise AssertionError(gap)
        if found:
            self.tolerated.add(gap)
        return found

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def stale(self, address: str) -> bool:
        """An open reject says a person must remove or unsubscribe this address in the panel."""
        return address in self.stale_allowed or address in self.stale_reasons or address in self.in_flux

    def _owners(self) -> dict[str, str]:
        """Address -> the one live member it belongs to; every other member claiming it while in a
        list has an open validation reject naming that owner (two members, one address: the second
        is a reject). A member in a list owns before one in none; one in no list needs no address
        and has no reject (its contact there leaves, as for leaving every list)."""
        claims: dict[str, list[str]] = defaultdict(list)
        for row in self.crm.values():
            if not row.deleted and row.valid:
                claims[row.address].append(row.id)
        held_by = {r.member_id: r.reason for r in self.rejects
                   if r.code == "validation" and HELD_BY_ANOTHER in r.reason}
        in_lists = self.world.live_lists_by_member()
        owners = {}
        for address, all_ids in claims.items():
            ids = [i for i in all_ids if in_lists.get(i)]
            if not ids:         # no claimant in a list: any of them may hold it, none is refused
                holding = sorted(i for i in all_ids if address in self.links.get(i, set()))
                owners[address] = (holding or sorted(all_ids))[0]
                continue
            free = sorted(i for i in ids if i not in held_by)
            if len(free) > 1 and self.known_gap("claimants-not-planned-together", address):
                holding = [i for i in free if address in self.links.get(i, set())]
                free = (holding or free)[:1]
                held_by.update({i: f"{HELD_BY_ANOTHER}{free[0]} (not planned together)" for i in ids
                                if i != free[0] and i not in held_by})
            if len(free) != 1:
                self.problem(f"{address} is the address of {sorted(ids)}: {free or 'none'} without a reject "
                             "naming its owner (exactly one must own it)")
            owner = (free or sorted(ids))[0]
            owners[address] = owner
            for claimant in ids:
                named = _named_owner(held_by.get(claimant, ""))
                if owner not in (claimant, named) and not (
                        named in all_ids and self.known_gap("claimants-not-planned-together", address)):
                    self.problem(f"{claimant} shares {address} with its owner {owner} and has no open reject "
                                 f"naming it: {held_by.get(claimant)!r}")
        for member_id, reason in held_by.items():
            refused = self.crm.get(member_id)
            if refused is None or refused.deleted or not refused.valid or owners.get(refused.address) == member_id:
                self.problem(f"{member_id} has an open reject {reason!r} but holds no address another member owns")
        return owners

    def expected(self, row: CrmRow) -> Expected:
        """The lists the owner of an address must receive in (empty: in none)."""
        addresses = {row.address} | self.links.get(row.id, set())
        account_wide, blocked = False, set()
        for (address, scope), (status, at) in self.stored.items():
            if address not in addresses or status not in BLOCKING:
                continue
            if row.consent_date is None or row.consent_date <= at:
                if scope:
                    blocked.add(self.scope_names.get(scope, scope))
                else:
                    account_wide = True
        wanted = self.mirror.expected_lists(row.id)
        if account_wide or row.consent_status != "ONAY":
            return Expected(row.id, row.address, set(), True, False, account_wide)
        return Expected(row.id, row.address, wanted - blocked, not blocked, removals_stay(self.world),
                        bool(blocked & wanted))

    def check_mirror(self) -> None:
        """Every live, valid, consenting owner receives in exactly its live lists minus its
        suppressions (at most those, where a per-list unsubscribe leaves new records to the
        provider); nothing else receives, but where an open reject says a person must act."""
        justified: dict[str, set[str]] = {}
        for address, owner in self.owners.items():
            want = self.expected(self.crm[owner])
            justified[address] = want.receiving
            missing = want.receiving - receiving_lists(self.view, address)
            if missing and want.exact and address not in self.in_flux:
                self.problem(f"{owner} <{address}> does not receive in {sorted(missing)}: must receive in exactly "
                             f"{sorted(want.receiving)}, receives in {sorted(receiving_lists(self.view, address))}")
        for address in sorted(self.view):
            extra = receiving_lists(self.view, address) - justified.get(address, set())
            if extra and not self.stale(address):
                whose = self.owners.get(address)
                self.problem(f"<{address}> receives in {sorted(extra)}, where its owner ({whose}) "
                             f"must receive in {sorted(justified.get(address, ()))}, and no open reject says a "
                             "person must act")

    def check_rejects(self) -> None:
        """Every open reject is one the CRM or the capabilities explain; every member the CRM gives
        no usable address while in a list has one."""
        explained_invalid = set()
        for reject in self.rejects:
            row = self.crm.get(reject.member_id)
            if not reject.member_id:
                self.problem(f"list {reject.list_id} rejected: {reject.reason}")
            elif reject.code == "validation":
                if row is None:
                    continue         # deleted for real: resolved when it is retried (its backoff), not before
                if row.deleted:
                    self.problem(f"{reject.member_id} is deleted in the CRM, its reject is open: {reject.reason}")
                elif not row.valid:
                    explained_invalid.add(row.id)
                elif HELD_BY_ANOTHER not in reject.reason:
                    self.problem(f"{reject.member_id} <{row.address}> refused: {reject.reason}")
            elif row is not None and row.consent_status != "ONAY" and not receiving_lists(self.view, row.address):
                continue        # a refusal the provider has nothing to apply to (its own code and words)
            elif in_flux(reject.reason):
                # (a write under the member's own key whose answer was lost says so until it is tried
                # again: its validation reject, if any, comes back then)
                if reject.list_id == "" and row is not None and not row.valid:
                    explained_invalid.add(row.id)
                continue
            elif (reject.code, True) in {
                    ("removal_unsupported", self.caps.member_removal == "none"),
                    ("unsubscribe_unsupported", not self.caps.supports_unsubscribe)}:
                # A person is asked to act on this address in the panel: the provider must hold it
                # (a record keyed by our member id moves with an address change, and the reject
                # with it: it must not send the person after an address no record has).
                named = normalize_email(reject.email or "")
                if named not in self.view and named not in self.in_flux:
                    self.problem(f"{reject.member_id}/{reject.list_id} {reject.code} names <{named}>, which the "
                                 f"provider does not hold: {reject.reason}")
            else:
                self.problem(f"{reject.member_id}/{reject.list_id} unexplained reject {reject.code}: {reject.reason}")
        in_lists = self.world.live_lists_by_member()
        for row in self.crm.values():
            if not row.deleted and not row.valid and in_lists.get(row.id) and row.id not in explained_invalid:
                self.problem(f"{row.id} has no usable address ({row.email!r}), is in {in_lists[row.id]} and has "
                             "no open validation reject")

    def check_acts(self, acts: Iterable[Act]) -> None:
        """No address receives again after an unsubscribe or a complaint the machine made, unless a
        live member with that address holds a CRM consent newer than it (as the engine dated it,
        which must not be before the act)."""
        for act in acts:
            if act.kind not in BLOCKING or not act.pulled:
                continue
            scopes = [("", None)] if act.lists is None or act.kind != "unsubscribed" else [
                (next((i for i, n in self.scope_names.items() if n == name), name), name) for name in act.lists]
            for scope, name in scopes:
                stored = self.stored.get((act.address, scope))
                if stored is not None and stored[0] not in BLOCKING:
                    stored = None       # a soft bounce stored, not the act
                if stored is None and act.maybe_lost:
                    continue
                if stored is not None and stored[1] < act.at - DATING_SLACK:
                    self.problem(f"{act.kind} of <{act.address}> made at {act.at:%H:%M:%S.%f} is dated "
                                 f"{stored[1]:%H:%M:%S.%f}")
                # Never stored (an act the engine could not see before the address's record went: a list
                # deleted in the panel, an erasure): nothing blocks, so only a consent given after the act may.
                at = act.at if stored is None else stored[1]
                newer = [r.id for r in self.crm.values() if not r.deleted and r.address == act.address
                         and r.consent_status == "ONAY" and r.consent_date is not None and r.consent_date > at]
                have = receiving_lists(self.view, act.address)
                hit = have if name is None else have & {name}
                if hit and not newer and not self.stale(act.address):
                    self.problem(f"<{act.address}> receives in {sorted(hit)} after its {act.kind} at "
                                 f"{act.at:%H:%M:%S.%f} (stored: {stored}) without a newer CRM consent")

    def check_duplicates(self) -> None:
        self.problems += duplicates(self.world.harness, self.stale)


def _named_owner(reason: str) -> str:
    """The member a "held by another member" reject names."""
    return reason.split(HELD_BY_ANOTHER, 1)[1].split(";", 1)[0].split(" ", 1)[0] if HELD_BY_ANOTHER in reason else ""


def duplicates(harness: Harness, allowed: object = None) -> list[str]:
    """One contact (or per-list record) per address and list."""
    records = provider_records(harness)
    if records is None:
        return []
    held = Counter((normalize_email(email), name) for email, names, _ in records for name in names)
    stale = allowed if callable(allowed) else (lambda _: False)
    return [f"<{address}> held {count} times in {name}" for (address, name), count in sorted(held.items())
            if count > 1 and not stale(address)]
