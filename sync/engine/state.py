"""Watermarks and connection leases: the small pieces of state that make runs safe to repeat.

A watermark is written only inside the transaction that commits the work it covers, and
never goes backwards. A lease is one conditional UPDATE, so it is portable to SQLite,
PostgreSQL and MariaDB and needs no advisory locks.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.errors import LeaseHeldError, SyncError
from sync.models import Connection, Watermark, utcnow


class WatermarkWentBackwards(SyncError):
    """A stream's position would move backwards."""


def watermark_for(session: Session, connection_id: int, stream: str) -> dt.datetime | None:
    value = session.scalar(sa.select(Watermark.value).where(
        Watermark.connection_id == connection_id, Watermark.stream == stream))
    return None if value is None else dt.datetime.fromisoformat(value)


def set_watermark(session: Session, connection_id: int, stream: str, value: dt.datetime) -> None:
    """Advance ``stream`` to ``value`` in the caller's transaction; refuse to move backwards."""
    row = session.get(Watermark, (connection_id, stream))
    encoded = value.astimezone(dt.UTC).isoformat()
    if row is None:
        session.add(Watermark(connection_id=connection_id, stream=stream, value=encoded))
    else:
        current = dt.datetime.fromisoformat(row.value)
        if value < current:
            raise WatermarkWentBackwards(f"watermark {stream} would go back from {current} to {value}")
        row.value = encoded


def acquire_lease(session: Session, connection_id: int, owner: str, seconds: int) -> None:
    """Take (or renew) the connection's lease, or raise LeaseHeldError; commits at once."""
    now = utcnow()
    result = session.execute(
        sa.update(Connection)
        .where(Connection.id == connection_id,
               sa.or_(Connection.lease_owner.is_(None), Connection.lease_owner == owner,
                      Connection.lease_expires_at < now))
        .values(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        holder = session.scalar(sa.select(Connection.lease_owner).where(Connection.id == connection_id))
        raise LeaseHeldError(f"connection {connection_id} is being synced by {holder}")


def renew_lease(session: Session, connection_id: int, owner: str, seconds: int) -> None:
    """Extend our lease inside the caller's transaction; lost lease -> LeaseHeldError (stop)."""
    result = session.execute(
        sa.update(Connection)
        .where(Connection.id == connection_id, Connection.lease_owner == owner)
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseHeldError(f"lost the lease of connection {connection_id}")


def release_lease(session: Session, connection_id: int, owner: str) -> None:
    session.execute(
        sa.update(Connection).where(Connection.id == connection_id, Connection.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False)
    )
    session.commit()
