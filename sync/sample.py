"""A sample CRM for the demo and the tests: Turkish names and letters, a few bad rows on purpose."""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from sync.config import CrmSource
from sync.crm import crm_tables

FIRST_NAMES = ("Ayşe", "Fatma", "Emine", "Hatice", "Zeynep", "Elif", "Şule", "Özlem", "Gülşen", "İpek",
               "Mehmet", "Mustafa", "Ahmet", "Ali", "Hüseyin", "Hasan", "İbrahim", "Çağlar", "Oğuz", "Ümit",
               "Barış", "Gökhan", "Tuğba", "Ebru", "Şükrü", "Ilgaz", "Işıl", "Doğan", "Sevgül", "Nükhet")
LAST_NAMES = ("Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Yıldırım", "Öztürk", "Aydın",
              "Özdemir", "Arslan", "Doğan", "Kılıç", "Aslan", "Çetin", "Kara", "Koç", "Kurt", "Özkan",
              "Şimşek", "Güneş", "Erdoğan", "Aksoy", "Uçar", "Karagöz", "İnce", "Gündüz", "Bozkurt")
CITIES = ("İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Eskişehir", "Muğla", "Şanlıurfa", "Çanakkale",
          "Diyarbakır", "Kahramanmaraş", "Iğdır", "Gaziantep", "Trabzon")
DOMAINS = ("gmail.com", "hotmail.com", "yandex.com.tr", "outlook.com", "ornek.com.tr", "firma.net")
LIST_NAMES = ("Müşteri Listesi", "Bülten Aboneleri", "Kampanya Özel", "Yurt Dışı Genel Müdürler",
              "Pazarlamacılar", "İstanbul Şubesi", "Sadık Müşteriler", "Çağrı Merkezi")
SOURCES = ("HS_WEB", "HS_FIZIKSEL_ORTAM", "HS_ISLAK_IMZA", "HS_CAGRI_MERKEZI", "HS_EPOSTA")


@dataclass(frozen=True)
class SeedSummary:
    tenants: int
    lists: int
    members: int
    memberships: int
    invalid_emails: int
    refused_consent: int


def ascii_fold(text: str) -> str:
    """'Çağlar Şahin' -> 'caglar sahin': Turkish letters folded for an e-mail local part."""
    text = text.replace("ı", "i").replace("İ", "I")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()


def seed_crm(engine: sa.Engine, source: CrmSource, tenant_ids: Sequence[str], members_per_tenant: int,
             *, seed: int = 42, now: dt.datetime | None = None) -> SeedSummary:
    """Fill the reference CRM tables with deterministic sample data (replacing those tenants' rows)."""
    tables = crm_tables(source)
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC)
    lists_rows, member_rows, link_rows = [], [], []
    invalid = refused = 0
    for tenant in tenant_ids:
        list_ids = [f"L{n + 1}" for n in range(rng.randint(3, 5))]
        for number, list_id in enumerate(list_ids):
            lists_rows.append({"tenant_id": tenant, "id": list_id, "name": LIST_NAMES[number % len(LIST_NAMES)],
                               "updated_at": now - dt.timedelta(days=30), "deleted_at": None})
        for n in range(members_per_tenant):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = f"{ascii_fold(first)}.{ascii_fold(last)}{n}@{rng.choice(DOMAINS)}"
            if n % 250 == 7:        # a typo as real CRMs have them: becomes a reject, never stops a run
                email = email.replace("@", "")
                invalid += 1
            status = "RET" if n % 40 == 3 else "ONAY"
            refused += status == "RET"
            member_rows.append({
                "tenant_id": tenant, "id": f"M{n + 1:06d}", "email": email, "first_name": first,
                "last_name": last, "phone": f"905{rng.randint(300000000, 599999999)}", "city": rng.choice(CITIES),
                "consent_status": status, "consent_date": now - dt.timedelta(days=rng.randint(40, 400)),
                "consent_source": rng.choice(SOURCES), "recipient_type": "TACIR" if n % 15 == 0 else "BIREYSEL",
                "updated_at": now - dt.timedelta(days=rng.randint(1, 29), seconds=rng.randint(0, 86399)),
                "deleted_at": None,
            })
            for list_id in rng.sample(list_ids, k=rng.choice((1, 1, 1, 2, 2, 3))):
                link_rows.append({"tenant_id": tenant, "list_id": list_id, "member_id": f"M{n + 1:06d}",
                                  "updated_at": now - dt.timedelta(days=30), "deleted_at": None})
    with engine.begin() as conn:
        for table in (tables.memberships, tables.members, tables.lists):
            conn.execute(table.delete().where(table.c.tenant_id.in_(list(tenant_ids))))
        for table, rows in ((tables.lists, lists_rows), (tables.members, member_rows),
                            (tables.memberships, link_rows)):
            for start in range(0, len(rows), 1000):
                conn.execute(table.insert(), rows[start:start + 1000])
    return SeedSummary(len(tenant_ids), len(lists_rows), len(member_rows), len(link_rows), invalid, refused)
