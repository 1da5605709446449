"""Euromsg client against the in-process sandbox: tokens and API keys, the error table, İYS
validation, never re-subscribing, the sending package, pulls and reports."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from sync.errors import AuthenticationError, ConfigurationError, FatalError, ProviderError, RejectedRow, RetriableError
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import (
    MemberDelete,
    MemberKey,
    MemberSnapshot,
    MemberUpsert,
    ReportContext,
    check_provider,
    provider_class,
)
from sync.providers.euromsg import api
from sync.providers.euromsg.client import EuromsgAuth, EuromsgProvider, check, iys_fields
from sync.providers.euromsg.sandbox import EuromsgSandbox
from sync.sandbox import sandbox_transport

BASE = "http://sandbox/"
INTEGRATOR = {"client_name": "crm-firma", "password": "entegrator-sifre-9"}
ACME, GLOBEX = "acme-key-000001", "globex-key-000002"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01)
NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
T = TypeVar("T")


def mail(local: str, domain: str = "example.com.tr") -> str:
    return "@".join((local, domain))


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


def sandbox(**options: Any) -> EuromsgSandbox:
    return EuromsgSandbox({INTEGRATOR["client_name"]: INTEGRATOR["password"]}, {ACME: "Acme", GLOBEX: "Globex"},
                          **options)


def provider(client: httpx.AsyncClient, api_key: str = ACME, *, iys: bool = False,
             integrator: dict[str, str] | None = INTEGRATOR) -> EuromsgProvider:
    def factory(caps: Any, auth: Any) -> ProviderHTTP:
        return ProviderHTTP(client, provider="euromsg", base_url=BASE, policy=FAST, auth=auth)
    made = EuromsgProvider.create(factory, {"api_key": api_key}, {"iys": iys}, integrator)
    return made


def run(sb: EuromsgSandbox, scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(transport=sandbox_transport(sb.app)) as client:
            return await scenario(client)
    return asyncio.run(main())


def snapshot(email: str, status: str = "active", **values: Any) -> MemberSnapshot:
    base: dict[str, Any] = {"first_name": "Ayşe", "last_name": "Çetin", "phone": None, "city": "İzmir",
                            "consent_status": "ONAY", "consent_date": dt.datetime(2024, 3, 1, 7, 0, tzinfo=dt.UTC),
                            "consent_source": "HS_WEB", "recipient_type": "BIREYSEL"}
    return MemberSnapshot(email=email, status=status, **{**base, **values})  # type: ignore[arg-type]


def upsert(p: EuromsgProvider, email: str, lists: tuple[str, ...], *, remote_id: str | None = None,
           previous: tuple[str, ...] = (), status: str = "active", resubscribe: bool = False,
           member_id: str = "M1") -> MemberUpsert:
    return MemberUpsert(MemberKey(member_id), email, p.build_payload(snapshot(email, status)), lists, previous,
                        remote_id, resubscribe=resubscribe)


def calls(sb: EuromsgSandbox, *paths: str) -> list[str]:
    return [f"{method} {path.strip('/')}" for method, path, _ in sb.request_log
            if not paths or path.strip("/").split("/")[0] in paths]


# --- tokens and API keys ---------------------------------------------------------------------


def test_euromsg_is_implemented_and_declares_what_it_implements() -> None:
    made = provider_class("euromsg").create(lambda caps, auth: None, {"api_key": "k" * 8}, {"iys": True})
    assert check_provider(made) is made
    assert made.capabilities.pulls_consents and made.capabilities.status_pull == "full_scan"
    assert made.capabilities.membership_model == "contact" and not made.capabilities.async_bulk_import


def test_token_is_renewed_before_expire_time_and_every_new_token_is_identified() -> None:
    clock = Clock()
    sb = sandbox(clock=clock)

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = EuromsgAuth(INTEGRATOR, ACME, clock=clock)
        http = ProviderHTTP(client, provider="euromsg", base_url=BASE, policy=FAST, auth=auth)
        p = EuromsgProvider(http)
        await p.all_lists()
        clock.now += api.TOKEN_LIFETIME_S - api.TOKEN_REFRESH_MARGIN_S + 1
        await p.all_lists()                       # renewed BEFORE the token expired

    run(sb, scenario)
    assert calls(sb, "tokens", "apiKey") == ["POST tokens", "PUT apiKey/identification"] * 2
    assert not any(status == 401 for _, _, status in sb.request_log)


def test_a_401_logs_in_and_identifies_again_once() -> None:
    sb = sandbox()

    async def scenario(client: httpx.AsyncClient) -> None:
        p = provider(client)
        await p.all_lists()
        sb.expire_tokens()
        await p.all_lists()

    run(sb, scenario)
    assert calls(sb, "tokens", "apiKey", "emailList") == [
        "POST tokens", "PUT apiKey/identification", "GET emailList", "GET emailList",
        "POST tokens", "PUT apiKey/identification", "GET emailList"]


def test_two_tenants_on_one_sandbox_never_see_each_others_data() -> None:
    """Each connection has its own token identified with its own key, on one shared httpx client."""
    sb = sandbox()
    panel = sb.create_list(GLOBEX, "Globex panel listesi")

    async def scenario(client: httpx.AsyncClient) -> tuple[list[str], list[str]]:
        acme, globex = provider(client, ACME), provider(client, GLOBEX)
        made = await acme.create_list("Acme listesi")
        await asyncio.gather(acme.upsert_members([upsert(acme, mail("ayse"), (made.remote_id,))]),
                             globex.all_lists())
        acme_lists = [x.name for x in await acme.all_lists()]
        globex_lists = [x.name for x in await globex.all_lists()]
        with pytest.raises(ProviderError):       # Acme's list id means nothing with Globex's key
            await globex.rename_list(made.remote_id, "ele geçirildi")
        return acme_lists, globex_lists

    acme_lists, globex_lists = run(sb, scenario)
    assert acme_lists == ["Acme listesi"] and globex_lists == ["Globex panel listesi"]
    assert sb.lists(GLOBEX) == {panel: "Globex panel listesi"}
    assert [m["email"] for m in sb.members(ACME)] == [mail("ayse")] and sb.members(GLOBEX) == []
    identified = [path for method, path, _ in sb.request_log if method == "PUT"]
    assert len(identified) == 2


def test_wrong_integrator_password_or_api_key_is_an_authentication_error_without_the_secret() -> None:
    sb = sandbox()
    bad_password = {**INTEGRATOR, "password": "yanlis-sifre-77"}

    async def login(client: httpx.AsyncClient) -> None:
        await provider(client, integrator=bad_password).all_lists()

    async def identify(client: httpx.AsyncClient) -> None:
        await provider(client, "bilinmeyen-anahtar-55").all_lists()

    with capture_logs() as logs:
        with pytest.raises(AuthenticationError, match="client_name/password") as wrong_login:
            run(sb, login)
        with pytest.raises(AuthenticationError, match="API key was refused") as wrong_key:
            run(sb, identify)
    assert "yanlis-sifre-77" not in str(wrong_login.value)
    assert "bilinmeyen-anahtar-55" not in str(wrong_key.value)
    assert "bilinmeyen-anahtar-55" not in repr(logs) and "yanlis-sifre-77" not in repr(logs)


def test_missing_integrator_credentials_fail_at_the_first_call_with_the_command_to_fix_it() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await provider(client, integrator=None).all_lists()

    with pytest.raises(ConfigurationError, match="integrator set euromsg"):
        run(sandbox(), scenario)


# --- the error table ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "error"), [
    (200, api.ERROR_VALIDATION, RejectedRow), (200, api.ERROR_IYS_VALIDATION, RejectedRow),
    (200, api.ERROR_MEMBER_EXISTS, RejectedRow), (200, api.ERROR_NO_PACKAGE, FatalError),
    (200, api.ERROR_INTERNAL, RetriableError), (200, "SOMETHING_NEW", RejectedRow),
    (404, api.ERROR_MEMBER_NOT_FOUND, ProviderError), (403, api.ERROR_INVALID_API_KEY, AuthenticationError),
    (403, api.ERROR_NOT_IDENTIFIED, AuthenticationError), (409, api.ERROR_ALREADY_IDENTIFIED, FatalError),
    (400, None, RejectedRow), (404, None, ProviderError), (413, None, FatalError), (502, None, RetriableError),
])
def test_error_table_maps_codes_inside_200_and_statuses(status: int, code: str | None, error: type[Exception]) -> None:
    response = httpx.Response(status, json={"isSuccess": False, "errorCode": code, "message": "olmadı", "data": None},
                              request=httpx.Request("POST", BASE + api.MEMBER_PATH))
    with pytest.raises(error) as caught:
        check(response, "add member")
    assert type(caught.value) is error
    if code:
        assert caught.value.provider_code == code    # type: ignore[attr-defined]


def test_a_200_that_is_not_the_envelope_is_malformed_not_a_success() -> None:
    response = httpx.Response(200, text="<html>maintenance</html>", headers={"Content-Type": "text/html"},
                              request=httpx.Request("GET", BASE + api.EMAIL_LIST_PATH))
    with pytest.raises(RetriableError, match="HTML"):
        check(response, "list index")


# --- İYS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "reason"), [
    ({"recipient_type": None}, "recipient type is missing"),
    ({"recipient_type": "ŞİRKET"}, "neither BIREYSEL nor TACIR"),
    ({"consent_status": None}, "consent status is missing"),
    ({"consent_status": "EVET"}, "neither ONAY nor RET"),
    ({"consent_date": None}, "consent date is missing"),
    ({"consent_date": dt.datetime(2015, 4, 30, 20, 59, 59, tzinfo=dt.UTC)}, "before 2015-05-01"),
    ({"consent_date": NOW + dt.timedelta(minutes=5)}, "in the future"),
    ({"consent_source": None}, "consent source is missing"),
    ({"consent_source": "HS_FAKS"}, "not an İYS source"),
    ({"consent_source": "HS_2015"}, "HS_2015 needs the date 2015-05-01 00:00:00"),
])
def test_invalid_iys_rows_are_rejected_with_a_clear_reason(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedRow, match=reason) as caught:
        iys_fields(snapshot(mail("x"), **values), NOW)
    assert caught.value.reason.startswith("İYS: ")


def test_valid_iys_rows_carry_turkey_time_and_tacir_needs_no_date_or_source() -> None:
    fields = iys_fields(snapshot(mail("x")), NOW)
    assert fields == {api.IYS_RECIPIENT_TYPE: "BIREYSEL", api.IYS_STATUS: "ONAY",
                      api.IYS_DATE: "2024-03-01 10:00:00", api.IYS_SOURCE: "HS_WEB"}   # 07:00 UTC = 10:00 GMT+3
    hs_2015 = iys_fields(snapshot(mail("x"), consent_source="HS_2015",
                                  consent_date=dt.datetime(2015, 4, 30, 21, 0, tzinfo=dt.UTC)), NOW)
    assert hs_2015[api.IYS_DATE] == "2015-05-01 00:00:00"
    tacir = iys_fields(snapshot(mail("x"), recipient_type="TACIR", consent_status="RET", consent_date=None,
                                consent_source=None), NOW)
    assert tacir == {api.IYS_RECIPIENT_TYPE: "TACIR", api.IYS_STATUS: "RET"}


def test_iys_fields_are_pushed_only_when_the_connection_says_so_and_the_sandbox_accepts_them() -> None:
    sb = EuromsgSandbox({INTEGRATOR["client_name"]: INTEGRATOR["password"]}, {ACME: "Acme"}, iys_accounts=[ACME])
    list_id = sb.create_list(ACME, "İYS listesi")

    async def scenario(client: httpx.AsyncClient) -> list[Any]:
        plain, with_iys = provider(client), provider(client, iys=True)
        assert not set(api.IYS_FIELDS) & set(plain.build_payload(snapshot(mail("a"))))
        return [*await plain.upsert_members([upsert(plain, mail("a"), (list_id,))]),
                *await with_iys.upsert_members([upsert(with_iys, mail("b"), (list_id,), member_id="M2")])]

    without, with_fields = run(sb, scenario)
    assert without.rejected is not None and "İYS" in without.rejected.reason   # the İYS account requires them
    assert with_fields.rejected is None
    member = sb.find_member(ACME, mail("b"))
    assert member is not None and member[api.IYS_SOURCE] == "HS_WEB"


# --- never re-subscribe ----------------------------------------------------------------------------


def test_a_create_never_touches_a_contact_that_unsubscribed_in_the_panel() -> None:
    sb = sandbox()
    ours, panel = sb.create_list(ACME, "Bizim"), sb.create_list(ACME, "Panel")

    async def seed(client: httpx.AsyncClient) -> None:
        p = provider(client)
        await p.upsert_members([upsert(p, mail("ayse"), (panel,))])

    run(sb, seed)
    sb.set_status(ACME, mail("ayse"), "Unsubscribed")
    sb.reset_log()

    async def scenario(client: httpx.AsyncClient) -> Any:
        p = provider(client)
        return (await p.upsert_members([upsert(p, mail("ayse"), (ours,))]))[0]

    outcome = run(sb, scenario)
    assert outcome.suppressed is not None and outcome.suppressed.status == "unsubscribed"
    assert outcome.remote_id is not None and outcome.rejected is None
    member = sb.find_member(ACME, mail("ayse"))
    assert member is not None and (member["status"], member["emailListIds"]) == ("Unsubscribed", [int(panel)])
    assert [c for c in calls(sb, "member") if not c.startswith("GET")] == ["POST member"]   # refused, untouched


def test_an_update_reads_the_card_first_and_keeps_unsubscribes_and_soft_bounces() -> None:
    sb = sandbox()
    a, b = sb.create_list(ACME, "A"), sb.create_list(ACME, "B")

    async def scenario(client: httpx.AsyncClient) -> list[Any]:
        p = provider(client)
        first = await p.upsert_members([upsert(p, mail("u"), (a,)), upsert(p, mail("s"), (a,), member_id="M2")])
        ids = [o.remote_id for o in first]
        sb.set_status(ACME, mail("u"), "Unsubscribed")      # during the run, after any status pull
        sb.set_status(ACME, mail("s"), "SoftBounced")
        return await p.upsert_members([upsert(p, mail("u"), (a, b), remote_id=ids[0], previous=(a,)),
                                       upsert(p, mail("s"), (b,), remote_id=ids[1], previous=(a,), member_id="M2")])

    unsubscribed, bounced = run(sb, scenario)
    assert unsubscribed.suppressed is not None and bounced.suppressed is None
    u, s = sb.find_member(ACME, mail("u")), sb.find_member(ACME, mail("s"))
    assert u is not None and (u["status"], u["emailListIds"]) == ("Unsubscribed", [int(a)])     # nothing written
    assert s is not None and (s["status"], s["emailListIds"]) == ("SoftBounced", [int(b)])      # list moved


def test_resubscribe_and_our_own_unsubscribe_push_are_written() -> None:
    sb = sandbox()
    a = sb.create_list(ACME, "A")

    async def scenario(client: httpx.AsyncClient) -> None:
        p = provider(client)
        made = (await p.upsert_members([upsert(p, mail("r"), (a,))]))[0]
        out = await p.upsert_members([upsert(p, mail("r"), (a,), remote_id=made.remote_id, status="unsubscribed")])
        assert out[0].suppressed is None
        member = sb.find_member(ACME, mail("r"))
        assert member is not None and member["status"] == "Unsubscribed"
        back = await p.upsert_members([upsert(p, mail("r"), (a,), remote_id=made.remote_id, resubscribe=True)])
        assert back[0].suppressed is None

    run(sb, scenario)
    member = sb.find_member(ACME, mail("r"))
    assert member is not None and member["status"] == "Active"


def test_a_panel_list_of_the_member_stays_when_our_lists_change() -> None:
    sb = sandbox()
    ours, other = sb.create_list(ACME, "A"), sb.create_list(ACME, "B")

    async def scenario(client: httpx.AsyncClient) -> None:
        p = provider(client)
        made = (await p.upsert_members([upsert(p, mail("m"), (ours, other))]))[0]
        card = sb.find_member(ACME, mail("m"))
        assert card is not None and card["emailListIds"] == sorted([int(ours), int(other)])
        panel = sb.create_list(ACME, "Panel")                # the tenant adds the member in the panel
        await client.patch(BASE + api.MEMBER_ITEM_PATH.format(id=made.remote_id),
                           json={"emailListIds": [*card["emailListIds"], int(panel)]},
                           headers=await p.http._auth.headers(p.http))  # type: ignore[union-attr]
        await p.upsert_members([upsert(p, mail("m"), (other,), remote_id=made.remote_id, previous=(ours, other))])
        card = sb.find_member(ACME, mail("m"))
        assert card is not None and card["emailListIds"] == sorted([int(other), int(panel)])

    run(sb, scenario)


# --- sending package, deletes, list answers lost ----------------------------------------------------


def test_an_account_without_a_sending_package_fails_the_run_once_not_each_member() -> None:
    sb = sandbox()
    a = sb.create_list(ACME, "A")
    sb.set_package(ACME, False)

    async def scenario(client: httpx.AsyncClient) -> None:
        p = provider(client)
        batch = [upsert(p, mail(f"p{n}"), (a,), member_id=f"M{n}") for n in range(12)]
        with pytest.raises(FatalError, match="no active sending package") as caught:
            await p.upsert_members(batch)
        assert caught.value.provider_code == api.ERROR_NO_PACKAGE
        sb.set_package(ACME, True)                       # renewed: the next run resumes by itself
        fresh = provider(client)
        assert all(o.rejected is None for o in await fresh.upsert_members(batch))

    run(sb, scenario)
    assert sum(1 for c in calls(sb, "member") if c == "POST member") <= 12 + 4


def test_a_kvkk_delete_removes_the_card_by_id_or_by_email_and_is_recorded() -> None:
    sb = sandbox()
    a = sb.create_list(ACME, "A")

    async def scenario(client: httpx.AsyncClient) -> list[Any]:
        p = provider(client)
        made = await p.upsert_members([upsert(p, mail("d1"), (a,)), upsert(p, mail("d2"), (a,), member_id="M2")])
        return await p.delete_members([
            MemberDelete(MemberKey("M1"), mail("d1"), made[0].remote_id, reason="deleted in the CRM"),
            MemberDelete(MemberKey("M2"), mail("d2"), None, reason="deleted in the CRM"),     # provisional link
            MemberDelete(MemberKey("M3"), mail("never"), "999999", reason="deleted in the CRM")])

    outcomes = run(sb, scenario)
    assert all(o.rejected is None and o.action == "deleted" for o in outcomes)
    assert sb.members(ACME) == []
    assert sorted(email for email, _ in sb.deleted_members(ACME)) == [mail("d1"), mail("d2")]


def test_a_list_create_whose_answer_was_lost_is_found_not_made_twice() -> None:
    sb = sandbox()
    sb.create_list(ACME, "Aynı ad")          # an older list of the same name is someone else's
    inner = sandbox_transport(sb.app)
    dropped: list[str] = []

    class LoseFirstCreateAnswer(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            if request.method == "POST" and request.url.path == "/" + api.EMAIL_LIST_PATH and not dropped:
                dropped.append(request.url.path)
                raise httpx.RemoteProtocolError("lost", request=request)
            return response

    async def main() -> Any:
        async with httpx.AsyncClient(transport=LoseFirstCreateAnswer()) as client:
            return await provider(client).create_list("Aynı ad")

    made = asyncio.run(main())
    assert dropped and sorted(sb.lists(ACME).values()) == ["Aynı ad", "Aynı ad"]
    assert made.remote_id in sb.lists(ACME) and made.remote_id != min(sb.lists(ACME), key=int)


# --- pulls -----------------------------------------------------------------------------------------


def test_status_and_consent_pulls_read_every_list_once_with_stable_dates() -> None:
    clock = Clock()
    sb = EuromsgSandbox({INTEGRATOR["client_name"]: INTEGRATOR["password"]}, {ACME: "Acme"}, iys_accounts=[ACME],
                        clock=clock)
    a, b = sb.create_list(ACME, "A"), sb.create_list(ACME, "B")

    async def scenario(client: httpx.AsyncClient) -> tuple[Any, Any, Any]:
        p = provider(client, iys=True)
        p._now = lambda: dt.datetime.fromtimestamp(clock.now, dt.UTC)
        await p.upsert_members([upsert(p, mail("u"), (a, b)), upsert(p, mail("h"), (a,), member_id="M2"),
                                upsert(p, mail("ok"), (b,), member_id="M3")])
        sb.set_status(ACME, mail("u"), "Unsubscribed")
        sb.set_status(ACME, mail("h"), "HardBounced")
        sb.set_consent(ACME, mail("u"), "RET")
        clock.now += 600
        first = [s async for s in p.pull_statuses(None)]
        consents = [c async for c in p.pull_consents(None)]
        again = [s async for s in provider(client, iys=True).pull_statuses(None)]
        return first, consents, again

    first, consents, again = run(sb, scenario)
    assert sorted((s.email, s.status) for s in first) == [(mail("h"), "hard_bounce"), (mail("u"), "unsubscribed")]
    assert first == again                       # a full scan dates statuses by the card: nothing "changes"
    by_email = {c.recipient: c for c in consents}
    assert by_email[mail("u")].status == "RET" and by_email[mail("ok")].status == "ONAY"
    assert by_email[mail("ok")].consent_date == dt.datetime(2024, 3, 1, 7, 0, tzinfo=dt.UTC)


def test_campaigns_and_per_recipient_results_match_the_sandbox_truth() -> None:
    sb = sandbox(seed=9)
    a = sb.create_list(ACME, "A")

    async def seed(client: httpx.AsyncClient) -> None:
        p = provider(client)
        await p.upsert_members([upsert(p, mail(f"c{n}"), (a,), member_id=f"M{n}") for n in range(80)])

    run(sb, seed)
    campaign_id = sb.simulate_campaign(ACME, name="Kasım", rates={"open": 0.5, "bounce": 0.1, "unsubscribe": 0.1,
                                                                  "spam": 0.05})
    sb.simulate_campaign(ACME, name="Taslak", status="Draft")

    async def scenario(client: httpx.AsyncClient) -> tuple[list[Any], list[Any], list[Any]]:
        p = provider(client)
        campaigns = [c async for c in p.pull_campaigns()]
        sent = next(c for c in campaigns if c.remote_id == campaign_id)
        draft = next(c for c in campaigns if c.remote_id != campaign_id)
        context = ReportContext(member_ids=lambda size: iter(()))

        async def results_of(campaign: Any) -> list[Any]:
            return [r async for page in p.pull_campaign_results(campaign, context) for r in page]

        return campaigns, await results_of(sent), await results_of(draft)

    campaigns, results, draft_results = run(sb, scenario)
    assert [(c.status, c.final) for c in campaigns] == [("Sent", False), ("Draft", False)]
    assert draft_results == []
    truth = {row["email"]: row for row in sb.campaign_rows(ACME, campaign_id)}
    assert {r.email for r in results} == set(truth) and len(results) == 80
    for result in results:
        row = truth[result.email]
        assert (result.opened_at is not None) == row["opened"]
        assert (result.bounce_type is not None) == (row["status"] != "Sent")
        assert (result.unsubscribed_at is not None) == row["unsubscribed"]
        assert (result.complained_at is not None) == row["spam"]
    assert any(r.bounce_type == "hard" for r in results) and any(r.clicked_link for r in results)


def test_health_check_and_account() -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[bool, dict[str, Any]]:
        p = provider(client)
        return await p.health_check(), await p.account()

    healthy, account = run(sandbox(), scenario)
    assert healthy and account["name"] == "Acme" and account["packageActive"] is True


def test_a_status_dated_in_whole_seconds_counts_from_the_end_of_its_second() -> None:
    """A CRM consent given in the same second as an unsubscribe never beats it."""
    from sync.providers.euromsg.client import status_time

    whole = status_time({"statusDate": "2026-11-20 12:00:05"})
    assert whole == dt.datetime(2026, 11, 20, 9, 0, 5, 999_999, tzinfo=dt.UTC)
    precise = status_time({"statusDate": "2026-11-20T12:00:05.250000+03:00"})
    assert precise == dt.datetime(2026, 11, 20, 9, 0, 5, 250_000, tzinfo=dt.UTC)
