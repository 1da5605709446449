"""Issue 24: the bad-input catalogue, part two: kinds that need a database (CRM rows) or the real
command line (the CLI). Part one, the kinds that need no server (settings, provider answers, the
values each provider's document refuses), is tests/unit/test_bad_input_catalogue.py.

Every CRM case is a run against the Postacell sandbox, on SQLite, PostgreSQL and MariaDB: a first
sync, then the bad input in the CRM, then a run. Each ends in a reject with its reason (or the run
refuses in one line before it sends), and the provider still holds what it held for every member
the bad input did not touch. Every CLI case ends in one error line and a non-zero exit status, and
changes nothing in the daemon's database.

Kinds covered fully elsewhere, referenced and not repeated here:
- a CRM id longer than the daemon keeps (``crm-over-long-id``):
  tests/integration/providers/test_engine_regressions.py::test_15_over_long_values_are_rejects_and_the_rest_goes_on
- a broken CRM view in the middle of a run: test_engine_regressions.py::test_11_*
- Turkish dotted capital I in an address: test_engine_regressions.py::test_3_*
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync import db
from sync.config import CrmSource
from sync.crm import check_contract
from sync.crypto import generate_key
from sync.models import Reject, SyncRun
from tests.cli_runner import Result, one_error_line, run_cli
from tests.integration.providers.conftest import TENANT, World, make_world
from tests.integration.providers.harness import PostacellHarness, RemoteMember

#: Run outcomes of a run that did its work (the rows it rejected are in `rejects`).
COMPLETED = ("succeeded", "succeeded_with_rejects", "partial")


@dataclass
class Expect:
    """What a case expects of the run after its bad input."""

    #: CRM member id -> a part of the reason of its open reject.
    rejects: dict[str, str] = field(default_factory=dict)
    #: Addresses the bad input touched: they may change at the provider (all others may not).
    touched: set[str] = field(default_factory=set)
    #: Addresses that must not be active at the provider after the run.
    not_active: set[str] = field(default_factory=set)
    #: Addresses that must be active at the provider after the run.
    active: set[str] = field(default_factory=set)
    #: address -> the last name the provider must hold for it.
    remote_names: dict[str, str] = field(default_factory=dict)
    #: Ignored by the run, named by `crm check` (sync.crm.check_contract): a part of its line.
    checked: str | None = None


@dataclass
class Catalogue:
    world: World
    #: Members synced by the first run, active and in a list: the victims of the cases, in order.
    synced: list[str]

    def victim(self, index: int = 0) -> tuple[str, str]:
        member_id = self.synced[index]
        return member_id, str(self.world.member(member_id).email).lower()

    def add_member(self, member_id: str, email: str | None, **values: object) -> None:
        t = self.world.crm.members
        row = {"tenant_id": TENANT, "id": member_id, "email": email, "first_name": "Ayşe", "last_name": "Yılmaz",
               "consent_status": "ONAY", "updated_at": self.world.now(), **values}
        with self.world.engine.begin() as conn:
            conn.execute(t.insert().values(**row))
        self.world.join(member_id, self.world.lists_of(self.synced[0])[0])


def _widen(world: World, column: str) -> None:
    """A CRM whose name columns hold more than the reference schema's 255 characters (SQLite does
    not enforce a length)."""
    statement = {"postgresql": f"ALTER TABLE crm_members ALTER COLUMN {column} TYPE text",
                 "mysql": f"ALTER TABLE crm_members MODIFY {column} text",
                 "mariadb": f"ALTER TABLE crm_members MODIFY {column} text"}.get(world.engine.dialect.name)
    if statement:
        with world.engine.begin() as conn:
            conn.execute(sa.text(statement))


# --- the CRM cases -------------------------------------------------------------------------------


def duplicate_id(c: Catalogue) -> Expect:
    """A CRM view that shows one member id twice (a join gone wrong), with two addresses."""
    member_id, email = c.victim()
    engine = c.world.engine
    columns = ", ".join(col.name for col in c.world.crm.members.columns)
    twin = ", ".join("'twin.of.victim@ornek.com.tr'" if col.name == "email" else col.name
                     for col in c.world.crm.members.columns)
    with engine.begin() as conn:
        view = (f"CREATE VIEW crm_members_dup AS SELECT {columns} FROM crm_members UNION ALL "  # noqa: S608
                f"SELECT {twin} FROM crm_members WHERE id = '{member_id}'")    # (our own seed's id)
        conn.execute(sa.text(view))
    c.world.settings = dataclasses.replace(c.world.settings, crm=CrmSource(members="crm_members_dup"))
    c.world.update_member(member_id, first_name="Değişti")     # the duplicated id is due in this run
    return Expect(rejects={member_id: "the CRM members relation has 2 rows for this member id"}, touched={email},
                  not_active={"twin.of.victim@ornek.com.tr"})


def email_becomes_null(c: Catalogue) -> Expect:
    member_id, email = c.victim()
    c.world.update_member(member_id, email=None)
    return Expect(rejects={member_id: "e-mail"}, touched={email}, not_active={email})


def email_becomes_empty(c: Catalogue) -> Expect:
    member_id, email = c.victim()
    c.world.update_member(member_id, email="")
    return Expect(rejects={member_id: "e-mail"}, touched={email}, not_active={email})


def emoji_local_part(c: Catalogue) -> Expect:
    c.add_member("EMOJI-LOCAL", "ay\U0001f600se@ornek.com.tr")
    return Expect(rejects={"EMOJI-LOCAL": "non-ASCII characters in its local part"},
                  not_active={"ay\U0001f600se@ornek.com.tr"})


def emoji_domain(c: Catalogue) -> Expect:
    c.add_member("EMOJI-DOMAIN", "ayse@\U0001f600.com.tr")
    return Expect(rejects={"EMOJI-DOMAIN": "IDNA 2008 does not allow"}, not_active={"ayse@\U0001f600.com.tr"})


def email_without_at(c: Catalogue) -> Expect:
    c.add_member("NO-AT", "ayse.ornek.com.tr")
    return Expect(rejects={"NO-AT": "invalid e-mail address"})


def email_with_space(c: Catalogue) -> Expect:
    c.add_member("SPACE", "ay se@ornek.com.tr")
    return Expect(rejects={"SPACE": "invalid e-mail address"}, not_active={"ay se@ornek.com.tr"})


def email_with_two_ats(c: Catalogue) -> Expect:
    c.add_member("TWO-AT", "ay@se@ornek.com.tr")
    return Expect(rejects={"TWO-AT": "invalid e-mail address"}, not_active={"ay@se@ornek.com.tr"})


def email_control_character(c: Catalogue) -> Expect:
    c.add_member("BELL", "ayse\x07@ornek.com.tr")
    return Expect(rejects={"BELL": "outside RFC 5322's dot-atom in its local part ('\\x07'"},
                  not_active={"ayse\x07@ornek.com.tr"})


def email_idn_domain(c: Catalogue) -> Expect:
    c.add_member("IDN", "ayse@örnek.com.tr")
    return Expect(rejects={"IDN": "internationalised domain (IDN"}, not_active={"ayse@örnek.com.tr"})


def email_local_part_too_long(c: Catalogue) -> Expect:
    address = "a" * 65 + "@ornek.com.tr"
    c.add_member("LONG-LOCAL", address)
    return Expect(rejects={"LONG-LOCAL": "local part of 65 octets"}, not_active={address})


def email_becomes_invalid(c: Catalogue) -> Expect:
    """A synced member's address is overwritten with garbage: the old address leaves the provider."""
    member_id, email = c.victim()
    c.world.update_member(member_id, email="bozuk-adres")
    return Expect(rejects={member_id: "invalid e-mail address"}, touched={email}, not_active={email})


