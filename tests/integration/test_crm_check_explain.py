"""`crm check` measures (issue 25): it EXPLAINs the reads a run and a backfill make against the
configured views and warns, one line per problem, where a lookup by key scans instead of using an
index (an id cast in the view, a function on updated_at, a missing index), naming the fix; and, in
change-xid mode, names each table a view reads that no trigger-kept change column covers. Each
warning is shown to go away once its fix is applied. Run through the real command line.

The CRM here is an integrator's own schema (integer keys, other column names) behind views, with
a few thousand rows and fresh statistics, so that a planner has an index worth choosing.
"""

# ruff: noqa: S608  (the SQL builds a test CRM from constants)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from sync import db
from sync.cli.app import require_contract
from sync.config import CrmSource
from tests.cli_runner import Result
from tests.conftest import ENV, Cli, Servers

#: Members of the measured tenant (company 1) and of another (company 2).
MEMBERS, OTHERS = 3000, 500


@pytest.fixture(params=["postgresql", "mariadb"])
def crm_url(request: pytest.FixtureRequest, server_urls: Servers) -> Iterator[str]:
    admin_url = server_urls.url(request.param)
    if admin_url is None:
        pytest.skip(f"{request.param}: {ENV[request.param]} is not set and Docker does not answer")
    with db.scratch_database(admin_url, prefix="t") as url:
        yield url


