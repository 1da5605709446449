"""Faithful local simulators of the providers, for tests and the demo.

``SANDBOXES`` maps a provider name to its sandbox class; each sandbox exposes ``.app``
(an ASGI app) to mount with ``sandbox_transport`` or to serve with ``serve``.
"""

from __future__ import annotations

from sync.sandbox.euromsg import EuromsgSandbox
from sync.sandbox.faults import FaultInjector, FaultPlan
from sync.sandbox.mailmasterplus import MailMasterPlusSandbox
from sync.sandbox.postacell import PostacellSandbox
from sync.sandbox.postatr import PostatrSandbox
from sync.sandbox.transport import SandboxApp, SandboxDrop, sandbox_transport, serve, serve_in_thread
from sync.sandbox.wapcrm import WapcrmSandbox

SANDBOXES: dict[str, type] = {
    "postacell": PostacellSandbox,
    "mailmasterplus": MailMasterPlusSandbox,
    "euromsg": EuromsgSandbox,
    "postatr": PostatrSandbox,
    "wapcrm": WapcrmSandbox,
}

__all__ = [
    "SANDBOXES",
    "EuromsgSandbox",
    "FaultInjector",
    "FaultPlan",
    "MailMasterPlusSandbox",
    "PostacellSandbox",
    "PostatrSandbox",
    "SandboxApp",
    "SandboxDrop",
    "WapcrmSandbox",
    "sandbox_transport",
    "serve",
    "serve_in_thread",
]