def email_of_another_member(c: Catalogue) -> Expect:
    """A new CRM member with the address of a synced one: the provider keeps one contact per address."""
    _, email = c.victim()
    c.add_member("SAME-EMAIL", email.upper())
    return Expect(rejects={"SAME-EMAIL": "e-mail also belongs to CRM member"})


def email_padded(c: Catalogue) -> Expect:
    """Blanks around an address and capitals are not bad: the address is pushed trimmed and folded."""
    c.add_member("PADDED", "  Yeni.Uye@Ornek.com.tr ")
    return Expect(active={"yeni.uye@ornek.com.tr"})


def long_first_name(c: Catalogue) -> Expect:
    """Postacell's document gives no length for a name: the client's bound (255, said in the reason)
    applies; the other providers' documents, each with its own limit, are in the unit catalogue."""
    _widen(c.world, "first_name")
    member_id, email = c.victim()
    c.world.update_member(member_id, first_name="Ç" * 10_000)
    return Expect(rejects={member_id: "first_name is 10000 characters long; Postacell takes at most 255 (our bound: "
                                      "the document gives no length)"}, touched={email})


def long_last_name(c: Catalogue) -> Expect:
    _widen(c.world, "last_name")
    member_id, email = c.victim(1)
    c.world.update_member(member_id, last_name="Ğ" * 10_000)
    return Expect(rejects={member_id: "last_name is 10000 characters long; Postacell takes at most 255"},
                  touched={email})