def _run(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _integrator_crm(engine: sa.Engine) -> None:
    """Companies' mailing lists, contacts and list memberships, integer keys, primary keys only."""
    pg = engine.dialect.name == "postgresql"
    text, stamp = ("text", "timestamp") if pg else ("varchar(255)", "datetime(6)")
    _run(engine,
         f"CREATE TABLE mailing_lists (company_id integer NOT NULL, list_id integer NOT NULL, title {text} NOT NULL, "
         f"modified {stamp} NOT NULL, removed {stamp}, PRIMARY KEY (company_id, list_id))",
         f"CREATE TABLE contacts (company_id integer NOT NULL, contact_id integer NOT NULL, mail {text}, "
         f"given_name {text}, family_name {text}, gsm {text}, city {text}, iys_status {text}, iys_date {stamp}, "
         f"iys_source {text}, kind {text}, modified {stamp} NOT NULL, removed {stamp}, "
         "PRIMARY KEY (company_id, contact_id))",
         f"CREATE TABLE contact_lists (company_id integer NOT NULL, list_id integer NOT NULL, "
         f"contact_id integer NOT NULL, modified {stamp} NOT NULL, removed {stamp}, "
         "PRIMARY KEY (company_id, list_id, contact_id))")
    total = MEMBERS + OTHERS
    if pg:
        numbers, company = f"generate_series(1, {total}) AS g(n)", f"CASE WHEN n <= {MEMBERS} THEN 1 ELSE 2 END"
        minutes = "(now() AT TIME ZONE 'UTC') - n * interval '7 minutes'"
        mail = "'uye' || n || '@ornek.com.tr'"
    else:
        numbers, company = f"seq_1_to_{total} AS g", f"CASE WHEN seq <= {MEMBERS} THEN 1 ELSE 2 END"
        minutes = "UTC_TIMESTAMP(6) - INTERVAL seq * 7 MINUTE"
        mail = "CONCAT('uye', seq, '@ornek.com.tr')"
    n = "n" if pg else "seq"
    _run(engine,
         "INSERT INTO mailing_lists SELECT c, l, 'Liste', " + ("now() AT TIME ZONE 'UTC'" if pg else "UTC_TIMESTAMP(6)")
         + ", NULL FROM (SELECT 1 AS c UNION ALL SELECT 2) AS cs, (SELECT 1 AS l UNION ALL SELECT 2 UNION ALL "
         "SELECT 3) AS ls",
         f"INSERT INTO contacts SELECT {company}, {n}, {mail}, 'Çağlar', 'Şahin', NULL, 'İzmir', 'ONAY', NULL, "
         f"'HS_WEB', 'BIREYSEL', {minutes}, NULL FROM {numbers}",
         f"INSERT INTO contact_lists SELECT {company}, 1 + MOD({n}, 3), {n}, {minutes}, NULL FROM {numbers}")
    _run(engine, *(["ANALYZE mailing_lists, contacts, contact_lists"] if pg
                   else ["ANALYZE TABLE mailing_lists, contacts, contact_lists"]))


def _views(engine: sa.Engine, *, cast: bool) -> None:
    """The contract's three views; ``cast``: ids cast to text (the contract "takes text"), and
    updated_at turned from local time into UTC in the view."""
    pg = engine.dialect.name == "postgresql"

    def ident(column: str) -> str:
        return column if not cast else f"{column}::text" if pg else f"CAST({column} AS CHAR)"

    def when(column: str) -> str:
        return column if not cast else f"({column} - interval '3 hours')" if pg \
            else f"CONVERT_TZ({column}, '+03:00', '+00:00')"

    _run(engine, "DROP VIEW IF EXISTS crm_lists", "DROP VIEW IF EXISTS crm_members",
         "DROP VIEW IF EXISTS crm_list_members",
         f"CREATE VIEW crm_lists AS SELECT company_id AS tenant_id, {ident('list_id')} AS id, title AS name, "
         "modified AS updated_at, removed AS deleted_at FROM mailing_lists",
         f"CREATE VIEW crm_members AS SELECT company_id AS tenant_id, {ident('contact_id')} AS id, mail AS email, "
         "given_name AS first_name, family_name AS last_name, gsm AS phone, city, iys_status AS consent_status, "
         "iys_date AS consent_date, iys_source AS consent_source, kind AS recipient_type, "
         f"{when('modified')} AS updated_at, removed AS deleted_at FROM contacts",
         f"CREATE VIEW crm_list_members AS SELECT company_id AS tenant_id, {ident('list_id')} AS list_id, "
         f"{ident('contact_id')} AS member_id, {when('modified')} AS updated_at, removed AS deleted_at "
         "FROM contact_lists")


def _check(cli: Cli, url: str, *args: str, **settings: str) -> Result:
    env = {"CRM_ESP_SYNC_DATABASE_URL": url, "CRM_ESP_SYNC_LOG_FORMAT": "json",
           **{f"CRM_ESP_SYNC_{key.upper()}": value for key, value in settings.items()}}
    result = cli("crm", "check", *args, env=env)
    assert "Traceback" not in result.out + result.err, result
    return result


def _lines(result: Result, severity: str) -> list[str]:
    return [line for line in result.out.splitlines() if line.startswith(f"{severity}: ")]


def _one(lines: list[str], *words: str) -> str:
    found = [line for line in lines if all(word in line for word in words)]
    assert len(found) == 1, (words, lines)
    return found[0]


def test_casts_in_the_views_and_missing_indexes_are_warned_and_the_warnings_go_with_the_fix(
        cli: Cli, crm_url: str) -> None:
    engine = db.create_engine(crm_url)
    _integrator_crm(engine)
    _views(engine, cast=True)

    # ids cast to text and updated_at computed in the view: a warning per relation and column
    bad = _check(cli, crm_url)
    assert bad.code == 1 and "the CRM contract holds, with" in bad.out and "error:" not in bad.out, bad.out
    warnings = _lines(bad, "warning")
    member_id = _one(warnings, "warning: crm_members.id: contacts is scanned", "contact_id",
                     "each run's batch of 1,000 members", "the view casts it",
                     "fix: expose the id column uncast", "the contract takes text, integer or UUID ids as they are")
    assert "CAST(" in member_id.upper() or "::text" in member_id
    lookup = _one(warnings, "warning: crm_list_members.member_id: contact_lists is scanned", "contact_id",
                  "the list lookup of each batch of members", "the view casts it", "expose the id column uncast")
    if engine.dialect.name == "postgresql":        # the integrator's 127x: a backfill's lookup per member
        assert "the backfill's list lookup per member" in lookup
    for relation, table in (("crm_members", "contacts"), ("crm_list_members", "contact_lists")):
        line = _one(warnings, f"warning: {relation}.updated_at: {table} is scanned", "modified",
                    "the read of what changed since the last run", "the view computes it",
                    "expose modified as it is stored")
        if engine.dialect.name == "postgresql":    # an expression index serves it there
            assert f"CREATE INDEX ON {table} (company_id, ((modified - " in line, line
    assert len(warnings) == 4, bad.out
    assert _lines(bad, "hint") == []               # what was measured replaces the catalogue's guesses

    # uncast views, but the indexes a run needs are missing: the warnings name them
    _views(engine, cast=False)
    unindexed = _check(cli, crm_url)
    assert unindexed.code == 1, unindexed.out
    warnings = _lines(unindexed, "warning")
    _one(warnings, "warning: crm_members.updated_at:", "the read of what changed since the last run",
         "fix: CREATE INDEX ON contacts (company_id, modified)")
    _one(warnings, "warning: crm_list_members.updated_at:", "fix: CREATE INDEX ON contact_lists (company_id, modified)")
    _one(warnings, "warning: crm_list_members.member_id:", "the list lookup of each batch of members",
         "the backfill's list lookup per member" if engine.dialect.name == "postgresql" else "",
         "fix: CREATE INDEX ON contact_lists (company_id, contact_id)")
    assert len(warnings) == 3, unindexed.out

    # the indexes: nothing to say, exit 0; the same for one tenant
    _run(engine, "CREATE INDEX contacts_changed ON contacts (company_id, modified)",
         "CREATE INDEX contact_lists_changed ON contact_lists (company_id, modified)",
         "CREATE INDEX contact_lists_contact ON contact_lists (company_id, contact_id)")
    for args in ((), ("--crm-tenant-id", "2")):
        good = _check(cli, crm_url, *args)
        assert good.code == 0 and "the CRM contract holds" in good.out, good.out
        assert _lines(good, "warning") == [] and _lines(good, "hint") == [] and _lines(good, "error") == []
        assert "plans measured on" in _one(_lines(good, "note"), "plans measured")
    assert "CRM tenant '2'" in good.out

    # ... and the casts alone come back as exactly the cast and function warnings
    _views(engine, cast=True)
    again = _check(cli, crm_url)
    assert again.code == 1 and len(_lines(again, "warning")) == 4, again.out

    # what `once` and `run` check at start EXPLAINs nothing (the plans cost time: `crm check` only)
    sent: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *event: sent.append(event[2]))
    require_contract(SimpleNamespace(settings=SimpleNamespace(crm=CrmSource())), engine)  # type: ignore[arg-type]
    assert sent and not [statement for statement in sent if "EXPLAIN" in statement.upper()]
    engine.dispose()


