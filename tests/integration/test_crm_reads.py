"""The CRM reads a large tenant needs: keyset pages of ids, existence by id, and lookups by many
ids written for the server (one ``= ANY(array)`` parameter on PostgreSQL), on all three databases,
with text and with integer CRM ids."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync.config import CrmSource
from sync.crm import CrmReader
from sync.engine.bulk import one_of
from sync.sample import seed_crm


def test_member_id_pages_read_every_member_once_in_the_crm_order(engine: sa.Engine) -> None:
    seed_crm(engine, CrmSource(), ["acme", "other"], 57, seed=3)
    reader = CrmReader(engine, CrmSource(), "acme")
    pages = list(reader.member_id_pages(size=10))
    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 7]
    flat = [member_id for page in pages for member_id in page]
    assert flat == sorted(reader.all_member_ids()) and len(set(flat)) == 57 == reader.member_count()
    assert list(reader.member_id_pages(size=57)) == [flat]          # an exact last page ends the read
    assert reader.existing_member_ids([*flat[:5], "M999999", "yok"]) == set(flat[:5])
    members = reader.members([*flat[3:8], "M999999"])
    assert sorted(m.id for m in members) == flat[3:8] and all(m.list_ids for m in members)


def test_integer_crm_ids_page_by_number_not_by_text(engine: sa.Engine) -> None:
    md = sa.MetaData()
    integer = {"type_": sa.Integer, "primary_key": True, "autoincrement": False}
    lists = sa.Table("crm_lists", md, sa.Column("tenant_id", **integer), sa.Column("id", **integer),
                     sa.Column("name", sa.String(255), nullable=False),
                     sa.Column("updated_at", sa.DateTime, nullable=False), sa.Column("deleted_at", sa.DateTime))
    members = sa.Table("crm_members", md, sa.Column("tenant_id", **integer), sa.Column("id", **integer),
                       *(sa.Column(c, sa.String(255)) for c in ("email", "first_name", "last_name", "phone", "city",
                                                                 "consent_status", "consent_source", "recipient_type")),
                       sa.Column("consent_date", sa.DateTime), sa.Column("updated_at", sa.DateTime, nullable=False),
                       sa.Column("deleted_at", sa.DateTime))
    links = sa.Table("crm_list_members", md, sa.Column("tenant_id", **integer), sa.Column("list_id", **integer),
                     sa.Column("member_id", **integer), sa.Column("updated_at", sa.DateTime, nullable=False),
                     sa.Column("deleted_at", sa.DateTime))
    md.drop_all(engine)            # the fixture's reference CRM has text ids
    md.create_all(engine)
    past = dt.datetime(2026, 11, 1, 9, 0)
    with engine.begin() as conn:
        conn.execute(lists.insert(), [{"tenant_id": 7, "id": 1, "name": "Liste", "updated_at": past}])
        conn.execute(members.insert(), [{"tenant_id": 7, "id": n, "email": f"uye{n}@ornek.com.tr",
                                         "updated_at": past} for n in (1, 2, 9, 10, 11, 100, 1000)])
        conn.execute(links.insert(), [{"tenant_id": 7, "list_id": 1, "member_id": n, "updated_at": past}
                                      for n in (2, 100)])
    reader = CrmReader(engine, CrmSource(), "7")
    # "9" < "10" as numbers; as text "10" < "9" and a keyset by text would skip or repeat ids
    assert list(reader.member_id_pages(size=3)) == [["1", "2", "9"], ["10", "11", "100"], ["1000"]]
    assert reader.existing_member_ids(["9", "99", "1000"]) == {"9", "1000"}
    assert {m.id: sorted(m.list_ids) for m in reader.members(["2", "100", "11"])} == {
        "2": ["1"], "100": ["1"], "11": []}


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