def quotes_in_name(c: Catalogue) -> Expect:
    """Quotes and SQL in a name are data: pushed as they are, and the CRM tables are still there."""
    member_id, email = c.victim()
    c.world.update_member(member_id, last_name="O'Brien\"; DROP TABLE crm_members; --")
    return Expect(touched={email}, active={email}, remote_names={email: "O'Brien\"; DROP TABLE crm_members; --"})


def quotes_in_member_id(c: Catalogue) -> Expect:
    c.add_member("M'1; DROP TABLE crm_members; --", "tirnak@ornek.com.tr")
    return Expect(active={"tirnak@ornek.com.tr"})


def refusal_with_blanks(c: Catalogue) -> Expect:
    """A CRM that pads its consent column (CHAR(4), or a hand-typed ' ret'): still a refusal."""
    member_id, email = c.victim()
    c.world.update_member(member_id, consent_status=" ret")
    c.add_member("PADDED-RET", "ret.bosluklu@ornek.com.tr", consent_status="RET ")
    return Expect(touched={email}, not_active={email, "ret.bosluklu@ornek.com.tr"})


def unknown_consent(c: Catalogue) -> Expect:
    """A consent the contract does not know (EVET, a "1" from a checkbox): neither pushed active (it
    may be a refusal) nor read as RET (it may be a consent). A synced member keeps what it has at the
    provider (a name changed with it is not pushed), a new one is not created; both are rejects."""
    member_id, email = c.victim()
    c.world.update_member(member_id, consent_status="EVET", last_name="Evet")
    c.add_member("CONSENT-ONE", "onay.bir@ornek.com.tr", consent_status="1")
    reason = "is neither ONAY nor RET"
    return Expect(rejects={member_id: f"consent_status 'EVET' {reason}", "CONSENT-ONE": f"'1' {reason}"},
                  active={email}, not_active={"onay.bir@ornek.com.tr"}, checked="neither ONAY nor RET nor NULL")


def membership_of_unknown_list(c: Catalogue) -> Expect:
    """A membership row of a list the CRM does not have: ignored (`crm check` names it)."""
    member_id, email = c.victim()
    t = c.world.crm.memberships
    with c.world.engine.begin() as conn:
        conn.execute(t.insert().values(tenant_id=TENANT, member_id=member_id, list_id="NO-SUCH-LIST",
                                       updated_at=c.world.now()))
    return Expect(active={email}, checked="point at lists that do not exist")


def membership_of_unknown_member(c: Catalogue) -> Expect:
    member_id, _ = c.victim()
    t = c.world.crm.memberships
    with c.world.engine.begin() as conn:
        conn.execute(t.insert().values(tenant_id=TENANT, member_id="NO-SUCH-MEMBER",
                                       list_id=c.world.lists_of(member_id)[0], updated_at=c.world.now()))
    return Expect(checked="point at members that do not exist")


