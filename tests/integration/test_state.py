"""Leases and watermarks behave the same on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.config import Secret
from sync.crypto import Vault, generate_key
from sync.engine.state import (
    WatermarkWentBackwards,
    acquire_lease,
    release_lease,
    renew_lease,
    set_watermark,
    watermark_for,
)
from sync.errors import LeaseHeldError
from sync.models import Connection


@pytest.fixture
def connection_id(engine: sa.Engine) -> int:
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, "acme")
        return registry.add_connection(session, Vault([Secret(generate_key())]), "acme", "wapcrm",
                                       {"secret_key": "k-123456"}).id


def test_lease_is_exclusive_until_released(engine: sa.Engine, connection_id: int) -> None:
    """Two workers never hold the same connection; the holder may renew; release frees it."""
    sessions = db.session_factory(engine)
    with sessions() as a, sessions() as b:
        acquire_lease(a, connection_id, "worker-a", 60)
        with pytest.raises(LeaseHeldError, match="worker-a"):
            acquire_lease(b, connection_id, "worker-b", 60)
        acquire_lease(a, connection_id, "worker-a", 60)      # re-entrant for its owner
        renew_lease(a, connection_id, "worker-a", 60)
        a.commit()
        with pytest.raises(LeaseHeldError):
            renew_lease(b, connection_id, "worker-b", 60)
        b.rollback()
        release_lease(a, connection_id, "worker-a")
        acquire_lease(b, connection_id, "worker-b", 60)


def test_expired_lease_can_be_taken_over(engine: sa.Engine, connection_id: int) -> None:
    """A crashed worker's lease expires and another worker takes the connection."""
    sessions = db.session_factory(engine)
    with sessions() as session:
        acquire_lease(session, connection_id, "crashed", 60)
        session.execute(sa.update(Connection).values(
            lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        session.commit()
        acquire_lease(session, connection_id, "survivor", 60)
        assert session.scalar(sa.select(Connection.lease_owner)) == "survivor"


def test_watermark_round_trips_with_microseconds_and_never_goes_back(engine: sa.Engine, connection_id: int) -> None:
    sessions = db.session_factory(engine)
    mark = dt.datetime(2026, 11, 23, 2, 30, 15, 123456, tzinfo=dt.UTC)
    with sessions.begin() as session:
        set_watermark(session, connection_id, "members", mark)
    with sessions() as session:
        assert watermark_for(session, connection_id, "members") == mark
        with pytest.raises(WatermarkWentBackwards):
            set_watermark(session, connection_id, "members", mark - dt.timedelta(microseconds=1))


def test_watermark_is_not_saved_when_its_transaction_rolls_back(engine: sa.Engine, connection_id: int) -> None:
    sessions = db.session_factory(engine)
    with pytest.raises(RuntimeError), sessions.begin() as session:
        set_watermark(session, connection_id, "members", dt.datetime.now(dt.UTC))
        raise RuntimeError("crash before commit")
    with sessions() as session:
        assert watermark_for(session, connection_id, "members") is None


def test_emails_and_ids_differing_only_by_accent_or_case_stay_distinct(engine: sa.Engine, connection_id: int) -> None:
    """MariaDB's default collation would merge 'öz@' and 'oz@'; keys compare byte for byte everywhere."""
    from sync.models import MemberLink, MemberStatus

    sessions = db.session_factory(engine)
    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as session:
        tenant_id = session.get_one(Connection, connection_id).tenant_id
        for email in ("öz@ornek.com.tr", "oz@ornek.com.tr", "Oz@ornek.com.tr"):
            session.add(MemberStatus(tenant_id=tenant_id, connection_id=connection_id, email=email,
                                     status="unsubscribed", occurred_at=now))
        for member_id in ("003Ab", "003AB"):
            session.add(MemberLink(connection_id=connection_id, crm_member_id=member_id, crm_list_id="",
                                   email=f"{member_id}@x.com", payload_hash=""))
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(MemberStatus)) == 3
        assert session.scalar(sa.select(MemberStatus.email).where(MemberStatus.email == "oz@ornek.com.tr")) \
            == "oz@ornek.com.tr"


def test_heartbeat_renews_the_lease_while_a_run_waits(engine: sa.Engine, connection_id: int) -> None:
    """A run waiting on a slow provider keeps its lease alive; without the heartbeat it would expire."""
    import asyncio

    from sync.engine.state import LeaseKeeper

    sessions = db.session_factory(engine)
    keeper = LeaseKeeper(sessions, connection_id, "slow-run", 1)
    first = keeper.acquire().expires_at

    async def wait_on_provider() -> None:
        beat = asyncio.create_task(keeper.heartbeat())
        await asyncio.sleep(1.5)
        beat.cancel()

    asyncio.run(wait_on_provider())
    with sessions() as session:
        renewed = session.scalar(sa.select(Connection.lease_expires_at))
        assert renewed is not None and renewed > first + dt.timedelta(seconds=0.5)
        with pytest.raises(LeaseHeldError):
            acquire_lease(session, connection_id, "other-worker", 60)
