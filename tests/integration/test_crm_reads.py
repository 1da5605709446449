"""The CRM reads a large tenant needs: keyset pages of ids, existence by id, and lookups by many
ids written for the server (one ``= ANY(array)`` parameter on PostgreSQL), on all three databases,
with text and with integer CRM ids."""

from __future__ import annotations

import sqlalchemy as sa

from sync.config import CrmSource
from sync.crm import CrmReader, crm_tables
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