def empty_list_name(c: Catalogue) -> Expect:
    member_id, email = c.victim()
    c.world.add_list("EMPTY", "")
    c.world.join(member_id, "EMPTY")
    return Expect(rejects={"": "the list has an empty name", member_id: "waits for list EMPTY"}, touched={email})


CRM_CASES: dict[str, Callable[[Catalogue], Expect]] = {
    "crm-duplicate-id": duplicate_id,
    "crm-email-becomes-null": email_becomes_null,
    "crm-email-becomes-empty": email_becomes_empty,
    "crm-email-becomes-invalid": email_becomes_invalid,
    "crm-email-without-at": email_without_at,
    "crm-email-with-space": email_with_space,
    "crm-email-with-two-ats": email_with_two_ats,
    "crm-email-control-character": email_control_character,
    "crm-email-emoji-local-part": emoji_local_part,
    "crm-email-emoji-domain": emoji_domain,
    "crm-email-idn-domain": email_idn_domain,
    "crm-email-local-part-too-long": email_local_part_too_long,
    "crm-email-of-another-member": email_of_another_member,
    "crm-email-padded": email_padded,
    "crm-10000-char-first-name": long_first_name,
    "crm-10000-char-last-name": long_last_name,
    "crm-quotes-in-name": quotes_in_name,
    "crm-quotes-in-member-id": quotes_in_member_id,
    "crm-refusal-with-blanks": refusal_with_blanks,
    "crm-unknown-consent": unknown_consent,
    "crm-membership-of-unknown-list": membership_of_unknown_list,
    "crm-membership-of-unknown-member": membership_of_unknown_member,
    "crm-empty-list-name": empty_list_name,
}


def open_rejects(world: World) -> dict[str, str]:
    with world.engine.connect() as conn:
        return {row.crm_member_id: row.reason for row in conn.execute(
            sa.select(Reject.crm_member_id, Reject.reason).where(Reject.resolved_at.is_(None)))}


@pytest.fixture
def catalogue(engine: sa.Engine) -> Iterator[Catalogue]:
    harness = PostacellHarness()
    harness.start()
    world = make_world(engine, harness, members=30)
    first = world.run()
    assert first.status in COMPLETED, first.error
    active = world.harness.members()
    victims = sorted(str(row.id) for email, row in world.valid_active_members().items()
                     if email in active and active[email].status == "active")
    assert len(victims) >= 3
    yield Catalogue(world, victims)


#: Cases whose outcome depends on the database (a view's UNION ALL, NULL, four-byte UTF-8 on
#: MariaDB, text columns, quotes in SQL, CHAR padding, the orphan check's SQL): on every backend.
#: The others are a matter of the engine and the provider's rules: on SQLite (tests/README.md, "The matrix").
EVERY_DATABASE = ("crm-duplicate-id", "crm-email-becomes-null", "crm-email-emoji-local-part", "crm-email-emoji-domain",
                  "crm-10000-char-first-name", "crm-quotes-in-name", "crm-quotes-in-member-id",
                  "crm-refusal-with-blanks", "crm-unknown-consent", "crm-membership-of-unknown-list")
SQLITE_ONLY = [case for case in CRM_CASES if case not in EVERY_DATABASE]


@pytest.mark.parametrize("case", EVERY_DATABASE)
def test_crm_bad_input_on_every_database(catalogue: Catalogue, case: str) -> None:
    check_crm_case(catalogue, case)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", SQLITE_ONLY)
def test_crm_bad_input(catalogue: Catalogue, case: str) -> None:
    check_crm_case(catalogue, case)


