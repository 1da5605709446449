"""The CRM reads a large tenant needs: keyset pages of ids, existence by id, and lookups by many
ids written for the server (one ``= ANY(array)`` parameter on PostgreSQL), on all three databases,
with text and with integer CRM ids."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync.config import CrmSource
from sync.crm import CrmReader, crm_tables, source_digest
from sync.engine.bulk import one_of
from sync.sample import seed_crm
from tests.integration.test_first_hour import _integer_crm


def test_member_id_pages_read_every_member_once_in_the_crm_order(engine: sa.Engine) -> None:
    seed_crm(engine, CrmSource(), ["acme", "other"], 57, seed=3)
    reader = CrmReader(engine, CrmSource(), "acme")
    pages = list(reader.member_id_pages(size=10))
    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 7]
    flat = [member_id for page in pages for member_id in page]
    members = crm_tables(CrmSource()).members
    with engine.connect() as conn:
        every = sorted(conn.scalars(sa.select(members.c.id).where(members.c.tenant_id == "acme")))
    assert flat == every and len(set(flat)) == 57 == reader.member_count()
    assert list(reader.member_id_pages(size=57)) == [flat]          # an exact last page ends the read
    assert reader.existing_member_ids([*flat[:5], "M999999", "yok"]) == set(flat[:5])
    assert reader.all_exist(flat) and reader.all_exist([]) and not reader.all_exist([*flat[:5], "M999999"])
    found = reader.members([*flat[3:8], "M999999"])
    assert sorted(m.id for m in found) == flat[3:8] and all(m.list_ids for m in found)


def test_integer_crm_ids_page_by_number_not_by_text(engine: sa.Engine) -> None:
    crm_tables(CrmSource()).metadata.drop_all(engine)     # the fixture's reference CRM has text ids
    _integer_crm(engine)                                  # ids 1..20 of tenants 1042 and 7
    reader = CrmReader(engine, CrmSource(), "1042")
    # "9" < "10" as numbers; as text "10" < "9" and a keyset by text would skip or repeat ids
    assert list(reader.member_id_pages(size=7)) == [[str(n) for n in range(1, 8)], [str(n) for n in range(8, 15)],
                                                     [str(n) for n in range(15, 21)]]
    assert reader.existing_member_ids(["9", "99", "20"]) == {"9", "20"}
    assert reader.all_exist(["9", "20"]) and not reader.all_exist(["9", "99"])
    assert {m.id: sorted(m.list_ids) for m in reader.members(["2", "11", "99"])} == {"2": ["1"], "11": ["2"]}


def test_one_of_finds_the_same_rows_as_in(engine: sa.Engine) -> None:
    """``one_of`` is ``IN (...)`` everywhere but PostgreSQL, where it is ``= ANY(:array)``."""
    table = sa.Table("one_of_probe", sa.MetaData(), sa.Column("email", sa.String(254), primary_key=True))
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"email": f"uye{n}@ornek.com.tr"} for n in range(1500)])
    wanted = [f"uye{n}@ornek.com.tr" for n in range(0, 3000, 7)]
    with engine.connect() as conn:
        found = set(conn.scalars(sa.select(table.c.email).where(one_of(engine.dialect.name, table.c.email, wanted))))
        assert found == {email for email in wanted if int(email[3:].split("@")[0]) < 1500}
        assert conn.scalars(sa.select(table.c.email).where(one_of(engine.dialect.name, table.c.email, []))).all() == []


def test_source_pages_digest_each_member_as_planning_does_whatever_the_server_s_collation(engine: sa.Engine) -> None:
    """A backfill skips a member when the digest its CRM server computed (lists and all, on
    PostgreSQL) equals the one planning stored from ``members()``: the two must agree for list
    ids a locale sorts otherwise than code points do (digits, case, punctuation, Turkish
    letters), with soft-deleted memberships left out and members in no list flagged."""
    seed_crm(engine, CrmSource(), ["acme"], 12, seed=5)
    tables = crm_tables(CrmSource())
    now = dt.datetime.now(dt.UTC)
    odd = ["a10", "a9", "Z1", "_x", "çiçek", "İl", "x-1"]
    with engine.begin() as conn:
        conn.execute(tables.lists.insert(), [{"tenant_id": "acme", "id": list_id, "name": f"Liste {list_id}",
                                              "updated_at": now} for list_id in odd])
        member_ids = sorted(conn.scalars(sa.select(tables.members.c.id).where(tables.members.c.tenant_id == "acme")))
        conn.execute(tables.memberships.insert(), [
            {"tenant_id": "acme", "list_id": list_id, "member_id": member_ids[0], "updated_at": now,
             "deleted_at": now if list_id == "x-1" else None} for list_id in odd])
        conn.execute(tables.memberships.delete().where(tables.memberships.c.tenant_id == "acme",
                                                       tables.memberships.c.member_id == member_ids[1]))
    if engine.dialect.name == "postgresql":      # the CRM's own collation, which sorts as people read
        with engine.begin() as conn:
            conn.execute(sa.text('ALTER TABLE crm_list_members ALTER COLUMN list_id TYPE text COLLATE "und-x-icu"'))
    reader = CrmReader(engine, CrmSource(), "acme")
    pages = list(reader.member_source_pages("salt:1", size=5))
    assert [len(page) for page in pages] == [5, 5, 2]
    found = {member.id: member for member in reader.members(member_ids)}
    assert "x-1" not in found[member_ids[0]].list_ids and "İl" in found[member_ids[0]].list_ids
    for member_id, digest, in_a_list in (entry for page in pages for entry in page):
        member = found[member_id]
        assert digest == source_digest(member.row_digest, member.list_ids, "salt:1"), member_id
        assert in_a_list == bool(member.list_ids)
    assert [entry[2] for page in pages for entry in page if entry[0] == member_ids[1]] == [False]
    assert {entry[1] for page in pages for entry in page} != {
        entry[1] for page in reader.member_source_pages("salt:2") for entry in page}