def test_a_one_company_crm_gets_index_fixes_without_a_tenant_column(cli: Cli, crm_url: str) -> None:
    """The views' tenant id is a constant: no index hint may name a tenant column."""
    engine = db.create_engine(crm_url)
    _integrator_crm(engine)
    tenant = "'acme'"
    _run(engine,
         f"CREATE VIEW crm_lists AS SELECT {tenant} AS tenant_id, list_id AS id, title AS name, "
         "modified AS updated_at, removed AS deleted_at FROM mailing_lists WHERE company_id = 1",
         f"CREATE VIEW crm_members AS SELECT {tenant} AS tenant_id, contact_id AS id, mail AS email, "
         "given_name AS first_name, family_name AS last_name, gsm AS phone, city, iys_status AS consent_status, "
         "iys_date AS consent_date, iys_source AS consent_source, kind AS recipient_type, modified AS updated_at, "
         "removed AS deleted_at FROM contacts",
         f"CREATE VIEW crm_list_members AS SELECT {tenant} AS tenant_id, list_id, contact_id AS member_id, "
         "modified AS updated_at, removed AS deleted_at FROM contact_lists")
    check = _check(cli, crm_url)
    assert check.code == 1, check.out
    warnings = _lines(check, "warning")
    assert "company_id" not in "\n".join(warnings), check.out
    _one(warnings, "warning: crm_members.id:", "fix: CREATE INDEX ON contacts (contact_id)")
    _one(warnings, "warning: crm_members.updated_at:", "fix: CREATE INDEX ON contacts (modified)")
    _one(warnings, "warning: crm_list_members.member_id:", "fix: CREATE INDEX ON contact_lists (contact_id)")
    _one(warnings, "warning: crm_list_members.updated_at:", "fix: CREATE INDEX ON contact_lists (modified)")
    assert len(warnings) == 4, check.out
    _run(engine, "CREATE INDEX contacts_id ON contacts (contact_id)",
         "CREATE INDEX contacts_changed ON contacts (modified)",
         "CREATE INDEX contact_lists_contact ON contact_lists (contact_id)",
         "CREATE INDEX contact_lists_changed ON contact_lists (modified)")
    good = _check(cli, crm_url)
    assert good.code == 0 and _lines(good, "warning") == [] and _lines(good, "hint") == [], good.out
    engine.dispose()


