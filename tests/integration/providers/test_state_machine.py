"""A Hypothesis state machine over every provider harness in every reading its sandbox serves
(issue 24): random CRM edits, consents, recipients' acts at the provider, runs, crashed runs and
runs whose answers are lost, with the engine's promises checked after every completed run
(state_machine_oracle.py):

- the provider holds exactly the mirror: every live, valid, consenting CRM member that owns its
  address receives in its live lists minus its suppressions; nothing else receives but where an
  open reject says a person must act in the panel (a provider that cannot remove or unsubscribe);
- nobody receives again after an unsubscribe or a complaint without a newer CRM consent;
- nothing is held twice at the provider (one contact, or per-list record, per address and list);
- every open reject is explained (no address, an address another member owns, a removal or an
  unsubscribe the provider cannot make), and a member without a usable address in a list has one;
- a run right after a completed run, without a CRM change, sends no write.

After a crashed run nothing is checked (a swap may be half done): the next completed run must
converge. Rules that do not apply to a provider say so in their precondition, from its capabilities
(and, for a recipient's act, whether the harness can make it); none asks for the provider's name.

Engine gaps the machine found are tolerated, each as narrowly as the oracle can
(``state_machine_oracle.KNOWN_GAPS``, counted as Hypothesis events), so the module guards everything
else until they are fixed; ``STATE_MACHINE_KNOWN_GAPS=strict`` checks them too.

Bounded and derandomized here (the same examples on every run, in the ``rest`` tier); ``make fuzz``
runs the same machine with ``FUZZ_EXAMPLES`` examples of ``FUZZ_STEPS`` steps from a random seed
(``FUZZ_SEED`` to replay one), e.g. ``make fuzz FUZZ_EXAMPLES=500 FUZZ_STEPS=60``; ``FUZZ_NO_SHRINK=1``
prints a failing example as found (shrinking a long one takes minutes). Its printed steps, saved to a
file, replay step by step in seconds with ``replay_state_machine.py`` (a tool: its docstring says how).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa
import structlog
from hypothesis import HealthCheck, Phase, event, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sync import db
from sync.emails import normalize_email
from sync.engine.runner import RunResult
from sync.models import Reject
from sync.providers.base import Capabilities
from sync.sandbox import FaultPlan
from tests.integration.providers.conftest import TENANT, World, make_world
from tests.integration.providers.harness import HARNESSES, Harness, harness_id
from tests.integration.providers.state_machine_oracle import (
    Act,
    Oracle,
    in_flux,
    receiving_lists,
    remote_lists,
)
from tests.integration.providers.test_engine_regressions import COMPLETED
from tests.integration.providers.test_provider_suite import capabilities

# --- sizes ---------------------------------------------------------------------------------------

FUZZ = bool(os.environ.get("FUZZ_EXAMPLES") or os.environ.get("FUZZ_STEPS"))
#: Per harness and reading: examples, and steps in each. Measured on 2 cores: the module (18 harnesses and
#: readings) in about 70 s wall, 2 min of CPU with `-n 2`; 8 x 30 took 3 min of CPU.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 6)
STEPS = int(os.environ.get("FUZZ_STEPS") or 30)
#: CRM members seeded per example: with them a refused consent (M000004) and a mistyped address (M000008).
MEMBERS = 10

#: in_check_tier (tests/conftest.py) keeps a shared-suite test in the ``check`` tier when its ``db_url``
#: is "sqlite": the machine runs on SQLite (a fresh file per example), in the ``rest`` tier.
REST_TIER_SQLITE = "sqlite, a new file per example"

#: Addresses the machine gives members: spellings of one address (case, Turkish dotted İ, spaces),
#: so two members meet on one address, and a few others.
ADDRESSES = ("deniz.kaya@ornek.com.tr", "Deniz.Kaya@ORNEK.com.tr", "ayse.cetin@gmail.com",
             "  AYSE.CETİN@GMAİL.COM ", "ozlem.sahin@firma.net", "ilgaz.koc@yandex.com.tr")
INVALID = ("gecersiz.adres", "iki@@ornek.com.tr", "bosluk var@ornek.com.tr", "")
NAMES = ("Şükrü", "Çağla", "İpek", "Ilgaz", "Özge")


class Crash(Exception):
    """The worker dies before a request leaves (not a network fault: nothing retries it)."""


def _harness_can(cls: type[Harness], act: str) -> bool:
    """Can the harness make this recipient's act (``complain``, ``soft_bounce``)? Asked of a fresh
    sandbox for an address it does not hold: NotImplementedError says the provider documents none."""
    harness = cls()
    harness.start()
    try:
        getattr(harness, act)("yok@ornek.com.tr")
    except NotImplementedError:
        return False
    except Exception:      # an unknown address: the act exists
        return True
    return True


class ProviderMachine(RuleBasedStateMachine):
    """One tenant, one connection, one provider's sandbox; a fresh database per example."""

    harness_cls: ClassVar[type[Harness]]
    template: ClassVar[Path]
    workdir: ClassVar[Path]
    caps: ClassVar[Capabilities]
    can: ClassVar[dict[str, bool]]
    examples: ClassVar[Iterator[int]]

    def __init__(self) -> None:
        super().__init__()
        self.path = self.workdir / f"example-{next(self.examples)}.db"
        shutil.copyfile(self.template, self.path)
        self.engine = db.create_engine(f"sqlite:///{self.path}")
        harness = self.harness_cls()
        harness.start()
        self.world: World = make_world(self.engine, harness, members=MEMBERS)
        # hard deletes are looked for on every run (the nightly schedule's, without the 20 h wait)
        self.world.settings = dataclasses.replace(self.world.settings, vanished_check_seconds=0)
        self.live = sorted(self._member_ids())
        self.crm_lists = sorted(self.world.list_names())
        self.acts: list[Act] = []
        self.new_ids = itertools.count(1)

    def teardown(self) -> None:
        self.engine.dispose()
        self.path.unlink(missing_ok=True)

    @property
    def harness(self) -> Harness:
        return self.world.harness

    def _member_ids(self) -> list[str]:
        t = self.world.crm.members
        with self.engine.connect() as conn:
            return list(conn.scalars(t.select().with_only_columns(t.c.id).where(
                t.c.tenant_id == TENANT, t.c.deleted_at.is_(None))))

    def _draw_member(self, data: st.DataObject, label: str = "member", but: str | None = None) -> str:
        return data.draw(st.sampled_from([m for m in self.live if m != but]), label=label)

    def _receiving(self, everywhere: bool = False) -> dict[str, set[str]]:
        """Address (as the provider spells it) -> lists it receives in, for the recipients' acts
        (``everywhere``: only addresses that receive in every list that holds them)."""
        view = remote_lists(self.harness, self.caps)
        spelled = {normalize_email(email): email for email in self.harness.members()}
        return {spelled[address]: receiving_lists(view, address) for address in sorted(view)
                if receiving_lists(view, address) and address in spelled
                and (not everywhere or receiving_lists(view, address) == set(view[address]))}

    # --- runs and the checks after them ------------------------------------------------------

    @initialize()
    def first_sync(self) -> None:
        self._completed(self._run(), "first sync")

    def _run(self, **options: Any) -> RunResult:
        return self.world.run(**options)

    def _completed(self, result: RunResult, what: str) -> None:
        """A run that must have completed: every promise holds, and a run right after it sends no write."""
        assert result.status in COMPLETED, f"{what}: {result.status}: {result.error}"
        for act in self.acts:
            act.pulled = True
        oracle = Oracle(self.world, self.caps)
        oracle.check_mirror()
        oracle.check_rejects()
        oracle.check_acts(self.acts)
        oracle.check_duplicates()
        for gap in sorted(oracle.tolerated):
            event(f"known gap: {gap}")
        assert not oracle.problems, f"after the {what} ({result.status}, {result.counts}):\n" + "\n".join(
            oracle.problems)
        if any(in_flux(r.reason) for r in oracle.rejects):
            # A write whose answer was lost is tried again when the engine sees fit: not "no change".
            return
        self.harness.reset_log()
        again = self._run()
        assert again.status in COMPLETED, f"the run after the {what}: {again.status}: {again.error}"
        writes = self.harness.write_requests()
        assert writes == 0, (
            f"a run right after the {what}, without a CRM change, sent {writes} writes: {again.counts}")

    @rule()
    def run(self) -> None:
        self._completed(self._run(), "run")

    @rule()
    def backfill(self) -> None:
        self._completed(self._run(backfill=True), "backfill")

    @rule(nth=st.integers(min_value=1, max_value=40))
    def run_crashing_at_request(self, nth: int) -> None:
        """The worker dies before its nth request leaves; a run with fewer requests completes."""
        seen = itertools.count(1)

        def crash(request: httpx.Request) -> None:
            if next(seen) == nth:
                raise Crash(f"killed before request {nth}: {request.method} {request.url.path}")

        result = self._run(hook=crash)
        if result.status in COMPLETED:
            self._completed(result, f"run that made fewer than {nth} requests")
            return
        assert result.status == "failed" and "Crash" in (result.error or ""), (result.status, result.error)
        self._failed()

    def _failed(self) -> None:
        """A run that did not complete: nothing is checked (a swap may be half done at the provider);
        the next completed run must have mended everything it left (a list it re-created and did not
        refill included: ``list_replans``)."""

    @precondition(lambda self: self.can["lost_answers"])
    @rule(fault_seed=st.integers(min_value=0, max_value=999), rate=st.sampled_from([0.25, 0.5]))
    def run_losing_answers(self, fault_seed: int, rate: float) -> None:
        """Writes applied by the provider whose answers are lost on the way back (then retried)."""
        self.world.restart_provider(FaultPlan(seed=fault_seed, apply_then_drop_rate=rate))
        try:
            result = self._run()
        finally:
            self.world.restart_provider()
        if result.status in COMPLETED:
            self._completed(result, f"run losing {rate:.0%} of its write answers (fault seed {fault_seed})")
        else:
            self._failed()

    @rule()
    def a_day_passes(self) -> None:
        """Every open reject's backoff is over: the next run tries them all again."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(Reject).where(Reject.connection_id == self.world.connection_id).values(
                last_seen_at=self.world.now() - dt.timedelta(days=2)))

    # --- CRM edits, as the CRM application makes them ------------------------------------------

    def _set_email(self, member_id: str, email: str | None) -> None:
        self.world.update_member(member_id, email=email)

    @rule(data=st.data())
    def add_member(self, data: st.DataObject) -> None:
        member_id = f"N{next(self.new_ids):03d}"
        email = data.draw(st.sampled_from(ADDRESSES), label="email")
        lists = data.draw(st.lists(st.sampled_from(self.crm_lists), min_size=1, max_size=2, unique=True),
                          label="lists")
        consent = data.draw(st.sampled_from(["ONAY", "RET"]), label="consent")
        t = self.world.crm.members
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(tenant_id=TENANT, id=member_id, email=email, first_name="Yeni",
                                           last_name="Üye", consent_status=consent,
                                           consent_date=self.world.now() - dt.timedelta(days=1),
                                           updated_at=self.world.now()))
        for list_id in lists:
            self.world.join(member_id, list_id)
        self.live.append(member_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def rename_member(self, data: st.DataObject) -> None:
        self.world.update_member(self._draw_member(data), first_name=data.draw(st.sampled_from(NAMES), label="name"))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def soft_delete_member(self, data: st.DataObject) -> None:
        """A KVKK erasure as most CRMs record it: deleted_at."""
        member_id = self._draw_member(data)
        self.world.update_member(member_id, deleted_at=self.world.now())
        self.live.remove(member_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def hard_delete_member(self, data: st.DataObject) -> None:
        member_id = self._draw_member(data)
        self.world.hard_delete_member(member_id)
        self.live.remove(member_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def join_list(self, data: st.DataObject) -> None:
        self.world.join(self._draw_member(data), data.draw(st.sampled_from(self.crm_lists), label="list"))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def leave_list(self, data: st.DataObject) -> None:
        member_id = self._draw_member(data)
        lists = self.world.lists_of(member_id)
        if lists:
            self.world.leave_list(member_id, data.draw(st.sampled_from(lists), label="list"))

    @precondition(lambda self: len(self.live) >= 2)
    @rule(data=st.data())
    def swap_emails(self, data: st.DataObject) -> None:
        first = self._draw_member(data, "first")
        second = self._draw_member(data, "second", but=first)
        a, b = self.world.member(first).email, self.world.member(second).email
        self._set_email(first, b)
        self._set_email(second, a)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def change_email(self, data: st.DataObject) -> None:
        self._set_email(self._draw_member(data), data.draw(st.sampled_from(ADDRESSES), label="email"))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def lose_email(self, data: st.DataObject) -> None:
        """The CRM's address becomes NULL or something that is no address."""
        value = data.draw(st.sampled_from([None, *INVALID]), label="email")
        self._set_email(self._draw_member(data), value)

    @precondition(lambda self: len(self.live) >= 2)
    @rule(data=st.data())
    def share_email(self, data: st.DataObject) -> None:
        """A second member gets the first one's address (spelled in capitals, or as it is)."""
        first = self._draw_member(data, "first")
        second = self._draw_member(data, "second", but=first)
        email = self.world.member(first).email
        upper = data.draw(st.booleans(), label="in capitals")
        self._set_email(second, email.upper() if upper and email else email)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def consent(self, data: st.DataObject) -> None:
        """ONAY or RET, dated now (after every act so far) or a year ago (before all of them)."""
        member_id = self._draw_member(data)
        status = data.draw(st.sampled_from(["ONAY", "RET"]), label="status")
        when = data.draw(st.sampled_from(["now", "a year ago"]), label="dated")
        date = self.world.now() - (dt.timedelta(days=365) if when == "a year ago" else dt.timedelta(0))
        self.world.update_member(member_id, consent_status=status, consent_date=date)

    # --- the recipients and the tenant at the provider ------------------------------------------

    def _act(self, data: st.DataObject, kind: str, make: Callable[..., Any], per_list: bool = False) -> None:
        """``make`` the act on an address that receives mail (a list of it where ``per_list``). A bounce
        only where every record of the address receives (the harness sets every record's status: an
        unsubscribed record does not bounce, no mail goes to it)."""
        receiving = self._receiving(everywhere=kind == "soft_bounce")
        if not receiving:
            return
        email = data.draw(st.sampled_from(sorted(receiving)), label="address")
        lists = frozenset(receiving[email]) if self.caps.membership_model == "per_list" else None
        if per_list:
            name = data.draw(st.sampled_from(sorted(receiving[email])), label="list")
            make(email, name)
            lists = frozenset({name})
        else:
            make(email)
        self.acts.append(Act(kind, normalize_email(email), lists, self.world.now()))

    @precondition(lambda self: self.caps.status_pull != "none")
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        """The recipient unsubscribes (from every list that holds the address)."""
        self._act(data, "unsubscribed", self.harness.unsubscribe)

    @precondition(lambda self: self.caps.status_pull != "none" and self.caps.membership_model == "per_list"
                  and self.can["unsubscribe_from_list"])
    @rule(data=st.data())
    def unsubscribe_from_one_list(self, data: st.DataObject) -> None:
        """The recipient uses the link in one list's mail (a per-list record)."""
        self._act(data, "unsubscribed", self.harness.unsubscribe_from_list, per_list=True)  # type: ignore[attr-defined]

    @precondition(lambda self: self.caps.status_pull != "none" and self.can["complain"])
    @rule(data=st.data())
    def complain(self, data: st.DataObject) -> None:
        self._act(data, "complaint", self.harness.complain)

    @precondition(lambda self: self.caps.status_pull != "none" and self.can["soft_bounce"])
    @rule(data=st.data())
    def soft_bounce(self, data: st.DataObject) -> None:
        self._act(data, "soft_bounce", self.harness.soft_bounce)

    @precondition(lambda self: self.caps.lists == "create")
    @rule(data=st.data())
    def delete_list_in_the_panel(self, data: st.DataObject) -> None:
        """The tenant deletes one of our lists in the provider's panel (the daemon makes it again)."""
        names = sorted(self.harness.list_names())
        if names:
            name = data.draw(st.sampled_from(names), label="list")
            self.harness.delete_list_at_provider(name)

    @precondition(lambda self: self.caps.lists == "create")
    @rule()
    def provider_restarted_empty(self) -> None:
        """The provider lost its state; acts no run pulled yet are lost with it."""
        self.harness.forget_everything()
        for act in self.acts:
            act.maybe_lost = act.maybe_lost or not act.pulled


