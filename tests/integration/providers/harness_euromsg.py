"""The Euromsg Express sandbox for the shared provider suite (tests/integration/providers/harness.py).

Run it with ``CRM_ESP_SYNC_TEST_EXTRA_HARNESSES=tests.integration.providers.harness_euromsg:EuromsgHarness``.
Euromsg also needs the integrator's own clientName/password, held once in the registry
(``integrator set euromsg``); they are in ``integrator_credentials`` for the suite's world to store.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sync.providers.euromsg import api
from sync.providers.euromsg.sandbox import DIALECT_TABLE, DIALECTS, EuromsgSandbox
from sync.sandbox import FaultPlan
from tests.integration.providers.harness import RemoteMember, SandboxHarness

#: The card's status in the suite's words (Postacell's, which the suite's assertions use).
SUITE_STATUSES = {"Active": "active", "Unsubscribed": "unsubscribed", "SoftBounced": "soft_bounce",
                  "HardBounced": "hard_bounce", "Spam": "spam_complaint"}


class EuromsgHarness(SandboxHarness):
    name = "euromsg"
    credentials: ClassVar[dict[str, str]] = {"api_key": "acme-euromsg-anahtar-0001"}
    integrator_credentials: ClassVar[dict[str, str]] = {"client_name": "crm-entegrator",
                                                        "password": "Entegratör-şifre-1"}
    base_url = "http://euromsg.sandbox/"
    #: Every reading the sandbox serves; the shared suite runs once per dialect (harness.py).
    dialects: ClassVar[tuple[str, ...]] = DIALECTS
    dialect: str = DIALECTS[0]

    @property
    def settings(self) -> dict[str, Any]:
        """The connection's settings: where this dialect takes the API key and has its lists are
        request readings, picked by the ``api_key_in`` and ``list_path`` settings (the defaults:
        the document's literal reading, ``emailList``)."""
        dialect = DIALECT_TABLE[self.dialect]
        return {"iys": False,
                **({} if dialect.api_key_in == api.API_KEY_IN_DEFAULT else {api.API_KEY_SETTING: dialect.api_key_in}),
                **({} if dialect.list_path == api.LIST_PATHS[0] else {api.LIST_PATH_SETTING: dialect.list_path})}

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        extra = {"clock": clock} if clock else {}
        self.sandbox = EuromsgSandbox(
            {self.integrator_credentials["client_name"]: self.integrator_credentials["password"]},
            {self.credentials["api_key"]: "Acme Ticaret"}, faults=faults, seed=3, dialect=self.dialect, **extra)

    @property
    def _key(self) -> str:
        return self.credentials["api_key"]

    def members(self) -> dict[str, RemoteMember]:
        names = self.sandbox.lists(self._key)
        return {row["email"]: RemoteMember(row["email"], SUITE_STATUSES[row["status"]],
                                           frozenset(names[str(i)] for i in row["emailListIds"]))
                for row in self.sandbox.members(self._key)}

    def list_names(self) -> set[str]:
        return set(self.sandbox.lists(self._key).values())

    def unsubscribe(self, email: str) -> None:
        self.sandbox.set_status(self._key, email, "Unsubscribed")

    def complain(self, email: str) -> None:
        self.sandbox.set_status(self._key, email, "Spam")

    def soft_bounce(self, email: str) -> None:
        self.sandbox.set_status(self._key, email, "SoftBounced")

    def contact_id(self, email: str) -> str | None:
        row = self.sandbox.find_member(self._key, email)
        return None if row is None else str(row["memberId"])

    def create_list_at_provider(self, name: str) -> None:
        self.sandbox.create_list(self._key, name)

    def delete_list_at_provider(self, name: str) -> None:
        lists = self.sandbox.lists(self._key)
        self.sandbox.delete_list(self._key, next(i for i, title in lists.items() if title == name))

    def forget_everything(self) -> None:
        self.start(self.sandbox.fault_plan)

    def used_bulk_import(self) -> bool:
        return False        # the gateway has no bulk call (capabilities.async_bulk_import is False)

    def send_campaign(self) -> dict[str, dict[str, int]]:
        campaign = self.sandbox.simulate_campaign(self._key, name="Kasım kampanyası")
        truth: dict[str, dict[str, int]] = {}
        for row in self.sandbox.campaign_rows(self._key, campaign):
            rules = truth.setdefault(row["email"].lower(), {"subscribers": 1})
            for rule, present in (("opened", row["opened"]), ("clicked", row["clicked"]),
                                  ("bounced", row["status"] != "Sent"), ("unsubscribed", row["unsubscribed"]),
                                  ("complaint", row["spam"])):
                if present:
                    rules[rule] = 1
        return truth