XID_TRIGGER = """
CREATE FUNCTION crm_set_change_xid() RETURNS trigger AS $$
BEGIN NEW.change_xid := pg_current_xact_id()::text::bigint; RETURN NEW; END $$ LANGUAGE plpgsql
"""


TOUCH_TRIGGER = """
CREATE FUNCTION crm_touch_contact() RETURNS trigger AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE contacts SET change_xid = pg_current_xact_id()::text::bigint
     WHERE company_id = OLD.company_id AND contact_id = OLD.contact_id;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    UPDATE contacts SET change_xid = pg_current_xact_id()::text::bigint
     WHERE company_id = NEW.company_id AND contact_id = NEW.contact_id;
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def _xid(table: str) -> list[str]:
    return [f"ALTER TABLE {table} ADD COLUMN change_xid bigint",
            f"UPDATE {table} SET change_xid = 0",
            f"CREATE TRIGGER {table}_xid BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
            "EXECUTE FUNCTION crm_set_change_xid()",
            f"CREATE INDEX {table}_changed ON {table} (company_id, change_xid)"]


def test_change_xid_mode_names_a_joined_table_no_change_column_covers(cli: Cli, crm_url: str) -> None:
    """A members view over contacts and their İYS permissions: a permission changed alone is found
    by no run unless the view's change_xid covers the permissions table too."""
    engine = db.create_engine(crm_url)
    _integrator_crm(engine)
    if engine.dialect.name != "postgresql":          # the mode is PostgreSQL's (pg_current_xact_id)
        _views(engine, cast=False)
        refused = _check(cli, crm_url, crm_change_xid="change_xid")
        assert refused.code == 2, refused.out
        _one(_lines(refused, "error"), "crm_change_xid needs a PostgreSQL CRM")
        engine.dispose()
        return
    _run(engine,
         "CREATE TABLE permissions (company_id integer NOT NULL, contact_id integer NOT NULL, iys_status text, "
         "iys_date timestamp, PRIMARY KEY (company_id, contact_id))",
         "INSERT INTO permissions SELECT company_id, contact_id, 'ONAY', modified FROM contacts",
         "CREATE INDEX contact_lists_contact ON contact_lists (company_id, contact_id)",
         "ANALYZE permissions", XID_TRIGGER, *_xid("contacts"), *_xid("contact_lists"))

    def members_view(change_xid: str) -> None:
        _run(engine, "DROP VIEW IF EXISTS crm_members",
             "CREATE VIEW crm_members AS SELECT c.company_id AS tenant_id, c.contact_id AS id, c.mail AS email, "
             "c.given_name AS first_name, c.family_name AS last_name, c.gsm AS phone, c.city, "
             "p.iys_status AS consent_status, p.iys_date AS consent_date, c.iys_source AS consent_source, "
             "c.kind AS recipient_type, c.modified AS updated_at, c.removed AS deleted_at, "
             f"{change_xid} AS change_xid FROM contacts c LEFT JOIN permissions p "
             "ON p.company_id = c.company_id AND p.contact_id = c.contact_id")

    _views(engine, cast=False)
    _run(engine, "DROP VIEW crm_list_members",
         "CREATE VIEW crm_list_members AS SELECT company_id AS tenant_id, list_id, contact_id AS member_id, "
         "modified AS updated_at, removed AS deleted_at, change_xid FROM contact_lists")
    members_view("c.change_xid")
    check = _check(cli, crm_url, crm_change_xid="change_xid")
    assert check.code == 1, check.out
    line = _one(_lines(check, "warning"), "warning: crm_members.change_xid: permissions is read by the view",
                "iys_status", "has no change column kept by a trigger", "found by no run, only by a backfill")
    assert "contacts" not in line.split(":")[2]
    assert len(_lines(check, "warning")) == 1, check.out
    assert "(tenant_id, updated_at)" not in check.out

    # the column, without the trigger: still named
    _run(engine, "ALTER TABLE permissions ADD COLUMN change_xid bigint")
    members_view("greatest(c.change_xid, p.change_xid)")
    untracked = _check(cli, crm_url, crm_change_xid="change_xid")
    _one(_lines(untracked, "warning"), "warning: crm_members.change_xid: permissions.change_xid is in the view's",
         "no trigger sets it")
    # the trigger: covered; reading greatest(...) scans the tenant once per run, which is a hint
    _run(engine, *_xid("permissions")[2:])
    covered = _check(cli, crm_url, crm_change_xid="change_xid")
    assert covered.code == 0 and _lines(covered, "warning") == [], covered.out
    hint = _one(_lines(covered, "hint"), "hint: crm_members.change_xid: is computed from several tables",
                "reads every row of the tenant, once per run")
    assert "greatest(c.change_xid, p.change_xid)" in hint.lower()

    # the faster recipe (docs/crm-check.md): a permission's trigger touches its contact's row, and
    # the view reads contacts' indexed column alone: covered, and nothing to say
    _run(engine, "DROP TRIGGER permissions_xid ON permissions", TOUCH_TRIGGER,
         "CREATE TRIGGER permissions_touch AFTER INSERT OR UPDATE OR DELETE ON permissions FOR EACH ROW "
         "EXECUTE FUNCTION crm_touch_contact()")
    members_view("c.change_xid")
    touched = _check(cli, crm_url, crm_change_xid="change_xid")
    assert touched.code == 0 and _lines(touched, "warning") == [] and _lines(touched, "hint") == [], touched.out
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE permissions SET iys_status = 'RET' WHERE company_id = 1 AND contact_id = 7")
    with engine.connect() as conn:
        touched_xid = conn.exec_driver_sql("SELECT change_xid FROM contacts WHERE company_id = 1 AND contact_id = 7")
        assert (touched_xid.scalar() or 0) > 0           # 0 before: the contact's own trigger moved it
    engine.dispose()


def test_on_sqlite_the_plan_check_says_in_one_line_where_it_runs(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    assert cli("crm", "init-reference", env={"CRM_ESP_SYNC_DATABASE_URL": url}).code == 0
    check = _check(cli, url)
    assert check.code == 0 and "the CRM contract holds" in check.out, check.out
    assert _lines(check, "note") == ["note: the plan check (EXPLAIN of the reads a run and a backfill make) runs "
                                     "on PostgreSQL and MariaDB only"]
