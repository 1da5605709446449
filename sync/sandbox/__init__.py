"""Faithful local simulators of the providers, for tests and the demo.

Each provider's sandbox lives in its own folder, beside its client and its module of assumptions
(``sync/providers/<name>/sandbox.py``); this package holds what they share: faults
(``faults.py``), the ASGI front door and serving (``transport.py``), a provider's latency and rate limit
in front of any of them (``throttle.py``). ``SANDBOXES`` maps a provider
name to its sandbox class; each sandbox exposes ``.app`` (an ASGI app) to mount with
``sandbox_transport`` or to serve with ``serve``. The classes are imported on first use: a
provider's sandbox imports this package's modules, so this package cannot import it eagerly.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sync.sandbox.faults import FaultInjector, FaultPlan
from sync.sandbox.throttle import Throttle, ThrottleStats, refusal_of
from sync.sandbox.transport import SandboxApp, SandboxDrop, sandbox_transport, serve, serve_in_thread

if TYPE_CHECKING:
    from sync.providers.euromsg.sandbox import EuromsgSandbox
    from sync.providers.mailmasterplus.sandbox import MailMasterPlusSandbox
    from sync.providers.postacell.sandbox import PostacellSandbox
    from sync.providers.postatr.sandbox import PostatrSandbox
    from sync.providers.wapcrm.sandbox import WapcrmSandbox

#: Provider name -> (sandbox module, class name).
_LOCATIONS: dict[str, tuple[str, str]] = {
    "postacell": ("sync.providers.postacell.sandbox", "PostacellSandbox"),
    "mailmasterplus": ("sync.providers.mailmasterplus.sandbox", "MailMasterPlusSandbox"),
    "euromsg": ("sync.providers.euromsg.sandbox", "EuromsgSandbox"),
    "postatr": ("sync.providers.postatr.sandbox", "PostatrSandbox"),
    "wapcrm": ("sync.providers.wapcrm.sandbox", "WapcrmSandbox"),
}
_BY_CLASS = {class_name: (module, class_name) for module, class_name in _LOCATIONS.values()}


def _load(module: str, class_name: str) -> type:
    return getattr(importlib.import_module(module), class_name)  # type: ignore[no-any-return]


class _Sandboxes(Mapping[str, type]):
    """Provider name -> sandbox class, each imported when first asked for."""

    def __getitem__(self, name: str) -> type:
        return _load(*_LOCATIONS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


SANDBOXES: Mapping[str, type] = _Sandboxes()


def __getattr__(name: str) -> Any:
    if name in _BY_CLASS:
        return _load(*_BY_CLASS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "Throttle",
    "ThrottleStats",
    "WapcrmSandbox",
    "refusal_of",
    "sandbox_transport",
    "serve",
    "serve_in_thread",
]
