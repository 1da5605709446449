"""The Postatr sandbox is exactly as strict as the document: tokens expire after 10 minutes, the
documented error codes come inside HTTP 200, ThisOnly/AllDatabase really start a campaign (so a
client that sent one would be caught), and faults follow the plan."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from sync.providers.postatr import answers, api
from sync.providers.postatr.sandbox import DIALECTS
from sync.sandbox import FaultPlan, PostatrSandbox, sandbox_transport

USER, PASSWORD, ENCRYPTED_ID = "acme", "şifre-123", "12FD8A5F-2H34-486F-871D-5E697677BFC4"
LIST_ID = "468c1222-428a-4acf-b269-3eaf090979a4"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def call(sandbox: PostatrSandbox, method: str, body: Any, *, raw: bytes | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url="http://p/api.asmx/") as c:
            if raw is not None:
                return await c.post(method, content=raw, headers={"content-type": "application/json"})
            return await c.post(method, json=body)
    return asyncio.run(go())


def login(sandbox: PostatrSandbox) -> str:
    response = call(sandbox, "Authenticate", {"Username": USER, "Password": PASSWORD, "EncryptedId": ENCRYPTED_ID})
    match = api.TOKEN_ANSWER.match(response.text)
    assert match is not None and match.group(1) != api.ZERO_GUID
    return match.group(1)


def data(token: str, **fields: Any) -> dict[str, Any]:
    body = {"Token": token, "ProcessType": "DataOnly", "SegmentationFilter": "1=2", "ListId": LIST_ID,
            "MemberGroups": "0", "Members": {"Member": [
                {"Memberid": "M1", "FName": "Ayşe", "LName": "Çelik", "Email": "ayse@ornek.com.tr", "MyColumns": {}}]}}
    body.update(fields)
    return {"MyData": {key: value for key, value in body.items() if value is not None}}


def result(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"d"}
    return dict(body["d"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> PostatrSandbox:
    return PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, clock=clock)


def test_wrong_credentials_get_the_all_zero_token(sandbox: PostatrSandbox) -> None:
    response = call(sandbox, "Authenticate", {"Username": USER, "Password": "yanlış", "EncryptedId": ENCRYPTED_ID})
    assert response.headers["content-type"].startswith("text/xml")
    match = api.TOKEN_ANSWER.match(response.text)
    assert match is not None and match.group(1) == api.ZERO_GUID


def test_a_token_works_for_ten_minutes_and_then_gets_error_1(sandbox: PostatrSandbox, clock: Clock) -> None:
    token = login(sandbox)
    assert result(call(sandbox, "StartProcess", data(token)))["inserted"] == 1
    clock.now += api.TOKEN_LIFETIME_S - 1
    assert result(call(sandbox, "StartProcess", data(token)))["updated"] == 1
    clock.now += 2
    assert result(call(sandbox, "StartProcess", data(token)))["ErrorCode"] == 1
    assert result(call(sandbox, "ReportCampaign", {"Token": "bilinmeyen"}))["ErrorCode"] == 1


def test_start_process_also_takes_the_documents_example_credentials(sandbox: PostatrSandbox) -> None:
    body = data("", Username=USER, Password=PASSWORD, EncryptedId=ENCRYPTED_ID)
    assert result(call(sandbox, "StartProcess", body))["inserted"] == 1
    body = data("", Username=USER, Password="yanlış", EncryptedId=ENCRYPTED_ID)
    assert result(call(sandbox, "StartProcess", body))["ErrorCode"] == 1


@pytest.mark.parametrize(("fields", "code"), [
    ({"ProcessType": None}, 101), ({"ProcessType": ""}, 101), ({"ProcessType": "Everything"}, 102),
    ({"SegmentationFilter": ""}, 7), ({"SegmentationFilter": None}, 7),
    ({"ListId": "liste-1"}, 96), ({"Members": {"Member": "x"}}, 96), ({"MemberGroups": "a,b"}, 96),
    ({"Members": {"Member": []}}, 97),
])
def test_start_process_refuses_what_the_document_refuses(sandbox: PostatrSandbox, fields: dict[str, Any],
                                                          code: int) -> None:
    assert result(call(sandbox, "StartProcess", data(login(sandbox), **fields)))["ErrorCode"] == code
    assert sandbox.members(USER) == []


def test_json_it_cannot_read_is_error_95(sandbox: PostatrSandbox) -> None:
    assert result(call(sandbox, "StartProcess", None, raw=b'{"MyData": {'))["ErrorCode"] == 95
    assert result(call(sandbox, "ReportCampaign", ["not", "an", "object"]))["ErrorCode"] == 95


def test_more_members_than_a_request_takes_is_error_96(sandbox: PostatrSandbox) -> None:
    members = [{"Memberid": f"M{n}", "Email": f"u{n}@ornek.com.tr"} for n in range(api.MAX_MEMBERS_PER_PROCESS + 1)]
    answer = result(call(sandbox, "StartProcess", data(login(sandbox), Members={"Member": members})))
    assert answer["ErrorCode"] == 96


def test_invalid_members_are_ignored_with_details_and_the_rest_is_processed(sandbox: PostatrSandbox) -> None:
    members = [{"Memberid": "M1", "Email": "ayse@ornek.com.tr"}, {"Memberid": "M2", "Email": "bozuk"},
               {"Memberid": "", "Email": "can@ornek.com.tr"}, {"Memberid": "M4", "Email": "d@ornek.com.tr",
                                                                "MyColumns": "x"}]
    answer = result(call(sandbox, "StartProcess", data(login(sandbox), Members={"Member": members})))
    assert (answer["ErrorCode"], answer["inserted"], answer["updated"], answer["ignored"]) == (0, 1, 0, 3)
    assert [(d["Memberid"], d["Reason"]) for d in answer["ignored_details"]] == [
        ("M2", "Email adresi hatalı"), ("", "Memberid boş"), ("M4", "Gerekli veri hatalı")]
    assert all(reason in api.IGNORED_REASONS for reason in (d["Reason"] for d in answer["ignored_details"]))


def test_this_only_really_starts_a_campaign_so_a_client_sending_it_would_be_caught(sandbox: PostatrSandbox) -> None:
    token = login(sandbox)
    answer = result(call(sandbox, "StartProcess", data(token, ProcessType="ThisOnly", MailSubject="Kasım")))
    assert answer["campid"] and sandbox.campaigns_started_by_requests == [answer["campid"]]
    assert sandbox.process_types == ["ThisOnly"]
    data_only = result(call(sandbox, "StartProcess", data(token, MailSubject="Kasım", MailBody="<a>çık</a>")))
    assert data_only["campid"] == "" and sandbox.campaigns_started_by_requests == [answer["campid"]]


def test_an_unsubscribed_member_stays_unsubscribed_after_a_data_only_update(sandbox: PostatrSandbox) -> None:
    token = login(sandbox)
    call(sandbox, "StartProcess", data(token))
    sandbox.unsubscribe(USER, "AYSE@ornek.com.tr")
    assert result(call(sandbox, "StartProcess", data(token)))["updated"] == 1
    member = sandbox.member(USER, "M1")
    assert member is not None and member["active"] is False


def test_reports_answer_campaigns_and_every_recipient_without_ids_and_refuse_too_many_ids_with_93(
        sandbox: PostatrSandbox) -> None:
    token = login(sandbox)
    members = [{"Memberid": f"M{n}", "Email": f"u{n}@ornek.com.tr"} for n in range(120)]
    call(sandbox, "StartProcess", data(token, Members={"Member": members}))
    camp_id = sandbox.simulate_campaign(USER, "Kasım")
    listing = result(call(sandbox, "ReportCampaign", {"Token": token}))
    assert [c["CampId"] for c in listing["Campaigns"]] == [camp_id]
    details = result(call(sandbox, "ReportCampaign", {"Token": token, "CampId": camp_id}))["Campaigns"][0]
    assert details["Status"] == "Tamamlandı" and details["OpenCount"] > 0 and details["LastOpenDate"]
    assert result(call(sandbox, "ReportCampaign", {"Token": token, "CampId": "1"}))["ErrorCode"] == 40
    rows = result(call(sandbox, "ReportMembers", {"Token": token, "CampId": camp_id, "Memberids": ["M1", "M2", "X"]}))
    assert [r["Memberid"] for r in rows["Members"]] == ["M1", "M2"]
    report = sandbox.campaign_report(camp_id)
    assert {r["Status"] for r in report if r["ErrorCode"] == 0} == {"Ulaştı", "Açtı", "Tıkladı"}
    assert {(r["Status"], r["ErrorCode"]) for r in report if r["ErrorCode"]} == {("", 92)}     # failed recipients
    everyone = result(call(sandbox, "ReportMembers", {"Token": token, "CampId": camp_id}))
    assert everyone["ErrorCode"] == 0 and len(everyone["Members"]) == 120   # "Göndermezseniz ... tüm alıcıları"
    ids = [f"M{n}" for n in range(api.REPORT_MEMBERS_LIMIT + 1)]
    assert result(call(sandbox, "ReportMembers", {"Token": token, "CampId": camp_id, "Memberids": ids}))[
        "ErrorCode"] == 93


def test_another_accounts_campaign_is_error_41(sandbox: PostatrSandbox) -> None:
    sandbox.add_account("other", "başka-şifre", "ENC-2")
    camp_id = sandbox.simulate_campaign("other")
    answer = result(call(sandbox, "ReportMembers", {"Token": login(sandbox), "CampId": camp_id, "Memberids": []}))
    assert answer["ErrorCode"] == 41


def test_faults_hit_api_calls_but_not_the_login_and_apply_then_drop_applies() -> None:
    sandbox = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, faults=FaultPlan(apply_then_drop_rate=1.0))
    token = login(sandbox)
    with pytest.raises(httpx.RemoteProtocolError):
        call(sandbox, "StartProcess", data(token))
    assert sandbox.member(USER, "M1") is not None
    assert [status for _, _, status in sandbox.request_log] == [200, 0]
    errors = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, faults=FaultPlan(error_rate=1.0, seed=1))
    token = login(errors)
    assert call(errors, "ReportCampaign", {"Token": token}).status_code in (500, 502, 503)


def test_a_token_used_up_by_the_fault_plan_gets_error_1() -> None:
    sandbox = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, faults=FaultPlan(token_expire_after=1))
    token = login(sandbox)
    assert result(call(sandbox, "ReportCampaign", {"Token": token}))["ErrorCode"] == 0
    assert result(call(sandbox, "ReportCampaign", {"Token": token}))["ErrorCode"] == 1


def test_undocumented_paths_and_methods_are_refused(sandbox: PostatrSandbox) -> None:
    assert call(sandbox, "DeleteMember", {"Token": login(sandbox)}).status_code == 404

    async def get() -> int:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            return (await client.get("http://p/api.asmx/ReportCampaign")).status_code
    assert asyncio.run(get()) == 405


# --- dialects: each reading the client accepts, served (issue 22) -----------------------------------


def login_in(served: PostatrSandbox) -> tuple[str, str]:
    """The token through the client's own reader, and the reading it came in."""
    return answers.read_token(call(served, "Authenticate", {"Username": USER, "Password": PASSWORD,
                                                            "EncryptedId": ENCRYPTED_ID}))


