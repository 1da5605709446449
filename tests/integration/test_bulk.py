"""The engine's set-based writes (sync/engine/bulk.py) behave the same on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from sync import db, registry
from sync.config import Secret
from sync.crypto import Vault, generate_key
from sync.engine.bulk import BULK_ROWS, UNNEST_ROWS, analyze, one_of, update_by_key, upsert
from sync.models import MemberLink, MemberStatus, Tenant

LINKS = cast(sa.Table, MemberLink.__table__)
STATUSES = cast(sa.Table, MemberStatus.__table__)
LINK_KEY = ("connection_id", "crm_member_id", "crm_list_id")
WHEN = dt.datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)


@pytest.fixture
def connection_id(engine: sa.Engine) -> int:
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, "acme")
        return registry.add_connection(session, Vault([Secret(generate_key())]), "acme", "postacell",
                                       {"username": "u", "password": "p-123456"}).id


def _link(connection_id: int, member: str, email: str, **values: Any) -> dict[str, Any]:
    return {"connection_id": connection_id, "crm_member_id": member, "crm_list_id": "", "email": email,
            "remote_id": None, "remote_lists": [], "payload_hash": "", "pushed_at": WHEN,
            "status_pushed": None, **values}


def _links(engine: sa.Engine) -> dict[str, sa.Row[Any]]:
    with engine.connect() as conn:
        return {row.crm_member_id: row for row in conn.execute(sa.select(LINKS))}


def test_upsert_inserts_new_rows_and_updates_only_the_named_columns_of_existing_ones(
        engine: sa.Engine, connection_id: int) -> None:
    """A conflict on the unique key updates the listed columns and leaves every other column as stored."""
    sessions = db.session_factory(engine)
    with sessions.begin() as session:
        upsert(session, LINKS, [_link(connection_id, "M1", "a@ornek.com", remote_id="R1", payload_hash="h1")],
               key=LINK_KEY, update=("email",))
    with sessions.begin() as session:
        upsert(session, LINKS, [_link(connection_id, "M1", "yeni@ornek.com"),
                                _link(connection_id, "M2", "b@ornek.com")], key=LINK_KEY, update=("email",))
    links = _links(engine)
    assert set(links) == {"M1", "M2"}
    assert (links["M1"].email, links["M1"].remote_id, links["M1"].payload_hash) == ("yeni@ornek.com", "R1", "h1")
    assert (links["M2"].email, links["M2"].remote_id, links["M2"].remote_lists) == ("b@ornek.com", None, [])
    assert links["M2"].pushed_at == WHEN                     # microseconds and UTC survive the core path


def test_upsert_writes_more_rows_than_one_statement_holds(engine: sa.Engine, connection_id: int) -> None:
    """Rows beyond BULK_ROWS go in further statements; none is lost or doubled."""
    count = BULK_ROWS + 7
    with db.session_factory(engine).begin() as session:
        upsert(session, LINKS, [_link(connection_id, f"M{n:05d}", f"m{n}@ornek.com") for n in range(count)],
               key=LINK_KEY, update=("email",))
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(LINKS)) == count


def test_upsert_keeps_every_value_as_given_whatever_it_holds(engine: sa.Engine, connection_id: int) -> None:
    """Empty texts, NULLs, the control characters PostgreSQL's path separates values with, JSON,
    one row alone and more rows than one statement holds: each value is stored as given."""
    odd = ["", "\x1f", "\x1e", "a\x1fb", "\x1e\x1f", "İ'\"{}\\,;"]
    alone = [_link(connection_id, "M0", "", remote_id="", remote_lists=[""])]
    rows = [_link(connection_id, f"M{n:05d}", f"m{n}@ornek.com", remote_id=odd[n % len(odd)] if n % 7 else None,
                  remote_lists=[odd[n % len(odd)], "L1"], status_pushed=None if n % 2 else "active")
            for n in range(1, UNNEST_ROWS + 3)]
    sessions = db.session_factory(engine)
    for batch in (alone, rows[:1], rows):
        with sessions.begin() as session:
            upsert(session, LINKS, batch, key=LINK_KEY, update=("email", "remote_id", "remote_lists", "status_pushed"))
    links = _links(engine)
    assert len(links) == len(rows) + 1
    for row in alone + rows:
        stored = links[row["crm_member_id"]]
        assert (stored.crm_list_id, stored.email, stored.remote_id, stored.remote_lists, stored.status_pushed,
                stored.pushed_at) == ("", row["email"], row["remote_id"], row["remote_lists"], row["status_pushed"],
                                      WHEN), row["crm_member_id"]


def test_upsert_of_rows_with_one_key_writes_the_last(engine: sa.Engine, connection_id: int) -> None:
    with db.session_factory(engine).begin() as session:
        upsert(session, LINKS, [_link(connection_id, "M1", "a@ornek.com"), _link(connection_id, "M1", "b@ornek.com")],
               key=LINK_KEY, update=("email",))
    assert _links(engine)["M1"].email == "b@ornek.com"


def test_upsert_of_statuses_keeps_them_per_connection_email_and_list(engine: sa.Engine, connection_id: int) -> None:
    """The member_statuses key (connection, e-mail, remote list): a list-scoped row is distinct from
    the account-wide one, and a second write of a key updates it in place."""
    sessions = db.session_factory(engine)
    with sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id))

    def status(remote_list: str, value: str) -> dict[str, Any]:
        return {"tenant_id": tenant_id, "connection_id": connection_id, "email": "c@ornek.com",
                "remote_list_id": remote_list, "remote_id": "R9", "status": value, "occurred_at": WHEN,
                "pulled_at": WHEN}

    columns = ("status", "occurred_at", "pulled_at")
    key = ("connection_id", "email", "remote_list_id")
    with sessions.begin() as session:
        upsert(session, STATUSES, [status("", "soft_bounce"), status("L1", "unsubscribed")], key=key, update=columns)
    with sessions.begin() as session:
        upsert(session, STATUSES, [status("", "complaint")], key=key, update=columns)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(STATUSES.c.remote_list_id, STATUSES.c.status)).all())
    assert stored == {"": "complaint", "L1": "unsubscribed"}


def test_upsert_refuses_an_empty_update_list(engine: sa.Engine, connection_id: int) -> None:
    with db.session_factory(engine)() as session, pytest.raises(ValueError, match="at least one column"):
        upsert(session, LINKS, [_link(connection_id, "M1", "a@ornek.com")], key=LINK_KEY, update=())


def test_update_by_key_writes_each_row_found_by_its_key_and_no_other(engine: sa.Engine, connection_id: int) -> None:
    """Rows are found by the fixed connection plus each entry's member and list; other rows stay."""
    sessions = db.session_factory(engine)
    with sessions.begin() as session:
        upsert(session, LINKS, [_link(connection_id, m, f"{m.lower()}@ornek.com") for m in ("M1", "M2", "M3")],
               key=LINK_KEY, update=("email",))
    with sessions.begin() as session:
        update_by_key(session, LINKS, [
            {"crm_member_id": "M1", "crm_list_id": "", "remote_id": "R1", "remote_lists": ["L1", "L2"],
             "payload_hash": "h1"},
            {"crm_member_id": "M3", "crm_list_id": "", "remote_id": "R3", "remote_lists": [], "payload_hash": "h3"},
        ], key={"connection_id": connection_id}, match=("crm_member_id", "crm_list_id"))
        update_by_key(session, LINKS, [], key={"connection_id": connection_id}, match=("crm_member_id",))
    links = _links(engine)
    assert (links["M1"].remote_id, links["M1"].remote_lists, links["M1"].payload_hash) == ("R1", ["L1", "L2"], "h1")
    assert (links["M2"].remote_id, links["M2"].payload_hash) == (None, "")
    assert (links["M3"].remote_id, links["M3"].payload_hash) == ("R3", "h3")