def check_crm_case(catalogue: Catalogue, case: str) -> None:
    world = catalogue.world
    before: dict[str, RemoteMember] = world.harness.members()
    expect = CRM_CASES[case](catalogue)
    result = world.run()
    assert result.status in COMPLETED, result.error
    rejects = open_rejects(world)
    for member_id, reason in expect.rejects.items():
        assert member_id in rejects, (member_id, rejects)
        assert reason in rejects[member_id], rejects[member_id]
        assert "\n" not in rejects[member_id]
    after = world.harness.members()
    for email in expect.not_active:
        assert email not in after or after[email].status != "active", after.get(email)
    for email in expect.active:
        assert email in after and after[email].status == "active", after.get(email)
    for email, name in expect.remote_names.items():
        held = world.harness.sandbox.find_subscriber(world.harness.credentials["username"], email)
        assert held is not None and held["last_name"] == name, held
    if expect.checked is not None:
        problems = [p.message for p in check_contract(world.engine, CrmSource(), TENANT)]
        assert any(expect.checked in text for text in problems), problems
    # Nothing already synced is lost or corrupted: every member the bad input did not touch is held
    # at the provider exactly as before, and the CRM tables are all still there.
    for email, held in before.items():
        if email not in expect.touched:
            assert after.get(email) == held, (email, held, after.get(email))
    assert {"crm_members", "crm_lists", "crm_list_members"} <= set(sa.inspect(world.engine).get_table_names())
    # ... and a second run finds nothing more to write: the bad input is not sent again and again.
    world.harness.reset_log()
    again = world.run()
    assert again.status in COMPLETED, again.error
    assert world.harness.write_requests() == 0, world.harness.sandbox.request_log


# --- the command line ----------------------------------------------------------------------------

CREDENTIALS = json.dumps({"username": "acme-api", "password": "Pc-s3cr3t-cli-4242"})


@dataclass(frozen=True)
class CliCase:
    args: tuple[str, ...]
    says: str                               # a part of the one error line
    stdin: str = ""
    env: dict[str, str] = field(default_factory=dict)   # settings changed for this command
    code: int | None = None                 # the exit status, when the case pins it
    #: The command runs and its run fails: the run is recorded (a sync_runs row), the rest is unchanged.
    failed_run: bool = False


CLI_CASES: dict[str, CliCase] = {
    "cli-unknown-command": CliCase(("frobnicate",), "No such command 'frobnicate'", code=2),
    "cli-unknown-option": CliCase(("once", "--tenat", "acme"), "No such option '--tenat'. Did you mean '--tenant'?",
                                  code=2),
    "cli-missing-argument": CliCase(("tenant", "add"), "Missing argument 'SLUG'", code=2),
    "cli-unknown-provider": CliCase(("connection", "add", "acme", "mailchump", "--credentials", "-"),
                                    "'mailchump' is not one of", code=2),
    "cli-unknown-tenant": CliCase(("once", "--tenant", "nobody"), "nobody"),
    "cli-unknown-connection": CliCase(("connection", "set", "acme", "wapcrm", "--disable"), "wapcrm"),
    "cli-tenant-twice": CliCase(("tenant", "add", "acme"), "acme"),
    "cli-connection-twice": CliCase(("connection", "add", "acme", "postacell", "--credentials", "-"), "postacell",
                                    stdin=CREDENTIALS),
    "cli-credentials-not-json": CliCase(("connection", "add", "acme", "euromsg", "--credentials", "-"), "JSON",
                                        stdin="username=acme password=Pc-s3cr3t-cli-4242"),
    "cli-credentials-missing-field": CliCase(("connection", "add", "acme", "euromsg", "--credentials", "-"),
                                             "euromsg credentials: missing or empty field(s) api_key",
                                             stdin=json.dumps({"username": "acme-api"})),
    "cli-base-url-not-http": CliCase(("connection", "add", "acme", "euromsg", "--credentials", "-", "--base-url",
                                      "ftp://api.example.com/"), "base_url must be an http(s) URL",
                                     stdin=json.dumps({"api_key": "Pc-s3cr3t-cli-4242"})),
    "cli-base-url-without-host": CliCase(("connection", "add", "acme", "euromsg", "--credentials", "-", "--base-url",
                                          "https://"), "base_url has no host", stdin=json.dumps({"api_key": "k-1"})),
    "cli-base-url-with-password": CliCase(("connection", "set", "acme", "postacell", "--base-url",
                                           "https://acme-api:Pc-s3cr3t-cli-4242@api.example.com/v1/"),
                                          "base_url must not carry a user name or password"),
    "cli-bad-schedule": CliCase(("connection", "set", "acme", "postacell", "--schedule", "every night"),
                                "every night"),
    "cli-unknown-connection-setting": CliCase(("connection", "set", "acme", "postacell", "--setting", "speed=11"),
                                              "speed"),
    "cli-setting-without-value": CliCase(("connection", "set", "acme", "postacell", "--setting", "rate_per_s"),
                                         "--setting must look like key=value: 'rate_per_s'"),
    "cli-unknown-reject-id": CliCase(("rejects", "show", "424242"), "424242"),
    "cli-no-master-key": CliCase(("connection", "add", "acme", "euromsg", "--credentials", "-"), "no master key",
                                 stdin=json.dumps({"api_key": "Pc-s3cr3t-cli-4242"}),
                                 env={"CRM_ESP_SYNC_MASTER_KEY": ""}),
    "cli-wrong-master-key": CliCase(("once",), "the master key does not decrypt the stored credentials (wrong "
                                    "CRM_ESP_SYNC_MASTER_KEY?)", env={"CRM_ESP_SYNC_MASTER_KEY": "<another key>"},
                                    failed_run=True),
    "cli-malformed-master-key": CliCase(("connection", "list"), "master key #1 is not a Fernet key",
                                        env={"CRM_ESP_SYNC_MASTER_KEY": "Pc-s3cr3t-cli-4242"}),
    "cli-database-not-migrated": CliCase(("tenant", "list"), "db upgrade",
                                         env={"CRM_ESP_SYNC_DATABASE_URL": "<an empty database>"}),
    "cli-bad-setting-in-environment": CliCase(("tenant", "list"), "unknown setting: wokers",
                                              env={"CRM_ESP_SYNC_WOKERS": "4"}),
}