def _settings() -> settings:
    no_shrink = bool(os.environ.get("FUZZ_NO_SHRINK"))
    return settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=not FUZZ,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                    phases=[Phase.explicit, Phase.generate] if no_shrink else list(Phase))


@pytest.mark.parametrize("db_url", [REST_TIER_SQLITE], ids=["sqlite"])
@pytest.mark.parametrize("harness_cls", HARNESSES, ids=harness_id)
def test_the_engine_keeps_its_promises_under_random_edits_acts_and_crashes(
        harness_cls: type[Harness], db_url: str, sqlite_template: Path, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to about 15 s for a harness (``EXAMPLES`` examples of ``STEPS`` steps, two runs of the
    engine after each completed one): the bounded form of ``make fuzz``."""
    machine = machine_class(harness_cls, sqlite_template, tmp_path, monkeypatch)
    # Hypothesis keeps a cache in .hypothesis/ of the working directory: nothing writes into the checkout.
    set_hypothesis_home_dir(tmp_path_factory.getbasetemp() / "hypothesis")
    try:
        _run_machine(machine, harness_id(harness_cls))
    finally:
        set_hypothesis_home_dir(None)


def machine_class(harness_cls: type[Harness], template: Path, workdir: Path,
                  monkeypatch: pytest.MonkeyPatch) -> type[ProviderMachine]:
    """The machine over one harness: its capabilities and the acts it can make, asked of a fresh
    sandbox (the contract fake's provider registered first, for this test only)."""
    probe = harness_cls()
    register = getattr(probe, "register", None)
    if register is not None:        # a provider known only to the tests (the contract fake)
        register(monkeypatch)
    probe.start()
    # Runs log at debug, a crash with a rich traceback; formatting them costs a third of the module's time.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    return type(f"Machine_{harness_id(harness_cls).replace('-', '_')}", (ProviderMachine,), {
        "harness_cls": harness_cls, "template": template, "workdir": workdir,
        "caps": capabilities(make_world_stub(probe)), "examples": itertools.count(),
        "can": {"complain": _harness_can(harness_cls, "complain"),
                "soft_bounce": _harness_can(harness_cls, "soft_bounce"),
                "unsubscribe_from_list": hasattr(probe, "unsubscribe_from_list"),
                "lost_answers": hasattr(getattr(probe, "sandbox", None), "fault_plan")
                and "apply_then_drop_rate" in {f.name for f in dataclasses.fields(FaultPlan)}}})


def _run_machine(machine: type[ProviderMachine], ident: str) -> None:
    if not FUZZ:
        run_state_machine_as_test(machine, settings=_settings())
        return
    fuzz_seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"FUZZ_SEED={fuzz_seed}")
    try:
        seed(fuzz_seed)(get_state_machine_test(machine, settings=_settings()))()
    except BaseException as exc:
        exc.add_note(f"replay: make fuzz FUZZ_SEED={fuzz_seed} FUZZ_EXAMPLES={EXAMPLES} FUZZ_STEPS={STEPS} "
                     f"FUZZ_ARGS='-k {ident}'")
        raise


def make_world_stub(harness: Harness) -> World:
    """A World with only its harness, for capabilities() (the provider is built without a network)."""
    return World(engine=None, settings=None, harness=harness, connection_id=0)  # type: ignore[arg-type]