def test_analyze_refreshes_our_tables_and_says_so_in_the_log(engine: sa.Engine, connection_id: int) -> None:
    """ANALYZE (ANALYZE TABLE on MariaDB) runs on the daemon's tables and is logged with its reason;
    the session stays usable afterwards."""
    with db.session_factory(engine)() as session, capture_logs() as logs:
        analyze(session, [LINKS, STATUSES], reason="large load", rows=12_000)
        assert session.scalar(sa.select(sa.func.count()).select_from(LINKS)) == 0
    [line] = [entry for entry in logs if entry["event"] == "db.analyzed"]
    assert line["tables"] == ["member_links", "member_statuses"]
    assert (line["reason"], line["rows_written"]) == ("large load", 12_000)


def test_update_by_key_of_many_rows_by_id_with_odd_values(engine: sa.Engine, connection_id: int) -> None:
    """More rows than one statement holds, found by the primary key, values with the separators of
    PostgreSQL's path and NULLs: each row gets its own values."""
    odd = ["", "\x1f", "\x1e", None, "d" * 32]
    count = UNNEST_ROWS + 5
    sessions = db.session_factory(engine)
    with sessions.begin() as session:
        upsert(session, LINKS, [_link(connection_id, f"M{n:05d}", f"m{n}@ornek.com") for n in range(count)],
               key=LINK_KEY, update=("email",))
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(LINKS.c.crm_member_id, LINKS.c.id)).all())
    with sessions.begin() as session:
        update_by_key(session, LINKS, [{"id": ids[f"M{n:05d}"], "source_digest": odd[n % len(odd)]}
                                       for n in range(count)], key={"connection_id": connection_id}, match=("id",))
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(LINKS.c.crm_member_id, LINKS.c.source_digest)).all())
    assert stored == {f"M{n:05d}": odd[n % len(odd)] for n in range(count)}


def test_one_of_finds_exactly_the_given_values_whatever_they_hold(engine: sa.Engine, connection_id: int) -> None:
    """The lookup by many keys (PostgreSQL: one text split by the server, or an array where a value
    holds the separator or is one empty text) finds the same rows as IN (...) on every database."""
    members = ["", "M1", "M\x1f2", "İ3", "a,b", "{x}", '"q"']
    with db.session_factory(engine).begin() as session:
        upsert(session, LINKS, [_link(connection_id, member, f"{n}@ornek.com") for n, member in enumerate(members)],
               key=LINK_KEY, update=("email",))
    dialect = engine.dialect.name
    for wanted in ([""], ["M1"], ["", "M1"], ["M\x1f2", "İ3"], ["a,b", "{x}", '"q"', "absent"], members):
        with engine.connect() as conn:
            found = set(conn.scalars(sa.select(LINKS.c.crm_member_id).where(one_of(dialect, LINKS.c.crm_member_id,
                                                                                     wanted))))
        assert found == set(wanted) & set(members), wanted