def dump_database(engine: sa.Engine) -> list[tuple[object, ...]]:
    from sync.models import Base

    with engine.connect() as conn:
        return [tuple(row) for table in Base.metadata.sorted_tables for row in conn.execute(sa.select(table))]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(case: str, daemon_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """One error line, a non-zero exit status, no traceback, no secret echoed, nothing changed."""
    spec = CLI_CASES[case]

    def cli(*args: str, stdin: str = "", **env: str) -> Result:
        return run_cli(monkeypatch, capsys, {**daemon_env, **env}, *args, stdin=stdin)

    assert cli("crm", "init-reference").code == 0
    assert cli("tenant", "add", "acme").code == 0
    assert cli("connection", "add", "acme", "postacell", "--credentials", "-", "--base-url",
               "http://postacell.sandbox/api/v1/", stdin=CREDENTIALS).code == 0
    engine = db.create_engine(daemon_env["CRM_ESP_SYNC_DATABASE_URL"])
    before = dump_database(engine)
    env = dict(spec.env)
    if env.get("CRM_ESP_SYNC_MASTER_KEY") == "<another key>":
        env["CRM_ESP_SYNC_MASTER_KEY"] = generate_key()
    if env.get("CRM_ESP_SYNC_DATABASE_URL") == "<an empty database>":
        env["CRM_ESP_SYNC_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli(*spec.args, stdin=spec.stdin, **env)
    if spec.failed_run:
        assert result.code != 0 and "Traceback" not in result.out + result.err
        with engine.connect() as conn:
            runs = conn.execute(sa.select(SyncRun.status, SyncRun.error)).all()
        assert [(status, error) for status, error in runs] == [("failed", spec.says)]
    else:
        line = one_error_line(result)
        assert spec.says in line, result
    if spec.code is not None:
        assert result.code == spec.code, result
    assert "Pc-s3cr3t-cli-4242" not in result.out + result.err
    assert [row for row in dump_database(engine) if row not in before] == [] or spec.failed_run
    assert [row for row in before if row not in dump_database(engine)] == []
    engine.dispose()