EXPECTED = {
    "document": ("XML <string>", "rows under 'Campaigns' in {\"d\": ...}", "rows under 'Members' in {\"d\": ...}"),
    "bare": ("XML <string>", "array", "array"),
    "d-array": ('{"d": ...} string', 'array in {"d": ...}', 'array in {"d": ...}'),
    "d-json-text": (
        "JSON string", "rows under 'Data' in {\"d\": JSON text}", "rows under 'Data' in {\"d\": JSON text}",
    ),
    "lowercase": ("plain text", "rows under 'campaigns' > 'campaign'", "rows under 'members' > 'member'"),
    "id-keyed": ("XML <string>", 'object keyed by id in {"d": ...}', 'object keyed by id in {"d": ...}'),
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_dialect_serves_its_reading_and_the_client_reads_the_same_truth(dialect: str) -> None:
    assert set(EXPECTED) == set(DIALECTS) and DIALECTS[0] == "document"
    served = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, dialect=dialect)
    token, token_reading = login_in(served)
    members = [{"Memberid": f"M{n}", "Email": f"u{n}@ornek.com.tr"} for n in range(40)]
    stored = call(served, "StartProcess", data(token, Members={"Member": members}, Username=USER, Password=PASSWORD,
                                               EncryptedId=ENCRYPTED_ID))
    assert answers.read_process("StartProcess", stored.json()).inserted == 40
    camp_id = served.simulate_campaign(USER, "Kasım")
    listing = answers.read_rows("ReportCampaign", call(served, "ReportCampaign", {"Token": token}).json(),
                                api.CAMPAIGN_ROW_KEYS, "campid")
    recipients = answers.read_rows("ReportMembers", call(served, "ReportMembers", {"Token": token, "CampId": camp_id})
                                   .json(), api.MEMBER_ROW_KEYS, "memberid")
    assert (token_reading, listing.reading, recipients.reading) == EXPECTED[dialect]
    assert [c.camp_id for c in answers.campaigns("ReportCampaign", listing.rows, None)] == [camp_id]
    found = {r.crm_member_id: r for r in answers.recipients("ReportMembers", recipients.rows)}
    truth = {row["Memberid"]: row for row in served.campaign_report(camp_id)}
    assert set(found) == set(truth)
    for member_id, row in truth.items():
        assert (found[member_id].bounce_type == "failed") == (row["ErrorCode"] != 0)
        assert (found[member_id].clicked_at is not None) == (row["Status"] == "Tıkladı")


