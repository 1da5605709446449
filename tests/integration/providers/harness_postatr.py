"""The shared suite's view of the Postatr sandbox.

Postatr lists are ListIds the sender chooses (``api.derived_list_id``): a list "exists" at Postatr once
a member was sent with its ListId, and it is named by ``api.list_label``. A member is one record per
Memberid holding every ListId it was sent with; the suite's "member" is keyed by e-mail. Postatr
documents no complaints and no bounces.

Every look at the sandbox also checks the guarantee that the daemon never starts a campaign: every
StartProcess the sandbox received in the test so far was DataOnly, and no request started one
(``_assert_no_campaign_started``). So the whole shared suite, run for Postatr, is that proof too.

The suite runs once per reading the sandbox serves (``dialects``: the sandbox's DIALECTS); a campaign's
truth counts a failed recipient (an ErrorCode on its row) as bounced, never as opened or clicked.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sync.providers.postatr import api
from sync.providers.postatr.sandbox import DIALECTS
from sync.sandbox import FaultPlan, PostatrSandbox
from tests.integration.providers.harness import RemoteMember, SandboxHarness


class PostatrHarness(SandboxHarness):
    name = "postatr"
    credentials: ClassVar[dict[str, str]] = {"username": "acme-postatr", "password": "Postatr-şifre-123",
                                             "encrypted_id": "12FD8A5F-2H34-486F-871D-5E697677BFC4"}
    settings: ClassVar[dict[str, Any]] = {"lists": {"L1": {"member_groups": "1354,1359"}}}
    base_url = "http://postatr.sandbox/api.asmx/"
    dialects: ClassVar[tuple[str, ...]] = DIALECTS
    dialect: str = DIALECTS[0]

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        extra = {"clock": clock} if clock else {}
        self.sandbox = PostatrSandbox({self._account: (self.credentials["password"],
                                                       self.credentials["encrypted_id"])},
                                      faults=faults, seed=5, dialect=self.dialect, **extra)

    @property
    def _account(self) -> str:
        return self.credentials["username"]

    def _assert_no_campaign_started(self) -> None:
        sandbox: PostatrSandbox = self.sandbox
        assert all(kind == api.DATA_ONLY for kind in sandbox.process_types), sandbox.process_types
        assert sandbox.campaigns_started_by_requests == []

    def write_requests(self) -> int:
        self._assert_no_campaign_started()
        return super().write_requests()

    def members(self) -> dict[str, RemoteMember]:
        self._assert_no_campaign_started()
        lists: dict[str, set[str]] = {}
        active: dict[str, bool] = {}
        for row in self.sandbox.members(self._account):
            email = row["Email"].lower()
            lists.setdefault(email, set()).update(api.list_label(list_id) for list_id in row["lists"])
            active[email] = active.get(email, True) and row["active"]
        return {email: RemoteMember(email, "active" if active[email] else "unsubscribed", frozenset(names))
                for email, names in lists.items()}

    def list_names(self) -> set[str]:
        self._assert_no_campaign_started()
        return {api.list_label(list_id) for list_id in self.sandbox.list_ids(self._account)}

    def unsubscribe(self, email: str) -> None:
        """The recipient uses the unsubscribe link of a Postatr mail."""
        self.sandbox.unsubscribe(self._account, email)

    def complain(self, email: str) -> None:
        raise NotImplementedError("Postatr documents no spam complaints")

    def soft_bounce(self, email: str) -> None:
        raise NotImplementedError("Postatr documents no bounces")

    def used_bulk_import(self) -> bool:
        return False

    def contact_id(self, email: str) -> str | None:
        found = self.sandbox.find(self._account, email)
        return None if not found else str(found[0]["Memberid"])

    def create_list_at_provider(self, name: str) -> None:
        """Postatr has no lists to make in a panel (the sender chooses ListIds): nothing to do."""

    def delete_list_at_provider(self, name: str) -> None:
        raise NotImplementedError("Postatr has no list to delete (ListIds are the sender's labels)")

    def forget_everything(self) -> None:
        self.start(self.sandbox.fault_plan)

    def send_campaign(self) -> dict[str, dict[str, int]]:
        """A campaign sent from the panel to every active member; the truth of its report."""
        camp_id = self.sandbox.simulate_campaign(self._account, subject="Kasım kampanyası")
        truth: dict[str, dict[str, int]] = {}
        for row in self.sandbox.campaign_report(camp_id):
            rules = truth.setdefault(row["Email"].lower(), {"subscribers": 1})
            if row[api.ERROR_CODE] != api.NO_ERROR:
                rules["bounced"] = 1
                continue
            if row["Status"] in ("Açtı", "Tıkladı"):
                rules["opened"] = 1
            if row["Status"] == "Tıkladı":
                rules["clicked"] = 1
        return truth
