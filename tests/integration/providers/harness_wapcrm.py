"""The WapCRM sandbox seen by the integration tests: a pull-only provider of activity by phone.

WapCRM has no lists and takes no members, so it is not in HARNESSES (the shared suite's tests
are about pushing); tests/integration/test_wapcrm_activity.py runs its own suite over this
harness on every database, with the World of the shared suite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, ClassVar

from sync.providers.wapcrm import api
from sync.sandbox import FaultPlan, WapcrmSandbox
from tests.integration.providers.harness import RemoteMember, SandboxHarness


class WapcrmHarness(SandboxHarness):
    name = "wapcrm"
    credentials: ClassVar[dict[str, str]] = {"secret_key": "wapcrm-gizli-anahtar-2026"}
    settings: ClassVar[dict[str, Any]] = {}
    base_url = "http://wapcrm.sandbox/api/"
    secret_header = api.SECRET_HEADER

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        extra = {"clock": clock} if clock else {}
        self.sandbox = WapcrmSandbox({self.credentials["secret_key"]: "Acme"}, secret_header=self.secret_header,
                                     faults=faults, seed=3, **extra)

    @property
    def key(self) -> str:
        return self.credentials["secret_key"]

    def seed(self, phones: Iterable[str], *, days: int = 3, messages: int = 3) -> None:
        self.sandbox.seed_activity(self.key, phones, days=days, messages=messages)

    def conversation(self, phone: str, when: dt.datetime, **fields: Any) -> int:
        return self.sandbox.add_conversation(self.key, phone, when, **fields)

    def message(self, phone: str, text: str, when: dt.datetime, source: str = "CUSTOMER") -> None:
        self.sandbox.add_message(self.key, phone, text, when, source=source)

    def asked_phones(self) -> list[str]:
        """The phones whose message list was asked, in order."""
        return [params[api.PHONE_PARAM] for _, path, params in self.sandbox.calls if path == api.MESSAGES_PATH]

    def asked_days(self) -> list[str]:
        return [params[api.START_DATE_PARAM] for _, path, params in self.sandbox.calls
                if path == api.CONVERSATIONS_PATH]

    # --- the push side of the Harness protocol: WapCRM has none -------------------------

    def members(self) -> dict[str, RemoteMember]:
        return {}

    def list_names(self) -> set[str]:
        return set()

    def used_bulk_import(self) -> bool:
        return False
