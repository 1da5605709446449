"""A small world per test: migrated database, sample CRM, one tenant connected to a sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import crm_tables
from sync.crypto import Vault, generate_key
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.http import HttpPolicy
from sync.sample import seed_crm
from sync.sandbox import FaultPlan
from tests.integration.providers.harness import HARNESSES, Harness, harness_id

#: Fast retries, so fault tests take milliseconds, not minutes.
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01, max_attempts=8)
TENANT = "acme"


class HookTransport(httpx.AsyncBaseTransport):
    """Calls ``hook(request)`` before handing the request on: the test's hand inside a run."""

    def __init__(self, inner: httpx.AsyncBaseTransport, hook: Callable[[httpx.Request], None]) -> None:
        self.inner = inner
        self.hook = hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hook(request)
        return await self.inner.handle_async_request(request)


@dataclass
class World:
    engine: sa.Engine
    settings: Settings
    harness: Harness
    connection_id: int

    def run(self, hook: Callable[[httpx.Request], None] | None = None, **options: Any) -> RunResult:
        """One run; ``hook`` sees every request before the provider does (to change the provider's
        state in the middle of a run)."""
        def transport(_: Any) -> httpx.AsyncBaseTransport:
            inner = self.harness.transport()
            return inner if hook is None else HookTransport(inner, hook)

        return asyncio.run(run_connection(self.settings, self.engine, self.engine, self.connection_id,
                                          RunOptions(**options), transport_factory=transport, http_policy=FAST))

    def restart_provider(self, faults: FaultPlan | None = None) -> None:
        """Keep the provider's state, change its faults (a new sandbox would forget everything)."""
        from sync.sandbox.faults import FaultInjector

        sandbox = self.harness.sandbox  # type: ignore[attr-defined]
        sandbox.fault_plan = faults or FaultPlan()
        sandbox._faults = FaultInjector(sandbox.fault_plan)

    # --- CRM edits, as the CRM application would make them -------------------------------

    @property
    def crm(self) -> Any:
        return crm_tables(CrmSource())

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def update_member(self, member_id: str, **values: Any) -> None:
        t = self.crm.members
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.tenant_id == TENANT, t.c.id == member_id)
                         .values(updated_at=self.now(), **values))

    def member(self, member_id: str) -> Any:
        t = self.crm.members
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t).where(t.c.tenant_id == TENANT, t.c.id == member_id)).one()

    def lists_of(self, member_id: str) -> list[str]:
        """The member's live lists (a membership of a deleted list does not count)."""
        return self.live_lists_by_member(member_id).get(member_id, [])

    def live_lists_by_member(self, member_id: str | None = None) -> dict[str, list[str]]:
        """member id -> its live lists, sorted, for every member (or one) in a single query: the
        suite's assertions read the whole CRM after every run."""
        t, ls = self.crm.memberships, self.crm.lists
        live_lists = sa.select(ls.c.id).where(ls.c.tenant_id == TENANT, ls.c.deleted_at.is_(None))
        query = sa.select(t.c.member_id, t.c.list_id).where(t.c.tenant_id == TENANT, t.c.deleted_at.is_(None),
                                                            t.c.list_id.in_(live_lists))
        if member_id is not None:
            query = query.where(t.c.member_id == member_id)
        result: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for member, list_id in conn.execute(query.order_by(t.c.member_id, t.c.list_id)):
                result.setdefault(member, []).append(list_id)
        return result

    def list_name(self, list_id: str) -> str:
        return self.list_names().get(list_id, "None")

    def list_names(self) -> dict[str, str]:
        """CRM list id -> its name, every list (deleted ones too)."""
        t = self.crm.lists
        with self.engine.connect() as conn:
            return {list_id: str(name) for list_id, name in conn.execute(
                sa.select(t.c.id, t.c.name).where(t.c.tenant_id == TENANT))}

    def leave_list(self, member_id: str, list_id: str) -> None:
        t = self.crm.memberships
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.tenant_id == TENANT, t.c.member_id == member_id,
                                          t.c.list_id == list_id).values(deleted_at=self.now(), updated_at=self.now()))

    def hard_delete_member(self, member_id: str) -> None:
        """A CRM that deletes rows for real: no deleted_at, no trace."""
        m, ms = self.crm.members, self.crm.memberships
        with self.engine.begin() as conn:
            conn.execute(ms.delete().where(ms.c.tenant_id == TENANT, ms.c.member_id == member_id))
            conn.execute(m.delete().where(m.c.tenant_id == TENANT, m.c.id == member_id))

    def add_list(self, list_id: str, name: str) -> None:
        t = self.crm.lists
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(tenant_id=TENANT, id=list_id, name=name, updated_at=self.now()))

    def join(self, member_id: str, list_id: str) -> None:
        t = self.crm.memberships
        with self.engine.begin() as conn:
            exists = conn.scalar(sa.select(sa.func.count()).select_from(t).where(
                t.c.tenant_id == TENANT, t.c.member_id == member_id, t.c.list_id == list_id))
            if exists:
                conn.execute(t.update().where(t.c.tenant_id == TENANT, t.c.member_id == member_id,
                                              t.c.list_id == list_id).values(deleted_at=None, updated_at=self.now()))
            else:
                conn.execute(t.insert().values(tenant_id=TENANT, member_id=member_id, list_id=list_id,
                                               updated_at=self.now(), deleted_at=None))

    def update_list(self, list_id: str, **values: Any) -> None:
        t = self.crm.lists
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.tenant_id == TENANT, t.c.id == list_id)
                         .values(updated_at=self.now(), **values))

    def valid_active_members(self) -> dict[str, Any]:
        """email -> CRM row of members the provider should hold as active (in a live list)."""
        m, ms, ls = self.crm.members, self.crm.memberships, self.crm.lists
        live_lists = sa.select(ls.c.id).where(ls.c.tenant_id == TENANT, ls.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(m).where(m.c.tenant_id == TENANT, m.c.deleted_at.is_(None),
                                                   m.c.consent_status == "ONAY",
                                                   m.c.id.in_(sa.select(ms.c.member_id).where(
                                                       ms.c.tenant_id == TENANT, ms.c.deleted_at.is_(None),
                                                       ms.c.list_id.in_(live_lists)))))
            return {r.email.lower(): r for r in rows if "@" in r.email}

    def scalar(self, query: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.scalar(query)


#: On PostgreSQL and MariaDB, a shared-suite test that does not depend on the database runs with one
#: harness per membership model (tests/README.md, "The matrix"); on SQLite every harness in every
#: reading runs every test.
DATABASE_HARNESSES = {
    "postacell": "contact: one contact with a set of lists, lists created by us, removal by delete",
    "mailmasterplus": "per-list records in lists mapped from the panel",
    "postatr": "mapped lists keyed by our member id, no removal",
}

#: ``CRM_ESP_SYNC_TEST_FAKES_SQLITE_ONLY=1``: the contract fake's shapes on SQLite only, even in
#: ``every_database`` tests (a quicker local loop; CI never sets it).
FAKES_SQLITE_ONLY = os.environ.get("CRM_ESP_SYNC_TEST_FAKES_SQLITE_ONLY") == "1"


def on_a_server_database(item: pytest.Item) -> bool:
    """Does this parametrized shared-suite test belong in its cell of the matrix?"""
    params = getattr(item, "callspec", None)
    params = params.params if params is not None else {}
    harness = params.get("harness")
    if harness is None or params.get("db_url") in (None, "sqlite"):
        return True
    if not getattr(harness, "default_dialect", True):
        return False            # a reading is an HTTP matter: every reading runs on SQLite only
    if item.get_closest_marker("every_database") is not None:
        return not (FAKES_SQLITE_ONLY and getattr(harness, "shape", None) is not None)
    return harness_id(harness) in DATABASE_HARNESSES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        (kept if on_a_server_database(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=HARNESSES, ids=harness_id)
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Harness:
    instance: Harness = request.param()
    register = getattr(instance, "register", None)
    if register is not None:        # a provider known only to the tests (the contract fake)
        register(monkeypatch)
    instance.start()
    return instance


def make_world(engine: sa.Engine, harness: Harness, members: int = 120) -> World:
    """A sample CRM of ``members`` members and one tenant connected to the (started) harness."""
    settings = Settings(database_url=str(engine.url), master_keys=(Secret(generate_key()),), lookback_seconds=300,
                        worker_id="test-worker")
    seed_crm(engine, CrmSource(), [TENANT], members, seed=7)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, TENANT)
        connection = registry.add_connection(session, Vault(settings.master_keys), TENANT, harness.name,
                                             harness.credentials, settings=harness.settings,
                                             base_url=harness.base_url)
        integrator = getattr(harness, "integrator_credentials", None)   # Euromsg: the integrator's own login
        if integrator:
            registry.set_integrator_credentials(session, Vault(settings.master_keys), harness.name, integrator)
    return World(engine, settings, harness, connection.id)


@pytest.fixture
def world(engine: sa.Engine, harness: Harness) -> Iterator[World]:
    yield make_world(engine, harness)
