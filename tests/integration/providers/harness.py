"""What the shared provider suite needs from each provider's sandbox: one small class each.

A provider joins the suite by adding its harness to HARNESSES; the tests never branch on
its name, only on the provider's capabilities.

Optional, for a harness that has them (the suite skips, naming the missing piece, when it does
not): ``register(monkeypatch)`` (make a provider known for one test: the contract fake),
``unsubscribe_from_list(email, list_name)`` (a per-list unsubscribe), ``list_statuses(email)``
(per-list shapes: list name -> status of the address's record there), ``record_consent(email,
status, when)`` (an İYS state the provider reports). ``complain`` and ``soft_bounce`` may raise
NotImplementedError where the provider documents no such thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx

from sync.sandbox import FaultPlan, PostacellSandbox, sandbox_transport


@dataclass(frozen=True)
class RemoteMember:
    email: str
    status: str          # active | unsubscribed | ...
    lists: frozenset[str]  # list NAMES at the provider


class Harness(Protocol):
    name: str
    credentials: dict[str, str]
    settings: dict[str, Any]
    base_url: str

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None: ...
    def transport(self) -> httpx.AsyncBaseTransport: ...
    def write_requests(self) -> int: ...
    def requests(self) -> int: ...
    def reset_log(self) -> None: ...
    def members(self) -> dict[str, RemoteMember]: ...
    def list_names(self) -> set[str]: ...
    def unsubscribe(self, email: str) -> None: ...
    def complain(self, email: str) -> None: ...
    def used_bulk_import(self) -> bool: ...
    def soft_bounce(self, email: str) -> None: ...
    def contact_id(self, email: str) -> str | None: ...
    def create_list_at_provider(self, name: str) -> None:
        """A list made by the tenant in the provider's panel."""
    def delete_list_at_provider(self, name: str) -> None:
        """The tenant deletes a list in the provider's panel."""
    def forget_everything(self) -> None:
        """The provider lost its state (a sandbox restarted empty)."""
    def send_campaign(self) -> dict[str, dict[str, int]]:
        """Send a campaign to every list; return email -> {rule: 1} as the truth of its report."""


class SandboxHarness:
    """What every harness over a sandbox (an ASGI app with a request log) shares."""

    sandbox: Any

    def transport(self) -> httpx.AsyncBaseTransport:
        return sandbox_transport(self.sandbox.app)

    def write_requests(self) -> int:
        return int(self.sandbox.write_requests())

    def requests(self) -> int:
        return len(self.sandbox.request_log)

    def reset_log(self) -> None:
        self.sandbox.reset_log()


class PostacellHarness(SandboxHarness):
    name = "postacell"
    credentials: ClassVar[dict[str, str]] = {"username": "acme-api", "password": "Postacell-şifre-123"}
    settings: ClassVar[dict[str, Any]] = {"rate_per_s": 0}
    base_url = "http://postacell.sandbox/api/v1/"

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        extra = {"clock": clock} if clock else {}
        self.sandbox = PostacellSandbox({self.credentials["username"]: self.credentials["password"]},
                                        faults=faults, seed=3, **extra)

    def members(self) -> dict[str, RemoteMember]:
        return {row["email"]: RemoteMember(row["email"], row["status"], frozenset(lst["title"] for lst in row["lists"]))
                for row in self.sandbox.subscribers(self.credentials["username"])}

    def list_names(self) -> set[str]:
        return set(self.sandbox.lists(self.credentials["username"]).values())

    def unsubscribe(self, email: str) -> None:
        self.sandbox.set_status(self.credentials["username"], email, "unsubscribed")

    def complain(self, email: str) -> None:
        self.sandbox.set_status(self.credentials["username"], email, "spam_complaint")

    def soft_bounce(self, email: str) -> None:
        self.sandbox.set_status(self.credentials["username"], email, "soft_bounce")

    def contact_id(self, email: str) -> str | None:
        row = self.sandbox.find_subscriber(self.credentials["username"], email)
        return None if row is None else str(row["id"])

    def create_list_at_provider(self, name: str) -> None:
        self.sandbox.create_list(self.credentials["username"], name)

    def delete_list_at_provider(self, name: str) -> None:
        lists = self.sandbox.lists(self.credentials["username"])
        self.sandbox.delete_list(self.credentials["username"], next(i for i, title in lists.items() if title == name))

    def forget_everything(self) -> None:
        faults = self.sandbox.fault_plan
        self.start(faults)

    def used_bulk_import(self) -> bool:
        return any(method == "POST" and path.endswith("/subscribers/json")
                   for method, path, _ in self.sandbox.request_log)

    def send_campaign(self) -> dict[str, dict[str, int]]:
        account = self.credentials["username"]
        campaign = self.sandbox.simulate_campaign(account, subject="Kasım kampanyası")
        truth: dict[str, dict[str, int]] = {}
        for rule in ("subscribers", "opened", "clicked", "bounced", "unsubscribed", "complaint"):
            for row in self.sandbox.campaign_report(account, campaign, rule):
                truth.setdefault(row["email"].lower(), {})[rule] = 1
        return truth


