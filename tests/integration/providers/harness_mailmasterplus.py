"""The shared suite's view of the MailMasterPlus sandbox.

MMP lists are made in its panel: the sandbox starts with one list per seeded CRM list (L1..L5,
named as sync.sample names them), and the connection's ``lists`` setting maps them. A member is
one record per list; the suite's "member" is the union of an address's records: its lists are
the lists holding a record, its status "active" only if every record is active. MMP documents
no complaints and no bounces, and no campaign reports.

The suite runs once per reading the sandbox serves (``dialects``: harness.py's ``with_dialects``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sync.providers.mailmasterplus.sandbox import DIALECTS
from sync.sample import LIST_NAMES
from sync.sandbox import FaultPlan, MailMasterPlusSandbox
from tests.integration.providers.harness import RemoteMember, SandboxHarness

#: CRM list -> (nl_id, subscribe form, update form); the seeded CRM has L1..L3, sometimes L4, L5.
LISTS: dict[str, tuple[int, int, int]] = {f"L{n}": (100 + n, 200 + n, 300 + n) for n in range(1, 6)}


class MailMasterPlusHarness(SandboxHarness):
    name = "mailmasterplus"
    credentials: ClassVar[dict[str, str]] = {"username": "acme-mmp", "password": "MMP-jelszó-123"}
    settings: ClassVar[dict[str, Any]] = {"lists": {
        crm_list: {"nl_id": nl_id, "subscribe_form": sub, "update_form": upd, "name": LIST_NAMES[n]}
        for n, (crm_list, (nl_id, sub, upd)) in enumerate(sorted(LISTS.items()))}}
    base_url = "http://mailmasterplus.sandbox/"
    dialects: ClassVar[tuple[str, ...]] = DIALECTS
    dialect = DIALECTS[0]

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        extra = {"clock": clock} if clock else {}
        self.sandbox = MailMasterPlusSandbox({self.credentials["username"]: self.credentials["password"]},
                                             dialect=self.dialect, faults=faults, **extra)
        self._next_nl = 900
        for n, (_, (nl_id, sub, upd)) in enumerate(sorted(LISTS.items())):
            self.sandbox.add_list(self._account, nl_id, LIST_NAMES[n], subscribe_form=sub, update_form=upd)

    @property
    def _account(self) -> str:
        return self.credentials["username"]

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, row) for nl_id, name in self.sandbox.lists(self._account).items()
                for row in self.sandbox.records(self._account, nl_id)]

    def members(self) -> dict[str, RemoteMember]:
        lists: dict[str, set[str]] = {}
        active: dict[str, bool] = {}
        for name, row in self._records():
            email = row["email"]
            lists.setdefault(email, set()).add(name)
            active[email] = active.get(email, True) and row["active"] == "1"
        return {email: RemoteMember(email, "active" if active[email] else "unsubscribed", frozenset(names))
                for email, names in lists.items()}

    def list_names(self) -> set[str]:
        return set(self.sandbox.lists(self._account).values())

    def unsubscribe(self, email: str) -> None:
        """The recipient unsubscribes from every list that holds the address."""
        for nl_id in self.sandbox.lists(self._account):
            if self.sandbox.find(self._account, nl_id, email) is not None:
                self.sandbox.unsubscribe(self._account, nl_id, email)

    def unsubscribe_from_list(self, email: str, list_name: str) -> None:
        """The recipient unsubscribes from one list (the link in a mail of that list)."""
        lists = self.sandbox.lists(self._account)
        self.sandbox.unsubscribe(self._account, next(i for i, title in lists.items() if title == list_name), email)

    def list_statuses(self, email: str) -> dict[str, str]:
        """List name -> the state of the address's record there."""
        return {name: "active" if row["active"] == "1" else "unsubscribed" for name, row in self._records()
                if row["email"].lower() == email.lower()}

    def complain(self, email: str) -> None:
        raise NotImplementedError("MailMasterPlus documents no spam complaints")

    def soft_bounce(self, email: str) -> None:
        raise NotImplementedError("MailMasterPlus documents no bounces")

    def used_bulk_import(self) -> bool:
        return False

    def contact_id(self, email: str) -> str | None:
        for nl_id in sorted(self.sandbox.lists(self._account)):
            row = self.sandbox.find(self._account, nl_id, email)
            if row is not None:
                return f"{nl_id}/{row['id']}"
        return None

    def create_list_at_provider(self, name: str) -> None:
        self._next_nl += 1
        self.sandbox.add_list(self._account, self._next_nl, name, subscribe_form=self._next_nl + 1000,
                              update_form=self._next_nl + 2000)

    def delete_list_at_provider(self, name: str) -> None:
        lists = self.sandbox.lists(self._account)
        self.sandbox.delete_list(self._account, next(i for i, title in lists.items() if title == name))

    def forget_everything(self) -> None:
        self.start(self.sandbox.fault_plan)

    def send_campaign(self) -> dict[str, dict[str, int]]:
        """MMP's API has no campaigns or reports: nothing to compare."""
        return {}