def test_an_unknown_dialect_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError) as caught:
        PostatrSandbox(dialect="soap")
    assert all(name in str(caught.value) for name in DIALECTS)


def test_the_bare_dialects_start_process_takes_only_the_examples_credentials() -> None:
    served = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, dialect="bare")
    token, _ = login_in(served)
    assert call(served, "StartProcess", data(token)).json()["ErrorCode"] == 1
    assert served.members(USER) == []
    answer = call(served, "StartProcess", data(token, Username=USER, Password=PASSWORD, EncryptedId=ENCRYPTED_ID))
    assert answer.json()["inserted"] == 1
    assert call(served, "ReportCampaign", {"Token": token}).json() == []        # the token works for reports


def test_the_d_array_dialect_refuses_every_recipient_at_once_above_its_limit() -> None:
    served = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, dialect="d-array", report_members_limit=10)
    token, _ = login_in(served)
    members = [{"Memberid": f"M{n}", "Email": f"u{n}@ornek.com.tr"} for n in range(11)]
    call(served, "StartProcess", data(token, Members={"Member": members}))
    camp_id = served.simulate_campaign(USER)
    assert call(served, "ReportMembers", {"Token": token, "CampId": camp_id}).json() == {"d": {"ErrorCode": 93}}
    assert len(call(served, "ReportMembers", {"Token": token, "CampId": camp_id,
                                              "Memberids": ["M1", "M2"]}).json()["d"]) == 2