HARNESSES: list[type[Harness]] = [PostacellHarness]  # type: ignore[list-item]


def _extra_harnesses() -> list[type[Harness]]:
    """Harnesses of providers still being built, to run the suite for them before they join
    HARNESSES: ``CRM_ESP_SYNC_TEST_EXTRA_HARNESSES=module:Class[,module:Class]``."""
    import importlib
    import os

    found = []
    for spec in filter(None, os.environ.get("CRM_ESP_SYNC_TEST_EXTRA_HARNESSES", "").split(",")):
        module, _, name = spec.strip().partition(":")
        found.append(getattr(importlib.import_module(module), name))
    return found


def _contract_fake_harnesses() -> list[type[Harness]]:
    """The contract fake in each push shape (tests/integration/providers/contract_fake.py)."""
    from tests.integration.providers.contract_fake import PUSH_HARNESSES

    return list(PUSH_HARNESSES)  # type: ignore[arg-type]


def _provider_harnesses() -> list[type[Harness]]:
    """The harnesses of the other real providers, each in its own module (imported late: they
    import this module's protocol)."""
    from tests.integration.providers.harness_euromsg import EuromsgHarness
    from tests.integration.providers.harness_mailmasterplus import MailMasterPlusHarness
    from tests.integration.providers.harness_postatr import PostatrHarness

    return [EuromsgHarness, MailMasterPlusHarness, PostatrHarness]  # type: ignore[list-item]


def with_dialects(harnesses: list[type[Harness]]) -> list[type[Harness]]:
    """One harness class per reading its sandbox serves (``dialects``, first = the document's literal
    reading): the whole shared suite runs in every reading. The default keeps the provider's name as
    its test id; another dialect is ``<name>-<dialect>``."""
    expanded: list[type[Harness]] = []
    for cls in harnesses:
        dialects: tuple[str, ...] = getattr(cls, "dialects", ())
        if not dialects:
            expanded.append(cls)
            continue
        for number, dialect in enumerate(dialects):
            ident = cls.name if number == 0 else f"{cls.name}-{dialect}"
            expanded.append(type(f"{cls.__name__}_{dialect}", (cls,),   # type: ignore[arg-type]
                                 {"dialect": dialect, "id": ident, "default_dialect": number == 0}))
    return expanded


def harness_id(cls: type[Harness]) -> str:
    """The test id of a harness: its provider's name, and its reading where not the default."""
    return str(getattr(cls, "id", cls.name))


HARNESSES += _provider_harnesses()
HARNESSES[:] = with_dialects(HARNESSES)
HARNESSES += _contract_fake_harnesses()
HARNESSES += _extra_harnesses()