def test_the_dialects_serve_the_other_readings_of_the_table() -> None:
    """ASMX's __type (document), a report's error as one empty row (bare), null for no rows (d-array),
    rows nested as Members.Member (lowercase), 40 for an empty listing (id-keyed), .NET dates."""
    def served(dialect: str) -> tuple[PostatrSandbox, str]:
        sandbox = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, dialect=dialect)
        return sandbox, login_in(sandbox)[0]

    document, token = served("document")
    listing = call(document, "ReportCampaign", {"Token": token}).json()
    assert listing == {"d": {"__type": "Postatr.Api.Result", "Campaigns": [], "ErrorCode": 0}}

    bare, token = served("bare")
    assert call(bare, "ReportCampaign", {"Token": "wrong"}).json() == [
        {"Email": None, "Status": None, "SentDate": None, "OpenCount": 0, "LastOpenDate": None, "Memberid": None,
         "ErrorCode": 1}]
    assert call(bare, "StartProcess", data("wrong")).json() == {"ErrorCode": 1}     # not a report: an object

    d_array, token = served("d-array")
    assert call(d_array, "ReportCampaign", {"Token": token}).json() == {"d": None}

    id_keyed, token = served("id-keyed")
    assert call(id_keyed, "ReportCampaign", {"Token": token}).json() == {"d": {"ErrorCode": 40}}

    for dialect, shape in (("lowercase", r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00$"),
                           ("d-json-text", r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d\d:\d\d [AP]M$"),
                           ("id-keyed", r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$")):
        sandbox, token = served(dialect)
        call(sandbox, "StartProcess", data(token))
        camp_id = sandbox.simulate_campaign(USER)
        body = call(sandbox, "ReportCampaign", {"Token": token}).json()
        rows = answers.read_rows("ReportCampaign", body, api.CAMPAIGN_ROW_KEYS, "campid")
        assert re.match(shape, rows.rows[0]["sentdate"]), (dialect, rows.rows[0])
        assert answers.campaigns("ReportCampaign", rows.rows, None)[0].camp_id == camp_id
        if dialect == "lowercase":
            assert set(body["campaigns"]) == {"campaign"}


def test_an_address_the_account_refuses_is_ignored_with_error_92s_text(sandbox: PostatrSandbox) -> None:
    sandbox.refused_emails.add("ayse@ornek.com.tr")
    token = login(sandbox)
    answer = call(sandbox, "StartProcess", data(token)).json()["d"]
    assert answer["ErrorCode"] == 97 and answer["ignored"] == 1
    assert answer["ignored_details"] == [{"Memberid": "M1", "Email": "ayse@ornek.com.tr",
                                          "Reason": "Bu email adresi belirtilen işlemi yapamıyor"}]
